"""Every message that crosses a process boundary, and nothing else.

Commands are imperative (`ClaimDue`), facts are past tense (`Claimed`). Requests that
need an answer carry `corr_id` (the correlation id; `request_id` is the public name of a
recipient row, in the pixel URL and the SES tag; inside, the row is `recipient_id`) and
`reply_to`, the name of the asker's inbox. Everything is a frozen, slotted dataclass so it pickles small and cannot
be changed on the way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pipeline.db.status import Status


@dataclass(frozen=True, slots=True)
class Message:
    """Base of every cross-process message; anything else on a queue is dropped as garbage."""


@dataclass(frozen=True, slots=True)
class EndOfStream(Message):
    """The sender will put nothing more on this queue (shutdown)."""

    sender: str


@dataclass(frozen=True, slots=True)
class WakeUp(Message):
    """Put by a stage on its own inbox so its reader thread leaves `get()` and can be joined."""


@dataclass(frozen=True, slots=True)
class Ping(Message):
    """Ask a stage whether it answers (readiness)."""

    corr_id: int
    reply_to: str


@dataclass(frozen=True, slots=True)
class Pong(Message):
    corr_id: int


# --- sender -> recorder, with PostgreSQL: this node has become the one that sends ---------


@dataclass(frozen=True, slots=True)
class RequeueClaimed(Message):
    """Put back to pending what earlier senders claimed and left `sending` (docs/postgresql.md)."""

    corr_id: int
    reply_to: str


@dataclass(frozen=True, slots=True)
class Requeued(Message):
    corr_id: int
    count: int


# --- ingest -> recorder: accept a campaign -------------------------------------------


@dataclass(frozen=True, slots=True)
class NewMessage(Message):
    """One message of a POST: its content is stored once, with one row per address."""

    topic_id: str
    subject: str
    html: str
    emails: tuple[str, ...]
    # The list it belongs to (List-Id; an unsubscribe leaves only this list), or None.
    list_id: str | None = None
    # Password resets and receipts: no unsubscribe headers or footer.
    transactional: bool = False
    # Templates: subject, html and text are rendered per recipient with its data (JSON,
    # one per address, in the order of `emails`; "" for none).
    template: bool = False
    data: tuple[str, ...] = ()
    # The plain-text part (a template too when `template`); None: derived from the HTML.
    text: str | None = None
    # Each http(s) link of the HTML goes through a signed redirect that counts clicks.
    track_clicks: bool = False


@dataclass(frozen=True, slots=True)
class CampaignFacts:
    """What ingest knows of a POST before storing. `answer()` is the one place the POST's
    JSON answer is built: the recorder calls it with what only the database knows, in the
    transaction that stores the rows, and keeps the text for `Idempotency-Key` replays."""

    total: int
    scheduled_at: str | None = None  # ISO 8601 in UTC, or None for now
    rejected: tuple[tuple[str, str], ...] = ()  # (address as posted, why)
    duplicates: int = 0

    def answer(self, stored: int, suppressed: int, duration_ms: int | None) -> str:
        body: dict[str, Any] = {
            "total": self.total,
            "success": stored,
            "errors": self.total - stored,
            "scheduled": self.scheduled_at is not None,
            "scheduled_at": self.scheduled_at,
            "rejected": [{"email": email, "reason": reason} for email, reason in self.rejected],
            "duplicates": self.duplicates,
            "suppressed": suppressed,
        }
        if duration_ms is not None:
            body["duration_ms"] = duration_ms
        return json.dumps(body, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class StoreMessages(Message):
    """Store these recipients in one transaction, then answer `Stored` or `Refused`."""

    corr_id: int
    reply_to: str
    messages: tuple[NewMessage, ...]
    due_at_ms: int
    facts: CampaignFacts
    idempotency_key: str | None = None
    body_digest: str | None = None
    # time.monotonic_ns() when ingest received the request (one clock for every process on
    # the machine): the recorder puts the whole duration in the answer it keeps for replays.
    received_ns: int = 0


@dataclass(frozen=True, slots=True)
class Stored(Message):
    corr_id: int
    answer: str
    replayed: bool = False
    # Rows stored, and addresses left out as suppressed (0 in a replay: counted the first time).
    stored: int = 0
    suppressed: int = 0


class Refusal(StrEnum):
    """Why the recorder did not do what was asked (ingest decides what HTTP says of it)."""

    STORAGE_ERROR = "storage_error"  # the database refused this request: nothing changed, a retry may work
    STORAGE_UNAVAILABLE = "storage_unavailable"  # the batch's commit failed: nothing stored, retry
    KEY_REUSED = "idempotency_key_reused"  # the Idempotency-Key came with another body
    UNPROCESSABLE = "unprocessable"  # this request cannot be applied, and retrying will not change that
    NOT_SENDING = "not_the_sending_node"  # with PostgreSQL: another node sends (a hold must reach it)

    @property
    def retry(self) -> bool:
        return self in (Refusal.STORAGE_ERROR, Refusal.STORAGE_UNAVAILABLE, Refusal.NOT_SENDING)


@dataclass(frozen=True, slots=True)
class Refused(Message):
    """The recorder could not do what was asked, and why; nothing was changed."""

    corr_id: int
    reason: Refusal
    message: str


# --- scheduling ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkAdded(Message):
    """Ingest stored recipients due at `due_at_ms`: wake up if that is sooner."""

    due_at_ms: int


@dataclass(frozen=True, slots=True)
class Demand(Message):
    """The sender has room for `count` more recipients."""

    count: int


@dataclass(frozen=True, slots=True)
class ClaimDue(Message):
    """Mark up to `limit` recipients due by `due_by_ms` as sending and return them, oldest
    due first. The scheduler claims a little ahead of the clock (CLAIM_AHEAD_MS); the
    sender holds what is not due yet until it is."""

    corr_id: int
    reply_to: str
    limit: int
    due_by_ms: int


@dataclass(frozen=True, slots=True)
class Recipient(Message):
    """One claimed unit of work. The content travels by id; the sender reads it once."""

    recipient_id: int
    email: str
    topic_id: str
    content_id: int
    # Its message's list, so that an unsubscribe from that list can withdraw it.
    list_id: str | None = None
    # Its template data (JSON), when its message is a template.
    data: str | None = None
    # When it is due (ms since the epoch; 0: now). Claimed ahead, it waits in the sender until then.
    due_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class Claimed(Message):
    corr_id: int
    recipients: tuple[Recipient, ...]
    # The earliest due time still waiting, so the scheduler knows when to wake.
    next_due_ms: int | None
    # The recorder's claim counter: lets the sender drop work claimed before a cancel.
    claim_seq: int = 0


@dataclass(frozen=True, slots=True)
class Deliver(Message):
    """Scheduler to sender: send these."""

    recipients: tuple[Recipient, ...]
    claim_seq: int = 0


# --- cancel / pause / resume a topic --------------------------------------------------
# ingest --HoldTopic--> sender --HoldTopicRows--> recorder --TopicHeld--> ingest and sender
# The sender is the serialisation point: it stops its own work on the topic first, so
# nothing of the topic reaches SES after ingest answers.


@dataclass(frozen=True, slots=True)
class HoldTopic(Message):
    """Stop sending a topic: `hold` is the status its unsent rows get (cancelled or paused)."""

    corr_id: int
    reply_to: str
    topic_id: str
    hold: Status
    # Why, when the reputation guard paused it (shown as the topic's paused_reason).
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class HoldTopicRows(Message):
    """Sender to recorder: hold every unsent row of the topic except `keep` (in SES calls,
    or sent with the outcome not yet recorded)."""

    corr_id: int
    reply_to: str
    topic_id: str
    hold: Status
    keep: tuple[int, ...]
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class TopicHeld(Message):
    """The rows are held. Sent to the asker and to the sender (which drops work claimed
    before `claim_seq`)."""

    corr_id: int
    topic_id: str
    hold: Status
    count: int
    found: bool
    claim_seq: int


@dataclass(frozen=True, slots=True)
class HoldAddress(Message):
    """An unsubscribe: stop all mail to `email` of `list_id` (None: all mail), the way a
    cancel stops a topic, so it wins the same races. `recipient_id` is the row whose link
    was used (its topic counts the unsubscribe)."""

    corr_id: int
    reply_to: str
    recipient_id: int
    email: str
    list_id: str | None


@dataclass(frozen=True, slots=True)
class HoldAddressRows(Message):
    """Sender to recorder: suppress the address in that scope and withdraw its unsent rows
    except `keep`."""

    corr_id: int
    reply_to: str
    recipient_id: int
    email: str
    list_id: str | None
    keep: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AddressHeld(Message):
    """The address is suppressed in its scope; `count` unsent rows were withdrawn; `new` is
    False when it already was. Sent to the asker and to the sender (the cut, as TopicHeld)."""

    corr_id: int
    email: str
    list_id: str | None
    count: int
    new: bool
    claim_seq: int


@dataclass(frozen=True, slots=True)
class ResumeTopic(Message):
    corr_id: int
    reply_to: str
    topic_id: str


@dataclass(frozen=True, slots=True)
class TopicResumed(Message):
    corr_id: int
    topic_id: str
    count: int
    found: bool
    next_due_ms: int | None


# --- sender -> recorder: outcomes ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sent(Message):
    recipient_id: int
    message_id: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class SendFailed(Message):
    """SES refused for good; never retried."""

    recipient_id: int
    code: str
    reason: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class Released(Message):
    """Claimed but not sent (shutdown): back to pending."""

    recipient_id: int


@dataclass(frozen=True, slots=True)
class Withheld(Message):
    """Its call may have been at SES when a hold (cancel, pause, unsubscribe) covered it, so
    the hold kept its row; SES did not send it after all. It takes the hold's status now
    instead of being sent later."""

    recipient_id: int
    status: str  # cancelled, paused or suppressed: what the hold gave its topic's other rows


Outcome = Sent | SendFailed | Released | Withheld


@dataclass(frozen=True, slots=True)
class RecordOutcomes(Message):
    corr_id: int
    reply_to: str
    outcomes: tuple[Outcome, ...]


@dataclass(frozen=True, slots=True)
class OutcomesRecorded(Message):
    corr_id: int


# --- what comes back: SES events (ingest -> recorder), opens, suppressions ------------


@dataclass(frozen=True, slots=True)
class SesEvent(Message):
    """One thing SES reported about one recipient (pipeline/ses_events.py makes these)."""

    sns_message_id: str
    kind: str
    subtype: str
    email: str
    ses_message_id: str
    # Our row, from the mail's `request_id` tag (the public name of a recipient row).
    recipient_id: int | None
    occurred_at_ms: int


@dataclass(frozen=True, slots=True)
class RecordEvents(Message):
    """The events of one SNS message; its raw text is kept once, however many recipients it names."""

    corr_id: int
    reply_to: str
    sns_message_id: str
    raw: str
    events: tuple[SesEvent, ...]


@dataclass(frozen=True, slots=True)
class EventsRecorded(Message):
    corr_id: int
    recorded: int
    matched: int


@dataclass(frozen=True, slots=True)
class RecordEventsTogether(Message):
    """SNS notifications that reached ingest together: one message and one commit for all,
    each applied in its own savepoint as if it came alone (ingest waits for the commit
    before answering any of them). Each item's corr_id is the batch's own numbering."""

    corr_id: int
    reply_to: str
    items: tuple[RecordEvents, ...]


@dataclass(frozen=True, slots=True)
class EventsRecordedTogether(Message):
    """One answer per item, in order: EventsRecorded, or Refused for an item that failed alone."""

    corr_id: int
    answers: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class RecordOpens(Message):
    """Pixel hits that arrived together: (raw query string, at_ms) each, signatures unchecked;
    and clicks of signed links: (recipient_id, link_index, at_ms) each."""

    corr_id: int
    reply_to: str
    opens: tuple[tuple[str, int], ...]
    # (recipient_id, link_index, at_ms, user agent, client address) per click.
    clicks: tuple[tuple[int, int, int, str, str], ...] = ()
    # (user agent, client address) of each open, in the order of `opens`, to tell people from machines.
    agents: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class OpensRecorded(Message):
    corr_id: int
    counted: int


@dataclass(frozen=True, slots=True)
class ChangeSuppression(Message):
    """Add (`reason` set) or remove (`reason` None) an address on the suppression list."""

    corr_id: int
    reply_to: str
    email: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class SuppressionChanged(Message):
    corr_id: int
    changed: bool


# --- the reputation guard ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GuardState(Message):
    """Recorder to sender: hold all sending (`reason`) or not (None). Sent at start and on change."""

    reason: str | None


@dataclass(frozen=True, slots=True)
class GetGuard(Message):
    """Ingest to recorder: the account's own rolling rates and the guard's state."""

    corr_id: int
    reply_to: str


@dataclass(frozen=True, slots=True)
class GuardReport(Message):
    corr_id: int
    # The last 24 hours (since the account's last resume): sent, hard bounces, complaints.
    sent: int
    hard_bounces: int
    complaints: int
    paused_reason: str | None
    resumed_at_ms: int | None


@dataclass(frozen=True, slots=True)
class ResumeAccount(Message):
    """The operator lets sending go on after the account guard held it."""

    corr_id: int
    reply_to: str


@dataclass(frozen=True, slots=True)
class AccountResumed(Message):
    corr_id: int
    was_paused: bool


@dataclass(frozen=True, slots=True)
class GetQuota(Message):
    """Ingest to sender: the SES 24-hour quota as last read from GetAccount."""

    corr_id: int
    reply_to: str


@dataclass(frozen=True, slots=True)
class QuotaReport(Message):
    corr_id: int
    # (max_24_hour_send, max_send_rate, sent_last_24_hours), or None with `error` saying why.
    quota: tuple[float, float, float] | None
    error: str | None
    # GetAccount's (EnforcementStatus, SendingEnabled, ProductionAccessEnabled), where SES said.
    account: tuple[str | None, bool | None, bool | None] | None = None
    # The sender's rate now (after AIMD's cuts for throttling) and its ceiling, per second.
    rate: tuple[float, float] | None = None
