"""The real process tree: start, readiness, restarts, shutdown, bad settings, migrations."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.db.schema import MIGRATIONS
from tests.helpers import SUPERVISOR, Tree, campaign, wait_until

STAGES = {"recorder", "sender", "scheduler", "ingest"}


def test_tree_starts_and_reports_every_stage_ready(make_tree: Callable[..., Tree]) -> None:
    tree = make_tree()
    status, body, _ = tree.get("/ready")
    assert status == 200
    assert body["stages"] == {name: "running" for name in STAGES}
    assert body["database"] == "ok"
    assert tree.get("/health")[:2] == (200, {"status": "ok"})
    # Every stage is its own process, named so operators can tell them apart.
    assert set(tree.children()) == STAGES


def test_kill_9_of_a_stage_restarts_it_and_ready_turns_green_again(make_tree: Callable[..., Tree]) -> None:
    tree = make_tree()
    before = tree.children()
    # When the sender dies by SIGKILL (its queues may be poisoned)
    os.kill(before["sender"], signal.SIGKILL)
    # Then the tree comes back with fresh processes and /ready is green again
    # (A dead child leaves /proc's titles at once, before the supervisor reaps it, and /ready
    # can still be green in that moment: wait for the new sender itself.)
    wait_until(lambda: tree.children().get("sender", before["sender"]) != before["sender"], 10, "a new sender")
    tree.wait_ready()
    after = tree.children()
    assert set(after) == STAGES
    assert after["sender"] != before["sender"]
    assert "sender killed by SIGKILL" in tree.log()
    # And the restarted tree still works end to end
    status, body, _ = tree.post("/v1/messages", campaign(["a@example.com"]))
    assert status == 200 and body["success"] == 1
    wait_until(lambda: tree.statuses().get("sent") == 1, 10, "the recipient to be sent")


def test_ready_answers_503_naming_what_is_missing(make_tree: Callable[..., Tree]) -> None:
    tree = make_tree()
    recorder = tree.children()["recorder"]
    # Given the recorder stops answering (frozen, not dead: the supervisor sees nothing)
    os.kill(recorder, signal.SIGSTOP)
    try:
        status, body, _ = tree.get("/ready")
        assert status == 503
        assert body["status"] == "not ready"
        assert "the recorder does not answer" in body["problems"]
        assert tree.get("/health")[0] == 200, "liveness is about ingest alone"
    finally:
        os.kill(recorder, signal.SIGCONT)
    tree.wait_ready(timeout_s=10)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_drains_and_exits_0_with_a_consistent_database(
    make_tree: Callable[..., Tree], signum: int
) -> None:
    tree = make_tree({"MAX_SEND_PER_SECOND": "20"})
    emails = [f"user{i}@example.com" for i in range(100)]
    assert tree.post("/v1/messages", campaign(emails))[0] == 200
    wait_until(lambda: tree.statuses().get("sent", 0) >= 5, 10, "sending to start")
    started = time.monotonic()
    tree.signal(signum)
    assert tree.wait_exit(timeout_s=10) == 0
    assert time.monotonic() - started < 5.0, "the drain must fit in honcho's 5 s"
    statuses = tree.statuses()
    # Nothing is left claimed: what was not sent went back to pending.
    assert set(statuses) <= {"sent", "pending"}
    assert sum(statuses.values()) == 100
    assert len(list((tree.workdir / "outbox").glob("*.eml"))) == statuses["sent"]


def test_restart_after_sigterm_sends_the_rest_and_nothing_twice(make_tree: Callable[..., Tree], tmp_path: Path) -> None:
    tree = make_tree({"MAX_SEND_PER_SECOND": "50"})
    assert tree.post("/v1/messages", campaign([f"u{i}@example.com" for i in range(60)]))[0] == 200
    wait_until(lambda: tree.statuses().get("sent", 0) >= 5, 10, "sending to start")
    tree.signal(signal.SIGTERM)
    assert tree.wait_exit() == 0
    second = make_tree({"MAX_SEND_PER_SECOND": "50"}, workdir=tmp_path)
    wait_until(lambda: second.statuses() == {"sent": 60}, 15, "the rest to be sent")
    # One .eml per recipient: each written once, named by request id.
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 60


def test_supervisor_killed_makes_the_children_exit(make_tree: Callable[..., Tree]) -> None:
    tree = make_tree()
    children = tree.children()
    assert tree.process is not None
    tree.process.kill()
    tree.process.wait()

    def all_gone() -> bool:
        for pid in children.values():
            try:
                os.kill(pid, 0)
                return False
            except ProcessLookupError:
                continue
        return True

    wait_until(all_gone, 10, "every stage to exit after the supervisor died")


def test_bad_setting_stops_start_up_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SUPERVISOR)],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "SERVER_PORT": "abc", "MAX_SEND_PER_SECOND": "0"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "SERVER_PORT: 'abc' is not a whole number" in lines[0]
    assert "MAX_SEND_PER_SECOND: must be > 0" in lines[0]
    assert not (tmp_path / "sqlite3.db").exists(), "nothing may start before the settings are valid"


def test_env_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("EMAIL_BACKEND=carrier-pigeon\nSERVER_PORT=1\n")
    result = subprocess.run(
        [sys.executable, str(SUPERVISOR)],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "SERVER_PORT": "x"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 78
    assert "EMAIL_BACKEND: 'carrier-pigeon'" in result.stderr  # from .env
    assert "SERVER_PORT: 'x'" in result.stderr  # the environment beats .env


def test_a_stage_that_cannot_boot_halts_the_tree(make_tree: Callable[..., Tree], tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("")
    tree = make_tree({"DATABASE_URL": "sqlite://not-a-dir/x.db"}, start=False)
    tree.start(wait_ready=False)
    assert tree.wait_exit(timeout_s=20) == 3  # BOOT: restarting would not help
    assert "not restarting" in tree.log()


def test_migrations_create_the_schema_once(make_tree: Callable[..., Tree], tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "DATABASE_URL": "sqlite://m.db", "AUTH_DISABLED": "true"}
    first = subprocess.run(
        [sys.executable, str(SUPERVISOR), "migrate"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
    )
    assert first.returncode == 0 and f"{len(MIGRATIONS)} migration(s) applied" in first.stderr
    second = subprocess.run(
        [sys.executable, str(SUPERVISOR), "migrate"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
    )
    assert second.returncode == 0 and "0 migration(s) applied" in second.stderr
    with sqlite3.connect(tmp_path / "m.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"contents", "recipients", "idempotency_keys", "server_secrets"} <= tables
