"""SES events as SNS delivers them, turned into one record per affected recipient.

Both formats are understood: identity notifications (`notificationType`: Bounce,
Complaint, Delivery) and configuration-set event publishing (`eventType`: Send,
Delivery, Bounce, Complaint, Reject, DeliveryDelay, "Rendering Failure" with its space,
Open, Click, Subscription). The recipient is found by the `request_id` tag when SES
carries it (event publishing only), else by `mail.messageId`. SES "reserves the right
to add fields", so parsing is tolerant: what is missing is left empty.
Reference: shared/reference/aws-ses-sns.md section 2.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Final

from pipeline.jsondepth import MAX_DEPTH, too_deep
from pipeline.messages import SesEvent

# SES sends to at most 50 recipients per message, so no genuine event names more.
MAX_RECIPIENTS: Final = 50
# Our request_id tags are SQLite rowids: 1 .. 2**63 - 1, written in ASCII digits.
MAX_ROW_ID: Final = 2**63 - 1
ROW_ID_DIGITS: Final = re.compile(r"[0-9]{1,19}")
MAX_FIELD_CHARS: Final = 1000


class InvalidEvent(ValueError):
    """An SES-shaped message that no SES event can be: refused (400), never stored."""


KINDS = {
    "Send": "send",
    "Delivery": "delivery",
    "Bounce": "bounce",
    "Complaint": "complaint",
    "Reject": "reject",
    "DeliveryDelay": "delivery_delay",
    "Rendering Failure": "rendering_failure",
    "RenderingFailure": "rendering_failure",
    "Open": "open",
    "Click": "click",
    "Subscription": "subscription",
}
# Where each kind keeps its own details and the recipients it concerns.
DETAIL_KEYS = {
    "delivery": ("delivery", "recipients"),
    "bounce": ("bounce", "bouncedRecipients"),
    "complaint": ("complaint", "complainedRecipients"),
    "delivery_delay": ("deliveryDelay", "delayedRecipients"),
    "reject": ("reject", None),
    "rendering_failure": ("failure", None),
    "open": ("open", None),
    "click": ("click", None),
    "send": ("send", None),
    "subscription": ("subscription", None),
}


def parse(sns_message_id: str, message: str) -> list[SesEvent] | None:
    """The events in an SNS notification's Message, or None when it is not an SES event.

    InvalidEvent when it claims to be one but is outside what SES sends: more than 50
    recipients, or text no UTF-8 store can hold (JSON escapes can make lone surrogates).
    """
    if too_deep(message):
        raise InvalidEvent(f"the message is nested more than {MAX_DEPTH} levels deep")
    try:
        body = json.loads(message)
    except (ValueError, RecursionError):
        return None  # e.g. "Successfully validated SNS topic for Amazon SES event publishing."
    if not isinstance(body, dict):
        return None
    kind = KINDS.get(str(body.get("eventType") or body.get("notificationType") or ""))
    mail = body.get("mail")
    if kind is None or not isinstance(mail, dict):
        return None
    detail_key, recipients_key = DETAIL_KEYS[kind]
    found = body.get(detail_key)
    detail: dict[str, Any] = found if isinstance(found, dict) else {}
    emails = _recipients(detail, recipients_key) or _destination(mail) or [""]
    if len(emails) > MAX_RECIPIENTS:
        raise InvalidEvent(f"an SES event names at most {MAX_RECIPIENTS} recipients; this one names {len(emails)}")
    occurred = _millis(detail.get("timestamp") or mail.get("timestamp"))
    subtype, ses_message_id = _text(_subtype(kind, detail)), _text(str(mail.get("messageId") or ""))
    recipient_id = _tagged_recipient(mail)
    return [
        SesEvent(
            sns_message_id=sns_message_id,
            kind=kind,
            subtype=subtype,
            email=_text(email),
            ses_message_id=ses_message_id,
            recipient_id=recipient_id,
            occurred_at_ms=occurred,
        )
        for email in emails
    ]


def _text(value: str) -> str:
    """A field as it will be stored: valid UTF-8, of a sane length."""
    if len(value) > MAX_FIELD_CHARS:
        raise InvalidEvent(f"a field of the SES event is longer than {MAX_FIELD_CHARS} characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise InvalidEvent("the SES event is not valid UTF-8 (a lone surrogate)") from None
    return value


def _destination(mail: dict[str, Any]) -> list[str]:
    found = mail.get("destination")
    return [str(e) for e in found] if isinstance(found, list) else []


def _recipients(detail: dict[str, Any], key: str | None) -> list[str]:
    if key is None:
        return []
    found = []
    entries = detail.get(key)
    for entry in entries if isinstance(entries, list) else []:
        address = entry.get("emailAddress") if isinstance(entry, dict) else entry
        if address:
            found.append(str(address))
    return found


def _subtype(kind: str, detail: dict[str, Any]) -> str:
    if kind == "bounce":
        return f"{detail.get('bounceType') or 'Undetermined'}/{detail.get('bounceSubType') or 'Undetermined'}"
    if kind == "complaint":
        return str(detail.get("complaintFeedbackType") or detail.get("complaintSubType") or "")
    if kind == "delivery_delay":
        return str(detail.get("delayType") or "")
    if kind == "reject":
        return str(detail.get("reason") or "")
    return ""


def _tagged_recipient(mail: dict[str, Any]) -> int | None:
    """Our tag, as event publishing carries it: mail.tags.request_id[0], a rowid.

    A number outside 1..2**63-1 is no rowid of ours: the event is refused, not half-read.
    A tag that is not a number at all belongs to someone else and is ignored.
    """
    tags = mail.get("tags")
    if not isinstance(tags, dict):
        return None
    values = tags.get("request_id")
    if not isinstance(values, list) or not values or not isinstance(values[0], str):
        return None
    if not values[0].isascii() or not values[0].isdigit():
        return None
    if ROW_ID_DIGITS.fullmatch(values[0]) is None or not 1 <= int(values[0]) <= MAX_ROW_ID:
        raise InvalidEvent(f"the request_id tag is not between 1 and {MAX_ROW_ID}")
    return int(values[0])


def _millis(timestamp: Any) -> int:
    if not isinstance(timestamp, str) or len(timestamp) > 64:
        return 0
    try:
        return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() * 1000)
    except (ValueError, OverflowError, OSError):
        return 0


def is_permanent_bounce(event: SesEvent) -> bool:
    """A hard bounce suppresses the address; SES's own suppression-list bounces too."""
    return event.kind == "bounce" and event.subtype.startswith("Permanent/")
