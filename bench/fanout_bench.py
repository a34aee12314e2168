"""Fan-out benchmark: create → every instance Running, on a scale set of N agents.

    python -m bench.fanout_bench [--agents 10 100 1000] [--runs 20]

A real coordinator with its embedded etcd; N lightweight agents in this process, each speaking
the real Connect protocol (hello, heartbeats, progress) and answering a StartCapture with a
Running report at once (no libpcap: this measures the control plane, not the capture).
Reported per N: p50/p99 of create → all Running (seen through WatchStatus), and the
coordinator's RSS and CPU per second with N agents connected and idle (heartbeats only).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench.datapath_bench import ROOT, rss_mb, wait_port
from fleetcap.clients import sdk
from fleetcap.coordinator.state import keys
from fleetcap.coordinator.state.embedded_etcd import EmbeddedEtcd
from fleetcap.coordinator.state.etcd_store import EtcdAccess, EtcdKV
from fleetcap.coordinator.state.store import Store
from fleetcap.core import naming, pki, transport
from fleetcap.core.auth import AuthFile, Role, new_token
from fleetcap.core.transport import free_port
from fleetcap.v1 import captures_pb2, fleet_pb2, fleet_pb2_grpc

TOKENS = {"admin": new_token(), "agent": new_token()}


def identity(index: int) -> fleet_pb2.AgentIdentity:
    return fleet_pb2.AgentIdentity(resource_group="bench", vmss_name="big", instance_id=str(index))


class RunningAgent:
    def __init__(self, channel, index: int, metadata=()):
        self.identity = identity(index)
        self.call = fleet_pb2_grpc.FleetStub(channel).Connect(metadata=metadata)
        self.started: list = []
        self._lock = asyncio.Lock()  # one write at a time on a gRPC stream, as the real agent's outbox does

    async def write(self, msg: fleet_pb2.AgentMessage) -> None:
        async with self._lock:
            await self.call.write(msg)

    async def report(self, seconds: float, packets_per_s: int) -> None:
        """Progress as a real agent sends it: one report a second per capture, however many
        packets arrive (the agent coalesces), with growing counters."""
        start = self.started[-1]
        for tick in range(int(seconds)):
            await self.write(
                fleet_pb2.AgentMessage(
                    progress=fleet_pb2.CaptureProgress(
                        capture_name=start.capture_name,
                        capture_id=start.capture_id,
                        status=captures_pb2.InstanceStatus(
                            packet_capture_status="Running",
                            packets_captured=(tick + 1) * packets_per_s,
                            bytes_captured=24 + (tick + 1) * packets_per_s * 76,
                        ),
                    )
                )
            )
            await asyncio.sleep(1)

    progress_every_s = 0.0  # > 0: report progress of every started capture this often

    async def run(self, ready: asyncio.Event, count: list[int], total: int) -> None:
        await self.call.write(
            fleet_pb2.AgentMessage(
                hello=fleet_pb2.AgentHello(identity=self.identity, hostname="bench", interface="lo", addresses=["127.0.0.1"])
            )
        )
        welcome = await self.call.read()
        count[0] += 1
        if count[0] == total:
            ready.set()
        beat = asyncio.ensure_future(self._heartbeat(welcome.welcome.heartbeat_interval_ms / 1000))
        try:
            while True:
                msg = await self.call.read()
                if msg is None or not hasattr(msg, "HasField"):
                    return
                if msg.HasField("start"):
                    await self.write(
                        fleet_pb2.AgentMessage(
                            progress=fleet_pb2.CaptureProgress(
                                capture_name=msg.start.capture_name,
                                capture_id=msg.start.capture_id,
                                status=captures_pb2.InstanceStatus(packet_capture_status="Running"),
                            )
                        )
                    )
                    self.started.append(msg.start)
        finally:
            beat.cancel()

    async def _heartbeat(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.write(fleet_pb2.AgentMessage(heartbeat=fleet_pb2.Heartbeat()))


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().split(")")[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    address: str, agent_address: str, coord_pid: int, n: int, runs: int, etcd: EmbeddedEtcd, work: str, tls: bool, load_s: int = 30
) -> dict:
    etcd_tls = etcd.client_tls
    store = Store(EtcdKV([etcd.endpoint], access=EtcdAccess(etcd_tls.ca, etcd_tls.cert, etcd_tls.key)))
    if tls:  # each agent its own certificate, so its own connection, as on a real fleet
        ca = os.path.join(work, "pki", "ca", "ca.pem")
        channels = [
            transport.aio_channel(
                agent_address,
                credentials=transport.ClientCredentials(
                    tls_ca=ca,
                    tls_cert=os.path.join(work, "pki", f"a{i}", "agent.pem"),
                    tls_key=os.path.join(work, "pki", f"a{i}", "agent-key.pem"),
                ),
            )
            for i in range(n)
        ]
        agents = [RunningAgent(channels[i], i) for i in range(n)]
        client_creds = {"tls_ca": ca, "token": TOKENS["admin"]}
    else:  # agents share connections and prove themselves with a token of role agent
        # 50 agents a connection, below the server's cap of concurrent streams per connection.
        channels = [transport.aio_channel(address, dedicated=True) for _ in range(-(-n // 50))]
        agents = [RunningAgent(channels[i % len(channels)], i, (("authorization", f"Bearer {TOKENS['agent']}"),)) for i in range(n)]
        client_creds = {"token": TOKENS["admin"]}
    ready, count = asyncio.Event(), [0]
    tasks = [asyncio.ensure_future(a.run(ready, count, n)) for a in agents]
    await asyncio.wait_for(ready.wait(), timeout=300)
    await asyncio.sleep(3)
    rss0, cpu0, t0 = rss_mb(coord_pid), cpu_s(coord_pid), time.monotonic()
    await asyncio.sleep(10)
    idle_cpu = (cpu_s(coord_pid) - cpu0) / (time.monotonic() - t0)
    idle_rss = rss_mb(coord_pid)
    latencies = []
    with sdk.Client(address, **client_creds) as c:
        for run in range(runs):
            name = f"fan{n}x{run}"
            t = time.perf_counter()
            await asyncio.to_thread(
                c.create,
                name=name,
                target="big",
                target_type="AzureVMSS",
                resource_group="bench",
                file_path="/var/captures/f.cap",
                time_limit_in_seconds=0,
            )

            def all_running(name: str = name, t: float = t) -> float:
                for status in c.watch(name=name):
                    if len(status.instances) == n and all(i.packet_capture_status == "Running" for i in status.instances):
                        return time.perf_counter() - t
                raise RuntimeError("watch ended early")

            latencies.append(await asyncio.to_thread(all_running))
            await asyncio.to_thread(c.delete, name=name)
    # One capture left running on all N; every agent reports once a second for load_s seconds.
    with sdk.Client(address, **client_creds) as c:
        await asyncio.to_thread(
            c.create,
            name=f"load{n}",
            target="big",
            target_type="AzureVMSS",
            resource_group="bench",
            file_path="/var/captures/l.cap",
            time_limit_in_seconds=0,
        )
        await asyncio.sleep(2 + n / 200)
    writes = [0]

    async def count_writes() -> None:
        async for event in store.watch(keys.INSTANCES + f"load{n}/"):
            if event.kind == "PUT":
                writes[0] += 1

    counter = asyncio.ensure_future(count_writes())
    churn = {"agent registrations": 0, "agent removals": 0, "leader changes": 0}

    async def count_churn(prefix: str) -> None:
        async for event in store.watch(prefix):
            if prefix == keys.LEADER and event.kind == "PUT":
                churn["leader changes"] += 1
            elif prefix == keys.AGENTS and event.kind == "PUT":
                churn["agent registrations"] += 1
            elif prefix == keys.AGENTS and event.kind == "DELETE":
                churn["agent removals"] += 1

    churners = [asyncio.ensure_future(count_churn(keys.AGENTS)), asyncio.ensure_future(count_churn(keys.LEADER))]
    await asyncio.sleep(0.5)
    cpu0, t0 = cpu_s(coord_pid), time.monotonic()
    await asyncio.gather(*(a.report(load_s, 500_000) for a in agents))
    elapsed = time.monotonic() - t0
    load_cpu = (cpu_s(coord_pid) - cpu0) / elapsed
    await asyncio.sleep(1)
    counter.cancel()
    for c in churners:
        c.cancel()
    for t in tasks:
        t.cancel()
    for ch in channels:
        await ch.close()
    latencies.sort()
    return {
        "n": n,
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "idle_cpu": idle_cpu,
        "rss_before": rss0,
        "rss_idle": idle_rss,
        "load_cpu": load_cpu,
        "writes_per_instance_s": writes[0] / n / elapsed,
        "rss_load": rss_mb(coord_pid),
        "churn": churn,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument(
        "--tls",
        action="store_true",
        help="the secure configuration: clients over TLS with a token, agents over mutual TLS, one certificate each",
    )
    p.add_argument("--load-seconds", type=int, default=30, help="how long every agent reports progress for the CPU and etcd-write figures")
    a = p.parse_args()
    for n in a.agents:
        work = tempfile.mkdtemp(prefix="fleetcap-fan-")
        port, agent_port = free_port(), free_port()
        etcd = EmbeddedEtcd(os.path.join(work, "etcd")).start()
        t = etcd.client_tls
        auth_file = AuthFile()
        for role in ("admin", "agent"):
            auth_file = auth_file.with_token(role, frozenset({Role(role)}), TOKENS[role])
        auth_file.save(os.path.join(work, "auth.toml"))
        listen = ["--listen", f"127.0.0.1:{port}"]
        if a.tls:
            ca = os.path.join(work, "pki", "ca")
            pki.create_ca(ca)
            pki.issue_coordinator(ca, os.path.join(work, "pki"), dns=[], ips=[])
            for i in range(n):
                ident = identity(i)
                pki.issue_agent(ca, os.path.join(work, "pki", f"a{i}"), arm_id=naming.resource_id(ident), instance_name=f"big_{i}")
            listen += [
                "--mtls-listen",
                f"127.0.0.1:{agent_port}",
                "--tls-cert",
                os.path.join(work, "pki", "coordinator.pem"),
                "--tls-key",
                os.path.join(work, "pki", "coordinator-key.pem"),
                "--tls-client-ca",
                os.path.join(ca, "ca.pem"),
            ]
        coord = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleetcap",
                "--log-level",
                "WARNING",
                "coordinator",
                *listen,
                "--data-dir",
                work,
                "--agent-ttl",
                "10",
                "--auth-file",
                os.path.join(work, "auth.toml"),
                "--etcd",
                etcd.endpoint,
                "--etcd-ca",
                t.ca,
                "--etcd-cert",
                t.cert,
                "--etcd-key",
                t.key,
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(work, "log"), "w"),
        )
        try:
            wait_port(port, coord, "coordinator")
            r = asyncio.run(
                measure(f"127.0.0.1:{port}", f"127.0.0.1:{agent_port}", coord.pid, n, a.runs, etcd, work, a.tls, a.load_seconds)
            )
            print(
                f"{'TLS ' if a.tls else ''}{n:5d} agents: create → all Running "
                f"p50 {r['p50'] * 1000:.0f} ms, p99 {r['p99'] * 1000:.0f} ms "
                f"({a.runs} runs); coordinator idle with {n} agents: CPU {r['idle_cpu'] * 100:.1f} % of a core, "
                f"RSS {r['rss_idle']:.0f} MiB; all {n} reporting progress of a 500k pps capture: coordinator CPU "
                f"{r['load_cpu'] * 100:.1f} % of a core, RSS {r['rss_load']:.0f} MiB, "
                f"{r['writes_per_instance_s']:.2f} etcd writes per instance per second; during those "
                f"{a.load_seconds} s: " + ", ".join(f"{v} {k}" for k, v in r["churn"].items()),
                flush=True,
            )
        finally:
            coord.terminate()
            coord.wait(15)
            etcd.stop()
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
