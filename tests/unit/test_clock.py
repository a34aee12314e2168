"""The agent's clock measurement: NTP's arithmetic on exact numbers, the fastest exchanges
kept, and echoes that answer no probe of ours, or make no sense, refused."""

from __future__ import annotations

from fleetcap.node_agent.clock import Clock
from fleetcap.v1 import fleet_pb2


def echo_for(
    clock: Clock, probe: fleet_pb2.ClockProbe, *, offset_ns: int, out_ns: int, back_ns: int, hold_ns: int = 1000
) -> fleet_pb2.ClockEcho:
    """The coordinator's echo if its clock is offset_ns ahead and the legs take out/back ns."""
    t1 = probe.agent_send_ns + out_ns + offset_ns
    return fleet_pb2.ClockEcho(
        seq=probe.seq, agent_send_ns=probe.agent_send_ns, coordinator_receive_ns=t1, coordinator_send_ns=t1 + hold_ns
    )


def test_the_offset_is_the_median_of_the_three_fastest_exchanges(monkeypatch):
    clock = Clock()
    now = [1_000_000_000_000]
    monkeypatch.setattr(clock, "now_ns", lambda: now[0])
    legs = [(400_000, 400_000), (50_000, 50_000), (3_000_000, 1_000_000), (60_000, 40_000), (45_000, 55_000)]
    for out_ns, back_ns in legs:
        p = clock.probe()
        e = echo_for(clock, p, offset_ns=-2_000_000_000, out_ns=out_ns, back_ns=back_ns)
        now[0] = p.agent_send_ns + out_ns + 1000 + back_ns  # t3 on the agent's clock
        assert clock.echo(e)
        now[0] += 50_000_000
    # The three fastest round trips are 100 µs each; their offsets are -2 s, -2 s + 10 µs and -2 s - 5 µs.
    assert (clock.offset_us, clock.uncertainty_us) == (-2_000_000, 50)


def test_an_echo_of_no_probe_of_ours_or_with_impossible_times_is_refused():
    clock = Clock(test_shift_s=2)
    p = clock.probe()
    assert p.agent_send_ns - clock.now_ns() < 0  # the shift moves the probe's stamp too
    forged = [
        fleet_pb2.ClockEcho(seq=p.seq + 1, agent_send_ns=p.agent_send_ns, coordinator_receive_ns=1, coordinator_send_ns=2),
        fleet_pb2.ClockEcho(seq=p.seq, agent_send_ns=p.agent_send_ns - 1, coordinator_receive_ns=1, coordinator_send_ns=2),
    ]
    for e in forged:
        assert not clock.echo(e)
    p2 = clock.probe()
    assert not clock.echo(
        fleet_pb2.ClockEcho(seq=p2.seq, agent_send_ns=p2.agent_send_ns, coordinator_receive_ns=5, coordinator_send_ns=4)
    )  # sent before read
    p3 = clock.probe()
    assert not clock.echo(
        fleet_pb2.ClockEcho(
            seq=p3.seq,
            agent_send_ns=p3.agent_send_ns,  # a longer hold than trip
            coordinator_receive_ns=0,
            coordinator_send_ns=10**18,
        )
    )
    assert (clock.offset_us, clock.uncertainty_us, len(clock.samples)) == (0, 0, 0)
    p4 = clock.probe()
    assert clock.echo(echo_for(clock, p4, offset_ns=0, out_ns=0, back_ns=0, hold_ns=0))
    assert not clock.echo(echo_for(clock, p4, offset_ns=0, out_ns=0, back_ns=0, hold_ns=0))  # each probe answers once
