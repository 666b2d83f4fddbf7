"""The CLI's pure parts, in-process: chunks, bodies and Idempotency-Keys of a send, `--at`,
the server URL, and a topic's statistics read as progress."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from stages.cli import upload
from stages.cli.client import base_url, error_message, shown, topic_path
from stages.cli.csvfile import Recipient
from stages.cli.errors import ExitCode, Failure
from stages.cli.upload import Campaign
from stages.cli.watch import Sending

CAMPAIGN = Campaign(
    subject="Hi {{first_name}}",
    html="<p>Hello {{first_name}}</p>",
    text=None,
    topic_id="spring",
    list_id=None,
    scheduled_at=None,
    personal=True,
)


def people(count: int) -> list[Recipient]:
    return [Recipient(i + 2, f"p{i}@example.com", {"first_name": f"P{i}"}) for i in range(count)]


def test_chunks_hold_at_most_the_size_and_every_recipient_once_in_order() -> None:
    chunks = list(upload.chunks(people(25), CAMPAIGN, size=10))
    assert [(c.number, c.size) for c in chunks] == [(1, 10), (2, 10), (3, 5)]
    posted = [r for c in chunks for r in json.loads(upload.body(CAMPAIGN, c))["messages"][0]["recipients"]]
    assert posted == [{"email": r.email, "data": r.data} for r in people(25)]


def test_chunks_also_stay_under_the_byte_budget() -> None:
    head, tail = upload.envelope(CAMPAIGN)
    one = len(upload.entry(people(1)[0], True)) + 1
    budget = len(head) + len(tail) + 3 * one
    chunks = list(upload.chunks(people(7), CAMPAIGN, size=10_000, max_bytes=budget))
    assert [c.size for c in chunks] == [3, 3, 1]
    assert all(len(upload.body(CAMPAIGN, c)) <= budget for c in chunks)


def test_a_body_is_the_api_s_json_with_recipients_or_plain_emails() -> None:
    chunk = next(upload.chunks(people(2), CAMPAIGN))
    body = json.loads(upload.body(replace(CAMPAIGN, list_id="news", scheduled_at="2026-12-01T09:00:00+09:00"), chunk))
    message = body["messages"][0]
    assert body["scheduled_at"] == "2026-12-01T09:00:00+09:00"
    assert (message["topic_id"], message["list_id"], message["template"]) == ("spring", "news", True)
    assert message["subject"] == CAMPAIGN.subject and message["content"] == CAMPAIGN.html
    plain = replace(CAMPAIGN, personal=False)
    message = json.loads(upload.body(plain, next(upload.chunks(people(2), plain))))["messages"][0]
    assert message["emails"] == ["p0@example.com", "p1@example.com"] and "recipients" not in message
    assert "scheduled_at" not in json.loads(upload.body(CAMPAIGN, chunk))


def test_the_same_send_builds_the_same_bytes_and_keys() -> None:
    def build() -> list[tuple[str, bytes]]:
        digest = upload.campaign_digest("f" * 64, CAMPAIGN, 10)
        return [
            (upload.idempotency_key(digest, c.number), upload.body(CAMPAIGN, c))
            for c in upload.chunks(people(25), CAMPAIGN, 10)
        ]

    first, again = build(), build()
    assert first == again
    keys = [key for key, _ in first]
    assert len(set(keys)) == 3 and all(key.isprintable() and len(key) <= 255 for key in keys)


@pytest.mark.parametrize(
    "change",
    [
        {"subject": "Hello {{first_name}}"},
        {"html": "<p>other</p>"},
        {"text": "plain"},
        {"topic_id": "autumn"},
        {"list_id": "news"},
        {"scheduled_at": "2026-12-01T09:00:00+00:00"},
        {"personal": False},
    ],
)
def test_any_change_to_the_request_changes_the_keys(change: dict[str, object]) -> None:
    base = upload.campaign_digest("f" * 64, CAMPAIGN, 10)
    changed = upload.campaign_digest("f" * 64, replace(CAMPAIGN, **change), 10)  # type: ignore[arg-type]
    assert upload.idempotency_key(base, 1) != upload.idempotency_key(changed, 1)


def test_the_file_and_the_chunking_change_the_keys_too() -> None:
    base = upload.campaign_digest("f" * 64, CAMPAIGN, 10)
    assert base != upload.campaign_digest("e" * 64, CAMPAIGN, 10)
    assert base != upload.campaign_digest("f" * 64, CAMPAIGN, 11)


def test_the_default_topic_follows_the_file_and_options_not_the_run() -> None:
    untitled = replace(CAMPAIGN, topic_id="")
    topic = upload.default_topic("f" * 64, untitled)
    assert topic.startswith("csv-") and topic == upload.default_topic("f" * 64, untitled)
    assert topic != upload.default_topic("e" * 64, untitled)
    assert topic != upload.default_topic("f" * 64, replace(untitled, subject="Other"))


@pytest.fixture
def seoul(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Asia/Seoul")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_at_without_an_offset_is_this_machine_s_local_time(seoul: None) -> None:
    at = upload.scheduled_at("2026-12-01 09:00")
    assert at == "2026-12-01T09:00:00+09:00"
    assert datetime.fromisoformat(at).astimezone(UTC) == datetime(2026, 12, 1, 0, 0, tzinfo=UTC)


def test_at_with_an_offset_is_kept_and_nonsense_is_a_usage_error(seoul: None) -> None:
    assert upload.scheduled_at("2026-12-01T09:00:00Z") == "2026-12-01T09:00:00+00:00"
    assert upload.scheduled_at("2026-12-01T09:00-05:00") == "2026-12-01T09:00:00-05:00"
    assert upload.scheduled_at(None) is None
    with pytest.raises(Failure) as caught:
        upload.scheduled_at("next tuesday")
    assert caught.value.code == ExitCode.USAGE and "YYYY-MM-DD HH:MM" in caught.value.message


def test_the_server_url_is_checked_and_never_printed_with_a_password() -> None:
    assert base_url("http://localhost:3000/") == "http://localhost:3000"
    with pytest.raises(Failure) as caught:
        base_url("localhost:3000")
    assert caught.value.code == ExitCode.USAGE
    assert shown("https://ops:hunter2@mail.example.com:8443") == "https://mail.example.com:8443"
    assert topic_path("a/b c", "/pause") == "/v1/topics/a%2Fb%20c/pause"


def test_the_api_s_error_is_read_with_its_field() -> None:
    assert (
        error_message({"error": "must not be blank", "code": "x", "field": "subject"}) == "subject: must not be blank"
    )
    assert error_message({"error": "the token has expired"}) == "the token has expired"
    assert error_message(b"<html>") is None


def test_a_topic_is_finished_when_nothing_is_pending_or_sending() -> None:
    stats = {"total": 10, "pending": 3, "sending": 2, "sent": 4, "failed": 1, "bounced": 1, "paused": 0}
    going = Sending.of(stats)
    assert (going.done, going.finished) == (5, False)
    assert "sent 4" in going.detail(2.5) and "2.5/s" in going.detail(2.5) and "ETA 2s" in going.detail(2.5)
    done = Sending.of({**stats, "pending": 0, "sending": 0, "sent": 9})
    assert done.finished and done.done == 10 and "ETA" not in done.detail(1.0)
    held = Sending.of({**stats, "pending": 0, "sending": 0, "paused": 5, "paused_reason": "bounces"})
    assert held.finished and "paused 5" in held.detail(None) and "held: bounces" in held.detail(None)
