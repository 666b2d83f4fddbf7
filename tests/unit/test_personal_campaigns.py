"""Personalized messages at POST: what is refused before anything is stored, and what is kept."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from config.settings import Settings
from stages.ingest.campaigns import parse_campaign
from stages.ingest.errors import ApiError

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def post(**message: Any) -> bytes:
    base: dict[str, Any] = {"subject": "Hi {{first_name}}", "content": "<p>Hello {{first_name}}</p>"}
    return json.dumps({"messages": [{**base, **message}]}).encode()


def refused(body: bytes) -> ApiError:
    with pytest.raises(ApiError) as error:
        parse_campaign(body, Settings(), NOW)
    return error.value


def test_recipients_with_data_are_stored_with_their_data_and_the_first_of_a_repeat_wins() -> None:
    people = [
        {"email": "ada@example.com", "data": {"first_name": "Ada"}},
        {"email": "ada@EXAMPLE.COM", "data": {"first_name": "Again"}},
        {"email": "alan@example.com"},
    ]
    campaign = parse_campaign(post(recipients=people, emails=["grace@example.com"]), Settings(), NOW)
    [message] = campaign.messages
    assert message.template and message.emails == ("ada@example.com", "alan@example.com", "grace@example.com")
    assert [json.loads(d) if d else None for d in message.data] == [{"first_name": "Ada"}, None, None]
    assert campaign.total == 4 and campaign.duplicates == 1


def test_without_recipients_or_template_the_text_is_sent_verbatim() -> None:
    [message] = parse_campaign(post(emails=["a@example.com"], subject="{{ literal"), Settings(), NOW).messages
    assert not message.template and message.data == ()


@pytest.mark.parametrize(
    ("message", "field", "words"),
    [
        ({"content": "<p>{{#items}}x</p>", "template": True}, "messages[0].content", "line 1, column"),
        ({"subject": "Hi {{name", "template": True}, "messages[0].subject", "unclosed"),
        ({"text": "{{> partial}}", "template": True}, "messages[0].text", "partial"),
    ],
)
def test_a_template_that_does_not_parse_names_the_field_and_the_position(
    message: dict[str, Any], field: str, words: str
) -> None:
    error = refused(post(emails=["a@example.com"], **message))
    assert (error.status, error.code, error.field) == (400, "invalid_template", field)
    assert words in error.message


def test_strict_names_the_first_recipients_missing_a_variable() -> None:
    people = [{"email": f"p{i}@example.com", "data": {"plan": "pro"}} for i in range(8)]
    error = refused(post(recipients=people, strict=True))
    assert (error.code, error.field) == ("missing_variable", "messages[0].recipients")
    assert "p0@example.com (first_name)" in error.message and "p4@example.com" in error.message
    assert "p5@example.com" not in error.message
    # Without strict, a missing variable renders empty and the POST is accepted
    assert parse_campaign(post(recipients=people), Settings(), NOW).total == 8


def test_data_that_would_break_the_subject_or_is_too_large_is_refused() -> None:
    error = refused(post(recipients=[{"email": "a@example.com", "data": {"first_name": "A\r\nBcc: x@evil.test"}}]))
    assert (error.field, error.message) == (
        "messages[0].recipients[0].data",
        "this data puts a line break in the subject",
    )
    big = {"first_name": "x" * 20_000}
    error = refused(post(recipients=[{"email": "a@example.com", "data": big}]))
    assert error.field == "messages[0].recipients[0].data" and "over the limit" in error.message


def test_a_message_needs_an_address_in_emails_or_recipients() -> None:
    error = refused(post(recipients=[]))
    assert (error.status, error.field) == (400, "messages[0].emails")
