"""The recorder's guard keeper on a real SQLite file: what a restart rebuilds, and the resumes."""

from __future__ import annotations

import pytest

from config.settings import GuardSettings
from pipeline.db.dialect import Conn
from pipeline.messages import (
    CampaignFacts,
    ClaimDue,
    GuardState,
    HoldTopic,
    NewMessage,
    RecordEvents,
    RecordOutcomes,
    Sent,
    SesEvent,
    StoreMessages,
)
from stages.recorder import events, writes
from stages.recorder.claims import ClaimState, claim_due
from stages.recorder.guard import GuardKeeper

LIMITS = GuardSettings(bounce_rate=0.04, complaint_rate=0.0008, min_sent=10)


@pytest.fixture
def conn(store: Conn) -> Conn:
    return store


def sent_topic(conn: Conn, topic: str, count: int, now: int) -> list[int]:
    emails = tuple(f"{topic}{i}@x.io" for i in range(count))
    writes.store_messages(
        conn, StoreMessages(1, "ingest", (NewMessage(topic, "S", "<p>", emails),), 0, CampaignFacts(count)), now
    )
    claimed = claim_due(conn, ClaimDue(1, "s", 1000, now), ClaimState()).recipients
    outcomes = tuple(Sent(r.recipient_id, f"m{r.recipient_id}", now) for r in claimed)
    writes.record_outcomes(conn, RecordOutcomes(1, "sender", outcomes), now)
    return [r.recipient_id for r in claimed]


def bounce(conn: Conn, rid: int, now: int) -> None:
    event = SesEvent(f"sns-{rid}", "bounce", "Permanent/General", "", "", rid, now)
    events.record_events(conn, RecordEvents(1, "ingest", f"sns-{rid}", "{}", (event,)), now)


def test_a_restart_rebuilds_the_counts_and_pauses_what_they_call_for(conn: Conn) -> None:
    now = 1_800_000_000_000
    ids = sent_topic(conn, "t", 20, now)
    for rid in ids[:2]:
        bounce(conn, rid, now)  # 2 of 20: 10%, recorded while no guard was watching
    replies = GuardKeeper(conn, LIMITS, now + 1000).at_start()
    states = [reply.reason for _, reply in replies if isinstance(reply, GuardState)]
    assert states[-1] is not None and "hard bounce rate 10% (2 of 20 sent in the last 24 h)" in states[-1]
    holds = [reply for _, reply in replies if isinstance(reply, HoldTopic)]
    assert [(h.topic_id, h.reply_to) for h in holds] == [("t", "recorder")]
    assert holds[0].reason is not None and "2 of 20 sent since the topic started" in holds[0].reason


def test_a_resume_is_remembered_across_a_restart(conn: Conn) -> None:
    now = 1_800_000_000_000
    ids = sent_topic(conn, "t", 20, now)
    bounce(conn, ids[0], now)
    bounce(conn, ids[1], now)
    keeper = GuardKeeper(conn, LIMITS, now)
    keeper.topic_resumed("t", now + 1)
    keeper.resume_account(1, "ingest", now + 1)
    # A restart judges only what came after the resumes: nothing yet
    replies = GuardKeeper(conn, LIMITS, now + 2).at_start()
    assert replies == [("sender", GuardState(None))]
