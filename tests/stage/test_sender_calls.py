"""The sender's calls, in-process, against a scripted backend: what a bulk call's every
answer does to its recipients, the rate and the hold protocol.

The backend here answers as the script says (the fake SES over HTTP covers the wire in
tests/e2e/test_bulk.py); the Sender, its Ledger, its RateLimiter and its admission check
are the real ones.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from types import SimpleNamespace
from typing import Any

from botocore.exceptions import ClientError

from pipeline.db.status import Status
from pipeline.limiter import RateLimiter
from pipeline.mail import OutgoingMail, PreparedContent, Unsubscribe, prepare
from pipeline.messages import HoldTopic, Message, Recipient, SendFailed, Sent, Withheld
from pipeline.ses import BulkUnsupported, admit_at_once
from pipeline.ses_bulk import BulkEntry, EntryOutcome, EntrySent, map_results
from stages.sender.sending import Sender

Script = Callable[[Sequence[BulkEntry]], Awaitable[list[EntryOutcome]]]


class Outbox:
    def __init__(self) -> None:
        self.items: list[Message] = []

    def put_nowait(self, message: Message) -> bool:
        self.items.append(message)
        return True

    async def put(self, message: Message) -> None:
        self.items.append(message)


class ScriptedBackend:
    """SES as the test says: bulk calls answer by `script`, single calls by `single`."""

    name = "ses"

    def __init__(self, script: Script, refuse: frozenset[int] = frozenset()) -> None:
        self.bulk_max = 50
        self.admission = admit_at_once
        self.script = script
        self.refuse = refuse  # recipients whose SendEmail SES refuses for good
        self.calls: list[tuple[str, tuple[int, ...]]] = []

    async def send(self, mail: OutgoingMail) -> str:
        await self.admission()
        self.calls.append(("single", (mail.recipient_id,)))
        if mail.recipient_id in self.refuse:
            raise client_error("MessageRejected", 400, "Email address is not verified.")
        return f"m{mail.recipient_id}"

    async def send_bulk(self, entries: Sequence[BulkEntry]) -> list[EntryOutcome]:
        await self.admission()
        self.calls.append(("bulk", tuple(e.mail.recipient_id for e in entries)))
        return await self.script(entries)


class Contents:
    def __init__(self, problem: Exception | None = None) -> None:
        self.problem = problem
        self.content = prepare("Hello", "<p>Hi</p>", footer=None)

    def get(self, content_id: int) -> PreparedContent:
        if self.problem is not None:
            raise self.problem
        return self.content


def client_error(code: str, status: int, message: str) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "SendBulkEmail")


def make_sender(backend: ScriptedBackend, contents: Contents | None = None, rate: float = 1000.0) -> Sender:
    ctx: Any = SimpleNamespace(
        outboxes={"recorder": Outbox(), "scheduler": Outbox(), "ingest": Outbox()},
        log=logging.getLogger("tests.sender"),
        stopping=asyncio.Event(),
    )
    sender = Sender(
        ctx, backend, contents or Contents(), RateLimiter(rate), lambda rid: "<img>",
        lambda rid, list_id: Unsubscribe("https://mail.example.org/u", ()), 256,
    )  # fmt: skip
    backend.admission = sender.admit
    return sender


def recipients(n: int, topic: str = "t1") -> list[Recipient]:
    return [Recipient(i, f"u{i}@example.com", topic, 1) for i in range(1, n + 1)]


async def one_call(sender: Sender, n: int) -> None:
    sender.ledger.deliver(recipients(n), 1)
    await sender.send_call(sender.ledger.start_batch(time.monotonic(), n))


def outcomes(sender: Sender) -> dict[int, type]:
    return {o.recipient_id: type(o) for o in sender.ledger.pending}


async def all_sent(entries: Sequence[BulkEntry]) -> list[EntryOutcome]:
    return [EntrySent(e.mail.recipient_id, "m") for e in entries]


async def test_a_content_that_cannot_be_read_now_is_retried_not_stranded() -> None:
    # Given a database that is locked for the moment the contents are read
    sender = make_sender(ScriptedBackend(all_sent), Contents(sqlite3.OperationalError("database is locked")))
    await one_call(sender, 5)
    # Then no recipient is left in a call holding its slot: all five wait to go again
    assert not sender.ledger.calling and sender.ledger.slots_used == 0
    assert [r.recipient_id for r in sender.ledger.queued] == [1, 2, 3, 4, 5]


async def test_a_throttled_entry_cuts_the_rate_even_beside_a_success() -> None:
    async def mostly_throttled(entries: Sequence[BulkEntry]) -> list[EntryOutcome]:
        throttled = {"Status": "ACCOUNT_THROTTLED", "Error": "Maximum sending rate exceeded."}
        results = [{"Status": "SUCCESS", "MessageId": "m"}] + [throttled] * (len(entries) - 1)
        return map_results(entries, {"BulkEmailEntryResults": results})

    sender = make_sender(ScriptedBackend(mostly_throttled))
    sender.limiter.on_throttled(time.monotonic() - 5)  # recovering from an earlier throttle: 700 of 1,000/s
    before = sender.limiter.rate
    await one_call(sender, 10)
    assert sender.limiter.rate < before
    assert outcomes(sender) == {1: Sent} and len(sender.ledger.retrying) == 9


async def test_a_bulk_call_refused_as_a_whole_sends_each_alone_and_only_the_bad_one_fails() -> None:
    # Given SES refusing the whole bulk call for one unverified address (the sandbox)
    async def refused(entries: Sequence[BulkEntry]) -> list[EntryOutcome]:
        raise client_error("MessageRejected", 400, "Email address is not verified: u7@example.com")

    backend = ScriptedBackend(refused, refuse=frozenset({7}))
    sender = make_sender(backend)
    await one_call(sender, 50)
    # Then each went out alone, as SendEmail would have judged it: one failed, 49 sent
    assert backend.calls[0] == ("bulk", tuple(range(1, 51))) and len(backend.calls) == 51
    assert outcomes(sender) == {i: SendFailed if i == 7 else Sent for i in range(1, 51)}


async def test_an_endpoint_without_bulk_sends_the_call_one_by_one_from_then_on() -> None:
    async def missing(entries: Sequence[BulkEntry]) -> list[EntryOutcome]:
        raise BulkUnsupported("404 UnknownOperationException")

    backend = ScriptedBackend(missing)
    sender = make_sender(backend)
    await one_call(sender, 3)
    assert outcomes(sender) == {1: Sent, 2: Sent, 3: Sent}
    assert [kind for kind, _ in backend.calls] == ["bulk", "single", "single", "single"]


async def test_a_cancel_while_a_bulk_call_is_at_ses_withholds_what_ses_did_not_send() -> None:
    # Given a bulk call admitted and at SES when its topic is cancelled, and SES then answering
    # one entry sent, one throttled and one transient
    sender: Sender

    async def answered_after_a_cancel(entries: Sequence[BulkEntry]) -> list[EntryOutcome]:
        sender.on_message(HoldTopic(1, "ingest", "t1", Status.CANCELLED))
        results = [
            {"Status": "SUCCESS", "MessageId": "m1"},
            {"Status": "ACCOUNT_THROTTLED", "Error": "Maximum sending rate exceeded."},
            {"Status": "TRANSIENT_FAILURE", "Error": "Temporary failure."},
        ]
        return map_results(entries, {"BulkEmailEntryResults": results})

    backend = ScriptedBackend(answered_after_a_cancel)
    sender = make_sender(backend)
    await one_call(sender, 3)
    # Then the hold kept all three rows (they were at SES); the sent one stays sent and the
    # two SES did not send are cancelled, never sent later
    hold_rows = sender.ctx.outboxes["recorder"].items[0]
    assert hold_rows.keep == (1, 2, 3)
    assert outcomes(sender) == {1: Sent, 2: Withheld, 3: Withheld}
    assert {o.status for o in sender.ledger.pending if isinstance(o, Withheld)} == {Status.CANCELLED}
    assert not sender.ledger.queued and not sender.ledger.retrying and len(backend.calls) == 1
