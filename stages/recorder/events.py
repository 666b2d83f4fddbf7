"""Writes for what comes back after a send: SES events, opens, the suppression list.

An event is recorded once (SNS delivers at least once), matched to its recipient by
our request-id tag or by SES's message id, and applied with precedence: a bounce wins
over a delivery whatever order they arrive in. A permanent bounce or a complaint of one
of our recipients puts its address on the suppression list. An event that matches none
of our recipients is kept for reconciliation and changes nothing (until the outcome of a
send with its message id links it). Addresses are suppressed case-insensitively.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from pipeline import metrics, tracking
from pipeline.db.dialect import SQLITE, Conn, dialect, in_list
from pipeline.db.status import Status
from pipeline.guardrails import Complained, GuardEvent, HardBounced
from pipeline.machine_opens import Hit, classify
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


def record_events(
    conn: Conn, request: RecordEvents, now_ms: int, seen: list[GuardEvent] | None = None
) -> EventsRecorded:
    """Keep the SNS message once, each event once; only events of our own recipients change anything.

    `seen` collects what the reputation guard judges (a recipient's first hard bounce or complaint).
    """
    conn.execute(
        "INSERT INTO sns_messages (sns_message_id, raw, received_at_ms) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (request.sns_message_id, request.raw, now_ms),
    )
    recorded = matched = 0
    for event in request.events:
        recipient = match(conn, event)
        event_id = conn.execute(
            "INSERT INTO events (sns_message_id, kind, subtype, email, ses_message_id, recipient_id,"
            " occurred_at_ms, received_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
            (
                event.sns_message_id,
                event.kind,
                event.subtype,
                event.email,
                event.ses_message_id,
                recipient.id if recipient else None,
                event.occurred_at_ms,
                now_ms,
            ),
        ).fetchone()
        if event_id is None:
            continue  # the same SNS message again
        recorded += 1
        metrics.TALLY.events[event.kind] += 1
        if recipient is not None:
            matched += 1
            apply_event(conn, recipient, event, now_ms, seen)
    return EventsRecorded(request.corr_id, recorded, matched)


@dataclass(frozen=True, slots=True)
class Matched:
    """The recipient an event is about."""

    id: int
    email: str
    topic_id: str


def match(conn: Conn, event: SesEvent) -> Matched | None:
    """Our tag first (it works even before the send's outcome is written), then SES's id."""
    row = None
    if event.recipient_id is not None:
        row = conn.execute("SELECT id, email, topic_id FROM recipients WHERE id = ?", (event.recipient_id,)).fetchone()
    if row is None and event.ses_message_id:
        row = conn.execute(
            "SELECT id, email, topic_id FROM recipients WHERE message_id = ?", (event.ses_message_id,)
        ).fetchone()
    return Matched(*row) if row is not None else None


def link_early_events(conn: Conn, sent: dict[str, int], now_ms: int, seen: list[GuardEvent] | None = None) -> int:
    """Events that came before their send's outcome (no tag, an unknown message id yet) are
    linked to the recipient when the outcome with that message id is recorded."""
    if not sent:
        return 0
    among, ids = in_list(conn, list(sent))
    rows = conn.execute(
        "SELECT e.id, e.sns_message_id, e.kind, e.subtype, e.email, e.ses_message_id, e.occurred_at_ms,"
        " r.id, r.email, r.topic_id FROM events e JOIN recipients r ON r.message_id = e.ses_message_id"
        " WHERE e.recipient_id IS NULL AND e.ses_message_id != ''"
        f" AND e.ses_message_id {among}",
        (ids,),
    ).fetchall()
    for event_id, sns_id, kind, subtype, email, ses_id, occurred, *recipient in rows:
        conn.execute("UPDATE events SET recipient_id = ? WHERE id = ?", (recipient[0], event_id))
        event = SesEvent(sns_id, kind, subtype, email, ses_id, None, occurred)
        apply_event(conn, Matched(*recipient), event, now_ms, seen)
    return len(rows)


def apply_event(
    conn: Conn, recipient: Matched, event: SesEvent, now_ms: int, seen: list[GuardEvent] | None = None
) -> None:
    """What an event of one of our recipients changes: its state, its topic's counts, suppression."""
    at = event.occurred_at_ms or now_ms
    judged = guard_event(conn, recipient, event, now_ms)
    if judged is not None and seen is not None:
        seen.append(judged)
    first_of_kind = (
        conn.execute(
            "SELECT COUNT(*) FROM events WHERE recipient_id = ? AND kind = ?", (recipient.id, event.kind)
        ).fetchone()[0]
        == 1
    )
    if first_of_kind:
        count_in_topic(conn, recipient.topic_id, f"event:{event.kind}")
    if event.kind == "delivery":
        conn.execute(
            "UPDATE recipients SET delivery = 'delivered', delivery_at_ms = ? WHERE id = ? AND delivery IS NULL",
            (at, recipient.id),
        )
    elif event.kind == "bounce":
        conn.execute(
            # A hard bounce stays the recipient's bounce whatever follows it.
            "UPDATE recipients SET delivery = 'bounced', delivery_at_ms = ?,"
            " bounce_type = CASE WHEN bounce_type LIKE 'Permanent%' THEN bounce_type ELSE ? END WHERE id = ?",
            (at, event.subtype, recipient.id),
        )
    elif event.kind == "complaint":
        conn.execute(
            "UPDATE recipients SET complained_at_ms = COALESCE(complained_at_ms, ?) WHERE id = ?", (at, recipient.id)
        )
    elif event.kind == "open":  # SES's own open tracking counts like our pixel, once per recipient
        conn.execute(
            "UPDATE recipients SET open_count = open_count + 1, opened_first_at_ms = COALESCE(opened_first_at_ms, ?)"
            " WHERE id = ?",
            (at, recipient.id),
        )
    if event.kind == "subscription" and event.email.strip().lower() in ("", recipient.email.lower()):
        # SES-managed subscriptions: the recipient left through SES's own link.
        if suppress(conn, recipient.email, "unsubscribe", "SES subscription", now_ms):
            count_in_topic(conn, recipient.topic_id, "unsubscribed")
        return
    reason = "complaint" if event.kind == "complaint" else "bounce" if is_permanent_bounce(event) else None
    # Only the address we sent to: an event cannot suppress an address it was not about.
    if reason and event.email.strip().lower() in ("", recipient.email.lower()):
        suppress(conn, recipient.email, reason, event.subtype, now_ms)


def guard_event(conn: Conn, recipient: Matched, event: SesEvent, now_ms: int) -> GuardEvent | None:
    """A recipient's first hard bounce (counted per topic here) or first complaint, at its arrival."""
    if event.kind == "bounce" and is_permanent_bounce(event):
        row = conn.execute("SELECT bounce_type FROM recipients WHERE id = ?", (recipient.id,)).fetchone()
        if row is not None and str(row[0] or "").startswith("Permanent"):
            return None
        count_in_topic(conn, recipient.topic_id, "hard_bounced")
        return HardBounced(recipient.topic_id, now_ms)
    if event.kind == "complaint":
        row = conn.execute("SELECT complained_at_ms FROM recipients WHERE id = ?", (recipient.id,)).fetchone()
        return Complained(recipient.topic_id, now_ms) if row is not None and row[0] is None else None
    return None


def record_opens(conn: Conn, request: RecordOpens, key: bytes) -> OpensRecorded:
    """Count opens whose link this server signed, of recipients that were sent; the first-open
    time is kept; and each open and click is judged a person's or a machine's.

    The signatures are checked here, not in ingest: the image is the same either way, and
    ingest's one event loop bounds how many pixels are served, so parsing and the HMAC
    (about a sixth of a pixel request's cost there) are done by the stage that writes the
    open anyway. `key` is the tracking key, read once when the recorder starts.
    `opened` and `opens` count every signed hit, as before; `opened_human` and
    `opens_machine` come from pipeline/machine_opens.py's verdict.
    """
    counted = 0
    for index, (query, at_ms) in enumerate(request.opens):  # one statement each: RETURNING is per row
        recipient_id = tracking.signed_recipient(key, query)
        if recipient_id is None:
            continue
        row = conn.execute(
            "UPDATE recipients SET open_count = open_count + 1, opened_first_at_ms = COALESCE(opened_first_at_ms, ?)"
            f" WHERE id = ? AND status = '{Status.SENT}' RETURNING topic_id, delivery_at_ms, human_opened_at_ms",
            (at_ms, recipient_id),
        ).fetchone()
        if row is not None:
            counted += 1
            metrics.TALLY.opens += 1
            agent = request.agents[index] if index < len(request.agents) else ("", "")
            judge(conn, recipient_id, row, at_ms, agent, Hit.OPEN)
    for recipient_id, link_index, at_ms, user_agent, address in request.clicks:
        counted += record_click(conn, recipient_id, link_index, at_ms, (user_agent, address))
    return OpensRecorded(request.corr_id, counted)


def judge(
    conn: Conn,
    recipient_id: int,
    row: tuple[str, int | None, int | None],
    at_ms: int,
    agent: tuple[str, str],
    hit: Hit,
) -> None:
    """Person or machine: a machine's hit counts in `opens_machine` (`clicks_machine`), a
    recipient's first person's hit in `opened_human` (`clicked_human`)."""
    topic_id, delivered_at_ms, human_at_ms = row
    since = None if delivered_at_ms is None else (at_ms - delivered_at_ms) / 1000
    kind = "opens" if hit is Hit.OPEN else "clicks"
    if classify(agent[0] or None, agent[1] or None, since, hit=hit).machine:
        count_in_topic(conn, topic_id, f"{kind}_machine")
    elif human_at_ms is None:
        column = "human_opened_at_ms" if hit is Hit.OPEN else "human_clicked_at_ms"
        conn.execute(f"UPDATE recipients SET {column} = ? WHERE id = ?", (at_ms, recipient_id))
        count_in_topic(conn, topic_id, "opened_human" if hit is Hit.OPEN else "clicked_human")


def count_in_topic(conn: Conn, topic_id: str, name: str) -> None:
    """One more in the topic's counter `name` (kept in topic_counts, read by the statistics)."""
    conn.execute(
        "INSERT INTO topic_counts VALUES (?, ?, 1) ON CONFLICT (topic_id, name) DO UPDATE SET n = topic_counts.n + 1",
        (topic_id, name),
    )


def record_click(conn: Conn, recipient_id: int, link_index: int, at_ms: int, agent: tuple[str, str] = ("", "")) -> int:
    """One click of a sent recipient's tracked link: the first time and the count per link, and
    its topic's `clicks` and `clicked` (unique recipients), judged as opens are. 0 when the
    link or the send is not ours."""
    row = conn.execute(
        "SELECT r.topic_id, r.delivery_at_ms, r.human_clicked_at_ms,"
        " EXISTS (SELECT 1 FROM clicks c WHERE c.recipient_id = r.id) FROM recipients r"
        " JOIN links l ON l.content_id = r.content_id AND l.link_index = ?"
        f" WHERE r.id = ? AND r.status = '{Status.SENT}'",
        (link_index, recipient_id),
    ).fetchone()
    if row is None:
        return 0
    topic_id, delivered_at_ms, human_at_ms, clicked_before = row
    conn.execute(
        "INSERT INTO clicks VALUES (?, ?, ?, 1)"
        " ON CONFLICT (recipient_id, link_index) DO UPDATE SET count = clicks.count + 1",
        (recipient_id, link_index, at_ms),
    )
    count_in_topic(conn, topic_id, "clicks")
    metrics.TALLY.clicks += 1
    if not clicked_before:
        count_in_topic(conn, topic_id, "clicked")
    judge(conn, recipient_id, (topic_id, delivered_at_ms, human_at_ms), at_ms, agent, Hit.CLICK)
    return 1


def suppress(conn: Conn, email: str, reason: str, detail: str, now_ms: int, scope: str = "") -> bool:
    """Add the address to the list in `scope` ('' all mail, else a list_id); False when it was there."""
    return bool(
        conn.execute(
            "INSERT INTO suppressions (email, scope, reason, detail, created_at_ms) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (email.strip().lower(), scope, reason, detail, now_ms),
        ).rowcount
    )


def change_suppression(conn: Conn, request: ChangeSuppression, now_ms: int) -> SuppressionChanged:
    if request.reason is None:
        removed = conn.execute("DELETE FROM suppressions WHERE email = ?", (request.email.strip().lower(),)).rowcount
        return SuppressionChanged(request.corr_id, bool(removed))
    return SuppressionChanged(request.corr_id, suppress(conn, request.email, request.reason, "manual", now_ms))


def suppressed_among(conn: Conn, emails: Iterable[str], list_id: str | None) -> set[str]:
    """Which of these addresses (compared lower-cased) may not get mail of `list_id`: those
    suppressed for all mail, and those unsubscribed from that list."""
    lowered = sorted({e.lower() for e in emails})
    if not lowered:
        return set()
    among, addresses = in_list(conn, lowered)
    rows = conn.execute(
        f"SELECT DISTINCT email FROM suppressions WHERE email {among} AND scope IN ('', ?)", (addresses, list_id or "")
    )
    return {row[0] for row in rows}


def suppressed_rows(conn: Conn, rows: Iterable[tuple[int, str, int]]) -> set[int]:
    """Of these (recipient id, address, content id), the ids whose address may not get that
    content's mail: suppressed for all mail, or unsubscribed from the content's list."""
    wanted = [(rid, email.lower(), content_id) for rid, email, content_id in rows]
    if not wanted:
        return set()
    blocked = (
        " JOIN contents c ON c.id = j.content_id WHERE EXISTS (SELECT 1 FROM suppressions s"
        " WHERE s.email = j.email AND s.scope IN ('', COALESCE(c.list_id, '')))"
    )
    if dialect(conn) == SQLITE:
        source = (
            "(SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS email,"
            " json_extract(value, '$[2]') AS content_id FROM json_each(?)) j"
        )
        found = conn.execute(f"SELECT j.id FROM {source}{blocked}", (json.dumps(wanted),))
    else:
        source = "unnest(?::bigint[], ?::text[], ?::bigint[]) AS j(id, email, content_id)"
        found = conn.execute(f"SELECT j.id FROM {source}{blocked}", tuple(map(list, zip(*wanted, strict=True))))
    return {row[0] for row in found}
