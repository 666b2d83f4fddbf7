"""Behaviour that Python versions do differently, decided in our code: these run unchanged on
3.11 and on 3.13 in CI, so passing on both means both answer the same."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from config.settings import Settings
from pipeline import ses_events
from pipeline.jsondepth import MAX_DEPTH, too_deep
from pipeline.tracking import signed_recipient
from stages.ingest.campaigns import parse_scheduled_at
from stages.ingest.errors import ApiError
from stages.ingest.params import is_ascii_number
from stages.ingest.schemas import SuppressionIn, decode
from stages.ingest.sns import parse_envelope

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def nested(depth: int) -> bytes:
    """An object holding arrays `depth` levels deep in all (the object is the first level)."""
    return b'{"x": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1_000, 5_000, 100_000])
def test_json_deeper_than_the_limit_is_refused_the_same_way_everywhere(depth: int) -> None:
    """3.11 raised RecursionError near 1,000 levels, 3.13 parses 5,000: we decide at 64."""
    with pytest.raises(ApiError) as refused:
        decode(nested(depth), SuppressionIn)
    assert (refused.value.status, refused.value.code) == (400, "invalid_json")
    with pytest.raises(ApiError) as refused:
        parse_envelope(nested(depth), "Notification")
    assert refused.value.code == "invalid_json"
    with pytest.raises(ses_events.InvalidEvent):
        ses_events.parse("sns-1", nested(depth).decode())


def test_json_at_the_limit_is_read() -> None:
    assert not too_deep(nested(MAX_DEPTH))
    with pytest.raises(ApiError) as refused:
        decode(nested(MAX_DEPTH), SuppressionIn)
    assert refused.value.code == "invalid_field", "read, then refused for its content, not its depth"


def test_brackets_inside_strings_are_not_nesting() -> None:
    text = json.dumps({"email": "a@x.io", "reason": "[" * 40 + '\\"' + "{" * 40, "x": ["[" * 500]}).encode()
    assert not too_deep(text)
    assert decode(text, SuppressionIn).email == "a@x.io"


@pytest.mark.parametrize("digits", [20, 4_301, 50_000])
def test_long_numbers_are_refused_before_int_sees_them(digits: int) -> None:
    """int() refuses more than 4,300 digits (3.11+), and the limit is configurable: never reach it."""
    number = "9" * digits
    assert not is_ascii_number(number)
    assert signed_recipient(b"k" * 32, f"request_id={number}&sig=abc") is None
    event = {"eventType": "Delivery", "mail": {"messageId": "m", "tags": {"request_id": [number]}}}
    with pytest.raises(ses_events.InvalidEvent):
        ses_events.parse("sns-1", json.dumps(event))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-12-01T09:00:00+09:00", "2026-12-01T00:00:00+00:00"),
        ("2026-12-01 09:00:00", "2026-12-01T09:00:00+00:00"),
        ("2026-12-01T09:00:00Z", "2026-12-01T09:00:00+00:00"),
        ("2026-12-01T09:00", "2026-12-01T09:00:00+00:00"),
        ("2026-12-01", "2026-12-01T00:00:00+00:00"),
        ("2026-12-01T09:00:00.123456789", "2026-12-01T09:00:00.123456+00:00"),
        ("2026-12-01T24:00:00", None),
        ("tomorrow", None),
    ],
)
def test_scheduled_at_forms_mean_the_same_on_every_interpreter(value: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(ApiError):
            parse_scheduled_at(value, Settings(), NOW)
        return
    parsed = parse_scheduled_at(value, Settings(), NOW)
    assert parsed is not None and parsed.isoformat() == expected


def test_naive_times_are_read_in_timezone_with_the_bundled_zone_data() -> None:
    parsed = parse_scheduled_at("2026-12-01 09:00:00", Settings(timezone="Asia/Seoul"), NOW)
    assert parsed is not None and parsed.isoformat() == "2026-12-01T00:00:00+00:00"
