"""Reading the original server's database for `supervisor.py import-original`.

Pure reading and mapping, no writes: which variant the file is (R-new with
`email_contents`, or R-old with subject and content inline on every request), its rows
in our terms, and a fingerprint that names the file across imports. The writing side,
which must apply events exactly as the recorder does, is stages/recorder/import_original.py.
Reference: shared/reference/original-server.md sections 4.1 and 4.2.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from pipeline.db.status import Status

# The columns we read; the original's files may have more (deleted_at is never used).
REQUEST_COLUMNS: Final = frozenset(
    {"id", "topic_id", "message_id", "email", "scheduled_at", "status", "error", "created_at", "updated_at"}
)
RESULT_COLUMNS: Final = frozenset({"id", "request_id", "status", "raw", "created_at"})
CONTENT_COLUMNS: Final = frozenset({"id", "subject", "content", "created_at"})
R_NEW: Final = "R-new"
R_OLD: Final = "R-old"

# 0 Created, 1 Processed, 2 Sent, 3 Failed, 4 Stopped; anything else showed as "Unknown".
CREATED, PROCESSED, SENT, FAILED, STOPPED = range(5)
STATUSES: Final = {CREATED: Status.PENDING, SENT: Status.SENT, FAILED: Status.FAILED, STOPPED: Status.CANCELLED}


class Unrecognised(Exception):
    """The file is not one of the original server's databases (one line, for the operator)."""


@dataclass(frozen=True, slots=True)
class OriginalContent:
    subject: str
    html: str
    created_at_ms: int | None


@dataclass(frozen=True, slots=True)
class OriginalRequest:
    """One `email_requests` row, its times read as the UTC the original wrote them in."""

    id: int
    topic_id: str
    email: str
    content_key: str  # R-new: the content's id; R-old: a digest of the inline subject and content
    status: int | None
    message_id: str | None
    error: str | None
    scheduled_at_ms: int | None
    created_at_ms: int | None
    updated_at_ms: int | None
    inline: OriginalContent | None  # R-old only


@dataclass(frozen=True, slots=True)
class OriginalResult:
    """One `email_results` row: an SES event name and its raw SNS Message (NULL for opens)."""

    id: int
    request_id: int
    status: str
    raw: str
    created_at_ms: int | None


def our_status(code: int | None, resend_processed: bool) -> Status:
    """Processed rows may or may not have gone out: 'unknown', unless the operator says resend."""
    if code == PROCESSED:
        return Status.PENDING if resend_processed else Status.UNKNOWN
    return STATUSES.get(code, Status.UNKNOWN) if code is not None else Status.UNKNOWN


def millis(value: Any) -> int | None:
    """'YYYY-MM-DD HH:MM:SS' (datetime('now'), so UTC) as epoch ms; None when unreadable."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    except (ValueError, OverflowError, OSError):
        return None


class OriginalFile:
    """The original's file, open read-only."""

    def __init__(self, conn: sqlite3.Connection, variant: str) -> None:
        self.conn = conn
        self.variant = variant
        self.fingerprint = fingerprint(conn, variant)

    def close(self) -> None:
        self.conn.close()

    def requests(self) -> Iterator[OriginalRequest]:
        inline = "subject, content" if self.variant == R_OLD else "content_id, NULL"
        rows = self.conn.execute(
            "SELECT id, topic_id, email, status, message_id, error, scheduled_at, created_at, updated_at,"
            f" {inline} FROM email_requests ORDER BY id"
        )
        for row in rows:
            content = None
            if self.variant == R_OLD:
                content = OriginalContent(str(row[9] or ""), str(row[10] or ""), millis(row[7]))
                key = hashlib.sha256(f"{content.subject}\0{content.html}".encode()).hexdigest()
            else:
                key = str(row[9])
            yield OriginalRequest(
                id=int(row[0]),
                topic_id=str(row[1] or ""),
                email=str(row[2] or ""),
                content_key=key,
                status=_int_or_none(row[3]),
                message_id=str(row[4]) if row[4] else None,
                error=str(row[5]) if row[5] is not None else None,
                scheduled_at_ms=millis(row[6]),
                created_at_ms=millis(row[7]),
                updated_at_ms=millis(row[8]),
                inline=content,
            )

    def content(self, key: str) -> OriginalContent | None:
        """An R-new content by its id (R-old requests carry theirs)."""
        row = self.conn.execute("SELECT subject, content, created_at FROM email_contents WHERE id = ?", (key,))
        found = row.fetchone()
        return OriginalContent(str(found[0] or ""), str(found[1] or ""), millis(found[2])) if found else None

    def results(self) -> Iterator[OriginalResult]:
        rows = self.conn.execute("SELECT id, request_id, status, raw, created_at FROM email_results ORDER BY id")
        for row in rows:
            yield OriginalResult(int(row[0]), int(row[1] or 0), str(row[2] or ""), str(row[3] or ""), millis(row[4]))

    def requests_with_results(self) -> set[int]:
        return {int(row[0]) for row in self.conn.execute("SELECT DISTINCT request_id FROM email_results")}


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def open_original(path: Path) -> OriginalFile:
    """Open `path` read-only and recognise it, or raise Unrecognised saying why."""
    if not path.is_file():
        raise Unrecognised(f"{path}: no such file")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as problem:
        raise Unrecognised(f"{path}: cannot open it: {problem}") from problem
    try:
        return OriginalFile(conn, recognise(conn, path))
    except sqlite3.Error as problem:
        conn.close()
        raise Unrecognised(f"{path} is not an SQLite database the original server wrote ({problem})") from problem
    except Unrecognised:
        conn.close()
        raise


def recognise(conn: sqlite3.Connection, path: Path) -> str:
    """R-new (email_contents + content_id) or R-old (subject and content on each request)."""
    tables = {name: _columns(conn, name) for name in ("email_requests", "email_results", "email_contents")}
    if not tables["email_requests"] or not tables["email_results"]:
        raise Unrecognised(f"{path} is not the original aws-ses-sender's database: no email_requests/email_results")
    new = {"email_requests": REQUEST_COLUMNS | {"content_id"}, "email_results": RESULT_COLUMNS}
    new["email_contents"] = CONTENT_COLUMNS
    old = {"email_requests": REQUEST_COLUMNS | {"subject", "content"}, "email_results": RESULT_COLUMNS}
    for variant, needs in ((R_NEW, new), (R_OLD, old)):
        if not _lacking(tables, needs):
            return variant
    lacking = _lacking(tables, new if "content_id" in tables["email_requests"] else old)
    raise Unrecognised(f"{path} looks like the original's database but lacks {', '.join(lacking)}")


def _lacking(tables: dict[str, set[str]], needs: dict[str, frozenset[str]]) -> list[str]:
    return [f"{table}.{column}" for table, columns in needs.items() for column in sorted(columns - tables[table])]


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")}


def fingerprint(conn: sqlite3.Connection, variant: str) -> str:
    """Names this file across imports: its first request and content, which nothing rewrites.

    Not a hash of the whole file, so a file the original kept writing to after an import
    is still the same file, and a second import brings only its new rows.
    """
    first = conn.execute("SELECT id, topic_id, email, created_at FROM email_requests ORDER BY id LIMIT 1").fetchone()
    content = None
    if variant == R_NEW:
        content = conn.execute("SELECT id, created_at FROM email_contents ORDER BY id LIMIT 1").fetchone()
    return hashlib.sha256(repr((variant, first, content)).encode()).hexdigest()[:16]
