"""The restart policy, replayed as scripted histories with a fake clock."""

from __future__ import annotations

import multiprocessing
import random
import signal

import pytest

from config.settings import RestartPolicy
from pipeline.channels import STAGES
from pipeline.exitcodes import ExitCode
from pipeline.supervision import ChildState, RestartTracker, Scope, StageStates, backoff_delay_s, describe_exit

POLICY = RestartPolicy(min_delay_s=0.5, max_delay_s=30, healthy_after_s=60, max_restarts=5, window_s=120)


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    delays = [backoff_delay_s(POLICY, n, rng) for n in range(10)]
    for n, delay in enumerate(delays):
        base = min(30, 0.5 * 2**n)
        assert base * 0.5 <= delay <= base
    assert max(delays) <= 30


def test_sigkill_restarts_the_tree_and_a_clean_crash_of_ingest_restarts_it_alone() -> None:
    tracker = RestartTracker(POLICY, random.Random(1))
    assert tracker.on_exit("sender", -signal.SIGKILL, False, now=0).scope is Scope.TREE
    assert tracker.on_exit("ingest", ExitCode.CRASH, True, now=1).scope is Scope.CHILD
    # A clean crash of a stage that holds claims still restarts everything.
    assert tracker.on_exit("sender", ExitCode.CRASH, False, now=2).scope is Scope.TREE


def test_flapping_gives_up_with_the_reason() -> None:
    # A monotonic clock is far from 0 when the flapping starts.
    tracker = RestartTracker(POLICY, random.Random(1))
    decisions = [tracker.on_exit("sender", 1, False, now=10_000.0 + t) for t in range(6)]
    assert [d.give_up for d in decisions] == [False] * 5 + [True]
    assert "5 restarts in 120s" in decisions[-1].reason
    assert decisions[-1].exit_code == 1


def test_restarts_outside_the_window_do_not_count() -> None:
    tracker = RestartTracker(POLICY, random.Random(1))
    for t in (0, 200, 400, 600, 800, 1000, 1200):
        assert not tracker.on_exit("sender", 1, False, now=float(t)).give_up


def test_backoff_resets_only_after_a_healthy_stretch() -> None:
    tracker = RestartTracker(POLICY, random.Random(1))
    tracker.on_exit("sender", 1, False, now=0)
    tracker.on_exit("sender", 1, False, now=1)
    assert tracker.attempt == 2
    tracker.on_all_running(now=2)
    tracker.on_exit("sender", 1, False, now=10)  # not healthy long enough
    assert tracker.attempt == 3
    tracker.on_all_running(now=11)
    decision = tracker.on_exit("sender", 1, False, now=200)  # healthy for over a minute
    assert tracker.attempt == 1 and decision.delay_s <= POLICY.min_delay_s


def test_config_and_boot_exits_are_never_retried() -> None:
    tracker = RestartTracker(POLICY)
    for code in (ExitCode.CONFIG, ExitCode.BOOT):
        decision = tracker.on_exit("recorder", code, False, now=0)
        assert decision.give_up and decision.exit_code == code


def test_a_short_healthy_stretch_late_in_the_supervisors_life_does_not_reset_the_backoff() -> None:
    tracker = RestartTracker(POLICY, random.Random(1))
    tracker.on_exit("sender", 1, False, now=10_000)
    tracker.on_all_running(now=10_001)
    tracker.on_exit("sender", 1, False, now=10_010)  # running for 9 s, not 60
    assert tracker.attempt == 2


def test_a_seeded_tracker_decides_the_same_delays_every_time() -> None:
    def delays(seed: int) -> list[float]:
        tracker = RestartTracker(POLICY, random.Random(seed))
        return [tracker.on_exit("sender", 1, False, now=float(t)).delay_s for t in range(4)]

    assert delays(3) == delays(3)
    assert backoff_delay_s(POLICY, 2, random.Random(3)) == backoff_delay_s(POLICY, 2, random.Random(3))


def test_each_decision_states_its_facts_for_the_log() -> None:
    # The supervisor logs these as they are: one line per transition, with the facts (STYLE.md).
    tracker = RestartTracker(POLICY, random.Random(1))
    assert tracker.on_exit("sender", 1, False, now=0).reason == (
        "sender exited (code=1); restarting the tree in 0.3s (1/5 in window)"
    )
    assert tracker.on_exit("ingest", 1, True, now=1).reason == (
        "ingest exited (code=1); restarting it in 0.9s (2/5 in window)"
    )
    assert tracker.on_exit("recorder", 78, False, now=2).reason == "recorder exited (code=78): not restarting"


@pytest.mark.parametrize(
    ("code", "described"),
    [
        (None, "vanished"),
        (0, "exited (code=0)"),
        (1, "exited (code=1)"),
        (-signal.SIGKILL, "killed by SIGKILL"),
        (-999, "killed by signal 999"),
    ],
)
def test_an_exit_is_described_by_its_code_or_its_signal(code: int | None, described: str) -> None:
    assert describe_exit(code) == described


def test_stage_states_are_shared_one_per_stage_and_read_back_by_name() -> None:
    # Ingest's /ready reads this snapshot; every stage starts STOPPED.
    states = StageStates(multiprocessing.get_context("spawn"), STAGES)
    states.set("sender", ChildState.RUNNING)
    states.set("ingest", ChildState.BACKOFF)
    assert states.get("sender") is ChildState.RUNNING
    assert states.snapshot() == {
        "recorder": "stopped",
        "sender": "running",
        "scheduler": "stopped",
        "ingest": "backoff",
    }
