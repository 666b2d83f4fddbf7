"""The original server's clients against ours, unchanged: every request as they send it, every
answer parsed with their types (shared/reference/original-server.md, section 3).

The types are strict msgspec structs standing in for the clients' Rust/Go/TypeScript types:
an integer is not a float, an error is a string, the count keys are theirs."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from tests.helpers import Tree, http, wait_until

API_KEY = "original-api-key-" + "k" * 32
# The original's only scheduled_at form: naive, `%Y-%m-%d %H:%M:%S`.
TOMORROW = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")


class MessageResponse(msgspec.Struct):
    """R-new's `create_message` answer: usize, usize, usize, u128, bool."""

    total: int
    success: int
    errors: int
    duration_ms: int
    scheduled: bool


class TopicResponse(msgspec.Struct):
    request_counts: dict[str, int]
    result_counts: dict[str, int]


class StatusResponse(msgspec.Struct):
    status: str


class SentCount(msgspec.Struct):
    count: int


class ErrorResponse(msgspec.Struct):
    error: str


class Ready(msgspec.Struct):
    status: str
    db: str


def parse(kind: type[Any], body: Any) -> Any:
    """As a typed client would: unknown fields ignored, every known one of exactly its type."""
    return msgspec.convert(body, kind, strict=True)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    """Configured as an operator of the original configures it: API_KEY alone."""
    started = Tree(tmp_path_factory.mktemp("original"), {"AUTH_DISABLED": "false", "API_KEY": API_KEY}).start()
    yield started
    started.stop()


def call(tree: Tree, method: str, path: str, body: Any = None, key: str | None = API_KEY) -> tuple[int, Any]:
    headers = {"X-API-KEY": key} if key is not None else {}
    status, answer, _ = http(method, tree.base + path, body, headers=headers)
    return status, answer


def test_posting_a_campaign_answers_the_original_types(tree: Tree) -> None:
    body = {
        "messages": [
            {
                "topic_id": "newsletter-1",
                "emails": ["a@example.com", "b@example.com"],
                "subject": "Hi",
                "content": "<p>x",
            }
        ]
    }
    status, answer = call(tree, "POST", "/v1/messages", body)
    assert status == 200
    parsed = parse(MessageResponse, answer)
    assert (parsed.total, parsed.success, parsed.errors, parsed.scheduled) == (2, 2, 0, False)
    scheduled = {**body, "scheduled_at": TOMORROW}
    scheduled["messages"] = [{**body["messages"][0], "topic_id": "later"}]
    assert parse(MessageResponse, call(tree, "POST", "/v1/messages", scheduled)[1]).scheduled is True


def test_topic_counts_have_the_original_keys(tree: Tree) -> None:
    body = {"messages": [{"topic_id": "counted", "emails": ["c@example.com"], "subject": "S", "content": "<p>c"}]}
    assert call(tree, "POST", "/v1/messages", body)[0] == 200
    wait_until(lambda: call(tree, "GET", "/v1/topics/counted")[1]["request_counts"]["Sent"] == 1, 10, "sent")
    counts = parse(TopicResponse, call(tree, "GET", "/v1/topics/counted")[1])
    assert set(counts.request_counts) == {"Created", "Processed", "Sent", "Failed", "Stopped"}
    assert counts.request_counts["Sent"] == 1
    assert {"Delivery", "Bounce", "Complaint", "Open"} <= set(counts.result_counts)


def test_an_unknown_topic_is_zeros_and_its_cancel_is_ok(tree: Tree) -> None:
    status, answer = call(tree, "GET", "/v1/topics/no-such-topic")
    assert status == 200 and sum(parse(TopicResponse, answer).request_counts.values()) == 0
    status, answer = call(tree, "DELETE", "/v1/topics/no-such-topic")
    assert status == 200 and parse(StatusResponse, answer).status == "ok" and answer["cancelled"] == 0


def test_cancel_answers_ok_with_the_count(tree: Tree) -> None:
    body = {
        "messages": [{"topic_id": "to-stop", "emails": ["d@example.com"], "subject": "S", "content": "<p>d"}],
        "scheduled_at": TOMORROW,
    }
    assert call(tree, "POST", "/v1/messages", body)[0] == 200
    status, answer = call(tree, "DELETE", "/v1/topics/to-stop")
    assert status == 200 and parse(StatusResponse, answer).status == "ok" and answer["cancelled"] == 1
    assert parse(TopicResponse, call(tree, "GET", "/v1/topics/to-stop")[1]).request_counts["Stopped"] == 1


def test_errors_are_a_string_under_error(tree: Tree) -> None:
    cases = [
        call(tree, "GET", "/v1/topics/x", key=None),
        call(tree, "GET", "/v1/topics/x", key=""),
        call(tree, "GET", "/v1/topics/x", key="wrong-" + "w" * 40),
        call(tree, "POST", "/v1/messages", {"messages": "nope"}),
        call(tree, "POST", "/v1/messages", b"{not json"),
        call(tree, "GET", "/v1/events/counts/sent?hours=abc"),
    ]
    for status, answer in cases:
        assert 400 <= status < 500 and parse(ErrorResponse, answer).error
    assert [answer["error"] for _, answer in cases[:3]] == [
        "Missing X-API-KEY header",
        "Empty API Key",
        "Invalid API Key",
    ]


def test_counts_pixel_health_and_ready(tree: Tree) -> None:
    assert parse(SentCount, call(tree, "GET", "/v1/events/counts/sent?hours=24")[1]).count >= 0
    with urllib.request.urlopen(tree.base + "/v1/events/open?request_id=1", timeout=10) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "image/png"
    assert parse(StatusResponse, tree.get("/health")[1]).status == "ok"
    assert parse(Ready, tree.get("/ready")[1]).db == "connected"


def test_a_replayed_idempotency_key_gets_the_first_answer_byte_for_byte(tree: Tree) -> None:
    body = json.dumps(
        {"messages": [{"topic_id": "replay", "emails": ["e@example.com"], "subject": "S", "content": "<p>e"}]}
    ).encode()
    headers = {"X-API-KEY": API_KEY, "Content-Type": "application/json", "Idempotency-Key": "replay-1"}
    answers = []
    for _ in range(2):
        request = urllib.request.Request(tree.base + "/v1/messages", body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            answers.append(response.read())
    assert answers[0] == answers[1]
    assert isinstance(json.loads(answers[0])["duration_ms"], int)
