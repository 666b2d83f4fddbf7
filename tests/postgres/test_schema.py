"""The PostgreSQL schema: applied once however many nodes start together, and the same
tables, columns, indexes and trigger-kept counters as SQLite's."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from pipeline.db import postgres, schema
from pipeline.db.dialect import numbered

ROOT = Path(__file__).resolve().parents[2]


async def test_nodes_starting_together_apply_each_migration_once(pg_url: str) -> None:
    conns = [await asyncpg.connect(pg_url) for _ in range(6)]
    try:
        applied = await asyncio.gather(*(postgres.migrate(conn) for conn in conns))
        assert sorted(applied) == [0, 0, 0, 0, 0, len(postgres.MIGRATIONS)]
        versions = await conns[0].fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [row["version"] for row in versions] == list(range(1, len(postgres.MIGRATIONS) + 1))
        assert await conns[0].fetchval("SELECT COUNT(*) FROM server_secrets") == 1
        assert len(await postgres.tracking_key(conns[0])) == 32
        assert await postgres.migrate(conns[0]) == 0
    finally:
        for conn in conns:
            await conn.close()


def sqlite_shape(tmp_path: Path) -> tuple[dict[str, list[str]], set[str]]:
    conn = schema.open_writer(tmp_path / "shape.db")
    assert schema.schema_version(conn) == len(schema.MIGRATIONS) == postgres.SQLITE_VERSION_OF_FIRST
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    columns = {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in tables}
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}
    conn.close()
    return columns, indexes


async def test_same_tables_columns_and_indexes_as_sqlite(pg_url: str, tmp_path: Path) -> None:
    columns, indexes = sqlite_shape(tmp_path)
    conn = await asyncpg.connect(pg_url)
    try:
        await postgres.migrate(conn)
        rows = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
        )
        pg_columns: dict[str, list[str]] = {}
        for row in (r for r in rows if r["table_name"] not in postgres.POSTGRES_ONLY_TABLES):
            pg_columns.setdefault(row["table_name"], []).append(row["column_name"])
        pg_indexes = {
            row["indexname"]
            for row in await conn.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
            if not row["indexname"].endswith("_pkey")
        }
    finally:
        await conn.close()
    assert pg_columns == columns  # same tables, same columns, same order
    assert pg_indexes == indexes


# Row changes every code path makes, in one text for both engines; the counters must agree.
HISTORY = [
    ("INSERT INTO contents (id, subject, html, created_at_ms) VALUES (1, 's', 'h', 0)", ()),
    *[
        (
            "INSERT INTO recipients (id, content_id, topic_id, email, status, due_at_ms, created_at_ms)"
            " VALUES (?, 1, ?, ?, 'pending', 0, 0)",
            (i, "t1" if i <= 4 else "t2", f"r{i}@example.com"),
        )
        for i in range(1, 7)
    ],
    ("INSERT INTO topic_counts VALUES ('t1', 'pending', 4), ('t2', 'pending', 2)", ()),
    ("UPDATE recipients SET status = 'sending' WHERE id IN (1, 2, 3, 5)", ()),
    ("UPDATE recipients SET status = 'sent', message_id = 'm' || id, sent_at_ms = id * 10 WHERE id IN (1, 2, 5)", ()),
    ("UPDATE recipients SET status = 'failed', error_code = 'X' WHERE id = ?", (3,)),
    ("UPDATE recipients SET status = 'cancelled' WHERE topic_id = ? AND status = 'pending'", ("t1",)),
    ("UPDATE recipients SET status = 'sent' WHERE id = 1", ()),  # unchanged: counts nothing
    ("UPDATE recipients SET delivery = 'delivered', delivery_at_ms = 5 WHERE id IN (1, 2)", ()),
    ("UPDATE recipients SET delivery = 'bounced', bounce_type = 'Permanent' WHERE id = 2", ()),
    ("UPDATE recipients SET complained_at_ms = 7 WHERE id = 1", ()),
    ("UPDATE recipients SET complained_at_ms = 8 WHERE id = 1", ()),  # a second complaint: once
    ("UPDATE recipients SET open_count = open_count + 2 WHERE id = 1", ()),
    ("UPDATE recipients SET open_count = open_count + 1 WHERE id IN (1, 5)", ()),
    ("UPDATE recipients SET status = 'paused' WHERE id = 6", ()),
    ("UPDATE recipients SET status = 'pending' WHERE id = 6", ()),
]


async def test_trigger_kept_counters_match_sqlite(pg_url: str, tmp_path: Path) -> None:
    lite = schema.open_writer(tmp_path / "counts.db")
    for sql, params in HISTORY:
        lite.execute(sql, params)
    expected = sorted(lite.execute("SELECT topic_id, name, n FROM topic_counts WHERE n != 0").fetchall())
    lite.close()
    conn = await asyncpg.connect(pg_url)
    try:
        await postgres.migrate(conn)
        for sql, params in HISTORY:
            await conn.execute(numbered(sql), *params)
        got = sorted(tuple(r) for r in await conn.fetch("SELECT topic_id, name, n FROM topic_counts WHERE n != 0"))
    finally:
        await conn.close()
    assert ("t1", "opens", 3) in expected and ("t1", "complained", 1) in expected  # the history does count
    assert got == expected


def test_supervisor_migrate_creates_the_schema_once_and_never_echoes_the_url(pg_url: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": pg_url, "EMAIL_BACKEND": "outbox", "AUTH_DISABLED": "true"}

    def migrate(url: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "supervisor.py", "migrate"],
            cwd=ROOT,
            env={**env, "DATABASE_URL": url},
            capture_output=True,
            text=True,
            timeout=60,
        )

    migrated = migrate(pg_url)
    assert migrated.returncode == 0, migrated.stderr
    assert f"{len(postgres.MIGRATIONS)} migration(s) applied" in migrated.stderr
    assert "0 migration(s) applied" in migrate(pg_url).stderr
    secret = pg_url.replace("postgres@", "postgres:hunter2@").rsplit("/", 1)[0] + "/no_such_database"
    failed = migrate(secret)
    assert failed.returncode != 0 and "cannot migrate the PostgreSQL database" in failed.stderr
    assert "hunter2" not in failed.stderr + migrated.stderr  # the URL (it may hold a password) is never echoed


@pytest.mark.parametrize("url", ["postgresql://", "postgresql:///db", "postgres://host/"])
def test_a_postgres_url_without_host_or_database_is_refused(url: str) -> None:
    from config.settings import ConfigError, load

    with pytest.raises(ConfigError, match="must name a host and a database"):
        load({"DATABASE_URL": url})


def test_sqlite_still_counts_what_its_shape_says(tmp_path: Path) -> None:
    """Guards the comparison above: SQLite's shape is read, not empty."""
    columns, indexes = sqlite_shape(tmp_path)
    assert "recipients" in columns and "human_clicked_at_ms" in columns["recipients"]
    assert "recipients_pending_topic" in indexes
    assert isinstance(sqlite3.sqlite_version, str)
