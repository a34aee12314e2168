"""The capture session's collaborators on their own: the fleet budget's gate and the flight
recorder's window (the session with both runs in test_capture_replay.py and test_agent_runner.py)."""

import threading
import time

import pytest

from fleetcap.node_agent.capture import budget_gate
from fleetcap.node_agent.capture.budget_gate import BudgetGate, Verdict
from fleetcap.node_agent.capture.flight_recorder import FlightRecorder, Trigger
from fleetcap.node_agent.capture.standby import TRIGGER_SLACK_S, Standby


def test_a_gate_without_a_budget_is_never_closed():
    gate = BudgetGate(0)
    assert (gate.enabled, gate.room(10**12)) == (False, -1)


def test_a_grant_lets_a_waiting_record_in_and_asks_are_not_repeated_while_pending():
    sent: list[tuple[str, int, int]] = []
    gate = BudgetGate(1000, lambda kind, amount, used: sent.append((kind, amount, used)))
    assert gate.room(400) == 600
    gate.ask(0, 400)
    gate.ask(0, 450)  # pending: not sent again before BUDGET_RETRY_S
    assert sent == [("request", 0, 400)]
    granted = threading.Timer(0.05, gate.grant, args=(800, False))
    granted.start()
    verdict = gate.wait(700, lambda: 900, lambda: False)  # 100 left, a 700-byte record: it waits
    granted.join()
    assert (verdict, gate.allowance, gate.last_grant) == (Verdict.FITS, 1800, 800)
    assert sent == [("request", 0, 400)]  # the wait's own ask came while the first was still pending


def test_a_spent_budget_or_a_stop_ends_the_wait_unwritten():
    gate = BudgetGate(1000)
    gate.grant(0, True)
    assert gate.wait(200, lambda: 900, lambda: False) is Verdict.SPENT
    stopping = BudgetGate(1000)
    assert stopping.wait(200, lambda: 900, lambda: True) is Verdict.STOPPING


def test_an_idle_capture_gives_back_only_what_it_does_not_use(monkeypatch):
    sent: list[tuple[str, int, int]] = []
    gate = BudgetGate(1000, lambda kind, amount, used: sent.append((kind, amount, used)))
    gate.give_back(300)
    assert (sent, gate.allowance, gate.room(300)) == ([("return", 700, 300)], 300, 0)
    gate.give_back(300)  # nothing spare left
    monkeypatch.setattr(budget_gate, "BUDGET_RETRY_S", 0.0)
    gate.ask(50, 300)
    gate.grant(100, False)
    gate.grant(0, True)
    gate.give_back(300)  # spent: the fleet has nothing to take back
    assert sent == [("return", 700, 300), ("request", 50, 300)]


def test_a_recorder_takes_one_trigger_and_keeps_its_window():
    standby = Standby(window_s=60, ring_bytes=8 << 20)
    rec = FlightRecorder(standby, "pc")
    now = time.time()
    rec.segment_opened = now - standby.segment_age_s - 1
    assert rec.segment_due(packets=5, now=now)
    assert not rec.segment_due(packets=0, now=now)  # an empty segment is not closed
    assert rec.out_of_window(now - 60 - TRIGGER_SLACK_S - 1, now)
    assert not rec.out_of_window(now - 30, now)
    assert not rec.past_bound(10**9, 1 << 20)  # armed: no bound yet
    assert rec.take(now, 5, "ops") == Trigger(now, 5, "ops")
    assert rec.take(now + 1, 9, "other") is None  # a repeated trigger changes nothing
    assert rec.trigger == Trigger(now, 5, "ops")
    assert not rec.segment_due(packets=5, now=now + 3600)  # triggered: the ring no longer turns
    assert not rec.out_of_window(0.0, now)
    assert rec.past_bound((1 << 20) + (8 << 20), 1 << 20)
    assert not rec.past_bound((1 << 20) + (8 << 20) - 1, 1 << 20)
    assert not rec.past_bound(10**12, 0)  # no byte limit: no bound


def test_a_recorder_never_triggered_writes_nothing(tmp_path):
    from fleetcap.node_agent.capture.capture_root import CaptureRoot

    rec = FlightRecorder(Standby(window_s=10, ring_bytes=8 << 20), "pc")
    assert rec.write_window(CaptureRoot(str(tmp_path)), [], str(tmp_path / "pc.cap"), 0) is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("window_s", [1, 3600])
def test_the_tick_never_sleeps_past_a_second(window_s):
    rec = FlightRecorder(Standby(window_s=window_s, ring_bytes=8 << 20), "pc")
    assert 0 < rec.tick_s <= 1.0
