"""Recipient files: a CSV read row by row, each row checked, each bad one named by its line.

Nothing here holds the file. Rows are read, checked and handed on one at a time, and
the addresses met so far live on disk (`seen.py`), so checking a million rows takes the
memory of checking ten. Send reads the file twice (check everything, then upload) and
both passes come from `checked_rows`, so they cannot disagree.

The format: UTF-8 (a byte-order mark, as Excel writes, is fine), comma-separated, the
first line a header. The `email` column (any case, spaces around it ignored) holds the
address; every other column is the recipient's template data, values as written.
Line numbers are the file's own, the header being line 1, counted where each record
starts, so a quoted value that spans lines still names the line an editor shows. Blank
lines are skipped. Addresses are checked and normalised by the server's own code
(`stages/ingest/addresses.py`), so what passes here is what the server stores.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from io import BufferedReader
from pathlib import Path
from typing import Final, TextIO

from stages.cli.errors import ExitCode, Failure
from stages.cli.seen import Seen
from stages.ingest.addresses import InvalidAddress, normalise

EMAIL_COLUMN: Final = "email"
MAX_LISTED: Final = 1000  # bad rows and repeats kept for a summary; all are counted
MAX_SHOWN_CHARS: Final = 80

# An extra check of a row's data (the send's subject, a suppression's reason): the
# problem in words, or None.
DataCheck = Callable[[dict[str, str]], str | None]


@dataclass(frozen=True, slots=True)
class Columns:
    """Where the address is, and the name of every other column."""

    email: int
    data: tuple[tuple[int, str], ...]  # (index, name)
    count: int

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for _, name in self.data)


@dataclass(frozen=True, slots=True)
class Recipient:
    line: int
    email: str  # normalised
    data: dict[str, str]


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    value: str  # the address as written, shortened
    reason: str

    def describe(self, path: Path) -> str:
        what = f"{self.value!r}: " if self.value else ""
        return f"{path}, line {self.line}: {what}{self.reason}"


@dataclass(frozen=True, slots=True)
class Repeat:
    line: int
    email: str
    first_line: int

    def describe(self, path: Path) -> str:
        return f"{path}, line {self.line}: {self.email} repeats line {self.first_line}; it is sent once"


Checked = Recipient | BadRow | Repeat


@dataclass(slots=True)
class Tally:
    """What a pass over the file found: counts of everything, the first MAX_LISTED problems."""

    columns: Columns
    rows: int = 0
    valid: int = 0
    invalid: int = 0
    repeats: int = 0
    bad: list[BadRow] = field(default_factory=list)
    repeated: list[Repeat] = field(default_factory=list)

    def add(self, row: Checked) -> None:
        self.rows += 1
        match row:
            case Recipient():
                self.valid += 1
            case BadRow():
                self.invalid += 1
                if len(self.bad) < MAX_LISTED:
                    self.bad.append(row)
            case Repeat():
                self.repeats += 1
                if len(self.repeated) < MAX_LISTED:
                    self.repeated.append(row)


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes, read in blocks."""
    with open_bytes(path) as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def read_columns(path: Path) -> Columns:
    """The header's columns; Failure (usage) for a file without a usable header."""
    records = read_records(path)
    try:
        return columns_of(path, next(records, None))
    finally:
        records.close()


def check_file(
    path: Path, data_check: DataCheck | None = None, on_problem: Callable[[Checked], None] | None = None
) -> Tally:
    """One pass: every row checked and counted; `on_problem` sees each bad row and repeat as met."""
    tally = Tally(read_columns(path))
    rows = checked_rows(path, data_check)
    try:
        for row in rows:
            tally.add(row)
            if on_problem is not None and not isinstance(row, Recipient):
                on_problem(row)
    finally:
        rows.close()
    return tally


def recipients(path: Path, data_check: DataCheck | None = None) -> Generator[Recipient, None, None]:
    """The valid rows, each address once, in file order."""
    rows = checked_rows(path, data_check)
    try:
        for row in rows:
            if isinstance(row, Recipient):
                yield row
    finally:
        rows.close()


def checked_rows(path: Path, data_check: DataCheck | None = None) -> Generator[Checked, None, None]:
    """Every row after the header, checked: a Recipient, a BadRow or a Repeat."""
    records = read_records(path)
    try:
        columns = columns_of(path, next(records, None))
        with Seen() as seen:
            for line, cells in records:
                yield check_row(line, cells, columns, seen, data_check)
    finally:
        records.close()


def check_row(line: int, cells: list[str], columns: Columns, seen: Seen, data_check: DataCheck | None) -> Checked:
    """One row: its field count, its address, its data, and whether the address came before."""
    if len(cells) != columns.count:
        value = cells[columns.email].strip() if columns.email < len(cells) else ""
        return BadRow(line, short(value), f"{len(cells)} fields where the header has {columns.count}")
    raw = cells[columns.email].strip()
    if not raw:
        return BadRow(line, "", "no address in the email column")
    try:
        email = normalise(raw)
    except InvalidAddress as invalid:
        return BadRow(line, short(raw), f"not a valid address: {invalid}")
    data = {name: cells[index] for index, name in columns.data}
    refused = data_check(data) if data_check is not None else None
    if refused is not None:
        return BadRow(line, short(raw), refused)
    first = seen.first_line(email, line)
    return Recipient(line, email, data) if first is None else Repeat(line, email, first)


def columns_of(path: Path, header: tuple[int, list[str]] | None) -> Columns:
    """The header's columns: exactly one `email`, and other names unique and not blank."""
    if header is None:
        raise Failure(ExitCode.USAGE, f"{path}: the file is empty; it needs a header line with an email column")
    names = [cell.strip() for cell in header[1]]
    emails = [index for index, name in enumerate(names) if name.lower() == EMAIL_COLUMN]
    if not emails:
        listed = ", ".join(repr(name) for name in names[:10]) + (", ..." if len(names) > 10 else "")
        raise Failure(ExitCode.USAGE, f"{path}, line 1: no email column (the header has {listed})")
    if len(emails) > 1:
        raise Failure(ExitCode.USAGE, f"{path}, line 1: more than one email column")
    data = tuple((index, name) for index, name in enumerate(names) if index != emails[0])
    if any(not name for _, name in data):
        raise Failure(ExitCode.USAGE, f"{path}, line 1: a column has no name")
    repeated = [name for name, times in Counter(name for _, name in data).items() if times > 1]
    if repeated:
        raise Failure(ExitCode.USAGE, f"{path}, line 1: the column {repeated[0]!r} appears twice")
    return Columns(emails[0], data, len(names))


def read_records(path: Path) -> Generator[tuple[int, list[str]], None, None]:
    """(the line a record starts on, its cells) for every record that is not blank."""
    with open_text(path) as handle:
        reader = csv.reader(handle)
        start = 1
        try:
            for cells in reader:
                if any(cell.strip() for cell in cells):
                    yield start, cells
                start = reader.line_num + 1
        except csv.Error as problem:
            raise Failure(ExitCode.USAGE, f"{path}, line {start}: not valid CSV ({problem})") from None
        except UnicodeDecodeError:
            raise Failure(ExitCode.USAGE, f"{path}, line {start}: not UTF-8 text; save the file as CSV UTF-8") from None


def open_bytes(path: Path) -> BufferedReader:
    """The file opened for reading bytes; Failure (usage) naming the problem if it cannot be."""
    try:
        return path.open("rb")
    except OSError as problem:
        raise unreadable(path, problem) from None


def open_text(path: Path) -> TextIO:
    """The file opened as CSV text (UTF-8, a byte-order mark dropped); Failure if it cannot be."""
    try:
        return path.open(encoding="utf-8-sig", newline="")
    except OSError as problem:
        raise unreadable(path, problem) from None


def unreadable(path: Path, problem: OSError) -> Failure:
    return Failure(ExitCode.USAGE, f"{path}: cannot read it ({reason_of(problem)})")


def reason_of(problem: OSError) -> str:
    """`no such file or directory`, not `[Errno 2] No such file or directory: 'x'`."""
    return (problem.strerror or str(problem)).lower()


def short(value: str) -> str:
    return value if len(value) <= MAX_SHOWN_CHARS else value[: MAX_SHOWN_CHARS - 3] + "..."
