"""Writes for what comes back after a send: SES events, opens, the suppression list.

An event is recorded once (SNS delivers at least once), matched to its recipient by
our request-id tag or by SES's message id, and applied with precedence: a bounce wins
over a delivery whatever order they arrive in. A permanent bounce or a complaint puts
the address on the suppression list. Addresses are suppressed case-insensitively.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

from pipeline import tracking
from pipeline.messages import (
    ChangeSuppression,
    EventsRecorded,
    OpensRecorded,
    RecordEvents,
    RecordOpens,
    SesEvent,
    SuppressionChanged,
)
from pipeline.ses_events import is_permanent_bounce


def record_events(conn: sqlite3.Connection, request: RecordEvents, now_ms: int) -> EventsRecorded:
    recorded = matched = 0
    for event in request.events:
        recipient_id = match(conn, event)
        inserted = conn.execute(
            "INSERT OR IGNORE INTO events (sns_message_id, kind, subtype, email, ses_message_id, recipient_id,"
            " occurred_at_ms, received_at_ms, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.sns_message_id,
                event.kind,
                event.subtype,
                event.email,
                event.ses_message_id,
                recipient_id,
                event.occurred_at_ms,
                now_ms,
                event.raw,
            ),
        ).rowcount
        if not inserted:
            continue  # the same SNS message again
        recorded += 1
        if recipient_id is not None:
            matched += 1
            apply_event(conn, recipient_id, event, now_ms)
        reason = "complaint" if event.kind == "complaint" else "bounce" if is_permanent_bounce(event) else None
        if reason and event.email:
            suppress(conn, event.email, reason, event.subtype, now_ms)
    return EventsRecorded(request.corr_id, recorded, matched)


def match(conn: sqlite3.Connection, event: SesEvent) -> int | None:
    """Our tag first (it works even before the send's outcome is written), then SES's id."""
    if event.request_id is not None:
        row = conn.execute("SELECT id FROM recipients WHERE id = ?", (event.request_id,)).fetchone()
        if row is not None:
            return int(row[0])
    if event.ses_message_id:
        row = conn.execute("SELECT id FROM recipients WHERE message_id = ?", (event.ses_message_id,)).fetchone()
        if row is not None:
            return int(row[0])
    return None


def apply_event(conn: sqlite3.Connection, recipient_id: int, event: SesEvent, now_ms: int) -> None:
    at = event.occurred_at_ms or now_ms
    if event.kind == "delivery":
        conn.execute(
            "UPDATE recipients SET delivery = 'delivered', delivery_at_ms = ? WHERE id = ? AND delivery IS NULL",
            (at, recipient_id),
        )
    elif event.kind == "bounce":
        conn.execute(
            "UPDATE recipients SET delivery = 'bounced', delivery_at_ms = ?, bounce_type = ? WHERE id = ?",
            (at, event.subtype, recipient_id),
        )
    elif event.kind == "complaint":
        conn.execute(
            "UPDATE recipients SET complained_at_ms = COALESCE(complained_at_ms, ?) WHERE id = ?", (at, recipient_id)
        )


def record_opens(conn: sqlite3.Connection, request: RecordOpens, key: bytes) -> OpensRecorded:
    """Count opens whose link this server signed, of recipients that were sent; the first-open time is kept.

    The signatures are checked here, not in ingest: the image is the same either way, and
    ingest's one event loop bounds how many pixels are served, so parsing and the HMAC
    (about a sixth of a pixel request's cost there) are done by the stage that writes the
    open anyway. `key` is the tracking key, read once when the recorder starts.
    """
    signed = ((at_ms, tracking.signed_recipient(key, query)) for query, at_ms in request.opens)
    counted = conn.executemany(
        "UPDATE recipients SET open_count = open_count + 1, opened_first_at_ms = COALESCE(opened_first_at_ms, ?)"
        " WHERE id = ? AND status = 'sent'",
        (pair for pair in signed if pair[1] is not None),
    ).rowcount
    return OpensRecorded(request.corr_id, counted)


def suppress(conn: sqlite3.Connection, email: str, reason: str, detail: str, now_ms: int) -> bool:
    return bool(
        conn.execute(
            "INSERT OR IGNORE INTO suppressions (email, reason, detail, created_at_ms) VALUES (?, ?, ?, ?)",
            (email.strip().lower(), reason, detail, now_ms),
        ).rowcount
    )


def change_suppression(conn: sqlite3.Connection, request: ChangeSuppression, now_ms: int) -> SuppressionChanged:
    if request.reason is None:
        removed = conn.execute("DELETE FROM suppressions WHERE email = ?", (request.email.strip().lower(),)).rowcount
        return SuppressionChanged(request.corr_id, bool(removed))
    return SuppressionChanged(request.corr_id, suppress(conn, request.email, request.reason, "manual", now_ms))


def suppressed_among(conn: sqlite3.Connection, emails: Iterable[str]) -> set[str]:
    """Which of these addresses (compared lower-cased) are suppressed."""
    lowered = sorted({e.lower() for e in emails})
    if not lowered:
        return set()
    rows = conn.execute(
        "SELECT email FROM suppressions WHERE email IN (SELECT value FROM json_each(?))", (json.dumps(lowered),)
    )
    return {row[0] for row in rows}
