"""The process tree's phase and every decision about it, pure: each call takes `now`.

supervisor.py is the shell around this: it owns the processes, the signals and the
sleeping. It tells the tree what happened (a stage said ready, a stage exited with a
code, a stop was asked for, time passed) and the tree acts through a `Spawner`, so
tests replay whole histories with a fake clock and a fake spawner (honcho's
HISTORIES). The restart policy is `RestartTracker` and the child-state diagram is in
pipeline/supervision.py.

Tree phases:

    start() --> STARTING --every stage ready--> RUNNING
                  ^    |                           |
                  |    +--a death: ask the policy--+-- (a death during BACKOFF too)
       delay over |                 |
                  |     one stage   |   the tree
               BACKOFF <------------+------------> TEARING_DOWN
                  ^                                      |
                  +--every old child gone: fresh queues--+

    STARTING, RUNNING, BACKOFF, TEARING_DOWN --stop(reason) or halt(reason, code)--> STOPPING
    STOPPING --every child gone--> HALTED (exit_code is final)

A death the policy gives up on (a never-retry code, flapping) is `halt()`: the tree
drains as on SIGTERM and exits with that code, whatever the others do (gunicorn's
`Arbiter.halt`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, Protocol

from config.settings import RestartPolicy
from pipeline.exitcodes import ExitCode
from pipeline.supervision import ChildState, RestartTracker, Scope, describe_exit

# The supervisor's own logger: these are its lines, whichever module writes them.
log = logging.getLogger("supervisor")
# Survivors of a death cannot finish their drain (a producer is gone), and all they hold
# is either committed or claimed-and-requeued, so a tree restart waits only this long.
TEARDOWN_TIMEOUT_S: Final = 2.0
# After the KILL at the stop deadline: wake again this much later to KILL anything not yet reaped.
REKILL_AFTER_S: Final = 5.0


class Phase(IntEnum):
    STARTING = 1  # starting `start_queue` in order, each stage after the previous one's Ready
    RUNNING = 2  # every stage said ready
    TEARING_DOWN = 3  # a tree restart: the old children were TERMed; KILL at `deadline`
    BACKOFF = 4  # waiting until `start_at` to start `start_queue` (one stage, or all of them)
    STOPPING = 5  # stop() or halt(): every child was TERMed; KILL at `deadline`
    HALTED = 6  # every child is gone; `exit_code` is final


class Spawner(Protocol):
    """What the tree does to the world: real processes in supervisor.py, a list in tests."""

    def spawn(self, name: str) -> None:
        """Start stage `name` on the current queues."""

    def terminate(self, name: str) -> None:
        """Ask a live stage to drain and exit (SIGTERM)."""

    def kill(self, name: str) -> None:
        """End a live stage now (SIGKILL)."""

    def fresh_queues(self) -> None:
        """Drop every queue and make new ones; called only when no stage is alive."""


class InvariantBroken(AssertionError):
    """The tree's phase and its children disagree: a bug, never an outside event."""


@dataclass(slots=True)
class Child:
    """A stage that was spawned and has not been reaped yet."""

    state: ChildState
    boot_deadline: float | None  # while STARTING: KILL it if not ready by then (once)


class Tree:
    """The supervisor's decisions: start order, restarts, teardown, stop, exit code."""

    def __init__(
        self,
        order: tuple[str, ...],
        restart_alone: frozenset[str],
        policy: RestartPolicy,
        shutdown_timeout_s: float,
        spawner: Spawner,
        tracker: RestartTracker | None = None,
    ) -> None:
        self.order = order
        self.restart_alone = restart_alone
        self.policy = policy
        self.shutdown_timeout_s = shutdown_timeout_s
        self.spawner = spawner
        self.tracker = tracker or RestartTracker(policy)
        self.phase = Phase.STARTING
        self.states = dict.fromkeys(order, ChildState.STOPPED)  # every stage, alive or not (/ready)
        self.children: dict[str, Child] = {}
        self.start_queue: list[str] = list(order)
        self.start_at: float | None = None
        self.deadline: float | None = None
        self.restart_delay_s = 0.0  # TEARING_DOWN: the backoff once the old children are gone
        self.exit_code: int | None = None  # the first failure while stopping, or halt()'s

    # --- events -----------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Boot: start the first stage; each of the others follows the previous one's Ready."""
        if self.phase is Phase.STARTING and not self.children:
            self._spawn_next(now)

    def on_ready(self, name: str, now: float) -> None:
        """Stage `name` reported ready on its status pipe."""
        child = self.children.get(name)
        if child is None or child.state is not ChildState.STARTING:
            return  # a Ready from a stage we already asked to stop, or killed
        self._set(name, ChildState.RUNNING)  # STARTING -> RUNNING: it said so itself
        log.info("%s is ready", name)
        if self.start_queue:
            self._spawn_next(now)
        elif all(c.state is ChildState.RUNNING for c in self.children.values()):
            self.phase = Phase.RUNNING
            self.tracker.on_all_running(now)
            log.info("all stages running")

    def on_exit(self, name: str, code: int | None, now: float) -> None:
        """Stage `name` was reaped with `code` (None or < 0: killed by a signal)."""
        if self.children.pop(name, None) is None:
            return
        self.states[name] = ChildState.EXITED
        if self.phase in (Phase.STOPPING, Phase.TEARING_DOWN):
            log.info("%s %s", name, describe_exit(code))
            if self.phase is Phase.STOPPING:
                self._note_failure(code)
            self._finish_if_alone(now)
            return
        decision = self.tracker.on_exit(name, code, name in self.restart_alone, now)
        if decision.give_up:
            self.states[name] = ChildState.FATAL
            self.halt(decision.reason, decision.exit_code, now)
            return
        log.warning("%s", decision.reason)
        self.states[name] = ChildState.BACKOFF  # EXITED -> BACKOFF: the policy will start it again
        if decision.scope is Scope.CHILD:
            self._back_off([name], decision.delay_s, now)
        else:
            self._tear_down(decision.delay_s, now)

    def stop(self, reason: str, now: float) -> None:
        """A stop was asked for (SIGTERM, SIGINT): drain; exit 0 unless a stage fails on the way out."""
        if self.phase in (Phase.STOPPING, Phase.HALTED):
            return  # under honcho the TERM comes twice: killpg, then our own forward
        log.info("%s: draining (deadline %.1fs)", reason, self.shutdown_timeout_s)
        self._begin_stopping(now)

    def halt(self, reason: str, exit_code: int, now: float) -> None:
        """Give up: drain as on a stop, then exit with `exit_code` (gunicorn's Arbiter.halt)."""
        log.error("%s", reason)
        if self.exit_code is None:
            self.exit_code = exit_code
        if self.phase not in (Phase.STOPPING, Phase.HALTED):
            self._begin_stopping(now)

    def tick(self, now: float) -> None:
        """Act on every deadline that has passed by `now`."""
        if self.deadline is not None and now >= self.deadline:
            self._kill_stragglers()
            # A KILL cannot be refused: stopping only waits to reap. A teardown just waits.
            self.deadline = now + REKILL_AFTER_S if self.phase is Phase.STOPPING else None
        if self.phase is Phase.BACKOFF and self.start_at is not None and now >= self.start_at:
            self.phase = Phase.STARTING  # BACKOFF -> STARTING: the delay is over
            self.start_at = None
            self._spawn_next(now)
        for name, child in self.children.items():
            if child.boot_deadline is not None and now >= child.boot_deadline:
                log.error("%s did not become ready in %.0fs; killing it", name, self.policy.boot_timeout_s)
                child.boot_deadline = None  # once: its death comes back through on_exit
                self.spawner.kill(name)

    def next_deadline(self) -> float | None:
        """When `tick` next has something to do, if ever without another event."""
        deadlines = [d for d in (self.start_at, self.deadline) if d is not None]
        deadlines += [c.boot_deadline for c in self.children.values() if c.boot_deadline is not None]
        return min(deadlines, default=None)

    # --- transitions ------------------------------------------------------------------

    def _spawn_next(self, now: float) -> None:
        name = self.start_queue.pop(0)
        self.spawner.spawn(name)
        self.children[name] = Child(ChildState.STARTING, now + self.policy.boot_timeout_s)
        self.states[name] = ChildState.STARTING

    def _back_off(self, names: Iterable[str], delay_s: float, now: float) -> None:
        wanted = set(names)
        self.phase = Phase.BACKOFF
        self.start_queue = [n for n in self.order if n in wanted]
        self.start_at = now + delay_s
        self.deadline = None

    def _tear_down(self, delay_s: float, now: float) -> None:
        """Restart the tree: TERM every survivor, and start again once they are all gone."""
        self.phase = Phase.TEARING_DOWN
        self.restart_delay_s = delay_s
        self.start_queue, self.start_at = [], None
        self.deadline = now + min(TEARDOWN_TIMEOUT_S, self.shutdown_timeout_s)
        self._terminate_all()
        self._finish_if_alone(now)

    def _begin_stopping(self, now: float) -> None:
        deadline = now + self.shutdown_timeout_s
        if self.phase is Phase.TEARING_DOWN and self.deadline is not None:
            # The survivors of a death were TERMed already and cannot drain (a producer is
            # gone): a stop keeps the teardown's earlier KILL.
            deadline = min(deadline, self.deadline)
        self.phase = Phase.STOPPING
        self.start_queue, self.start_at = [], None
        self.deadline = deadline
        self._terminate_all()
        self._finish_if_alone(now)

    def _finish_if_alone(self, now: float) -> None:
        """The last child of a teardown or a stop is gone: start again, or halt."""
        if self.children:
            return
        if self.phase is Phase.TEARING_DOWN:
            # Only now: a queue is released only when nobody can hold its lock.
            self.spawner.fresh_queues()
            self._back_off(self.order, self.restart_delay_s, now)
        elif self.phase is Phase.STOPPING:
            self.phase = Phase.HALTED
            self.deadline = None
            if self.exit_code is None:
                self.exit_code = int(ExitCode.OK)

    def _terminate_all(self) -> None:
        for name in self.children:
            self._set(name, ChildState.STOPPING)  # STARTING/RUNNING -> STOPPING: we asked it to
            self.spawner.terminate(name)

    def _kill_stragglers(self) -> None:
        for name in self.children:
            log.warning("%s did not stop in time; killing it", name)
            self.spawner.kill(name)

    def _note_failure(self, code: int | None) -> None:
        """While stopping, the first stage that did not exit 0 decides the exit code (1 if killed)."""
        if code != 0 and self.exit_code is None:
            self.exit_code = int(ExitCode.CRASH) if code is None or code < 0 else code

    def _set(self, name: str, state: ChildState) -> None:
        child = self.children[name]
        child.state = state
        if state is not ChildState.STARTING:
            child.boot_deadline = None
        self.states[name] = state

    # --- invariants -------------------------------------------------------------------

    def check(self) -> None:
        """Raise InvariantBroken if the phase and the children disagree (tests call it after each event)."""
        problems = self.problems()
        if problems:
            raise InvariantBroken("; ".join(problems))

    def problems(self) -> list[str]:
        """Every way the phase and the children disagree, in words."""
        problems = [f"{n} is {c.state.name} here but {self.states[n].name} in states" for n, c in self._mismatched()]
        booting = [n for n, c in self.children.items() if c.state is ChildState.STARTING]
        if self.phase in (Phase.STOPPING, Phase.TEARING_DOWN, Phase.HALTED):
            if any(c.state is not ChildState.STOPPING for c in self.children.values()):
                problems.append(f"{self.phase.name} with a child that was not asked to stop")
            if self.start_queue or self.start_at is not None:
                problems.append(f"{self.phase.name} with a start pending")
        if self.phase is Phase.HALTED and (self.children or self.exit_code is None):
            problems.append("HALTED with a child alive or no exit code")
        if self.phase is Phase.BACKOFF and (self.start_at is None or not self.start_queue or booting):
            problems.append("BACKOFF without a start pending, or with a stage starting")
        if self.phase is Phase.STARTING and len(booting) > 1:
            problems.append(f"two stages starting at once: {booting}")
        if self.phase is Phase.RUNNING and (set(self.children) != set(self.order) or booting):
            problems.append("RUNNING without every stage running")
        return problems

    def _mismatched(self) -> list[tuple[str, Child]]:
        return [(n, c) for n, c in self.children.items() if self.states[n] is not c.state]
