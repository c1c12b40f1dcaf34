"""A write sent on a connection the apiserver closed without answering is sent again.

A real socket server stands in for the apiserver: it closes the first connection after reading
the request (what a pooled keep-alive connection the server has just dropped looks like to the
client) and answers the next one.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest
import urllib3
from kubernetes import client

from ganforge.operator.kube import api_client
from tests.raw_http import read_request

CONFIG_MAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "plan", "namespace": "jobs"}}


class DroppingServer:
    """Reads each request; closes the first `drops` connections without a word, answers the rest."""

    def __init__(self, drops: int) -> None:
        self.drops = drops
        self.requests: list[str] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                request = read_request(connection)
                self.requests.append(request[0].split(" ", 2)[0] if request else "")
                if len(self.requests) <= self.drops:
                    continue
                body = json.dumps(CONFIG_MAP).encode()
                connection.sendall(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nConnection: close\r\n"
                                   + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def server() -> Iterator[DroppingServer]:
    running = DroppingServer(drops=1)
    yield running
    running.close()


def _configuration(url: str) -> client.Configuration:
    configuration = client.Configuration()
    configuration.host = url
    return configuration


def test_a_create_whose_connection_was_dropped_is_sent_again(server: DroppingServer) -> None:
    core = client.CoreV1Api(api_client(_configuration(server.url), pool_size=2))
    created = core.create_namespaced_config_map("jobs", CONFIG_MAP)
    assert created.metadata.name == "plan"
    assert server.requests == ["POST", "POST"]


def test_the_client_default_gives_up_on_a_create_at_the_first_drop(server: DroppingServer) -> None:
    # Why the operator configures its own: urllib3 retries only idempotent verbs by default.
    core = client.CoreV1Api(client.ApiClient(_configuration(server.url)))
    with pytest.raises(urllib3.exceptions.ProtocolError, match="closed connection without response"):
        core.create_namespaced_config_map("jobs", CONFIG_MAP)
    assert server.requests == ["POST"]
