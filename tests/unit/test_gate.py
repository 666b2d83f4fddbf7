"""The send gate: outage pauses grow and reset; account pauses hold."""

from __future__ import annotations

from pipeline.gate import OUTAGE_MAX_PAUSE_S, SendGate


def test_outage_pauses_grow_to_a_cap_and_a_success_resets_them() -> None:
    gate = SendGate(clock=lambda: 0.0)
    pauses = [gate.on_transient_failure(now=0.0, reason="InternalFailure") for _ in range(12)]
    assert pauses[0] <= 0.25 and max(pauses) <= OUTAGE_MAX_PAUSE_S
    assert gate.pause_s(0.0) > 0
    gate.on_success()
    assert gate.failures == 0


def test_a_longer_pause_wins_and_expires() -> None:
    gate = SendGate(clock=lambda: 0.0)
    gate.pause(10.0, 60.0, "SendingPausedException")
    gate.pause(10.0, 1.0, "shorter")
    assert gate.reason == "SendingPausedException"
    assert gate.pause_s(69.0) == 1.0 and gate.pause_s(70.0) == 0.0
