"""The restart policy, replayed as scripted histories with a fake clock."""

from __future__ import annotations

import random
import signal

from config.settings import RestartPolicy
from pipeline.exitcodes import ExitCode
from pipeline.supervision import RestartTracker, Scope, backoff_delay_s

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
    tracker = RestartTracker(POLICY, random.Random(1))
    decisions = [tracker.on_exit("sender", 1, False, now=float(t)) for t in range(6)]
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
