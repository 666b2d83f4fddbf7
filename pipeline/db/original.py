"""Recognising the original server's database (lee-lou2/aws-ses-sender) where ours should be.

Both servers default to `sqlite://sqlite3.db`, so a drop-in start finds their file. Adding
our tables beside theirs would leave their pending rows unsent and unseen; refusing to
start, with the command that brings them over, is the only safe answer.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Final

# R-new has email_contents, email_requests and email_results; R-old has no email_contents.
# `recipients` is ours: every migrated file has it.
OURS: Final = "recipients"
IMPORT_COMMAND: Final = "python supervisor.py import-original"


class OriginalDatabase(Exception):
    """The database file is the original server's, not yet imported into ours."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path} holds the original aws-ses-sender's tables, not ours: point DATABASE_URL at a new file"
            f" and run `{IMPORT_COMMAND} {path}` with the server stopped, then start it"
        )


def table_names(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def is_original(conn: sqlite3.Connection) -> bool:
    """Their requests table is there and ours is not (R-new and R-old alike)."""
    tables = table_names(conn)
    return "email_requests" in tables and OURS not in tables


def refuse_original(path: Path) -> None:
    """Raise OriginalDatabase if `path` is the original's database; look without changing it.

    Read-only, so their file is not even switched to WAL. A file SQLite cannot read is left
    for the writer to report in its own words.
    """
    if not path.is_file():
        return
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return
    try:
        found = is_original(conn)
    except sqlite3.Error:
        return
    finally:
        conn.close()
    if found:
        raise OriginalDatabase(path)
