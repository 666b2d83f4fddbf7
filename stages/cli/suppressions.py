"""`ses-sender suppressions import` and `export`: the suppression list to and from CSV.

The API adds one address per request (`POST /v1/suppressions`; 201 added, 200 already
there) and lists them in pages in address order (`GET /v1/suppressions?after=`), so
import posts row by row with a progress meter, and export streams page by page to the
file: neither holds the list in memory. Import checks the whole file first, as send
does: a bad row is named by its line and nothing is imported unless --skip-invalid.

The API adds suppressions for all mail only (it has no `scope` field): a row whose
`scope` column names a list is imported for all mail, which suppresses more, not less,
and import says how many rows that was.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

from rich.console import Console

from stages.cli import csvfile
from stages.cli.client import Client
from stages.cli.csvfile import BadRow, Checked, DataCheck
from stages.cli.errors import ExitCode, Failure
from stages.cli.output import print_json, say
from stages.cli.progress import meter
from stages.ingest.schemas import MAX_REASON_CHARS

PAGE: Final = 1000  # the API's largest `limit`
EXPORT_COLUMNS: Final = ("email", "reason", "scope", "detail", "created_at")
DEFAULT_REASON: Final = "manual"


def column(names: tuple[str, ...], wanted: str) -> str | None:
    return next((name for name in names if name.lower() == wanted), None)


def reason_check(reason_column: str | None) -> DataCheck | None:
    if reason_column is None:
        return None

    def check(data: dict[str, str]) -> str | None:
        if len(data[reason_column].strip()) > MAX_REASON_CHARS:
            return f"the reason is over {MAX_REASON_CHARS} characters"
        return None

    return check


def import_file(
    path: Path,
    reason: str,
    *,
    skip_invalid: bool,
    dry_run: bool,
    as_json: bool,
    client: Client,
    out: Console,
    err: Console,
) -> int:
    """Check the file, then add every address; the exit code, or Failure."""
    if not reason.strip() or len(reason) > MAX_REASON_CHARS:
        raise Failure(ExitCode.USAGE, f"--reason must be 1 to {MAX_REASON_CHARS} characters")
    names = csvfile.read_columns(path).names
    reason_column, scope_column = column(names, "reason"), column(names, "scope")
    check = reason_check(reason_column)

    def show(row: Checked) -> None:
        if isinstance(row, BadRow):
            say(err, row.describe(path))

    tally = csvfile.check_file(path, check, on_problem=show)
    summary: dict[str, Any] = {"file": str(path), "rows": tally.rows, "valid": tally.valid, "invalid": tally.invalid}
    summary |= {"repeats": tally.repeats, "dry_run": dry_run, "added": 0, "already": 0, "scoped_as_all_mail": 0}
    where = err if as_json else out
    say(where, f"{path}: {tally.rows:,} row(s): {tally.valid:,} to import" + skipped(tally.invalid, skip_invalid))
    if tally.invalid and not skip_invalid:
        if as_json:
            print_json(summary)
        raise Failure(
            ExitCode.USAGE,
            f"{path}: {tally.invalid:,} invalid row(s), named above; nothing was imported. "
            "Fix them, or pass --skip-invalid to import the rest",
        )
    if not dry_run:
        post_all(path, check, reason, reason_column, scope_column, tally.valid, client, err, summary)
        say(where, f"suppressed {summary['added']:,} new address(es); {summary['already']:,} were already suppressed")
        if summary["scoped_as_all_mail"]:
            scoped = summary["scoped_as_all_mail"]
            say(err, f"note: {scoped:,} row(s) named a list in `scope`; the API suppresses them for all mail")
    if as_json:
        print_json(summary)
    return ExitCode.OK


def skipped(invalid: int, skip_invalid: bool) -> str:
    if not invalid:
        return ""
    return f", {invalid:,} invalid" + (" (skipped)" if skip_invalid else "")


def post_all(
    path: Path,
    check: DataCheck | None,
    reason: str,
    reason_column: str | None,
    scope_column: str | None,
    total: int,
    client: Client,
    err: Console,
    summary: dict[str, Any],
) -> None:
    """POST each valid address once, counting what was new and what was there already."""
    bar = meter("import", err)
    rows = csvfile.recipients(path, check)
    try:
        for done, row in enumerate(rows, start=1):
            given = row.data[reason_column].strip() if reason_column else ""
            body = json.dumps({"email": row.email, "reason": given or reason}).encode()
            answer = client.post("/v1/suppressions", body)
            summary["added" if answer.status == 201 else "already"] += 1
            if scope_column and row.data[scope_column].strip():
                summary["scoped_as_all_mail"] += 1
            bar.update(done, total)
    except KeyboardInterrupt:
        raise Failure(
            ExitCode.INTERRUPTED,
            f"interrupted after {summary['added'] + summary['already']:,} address(es); "
            "importing again is safe (an address already there stays as it is)",
        ) from None
    finally:
        rows.close()
        bar.close()


def pages(client: Client) -> Iterator[dict[str, Any]]:
    """Every suppression entry, in address order, a page at a time."""
    after = ""
    while True:
        query = {"limit": str(PAGE), **({"after": after} if after else {})}
        page = client.get("/v1/suppressions", query)
        yield from page.get("suppressions", [])
        after = page.get("next_after") or ""
        if not after:
            return


def export(path: Path | None, *, as_json: bool, client: Client, err: Console) -> int:
    """Every entry to `path` (stdout without one): CSV, or a JSON array with --json."""
    count = 0
    with destination(path) as handle:
        if as_json:
            handle.write("[")
            for count, entry in enumerate(pages(client), start=1):
                handle.write(("," if count > 1 else "") + "\n  " + json.dumps(entry, ensure_ascii=False))
            handle.write("\n]\n")
        else:
            writer = csv.writer(handle)
            writer.writerow(EXPORT_COLUMNS)
            for entry in pages(client):
                writer.writerow(export_row(entry))
                count += 1
    if path is not None:
        say(err, f"exported {count:,} suppression(s) to {path}")
    return ExitCode.OK


def export_row(entry: dict[str, Any]) -> list[str]:
    created = entry.get("created_at_ms")
    when = datetime.fromtimestamp(created / 1000, UTC).isoformat(timespec="seconds") if isinstance(created, int) else ""
    return [str(entry.get(name) or "") for name in ("email", "reason", "scope", "detail")] + [when]


@contextmanager
def destination(path: Path | None) -> Iterator[IO[str]]:
    """The file to write (replaced only when the export completes), or stdout."""
    if path is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as handle:
            yield handle
        partial.replace(path)
    except OSError as problem:
        raise Failure(ExitCode.USAGE, f"{path}: cannot write it ({csvfile.reason_of(problem)})") from None
    finally:
        partial.unlink(missing_ok=True)
