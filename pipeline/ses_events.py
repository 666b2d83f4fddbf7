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
from datetime import datetime
from typing import Any

from pipeline.messages import SesEvent

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
    """The events in an SNS notification's Message, or None when it is not an SES event."""
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
    emails = _recipients(detail, recipients_key) or [str(e) for e in mail.get("destination") or []] or [""]
    occurred = _millis(detail.get("timestamp") or mail.get("timestamp"))
    return [
        SesEvent(
            sns_message_id=sns_message_id,
            kind=kind,
            subtype=_subtype(kind, detail),
            email=email,
            ses_message_id=str(mail.get("messageId") or ""),
            request_id=_request_id(mail),
            occurred_at_ms=occurred,
            raw=message,
        )
        for email in emails
    ]


def _recipients(detail: dict[str, Any], key: str | None) -> list[str]:
    if key is None:
        return []
    found = []
    for entry in detail.get(key) or []:
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


def _request_id(mail: dict[str, Any]) -> int | None:
    """Our tag, as event publishing carries it: mail.tags.request_id[0]."""
    tags = mail.get("tags")
    if not isinstance(tags, dict):
        return None
    values = tags.get("request_id")
    if isinstance(values, list) and values:
        try:
            return int(values[0])
        except (TypeError, ValueError):
            return None
    return None


def _millis(timestamp: Any) -> int:
    try:
        return int(datetime.fromisoformat(str(timestamp).replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0


def is_permanent_bounce(event: SesEvent) -> bool:
    """A hard bounce suppresses the address; SES's own suppression-list bounces too."""
    return event.kind == "bounce" and event.subtype.startswith("Permanent/")
