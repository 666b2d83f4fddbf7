"""What one recipient's email is: content prepared once per message, pixel per recipient.

The HTML reaches SES byte for byte except for exactly one tracking pixel, inserted
before the last `</body>` (or appended). The plain-text alternative comes from the
HTML once per message (inscriptis), not once per recipient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import inscriptis

BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)
TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
TAG_MAX_CHARS = 256


class MailNotBuildable(ValueError):
    """This recipient's mail cannot be built (a header the email package refuses, say).

    It will fail the same way every time, so it fails the recipient once, with the reason;
    it must never be mistaken for an outage that pauses all sending.
    """


@dataclass(frozen=True, slots=True)
class PreparedContent:
    """A message's content split where the pixel goes."""

    subject: str
    html_before: str
    html_after: str
    text: str


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    recipient_id: int
    to: str
    subject: str
    html: str
    text: str
    tags: tuple[tuple[str, str], ...]


def prepare(subject: str, html: str) -> PreparedContent:
    """Split at the last </body> (or the end) and derive the text part."""
    closings = [match.start() for match in BODY_CLOSE.finditer(html)]
    cut = closings[-1] if closings else len(html)
    return PreparedContent(subject, html[:cut], html[cut:], inscriptis.get_text(html).strip())


def tag_value(text: str) -> str:
    """SES tag values allow only [A-Za-z0-9_-], at most 256 characters."""
    return TAG_UNSAFE.sub("_", text)[:TAG_MAX_CHARS]


def build(content: PreparedContent, recipient_id: int, to: str, topic_id: str, pixel: str) -> OutgoingMail:
    """One recipient's mail, with its pixel and the tags that let SES events find it."""
    tags = [("request_id", str(recipient_id))]
    if topic_id:
        tags.append(("topic_id", tag_value(topic_id)))
    return OutgoingMail(
        recipient_id=recipient_id,
        to=to,
        subject=content.subject,
        html=content.html_before + pixel + content.html_after,
        text=content.text,
        tags=tuple(tags),
    )


def to_mime(mail: OutgoingMail, sender: str) -> EmailMessage:
    """A standard multipart/alternative message (the outbox backend's .eml files)."""
    try:
        return _to_mime(mail, sender)
    except (ValueError, TypeError, UnicodeError) as problem:
        raise MailNotBuildable(f"the message cannot be built: {problem}") from None


def _to_mime(mail: OutgoingMail, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = mail.to
    message["Subject"] = mail.subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    # An explicit domain: without one, make_msgid looks the host name up in DNS every time.
    message["Message-ID"] = make_msgid(
        idstring=f"r{mail.recipient_id}", domain=sender.rpartition("@")[2] or "localhost"
    )
    for name, value in mail.tags:
        message[f"X-SES-Tag-{name}"] = value
    message.set_content(mail.text or " ", charset="utf-8")
    message.add_alternative(mail.html, subtype="html", charset="utf-8")
    return message
