"""The addresses a file has shown so far, and the line each first appeared on.

A set in memory would grow with the file; this is SQLite's private temporary database
(the empty file name: on disk, deleted when closed), with a 1 MiB page cache, so a file
of millions of rows is checked for repeats exactly and in bounded memory. One
transaction for the whole file: nothing here needs to survive the process.
"""

from __future__ import annotations

import sqlite3
from types import TracebackType
from typing import Final

CACHE_KIB: Final = 1024


class Seen:
    """`first_line(email, line)`: None the first time an address is met, else the line it was met on."""

    def __init__(self) -> None:
        self.conn = sqlite3.connect("", isolation_level=None)
        self.conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        self.conn.execute("PRAGMA journal_mode = OFF")
        self.conn.execute("PRAGMA synchronous = OFF")
        self.conn.execute("CREATE TABLE seen (email TEXT PRIMARY KEY, line INTEGER NOT NULL) WITHOUT ROWID")
        self.conn.execute("BEGIN")

    def first_line(self, email: str, line: int) -> int | None:
        """Remember `email` at `line` unless it was met before; the earlier line if it was."""
        if self.conn.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (email, line)).rowcount == 1:
            return None
        row = self.conn.execute("SELECT line FROM seen WHERE email = ?", (email,)).fetchone()
        return int(row[0])

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Seen:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
