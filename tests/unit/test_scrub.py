"""pipeline/scrub.py: nothing secret survives anywhere in an event; ordinary text stays readable."""

from __future__ import annotations

import copy
import datetime
import json
import time
from typing import Any

import jwt
import pytest

from pipeline.scrub import EMAIL, FILTERED, JWT, MARKUP, SECRET, make_before_breadcrumb, make_before_send

JWT_SECRET = "jwt-secret-" + "s" * 40
API_KEY = "api-key-" + "k" * 40
TOKEN = jwt.encode({"sub": "someone", "exp": 2_000_000_000}, JWT_SECRET, algorithm="HS256")
ADDRESS = "victim.name+tag@example.com"
HTML = "<html><body><p class='offer'>Private offer 4711</p></body></html>"
# What must not appear in the output, whatever the placeholder around it.
LEAKS = {
    "jwt secret": JWT_SECRET,
    "api key": API_KEY,
    "token": TOKEN,
    "token signature": TOKEN.rsplit(".", 1)[1],
    "address": ADDRESS,
    "address local part": "victim.name+tag",
    "html text": "Private offer 4711",
    "markup": "<p",
}

scrub = make_before_send([JWT_SECRET, API_KEY])


def leaks_in(event: Any) -> list[str]:
    text = json.dumps(event, default=str)
    return [name for name, value in LEAKS.items() if value in text]


def nest(value: Any, depth: int) -> Any:
    """`value` under `depth` levels of dicts and lists, as extra and contexts nest."""
    for level in range(depth):
        value = {f"level{level}": [value]} if level % 2 else {f"level{level}": value}
    return value


def every_place(value: str) -> dict[str, Any]:
    """One event with `value` in each place Sentry can carry a string."""
    return {
        "message": value,
        "logentry": {"message": "failed: %s", "params": [value], "formatted": f"failed: {value}"},
        "exception": {
            "values": [
                {
                    "type": "RuntimeError",
                    "value": value,
                    "stacktrace": {"frames": [{"function": "send", "vars": {"local": value, "args": [value]}}]},
                }
            ]
        },
        "breadcrumbs": {"values": [{"category": "log", "message": value, "data": {"detail": value}}]},
        "extra": nest({"inner": value}, 5),
        "contexts": {"custom": nest(value, 4)},
        "tags": {"stage": "sender", "where": value},
        "request": {
            "url": f"http://localhost/v1/x?who={value}",
            "query_string": f"who={value}",
            "headers": {"User-Agent": value, "Referer": value},
        },
        value: "a key, too",
    }


SECRET_VALUES = {
    "jwt secret": (f"key={JWT_SECRET}", SECRET),
    "api key": (f"the key {API_KEY} was refused", SECRET),
    "jwt": (f"token {TOKEN} expired", JWT),
    "bearer header": (f"Authorization: Bearer {TOKEN}", FILTERED),
    "bearer garbage": ("Bearer not\xffa.token", FILTERED),
    "address": (f"cannot send to {ADDRESS}: bounced", EMAIL),
    "address in a query": ("who=victim.name%2Btag%40example.com", EMAIL),
    "html": (f"could not render {HTML} for the topic", MARKUP),
}


@pytest.mark.parametrize("kind", list(SECRET_VALUES))
def test_each_kind_is_scrubbed_everywhere_in_the_event(kind: str) -> None:
    value, placeholder = SECRET_VALUES[kind]
    scrubbed = scrub(every_place(value), {})
    assert scrubbed is not None
    text = json.dumps(scrubbed)
    assert value not in text
    assert leaks_in(scrubbed) == []
    assert placeholder in scrubbed["exception"]["values"][0]["value"]
    assert scrubbed["tags"]["stage"] == "sender"


def test_nested_twenty_levels_deep_is_scrubbed() -> None:
    event = {"extra": nest({"body": "x", "note": f"{JWT_SECRET} {ADDRESS} {HTML} {TOKEN}"}, 20)}
    assert leaks_in(scrub(event, {})) == []


def test_credential_headers_and_fields_are_dropped_whole_by_name() -> None:
    event = {
        "request": {
            "headers": {
                "Authorization": "Basic dXNlcjpwYXNz",
                "X-API-KEY": "short",
                "Cookie": "session=abc",
                "Set-Cookie": "sid=1",
                "Content-Type": "application/json",
            },
            "cookies": {"sid": "1"},
            "data": '{"subject": "Hello", "content": "plain words"}',
        },
        "extra": {"jwt_secret": "anything", "api_key": "anything", "password": "p", "count": 3},
    }
    scrubbed = scrub(event, {})
    assert scrubbed is not None
    headers = scrubbed["request"]["headers"]
    assert headers["Authorization"] == headers["X-API-KEY"] == headers["Cookie"] == headers["Set-Cookie"] == FILTERED
    assert headers["Content-Type"] == "application/json"
    assert scrubbed["request"]["cookies"] == scrubbed["request"]["data"] == FILTERED
    assert scrubbed["extra"] == {"jwt_secret": FILTERED, "api_key": FILTERED, "password": FILTERED, "count": 3}


def test_a_secret_cut_short_by_the_sdk_is_scrubbed_too() -> None:
    cut = "x" * 50 + JWT_SECRET[:12] + "..."  # how max_value_length ends a long value
    scrubbed = scrub({"message": cut}, {})
    assert scrubbed is not None
    assert JWT_SECRET[:12] not in scrubbed["message"]
    assert scrubbed["message"].endswith(SECRET + "...")


def test_an_ordinary_event_stays_readable() -> None:
    event = {
        "level": "error",
        "server_name": "recorder",
        "message": "StoreMessages failed and was rolled back: ValueError: topic t1 has 3 < 4 rows",
        "exception": {
            "values": [
                {
                    "type": "KeyError",
                    "value": "'content 17'",
                    "stacktrace": {
                        "frames": [{"function": "<module>", "filename": "<frozen runpy>", "lineno": 88, "in_app": True}]
                    },
                }
            ]
        },
        "tags": {"stage": "recorder"},
        "extra": {"attempts": 2, "retry": None, "ok": False, "rate": 1.5, "basic": "basic validation, token count 3"},
        "timestamp": "2024-05-01T10:00:00Z",
    }
    assert scrub(copy.deepcopy(event), {}) == event


def test_the_event_given_is_not_changed() -> None:
    event = every_place(ADDRESS)
    before = copy.deepcopy(event)
    scrub(event, {})
    assert event == before


def test_short_or_missing_secrets_do_not_eat_words() -> None:
    loose = make_before_send([None, "", "abc"])
    assert loose({"message": "abc is a word"}, {}) == {"message": "abc is a word"}


def test_a_breadcrumb_with_objects_and_a_timestamp() -> None:
    class Holder:
        def __repr__(self) -> str:
            return f"Holder({JWT_SECRET!r}, {ADDRESS!r})"

    moment = datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC)
    crumb = {"timestamp": moment, "message": f"sent to {ADDRESS}", "data": {"held": Holder(), "raw": TOKEN.encode()}}
    scrubbed = make_before_breadcrumb([JWT_SECRET])(crumb, {})
    assert scrubbed is not None
    assert scrubbed["timestamp"] is moment
    assert scrubbed["message"] == f"sent to {EMAIL}"
    assert leaks_in(scrubbed) == []


@pytest.mark.parametrize(
    "hostile", ["eyJ" * 40_000, "a" * 100_000 + "@", "<a " * 40_000, "@a." * 40_000, "<!--" * 30_000]
)
def test_hostile_strings_cost_one_pass(hostile: str) -> None:
    started = time.perf_counter()
    scrub({"message": hostile}, {})
    assert time.perf_counter() - started < 1.0
