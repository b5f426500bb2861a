"""Norn's TCP proxy as a real process (`manage.py proxy`) in front of real TCP
backends: it forwards both ways, a route switch moves new connections only,
its acknowledgement says when a switch is live, started again after a crash it
serves its routes, and it stops within seconds on SIGTERM to its process group.
Norn itself never starts it: it is a service of its own."""

import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time

import pytest
from django.conf import settings

from deployments import proxy
from tests.support.proxyservice import ProxyService


class Backend:
    """A TCP server on a free 127.0.0.1 port: it greets each connection with
    its name, then echoes every line as "<name>:<line>"; with raw=True it
    echoes raw bytes back as they come, and at the client's EOF says "bye"."""

    def __init__(self, name, raw=False):
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                conn = self.request
                conn.sendall(f"{outer.name}\n".encode())
                if raw:
                    while data := conn.recv(65536):
                        conn.sendall(data)
                    conn.sendall(b"bye")
                    return
                with conn.makefile("rb") as lines:
                    for line in lines:
                        conn.sendall(f"{outer.name}:".encode() + line)

        self.name = name
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backends():
    made = []

    def make(name, raw=False):
        made.append(Backend(name, raw))
        return made[-1]

    yield make
    for backend in made:
        backend.close()


@pytest.fixture
def service(tmp_path, settings):
    """`manage.py proxy` as a service on a private directory; stopped afterwards."""
    settings.NORN_PROXY_DIR = tmp_path / "proxy"
    service = ProxyService(settings.NORN_PROXY_DIR).start()
    yield service
    service.kill()


@pytest.fixture
def directory(service):
    return service.directory


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """A line-oriented TCP connection to the proxy."""

    def __init__(self, port):
        self.conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.reader = self.conn.makefile("rb")

    def send(self, text):
        self.conn.sendall(text.encode())

    def readline(self):
        return self.reader.readline().decode().rstrip("\n")

    def close(self):
        # The socket closes only once its file object is closed too.
        self.reader.close()
        self.conn.close()


def routed(app, port, backend):
    return proxy.wait_applied(proxy.set_route(app, port, backend))


def refused(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def test_forwards_bytes_both_ways_and_passes_half_close_on(directory, backends):
    backend = backends("A", raw=True)
    port = free_port()
    routed("web", port, backend.port)

    payload = os.urandom(4 * 1024 * 1024)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:

        def send():
            conn.sendall(payload)
            # The backend only says "bye" once the proxy passes our EOF on.
            conn.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        received = b"".join(iter(lambda: conn.recv(1 << 16), b""))
        sender.join()
    assert received == b"A\n" + payload + b"bye"


def test_switch_moves_new_connections_while_open_ones_keep_their_backend(directory, backends):
    a, b = backends("A"), backends("B")
    port = free_port()
    routed("web", port, a.port)
    old = Client(port)
    assert old.readline() == "A"

    status = routed("web", port, b.port)
    assert proxy.listening(status, port) == b.port
    assert proxy.open_connections(status, a.port) == 1

    new = Client(port)
    assert new.readline() == "B"
    new.send("hello\n")
    assert new.readline() == "B:hello"
    # The connection opened before the switch still talks to A.
    old.send("still here\n")
    assert old.readline() == "A:still here"

    old.close()
    new.close()
    proxy.wait_status(lambda s: not s["connections"], "all connections closed", directory=directory)


def test_acknowledgement_reports_the_applied_version(directory, backends):
    a = backends("A")
    port = free_port()
    version = proxy.set_route("web", port, a.port)
    assert proxy.set_route("web", port, a.port) == version  # unchanged: nothing to wait for

    status = proxy.wait_applied(version)
    assert status["version"] >= version
    assert status["pid"] == int((directory / proxy.PID_FILE).read_text())
    assert time.time() - status["heartbeat"] < proxy.STALE_AFTER
    assert proxy.listening(status, port) == a.port
    # The heartbeat goes on with no change.
    time.sleep(2 * proxy.HEARTBEAT_INTERVAL)
    assert proxy.read_status()["heartbeat"] > status["heartbeat"]

    with pytest.raises(proxy.ProxyError, match=f"did not report routes version {version + 5} as applied within 0.5 s"):
        proxy.wait_applied(version + 5, timeout=0.5)


def test_a_damaged_routes_file_keeps_serving_and_versions_keep_rising(directory, backends):
    a, b = backends("A"), backends("B")
    port = free_port()
    version = routed("web", port, a.port)["version"]
    (directory / proxy.ROUTES).write_text('{"version": ')  # not how Norn writes it
    time.sleep(5 * proxy.POLL_INTERVAL)
    client = Client(port)
    assert client.readline() == "A"  # the proxy kept its routes
    client.close()

    # Counting from 1 again would let the proxy's old status acknowledge the
    # new route before it is live.
    new_version = proxy.set_route("web", port, b.port)
    assert new_version > version
    assert proxy.listening(proxy.wait_applied(new_version), port) == b.port


def test_a_port_held_by_something_else_is_reported_and_retried(directory, backends):
    a = backends("A")
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]

    status = routed("web", port, a.port)
    assert proxy.listening(status, port) is None
    assert "in use" in status["errors"][str(port)]

    squatter.close()
    status = proxy.wait_status(lambda s: proxy.listening(s, port) == a.port, "the port taken over")
    assert str(port) not in status["errors"]
    client = Client(port)
    assert client.readline() == "A"
    client.close()


def test_dropping_a_route_closes_its_port_but_not_open_connections(directory, backends):
    a = backends("A")
    port = free_port()
    routed("web", port, a.port)
    client = Client(port)
    assert client.readline() == "A"

    proxy.wait_applied(proxy.drop_route("web"))
    assert refused(port)
    client.send("ping\n")
    assert client.readline() == "A:ping"
    client.close()


def test_an_unreachable_backend_closes_the_client_connection(directory):
    port, nothing_there = free_port(), free_port()
    routed("web", port, nothing_there)
    client = Client(port)
    assert client.reader.read() == b""  # closed at once, not left hanging
    client.close()
    assert proxy.alive()


def test_two_apps_cannot_share_a_port(directory, backends):
    port = free_port()
    proxy.set_route("web", port, backends("A").port)
    with pytest.raises(proxy.ProxyError, match=f"port {port} is already routed to the app web"):
        proxy.set_route("other", port, backends("B").port)


def test_a_crashed_proxy_started_again_serves_its_routes(service, backends):
    a = backends("A")
    port = free_port()
    routed("web", port, a.port)
    pid = proxy.read_status()["pid"]

    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while proxy.alive():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert refused(port)

    service.start()  # what systemd's Restart=on-failure does
    assert proxy.read_status()["pid"] not in (None, pid)
    client = Client(port)
    assert client.readline() == "A"
    client.close()


def test_sigterm_to_its_process_group_stops_it_within_seconds(service, backends):
    port = free_port()
    routed("web", port, backends("A").port)
    open_client = Client(port)  # an open connection must not hold the stop up
    assert open_client.readline() == "A"

    assert service.stop() < 5
    assert service.proc.returncode == 0
    assert not (service.directory / proxy.PID_FILE).exists()
    assert not (service.directory / proxy.STATUS).exists()
    assert not proxy.alive()
    assert refused(port)
    assert "Norn proxy stopped" in service.output()
    open_client.close()


def test_stop_helper_signals_the_proxy_named_in_its_pid_file(service, backends):
    pid = int((service.directory / proxy.PID_FILE).read_text())
    assert proxy.stop() == pid
    assert not proxy.alive()
    assert proxy.stop() is None  # nothing left to stop


def test_only_one_proxy_runs_per_directory(directory):
    second = subprocess.run(
        [sys.executable, "manage.py", "proxy", "--dir", str(directory)],
        cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=60,
    )
    assert second.returncode == 1
    assert f"another Norn proxy is already running on {directory}" in second.stderr
    assert proxy.alive()
