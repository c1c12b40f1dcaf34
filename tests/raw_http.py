"""Reading HTTP/1.1 requests off a raw socket, for the small scripted servers of unit tests."""

from __future__ import annotations

import socket


def read_request(connection: socket.socket, pending: bytes = b"") -> tuple[str, bytes, bytes] | None:
    """The next request's head and body, and what arrived after it (the next request's start), from
    `pending` and then the socket; None if the client closed the connection before a whole head."""
    while b"\r\n\r\n" not in pending:
        chunk = connection.recv(65536)
        if not chunk:
            return None
        pending += chunk
    head, _, rest = pending.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(rest) < length:
        chunk = connection.recv(65536)
        if not chunk:
            return None
        rest += chunk
    return head.decode(), rest[:length], rest[length:]
