"""HTTP requests and a WebSocket client (RFC 6455) on the standard library
alone, for the CLI's fast path (deployments/remote.py).

The `websockets` package takes ~90 ms to import (most of it in
importlib.metadata) and http.client ~45 ms (the email package), a large part
of the 0.3 s `manage.py deploy` may add to a deploy (issue 13). The CLI needs
only this much: one request with a JSON body and its answer, and of the
WebSocket protocol the opening handshake, text frames (fragmented or not),
ping and close. No extensions are offered, so frames are never compressed.

Only what the server sends is read, from a buffer, so a `recv` that times out
loses nothing: the next call goes on where it stopped.
"""

import base64
import os
import socket
import struct
from collections import namedtuple
from urllib.parse import urlsplit

try:  # the interpreter's own SHA-1: hashlib would load OpenSSL first (~4 ms)
    from _sha1 import sha1
except ImportError:  # an interpreter built without it
    from hashlib import sha1

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE = 16 * 1024 * 1024  # a deployment's events are far smaller
MAX_HEADERS = 64 * 1024
CONNECT_TIMEOUT = 5.0  # a server that is up accepts at once; the answer may take longer

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


class WebSocketError(Exception):
    """The connection cannot be used: a protocol error or a lost connection."""


class InvalidStatus(WebSocketError):
    """The server answered the opening handshake with something other than 101."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class NoAnswer(WebSocketError):
    """An HTTP request was sent, but no whole answer came back."""


class ConnectionClosed(WebSocketError):
    """The connection was closed; `code` is the server's close code, if it sent one."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"connection closed ({code})" if code else "connection lost")
        self.code = code


# An answer: status (int), headers ({lower-case name: value}) and body
# (bytes). A namedtuple, not typing.NamedTuple: importing typing costs the
# command ~4 ms.
Response = namedtuple("Response", "status headers body")


def request(url: str, method: str, headers: dict[str, str], body: bytes, timeout: float) -> Response:
    """One HTTP/1.1 request to an http:// or https:// URL, and its answer.

    Raises OSError when no connection could be made (the request was not
    sent), NoAnswer when it was sent but no whole answer came (in time).
    """
    sock = _open(url, timeout)
    try:
        reader = _Reader(sock)
        _send_head(sock, method, url, {**headers, "Content-Length": str(len(body)), "Connection": "close"}, body)
        status, response_headers = reader._read_head()
        if response_headers.get("transfer-encoding", "").lower() == "chunked":
            content = reader._read_chunked()
        elif "content-length" in response_headers:
            content = reader._read_exactly(int(response_headers["content-length"]))
        else:
            content = reader._read_to_end()
        return Response(status, response_headers, content)
    except TimeoutError:
        raise NoAnswer(f"no answer within {timeout:g}s") from None
    except (OSError, WebSocketError) as exc:
        raise NoAnswer(str(exc) or type(exc).__name__) from None
    except ValueError:
        raise NoAnswer("the answer is not valid HTTP") from None
    finally:
        sock.close()


def connect(url: str, headers: dict[str, str], timeout: float) -> "WebSocket":
    """Open a WebSocket to a ws:// or wss:// URL; raises OSError, TimeoutError or WebSocketError."""
    sock = _open(url, timeout)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        _send_head(sock, "GET", url, {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": key,
            "Sec-WebSocket-Version": "13",
            **headers,
        })
        websocket = WebSocket(sock)
        status, response_headers = websocket._read_head()
        if status != 101:
            raise InvalidStatus(status)
        expected = base64.b64encode(sha1(key.encode() + GUID).digest()).decode()
        if response_headers.get("sec-websocket-accept") != expected:
            raise WebSocketError("the server's handshake answer does not match the key")
        return websocket
    except BaseException:
        sock.close()
        raise


def _open(url: str, timeout: float) -> socket.socket:
    parts = urlsplit(url)
    secure = parts.scheme in ("https", "wss")
    address = (parts.hostname, parts.port or (443 if secure else 80))
    sock = socket.create_connection(address, timeout=min(timeout, CONNECT_TIMEOUT))
    try:
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if secure:
            import ssl

            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
    except BaseException:
        sock.close()
        raise
    return sock


def _send_head(sock: socket.socket, method: str, url: str, headers: dict[str, str], body: bytes = b"") -> None:
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [
        f"{method} {target} HTTP/1.1",
        f"Host: {parts.netloc.rpartition('@')[2]}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin1") + body)


class _Reader:
    """Buffered reading of what the server sends: an HTTP head and body, or frames."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.closed = False

    def _read_head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > MAX_HEADERS:
                raise WebSocketError("the server's answer has over 64 KiB of headers")
            self._fill()
        end = self.buffer.index(b"\r\n\r\n")
        head = bytes(self.buffer[:end]).decode("latin1").split("\r\n")
        del self.buffer[: end + 4]
        try:
            status = int(head[0].split()[1])
        except (IndexError, ValueError):
            raise WebSocketError("the server did not answer in HTTP") from None
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def _read_exactly(self, count: int) -> bytes:
        if count > MAX_MESSAGE:
            raise WebSocketError("the server's answer is over 16 MiB")
        self._need(count)
        return bytes(self.buffer[:count])

    def _read_to_end(self) -> bytes:
        try:
            while len(self.buffer) <= MAX_MESSAGE:
                self._fill()
        except ConnectionClosed:
            return bytes(self.buffer)
        raise WebSocketError("the server's answer is over 16 MiB")

    def _read_chunked(self) -> bytes:
        content = bytearray()
        while True:
            while b"\r\n" not in self.buffer:
                self._fill()
            end = self.buffer.index(b"\r\n")
            size = int(bytes(self.buffer[:end]).split(b";")[0], 16)
            del self.buffer[: end + 2]
            if size == 0:
                return bytes(content)
            if len(content) + size > MAX_MESSAGE:
                raise WebSocketError("the server's answer is over 16 MiB")
            self._need(size + 2)
            content += self.buffer[:size]
            del self.buffer[: size + 2]

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError from None
        if not chunk:
            self.closed = True
            raise ConnectionClosed(None)
        self.buffer += chunk

    def _need(self, count: int) -> None:
        while len(self.buffer) < count:
            self._fill()


class WebSocket(_Reader):
    def __enter__(self) -> "WebSocket":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def recv(self, timeout: float | None = None) -> str | bytes:
        """The next message; TimeoutError if none completes within `timeout` s."""
        self.sock.settimeout(timeout)
        fragments: list[bytes] = []
        kind = None
        while True:
            opcode, final, payload = self._read_frame()
            if opcode == PING:
                self._send_frame(PONG, payload)
            elif opcode == PONG:
                pass
            elif opcode == CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                self._answer_close(payload[:2])
                raise ConnectionClosed(code)
            elif opcode in (TEXT, BINARY, CONTINUATION):
                if (opcode == CONTINUATION) == (kind is None):
                    raise self._fail("a continuation frame out of place")
                kind = kind if opcode == CONTINUATION else opcode
                fragments.append(payload)
                if sum(map(len, fragments)) > MAX_MESSAGE:
                    raise self._fail("a message over 16 MiB")
                if final:
                    data = b"".join(fragments)
                    if kind == BINARY:
                        return data
                    try:
                        return data.decode()
                    except UnicodeDecodeError:
                        raise self._fail("a text message that is not UTF-8") from None
            else:
                raise self._fail(f"an unknown frame type {opcode}")

    def send(self, text: str) -> None:
        self._send_frame(TEXT, text.encode())

    def close(self, code: int = 1000) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.settimeout(0.5)
            self.sock.sendall(self._frame(CLOSE, struct.pack("!H", code)))
        except OSError:
            pass
        finally:
            self.sock.close()

    def _read_frame(self) -> tuple[int, bool, bytes]:
        # Nothing is consumed until the whole frame is in the buffer: a
        # timeout half-way leaves it for the next recv.
        self._need(2)
        first, second = self.buffer[0], self.buffer[1]
        if second & 0x80:
            raise self._fail("a masked frame from the server")
        length, header = second & 0x7F, 2
        if length == 126:
            self._need(4)
            length, header = struct.unpack("!H", self.buffer[2:4])[0], 4
        elif length == 127:
            self._need(10)
            length, header = struct.unpack("!Q", self.buffer[2:10])[0], 10
        if length > MAX_MESSAGE:
            raise self._fail("a frame over 16 MiB")
        self._need(header + length)
        payload = bytes(self.buffer[header: header + length])
        del self.buffer[: header + length]
        return first & 0x0F, bool(first & 0x80), payload

    # Writing.

    def _frame(self, opcode: int, payload: bytes) -> bytes:
        length = len(payload)
        if length < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        mask = os.urandom(4)
        # Masking by whole-number XOR: one operation, not one per byte.
        repeated = (mask * (length // 4 + 1))[:length]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(length, "big")
        return head + mask + masked

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        try:
            self.sock.sendall(self._frame(opcode, payload))
        except OSError as exc:
            self.closed = True
            raise ConnectionClosed(None) from exc

    def _answer_close(self, code: bytes) -> None:
        try:
            self.sock.sendall(self._frame(CLOSE, code))
        except OSError:
            pass
        self.closed = True
        self.sock.close()

    def _fail(self, what: str) -> WebSocketError:
        self.close(1002)  # protocol error
        return WebSocketError(f"the server sent {what}")
