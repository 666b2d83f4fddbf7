"""Every write the product makes, as plain functions on one sqlite3 connection.

The recorder calls them inside its group-commit transaction; each returns the reply
for its asker (or None). Pure enough to test with a temp file and no processes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from pipeline import metrics
from pipeline.clicks import rewrite_links
from pipeline.db.dialect import POSTGRESQL, Conn, dialect, in_list
from pipeline.db.status import HOLDABLE, Status
from pipeline.guardrails import GuardEvent, MailSent
from pipeline.messages import (
    AddressHeld,
    HoldAddressRows,
    HoldTopicRows,
    Outcome,
    OutcomesRecorded,
    RecordOutcomes,
    Refusal,
    Refused,
    Released,
    SendFailed,
    Sent,
    Stored,
    StoreMessages,
    TopicHeld,
    TopicResumed,
    Withheld,
)
from stages.recorder.events import count_in_topic, link_early_events, suppress, suppressed_among

IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000
WORK_CHANNEL = "ses_sender_work"


def store_messages(conn: Conn, request: StoreMessages, now_ms: int) -> Stored | Refused:
    """Insert each message's content once and one pending row per address."""
    if request.idempotency_key is not None:
        earlier = _earlier_answer(conn, request, now_ms)
        if earlier is not None:
            return earlier
    stored = suppressed = 0
    for message in request.messages:
        blocked = suppressed_among(conn, message.emails, message.list_id)
        emails = [e for e in message.emails if e.lower() not in blocked]
        suppressed += len(message.emails) - len(emails)
        if not emails:
            continue
        content_id = conn.execute(
            "INSERT INTO contents (subject, html, created_at_ms, list_id, transactional, template, text, track_clicks)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                message.subject,
                message.html,
                now_ms,
                message.list_id,
                message.transactional,
                message.template,
                message.text,
                message.track_clicks,
            ),
        ).fetchone()[0]
        if message.track_clicks:
            conn.executemany(
                "INSERT INTO links VALUES (?, ?, ?)",
                ((content_id, index, url) for index, url in enumerate(rewrite_links(message.html).links)),
            )
        data = dict(zip(message.emails, message.data, strict=True)) if message.data else {}
        conn.executemany(
            "INSERT INTO recipients (content_id, topic_id, email, status, due_at_ms, created_at_ms, data)"
            f" VALUES (?, ?, ?, '{Status.PENDING}', ?, ?, ?)",
            ((content_id, message.topic_id, e, request.due_at_ms, now_ms, data.get(e) or None) for e in emails),
        )
        stored += len(emails)
        conn.execute(
            f"INSERT INTO topic_counts VALUES (?, '{Status.PENDING}', ?)"
            " ON CONFLICT (topic_id, name) DO UPDATE SET n = topic_counts.n + excluded.n",
            (message.topic_id, len(emails)),
        )
        conn.execute(
            "INSERT INTO topics (topic_id, first_posted_at_ms, last_posted_at_ms, total) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (topic_id) DO UPDATE SET last_posted_at_ms = excluded.last_posted_at_ms,"
            " total = topics.total + excluded.total",
            (message.topic_id, now_ms, now_ms, len(emails)),
        )
    if stored:
        notify_work(conn, request.due_at_ms)
    duration_ms = max(0, (time.monotonic_ns() - request.received_ns) // 1_000_000) if request.received_ns else None
    answer_text = request.facts.answer(stored, suppressed, duration_ms)
    if request.idempotency_key is not None:
        conn.execute(
            "INSERT INTO idempotency_keys (key, body_digest, answer, created_at_ms) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET body_digest = excluded.body_digest, answer = excluded.answer,"
            " created_at_ms = excluded.created_at_ms",
            (request.idempotency_key, request.body_digest or "", answer_text, now_ms),
        )
    return Stored(request.corr_id, answer_text, stored=stored, suppressed=suppressed)


def notify_work(conn: Conn, due_at_ms: int) -> None:
    """With PostgreSQL, wake the scheduler of every node when this commits (the sending node's
    must learn of work posted to another node); with SQLite ingest wakes its own scheduler."""
    if dialect(conn) == POSTGRESQL:
        conn.execute(f"SELECT pg_notify('{WORK_CHANNEL}', ?)", (str(due_at_ms),))


def _earlier_answer(conn: Conn, request: StoreMessages, now_ms: int) -> Stored | Refused | None:
    row = conn.execute(
        "SELECT body_digest, answer FROM idempotency_keys WHERE key = ? AND created_at_ms > ?",
        (request.idempotency_key, now_ms - IDEMPOTENCY_TTL_MS),
    ).fetchone()
    if row is None:
        return None
    if row[0] != request.body_digest:
        return Refused(request.corr_id, Refusal.KEY_REUSED, "this Idempotency-Key was used with a different body")
    return Stored(request.corr_id, row[1], replayed=True)


def next_due_ms(conn: Conn) -> int | None:
    """The earliest due time of any pending row (the partial index answers this)."""
    value: int | None = conn.execute(
        f"SELECT MIN(due_at_ms) FROM recipients WHERE status = '{Status.PENDING}'"
    ).fetchone()[0]
    return value


def record_outcomes(
    conn: Conn, request: RecordOutcomes, now_ms: int, seen: list[GuardEvent] | None = None
) -> OutcomesRecorded:
    """Apply what SES answered. Only rows still `sending` change, so a replay is harmless.

    Events that SES sent before this outcome reached us are linked by message id here.
    `seen` collects what the reputation guard judges: the sends, per topic, and those events.
    """
    sent, failed, released, withheld = _split(request.outcomes)
    if seen is not None and sent:
        seen.extend(newly_sent(conn, sent))
    conn.executemany(
        f"UPDATE recipients SET status = '{Status.SENT}', message_id = ?, sent_at_ms = ?"
        f" WHERE id = ? AND status = '{Status.SENDING}'",
        ((o.message_id, o.at_ms, o.recipient_id) for o in sent),
    )
    conn.executemany(
        f"UPDATE recipients SET status = '{Status.FAILED}', error_code = ?, error_message = ?, sent_at_ms = NULL"
        f" WHERE id = ? AND status = '{Status.SENDING}'",
        ((o.code, o.reason, o.recipient_id) for o in failed),
    )
    conn.executemany(
        f"UPDATE recipients SET status = '{Status.PENDING}' WHERE id = ? AND status = '{Status.SENDING}'",
        ((o.recipient_id,) for o in released),
    )
    conn.executemany(
        f"UPDATE recipients SET status = ? WHERE id = ? AND status = '{Status.SENDING}'",
        ((o.status, o.recipient_id) for o in withheld),
    )
    link_early_events(conn, {o.message_id: o.recipient_id for o in sent if o.message_id}, now_ms, seen)
    return OutcomesRecorded(request.corr_id)


def newly_sent(conn: Conn, sent: list[Sent]) -> list[MailSent]:
    """Per topic, the sends this batch records for the first time (a replay counts nothing)."""
    at_ms = {o.recipient_id: o.at_ms for o in sent}
    among, ids = in_list(conn, list(at_ms))
    rows = conn.execute(
        f"SELECT topic_id, id FROM recipients WHERE status = '{Status.SENDING}' AND id {among}", (ids,)
    ).fetchall()
    latest: dict[str, tuple[int, int]] = {}
    for topic_id, rid in rows:
        count, when = latest.get(topic_id, (0, 0))
        latest[topic_id] = (count + 1, max(when, at_ms[rid]))
    return [MailSent(topic_id, when, count) for topic_id, (count, when) in latest.items()]


def _split(outcomes: Iterable[Outcome]) -> tuple[list[Sent], list[SendFailed], list[Released], list[Withheld]]:
    sent: list[Sent] = []
    failed: list[SendFailed] = []
    released: list[Released] = []
    withheld: list[Withheld] = []
    for outcome in outcomes:
        match outcome:
            case Sent():
                sent.append(outcome)
            case SendFailed():
                failed.append(outcome)
            case Released():
                released.append(outcome)
            case Withheld():
                withheld.append(outcome)
    return sent, failed, released, withheld


def requeue_claimed(conn: Conn) -> int:
    """At start, work claimed by a sender that is gone goes back to pending.

    Safe only because the recorder starts with the whole tree (no sender survives it).
    """
    return conn.execute(f"UPDATE recipients SET status = '{Status.PENDING}' WHERE status = '{Status.SENDING}'").rowcount


def forget_old_idempotency_keys(conn: Conn, now_ms: int) -> int:
    return conn.execute(
        "DELETE FROM idempotency_keys WHERE created_at_ms <= ?", (now_ms - IDEMPOTENCY_TTL_MS,)
    ).rowcount


def topic_exists(conn: Conn, topic_id: str) -> bool:
    return conn.execute("SELECT 1 FROM recipients WHERE topic_id = ? LIMIT 1", (topic_id,)).fetchone() is not None


def hold_topic(conn: Conn, request: HoldTopicRows, claim_seq: int) -> TopicHeld:
    """Cancel or pause every unsent row of the topic, except those the sender may have sent."""
    if not topic_exists(conn, request.topic_id):
        return TopicHeld(request.corr_id, request.topic_id, request.hold, 0, False, claim_seq)
    statuses = HOLDABLE[request.hold]
    marks = ", ".join("?" for _ in statuses)
    not_kept, keep = in_list(conn, request.keep, negate=True)
    count = conn.execute(
        f"UPDATE recipients SET status = ? WHERE topic_id = ? AND status IN ({marks}) AND id {not_kept}",
        (request.hold, request.topic_id, *statuses, keep),
    ).rowcount
    if request.reason is not None:  # the reputation guard's pause says why
        conn.execute("UPDATE topics SET paused_reason = ? WHERE topic_id = ?", (request.reason, request.topic_id))
    return TopicHeld(request.corr_id, request.topic_id, request.hold, count, True, claim_seq)


def hold_address(conn: Conn, request: HoldAddressRows, claim_seq: int, now_ms: int) -> AddressHeld:
    """An unsubscribe: the address leaves the list (or all mail), its topic counts it, and
    its unsent rows in that scope are withdrawn, except those the sender may have sent."""
    email, scope = request.email.strip().lower(), request.list_id or ""
    new = suppress(conn, email, "unsubscribe", f"one-click link of recipient {request.recipient_id}", now_ms, scope)
    if new:
        metrics.TALLY.unsubscribes += 1
        row = conn.execute("SELECT topic_id FROM recipients WHERE id = ?", (request.recipient_id,)).fetchone()
        if row is not None:
            count_in_topic(conn, row[0], "unsubscribed")  # the topic whose mail carried the link
    of_list = "" if request.list_id is None else " AND content_id IN (SELECT id FROM contents WHERE list_id = ?)"
    not_kept, keep = in_list(conn, request.keep, negate=True)
    count = conn.execute(
        f"UPDATE recipients SET status = '{Status.SUPPRESSED}' WHERE lower(email) = ?"
        f" AND status IN ('{Status.PENDING}', '{Status.PAUSED}', '{Status.SENDING}'){of_list}"
        f" AND id {not_kept}",
        (email, *((request.list_id,) if request.list_id is not None else ()), keep),
    ).rowcount
    return AddressHeld(request.corr_id, request.email, request.list_id, count, new, claim_seq)


def resume_topic(conn: Conn, corr_id: int, topic_id: str) -> TopicResumed:
    """Paused rows go back to pending; the answer says when the earliest is due."""
    if not topic_exists(conn, topic_id):
        return TopicResumed(corr_id, topic_id, 0, False, None)
    count = conn.execute(
        f"UPDATE recipients SET status = '{Status.PENDING}' WHERE topic_id = ? AND status = '{Status.PAUSED}'",
        (topic_id,),
    ).rowcount
    due: int | None = conn.execute(
        f"SELECT MIN(due_at_ms) FROM recipients WHERE status = '{Status.PENDING}' AND topic_id = ?", (topic_id,)
    ).fetchone()[0]
    if count and due is not None:
        notify_work(conn, due)
    return TopicResumed(corr_id, topic_id, count, True, due)
