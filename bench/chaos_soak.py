"""Chaos soak: 1,000 simulated agents on two coordinator replicas and one etcd, captures one after
another on the whole scale set, while a replica is killed, etcd restarts and random agent
connections drop.

    python -m bench.chaos_soak [--agents 1000] [--seconds 600]

Real parts: etcd (its own process, restarted on the same port), two `fleetcap coordinator`
processes sharing it. The agents live in this process and speak the real fleet protocol, as
node_agent/control.py does: hello with every capture they have, heartbeats, progress once a
second, the time limit enforced by the agent itself (also while disconnected), a stop answered
with the stop's reason, a repeated start ignored, and on a broken stream a jittered reconnect to
the next replica.

The chaos, at fractions of the soak: every 5 s, 2 % of the agents lose their stream; at 20 %
replica B is killed (SIGKILL) and at 30 % started again; at 50 % etcd stops for 5 s and restarts;
at 70 % replica A is killed and at 80 % started again. Captures: a new one every 40 s, on all
instances, alternately ending by their 60 s time limit and stopped by the user 25 s after
creation (with a 300 s limit); the API is used through the SDK with both replicas' addresses.

Afterwards, for every capture and every instance, checked against what the agent itself did:
status Stopped, the stop reason (TimeExceeded or StoppedByUser), no error, the exact packet and
byte counts the agent last had; and no agent was asked to start a capture it had finished, or
one it never reported. Exit 1 on any difference, with the first ones printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import grpc

from bench.datapath_bench import ROOT, TOKENS, rss_mb, save_auth, wait_port
from deploy.localfleet import LocalFleet
from fleetcap.clients import sdk
from fleetcap.coordinator.state.embedded_etcd import EmbeddedEtcd
from fleetcap.core import transport
from fleetcap.core.transport import free_port
from fleetcap.v1 import captures_pb2, fleet_pb2, fleet_pb2_grpc

AGENTS_PER_CONNECTION = 50
PACKET_BYTES = 100
AGENT_TTL_S = 10
TIME_LIMIT_S = 60  # captures that end by their limit
USER_STOP_AFTER_S = 25  # captures the user stops (their limit: 300 s)
CREATE_EVERY_S = 40
T0 = [time.monotonic()]  # the soak's start, for the agents' traces


@dataclasses.dataclass
class Held:
    """One capture on one simulated agent: its packets are rate × whole seconds since its start,
    frozen when it stops."""

    start: fleet_pb2.StartCapture
    t0: float
    rate: int
    status: str = "Running"
    reason: str = ""
    packets: int = 0

    def tick(self, now: float) -> None:
        if self.status != "Running":
            return
        elapsed = now - self.t0
        limit = self.start.time_limit_s
        if limit and elapsed >= limit:
            self.packets, self.status, self.reason = limit * self.rate, "Stopped", "TimeExceeded"
        else:
            self.packets = int(elapsed) * self.rate

    def stop(self, now: float, reason: str) -> None:
        self.tick(now)
        if self.status == "Running":
            self.status, self.reason = "Stopped", reason

    def progress(self) -> fleet_pb2.CaptureProgress:
        return fleet_pb2.CaptureProgress(
            capture_name=self.start.capture_name,
            capture_id=self.start.capture_id,
            status=captures_pb2.InstanceStatus(
                packet_capture_status=self.status,
                stop_reason=self.reason,
                packets_captured=self.packets,
                bytes_captured=24 + self.packets * PACKET_BYTES,
            ),
        )


class ChaosAgent:
    def __init__(self, index: int, pools: list[list[Any]], metadata: tuple[tuple[str, str], ...], rng: random.Random):
        self.index, self.pools, self.metadata, self.rng = index, pools, metadata, rng
        self.identity = fleet_pb2.AgentIdentity(resource_group="bench", vmss_name="big", instance_id=str(index))
        self.rate = 10 * (index % 10 + 1)
        self.replica = index % len(pools)
        self.held: dict[str, Held] = {}
        self.call: Any = None
        self.lock = asyncio.Lock()
        self.dropping = False
        self.connects = 0
        self.on_first_welcome: Any = lambda: None
        self.repeated_starts = 0  # a start for a capture it runs: ignored, as the real agent does
        self.starts_after_finish = 0  # a start for a capture it has finished: the capture would run twice
        self.trace: list[str] = []  # what happened to this agent, printed for an instance found wrong

    def note(self, what: str) -> None:
        self.trace.append(f"{time.monotonic() - T0[0]:6.1f}s replica {chr(ord('A') + self.replica)} {what}")

    async def send(self, msg: fleet_pb2.AgentMessage) -> None:
        final = msg.HasField("progress") and msg.progress.status.packet_capture_status == "Stopped"
        call = self.call
        if call is None:
            if final:
                self.note(f"{msg.progress.capture_name} Stopped: not connected, for the next hello")
            return  # disconnected: the next hello carries the state
        try:
            async with self.lock:
                await call.write(msg)
            if final:
                self.note(f"{msg.progress.capture_name} Stopped sent")
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError) as e:
            if final:
                self.note(f"{msg.progress.capture_name} Stopped not sent: {type(e).__name__}")
        except asyncio.CancelledError:
            if not call.cancelled():
                raise  # this task is being cancelled, not the call
            if final:  # a write on a call the dropper just cancelled: it raises CancelledError
                self.note(f"{msg.progress.capture_name} Stopped not sent: the call was dropped")

    def drop(self) -> None:
        if self.call is not None:
            self.dropping = True
            self.call.cancel()

    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.5
        while not stop.is_set():
            welcomed = await self._connect_once()
            delay = 0.5 if welcomed else min(delay * 2, 8.0)
            self.replica = (self.replica + 1) % len(self.pools)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay * self.rng.uniform(0.5, 1.5))

    async def _connect_once(self) -> bool:
        pool = self.pools[self.replica]
        call = fleet_pb2_grpc.FleetStub(pool[self.index // AGENTS_PER_CONNECTION % len(pool)]).Connect(metadata=self.metadata)
        beat: asyncio.Future[None] | None = None
        welcomed = False
        try:
            now = time.monotonic()
            for h in self.held.values():
                h.tick(now)
            await call.write(
                fleet_pb2.AgentMessage(
                    hello=fleet_pb2.AgentHello(
                        identity=self.identity,
                        hostname="chaos",
                        interface="lo",
                        addresses=["127.0.0.1"],
                        captures=[h.progress() for h in self.held.values()],
                    )
                )
            )
            first = await call.read()
            if not isinstance(first, fleet_pb2.CoordinatorMessage) or not first.HasField("welcome"):
                return False
            welcomed, self.call = True, call
            self.connects += 1
            self.note("welcomed")
            if self.connects == 1:
                self.on_first_welcome()
            beat = asyncio.ensure_future(self._heartbeat(first.welcome.heartbeat_interval_ms / 1000))
            # As node_agent/control.py does, every capture is reported once more after the
            # welcome: one that stopped while the hello was on its way is in no hello. (Without
            # this, the simulated agents lost such a Stopped for good: the soak's last five
            # wrong instances, a capture whose time limit fell while etcd was away.)
            now = time.monotonic()
            for h in list(self.held.values()):
                h.tick(now)
                await self.send(fleet_pb2.AgentMessage(progress=h.progress()))
            while True:
                msg = await call.read()
                if not isinstance(msg, fleet_pb2.CoordinatorMessage):
                    self.note("stream ended by the coordinator")
                    return welcomed
                if msg.HasField("start"):
                    await self._start(msg.start)
                elif msg.HasField("stop"):
                    self.note(f"stop {msg.stop.capture_name} received")
                    h = self.held.get(msg.stop.capture_name)
                    if h is not None and h.start.capture_id == msg.stop.capture_id and h.status == "Running":
                        h.stop(time.monotonic(), msg.stop.reason)
                        await self.send(fleet_pb2.AgentMessage(progress=h.progress()))
        except grpc.aio.AioRpcError as e:
            self.note(f"stream ended: {e.code().name}")
            return welcomed
        except asyncio.CancelledError:
            if not self.dropping:
                raise
            self.note("dropped")
            return welcomed
        finally:
            self.call, self.dropping = None, False
            if beat is not None:
                beat.cancel()
            call.cancel()

    async def _start(self, start: fleet_pb2.StartCapture) -> None:
        h = self.held.get(start.capture_name)
        if h is not None and h.start.capture_id == start.capture_id:
            if h.status == "Running":
                self.repeated_starts += 1
            else:
                self.starts_after_finish += 1
            return
        h = self.held[start.capture_name] = Held(start, time.monotonic(), self.rate)
        await self.send(fleet_pb2.AgentMessage(progress=h.progress()))

    async def _heartbeat(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.send(fleet_pb2.AgentMessage(heartbeat=fleet_pb2.Heartbeat()))

    async def report(self, now: float) -> None:
        """Once a second: progress of what runs; a capture that reached its time limit stops."""
        for h in list(self.held.values()):  # a start may come while a report is written
            if h.status == "Running":
                h.tick(now)
                await self.send(fleet_pb2.AgentMessage(progress=h.progress()))


class Cluster:
    """etcd and the coordinator replicas, as processes this benchmark started and stops."""

    def __init__(self, work: str, replicas: int):
        self.work = work
        self.etcd = EmbeddedEtcd(os.path.join(work, "etcd")).start()
        self.auth = save_auth(os.path.join(work, "auth.toml"))
        self.ports = [free_port() for _ in range(replicas)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * replicas
        self.restarts = 0
        for i in range(replicas):
            self.start(i)

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.ports]

    def start(self, i: int) -> None:
        t = self.etcd.client_tls
        self.procs[i] = proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleetcap",
                "--log-level",
                os.environ.get("FLEETCAP_BENCH_LOG", "WARNING"),
                "coordinator",
                "--listen",
                f"127.0.0.1:{self.ports[i]}",
                "--auth-file",
                self.auth,
                "--data-dir",
                os.path.join(self.work, f"data{i}"),
                "--agent-ttl",
                str(AGENT_TTL_S),
                "--etcd",
                self.etcd.endpoint,
                "--etcd-ca",
                t.ca,
                "--etcd-cert",
                t.cert,
                "--etcd-key",
                t.key,
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.work, f"coord{i}.log"), "ab"),
        )
        wait_port(self.ports[i], proc, f"coordinator {i}")

    def kill(self, i: int) -> None:
        LocalFleet.stop_process(self.procs[i], signal.SIGKILL)
        self.procs[i] = None

    def rss(self) -> list[float]:
        out = []
        for p in self.procs:
            try:
                out.append(rss_mb(p.pid) if p is not None and p.poll() is None else 0.0)
            except FileNotFoundError:  # killed between the poll and the read
                out.append(0.0)
        return out

    def close(self) -> None:
        for p in self.procs:
            LocalFleet.stop_process(p, timeout_s=15)
        self.etcd.stop()


async def retry(what: str, call: Any, deadline_s: float = 90) -> Any:
    """An API call through an outage (etcd restarting, a replica dead): retried while UNAVAILABLE."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            return await call()
        except sdk.FleetcapError as e:
            if e.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) or time.monotonic() > end:
                raise RuntimeError(f"{what}: {e.code.name} {e}") from e
            await asyncio.sleep(1)


async def soak(cluster: Cluster, n: int, seconds: float, rng: random.Random, *, etcd_at: float = 0.5, kill_replicas: bool = True) -> int:
    metadata = ((transport.AUTHORIZATION_KEY, f"Bearer {TOKENS['agent']}"),)
    pools = [[transport.aio_channel(a, dedicated=True) for _ in range(-(-n // AGENTS_PER_CONNECTION))] for a in cluster.addresses]
    agents = [ChaosAgent(i, pools, metadata, rng) for i in range(n)]
    everyone, welcomed = asyncio.Event(), [0]

    def first_welcome() -> None:
        welcomed[0] += 1
        if welcomed[0] == n:
            everyone.set()

    for a in agents:
        a.on_first_welcome = first_welcome
    stop = asyncio.Event()
    runs = [asyncio.ensure_future(a.run(stop)) for a in agents]
    client = sdk.AsyncClient(",".join(cluster.addresses), token=TOKENS["admin"], timeout_s=20)
    t0 = T0[0] = time.monotonic()
    events: list[str] = []

    def log(what: str) -> None:
        events.append(f"{time.monotonic() - t0:6.1f}s {what}")
        print(events[-1], flush=True)

    await asyncio.wait_for(everyone.wait(), timeout=120)
    log(f"{n} agents connected")

    async def reporter() -> None:
        while True:
            await asyncio.sleep(1)
            now = time.monotonic()
            await asyncio.gather(*(a.report(now) for a in agents))

    async def dropper() -> None:
        while True:
            await asyncio.sleep(5)
            for a in rng.sample(agents, max(1, n // 50)):
                a.drop()

    async def chaos() -> None:
        plan = [
            (0.2, "kill replica B", lambda: cluster.kill(1)),
            (0.3, "restart replica B", lambda: cluster.start(1)),
            (etcd_at, "stop etcd", lambda: cluster.etcd.stop()),
            (etcd_at + 5 / seconds, "start etcd", lambda: cluster.etcd.restart()),
            (0.7, "kill replica A", lambda: cluster.kill(0)),
            (0.8, "restart replica A", lambda: cluster.start(0)),
        ]
        if not kill_replicas:
            plan = [step for step in plan if "replica" not in step[1]]
        for at, what, act in plan:
            await asyncio.sleep(max(0.0, t0 + at * seconds - time.monotonic()))
            await asyncio.to_thread(act)
            log(what)

    expected: dict[str, str] = {}
    peak_rss = [0.0, 0.0]

    async def workload() -> None:
        k = 0
        while time.monotonic() - t0 < seconds - TIME_LIMIT_S - 10:
            name = f"soak{k}"
            user_stop = k % 2 == 1
            limit = 300 if user_stop else TIME_LIMIT_S

            async def create(name: str = name, limit: int = limit) -> None:
                try:
                    await client.create(
                        name=name,
                        target="big",
                        target_type="AzureVMSS",
                        resource_group="bench",
                        file_path=f"/var/captures/{name}.cap",
                        time_limit_in_seconds=limit,
                    )
                except sdk.FleetcapError as e:
                    if e.code != grpc.StatusCode.ALREADY_EXISTS:  # a retry of a create that went through
                        raise

            await retry(f"create {name}", create)
            expected[name] = "StoppedByUser" if user_stop else "TimeExceeded"
            log(f"created {name} ({'stopped by the user' if user_stop else f'{limit} s limit'})")
            if user_stop:

                async def stop_later(name: str = name) -> None:
                    await asyncio.sleep(USER_STOP_AFTER_S)
                    await retry(f"stop {name}", lambda: client.stop(name=name))
                    log(f"stopped {name}")

                background.append(asyncio.ensure_future(stop_later()))
            k += 1
            await asyncio.sleep(CREATE_EVERY_S)

    background: list[asyncio.Future[None]] = []
    tasks = [asyncio.ensure_future(x) for x in (reporter(), dropper(), chaos(), workload())]
    while time.monotonic() - t0 < seconds:
        await asyncio.sleep(1)
        peak_rss = [max(a, b) for a, b in zip(peak_rss, cluster.rss())]
        for t in tasks + background:
            if t.done() and not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
    tasks[1].cancel()  # no more drops: what remains is settling
    await asyncio.gather(*background)
    log("soak over; waiting for every capture to end")

    problems: list[str] = []
    final: dict[str, captures_pb2.PacketCaptureQueryStatusResult] = {}
    settle_end = time.monotonic() + 120
    for name in expected:
        while True:
            r = await retry(f"get {name}", lambda name=name: client.get_status(name=name))
            final[name] = r
            if len(r.instances) == n and all(i.packet_capture_status == "Stopped" for i in r.instances):
                break
            if time.monotonic() > settle_end:
                break
            await asyncio.sleep(1)
    log("settled")
    for t in tasks:
        t.cancel()
    stop.set()
    for a in agents:
        a.drop()
    _, connecting = await asyncio.wait(runs, timeout=10)
    for r in connecting:  # an agent still waiting for a welcome: nothing more to learn from it
        r.cancel()
    await asyncio.gather(*runs, return_exceptions=True)
    await client.close()
    for pool in pools:
        for ch in pool:
            await ch.close()

    for name, reason in expected.items():
        r = final[name]
        if len(r.instances) != n:
            problems.append(f"{name}: {len(r.instances)} instances, not {n}")
        for inst in r.instances:
            a = agents[int(inst.instance_id)]
            h = a.held.get(name)
            if h is None:
                problems.append(f"{name} instance {inst.instance_id}: never started on its agent (status {inst.packet_capture_status})")
                continue
            want = (h.status, h.reason, h.packets, 24 + h.packets * PACKET_BYTES)
            got = (inst.packet_capture_status, inst.stop_reason, inst.packets_captured, inst.bytes_captured)
            if h.status != "Stopped" or h.reason != reason:
                problems.append(f"{name} instance {inst.instance_id}: the agent ended {h.status}/{h.reason}, expected Stopped/{reason}")
            if got != want or list(inst.packet_capture_error):
                problems.append(f"{name} instance {inst.instance_id}: coordinator {got} {list(inst.packet_capture_error)}, agent {want}")
    twice = sum(a.starts_after_finish for a in agents)
    if twice:
        problems.append(f"{twice} starts of captures their agent had already finished")
    connects = sorted(a.connects for a in agents)
    print(f"\n== chaos soak: {n} agents, {seconds:.0f} s, {len(expected)} captures × {n} instances")
    for e in events:
        print("  " + e)
    print(
        f"connections per agent: min {connects[0]}, median {connects[n // 2]}, max {connects[-1]}; "
        f"repeated starts ignored: {sum(a.repeated_starts for a in agents)}; starts after finish: {twice}"
    )
    print(f"coordinator peak RSS: {', '.join(f'{x:.0f} MiB' for x in peak_rss)}")
    print(f"instances checked: {sum(len(r.instances) for r in final.values())}; problems: {len(problems)}")
    for p in problems[:20]:
        print("  " + p)
    for p in [p for p in problems if " instance " in p][:3]:
        index = int(p.split(" instance ")[1].split(":")[0])
        print(f"agent {index}'s trace:\n    " + "\n    ".join(agents[index].trace))
    return 1 if problems else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--etcd-at", type=float, default=0.5, help="when etcd stops for 5 s, as a fraction of the soak")
    p.add_argument("--no-replica-kills", action="store_true", help="only etcd's restart and the dropped connections")
    a = p.parse_args()
    work = tempfile.mkdtemp(prefix="fleetcap-chaos-")
    cluster = Cluster(work, 2)
    try:
        return asyncio.run(
            soak(cluster, a.agents, a.seconds, random.Random(a.seed), etcd_at=a.etcd_at, kill_replicas=not a.no_replica_kills)
        )
    finally:
        cluster.close()
        if os.environ.get("FLEETCAP_BENCH_KEEP"):
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
