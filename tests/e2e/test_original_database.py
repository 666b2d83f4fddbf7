"""A drop-in start on the original server's database: refused with the import command, then imported and sent."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.helpers import SUPERVISOR, Tree, sqlite_only, wait_until
from tests.unit.test_import_original import make_original


def statuses(db: Path) -> dict[str, str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        found = dict(conn.execute("SELECT email, status FROM recipients").fetchall())
    conn.close()
    return found


def test_the_tree_refuses_their_database_then_sends_what_was_imported(
    engine: str, make_tree: Callable[..., Tree], tmp_path: Path
) -> None:
    sqlite_only(engine, "the original server's database is a SQLite file")
    # Given the original's file where DATABASE_URL points (the Tree's sqlite://test.db)
    theirs = make_original(tmp_path / "test.db")
    refused = make_tree(start=False).start(wait_ready=False)
    # Then the tree does not start, does not retry, and one line names the import command
    assert refused.wait_exit(timeout_s=30) == 3
    naming = [line for line in refused.log().splitlines() if "import-original" in line]
    assert len(naming) == 1 and "python supervisor.py import-original test.db" in naming[0], refused.log()
    assert "not restarting" in refused.log()
    with sqlite3.connect(theirs) as conn:  # their file is untouched: no tables of ours, still not WAL
        assert "recipients" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()

    # When it is imported into a new file and the server starts on that one
    env = {"PATH": os.environ["PATH"], "DATABASE_URL": "sqlite://ours.db", "AUTH_DISABLED": "true"}
    done = subprocess.run(
        [sys.executable, str(SUPERVISOR), "import-original", "test.db"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("imported 11 recipients: 2 pending,")
    ours = tmp_path / "ours.db"
    with sqlite3.connect(ours) as conn:
        overdue = conn.execute("SELECT id FROM recipients WHERE email = 'b@x.io'").fetchone()[0]
    conn.close()
    make_tree({"DATABASE_URL": "sqlite://ours.db"})

    # Then the overdue pending row is sent to the outbox; the one due in 2030 waits; the rest keep their status
    wait_until(lambda: (tmp_path / "outbox" / f"{overdue}.eml").exists(), 20, "the imported row in the outbox")
    wait_until(lambda: statuses(ours)["b@x.io"] == "sent", 10, "the imported row marked sent")
    now = statuses(ours)
    assert now["a@x.io"] == "pending"
    assert (now["e@x.io"], now["f@x.io"], now["g@x.io"]) == ("failed", "cancelled", "unknown")
    assert sorted(p.name for p in (tmp_path / "outbox").glob("*.eml")) == [f"{overdue}.eml"]
