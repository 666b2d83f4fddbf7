"""Hostile and odd input on the real tree: every error is one JSON shape, and changes nothing."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.client import HTTPConnection
from typing import Any
from urllib.parse import quote

import jwt
import pytest

from tests.helpers import Tree, campaign, http, wait_until

# Scheduled weeks ahead, so pending rows stay put during a test
LATER = (datetime.now(UTC) + timedelta(days=30)).isoformat()


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    started = Tree(tmp_path_factory.mktemp("hardening")).start()
    yield started
    started.stop()


def error_of(answer: tuple[int, Any, dict[str, str]], status: int) -> dict[str, Any]:
    got, body, headers = answer
    assert got == status, (got, body)
    assert headers["Content-Type"].startswith("application/json")
    assert {"error", "code"} <= set(body) <= {"error", "code", "field"} and isinstance(body["error"], str)
    return {"message": body["error"], **{k: v for k, v in body.items() if k != "error"}}


def count(tree: Tree) -> int:
    with tree.db() as conn:
        return int(conn.execute("SELECT COUNT(*) FROM recipients").fetchone()[0])


def test_quotes_and_wildcards_in_topic_ids_and_addresses_match_only_themselves(tree: Tree) -> None:
    # Given topics whose ids look like SQL wildcards and injections, and a look-alike
    percent, underscore = "sale%'; DROP TABLE recipients;--", 'sale_"*\\[x]'
    for topic, emails in ((percent, ["o'neil%_*@example.com", "b@example.com"]), (underscore, ["c@example.com"])):
        status, answer, _ = tree.post("/v1/messages", campaign(emails, topic, scheduled_at=LATER))
        assert status == 200 and answer["success"] == len(emails), answer

    # Then each id finds exactly its own recipients; a wildcard finds nothing
    status, totals, _ = tree.get(f"/v1/topics/{quote(percent, safe='')}")
    assert status == 200 and totals["topic_id"] == percent and totals["pending"] == 2
    status, totals, _ = tree.get(f"/v1/topics/{quote(underscore, safe='')}")
    assert status == 200 and totals["pending"] == 1
    for pattern in ("sale%25", "sale_", "sale*", "%25"):
        assert tree.get(f"/v1/topics/{pattern}")[1]["total"] == 0, pattern

    # And cancelling one touches no other
    status, answer, _ = http("DELETE", f"{tree.base}/v1/topics/{quote(percent, safe='')}")
    assert status == 200 and answer["cancelled"] == 2
    assert tree.get(f"/v1/topics/{quote(underscore, safe='')}")[1]["pending"] == 1

    # And an address with the same characters is suppressed and found only by itself
    address = "o'neil%_*@example.com"
    assert tree.post("/v1/suppressions", {"email": address})[0] == 201
    assert tree.get(f"/v1/suppressions/{quote(address, safe='@')}")[1]["email"] == address
    assert tree.get(f"/v1/suppressions/{quote('o_neil%x*@example.com', safe='@')}")[0] == 404
    listed = tree.get(f"/v1/suppressions?after={quote(chr(39))}")[1]["suppressions"]
    assert [s["email"] for s in listed] == [address]


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("messages[0].subject", campaign(["a@example.com"], subject="s" * 999)),
        ("messages[0].topic_id", campaign(["a@example.com"], topic_id="t" * 256)),
        ("messages[0].topic_id", campaign(["a@example.com"], topic_id="tab\there")),
        ("messages[0].emails[0]", campaign(["a" * 321 + "@example.com"])),
        ("scheduled_at", campaign(["a@example.com"], scheduled_at="2026-01-01" + " " * 60)),
    ],
    ids=["subject", "topic-length", "topic-control", "email-length", "scheduled-length"],
)
def test_string_limits_are_enforced_and_named(tree: Tree, field: str, body: dict[str, Any]) -> None:
    before = count(tree)
    assert error_of(tree.post("/v1/messages", body), 400)["field"] == field
    assert count(tree) == before


def test_deeply_nested_json_is_refused_not_crashed_on(tree: Tree) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    before = count(tree)
    body = json.dumps(campaign(["a@example.com"])).encode()[:-1] + b', "ignored": ' + deep + b"}"
    assert "nested" in error_of(tree.post("/v1/messages", body), 400)["message"]
    small = b"[" * 5_000 + b"]" * 5_000  # under that route's 16 KiB cap
    assert error_of(tree.post("/v1/suppressions", b'{"x": ' + small + b"}"), 400)["code"] == "invalid_json"
    sns = {"x-amz-sns-message-type": "Notification", "Content-Type": "text/plain"}
    assert error_of(tree.post("/v1/events/results", deep, headers=sns), 400)["code"] == "invalid_json"
    assert count(tree) == before
    assert "Traceback" not in tree.log()


def test_json_routes_want_json_and_say_so_with_415(tree: Tree) -> None:
    before = count(tree)
    body = json.dumps(campaign(["a@example.com"])).encode()
    for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        problem = error_of(tree.post("/v1/messages", body, headers={"Content-Type": media}), 415)
        assert "application/json" in problem["message"] and problem["field"] == "Content-Type"
    assert error_of(
        tree.post("/v1/suppressions", b'{"email": "x@example.com"}', headers={"Content-Type": "text/csv"}), 415
    )
    assert count(tree) == before
    # A body without a Content-Type is refused too: a web page can send one to localhost
    # without a CORS preflight (the original server answered 415 as well).
    for path, raw in (("/v1/messages", body), ("/v1/suppressions", b'{"email": "x@example.com"}')):
        connection = HTTPConnection("127.0.0.1", tree.port, timeout=10)
        connection.putrequest("POST", path)
        connection.putheader("Content-Length", str(len(raw)))
        connection.endheaders(raw)
        response = connection.getresponse()
        assert response.status == 415, path
        assert json.loads(response.read())["field"] == "Content-Type"
    assert count(tree) == before
    # application/*+json is JSON
    assert tree.post("/v1/messages", body, headers={"Content-Type": "application/vnd.api+json"})[0] == 200
    # Routes that take no body need no Content-Type
    for method, path in (
        ("POST", "/v1/topics/t1/pause"),
        ("POST", "/v1/topics/t1/resume"),
        ("DELETE", "/v1/topics/t1"),
    ):
        connection = HTTPConnection("127.0.0.1", tree.port, timeout=10)
        connection.request(method, path)
        assert connection.getresponse().status == 200, path
    # SNS posts text/plain: the webhook takes it (and refuses only what is not signed)
    sns = {"x-amz-sns-message-type": "Notification", "Content-Type": "text/plain; charset=UTF-8"}
    assert tree.post("/v1/events/results", b"{}", headers=sns)[0] == 400


def test_body_limits_are_per_route(tree: Tree) -> None:
    assert "16 KiB" in error_of(tree.post("/v1/suppressions", {"email": "a" * 17_000}), 413)["message"]
    sns = {"x-amz-sns-message-type": "Notification", "Content-Type": "text/plain"}
    assert "256 KiB" in error_of(tree.post("/v1/events/results", b" " * 300_000, headers=sns), 413)["message"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/topics?offset=99999999999999999999999",
        "/v1/topics?limit=-1",
        "/v1/events/counts/sent?hours=1e3",
        "/v1/suppressions?limit=0",
        "/v1/suppressions?limit=%C2%B28",  # "²8": str.isdigit() says yes, int() says no
        "/v1/topics?limit=%D9%A3",  # an Arabic-Indic 3
        "/v1/events/counts/sent?hours=",
        "/v1/suppressions/has%20space@example.com",
        "/v1/topics/bad%00id",
        f"/v1/topics/{'t' * 256}",
    ],
)
def test_bad_path_and_query_parameters_get_400(tree: Tree, path: str) -> None:
    error_of(tree.get(path), 400)


def test_malformed_http_is_refused_without_an_error_trace(tree: Tree) -> None:
    with socket.create_connection(("127.0.0.1", tree.port), timeout=5) as raw:
        raw.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n")
        assert b" 400 " in raw.recv(100).split(b"\r\n")[0]
    wait_until(lambda: "refused malformed HTTP" in tree.log(), 5, "the one-line note")
    assert "Traceback" not in tree.log()


def test_a_client_over_api_rate_limit_gets_429_and_others_do_not(make_tree: Callable[..., Tree]) -> None:
    secret = "rate-secret-" + "r" * 40
    tree = make_tree({"AUTH_DISABLED": "false", "JWT_SECRET": secret, "API_RATE_LIMIT": "0.1", "API_RATE_BURST": "2"})

    def auth(sub: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + jwt.encode({"sub": sub, "exp": int(time.time()) + 60}, secret, "HS256")}

    # Given a client that used its burst of 2
    assert [tree.get("/v1/topics", headers=auth("busy"))[0] for _ in range(2)] == [200, 200]
    # Then the next request waits ~10 s (0.1/s): 429 with Retry-After, in the error shape
    answer = tree.get("/v1/topics", headers=auth("busy"))
    assert error_of(answer, 429)["code"] == "too_many_requests"
    assert 1 <= int(answer[2]["Retry-After"]) <= 10
    # And another client, the pixel and the webhook are not limited by it
    assert tree.get("/v1/topics", headers=auth("calm"))[0] == 200
    assert {tree.get("/v1/events/open?request_id=1&sig=x")[0] for _ in range(5)} == {200}
    # And a refused token is still a 401, not a 429
    assert tree.get("/v1/topics", headers={"Authorization": "Bearer nope"})[0] == 401


def test_a_stalled_recorder_gets_503_with_retry_after_and_a_keyed_retry_stores_once(
    make_tree: Callable[..., Tree],
) -> None:
    tree = make_tree()
    recorder = tree.children()["recorder"]
    body, key = campaign(["a@example.com", "b@example.com"], scheduled_at=LATER), {"Idempotency-Key": "retry-me"}
    os.kill(recorder, signal.SIGSTOP)
    try:
        # When the recorder cannot answer, the API says so in bounded time instead of hanging
        started = time.monotonic()
        answer = tree.post("/v1/messages", body, headers=key, timeout_s=30)
        assert error_of(answer, 503)["code"] == "unavailable" and int(answer[2]["Retry-After"]) >= 1
        assert time.monotonic() - started < 15
    finally:
        os.kill(recorder, signal.SIGCONT)
    # Then the client's retry with the same key is answered, and the campaign is stored once
    _, answer, _ = wait_until(lambda: (r := tree.post("/v1/messages", body, headers=key))[0] == 200 and r, 15)
    assert answer["success"] == 2
    assert tree.statuses() == {"pending": 2}
