"""Slow clients cannot hold the server: a request head that never completes is closed, a
body that stalls gets 408, and meanwhile everyone else is answered."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from tests.helpers import Tree, wait_until

TIMEOUTS = {"HTTP_IDLE_TIMEOUT_S": "1", "HTTP_BODY_TIMEOUT_S": "1"}


def closed_by_server(sock: socket.socket, within_s: float) -> bytes | None:
    """What the server sent before closing, or None if it kept the connection open."""
    sock.settimeout(within_s)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        return None
    return received


def first_answer(sock: socket.socket, within_s: float) -> bytes:
    sock.settimeout(within_s)
    try:
        return sock.recv(65536)
    except TimeoutError:
        return b""


def test_a_request_head_that_never_completes_is_closed(make_tree: Callable[..., Tree]) -> None:
    tree = make_tree(TIMEOUTS)
    with socket.create_connection(("127.0.0.1", tree.port)) as slow:
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        assert tree.get("/health")[0] == 200, "others are answered meanwhile"
        assert closed_by_server(slow, within_s=10) is not None, "closed after HTTP_IDLE_TIMEOUT_S"


def test_an_idle_connection_is_closed_and_a_busy_one_kept(make_tree: Callable[..., Tree]) -> None:
    tree = make_tree(TIMEOUTS)
    with socket.create_connection(("127.0.0.1", tree.port)) as idle:
        assert closed_by_server(idle, within_s=10) == b""
    with socket.create_connection(("127.0.0.1", tree.port)) as busy:
        deadline = time.monotonic() + 2.5  # more than twice the timeout, a request each 0.3 s
        while time.monotonic() < deadline:
            busy.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            busy.settimeout(5)
            assert busy.recv(4096).startswith(b"HTTP/1.1 200")
            time.sleep(0.3)


def test_a_body_that_stalls_gets_408_and_stores_nothing(make_tree: Callable[..., Tree]) -> None:
    tree = make_tree(TIMEOUTS)
    with socket.create_connection(("127.0.0.1", tree.port)) as slow:
        slow.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"messages": ['
        )
        answer = first_answer(slow, within_s=10)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"HTTP_BODY_TIMEOUT_S" in answer
    wait_until(lambda: tree.get("/health")[0] == 200, 5, "the server to answer")
    assert tree.statuses() == {}
