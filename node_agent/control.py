"""The agent's control stream: it dials out to a coordinator replica, says hello with what it
knows, then sends heartbeats and progress up and takes start and stop commands down. When the
stream breaks it moves to the next replica, with a short backoff.

The data path (uploads) uses a channel of its own to the same replica, so a long upload never
delays a stop or a heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import socket

import grpc
import grpc.aio

from fleetcap.core import transport
from fleetcap.core.auth import COORDINATOR_SERVER_NAME
from fleetcap.core.metrics import version
from fleetcap.core.transport import ClientCredentials
from fleetcap.node_agent.active_capture import ActiveCapture
from fleetcap.node_agent.host import interface_addresses, interface_counters
from fleetcap.node_agent.runner import CaptureRunner
from fleetcap.v1 import fleet_pb2, fleet_pb2_grpc

log = logging.getLogger(__name__)

VERSION = version()  # the installed package's, as fleetcap_build_info says
PROGRESS_INTERVAL_S = 1.0
# The clock is measured with 8 probes 50 ms apart at every connection, then 4 a minute.
CLOCK_BURST, CLOCK_PROBE_GAP_S, CLOCK_PERIOD_S = 8, 0.05, 60.0
# A restarted coordinator is found within 2 s; a dead one costs a connection attempt per 2 s.
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.2, 2.0


def jittered(delay: float, rng: random.Random) -> float:
    """The wait before a reconnect: the backoff's delay spread uniformly over [delay/2, 3·delay/2],
    so that a fleet whose coordinator went away does not come back in one burst."""
    return delay * rng.uniform(0.5, 1.5)


ControlCall = grpc.aio.StreamStreamCall[fleet_pb2.AgentMessage, fleet_pb2.CoordinatorMessage]


class Coordinators:
    """The coordinator replicas an agent may talk to, the current one, and a data channel to
    each (created on first use). Over TLS, a peer is a coordinator only if its certificate
    carries the coordinators' reserved name (auth.COORDINATOR_SERVER_NAME): a gateway's or
    another holder's certificate from the same CA is refused in the handshake."""

    def __init__(self, addresses: str, credentials: ClientCredentials | None = None):
        self.addresses = [a.strip() for a in addresses.split(",") if a.strip()]
        self.credentials = dataclasses.replace(credentials or ClientCredentials(), server_name=COORDINATOR_SERVER_NAME)
        self.metadata = self.credentials.metadata()
        self._current = 0
        self._data_channels: dict[str, grpc.aio.Channel] = {}

    @property
    def current(self) -> str:
        return self.addresses[self._current % len(self.addresses)]

    def next(self) -> None:
        self._current += 1

    def data_stub(self) -> fleet_pb2_grpc.FleetStub:
        """The data path follows the control path to the same coordinator replica."""
        address = self.current
        if address not in self._data_channels:
            self._data_channels[address] = transport.aio_channel(address, credentials=self.credentials, dedicated=True)
        return fleet_pb2_grpc.FleetStub(self._data_channels[address])

    async def close(self) -> None:
        for channel in self._data_channels.values():
            await channel.close()


class ControlLoop:
    def __init__(self, identity: fleet_pb2.AgentIdentity, coordinators: Coordinators, runner: CaptureRunner):
        self.identity = identity
        self.coordinators = coordinators
        self.runner = runner
        self._outbox: asyncio.Queue[fleet_pb2.AgentMessage] = asyncio.Queue()
        self._dirty: set[str] = set()
        self._rng = random.Random()
        runner.send = self.send

    def send(self, message: fleet_pb2.AgentMessage) -> None:
        """Queues a message on the current stream (lost if it drops; the sender retries)."""
        self._outbox.put_nowait(message)

    def report(self, cap: ActiveCapture) -> None:
        """Sends a capture's progress now, and again on the next tick, in case this stream was
        already gone (the runner's on_report)."""
        self._outbox.put_nowait(fleet_pb2.AgentMessage(progress=cap.progress()))
        self._dirty.add(cap.start.capture_name)

    async def run(self, stop: asyncio.Event) -> None:
        delay = RECONNECT_MIN_S
        while not stop.is_set():
            connected = await self._connect_once(stop)
            if stop.is_set():
                break
            delay = RECONNECT_MIN_S if connected else min(delay * 2, RECONNECT_MAX_S)
            wait = jittered(delay, self._rng)
            self.coordinators.next()  # the next replica, if there are several
            log.info("reconnecting to %s in %.1fs", self.coordinators.current, wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)

    async def _connect_once(self, stop: asyncio.Event) -> bool:
        """One control-stream connection; returns whether it got as far as the welcome."""
        address = self.coordinators.current
        channel = transport.aio_channel(address, credentials=self.coordinators.credentials)
        call = fleet_pb2_grpc.FleetStub(channel).Connect(metadata=self.coordinators.metadata)
        tasks: list[asyncio.Future[object]] = []
        welcomed = False
        try:
            runner = self.runner
            hello = fleet_pb2.AgentHello(
                identity=self.identity,
                hostname=socket.gethostname(),
                agent_version=VERSION,
                interface=runner.interface,
                addresses=interface_addresses(runner.interface),
                captures=[c.progress() for c in runner.captures.values()],
            )
            await call.write(fleet_pb2.AgentMessage(hello=hello))
            first = await call.read()
            if first is grpc.aio.EOF or not first.HasField("welcome"):
                return False
            welcomed = True
            log.info("connected to %s as %s", address, first.welcome.instance_resource_id)
            self._outbox = asyncio.Queue()
            self._dirty.update(runner.captures)  # everything is reported once more after the hello
            interval = first.welcome.heartbeat_interval_ms / 1000
            tasks = [
                asyncio.ensure_future(self._write(call)),
                asyncio.ensure_future(self._heartbeat(interval)),
                asyncio.ensure_future(self._progress()),
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self._measure_clock()),
                asyncio.ensure_future(self._read(call)),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t.exception() and not isinstance(t.exception(), grpc.aio.AioRpcError):
                    log.error("agent task failed", exc_info=t.exception())
        except grpc.aio.AioRpcError as e:
            # A coordinator whose certificate does not chain to --tls-ca fails the handshake:
            # UNAVAILABLE with the TLS error, and the agent never falls back to plaintext.
            log.warning("control stream to %s: %s %s", address, e.code().name, e.details())
        finally:
            for t in tasks:
                t.cancel()
            call.cancel()
            await channel.close()
        return welcomed

    async def _write(self, call: ControlCall) -> None:
        while True:
            await call.write(await self._outbox.get())

    async def _heartbeat(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            counters = interface_counters(self.runner.interface)
            self._outbox.put_nowait(fleet_pb2.AgentMessage(heartbeat=fleet_pb2.Heartbeat(counters=counters)))

    async def _measure_clock(self) -> None:
        """Probes the coordinator's clock: a burst at every connection, then one a minute;
        after each, every capture is reported again with the offset (node_agent/clock.py)."""
        first = True
        while True:
            for _ in range(CLOCK_BURST if first else CLOCK_BURST // 2):
                self._outbox.put_nowait(fleet_pb2.AgentMessage(clock_probe=self.runner.clock.probe()))
                await asyncio.sleep(CLOCK_PROBE_GAP_S)
            await asyncio.sleep(CLOCK_PROBE_GAP_S)  # the last echo
            self._dirty.update(self.runner.captures)
            first = False
            await asyncio.sleep(CLOCK_PERIOD_S)

    async def _progress(self) -> None:
        """Sends the progress of running captures about once a second, and state changes at once."""
        while True:
            for name, cap in list(self.runner.captures.items()):
                running = cap.session is not None and not cap.session.done.is_set()
                uploading = any(not u.state.committed and not u.state.failed for u in cap.uploaders.values())
                if running or uploading or name in self._dirty:
                    self._dirty.discard(name)
                    self._outbox.put_nowait(fleet_pb2.AgentMessage(progress=cap.progress()))
            await asyncio.sleep(PROGRESS_INTERVAL_S)

    async def _read(self, call: ControlCall) -> None:
        while True:
            message = await call.read()
            if not isinstance(message, fleet_pb2.CoordinatorMessage):  # grpc.aio.EOF
                return
            if message.HasField("start"):
                self.runner.start(message.start)
            elif message.HasField("stop"):
                self.runner.stop(message.stop)
            elif message.HasField("fetch"):
                self.runner.fetch(message.fetch)
            elif message.HasField("trigger"):
                self.runner.trigger(message.trigger)
            elif message.HasField("clock_echo"):
                self.runner.clock.echo(message.clock_echo)
            elif message.HasField("budget_grant"):
                self.runner.budget_grant(message.budget_grant)
