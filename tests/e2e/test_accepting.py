"""POST /v1/messages against the real tree: every 400, rejected, duplicates, idempotency."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.helpers import Tree, campaign, http

MAX_EMAILS = 50


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    # Scheduled far ahead by default so nothing is sent while we count rows.
    started = Tree(
        tmp_path_factory.mktemp("accepting"),
        {"MAX_EMAILS_PER_REQUEST": str(MAX_EMAILS), "MAX_REQUEST_BYTES": "65536", "TIMEZONE": "Asia/Seoul"},
    ).start()
    yield started
    started.stop()


def rows(tree: Tree) -> int:
    with tree.db() as conn:
        return int(conn.execute("SELECT COUNT(*) FROM recipients").fetchone()[0])


def later() -> str:
    return (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")


def valid(**extra: Any) -> dict[str, Any]:
    body = campaign(["ada@example.com"], scheduled_at=later())
    body.update(extra)
    return body


def with_message(**fields: Any) -> dict[str, Any]:
    body = valid()
    body["messages"][0].update(fields)
    return body


def without(field: str) -> dict[str, Any]:
    body = valid()
    del body["messages"][0][field]
    return body


BAD_BODIES = [
    pytest.param(b"{not json", "invalid_json", None, id="not-json"),
    pytest.param(json.dumps({"messages": "x"}).encode(), "invalid_field", "messages", id="messages-not-a-list"),
    pytest.param({"messages": []}, "invalid_field", "messages", id="empty-messages"),
    pytest.param({}, "invalid_field", "messages", id="missing-messages"),
    pytest.param(with_message(subject=7), "invalid_field", "messages[0].subject", id="subject-not-a-string"),
    pytest.param(without("subject"), "invalid_field", "messages[0].subject", id="missing-subject"),
    pytest.param(with_message(subject="   "), "invalid_field", "messages[0].subject", id="blank-subject"),
    pytest.param(with_message(subject="Hi\r\nBcc: x@y.z"), "invalid_field", "messages[0].subject", id="subject-crlf"),
    pytest.param(with_message(subject="Hi\nthere"), "invalid_field", "messages[0].subject", id="subject-lf"),
    pytest.param(without("content"), "invalid_field", "messages[0].content", id="missing-content"),
    pytest.param(with_message(content=""), "invalid_field", "messages[0].content", id="blank-content"),
    pytest.param(without("emails"), "invalid_field", "messages[0].emails", id="missing-emails"),
    pytest.param(with_message(emails=[]), "invalid_field", "messages[0].emails", id="empty-emails"),
    pytest.param(with_message(emails="a@b.co"), "invalid_field", "messages[0].emails", id="emails-not-a-list"),
    pytest.param(with_message(emails=[1]), "invalid_field", "messages[0].emails[0]", id="email-not-a-string"),
    pytest.param(with_message(topic_id="t" * 256), "invalid_field", "messages[0].topic_id", id="topic-too-long"),
    pytest.param(with_message(topic_id=5), "invalid_field", "messages[0].topic_id", id="topic-not-a-string"),
    pytest.param(valid(scheduled_at="next tuesday"), "invalid_field", "scheduled_at", id="scheduled-garbage"),
    pytest.param(valid(scheduled_at="2026-13-40 25:00:00"), "invalid_field", "scheduled_at", id="scheduled-impossible"),
    pytest.param(valid(scheduled_at="2999-01-01T00:00:00Z"), "invalid_field", "scheduled_at", id="beyond-horizon"),
    pytest.param(
        {"messages": [with_message(emails=[f"u{i}@x.io" for i in range(30)])["messages"][0]] * 2},
        "too_many_recipients",
        "messages",
        id="too-many-recipients-summed",
    ),
]


@pytest.mark.parametrize(("body", "code", "field"), BAD_BODIES)
def test_bad_bodies_get_400_naming_the_field_and_store_nothing(tree: Tree, body: Any, code: str, field: str) -> None:
    before = rows(tree)
    status, answer, _ = tree.post("/v1/messages", body)
    assert status == 400, answer
    assert answer["code"] == code
    assert answer.get("field") == field
    assert isinstance(answer["error"], str) and answer["error"]
    assert rows(tree) == before


def test_a_body_over_the_limit_gets_413(tree: Tree) -> None:
    before = rows(tree)
    status, answer, _ = tree.post("/v1/messages", with_message(content="x" * 70_000))
    assert status == 413 and answer["code"] == "body_too_large"
    assert rows(tree) == before


def test_invalid_addresses_are_rejected_with_reasons_and_repeats_stored_once(tree: Tree) -> None:
    before = rows(tree)
    emails = [" Ada@Example.COM ", "ada@example.com", "Ada@example.com", "not-an-address", "é@example.com", "b@x"]
    status, answer, _ = tree.post("/v1/messages", with_message(emails=emails))
    assert status == 200
    assert answer["total"] == 6
    assert answer["success"] == 2  # Ada@example.com and ada@example.com differ in the local part
    assert answer["duplicates"] == 1
    assert answer["errors"] == 4
    assert [r["email"] for r in answer["rejected"]] == ["not-an-address", "é@example.com", "b@x"]
    assert all(r["reason"] for r in answer["rejected"])
    assert rows(tree) == before + 2
    with tree.db() as conn:
        stored = {r[0] for r in conn.execute("SELECT email FROM recipients ORDER BY id DESC LIMIT 2")}
    assert stored == {"Ada@example.com", "ada@example.com"}


def test_answer_keeps_the_original_fields(tree: Tree) -> None:
    status, answer, _ = tree.post("/v1/messages", valid())
    assert status == 200
    assert set(answer) == {
        "total",
        "success",
        "errors",
        "duration_ms",
        "scheduled",
        "scheduled_at",
        "rejected",
        "duplicates",
        "suppressed",
    }
    assert answer["scheduled"] is True and answer["scheduled_at"].endswith("Z")


def test_naive_scheduled_at_is_read_in_the_configured_zone(tree: Tree) -> None:
    naive = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%d %H:%M:%S")
    status, answer, _ = tree.post("/v1/messages", campaign(["z@example.com"], scheduled_at=naive))
    assert status == 200
    expected = datetime.fromisoformat(naive).replace(tzinfo=UTC) - timedelta(hours=9)
    assert answer["scheduled_at"] == expected.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_content_is_stored_once_per_message(tree: Tree) -> None:
    with tree.db() as conn:
        before = conn.execute("SELECT COUNT(*) FROM contents").fetchone()[0]
    assert tree.post("/v1/messages", with_message(emails=[f"u{i}@x.io" for i in range(40)]))[0] == 200
    with tree.db() as conn:
        assert conn.execute("SELECT COUNT(*) FROM contents").fetchone()[0] == before + 1


def test_idempotency_key_replays_the_answer_and_stores_nothing_new(tree: Tree) -> None:
    body = with_message(emails=["k1@example.com", "k2@example.com"])
    headers = {"Idempotency-Key": "campaign-42", "Content-Type": "application/json"}
    first = tree.post("/v1/messages", body, headers=headers)
    after_first = rows(tree)
    again = tree.post("/v1/messages", body, headers=headers)
    assert first[0] == again[0] == 200
    assert again[1] == first[1], "the first answer, duration_ms included"
    assert rows(tree) == after_first
    other = copy.deepcopy(body)
    other["messages"][0]["emails"] = ["k3@example.com"]
    status, answer, _ = tree.post("/v1/messages", other, headers=headers)
    assert status == 422 and answer["code"] == "idempotency_key_reused"
    assert rows(tree) == after_first


def test_unknown_routes_and_methods_answer_in_the_error_shape(tree: Tree) -> None:
    status, answer, _ = tree.get("/v1/nope")
    assert status == 404 and answer["code"] == "not_found"
    status, answer, headers = http("PUT", tree.base + "/v1/messages", {})
    assert status == 405 and answer["code"] == "method_not_allowed"
    assert "POST" in headers.get("Allow", "")
    status, answer, headers = http("PUT", tree.base + "/v1/topics/t1", {})
    assert status == 405 and answer["code"] == "method_not_allowed"
    assert {"GET", "DELETE"} <= set(headers.get("Allow", "").split(","))
    # Only the files the docs page loads are served from the package's folder.
    for path in ("/", "/v1", "/docs/static/LICENSE", "/docs/static/..%2F..%2Fsetup.py", "/docs/static/"):
        status, answer, _ = tree.get(path)
        assert status == 404 and answer["code"] == "not_found", path
