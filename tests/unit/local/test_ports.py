"""A port is free when a server could listen on it now: connections that a stopped server closed
(TIME_WAIT) do not take it, a listening socket does. The apiserver's port is kept across a restart
on that basis, so kubeconfigs handed out before still work."""

from __future__ import annotations

import socket
from pathlib import Path

from ganforge.local.control_plane import ControlPlane, free_port, port_is_free


def _time_wait_on(port: int) -> None:
    """A server on `port` that closed its side of a connection first, as a stopping apiserver does."""
    with socket.create_server(("127.0.0.1", port)) as server:
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the active close: the server's end of the connection enters TIME_WAIT
        client.recv(1)
        client.close()


def test_connections_left_in_time_wait_by_a_stopped_server_do_not_take_its_port() -> None:
    port = free_port()
    _time_wait_on(port)
    assert port_is_free(port)


def test_a_listening_socket_takes_its_port() -> None:
    with socket.create_server(("0.0.0.0", 0)) as server:
        assert not port_is_free(server.getsockname()[1])


def test_the_apiserver_keeps_its_port_after_a_stop_with_connections_in_time_wait(tmp_path: Path) -> None:
    plane = ControlPlane(tmp_path)
    first = plane._apiserver_port()
    _time_wait_on(first)
    assert ControlPlane(tmp_path)._apiserver_port() == first
