"""Every end-to-end test runs on both engines: the SQLite file, and a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import new_database
from tests.helpers import Tree


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_tree(tmp_path: Path, engine: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., Tree]]:
    """make_tree(env={...}) -> a started Tree on this test's engine; all are stopped at the end."""
    trees: list[Tree] = []
    databases: dict[Path, str] = {}  # one per working directory: a restart finds its database again

    def make(env: dict[str, str] | None = None, start: bool = True, workdir: Path | None = None) -> Tree:
        env, folder = dict(env or {}), workdir or tmp_path
        if engine == "postgresql":
            if "DATABASE_URL" in env:
                pytest.skip("this test names its own SQLite database")
            if folder not in databases:
                databases[folder] = new_database(request.getfixturevalue("postgres_server"))
            env["DATABASE_URL"] = databases[folder]
        tree = Tree(folder, env)
        trees.append(tree)
        return tree.start() if start else tree

    yield make
    for tree in trees:
        tree.stop()
