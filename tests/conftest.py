"""Shared fixtures: a real process tree in a temp dir, torn down whatever happens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes.fake_ses import FakeSes
from tests.fakes.fake_sns import FakeSns
from tests.helpers import Tree


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
