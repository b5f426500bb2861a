"""The CLI's standard-library HTTP and WebSocket client (deployments/wire.py)
against a server that sends exactly the bytes a test scripts: fragmented and
interleaved frames, pings, partial frames, close codes, chunked answers."""

import base64
import hashlib
import socket
import struct
import threading

import pytest

from deployments import wire


def frame(opcode, payload, final=True):
    length = len(payload)
    head = bytes([(0x80 if final else 0) | opcode])
    if length < 126:
        head += bytes([length])
    elif length < 65536:
        head += bytes([126]) + struct.pack("!H", length)
    else:
        head += bytes([127]) + struct.pack("!Q", length)
    return head + payload


def read_client_frame(conn):
    """(opcode, payload) of one masked frame from the client."""
    first, second = conn.recv(2, socket.MSG_WAITALL)
    assert second & 0x80, "client frames must be masked"
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", conn.recv(2, socket.MSG_WAITALL))[0]
    elif length == 127:
        length = struct.unpack("!Q", conn.recv(8, socket.MSG_WAITALL))[0]
    mask = conn.recv(4, socket.MSG_WAITALL)
    data = conn.recv(length, socket.MSG_WAITALL) if length else b""
    return first & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


class Scripted:
    """A one-connection server on loopback; `script(conn, request_head)` plays it."""

    def __init__(self, script):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.script = script
        self.error = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _ = self.listener.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            try:
                self.script(conn, head.decode("latin1"))
            except Exception as exc:  # reported by the test
                self.error = exc

    def close(self):
        self.thread.join(timeout=10)
        self.listener.close()
        if self.error:
            raise self.error


def upgrade(conn, head):
    key = next(line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith("sec-websocket-key"))
    accept = base64.b64encode(hashlib.sha1(key.encode() + wire.GUID).digest()).decode()
    conn.sendall(f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode())


@pytest.fixture
def scripted():
    servers = []

    def start(script):
        server = Scripted(script)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def test_fragments_pings_and_large_messages_arrive_whole(scripted):
    big = "x" * 70000

    def script(conn, head):
        assert "Authorization: Token secret" in head and head.startswith("GET /ws/x/?after=3 HTTP/1.1")
        upgrade(conn, head)
        conn.sendall(frame(wire.TEXT, b'{"a":', final=False) + frame(wire.PING, b"hi")
                     + frame(wire.CONTINUATION, "ü}".encode()))
        assert read_client_frame(conn) == (wire.PONG, b"hi")
        conn.sendall(frame(wire.TEXT, big.encode()))
        assert read_client_frame(conn) == (wire.TEXT, b"resume")
        conn.sendall(frame(wire.CLOSE, struct.pack("!H", 4404)))
        assert read_client_frame(conn)[0] == wire.CLOSE

    server = scripted(script)
    ws = wire.connect(f"ws://127.0.0.1:{server.port}/ws/x/?after=3", {"Authorization": "Token secret"}, 5)
    assert ws.recv(timeout=5) == '{"a":ü}'
    assert ws.recv(timeout=5) == big
    ws.send("resume")
    with pytest.raises(wire.ConnectionClosed) as closed:
        ws.recv(timeout=5)
    assert closed.value.code == 4404


def test_a_timeout_in_the_middle_of_a_frame_loses_nothing(scripted):
    release = threading.Event()

    def script(conn, head):
        upgrade(conn, head)
        whole = frame(wire.TEXT, b"hello there")
        conn.sendall(whole[:5])
        release.wait(10)
        conn.sendall(whole[5:])
        read_client_frame(conn)

    server = scripted(script)
    ws = wire.connect(f"ws://127.0.0.1:{server.port}/", {}, 5)
    with pytest.raises(TimeoutError):
        ws.recv(timeout=0.2)
    release.set()
    assert ws.recv(timeout=5) == "hello there"
    ws.close()


@pytest.mark.parametrize(
    "answer, error",
    [
        (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", wire.InvalidStatus),
        (b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: wrong\r\n\r\n", wire.WebSocketError),
        (b"SSH-2.0-OpenSSH\r\n\r\n", wire.WebSocketError),
    ],
    ids=["refused", "wrong accept key", "not HTTP"],
)
def test_a_handshake_that_is_not_a_websocket_is_an_error(scripted, answer, error):
    server = scripted(lambda conn, head: conn.sendall(answer))
    with pytest.raises(error):
        wire.connect(f"ws://127.0.0.1:{server.port}/", {}, 5)


def test_protocol_errors_from_the_server_are_refused(scripted):
    def script(conn, head):
        upgrade(conn, head)
        conn.sendall(bytes([0x81, 0x80 | 2]) + b"\0\0\0\0ab")  # a masked frame
        read_client_frame(conn)

    server = scripted(script)
    ws = wire.connect(f"ws://127.0.0.1:{server.port}/", {}, 5)
    with pytest.raises(wire.WebSocketError, match="masked frame"):
        ws.recv(timeout=5)


def test_a_lost_connection_is_a_close_without_code(scripted):
    server = scripted(lambda conn, head: upgrade(conn, head))
    ws = wire.connect(f"ws://127.0.0.1:{server.port}/", {}, 5)
    with pytest.raises(wire.ConnectionClosed) as closed:
        ws.recv(timeout=5)
    assert closed.value.code is None


@pytest.mark.parametrize(
    "answer, body",
    [
        (b'HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{"id": 1}', b'{"id": 1}'),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n: 2\r\n1\r\n}\r\n0\r\n\r\n",
         b'{"a": 2}'),
        (b"HTTP/1.0 200 OK\r\n\r\nto the end", b"to the end"),
    ],
    ids=["content-length", "chunked", "until closed"],
)
def test_http_answers_are_read_whole(scripted, answer, body):
    seen = {}

    def script(conn, received):
        seen["head"], _, seen["body"] = received.partition("\r\n\r\n")
        if len(seen["body"]) < 7:
            seen["body"] += conn.recv(7 - len(seen["body"]), socket.MSG_WAITALL).decode()
        conn.sendall(answer)

    server = scripted(script)
    response = wire.request(f"http://127.0.0.1:{server.port}/api/x", "POST", {"Authorization": "Token t"}, b'{"a":1}', 5)
    assert response.body == body
    assert seen["head"].startswith("POST /api/x HTTP/1.1\r\n") and "Connection: close" in seen["head"]
    assert seen["body"] == '{"a":1}'


@pytest.mark.parametrize("answer", [b"", b"HTTP/1.1 201 Created\r\nContent-Length: 50\r\n\r\n{\"id\""], ids=["nothing", "cut short"])
def test_a_request_without_a_whole_answer_is_no_answer(scripted, answer):
    server = scripted(lambda conn, received: conn.sendall(answer))
    with pytest.raises(wire.NoAnswer):
        wire.request(f"http://127.0.0.1:{server.port}/api/x", "POST", {}, b"{}", 5)


def test_no_server_is_an_oserror_not_no_answer():
    from tests.support.servers import free_port

    with pytest.raises(OSError) as raised:
        wire.request(f"http://127.0.0.1:{free_port()}/api/x", "POST", {}, b"{}", 5)
    assert not isinstance(raised.value, wire.NoAnswer)
