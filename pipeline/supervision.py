"""The restart policy and the child state machine, pure: every call takes `now`.

The tree (pipeline/tree.py) asks `RestartTracker` what to do after a death. Neither
makes os calls, so tests replay whole histories with a fake clock (honcho's
HISTORIES). The tree's own phases are diagrammed in pipeline/tree.py.

Child states, one per stage (ingest reads them for /ready):

    STOPPED --spawned--> STARTING --ready--> RUNNING
                           |   |                |   |
                           |   +----TERMed by---|---+--> STOPPING --exited--> EXITED
                           |        the tree    |          (a stop, or a tree restart: EXITED
                           |                    |           until the tree starts it again)
                           +-------died---------+--> EXITED --policy--> BACKOFF --delay--> STARTING
                                                        |
                                                        +--never-retry code / flapping--> FATAL

A stage that never says ready is killed at its boot deadline and counts as died.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from enum import IntEnum
from multiprocessing.context import SpawnContext
from typing import Any

from config.settings import RestartPolicy
from pipeline.backoff import jittered_backoff_s
from pipeline.exitcodes import NEVER_RETRY, ExitCode


class ChildState(IntEnum):
    STOPPED = 0
    STARTING = 1
    RUNNING = 2
    EXITED = 3
    BACKOFF = 4
    STOPPING = 5
    FATAL = 6


class Scope(IntEnum):
    """How much to restart after a death."""

    CHILD = 1  # the stage alone: it unwound cleanly and holds nothing the others rely on
    TREE = 2  # every stage, with fresh queues: a queue may be poisoned, or claims are stale


@dataclass(frozen=True, slots=True)
class Decision:
    """What the supervisor does after a child exits."""

    give_up: bool
    reason: str
    scope: Scope = Scope.TREE
    delay_s: float = 0.0
    exit_code: int = 0


class StageStates:
    """One byte per stage in shared memory: the supervisor writes, ingest reads (/ready).

    A RawArray has no lock, so no death can leave it held.
    """

    def __init__(self, ctx: SpawnContext, names: tuple[str, ...]) -> None:
        self.names = names
        self._array: Any = ctx.RawArray("b", len(names))

    def set(self, name: str, state: ChildState) -> None:
        self._array[self.names.index(name)] = int(state)

    def get(self, name: str) -> ChildState:
        return ChildState(self._array[self.names.index(name)])

    def snapshot(self) -> dict[str, str]:
        return {name: self.get(name).name.lower() for name in self.names}


def backoff_delay_s(policy: RestartPolicy, attempt: int, rng: random.Random) -> float:
    """The restart delay after `attempt` recent restarts."""
    return jittered_backoff_s(attempt, policy.min_delay_s, policy.max_delay_s, rng)


class RestartTracker:
    """Counts restarts for backoff and flapping; resets after a healthy stretch."""

    def __init__(self, policy: RestartPolicy, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.rng = rng or random.Random()
        self.attempt = 0
        self.recent: deque[float] = deque()
        self.healthy_since: float | None = None

    def on_all_running(self, now: float) -> None:
        """Every stage reached RUNNING at `now`; the healthy clock starts."""
        self.healthy_since = now

    def on_exit(self, stage: str, code: int | None, restart_alone: bool, now: float) -> Decision:
        """Decide what to do about `stage` exiting with `code` (None or <0: killed by a signal)."""
        described = describe_exit(code)
        if code is not None and code in NEVER_RETRY:
            return Decision(True, f"{stage} {described}: not restarting", exit_code=code)
        if self.healthy_since is not None and now - self.healthy_since >= self.policy.healthy_after_s:
            self.attempt = 0  # healthy long enough: this is a fresh failure, not a flap
        self.healthy_since = None
        while self.recent and now - self.recent[0] > self.policy.window_s:
            self.recent.popleft()
        if len(self.recent) >= self.policy.max_restarts:
            return Decision(
                True,
                f"{stage} {described}: {len(self.recent)} restarts in {self.policy.window_s:g}s, giving up",
                exit_code=code if code and code > 0 else int(ExitCode.CRASH),
            )
        self.recent.append(now)
        delay = backoff_delay_s(self.policy, self.attempt, self.rng)
        self.attempt += 1
        # Only a clean CRASH unwind proves the queues are intact (STYLE.md: poisoned queues).
        scope = Scope.CHILD if (code == ExitCode.CRASH and restart_alone) else Scope.TREE
        return Decision(
            False,
            f"{stage} {described}; restarting {'it' if scope is Scope.CHILD else 'the tree'} "
            f"in {delay:.1f}s ({len(self.recent)}/{self.policy.max_restarts} in window)",
            scope=scope,
            delay_s=delay,
        )


def describe_exit(code: int | None) -> str:
    """`exited (code=1)` or `killed by SIGKILL`."""
    import signal

    if code is None:
        return "vanished"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited (code={code})"
