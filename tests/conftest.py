"""Shared fixtures: a real process tree in a temp dir, torn down whatever happens."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.db import postgres, schema
from pipeline.db.blocking_pg import BlockingPostgres
from pipeline.db.dialect import Conn
from tests.fakes.fake_ses import FakeSes
from tests.fakes.fake_sns import FakeSns
from tests.helpers import Tree
from tests.pg_server import NO_SERVER, PostgresServer, find_bindir


@pytest.fixture
def make_tree(tmp_path: Path) -> Iterator[Callable[..., Tree]]:
    """make_tree(env={...}) -> a started Tree; all are stopped at the end of the test."""
    trees: list[Tree] = []

    def make(env: dict[str, str] | None = None, start: bool = True, workdir: Path | None = None) -> Tree:
        tree = Tree(workdir or tmp_path, env)
        trees.append(tree)
        return tree.start() if start else tree

    yield make
    for tree in trees:
        tree.stop()


@pytest.fixture
def fake_ses() -> Iterator[FakeSes]:
    """Our fake SES v2 on 127.0.0.1: latency, throttling, rejections and outages on demand."""
    fake = FakeSes().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_sns() -> Iterator[FakeSns]:
    """SNS's side of the webhook: a signing key and certificate served on 127.0.0.1."""
    fake = FakeSns().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the session (tests/pg_server.py); skipped, saying why, without binaries."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(NO_SERVER)
    server = PostgresServer(bindir).start()
    yield server
    server.stop()


_database_numbers = itertools.count(1)


def new_database(server: PostgresServer) -> str:
    """The URL of a new, empty database (advisory locks are per database, so tests stay apart)."""
    name = f"test_{next(_database_numbers)}"
    admin = BlockingPostgres(server.url())
    try:
        admin.execute(f"CREATE DATABASE {name}")
    finally:
        admin.close()
    return server.url(name)


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    return new_database(postgres_server)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Conn]:
    """The recorder's writing connection, migrated, on each engine in turn."""
    conn: Conn
    if request.param == "sqlite":
        conn = schema.open_writer(tmp_path / "store.db")
    else:
        conn = postgres.open_writer(new_database(request.getfixturevalue("postgres_server")))
    yield conn
    conn.close()  # type: ignore[attr-defined]
