"""The CLI's pure parts, in-process: reading and checking CSV files (line numbers, repeats,
bounded memory), and the progress meters."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import pytest
from rich.console import Console

from stages.cli import csvfile
from stages.cli.csvfile import BadRow, Recipient, Repeat
from stages.cli.errors import ExitCode, Failure
from stages.cli.progress import Bars, Lines, Rate, duration, eta_s
from stages.cli.seen import Seen
from tests.cli.files import big_file


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def rows_of(path: Path) -> list[csvfile.Checked]:
    return list(csvfile.checked_rows(path))


def test_each_row_is_named_by_the_line_it_starts_on(tmp_path: Path) -> None:
    # Given: a quoted value over two lines and a blank line before the bad rows
    path = write(
        tmp_path / "people.csv",
        'email,note\nada@example.com,"two\nlines"\n\nbob@,x\n  ,y\nalan@example.com,z,extra\n',
    )
    rows = rows_of(path)
    assert [type(row) for row in rows] == [Recipient, BadRow, BadRow, BadRow]
    assert [row.line for row in rows] == [2, 5, 6, 7]
    bad = [row for row in rows if isinstance(row, BadRow)]
    assert bad[0].value == "bob@" and "not a valid address" in bad[0].reason
    assert bad[1].reason == "no address in the email column"
    assert bad[2].reason == "3 fields where the header has 2"
    assert bad[0].describe(path) == f"{path}, line 5: 'bob@': {bad[0].reason}"


def test_the_email_column_is_found_in_any_case_and_the_rest_is_data(tmp_path: Path) -> None:
    path = write(tmp_path / "p.csv", "\ufeff First_Name , EMAIL ,plan\nAda,  ada@EXAMPLE.com  ,pro\n")
    columns = csvfile.read_columns(path)
    assert columns.email == 1 and columns.names == ("First_Name", "plan")
    assert rows_of(path) == [Recipient(2, "ada@example.com", {"First_Name": "Ada", "plan": "pro"})]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "the file is empty"),
        ("name,plan\nAda,pro\n", "line 1: no email column (the header has 'name', 'plan')"),
        ("email,Email\n", "line 1: more than one email column"),
        ("email,plan,plan\n", "line 1: the column 'plan' appears twice"),
        ("email,,plan\n", "line 1: a column has no name"),
    ],
)
def test_a_file_without_a_usable_header_is_a_usage_error(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path / "p.csv", text)
    with pytest.raises(Failure) as caught:
        csvfile.check_file(path)
    assert caught.value.code == ExitCode.USAGE and problem in caught.value.message


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "p.csv", "email,name\nada@example.com,Ada\nbob@example.com,Bj\xf6rn\n", encoding="latin-1")
    with pytest.raises(Failure) as caught:
        csvfile.check_file(path)
    assert caught.value.code == ExitCode.USAGE and "not UTF-8" in caught.value.message


def test_a_repeat_names_the_line_it_repeats_and_is_not_a_recipient_again(tmp_path: Path) -> None:
    path = write(tmp_path / "p.csv", "email\nada@example.com\nalan@example.com\n ada@EXAMPLE.COM\n")
    rows = rows_of(path)
    assert rows[2] == Repeat(4, "ada@example.com", 2)
    assert [r.email for r in csvfile.recipients(path)] == ["ada@example.com", "alan@example.com"]
    tally = csvfile.check_file(path)
    assert (tally.rows, tally.valid, tally.invalid, tally.repeats) == (3, 2, 0, 1)


def test_a_data_check_refuses_the_row_it_fails(tmp_path: Path) -> None:
    path = write(tmp_path / "p.csv", "email,reason\nada@example.com,ok\nalan@example.com,bad\n")
    rows = list(csvfile.checked_rows(path, lambda data: "no" if data["reason"] == "bad" else None))
    assert isinstance(rows[0], Recipient) and rows[1] == BadRow(3, "alan@example.com", "no")


def test_problems_are_reported_as_they_are_met_and_counted(tmp_path: Path) -> None:
    path = write(tmp_path / "p.csv", "email\nbad1\nada@example.com\nbad2\nada@example.com\n")
    seen: list[int] = []
    tally = csvfile.check_file(path, on_problem=lambda row: seen.append(row.line))
    assert seen == [2, 4, 5] and tally.invalid == 2 and [b.line for b in tally.bad] == [2, 4]


def test_seen_is_exact_and_keeps_the_first_line() -> None:
    with Seen() as seen:
        assert seen.first_line("a@example.com", 2) is None
        assert seen.first_line("b@example.com", 3) is None
        assert seen.first_line("a@example.com", 9) == 2
        assert seen.first_line("a@example.com", 10) == 2


def test_checking_50000_rows_takes_bounded_memory(tmp_path: Path) -> None:
    # Given: a 50,000-row file of about 10 MB, and the address code already warmed up
    path = big_file(tmp_path / "big.csv", 50_000)
    assert path.stat().st_size > 8_000_000
    csvfile.check_file(big_file(tmp_path / "warm.csv", 100))
    # When: it is checked, with Python's allocations traced
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tally = csvfile.check_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Then: every row was checked, and memory grew by a small fraction of the file
    assert (tally.rows, tally.valid) == (50_000, 50_000)
    assert peak - before < 2_000_000, f"peak grew by {peak - before:,} bytes"


def test_lines_are_written_at_most_every_interval_and_the_last_state_at_close() -> None:
    written: list[str] = []
    now = [0.0]
    lines = Lines("upload", written.append, every_s=2.0, clock=lambda: now[0])
    for done in range(1, 6):
        lines.update(done, 5, f"chunk {done}")
        now[0] += 0.9
    lines.close()
    assert written == ["upload: 1/5 chunk 1", "upload: 4/5 chunk 4", "upload: 5/5 chunk 5"]


def test_bars_draw_on_a_terminal() -> None:
    screen = io.StringIO()
    bars = Bars("sending", Console(file=screen, force_terminal=True, width=100))
    bars.update(3, 3, "sent 3")
    bars.close()
    assert "sending" in screen.getvalue() and "3/3" in screen.getvalue()


def test_rate_spans_its_window_and_eta_follows() -> None:
    rate = Rate(window_s=10)
    assert rate.per_s() is None
    for t in range(0, 31):
        rate.add(float(t), t * 5)
    assert rate.per_s() == pytest.approx(5.0)
    assert eta_s(100, rate.per_s()) == pytest.approx(20.0)
    assert eta_s(0, None) == 0.0 and eta_s(10, None) is None and eta_s(10, 0.0) is None
    assert (duration(45), duration(185), duration(7620)) == ("45s", "3m 05s", "2h 07m")
