"""Campaign parsing details that the end-to-end tests do not reach."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from config.settings import Settings
from stages.ingest.campaigns import parse_campaign, parse_scheduled_at
from stages.ingest.errors import ApiError
from stages.ingest.schemas import split_error

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def body(**message: object) -> bytes:
    base = {"emails": ["a@example.com"], "subject": "S", "content": "<p>x</p>"}
    return json.dumps({"messages": [{**base, **message}]}).encode()


def test_a_message_over_ses_40_mb_limit_is_refused_before_storing() -> None:
    with pytest.raises(ApiError) as refused:
        parse_campaign(body(content="x" * 15_500_000), Settings(), NOW)
    assert refused.value.status == 400 and refused.value.field == "messages[0].content"
    assert "40 MB" in refused.value.message


def test_msgspec_paths_become_field_names() -> None:
    assert split_error("Expected `str`, got `int` - at `$.messages[0].subject`") == (
        "Expected `str`, got `int`",
        "messages[0].subject",
    )
    assert split_error("Object missing required field `emails` - at `$.messages[1]`") == (
        "is required",
        "messages[1].emails",
    )
    assert split_error("Object missing required field `messages`") == ("is required", "messages")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-06-02T09:00:00+09:00", "2026-06-02T00:00:00+00:00"),
        ("2026-06-02T00:00:00Z", "2026-06-02T00:00:00+00:00"),
        ("2026-06-02 09:00:00", "2026-06-02T00:00:00+00:00"),  # naive: TIMEZONE (Seoul)
        ("2026-06-02T09:00:00", "2026-06-02T00:00:00+00:00"),
    ],
)
def test_scheduled_at_forms(value: str, expected: str) -> None:
    settings = Settings(timezone="Asia/Seoul")
    moment = parse_scheduled_at(value, settings, NOW)
    assert moment is not None and moment.isoformat() == expected


def test_unknown_fields_are_ignored() -> None:
    campaign = parse_campaign(body(priority="high"), Settings(), NOW)
    assert campaign.stored_count == 1


@pytest.mark.parametrize("separator", ["\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"])
def test_every_line_separator_in_a_subject_is_refused(separator: str) -> None:
    """The email package refuses them all in a header; once stored, such a mail could never go."""
    for subject in (f"Hi{separator}there", f"Hi{separator}"):
        with pytest.raises(ApiError) as refused:
            parse_campaign(body(subject=subject), Settings(), NOW)
        assert refused.value.status == 400 and refused.value.field == "messages[0].subject"
