"""This agent's clock against the coordinator's, measured over the control stream.

NTP's exchange: the agent stamps a probe with its clock (t0); the coordinator echoes it with the
times it read it (t1) and answered (t2); the agent reads the echo at t3. The offset to add to
the agent's times is ((t1 - t0) + (t2 - t3)) / 2, exact when both legs take the same time and
wrong by at most half the round trip ((t3 - t0) - (t2 - t1)) otherwise. Of the last 16
exchanges the 3 fastest are kept: their median offset is the estimate, and half the slowest of
their round trips its uncertainty.
"""

from __future__ import annotations

import collections
import dataclasses
import statistics
import time

from fleetcap.v1 import fleet_pb2

KEPT = 16
BEST = 3
# Echoes of probes older than this are ignored (a probe lost on a dropped stream).
PROBE_TTL_NS = 10_000_000_000


@dataclasses.dataclass(frozen=True)
class Sample:
    offset_ns: int
    delay_ns: int


class Clock:
    def __init__(self, test_shift_s: float = 0.0):
        """`test_shift_s` moves this agent's clock (test only: FLEETCAP_TEST_CLOCK_OFFSET_S):
        the times it stamps on probes and on the packets it writes."""
        self.shift_ns = round(test_shift_s * 1e9)
        self.samples: collections.deque[Sample] = collections.deque(maxlen=KEPT)
        self.offset_us = 0
        self.uncertainty_us = 0  # 0 = not measured yet
        self._seq = 0
        self._sent: dict[int, int] = {}

    def now_ns(self) -> int:
        return time.time_ns() + self.shift_ns

    def probe(self) -> fleet_pb2.ClockProbe:
        self._seq += 1
        t0 = self.now_ns()
        self._sent = {s: t for s, t in self._sent.items() if t0 - t < PROBE_TTL_NS}
        self._sent[self._seq] = t0
        return fleet_pb2.ClockProbe(seq=self._seq, agent_send_ns=t0)

    def echo(self, e: fleet_pb2.ClockEcho) -> bool:
        """Takes one echo; False (and nothing changes) for one that answers no probe of ours or
        whose times make no sense: the agent trusts nothing it is sent."""
        t3 = self.now_ns()
        t0 = self._sent.pop(e.seq, None)
        if t0 is None or t0 != e.agent_send_ns:
            return False
        t1, t2 = e.coordinator_receive_ns, e.coordinator_send_ns
        delay = (t3 - t0) - (t2 - t1)
        if t2 < t1 or delay < 0:
            return False
        self.samples.append(Sample(((t1 - t0) + (t2 - t3)) // 2, delay))
        best = sorted(self.samples, key=lambda s: s.delay_ns)[:BEST]
        self.offset_us = round(statistics.median(s.offset_ns for s in best) / 1000)
        self.uncertainty_us = max(1, -(-max(s.delay_ns for s in best) // 2000))  # half a round trip, rounded up
        return True
