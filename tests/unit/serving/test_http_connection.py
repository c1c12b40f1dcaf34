"""KeepAliveConnection against a real local TCP server that answers scripted bytes."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from ganforge.serving.http_connection import MAX_HEADER_BYTES, ConnectionLost, KeepAliveConnection
from tests.raw_http import read_request

CLOSE = b""  # in a script: close the connection instead of answering


class ScriptedServer:
    """Answers each request, on whatever connection it arrives, with the script's next bytes, and
    records what it received (request head and body) and how many connections it accepted. An
    answer saying `Connection: close`, and the script's last, ends its connection."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, bytes]] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        pending = b""
        while self.answers:
            request = read_request(conn, pending)
            if request is None:
                return
            head, body, pending = request
            self.requests.append((head, body))
            answer = self.answers.pop(0)
            if answer is CLOSE:
                return
            conn.sendall(answer)
            if b"connection: close" in answer.lower() or not self.answers:
                return  # the last answer of the script ends its connection

    def close(self) -> None:
        self.listener.close()


Serve = Callable[[list[bytes]], ScriptedServer]


@pytest.fixture
def serve() -> Iterator[Serve]:
    servers: list[ScriptedServer] = []

    def start(answers: list[bytes]) -> ScriptedServer:
        server = ScriptedServer(answers)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) + body


def test_requests_share_one_connection_and_carry_headers_and_body(serve: Serve) -> None:
    server = serve([ok(b"first", b"Inference-Header-Content-Length: 3\r\n"), ok(b"x" * 300_000)])
    connection = KeepAliveConnection("127.0.0.1", server.port, timeout=5)
    answer = connection.request("POST", "/v2/models/m/infer", b"payload", {"Inference-Header-Content-Length": "4"})
    assert (answer.status, bytes(answer.body)) == (200, b"first")
    assert answer.headers["inference-header-content-length"] == "3"  # names lower-cased
    big = connection.request("GET", "/v2/health/ready")
    assert len(big.body) == 300_000 and set(big.body) == {ord("x")}
    assert server.connections == 1
    head, body = server.requests[0]
    assert head.startswith("POST /v2/models/m/infer HTTP/1.1\r\n")
    assert "Inference-Header-Content-Length: 4" in head and "Content-Length: 7" in head
    assert f"Host: 127.0.0.1:{server.port}" in head and body == b"payload"
    connection.close()


def test_chunked_body_with_extensions_and_trailers_after_an_interim_answer(serve: Serve) -> None:
    chunked = (b"HTTP/1.1 100 Continue\r\n\r\n"
               b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: yes\r\n\r\n")
    server = serve([chunked, ok(b"after")])
    connection = KeepAliveConnection("127.0.0.1", server.port, timeout=5)
    answer = connection.request("GET", "/")
    assert (answer.status, bytes(answer.body)) == (500, b"hello, world")
    assert bytes(connection.request("GET", "/").body) == b"after"  # the trailers were consumed
    assert server.connections == 1


def test_connection_close_and_close_delimited_bodies_reconnect(serve: Serve) -> None:
    server = serve([ok(b"one", b"Connection: close\r\n"),
                    b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\nto the end",
                    ok(b"three")])
    connection = KeepAliveConnection("127.0.0.1", server.port, timeout=5)
    assert bytes(connection.request("GET", "/").body) == b"one"
    assert bytes(connection.request("GET", "/").body) == b"to the end"
    assert bytes(connection.request("GET", "/").body) == b"three"
    assert server.connections == 3


def test_a_closed_connection_raises_and_the_next_request_reconnects(serve: Serve) -> None:
    server = serve([CLOSE, ok(b"again")])
    connection = KeepAliveConnection("127.0.0.1", server.port, timeout=5)
    with pytest.raises(ConnectionLost, match="closed the connection before the answer ended"):
        connection.request("GET", "/")
    assert bytes(connection.request("GET", "/").body) == b"again"
    assert server.connections == 2


@pytest.mark.parametrize(("answer", "error"), [
    (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x answer"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "after 5 of 10 bytes"),
    (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (MAX_HEADER_BYTES // 4), "headers longer than"),
])
def test_answers_that_are_not_http_are_refused(serve: Serve, answer: bytes, error: str) -> None:
    server = serve([answer])
    connection = KeepAliveConnection("127.0.0.1", server.port, timeout=5)
    with pytest.raises(ConnectionLost, match=error):
        connection.request("GET", "/")
