"""The recorder's writes and group commit, on a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipeline import tracking
from pipeline.db.dialect import SQLITE, Conn, dialect
from pipeline.db.schema import open_writer, tracking_key
from pipeline.messages import (
    CampaignFacts,
    ClaimDue,
    NewMessage,
    OutcomesRecorded,
    RecordOutcomes,
    Refused,
    Released,
    SendFailed,
    Sent,
    Stored,
    StoreMessages,
)
from stages.recorder import Writer, apply_batch, writes
from stages.recorder.claims import ClaimState, claim_due
from tests.helpers import http_status

SUMMARY = CampaignFacts(0)
LOG = logging.getLogger("test")


@pytest.fixture
def conn(store: Conn) -> Conn:
    return store


def store(
    corr_id: int, emails: tuple[str, ...], due: int = 0, key: str | None = None, digest: str | None = None
) -> StoreMessages:
    return StoreMessages(corr_id, "ingest", (NewMessage("t", "S", "<p>x</p>", emails),), due, SUMMARY, key, digest)


def test_content_is_stored_once_per_message(conn: Conn) -> None:
    reply = writes.store_messages(conn, store(1, ("a@x.io", "b@x.io", "c@x.io")), now_ms=5)
    assert isinstance(reply, Stored) and json.loads(reply.answer)["success"] == 3
    assert conn.execute("SELECT COUNT(*) FROM contents").fetchone()[0] == 1
    assert conn.execute("SELECT COUNT(*) FROM recipients WHERE status = 'pending'").fetchone()[0] == 3


def test_claims_oldest_due_first_and_never_twice(conn: Conn) -> None:
    writes.store_messages(conn, store(1, ("late@x.io",), due=2000), now_ms=0)
    writes.store_messages(conn, store(2, ("early@x.io",), due=1000), now_ms=0)
    writes.store_messages(conn, store(3, ("future@x.io",), due=9000), now_ms=0)
    first = claim_due(conn, ClaimDue(1, "scheduler", limit=10, due_by_ms=5000), ClaimState())
    assert [r.email for r in first.recipients] == ["early@x.io", "late@x.io"]
    assert first.next_due_ms == 9000
    again = claim_due(conn, ClaimDue(2, "scheduler", limit=10, due_by_ms=5000), ClaimState())
    assert again.recipients == ()


def test_claim_takes_no_more_than_the_limit(conn: Conn) -> None:
    writes.store_messages(conn, store(1, tuple(f"u{i}@x.io" for i in range(10))), now_ms=0)
    claimed = claim_due(conn, ClaimDue(1, "scheduler", limit=4, due_by_ms=1), ClaimState())
    assert len(claimed.recipients) == 4 and claimed.next_due_ms == 0


def test_outcomes_apply_once_and_only_to_claimed_rows(conn: Conn) -> None:
    writes.store_messages(conn, store(1, ("a@x.io", "b@x.io", "c@x.io")), now_ms=0)
    ids = [r.recipient_id for r in claim_due(conn, ClaimDue(1, "s", 10, 1), ClaimState()).recipients]
    outcomes = (Sent(ids[0], "m-1", 10), SendFailed(ids[1], "MessageRejected", "no", 11), Released(ids[2]))
    assert writes.record_outcomes(conn, RecordOutcomes(7, "sender", outcomes), 0) == OutcomesRecorded(7)
    # A resend of the same batch changes nothing (the sender resends unacknowledged batches).
    writes.record_outcomes(conn, RecordOutcomes(8, "sender", (SendFailed(ids[0], "X", "late", 12),)), 0)
    rows = dict(conn.execute("SELECT id, status FROM recipients").fetchall())
    assert rows == {ids[0]: "sent", ids[1]: "failed", ids[2]: "pending"}
    assert conn.execute("SELECT error_code FROM recipients WHERE id = ?", (ids[1],)).fetchone()[0] == "MessageRejected"


def test_requeue_returns_claimed_work_at_start(conn: Conn) -> None:
    writes.store_messages(conn, store(1, ("a@x.io", "b@x.io")), now_ms=0)
    claim_due(conn, ClaimDue(1, "s", 10, 1), ClaimState())
    assert writes.requeue_claimed(conn) == 2
    assert conn.execute("SELECT COUNT(*) FROM recipients WHERE status = 'pending'").fetchone()[0] == 2


def test_idempotency_key_replays_the_first_answer_and_refuses_another_body(conn: Conn) -> None:
    first = writes.store_messages(conn, store(1, ("a@x.io",), key="k1", digest="d1"), now_ms=0)
    again = writes.store_messages(conn, store(2, ("a@x.io",), key="k1", digest="d1"), now_ms=1)
    other = writes.store_messages(conn, store(3, ("b@x.io",), key="k1", digest="d2"), now_ms=2)
    assert isinstance(first, Stored) and isinstance(again, Stored)
    assert again.replayed and again.answer == first.answer
    assert isinstance(other, Refused) and http_status(other) == 422
    assert conn.execute("SELECT COUNT(*) FROM recipients").fetchone()[0] == 1


def test_a_batch_commits_many_requests_in_one_transaction(conn: Conn) -> None:
    batch = [store(i, (f"u{i}@x.io",)) for i in range(50)]
    counts: Counter[str] = Counter()
    replies = apply_batch(Writer(conn), logging.getLogger("test"), list(batch), counts)
    assert len(replies) == 50 and counts["StoreMessages"] == 50
    assert all(isinstance(reply, Stored) for _, reply in replies)
    assert conn.execute("SELECT COUNT(*) FROM recipients").fetchone()[0] == 50
    assert not conn.in_transaction


def refuse_an_address(conn: Conn, email: str) -> None:
    """A trigger that makes storing `email` fail inside the database, on either engine."""
    if dialect(conn) == SQLITE:
        conn.execute(
            f"CREATE TRIGGER refuse BEFORE INSERT ON recipients WHEN NEW.email = '{email}'"
            " BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        return
    conn.execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$"
    )
    conn.execute(
        f"CREATE TRIGGER refuse BEFORE INSERT ON recipients FOR EACH ROW WHEN (NEW.email = '{email}')"
        " EXECUTE FUNCTION refuse()"
    )


def test_a_failing_request_rolls_back_alone(conn: Conn) -> None:
    refuse_an_address(conn, "bad@x.io")
    batch = [store(1, ("ok@x.io",)), store(2, ("fine@x.io", "bad@x.io")), store(3, ("also@x.io",))]
    replies = dict(
        (reply.corr_id, reply)
        for _, reply in apply_batch(Writer(conn), logging.getLogger("test"), list(batch), Counter())
    )
    assert isinstance(replies[1], Stored) and isinstance(replies[3], Stored)
    assert isinstance(replies[2], Refused) and http_status(replies[2]) == 503
    emails = {r[0] for r in conn.execute("SELECT email FROM recipients")}
    assert emails == {"ok@x.io", "also@x.io"}, "no part of the failed request may remain"


def test_a_failed_commit_acknowledges_nothing(tmp_path: Path) -> None:
    conn = open_writer(tmp_path / "r.db")
    # Given a second connection that holds the write lock (like a full or locked disk)
    blocker = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    conn.execute("PRAGMA busy_timeout = 50")
    replies = apply_batch(
        Writer(conn), logging.getLogger("test"), [store(1, ("a@x.io",)), ClaimDue(2, "scheduler", 5, 0)], Counter()
    )
    # Then the store is refused with 503 and the claim gets no answer (the scheduler asks again)
    assert [(to, http_status(r) if isinstance(r, Refused) else r) for to, r in replies] == [("ingest", 503)]
    blocker.execute("ROLLBACK")
    assert conn.execute("SELECT COUNT(*) FROM recipients").fetchone()[0] == 0


def test_recorder_round_trip_over_real_queues(tmp_path: Path) -> None:
    """The stage itself, in-process, over real multiprocessing queues, until drained."""
    import multiprocessing

    from config.settings import Settings
    from pipeline.channels import Inbox, Outbox
    from pipeline.messages import EndOfStream
    from pipeline.runtime import StageContext
    from stages import recorder

    mp = multiprocessing.get_context("spawn")
    inbox_q, ingest_q = mp.Queue(64), mp.Queue(64)

    async def scenario() -> list[Any]:
        inbox = Inbox(inbox_q, "recorder")
        inbox.start()
        ctx = StageContext(
            name="recorder",
            settings=Settings(database_path=tmp_path / "q.db"),
            inbox=inbox,
            outboxes={
                name: Outbox(ingest_q if name == "ingest" else mp.Queue(64), name)
                for name in ("ingest", "scheduler", "sender")
            },
            stopping=asyncio.Event(),
            log=logging.getLogger("test"),
            ready=lambda: None,
        )
        for i in range(20):
            inbox_q.put(store(i, (f"u{i}@x.io",)))
        for producer in ("ingest", "scheduler", "sender"):
            inbox_q.put(EndOfStream(producer))
        await asyncio.wait_for(recorder.run(ctx), 10)
        assert await asyncio.to_thread(inbox.close)
        return [ingest_q.get(timeout=5) for _ in range(20)]

    replies = asyncio.run(scenario())
    assert sorted(r.corr_id for r in replies) == list(range(20))
    assert all(isinstance(r, Stored) for r in replies)


def test_two_campaigns_due_together_share_each_claim(conn: Conn) -> None:
    big = StoreMessages(
        1, "ingest", (NewMessage("big", "S", "<p>", tuple(f"b{i}@x.io" for i in range(1000))),), 0, SUMMARY
    )
    small = StoreMessages(
        2, "ingest", (NewMessage("small", "S", "<p>", tuple(f"s{i}@x.io" for i in range(30))),), 0, SUMMARY
    )
    writes.store_messages(conn, big, now_ms=0)
    writes.store_messages(conn, small, now_ms=0)
    state = ClaimState()
    first = claim_due(conn, ClaimDue(1, "s", 40, 1), state)
    topics = [r.topic_id for r in first.recipients]
    # The later, smaller campaign is not starved behind the first: it gets its share, interleaved.
    assert topics.count("small") == 20 and topics.count("big") == 20
    assert topics[:4] == ["big", "small", "big", "small"]
    second = claim_due(conn, ClaimDue(2, "s", 40, 1), state)
    # What the small one cannot use goes to the big one.
    assert [r.topic_id for r in second.recipients].count("small") == 10
    assert len(second.recipients) == 40
    assert second.claim_seq == first.claim_seq + 1


def test_many_topics_take_turns(conn: Conn) -> None:
    for i in range(40):
        writes.store_messages(
            conn, StoreMessages(i, "ingest", (NewMessage(f"t{i:02}", "S", "<p>", ("a@x.io",)),), 0, SUMMARY), now_ms=0
        )
    state = ClaimState()
    served = [r.topic_id for r in claim_due(conn, ClaimDue(1, "s", 10, 1), state).recipients]
    served += [r.topic_id for r in claim_due(conn, ClaimDue(2, "s", 100, 1), state).recipients]
    assert sorted(served) == [f"t{i:02}" for i in range(40)]


def test_work_due_later_is_not_claimed_but_reported(conn: Conn) -> None:
    writes.store_messages(conn, store(1, ("later@x.io",), due=5000), now_ms=0)
    claimed = claim_due(conn, ClaimDue(1, "s", 10, 1000), ClaimState())
    assert claimed.recipients == () and claimed.next_due_ms == 5000


def test_hold_moves_unsent_rows_except_those_kept(conn: Conn) -> None:
    from pipeline.messages import HoldTopicRows

    writes.store_messages(conn, store(1, tuple(f"u{i}@x.io" for i in range(6))), now_ms=0)
    ids = [r.recipient_id for r in claim_due(conn, ClaimDue(1, "s", 3, 1), ClaimState()).recipients]
    writes.record_outcomes(conn, RecordOutcomes(1, "sender", (Sent(ids[0], "m", 2),)), 0)
    # ids[1] is in an SES call (kept); ids[2] is claimed but not yet at SES; three are pending.
    held = writes.hold_topic(conn, HoldTopicRows(5, "ingest", "t", "cancelled", (ids[1],)), claim_seq=9)
    assert (held.count, held.found, held.claim_seq) == (4, True, 9)
    statuses = dict(conn.execute("SELECT status, COUNT(*) FROM recipients GROUP BY status").fetchall())
    assert statuses == {"sent": 1, "sending": 1, "cancelled": 4}
    again = writes.hold_topic(conn, HoldTopicRows(6, "ingest", "t", "cancelled", ()), claim_seq=9)
    assert again.count == 1  # the kept row, no longer protected
    unknown = writes.hold_topic(conn, HoldTopicRows(7, "ingest", "nope", "cancelled", ()), claim_seq=9)
    assert not unknown.found and unknown.count == 0


def test_pause_then_resume(conn: Conn) -> None:
    from pipeline.messages import HoldTopicRows

    writes.store_messages(conn, store(1, ("a@x.io", "b@x.io"), due=700), now_ms=0)
    assert writes.hold_topic(conn, HoldTopicRows(1, "ingest", "t", "paused", ()), 0).count == 2
    assert claim_due(conn, ClaimDue(1, "s", 10, 10_000), ClaimState()).recipients == ()
    resumed = writes.resume_topic(conn, 2, "t")
    assert (resumed.count, resumed.next_due_ms) == (2, 700)
    assert not writes.resume_topic(conn, 3, "nope").found


def test_topic_counters_match_a_full_recount_after_every_kind_of_change(conn: Conn) -> None:
    from pipeline.messages import HoldTopicRows, RecordEvents, RecordOpens, SesEvent
    from stages.recorder import events

    writes.store_messages(conn, store(1, tuple(f"u{i}@x.io" for i in range(12))), now_ms=0)
    ids = [r.recipient_id for r in claim_due(conn, ClaimDue(1, "s", 8, 1), ClaimState()).recipients]
    outcomes = (*(Sent(i, f"m{i}", 100 + i) for i in ids[:5]), SendFailed(ids[5], "X", "y", 9), Released(ids[6]))
    writes.record_outcomes(conn, RecordOutcomes(1, "sender", outcomes), 0)
    writes.hold_topic(conn, HoldTopicRows(2, "ingest", "t", "paused", ()), 0)
    writes.resume_topic(conn, 3, "t")
    writes.hold_topic(conn, HoldTopicRows(4, "ingest", "t", "cancelled", (ids[7],)), 0)
    seen = (
        SesEvent("s1", "delivery", "", "u@x.io", "", ids[0], 1),
        SesEvent("s2", "delivery", "", "u@x.io", "", ids[1], 1),
        SesEvent("s3", "bounce", "Permanent/General", "u@x.io", "", ids[1], 2),
        SesEvent("s4", "complaint", "abuse", "u@x.io", "", ids[0], 3),
    )
    events.record_events(conn, RecordEvents(5, "ingest", "s", "{}", seen), 10)
    key = tracking_key(conn)
    signed = [tracking.pixel_query(key, i) for i in (ids[0], ids[0], ids[2])]
    forged = tracking.pixel_query(key, ids[3]).replace(f"request_id={ids[3]}", f"request_id={ids[4]}")
    opens = (*((query, 5 + n) for n, query in enumerate(signed)), (forged, 8), ("request_id=1", 9))
    assert events.record_opens(conn, RecordOpens(6, "ingest", opens), key).counted == 3
    counters = dict(conn.execute("SELECT name, n FROM topic_counts WHERE topic_id = 't'").fetchall())
    recount = dict(conn.execute("SELECT status, COUNT(*) FROM recipients GROUP BY status").fetchall())
    for status, count in recount.items():
        assert counters[status] == count, status
    assert sum(v for k, v in counters.items() if k in recount) == 12
    assert (counters["delivered"], counters["bounced"], counters["complained"]) == (1, 1, 1)
    assert (counters["opened"], counters["opens"]) == (2, 3)
    assert (counters["first_sent_at_ms"], counters["last_sent_at_ms"]) == (100 + ids[0], 100 + ids[4])
