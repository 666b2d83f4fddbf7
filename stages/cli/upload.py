"""A send as HTTP requests: the chunks, the body of each, and the Idempotency-Key of each.

Everything here is a pure function of the file and the options, so running the same
command again builds the same requests byte for byte. That is what makes a re-run
safe: the server answers a repeated Idempotency-Key with its stored answer and stores
nothing (for 24 hours; docs/api.md#post-v1messages), and it refuses the same key with a
different body, which therefore must not happen. The key is the campaign's digest (the
file's SHA-256, and every option that shapes the request) and the chunk's number. Keys
belong to their caller on the server, so a re-run must use the same token `sub` or the
same API key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Final

from stages.cli.csvfile import Recipient
from stages.cli.errors import ExitCode, Failure

MAX_CHUNK: Final = 10_000  # the server's MAX_EMAILS_PER_REQUEST default
# Under the server's 20 MiB MAX_REQUEST_BYTES default, with room to spare.
MAX_BODY_BYTES: Final = 16 * 1024 * 1024
KEY_PREFIX: Final = "ses-sender"
BODY_FORMAT: Final = 1  # bump when `body` changes what it writes
AT_FORMS: Final = "YYYY-MM-DD HH:MM (this machine's time zone) or ISO 8601 with an offset, e.g. 2026-12-01T09:00+09:00"


@dataclass(frozen=True, slots=True)
class Campaign:
    """What every chunk's message carries; `personal` posts `recipients` with data, else `emails`."""

    subject: str
    html: str
    text: str | None
    topic_id: str
    list_id: str | None
    scheduled_at: str | None
    personal: bool

    def message_fields(self) -> dict[str, object]:
        """The message's fields but its recipients, in a fixed order."""
        fields: dict[str, object] = {"topic_id": self.topic_id, "subject": self.subject, "content": self.html}
        if self.text is not None:
            fields["text"] = self.text
        if self.list_id is not None:
            fields["list_id"] = self.list_id
        # Always templates, so {{email}} and the like render whether or not the file has data.
        fields["template"] = True
        return fields


@dataclass(frozen=True, slots=True)
class Chunk:
    number: int  # from 1
    entries: tuple[bytes, ...]  # each recipient as JSON

    @property
    def size(self) -> int:
        return len(self.entries)


def scheduled_at(text: str | None) -> str | None:
    """`--at` as the API's ISO 8601 with an offset: a time without one is this machine's local time."""
    if text is None or not text.strip():
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise Failure(ExitCode.USAGE, f"--at {text!r} is not a time: use {AT_FORMS}") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # a naive datetime is read as local time
    return moment.isoformat(timespec="seconds")


def digest(file_digest: str, options: dict[str, object]) -> str:
    """SHA-256 over the file's digest and the options, in a canonical JSON form."""
    canonical = json.dumps({"file": file_digest, **options}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def default_topic(file_digest: str, campaign_without_topic: Campaign) -> str:
    """The topic of a send without --topic: the same for the same file and options, so a re-run joins it."""
    options = {k: v for k, v in asdict(campaign_without_topic).items() if k != "topic_id"}
    return f"csv-{digest(file_digest, options)[:16]}"


def campaign_digest(file_digest: str, campaign: Campaign, chunk_size: int) -> str:
    """What the keys of one send derive from: the file, every field of the request, the chunking."""
    # The body's format and the byte budget shape the chunks too: a change to either must
    # change the keys, or a re-run would send a different body under an old key (422).
    shaping = {"chunk_size": chunk_size, "max_bytes": MAX_BODY_BYTES, "format": BODY_FORMAT}
    return digest(file_digest, {**asdict(campaign), **shaping})


def idempotency_key(campaign_digest: str, number: int) -> str:
    """The Idempotency-Key of chunk `number`: printable and far under the API's 255 characters."""
    return f"{KEY_PREFIX}-{campaign_digest[:48]}-{number}"


def entry(recipient: Recipient, personal: bool) -> bytes:
    """One recipient as it goes in the body: an address, or {"email", "data"}."""
    value: object = {"email": recipient.email, "data": recipient.data} if personal else recipient.email
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def envelope(campaign: Campaign) -> tuple[bytes, bytes]:
    """The bytes before and after the recipients' entries in every chunk's body."""
    message = json.dumps(campaign.message_fields(), ensure_ascii=False, separators=(",", ":")).encode()
    key = b"recipients" if campaign.personal else b"emails"
    head = b'{"messages":[' + message[:-1] + b',"' + key + b'":['
    tail = b"]}]"
    if campaign.scheduled_at is not None:
        tail += b',"scheduled_at":' + json.dumps(campaign.scheduled_at).encode()
    return head, tail + b"}"


def body(campaign: Campaign, chunk: Chunk) -> bytes:
    """The POST /v1/messages body of one chunk."""
    head, tail = envelope(campaign)
    return head + b",".join(chunk.entries) + tail


def chunks(
    recipients: Iterable[Recipient], campaign: Campaign, size: int = MAX_CHUNK, max_bytes: int = MAX_BODY_BYTES
) -> Iterator[Chunk]:
    """The recipients in chunks of at most `size`, each body at most `max_bytes`; numbered from 1."""
    head, tail = envelope(campaign)
    room = max_bytes - len(head) - len(tail)
    pending: list[bytes] = []
    used = 0
    number = 1
    for recipient in recipients:
        item = entry(recipient, campaign.personal)
        if len(item) + 1 > room:
            raise Failure(ExitCode.USAGE, f"line {recipient.line}: the request would be over {max_bytes:,} bytes")
        if len(pending) == size or used + len(item) + 1 > room:
            yield Chunk(number, tuple(pending))
            pending, used, number = [], 0, number + 1
        pending.append(item)
        used += len(item) + 1
    if pending:
        yield Chunk(number, tuple(pending))
