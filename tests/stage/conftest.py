"""Stage tests: a stage's real `run(ctx)` in the test's event loop, on in-memory channels.

The test runs the stages it names and plays the others by reading and writing their
inboxes (`MemoryPipeline.tell` / `next_for`). Stages still running when a test ends are
cancelled, so a failed assertion never leaves a task behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from config.settings import SesSettings, Settings
from pipeline.memory_channels import MemoryPipeline
from pipeline.runtime import StageContext, run_to_the_end
from tests.stage.harness import StartStage


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A real SQLite file and the .eml outbox in the test's folder; a drain short enough to wait for."""
    return Settings(
        database_path=tmp_path / "stage.db",
        server_url="http://mail.example.org",
        shutdown_timeout_s=2.0,
        ses=SesSettings(backend="outbox", outbox_dir=tmp_path / "outbox", max_send_per_s=500.0),
    )


@pytest.fixture
def pipeline(settings: Settings) -> MemoryPipeline:
    return MemoryPipeline(settings)


@pytest.fixture
async def start() -> AsyncIterator[StartStage]:
    """start(pipeline, "recorder") -> the stage's `run(ctx)` as a task; it is awaited by the test."""
    tasks: list[asyncio.Task[None]] = []

    def start_stage(pipeline: MemoryPipeline, stage: str) -> asyncio.Task[None]:
        run: Callable[[StageContext], Coroutine[Any, Any, None]] = importlib.import_module(f"stages.{stage}").run
        task = asyncio.create_task(run_to_the_end(run, pipeline.context(stage)), name=stage)
        tasks.append(task)
        return task

    yield start_stage
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
