"""Progress for the operator: Rich bars on a terminal, plain lines anywhere else.

Both kinds are `Meter`s and take the same calls, so a command reports progress without
knowing where its output goes. Progress goes to stderr, leaving stdout to the results
(`--json` output stays parseable). On a non-terminal (a pipe, a log file, CI) a line is
written at most every `PLAIN_EVERY_S`, plus the last state when the meter closes.
`Rate` and `eta_s` are the pure parts: they take the time as an argument.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

PLAIN_EVERY_S: Final = 2.0
RATE_WINDOW_S: Final = 30.0


class Meter(Protocol):
    def update(self, done: int, total: int, detail: str = "") -> None: ...

    def close(self) -> None: ...


def meter(label: str, console: Console, every_s: float = PLAIN_EVERY_S) -> Meter:
    """Bars when the console is a terminal, else plain lines."""
    if console.is_terminal:
        return Bars(label, console)
    return Lines(
        label, lambda line: console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True), every_s
    )


class Bars:
    """A Rich progress bar that stays on screen when done."""

    def __init__(self, label: str, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}", markup=False),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.progress.add_task(label, total=None, detail="")
        self.progress.start()

    def update(self, done: int, total: int, detail: str = "") -> None:
        self.progress.update(self.task, completed=done, total=total, detail=detail)

    def close(self) -> None:
        self.progress.stop()


class Lines:
    """`label: done/total detail`, written at most every `every_s`, and the last state at close."""

    def __init__(
        self, label: str, write: Callable[[str], None], every_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.label = label
        self.write = write
        self.every_s = every_s
        self.clock = clock
        self.last_written_at: float | None = None
        self.state: tuple[int, int, str] | None = None
        self.written: tuple[int, int, str] | None = None

    def update(self, done: int, total: int, detail: str = "") -> None:
        self.state = (done, total, detail)
        now = self.clock()
        if self.last_written_at is None or now - self.last_written_at >= self.every_s:
            self.last_written_at = now
            self.emit()

    def close(self) -> None:
        if self.state is not None and self.state != self.written:
            self.emit()

    def emit(self) -> None:
        assert self.state is not None
        done, total, detail = self.state
        self.written = self.state
        self.write(f"{self.label}: {done:,}/{total:,}" + (f" {detail}" if detail else ""))


class Rate:
    """Items per second over the last `window_s`, from (time, items done) samples."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, done: int) -> None:
        self.samples.append((now, done))
        # Keep one sample older than the window, so the rate always spans a full window.
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window_s:
            self.samples.popleft()

    def per_s(self) -> float | None:
        """None until two samples are some time apart."""
        if len(self.samples) < 2:
            return None
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else None


def eta_s(remaining: int, per_s: float | None) -> float | None:
    """Seconds until `remaining` are done at `per_s`; None when there is no rate to go by."""
    if remaining <= 0:
        return 0.0
    if per_s is None or per_s <= 0:
        return None
    return remaining / per_s


def duration(seconds: float) -> str:
    """`45s`, `3m 05s`, `2h 07m`: short and exact enough for an ETA."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"
