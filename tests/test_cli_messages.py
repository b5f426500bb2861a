"""When a follower cannot use the live stream, it says what is actually wrong
(no token, a URL that is none, a server that is not Norn's, nothing there),
not always "not reachable". The refused-token cases are in test_cli_follow.py
(a real daphne closing 4401/4403)."""

import http.server
import socket
import threading

import pytest

from deployments import stream
from tests.support.servers import free_port


def reason(base_url, token="norn_" + "x" * 43):
    with pytest.raises(stream.Unavailable) as caught:
        list(stream.LiveStream("0f8fad5b-d9cb-469f-a165-70867728950e", base_url=base_url, token=token))
    return str(caught.value)


def test_no_token_says_so_and_how_to_get_one():
    assert reason("http://127.0.0.1:8000", token="") == (
        "NORN_API_TOKEN is not set, so the Norn server at http://127.0.0.1:8000 was not asked "
        "(manage.py tokens create --user <you> --name cli makes one)"
    )


def test_a_url_that_is_not_one_says_so():
    assert reason("127.0.0.1:8000") == "NORN_URL='127.0.0.1:8000' is not an http:// or https:// URL"


def test_nothing_listening_is_not_reachable():
    where = f"http://127.0.0.1:{free_port()}"
    assert reason(where) == f"Norn server not reachable at {where} (connection refused)"


def test_a_server_that_is_not_norns_says_so():
    class NotNorn(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotNorn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        where = f"http://127.0.0.1:{server.server_address[1]}"
        assert reason(where) == (
            f"the server at {where} has no Norn live stream (it refused the WebSocket: HTTP 404): is NORN_URL Norn's?"
        )
    finally:
        server.shutdown()
        server.server_close()


def test_credentials_in_the_url_are_never_repeated():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    text = reason(f"http://me:s3cret@127.0.0.1:{port}", token="")
    assert "s3cret" not in text and f"http://127.0.0.1:{port}" in text
