"""Simulated agents for tests and demos of scale: N instances of one scale set, each speaking the
real fleet protocol to a real coordinator (hello, heartbeats, progress), without libpcap.

Each instance answers a StartCapture with Running, then reports progress once a second as a real
agent does, at a packet rate of its own (instance i: `rate * (i + 1)` packets a second, 100
bytes each; `rates` sets chosen instances' rates; at 0 it reports nothing, as an idle agent), so that the busiest instances are known in
advance; a StopCapture is answered with Stopped and the stop's reason. They run on an event loop in a thread of their own.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from fleetcap.core import transport
from fleetcap.core.naming import rfc3339_us
from fleetcap.v1 import captures_pb2, fleet_pb2, fleet_pb2_grpc

AGENTS_PER_CONNECTION = 50  # below the coordinator's cap of concurrent streams per connection
PACKET_BYTES = 100


class _Instance:
    def __init__(self, channel: Any, metadata: tuple[tuple[str, str], ...], vmss: str, resource_group: str, index: int, rate: int):
        """rate: this instance's packets per second."""
        self.identity = fleet_pb2.AgentIdentity(resource_group=resource_group, vmss_name=vmss, instance_id=str(index))
        self.call = fleet_pb2_grpc.FleetStub(channel).Connect(metadata=metadata)
        self.rate = rate
        self.lock = asyncio.Lock()
        self.running: dict[str, asyncio.Task[None]] = {}

    async def write(self, msg: fleet_pb2.AgentMessage) -> None:
        async with self.lock:  # one write at a time on a stream, as the real agent's outbox does
            await self.call.write(msg)

    async def progress(self, start: fleet_pb2.StartCapture, status: str, packets: int, reason: str = "", at_us: int = 0) -> None:
        await self.write(
            fleet_pb2.AgentMessage(
                progress=fleet_pb2.CaptureProgress(
                    capture_name=start.capture_name,
                    capture_id=start.capture_id,
                    status=captures_pb2.InstanceStatus(
                        packet_capture_status=status,
                        stop_reason=reason,
                        packets_captured=packets,
                        bytes_captured=24 + packets * PACKET_BYTES,
                        counters_time=rfc3339_us(at_us) if at_us else "",
                    ),
                )
            )
        )

    async def report(self, start: fleet_pb2.StartCapture) -> None:
        if not self.rate:
            return  # no traffic, nothing to report: a real agent sends progress only on a change
        began = time.time()
        while True:
            await asyncio.sleep(1)
            now = time.time()  # the counters as of now, timed as a real agent times them
            await self.progress(start, "Running", int((now - began) * self.rate), at_us=int(now * 1e6))

    async def run(self, connected: list[int], total: int, ready: asyncio.Event) -> None:
        await self.call.write(
            fleet_pb2.AgentMessage(
                hello=fleet_pb2.AgentHello(identity=self.identity, hostname="simulated", interface="lo", addresses=["127.0.0.1"])
            )
        )
        welcome = await self.call.read()
        connected[0] += 1
        if connected[0] == total:
            ready.set()
        beat = asyncio.ensure_future(self._heartbeat(welcome.welcome.heartbeat_interval_ms / 1000))
        starts: dict[str, fleet_pb2.StartCapture] = {}
        try:
            while True:
                msg = await self.call.read()
                if msg is None or not hasattr(msg, "HasField"):
                    return
                if msg.HasField("start"):
                    starts[msg.start.capture_id] = msg.start
                    await self.progress(msg.start, "Running", 0)
                    self.running[msg.start.capture_id] = asyncio.ensure_future(self.report(msg.start))
                elif msg.HasField("stop") and msg.stop.capture_id in self.running:
                    self.running.pop(msg.stop.capture_id).cancel()
                    start = starts[msg.stop.capture_id]
                    await self.progress(start, "Stopped", 0, msg.stop.reason)
        finally:
            beat.cancel()
            for task in self.running.values():
                task.cancel()

    async def _heartbeat(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.write(fleet_pb2.AgentMessage(heartbeat=fleet_pb2.Heartbeat()))


class SimulatedScaleSet:
    """`with SimulatedScaleSet(address, agent_token, "big", 120):` — connected on entry."""

    def __init__(
        self,
        address: str,
        agent_token: str,
        vmss: str,
        count: int,
        *,
        resource_group: str = "rg1",
        rate: int = 10,
        rates: dict[int, int] | None = None,
    ):
        self.address, self.token, self.vmss, self.count = address, agent_token, vmss, count
        self.resource_group = resource_group
        self.rates = {i: (rates or {}).get(i, rate * (i + 1)) for i in range(count)}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="simagents", daemon=True)
        self._tasks: list[asyncio.Task[None]] = []
        self._channels: list[Any] = []

    async def _start(self) -> asyncio.Event:
        metadata = ((transport.AUTHORIZATION_KEY, f"Bearer {self.token}"),)
        self._channels = [transport.aio_channel(self.address, dedicated=True) for _ in range(-(-self.count // AGENTS_PER_CONNECTION))]
        instances = [
            _Instance(self._channels[i // AGENTS_PER_CONNECTION], metadata, self.vmss, self.resource_group, i, self.rates[i])
            for i in range(self.count)
        ]
        connected, ready = [0], asyncio.Event()
        self._tasks = [asyncio.ensure_future(x.run(connected, self.count, ready)) for x in instances]
        return ready

    def __enter__(self) -> SimulatedScaleSet:
        self._thread.start()
        ready = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()
        asyncio.run_coroutine_threadsafe(asyncio.wait_for(ready.wait(), 60), self._loop).result()
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for ch in self._channels:
                await ch.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
