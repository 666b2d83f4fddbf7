"""Waiting helpers for stage tests: conditions with deadlines, never fixed sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pipeline.memory_channels import MemoryPipeline

T = TypeVar("T")
# The `start` fixture: start(pipeline, "scheduler") runs that stage's `run(ctx)` as a task.
StartStage = Callable[[MemoryPipeline, str], "asyncio.Task[None]"]


async def finished(task: asyncio.Task[T], timeout_s: float = 5.0) -> T:
    """What the stage returned; fails when it is still running after `timeout_s`."""
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    assert done, f"the {task.get_name()} stage was still running after {timeout_s}s"
    return task.result()


async def eventually(predicate: Callable[[], T], timeout_s: float = 5.0, what: str = "condition") -> T:
    """Wait (without blocking the stages) until `predicate()` is truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        await asyncio.sleep(0.01)
    return value


def statuses(database: Path) -> dict[str, int]:
    """Recipient rows by status, read as any other reader would (read-only, beside the writer)."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        return dict(conn.execute("SELECT status, COUNT(*) FROM recipients GROUP BY status").fetchall())
