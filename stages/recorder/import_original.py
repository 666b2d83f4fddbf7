"""`supervisor.py import-original PATH`: the original server's rows, brought into our database.

An offline command (the server must be stopped; it reads the database when it starts,
so imported pending rows are sent then). Each request enters as the API would have
stored it (pending, counted as `store_messages` counts), then moves to its status by the
same UPDATEs the recorder makes, so the triggers count it; each result becomes an event
applied by the recorder's own `apply_event`. Counters therefore end as if the rows had
gone through this server. One transaction; what was imported is recorded per source
file, so importing the same file again brings only what is new in it.
It lives beside the recorder (not in pipeline/db) because it writes through the recorder's functions.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pipeline.clock import now_ms
from pipeline.db.import_original import (
    PROCESSED,
    OriginalContent,
    OriginalFile,
    OriginalRequest,
    OriginalResult,
    Unrecognised,
    open_original,
    our_status,
)
from pipeline.db.original import OriginalDatabase
from pipeline.db.schema import open_writer
from pipeline.db.status import Status
from pipeline.messages import SesEvent
from pipeline.ses_events import KINDS, parse
from stages.recorder.events import Matched, apply_event

# What was imported from which file; kind 'request' (original id -> recipient id) or 'content'.
IMPORTED_DDL: Final = """
    CREATE TABLE IF NOT EXISTS imported_original (
        source_fingerprint TEXT NOT NULL,
        kind TEXT NOT NULL,
        original_id TEXT NOT NULL,
        new_id INTEGER NOT NULL,
        PRIMARY KEY (source_fingerprint, kind, original_id)
    ) WITHOUT ROWID
"""
ORDER: Final = (Status.PENDING, Status.SENT, Status.FAILED, Status.CANCELLED, Status.UNKNOWN)
FAILED_CODE: Final = "ImportedFailure"
NO_CONTENT_CODE: Final = "ImportedWithoutContent"


class Refused(Exception):
    """The import cannot be done as asked (one line, for the operator)."""


@dataclass(slots=True)
class Summary:
    statuses: Counter[str] = field(default_factory=Counter)
    events: int = 0
    unmatched_events: int = 0
    contents: int = 0
    imported_before: int = 0
    kept_unknown: int = 0  # Processed rows not resent under --resend-processed: SES had accepted them

    def line(self) -> str:
        total = sum(self.statuses.values())
        parts = [f"{self.statuses[s]} {s}" for s in ORDER if self.statuses[s]]
        text = f"imported {total} recipients" + (f": {', '.join(parts)}" if parts else "")
        text += f"; {self.events} events"
        if self.unmatched_events:
            text += f" ({self.unmatched_events} matched no request, kept unlinked)"
        text += f"; {self.contents} contents"
        if self.kept_unknown:
            text += f"; {self.kept_unknown} processed rows kept as unknown, not resent: SES had accepted them"
        if self.imported_before:
            text += f"; {self.imported_before} recipients were imported from this file before"
        return text


@dataclass(frozen=True, slots=True)
class Move:
    """Where an imported row goes after entering as pending."""

    recipient_id: int
    status: Status
    message_id: str | None
    sent_at_ms: int | None
    error_code: str | None
    error_message: str | None


def import_file(source: Path, target: Path, resend_processed: bool = False) -> Summary:
    """Import the original's database at `source` into ours at `target`, in one transaction."""
    if source.resolve() == target.resolve() or (
        source.exists() and target.exists() and os.path.samefile(source, target)
    ):
        raise Refused(f"{source} is also DATABASE_URL: point DATABASE_URL at a new file to import into")
    original = open_original(source)
    try:
        conn = open_writer(target)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(IMPORTED_DDL)
            summary = Importer(conn, original, resend_processed, now_ms()).run()
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
    finally:
        original.close()
    return summary


class Importer:
    def __init__(self, conn: sqlite3.Connection, original: OriginalFile, resend: bool, now: int) -> None:
        self.conn, self.original, self.resend, self.now = conn, original, resend, now
        self.source = original.fingerprint
        self.summary = Summary()
        self.recipients = self._imported("request")
        self.contents = self._imported("content")
        self.posted: dict[str, list[int]] = {}  # topic -> [count, first posted, last posted]

    def run(self) -> Summary:
        evident = self.original.requests_with_results() if self.resend else set()
        moves = [self.add(request, evident) for request in self.original.requests()]
        self.count_posted()
        self.move([m for m in moves if m is not None and m.status != Status.PENDING])
        for result in self.original.results():
            self.add_result(result)
        return self.summary

    def _imported(self, kind: str) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT original_id, new_id FROM imported_original WHERE source_fingerprint = ? AND kind = ?",
            (self.source, kind),
        )
        return dict(rows.fetchall())

    def _record(self, kind: str, original_id: str, new_id: int) -> None:
        self.conn.execute("INSERT INTO imported_original VALUES (?, ?, ?, ?)", (self.source, kind, original_id, new_id))

    def add(self, request: OriginalRequest, evident: set[int]) -> Move | None:
        """Store one request as pending, as the API would have; say where it moves next."""
        if str(request.id) in self.recipients:
            self.summary.imported_before += 1
            return None
        content_id, has_content = self.content_id(request)
        status = our_status(request.status, self.resend)
        code = FAILED_CODE if status == Status.FAILED else None
        message = request.error
        if status == Status.PENDING and request.status == PROCESSED and (request.message_id or request.id in evident):
            status = Status.UNKNOWN
            self.summary.kept_unknown += 1
        if status == Status.PENDING and not has_content:
            status, code, message = Status.FAILED, NO_CONTENT_CODE, "its content is missing from the original database"
        created = request.created_at_ms or request.scheduled_at_ms or self.now
        new_id: int = self.conn.execute(
            "INSERT INTO recipients (content_id, topic_id, email, status, due_at_ms, created_at_ms)"
            f" VALUES (?, ?, ?, '{Status.PENDING}', ?, ?) RETURNING id",
            (content_id, request.topic_id, request.email, request.scheduled_at_ms or created, created),
        ).fetchone()[0]
        self._record("request", str(request.id), new_id)
        self.recipients[str(request.id)] = new_id
        tally = self.posted.setdefault(request.topic_id, [0, created, created])
        tally[:] = [tally[0] + 1, min(tally[1], created), max(tally[2], created)]
        self.summary.statuses[status] += 1
        sent_at = (request.updated_at_ms or created) if status == Status.SENT else None
        return Move(new_id, status, request.message_id, sent_at, code, message if code else None)

    def content_id(self, request: OriginalRequest) -> tuple[int, bool]:
        """Our content for the request's, stored once; a placeholder when theirs is gone."""
        if request.content_key in self.contents:
            return self.contents[request.content_key], True
        found = request.inline or self.original.content(request.content_key)
        content = found or OriginalContent("", "", None)
        content_id: int = self.conn.execute(
            "INSERT INTO contents (subject, html, created_at_ms) VALUES (?, ?, ?) RETURNING id",
            (content.subject, content.html, content.created_at_ms or request.created_at_ms or self.now),
        ).fetchone()[0]
        self._record("content", request.content_key, content_id)
        self.contents[request.content_key] = content_id
        self.summary.contents += 1
        return content_id, found is not None

    def count_posted(self) -> None:
        """What store_messages counts for new rows (the triggers count every later change)."""
        for topic_id, (count, first, last) in self.posted.items():
            self.conn.execute(
                f"INSERT INTO topic_counts VALUES (?, '{Status.PENDING}', ?)"
                " ON CONFLICT (topic_id, name) DO UPDATE SET n = n + excluded.n",
                (topic_id, count),
            )
            self.conn.execute(
                "INSERT INTO topics (topic_id, first_posted_at_ms, last_posted_at_ms, total) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (topic_id) DO UPDATE SET"
                " first_posted_at_ms = MIN(first_posted_at_ms, excluded.first_posted_at_ms),"
                " last_posted_at_ms = MAX(last_posted_at_ms, excluded.last_posted_at_ms),"
                " total = total + excluded.total",
                (topic_id, first, last, count),
            )

    def move(self, moves: list[Move]) -> None:
        """Pending -> the row's status, through the recorder's own column changes."""
        self.conn.executemany(
            "UPDATE recipients SET status = ?, message_id = ?, sent_at_ms = ?, error_code = ?, error_message = ?"
            " WHERE id = ?",
            ((m.status, m.message_id, m.sent_at_ms, m.error_code, m.error_message, m.recipient_id) for m in moves),
        )

    def add_result(self, result: OriginalResult) -> None:
        """A result becomes an event, its raw text kept once, applied as a live one is."""
        sns_id = f"original:{self.source}:{result.id}"
        received = result.created_at_ms or self.now
        if not self.conn.execute(
            "INSERT OR IGNORE INTO sns_messages (sns_message_id, raw, received_at_ms) VALUES (?, ?, ?)",
            (sns_id, result.raw, received),
        ).rowcount:
            return  # imported before
        recipient, message_id = self.recipient(result.request_id)
        event = event_of(result, sns_id, recipient, message_id)
        inserted = self.conn.execute(
            "INSERT OR IGNORE INTO events (sns_message_id, kind, subtype, email, ses_message_id, recipient_id,"
            " occurred_at_ms, received_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (sns_id, event.kind, event.subtype, event.email, event.ses_message_id,
             recipient.id if recipient else None, event.occurred_at_ms, received),
        ).fetchone()  # fmt: skip
        if inserted is None:
            return
        self.summary.events += 1
        if recipient is None:
            self.summary.unmatched_events += 1
        else:
            apply_event(self.conn, recipient, event, received)

    def recipient(self, original_id: int) -> tuple[Matched | None, str | None]:
        new_id = self.recipients.get(str(original_id))
        if new_id is None:
            return None, None
        row = self.conn.execute("SELECT id, email, topic_id, message_id FROM recipients WHERE id = ?", (new_id,))
        found = row.fetchone()
        return Matched(found[0], found[1], found[2]), found[3]


def event_of(result: OriginalResult, sns_id: str, recipient: Matched | None, message_id: str | None) -> SesEvent:
    """The event a result records: its kind from the stored name, its details from the raw SNS Message."""
    name = result.status.strip()
    kind = KINDS.get(name, name.lower())
    try:
        parsed = [e for e in parse(sns_id, result.raw) or [] if e.kind == kind]
    except ValueError:
        parsed = []
    if recipient is not None:  # the original sent one address per message; prefer it if the raw names several
        parsed.sort(key=lambda e: e.email.strip().lower() != recipient.email.lower())
    pick = parsed[0] if parsed else None
    if pick is not None:
        return SesEvent(
            sns_id,
            kind,
            pick.subtype,
            pick.email,
            message_id or pick.ses_message_id,
            None,
            pick.occurred_at_ms or result.created_at_ms or 0,
        )
    subtype = "Undetermined/Undetermined" if kind == "bounce" else ""  # what parse says when SES gives no type
    email = recipient.email if recipient else ""
    return SesEvent(sns_id, kind, subtype, email, message_id or "", None, result.created_at_ms or 0)


def main(args: list[str], target: Path) -> int:
    """The command line; exit 2 when the file is refused (nothing written), 1 when the write fails."""
    parser = argparse.ArgumentParser(
        prog="supervisor.py import-original",
        description="Import the original aws-ses-sender's SQLite database into this server's (DATABASE_URL),"
        " in one transaction. Stop the server first; its pending rows are sent when the server starts."
        " Importing the same file again imports only what is new in it.",
    )
    parser.add_argument("path", type=Path, help="the original server's database file (opened read-only)")
    parser.add_argument(
        "--resend-processed",
        action="store_true",
        help="queue 'Processed' rows (status 1: maybe sent, maybe not) again instead of importing them as unknown",
    )
    options = parser.parse_args(args)
    try:
        summary = import_file(options.path, target, options.resend_processed)
    except (Unrecognised, Refused, OriginalDatabase) as problem:
        print(f"ses-sender: import-original: {problem}; nothing was imported", file=sys.stderr)
        return 2
    except (sqlite3.Error, OSError) as problem:
        print(
            f"ses-sender: import-original: cannot write {target}: {problem} (is the server running?);"
            " nothing was imported",
            file=sys.stderr,
        )
        return 1
    print(summary.line())
    return 0
