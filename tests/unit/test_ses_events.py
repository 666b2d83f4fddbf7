"""Parsing SES events in both formats, tolerantly."""

from __future__ import annotations

import json

from pipeline.ses_events import is_permanent_bounce, parse
from tests.fakes.fake_sns import ses_event


def test_configuration_set_bounce_with_tag() -> None:
    [event] = parse("sns-1", json.dumps(ses_event("Bounce", "ses-1", "a@x.io", request_id=42))) or []
    assert (event.kind, event.subtype, event.email, event.recipient_id, event.ses_message_id) == (
        "bounce",
        "Permanent/General",
        "a@x.io",
        42,
        "ses-1",
    )
    assert is_permanent_bounce(event) and event.occurred_at_ms > 0


def test_identity_notification_has_no_tag() -> None:
    [event] = parse("sns-1", json.dumps(ses_event("Delivery", "ses-1", "a@x.io", 42, identity_format=True))) or []
    assert event.kind == "delivery" and event.recipient_id is None


def test_every_event_type_as_ses_spells_it() -> None:
    for name, kind in [
        ("Rendering Failure", "rendering_failure"),
        ("DeliveryDelay", "delivery_delay"),
        ("Reject", "reject"),
        ("Open", "open"),
        ("Click", "click"),
        ("Send", "send"),
        ("Subscription", "subscription"),
    ]:
        body = {"eventType": name, "mail": {"messageId": "m", "destination": ["a@x.io"], "timestamp": "x"}}
        events = parse("sns", json.dumps(body))
        assert events is not None and events[0].kind == kind and events[0].email == "a@x.io"


def test_what_is_not_an_ses_event() -> None:
    assert parse("s", "Successfully validated SNS topic for Amazon SES event publishing.") is None
    assert parse("s", json.dumps({"notificationType": "AmazonSnsSubscriptionSucceeded", "message": "ok"})) is None
    assert parse("s", json.dumps([1, 2])) is None
    assert parse("s", json.dumps({"eventType": "Bounce"})) is None  # no mail


def test_a_bounce_of_several_recipients_is_one_event_each() -> None:
    body = ses_event("Bounce", "m", "a@x.io")
    body["bounce"]["bouncedRecipients"].append({"emailAddress": "b@x.io"})
    events = parse("s", json.dumps(body)) or []
    assert [e.email for e in events] == ["a@x.io", "b@x.io"]
