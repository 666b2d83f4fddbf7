"""What the benchmarks share: a real tree, a fake SES in its own process, timing helpers."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.helpers import ROOT, Tree, wait_until
from tests.helpers import ses_env as tests_ses_env


@contextlib.contextmanager
def fake_ses_process(latency_ms: float = 0.0, max_send_rate: float = 14.0) -> Iterator[str]:
    """The fake SES in a process of its own, so it does not share a GIL with what it measures."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes.fake_ses",
            "--latency-ms",
            str(latency_ms),
            "--max-send-rate",
            str(max_send_rate),
            "--lean",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(10)


def arrivals(url: str) -> list[float]:
    with urllib.request.urlopen(f"{url}/_arrivals", timeout=30) as response:
        return sorted(json.loads(response.read()))


@contextlib.contextmanager
def running_tree(env: dict[str, str]) -> Iterator[Tree]:
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        tree = Tree(Path(workdir), {"LOG_LEVEL": "WARNING", **env}).start()
        try:
            yield tree
        finally:
            tree.stop()


def ses_env(url: str, rate: float) -> dict[str, str]:
    return tests_ses_env(url, MAX_SEND_PER_SECOND=str(rate))


def wait_sent(tree: Tree, count: int, timeout_s: float) -> None:
    # Polled slowly: a count over every row is work that would compete with what we measure.
    wait_until(lambda: tree.statuses().get("sent", 0) >= count, timeout_s, f"{count} sent", every_s=0.5)


def machine() -> str:
    return f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"


def now() -> float:
    return time.perf_counter()
