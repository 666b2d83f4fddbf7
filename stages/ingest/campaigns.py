"""`POST /v1/messages` bodies: decoded, validated whole, and turned into what to store.

msgspec decodes and type-checks the JSON against `schemas.CampaignIn` (its errors carry
the path of the bad field); the checks it cannot express follow. Nothing is stored
unless the whole body passes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from config.settings import Settings
from pipeline.messages import CampaignFacts, NewMessage
from stages.ingest.addresses import InvalidAddress, normalise
from stages.ingest.errors import ApiError
from stages.ingest.personal import check_recipients, is_template, parsed
from stages.ingest.schemas import LIST_ID_PATTERN, NO_CONTROL_CHARACTERS, CampaignIn, MessageIn, conforms, decode

# Every character str.splitlines() breaks at: the email package refuses them all in a header.
LINE_SEPARATORS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
# SES v2 takes 40 MB after MIME encoding; base64 grows content by 4/3.
SES_MAX_MESSAGE_BYTES = 40_000_000
MIME_OVERHEAD_BYTES = 16_384


@dataclass(frozen=True, slots=True)
class Campaign:
    """A validated POST: what to store, and the answer's fields known before storing."""

    messages: tuple[NewMessage, ...]
    due_at_ms: int
    scheduled_at: datetime | None
    total: int
    rejected: tuple[tuple[str, str], ...]  # (address as posted, why)
    duplicates: int

    @property
    def stored_count(self) -> int:
        return sum(len(m.emails) for m in self.messages)

    def facts(self) -> CampaignFacts:
        """What the answer needs from ingest; the recorder builds it with what only it knows."""
        scheduled_at = iso_utc(self.scheduled_at) if self.scheduled_at else None
        return CampaignFacts(self.total, scheduled_at, self.rejected, self.duplicates)


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_campaign(body: bytes, settings: Settings, now: datetime) -> Campaign:
    """Validate a whole POST body; ApiError(400) naming the field on the first problem."""
    campaign = decode(body, CampaignIn)
    total = 0
    datas: list[tuple[str, ...]] = []
    for index, message in enumerate(campaign.messages):
        datas.append(check_message(message, f"messages[{index}]"))
        total += len(message.emails) + len(message.recipients or ())
    if total > settings.max_emails_per_request:
        raise ApiError(
            400,
            "too_many_recipients",
            f"{total} recipients in one request; at most {settings.max_emails_per_request} (MAX_EMAILS_PER_REQUEST)",
            "messages",
        )
    scheduled = parse_scheduled_at(campaign.scheduled_at, settings, now)
    stored, rejected, duplicates = [], [], 0
    for message, stored_data in zip(campaign.messages, datas, strict=True):
        posted = list(zip((r.email for r in message.recipients or ()), stored_data, strict=True))
        posted += [(email, "") for email in message.emails]
        emails, data, message_rejected, message_duplicates = sort_recipients(posted)
        rejected.extend(message_rejected)
        duplicates += message_duplicates
        if emails:
            template = is_template(message)
            stored.append(
                NewMessage(
                    message.topic_id or "",
                    message.subject,
                    message.content,
                    emails,
                    message.list_id,
                    message.transactional,
                    template,
                    data if template else (),
                    message.text,
                    settings.track_clicks if message.track_clicks is None else message.track_clicks,
                )
            )
    due = scheduled or now
    return Campaign(tuple(stored), int(due.timestamp() * 1000), scheduled, total, tuple(rejected), duplicates)


def check_message(message: MessageIn, where: str) -> tuple[str, ...]:
    """The message's checks; the data to store with each of its `recipients` (compact JSON)."""
    if not message.emails and not message.recipients:
        raise ApiError(400, "invalid_field", "at least one address, here or in `recipients`", f"{where}.emails")
    if message.topic_id is not None and not conforms(NO_CONTROL_CHARACTERS, message.topic_id):
        raise ApiError(400, "invalid_field", "must not contain control characters", f"{where}.topic_id")
    if message.list_id is not None and not conforms(LIST_ID_PATTERN, message.list_id):
        raise ApiError(
            400,
            "invalid_field",
            "letters, digits, '_' and '-' only, in parts joined by dots (e.g. newsletter or news.weekly)",
            f"{where}.list_id",
        )
    if not message.subject.strip():
        raise ApiError(400, "invalid_field", "must not be blank", f"{where}.subject")
    if LINE_SEPARATORS.search(message.subject):
        raise ApiError(
            400,
            "invalid_field",
            "must not contain line breaks (CR, LF or any other line separator)",
            f"{where}.subject",
        )
    if not message.content.strip():
        raise ApiError(400, "invalid_field", "must not be blank", f"{where}.content")
    if message.text is not None and not message.text.strip():
        raise ApiError(400, "invalid_field", "must not be blank", f"{where}.text")
    text_bytes = len(message.text.encode()) if message.text is not None else len(message.content.encode())
    size = (len(message.content.encode()) + text_bytes + len(message.subject.encode())) * 4 // 3 + MIME_OVERHEAD_BYTES
    if size > SES_MAX_MESSAGE_BYTES:
        raise ApiError(
            400,
            "message_too_large",
            "with its text part this message would exceed SES's 40 MB limit",
            f"{where}.content",
        )
    if is_template(message):
        return check_recipients(message, parsed(message, where), where, LINE_SEPARATORS)
    return ()


def parse_scheduled_at(value: str | None, settings: Settings, now: datetime) -> datetime | None:
    """UTC time to send, or None for now. Naive times are read in TIMEZONE."""
    if value is None or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ApiError(
            400,
            "invalid_field",
            f"{value!r} is not an ISO 8601 time (e.g. 2026-01-01T09:00:00+09:00 or 2026-01-01 09:00:00)",
            "scheduled_at",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(settings.timezone))
    moment = moment.astimezone(UTC)
    if moment > now + timedelta(days=settings.schedule_horizon_days):
        raise ApiError(
            400,
            "invalid_field",
            f"more than {settings.schedule_horizon_days} days ahead (SCHEDULE_HORIZON_DAYS)",
            "scheduled_at",
        )
    return moment if moment > now else None


def sort_recipients(
    posted: list[tuple[str, str]],
) -> tuple[tuple[str, ...], tuple[str, ...], list[tuple[str, str]], int]:
    """(addresses to store, their data, rejected with reasons, duplicates): the first of a repeat wins."""
    seen: dict[str, str] = {}
    rejected: list[tuple[str, str]] = []
    duplicates = 0
    for address, data in posted:
        try:
            normalised = normalise(address)
        except InvalidAddress as problem:
            rejected.append((address, str(problem)))
            continue
        if normalised in seen:
            duplicates += 1
        else:
            seen[normalised] = data
    return tuple(seen), tuple(seen.values()), rejected, duplicates
