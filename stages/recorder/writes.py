"""Every write the product makes, as plain functions on one sqlite3 connection.

The recorder calls them inside its group-commit transaction; each returns the reply
for its asker (or None). Pure enough to test with a temp file and no processes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

from pipeline.messages import (
    ClaimDue,
    Claimed,
    Outcome,
    OutcomesRecorded,
    Recipient,
    RecordOutcomes,
    Refused,
    Released,
    SendFailed,
    Sent,
    Stored,
    StoreMessages,
)

IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000


def store_messages(conn: sqlite3.Connection, request: StoreMessages, now_ms: int) -> Stored | Refused:
    """Insert each message's content once and one pending row per address."""
    if request.idempotency_key is not None:
        earlier = _earlier_answer(conn, request, now_ms)
        if earlier is not None:
            return earlier
    stored = 0
    for message in request.messages:
        content_id = conn.execute(
            "INSERT INTO contents (subject, html, created_at_ms) VALUES (?, ?, ?)",
            (message.subject, message.html, now_ms),
        ).lastrowid
        conn.executemany(
            "INSERT INTO recipients (content_id, topic_id, email, status, due_at_ms, created_at_ms)"
            " VALUES (?, ?, ?, 'pending', ?, ?)",
            ((content_id, message.topic_id, email, request.due_at_ms, now_ms) for email in message.emails),
        )
        stored += len(message.emails)
    answer = json.loads(request.summary)
    answer["success"] = stored
    answer_text = json.dumps(answer, ensure_ascii=False)
    if request.idempotency_key is not None:
        conn.execute(
            "INSERT OR REPLACE INTO idempotency_keys (key, body_digest, answer, created_at_ms) VALUES (?, ?, ?, ?)",
            (request.idempotency_key, request.body_digest or "", answer_text, now_ms),
        )
    return Stored(request.corr_id, answer_text)


def _earlier_answer(conn: sqlite3.Connection, request: StoreMessages, now_ms: int) -> Stored | Refused | None:
    row = conn.execute(
        "SELECT body_digest, answer FROM idempotency_keys WHERE key = ? AND created_at_ms > ?",
        (request.idempotency_key, now_ms - IDEMPOTENCY_TTL_MS),
    ).fetchone()
    if row is None:
        return None
    if row[0] != request.body_digest:
        return Refused(
            request.corr_id,
            422,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different body",
        )
    return Stored(request.corr_id, row[1], replayed=True)


def claim_due(conn: sqlite3.Connection, request: ClaimDue) -> Claimed:
    """Atomically mark up to `limit` due rows as sending, oldest due first."""
    rows = conn.execute(
        "UPDATE recipients SET status = 'sending' WHERE id IN ("
        " SELECT id FROM recipients WHERE status = 'pending' AND due_at_ms <= ?"
        " ORDER BY due_at_ms, id LIMIT ?)"
        " RETURNING id, email, topic_id, content_id, due_at_ms",
        (request.now_ms, request.limit),
    ).fetchall()
    rows.sort(key=lambda row: (row[4], row[0]))
    recipients = tuple(Recipient(row[0], row[1], row[2], row[3]) for row in rows)
    return Claimed(request.corr_id, recipients, next_due_ms(conn))


def next_due_ms(conn: sqlite3.Connection) -> int | None:
    """The earliest due time of any pending row (the partial index answers this)."""
    value: int | None = conn.execute("SELECT MIN(due_at_ms) FROM recipients WHERE status = 'pending'").fetchone()[0]
    return value


def record_outcomes(conn: sqlite3.Connection, request: RecordOutcomes) -> OutcomesRecorded:
    """Apply what SES answered. Only rows still `sending` change, so a replay is harmless."""
    sent, failed, released = _split(request.outcomes)
    conn.executemany(
        "UPDATE recipients SET status = 'sent', message_id = ?, sent_at_ms = ? WHERE id = ? AND status = 'sending'",
        ((o.message_id, o.at_ms, o.recipient_id) for o in sent),
    )
    conn.executemany(
        "UPDATE recipients SET status = 'failed', error_code = ?, error_message = ?, sent_at_ms = NULL"
        " WHERE id = ? AND status = 'sending'",
        ((o.code, o.reason, o.recipient_id) for o in failed),
    )
    conn.executemany(
        "UPDATE recipients SET status = 'pending' WHERE id = ? AND status = 'sending'",
        ((o.recipient_id,) for o in released),
    )
    return OutcomesRecorded(request.corr_id)


def _split(outcomes: Iterable[Outcome]) -> tuple[list[Sent], list[SendFailed], list[Released]]:
    sent: list[Sent] = []
    failed: list[SendFailed] = []
    released: list[Released] = []
    for outcome in outcomes:
        match outcome:
            case Sent():
                sent.append(outcome)
            case SendFailed():
                failed.append(outcome)
            case Released():
                released.append(outcome)
    return sent, failed, released


def requeue_claimed(conn: sqlite3.Connection) -> int:
    """At start, work claimed by a sender that is gone goes back to pending.

    Safe only because the recorder starts with the whole tree (no sender survives it).
    """
    return conn.execute("UPDATE recipients SET status = 'pending' WHERE status = 'sending'").rowcount


def forget_old_idempotency_keys(conn: sqlite3.Connection, now_ms: int) -> int:
    return conn.execute(
        "DELETE FROM idempotency_keys WHERE created_at_ms <= ?", (now_ms - IDEMPOTENCY_TTL_MS,)
    ).rowcount
