"""The supervisor's decisions, replayed as scripted histories (honcho's HISTORIES).

A fake spawner records what the tree did and a fake clock moves only when a history
says so, so each case is exact: what was spawned, terminated and killed, in what order
and when, the phase it ends in and the exit code. Events are written the way the shell
reports them: `ready NAME`, `exit NAME CODE` (negative: killed by that signal),
`SIGTERM`, and `sleep` (until the tree's next deadline, as the shell's wait() would)
or `sleep SECONDS`. The invariants are checked after every event.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from config.settings import RestartPolicy
from pipeline.channels import STAGES
from pipeline.exitcodes import ExitCode
from pipeline.supervision import ChildState, RestartTracker, backoff_delay_s
from pipeline.tree import Child, InvariantBroken, Phase, Tree
from supervisor import RESTART_ALONE

POLICY = RestartPolicy(
    min_delay_s=0.5, max_delay_s=30, healthy_after_s=60, max_restarts=3, window_s=120, boot_timeout_s=30
)
SHUTDOWN_TIMEOUT_S = 4.5


class Script:
    """A tree with a fake clock, whose spawner writes down what it was told to do."""

    def __init__(self, seeded: bool = True) -> None:
        self.now = 0.0
        self.done: list[tuple[float, str]] = []
        # Unseeded: the tree makes its own tracker from the policy, as supervisor.py has it do.
        tracker = RestartTracker(POLICY, random.Random(1)) if seeded else None
        self.tree = Tree(STAGES, RESTART_ALONE, POLICY, SHUTDOWN_TIMEOUT_S, self, tracker)
        self.tree.start(self.now)
        self.tree.check()

    # The Spawner protocol.
    def spawn(self, name: str) -> None:
        self.done.append((self.now, f"spawn {name}"))

    def terminate(self, name: str) -> None:
        self.done.append((self.now, f"terminate {name}"))

    def kill(self, name: str) -> None:
        self.done.append((self.now, f"kill {name}"))

    def fresh_queues(self) -> None:
        self.done.append((self.now, "fresh queues"))

    def play(self, events: Sequence[str]) -> Script:
        for event in events:
            self.apply(event)
            self.tree.check()
        return self

    def apply(self, event: str) -> None:
        word, *args = event.split()
        match word:
            case "ready":
                self.tree.on_ready(args[0], self.now)
            case "exit":
                self.tree.on_exit(args[0], int(args[1]), self.now)
            case "SIGTERM" | "SIGINT":
                self.tree.stop(f"{word} received", self.now)
            case "sleep":
                self.now = self.now + float(args[0]) if args else self.next_deadline()
                self.tree.tick(self.now)
            case _:
                raise ValueError(event)

    def next_deadline(self) -> float:
        deadline = self.tree.next_deadline()
        assert deadline is not None, "the history sleeps, but the tree has no deadline: it would sleep forever"
        return max(self.now, deadline)

    @property
    def actions(self) -> list[str]:
        return [action for _, action in self.done]

    def when(self, action: str) -> list[float]:
        return [at for at, done in self.done if done == action]


BOOT = ["ready recorder", "ready sender", "ready scheduler", "ready ingest"]
BOOTED = ["spawn recorder", "spawn sender", "spawn scheduler", "spawn ingest"]
ALL_TERMINATED = ["terminate recorder", "terminate sender", "terminate scheduler", "terminate ingest"]


@dataclass(frozen=True)
class History:
    events: list[str]
    actions: list[str]
    phase: Phase
    exit_code: int | None = None
    states: Mapping[str, ChildState] = field(default_factory=dict)


HISTORIES = {
    "boot starts each stage after the previous one's Ready": History(
        events=BOOT,
        actions=BOOTED,
        phase=Phase.RUNNING,
        states=dict.fromkeys(STAGES, ChildState.RUNNING),
    ),
    "SIGTERM drains every stage and exits 0": History(
        events=[*BOOT, "SIGTERM", "exit ingest 0", "exit scheduler 0", "exit sender 0", "exit recorder 0"],
        actions=[*BOOTED, *ALL_TERMINATED],
        phase=Phase.HALTED,
        exit_code=0,
    ),
    "a second SIGTERM (honcho's killpg, then ours) changes nothing": History(
        events=[*BOOT, "SIGTERM", "SIGTERM", "exit ingest 0", "exit scheduler 0", "exit sender 0", "exit recorder 0"],
        actions=[*BOOTED, *ALL_TERMINATED],
        phase=Phase.HALTED,
        exit_code=0,
    ),
    "the first stage to fail on the way out decides the exit code": History(
        events=[*BOOT, "SIGTERM", "exit ingest 0", "exit sender 2", "exit scheduler 0", "exit recorder -9"],
        actions=[*BOOTED, *ALL_TERMINATED],
        phase=Phase.HALTED,
        exit_code=2,
    ),
    "the stop deadline kills the stragglers, and a killed stage means exit 1": History(
        events=[*BOOT, "SIGTERM", "exit ingest 0", "exit scheduler 0", "sleep", "exit sender -9", "exit recorder -9"],
        actions=[
            *BOOTED,
            *ALL_TERMINATED,
            *["kill recorder", "kill sender"],
        ],
        phase=Phase.HALTED,
        exit_code=1,
    ),
    "a signal mid start order stops what started and starts nothing more": History(
        # The sender's Ready arrives after the TERM: it must not start the scheduler.
        events=["ready recorder", "SIGTERM", "ready sender", "exit sender 0", "exit recorder 0"],
        actions=["spawn recorder", "spawn sender", "terminate recorder", "terminate sender"],
        phase=Phase.HALTED,
        exit_code=0,
    ),
    "a signal before the first stage says ready": History(
        events=["SIGINT", "exit recorder 0"],
        actions=["spawn recorder", "terminate recorder"],
        phase=Phase.HALTED,
        exit_code=0,
    ),
    "a signal during the backoff halts at once": History(
        events=[*BOOT, "exit sender -9", "exit recorder 0", "exit scheduler 0", "exit ingest 0", "SIGTERM"],
        actions=[*BOOTED, "terminate recorder", "terminate scheduler", "terminate ingest", "fresh queues"],
        phase=Phase.HALTED,
        exit_code=0,
    ),
    "a SIGKILLed sender restarts the tree on fresh queues, in start order": History(
        events=[*BOOT, "exit sender -9", "exit recorder 0", "exit scheduler 0", "exit ingest 0", "sleep", *BOOT],
        actions=[
            *BOOTED,
            *["terminate recorder", "terminate scheduler", "terminate ingest"],
            "fresh queues",
            *BOOTED,
        ],
        phase=Phase.RUNNING,
    ),
    "a clean crash of the sender still restarts the tree": History(
        events=[*BOOT, "exit sender 1", "exit recorder 0", "exit scheduler 0", "exit ingest 0", "sleep"],
        actions=[*BOOTED, "terminate recorder", "terminate scheduler", "terminate ingest", "fresh queues", BOOTED[0]],
        phase=Phase.STARTING,
    ),
    "a stage exiting 0 unasked restarts the tree": History(
        events=[*BOOT, "exit scheduler 0", "exit recorder 0", "exit sender 0", "exit ingest 0", "sleep"],
        actions=[*BOOTED, "terminate recorder", "terminate sender", "terminate ingest", "fresh queues", BOOTED[0]],
        phase=Phase.STARTING,
    ),
    "a clean crash of ingest restarts ingest alone, on the same queues": History(
        events=[*BOOT, "exit ingest 1", "sleep", "ready ingest"],
        actions=[*BOOTED, "spawn ingest"],
        phase=Phase.RUNNING,
        states=dict.fromkeys(STAGES, ChildState.RUNNING),
    ),
    "ingest killed by SIGKILL restarts the whole tree with fresh queues": History(
        events=[*BOOT, "exit ingest -9", "exit recorder 0", "exit sender 0", "exit scheduler 0", "sleep"],
        actions=[*BOOTED, "terminate recorder", "terminate sender", "terminate scheduler", "fresh queues", BOOTED[0]],
        phase=Phase.STARTING,
    ),
    "a death during the teardown is not another restart": History(
        events=[*BOOT, "exit sender -9", "exit scheduler 1", "exit recorder -9", "exit ingest 0", "sleep", *BOOT],
        actions=[
            *BOOTED,
            *["terminate recorder", "terminate scheduler", "terminate ingest"],
            "fresh queues",  # once, and only when every old stage is gone
            *BOOTED,
        ],
        phase=Phase.RUNNING,
    ),
    "the teardown kills survivors that do not exit, then starts again": History(
        events=[*BOOT, "exit sender -9", "exit ingest 0", "sleep", "exit recorder -9", "exit scheduler -9", "sleep"],
        actions=[
            *BOOTED,
            *["terminate recorder", "terminate scheduler", "terminate ingest"],
            *["kill recorder", "kill scheduler"],
            "fresh queues",
            BOOTED[0],
        ],
        phase=Phase.STARTING,
    ),
    "a stage that never says ready is killed at the boot timeout, and the tree restarts": History(
        events=["ready recorder", "sleep", "exit sender -9", "exit recorder 0", "sleep"],
        actions=["spawn recorder", "spawn sender", "kill sender", "terminate recorder", "fresh queues", BOOTED[0]],
        phase=Phase.STARTING,
    ),
    "a never-retry exit code (CONFIG) halts the tree with that code": History(
        events=[*BOOT, "exit recorder 78", "exit sender 0", "exit scheduler 0", "exit ingest 0"],
        actions=[*BOOTED, "terminate sender", "terminate scheduler", "terminate ingest"],
        phase=Phase.HALTED,
        exit_code=78,
        states={"recorder": ChildState.FATAL, "sender": ChildState.EXITED},
    ),
    "a stage that cannot boot (BOOT) halts the tree mid start order": History(
        events=["ready recorder", "exit sender 3", "exit recorder 0"],
        actions=["spawn recorder", "spawn sender", "terminate recorder"],
        phase=Phase.HALTED,
        exit_code=3,
        states={"sender": ChildState.FATAL, "scheduler": ChildState.STOPPED, "ingest": ChildState.STOPPED},
    ),
}


@pytest.mark.parametrize("history", HISTORIES.values(), ids=HISTORIES.keys())
def test_history(history: History) -> None:
    script = Script().play(history.events)
    assert script.actions == history.actions
    assert script.tree.phase is history.phase
    assert script.tree.exit_code == history.exit_code
    for name, state in history.states.items():
        assert script.tree.states[name] is state, name


# One crash-loop cycle: the sender dies while starting, the tree restarts after the backoff.
SENDER_DIES_AT_BOOT = ["ready recorder", "exit sender {code}", "exit recorder 0", "sleep"]
CYCLE_ACTIONS = ["spawn sender", "terminate recorder", "fresh queues", "spawn recorder"]


@pytest.mark.parametrize(("code", "exit_code"), [(2, 2), (-9, int(ExitCode.CRASH))], ids=["exit 2", "SIGKILL"])
def test_a_crash_loop_gives_up_with_the_stages_code(code: int, exit_code: int) -> None:
    cycle = [event.format(code=code) for event in SENDER_DIES_AT_BOOT]
    # Given a sender that dies every time it starts: max_restarts restarts, then one more death
    script = Script().play([*cycle * POLICY.max_restarts, "ready recorder", f"exit sender {code}"])
    # Then the tree gives up: it drains what is left and exits with the sender's code (1 when killed)
    given_up = script.tree.phase
    assert script.tree.states["sender"] is ChildState.FATAL
    script.play(["exit recorder 0"])
    assert (given_up, script.tree.phase) == (Phase.STOPPING, Phase.HALTED)
    assert script.tree.exit_code == exit_code
    restarts = CYCLE_ACTIONS * POLICY.max_restarts
    assert script.actions == ["spawn recorder", *restarts, "spawn sender", "terminate recorder"]


def test_restart_delays_grow_then_reset_after_a_healthy_stretch() -> None:
    script = Script().play(BOOT)
    died_at: list[float] = []
    for _ in range(2):
        died_at.append(script.now)
        script.play(["exit sender -9", "exit recorder 0", "exit scheduler 0", "exit ingest 0", "sleep", *BOOT])
    # Healthy for longer than healthy_after_s: the next death is a fresh failure, not a flap.
    script.play(["sleep 100"])
    died_at.append(script.now)
    script.play(["exit sender -9", "exit recorder 0", "exit scheduler 0", "exit ingest 0", "sleep"])
    restarted_at = script.when("spawn recorder")[1:]
    delays = [start - death for start, death in zip(restarted_at, died_at, strict=True)]
    assert POLICY.min_delay_s * 0.5 <= delays[0] <= POLICY.min_delay_s
    assert POLICY.min_delay_s <= delays[1] <= 2 * POLICY.min_delay_s, "the second restart backs off longer"
    assert delays[2] <= POLICY.min_delay_s, "back to the shortest delay after running healthy"


def test_the_stop_deadline_is_the_shutdown_timeout_and_a_kill_is_repeated_until_reaped() -> None:
    script = Script().play([*BOOT, "sleep 10", "SIGTERM", "sleep", "sleep"])
    assert script.when("terminate sender") == [10.0]
    assert script.when("kill sender") == [10.0 + SHUTDOWN_TIMEOUT_S, 10.0 + SHUTDOWN_TIMEOUT_S + 5.0]


def test_a_stop_during_a_teardown_keeps_the_teardowns_earlier_kill() -> None:
    # Given a tree restart began at t=10 (its survivors get 2 s)
    script = Script().play([*BOOT, "sleep 10", "exit sender -9", "sleep 1", "SIGTERM", "sleep"])
    # Then the survivors are TERMed again, but killed at the teardown's deadline, not 4.5 s later
    assert script.when("terminate recorder") == [10.0, 11.0]
    assert script.when("kill recorder") == [12.0]
    assert script.tree.phase is Phase.STOPPING


def test_a_stage_that_never_says_ready_is_killed_once_at_its_boot_deadline() -> None:
    # Given the sender is spawned at t=5 (when the recorder says ready) and never says ready
    script = Script().play(["sleep 5", "ready recorder", "sleep"])
    assert script.when("spawn sender") == [5.0]
    assert script.when("kill sender") == [5.0 + POLICY.boot_timeout_s]
    # Its death comes back through on_exit; until then nothing else is due.
    assert script.tree.next_deadline() is None


def test_halt_drains_and_keeps_its_code_even_when_every_stage_exits_0() -> None:
    script = Script().play(BOOT)
    script.tree.halt("giving up for a reason", 3, script.now)
    script.play(["exit ingest 0", "exit scheduler 0", "exit sender 0", "exit recorder 0"])
    assert script.actions == [*BOOTED, *ALL_TERMINATED]
    assert script.tree.phase is Phase.HALTED
    assert script.tree.exit_code == 3


def test_a_ready_from_a_stage_not_starting_is_ignored() -> None:
    script = Script().play([*BOOT, "ready sender", "ready ingest"])
    assert script.actions == BOOTED
    assert script.tree.phase is Phase.RUNNING


LOGGED = {
    "a tree restart and a stop, with a straggler killed": (
        [
            *[*BOOT, "exit sender -9", "exit recorder 0", "exit scheduler 0", "exit ingest 0", "sleep", *BOOT],
            *["SIGTERM", "exit ingest 0", "exit scheduler 0", "exit recorder 0", "sleep", "exit sender -9"],
        ],
        [
            *[("INFO", f"{name} is ready") for name in STAGES],
            ("INFO", "all stages running"),
            ("WARNING", "sender killed by SIGKILL; restarting the tree in 0.3s (1/3 in window)"),
            *[("INFO", f"{name} exited (code=0)") for name in ("recorder", "scheduler", "ingest")],
            *[("INFO", f"{name} is ready") for name in STAGES],
            ("INFO", "all stages running"),
            ("INFO", "SIGTERM received: draining (deadline 4.5s)"),
            *[("INFO", f"{name} exited (code=0)") for name in ("ingest", "scheduler", "recorder")],
            ("WARNING", "sender did not stop in time; killing it"),
            ("INFO", "sender killed by SIGKILL"),
        ],
    ),
    "a stage that never says ready": (
        ["ready recorder", "sleep"],
        [("INFO", "recorder is ready"), ("ERROR", "sender did not become ready in 30s; killing it")],
    ),
    "a never-retry exit": (
        [*BOOT, "exit recorder 78"],
        [
            *[("INFO", f"{name} is ready") for name in STAGES],
            ("INFO", "all stages running"),
            ("ERROR", "recorder exited (code=78): not restarting"),
        ],
    ),
}


@pytest.mark.parametrize(("events", "lines"), LOGGED.values(), ids=LOGGED.keys())
def test_every_transition_is_logged_once_with_its_facts(
    caplog: pytest.LogCaptureFixture, events: list[str], lines: list[tuple[str, str]]
) -> None:
    caplog.set_level(logging.INFO, logger="supervisor")
    Script().play(events)
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "supervisor"] == lines


def test_the_restart_delay_is_the_trackers() -> None:
    script = Script().play([*BOOT, "exit sender -9", "exit recorder 0", "exit scheduler 0", "exit ingest 0", "sleep"])
    assert script.when("spawn recorder") == [0.0, backoff_delay_s(POLICY, 0, random.Random(1))]


def test_without_a_tracker_the_tree_applies_the_policy_it_was_given() -> None:
    cycle = [event.format(code=2) for event in SENDER_DIES_AT_BOOT]
    script = Script(seeded=False).play([*cycle * POLICY.max_restarts, "ready recorder", "exit sender 2"])
    assert script.tree.states["sender"] is ChildState.FATAL, "max_restarts is 3 here, not the default 5"


def test_a_stage_waiting_out_its_backoff_shows_as_backoff_and_starts_only_after_it() -> None:
    script = Script().play([*BOOT, "exit ingest 1", "sleep 0.1"])
    assert script.tree.states["ingest"] is ChildState.BACKOFF  # what /ready shows meanwhile
    assert script.actions == BOOTED, "the shortest delay is 0.25 s"
    script.play(["sleep"])
    assert script.actions == [*BOOTED, "spawn ingest"]
    assert script.tree.next_deadline() == script.now + POLICY.boot_timeout_s, "its boot deadline is next"


def test_a_death_with_no_survivors_restarts_after_the_backoff() -> None:
    script = Script().play(["exit recorder -9", "sleep"])
    assert script.actions == ["spawn recorder", "fresh queues", "spawn recorder"]
    assert script.tree.phase is Phase.STARTING


def test_a_teardown_kills_its_survivors_once_and_then_waits_for_their_deaths() -> None:
    script = Script().play([*BOOT, "exit sender -9", "sleep"])
    assert script.when("kill recorder") == [2.0]
    assert script.tree.next_deadline() is None


def test_a_stop_after_the_teardowns_kill_kills_again_at_the_stop_deadline() -> None:
    # Given a teardown whose survivors were killed at t=2 but are not reaped yet
    script = Script().play([*BOOT, "exit sender -9", "sleep", "SIGTERM", "sleep"])
    # Then the stop gives them the shutdown timeout, and kills again
    assert script.tree.phase is Phase.STOPPING
    assert script.when("kill recorder") == [2.0, 2.0 + SHUTDOWN_TIMEOUT_S]


def test_a_halted_tree_has_nothing_left_to_do() -> None:
    # The shell ticks once more after the last exit.
    script = Script().play([*BOOT, "SIGTERM", "exit ingest 0", "exit scheduler 0", "exit sender 0", "exit recorder 0"])
    script.tree.tick(script.now + 100)
    assert script.tree.next_deadline() is None
    assert script.actions == [*BOOTED, *ALL_TERMINATED]


def corrupt_running(tree: Tree) -> None:
    del tree.children["ingest"]  # RUNNING, with a stage gone


def corrupt_stopping(tree: Tree) -> None:
    tree.stop("SIGTERM received", 0.0)
    tree.start_queue = ["ingest"]  # STOPPING, with a start pending


def corrupt_stopping_child(tree: Tree) -> None:
    tree.stop("SIGTERM received", 0.0)
    tree.children["sender"].state = tree.states["sender"] = ChildState.RUNNING  # never asked to stop


def corrupt_halted(tree: Tree) -> None:
    tree.stop("SIGTERM received", 0.0)
    for name in STAGES:
        tree.on_exit(name, 0, 0.0)
    tree.exit_code = None  # HALTED without an exit code


def corrupt_backoff(tree: Tree) -> None:
    tree.on_exit("ingest", 1, 0.0)
    tree.start_queue = []  # BACKOFF with nothing to start


def corrupt_starting(tree: Tree) -> None:
    tree.phase = Phase.STARTING
    for name in ("scheduler", "ingest"):
        tree.children[name] = Child(ChildState.STARTING, 30.0)  # two stages booting at once
        tree.states[name] = ChildState.STARTING


@pytest.mark.parametrize(
    "corrupt",
    [corrupt_running, corrupt_stopping, corrupt_stopping_child, corrupt_halted, corrupt_backoff, corrupt_starting],
)
def test_the_invariant_check_catches_a_tree_at_odds_with_its_children(corrupt: Callable[[Tree], None]) -> None:
    # The histories above rely on check(): it must see each way the books can be off.
    script = Script().play(BOOT)
    corrupt(script.tree)
    with pytest.raises(InvariantBroken):
        script.tree.check()
