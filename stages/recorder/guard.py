"""The recorder's side of the reputation guard (pipeline/guardrails.py has the rules).

The recorder sees every send and every SES event, so it owns the guard: it feeds it what
each batch recorded, and carries out what it decides. A topic's pause is a hold like an
operator's (`HoldTopic` through the sender, with the reason), so it wins the same races;
the account's pause is `GuardState(reason)` to the sender, which then holds everything.
What a restart needs is in the database: the counters per topic (topic_counts), each
topic's counts when it was last resumed (guard_resumes), the account's pause and resume
(guard_state), and the last 24 hours of sends and events by time.
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict

from config.settings import GuardSettings
from pipeline.db.dialect import Conn
from pipeline.db.queries import GUARD_ACCOUNT_REASON, GUARD_ACCOUNT_RESUMED
from pipeline.db.status import Status
from pipeline.guardrails import (
    WINDOW_MS,
    Counts,
    Effect,
    Guard,
    GuardEvent,
    Limits,
    PauseAccount,
    PauseTopic,
    TopicState,
)
from pipeline.messages import AccountResumed, GuardReport, GuardState, HoldTopic, Message

log = logging.getLogger("stages.recorder")
MINUTE_MS = 60_000

Reply = tuple[str, Message]


class GuardKeeper:
    """Feeds the guard and turns its pauses into messages (sent after the batch commits)."""

    def __init__(self, conn: Conn, settings: GuardSettings, now_ms: int) -> None:
        self.conn = conn
        self.guard = restore(conn, Limits(settings.bounce_rate, settings.complaint_rate, settings.min_sent), now_ms)
        self._corr_ids = itertools.count(1)

    def at_start(self) -> list[Reply]:
        """The account's state for the sender, and whatever the stored counts call for now."""
        return [("sender", GuardState(self.guard.account_paused_reason)), *self.carry_out(self.guard.review())]

    def observe(self, seen: list[GuardEvent]) -> list[Reply]:
        replies: list[Reply] = []
        for event in seen:
            replies.extend(self.carry_out(self.guard.observe(event)))
        return replies

    def carry_out(self, effects: list[Effect]) -> list[Reply]:
        replies: list[Reply] = []
        for effect in effects:
            match effect:
                case PauseTopic(topic_id=topic_id, reason=reason):
                    log.warning("pausing topic %r: %s (resume it when the list is fixed)", topic_id, reason)
                    hold = HoldTopic(next(self._corr_ids), "recorder", topic_id, Status.PAUSED, reason)
                    replies.append(("sender", hold))
                case PauseAccount(reason=reason):
                    log.warning("holding all sending: %s (POST /v1/account/resume to go on)", reason)
                    set_state(self.conn, GUARD_ACCOUNT_REASON, reason)
                    replies.append(("sender", GuardState(reason)))
        return replies

    def topic_resumed(self, topic_id: str, now_ms: int) -> None:
        """The operator's resume: the guard judges the topic afresh, on what comes after it."""
        counts = topic_totals(self.conn, topic_id)
        self.conn.execute(
            "INSERT INTO guard_resumes VALUES (?, ?, ?, ?, ?) ON CONFLICT (topic_id) DO UPDATE SET"
            " resumed_at_ms = excluded.resumed_at_ms, sent = excluded.sent,"
            " hard_bounces = excluded.hard_bounces, complaints = excluded.complaints",
            (topic_id, now_ms, counts.sent, counts.hard_bounces, counts.complaints),
        )
        self.conn.execute("UPDATE topics SET paused_reason = NULL WHERE topic_id = ?", (topic_id,))
        self.guard.resume_topic(topic_id, now_ms)

    def resume_account(self, corr_id: int, reply_to: str, now_ms: int) -> list[Reply]:
        was_paused = self.guard.account_paused_reason is not None
        self.conn.execute("DELETE FROM guard_state WHERE name = ?", (GUARD_ACCOUNT_REASON,))
        set_state(self.conn, GUARD_ACCOUNT_RESUMED, str(now_ms))
        self.guard.resume_account(now_ms)
        if was_paused:
            log.info("sending resumed by the operator")
        return [("sender", GuardState(None)), (reply_to, AccountResumed(corr_id, was_paused))]

    def report(self, corr_id: int, now_ms: int) -> GuardReport:
        counts = self.guard.account_counts(now_ms)
        return GuardReport(
            corr_id,
            counts.sent,
            counts.hard_bounces,
            counts.complaints,
            self.guard.account_paused_reason,
            self.guard.account_since_ms,
        )


def set_state(conn: Conn, name: str, value: str) -> None:
    conn.execute(
        "INSERT INTO guard_state VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value", (name, value)
    )


def get_state(conn: Conn, name: str) -> str | None:
    row = conn.execute("SELECT value FROM guard_state WHERE name = ?", (name,)).fetchone()
    return None if row is None else str(row[0])


def topic_totals(conn: Conn, topic_id: str) -> Counts:
    found = dict(
        conn.execute(
            "SELECT name, n FROM topic_counts WHERE topic_id = ? AND name IN ('sent', 'hard_bounced', 'complained')",
            (topic_id,),
        ).fetchall()
    )
    return Counts(found.get("sent", 0), found.get("hard_bounced", 0), found.get("complained", 0))


def restore(conn: Conn, limits: Limits, now_ms: int) -> Guard:
    """The guard as the database knows it: per topic since its last resume, the account's 24 hours."""
    totals: dict[str, dict[str, int]] = defaultdict(dict)
    rows = conn.execute(
        "SELECT topic_id, name, n FROM topic_counts WHERE name IN ('sent', 'hard_bounced', 'complained')"
    )
    for topic_id, name, n in rows:
        totals[topic_id][name] = n
    resumes = {row[0]: row[1:] for row in conn.execute("SELECT * FROM guard_resumes")}
    paused = dict(conn.execute("SELECT topic_id, paused_reason FROM topics WHERE paused_reason IS NOT NULL").fetchall())
    topics: dict[str, TopicState] = {}
    for topic_id, found in totals.items():
        since, *base = resumes.get(topic_id, (None, 0, 0, 0))
        counts = Counts(
            found.get("sent", 0) - base[0], found.get("hard_bounced", 0) - base[1], found.get("complained", 0) - base[2]
        )
        topics[topic_id] = TopicState(counts, since, paused.get(topic_id))
    resumed = get_state(conn, GUARD_ACCOUNT_RESUMED)
    since = max(now_ms - WINDOW_MS, int(resumed) if resumed else 0)
    return Guard.restore(
        limits,
        topics,
        account_minutes(conn, since),
        now_ms,
        int(resumed) if resumed else None,
        get_state(conn, GUARD_ACCOUNT_REASON),
    )


def account_minutes(conn: Conn, since_ms: int) -> list[tuple[int, Counts]]:
    """Sends (by send time) and first hard bounces and complaints (by arrival), per minute since `since_ms`."""
    minutes: list[tuple[int, Counts]] = []
    for minute, n in conn.execute(
        "SELECT sent_at_ms / ? * ?, COUNT(*) FROM recipients WHERE sent_at_ms >= ? GROUP BY 1",
        (MINUTE_MS, MINUTE_MS, since_ms),
    ):
        minutes.append((minute, Counts(sent=n)))
    for minute, bounces, complaints in conn.execute(
        "SELECT received_at_ms / ? * ?,"
        " COUNT(DISTINCT CASE WHEN kind = 'bounce' AND subtype LIKE 'Permanent%' THEN recipient_id END),"
        " COUNT(DISTINCT CASE WHEN kind = 'complaint' THEN recipient_id END)"
        " FROM events WHERE received_at_ms >= ? AND recipient_id IS NOT NULL GROUP BY 1",
        (MINUTE_MS, MINUTE_MS, since_ms),
    ):
        minutes.append((minute, Counts(hard_bounces=bounces, complaints=complaints)))
    return minutes
