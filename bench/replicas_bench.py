"""10,000 agents over 3 coordinator replicas on one etcd: create → every instance Running.

    python -m bench.replicas_bench [--scale-sets 10] [--instances 1000] [--replicas 3] [--runs 5]

Real parts: etcd (embedded, its own process) and `--replicas` `fleetcap coordinator` processes
sharing it, each with the default agent TTL (10 s, a heartbeat every 2.5 s). The simulated agents
run in `--workers` processes of their own (not the coordinators', not this one's), spread evenly:
agent i connects to replica i mod R, all at once. They are chaos_soak's agents: each speaks the
real fleet protocol (hello, heartbeats), answers a StartCapture with a Running report, and on a
broken stream reconnects to the next replica after a jittered back-off, as node_agent does.
Also reported: how many streams the agents opened in all (10,000 if none was ever refused or
closed) and what the coordinators logged about silent agents and etcd.

The fleet is `--scale-sets` scale sets of `--instances` instances (a scale set has at most
1,000). One run creates a capture on every scale set at once, through the SDK on replica 0, and
measures the time until every instance of every capture is Running in etcd (a watch on the
instance records, set up before the creates; the state any replica's GetStatus serves); then it
checks one GetStatus per capture and deletes the captures. Reported: p50 and p99 over the runs,
and each coordinator's RSS (after connecting, and its peak).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench.chaos_soak import ChaosAgent
from bench.datapath_bench import ROOT, TOKENS, cpu_s, rss_mb, save_auth, wait_port
from deploy.localfleet import LocalFleet
from fleetcap.clients import sdk
from fleetcap.coordinator.app import GC_THRESHOLDS
from fleetcap.coordinator.state import keys
from fleetcap.coordinator.state.embedded_etcd import EmbeddedEtcd
from fleetcap.coordinator.state.etcd_store import EtcdAccess, EtcdKV
from fleetcap.coordinator.state.store import Store, WatchKind, decode
from fleetcap.core import transport
from fleetcap.core.transport import free_port
from fleetcap.v1 import fleet_pb2, state_pb2

AGENTS_PER_CONNECTION = 50


async def worker(addresses: list[str], first: int, count: int, per_set: int) -> None:
    """`count` agents from global index `first`; prints `connected` once every one has been
    welcomed, then runs until its stdin closes and prints how many streams they opened in all."""
    # 5,000 agents in one process is a heap no real agent has (each runs alone on its VM): the
    # simulation gets the coordinator's collector settings, or its collector eats the cores the
    # coordinators are measured on.
    gc.set_threshold(*GC_THRESHOLDS)
    # The benchmark's agent token comes in the environment (never on a command line).
    metadata = ((transport.AUTHORIZATION_KEY, f"Bearer {os.environ['FLEETCAP_BENCH_AGENT_TOKEN']}"),)
    per_replica = -(-count // len(addresses))
    pools = [[transport.aio_channel(a, dedicated=True) for _ in range(-(-per_replica // AGENTS_PER_CONNECTION))] for a in addresses]
    rng = random.Random(first)
    ready, welcomed = asyncio.Event(), [0]

    def first_welcome() -> None:
        welcomed[0] += 1
        if welcomed[0] == count:
            ready.set()

    agents = []
    for i in range(first, first + count):
        # Agent i starts on replica i mod R (and, as node_agent/control.py does, reconnects to
        # the next one after a jittered back-off if its stream breaks).
        agent = ChaosAgent(i, pools, metadata, rng)
        agent.identity = fleet_pb2.AgentIdentity(resource_group="bench", vmss_name=f"set{i // per_set}", instance_id=str(i % per_set))
        agent.on_first_welcome = first_welcome
        agents.append(agent)
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(a.run(stop)) for a in agents]
    await asyncio.wait_for(ready.wait(), timeout=300)
    print("connected", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the bench closes it
    print(f"streams {sum(a.connects for a in agents)}", flush=True)
    stop.set()
    for t in tasks:
        t.cancel()


async def follow_running(store: Store, total: int, watching: asyncio.Event, all_running: asyncio.Event, marks: dict[str, float]) -> None:
    """Sets `watching` once the watch exists, `all_running` once `total` instance records have
    been written Running; `marks` gets when the first record was written, and when a tenth, half
    and all of them were Running."""
    running: set[str] = set()
    async for event in store.watch(keys.INSTANCES):
        if event.kind == WatchKind.READY:
            watching.set()
        elif event.kind == WatchKind.PUT:
            marks.setdefault("first record", time.perf_counter())
            if decode(state_pb2.InstanceRecord, event.value).status.packet_capture_status == "Running":
                running.add(event.key)
                for label, share in (("10% Running", 0.1), ("50% Running", 0.5), ("all Running", 1.0)):
                    if len(running) >= share * total:
                        marks.setdefault(label, time.perf_counter())
                if len(running) == total:
                    all_running.set()


async def measure(
    cluster_addresses: list[str],
    etcd: EmbeddedEtcd,
    procs: list[subprocess.Popen[bytes]],
    sets: int,
    per_set: int,
    runs: int,
    others: dict[str, int],
) -> dict:
    """`others`: more processes (name → pid) whose CPU time in each run is reported."""
    t = etcd.client_tls
    store = Store(EtcdKV([etcd.endpoint], access=EtcdAccess(t.ca, t.cert, t.key)))
    total = sets * per_set
    latencies: list[float] = []
    peak = [rss_mb(p.pid) for p in procs]
    connected_rss = list(peak)
    async with sdk.AsyncClient(cluster_addresses[0], token=TOKENS["admin"], timeout_s=120) as client:
        for run in range(runs):
            names = [f"r{run}s{s}" for s in range(sets)]
            all_running, watching = asyncio.Event(), asyncio.Event()
            marks: dict[str, float] = {}
            watcher = asyncio.ensure_future(follow_running(store, total, watching, all_running, marks))
            await watching.wait()
            watched = {**{f"coordinator {i}": p.pid for i, p in enumerate(procs)}, **others, "bench": os.getpid()}
            cpu0 = {name: cpu_s(pid) for name, pid in watched.items()}
            t0 = time.perf_counter()
            await asyncio.gather(
                *(
                    client.create(
                        name=n,
                        target=f"set{s}",
                        target_type="AzureVMSS",
                        resource_group="bench",
                        file_path="/var/captures/f.cap",
                        time_limit_in_seconds=0,
                    )
                    for s, n in enumerate(names)
                )
            )
            marks["created"] = time.perf_counter()
            while not all_running.is_set():
                peak = [max(x, rss_mb(p.pid)) for x, p in zip(peak, procs)]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(all_running.wait(), 0.5)
            latencies.append(time.perf_counter() - t0)
            used = {name: cpu_s(pid) - cpu0[name] for name, pid in watched.items()}
            watcher.cancel()
            statuses = await asyncio.gather(*(client.get_status(name=n) for n in names))
            seen = sum(1 for st in statuses for i in st.instances if i.packet_capture_status == "Running")
            timeline = ", ".join(f"{label} {(at - t0) * 1000:.0f}" for label, at in sorted(marks.items(), key=lambda m: m[1]))
            print(
                f"run {run}: {total} instances Running in {latencies[-1] * 1000:.0f} ms "
                f"(GetStatus after: {seen} Running); RSS {', '.join(f'{rss_mb(p.pid):.0f}' for p in procs)} MiB; "
                f"ms after create: {timeline}; CPU-s: {sum(used.values()):.1f} "
                f"({', '.join(f'{n} {x:.1f}' for n, x in used.items())})",
                flush=True,
            )
            if seen != total:
                raise RuntimeError(f"GetStatus shows {seen} Running, not {total}")
            for n in names:
                await client.delete(name=n)
            await asyncio.sleep(3)
    await store.close()
    latencies.sort()
    return {
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "range": (latencies[0], latencies[-1]),
        "rss_connected": connected_rss,
        "rss_peak": peak,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale-sets", type=int, default=10)
    p.add_argument("--instances", type=int, default=1000, help="per scale set (at most 1,000, as in Azure)")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="processes that run the simulated agents")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--agent-ttl", type=int, default=10, help="the coordinators' --agent-ttl (heartbeats every TTL/4)")
    p.add_argument("--worker", nargs=4, metavar=("ADDRESSES", "FIRST", "COUNT", "PER_SET"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        addresses, first, count, per_set = a.worker
        asyncio.run(worker(addresses.split(","), int(first), int(count), int(per_set)))
        return 0
    total = a.scale_sets * a.instances
    work = tempfile.mkdtemp(prefix="fleetcap-replicas-")
    etcd = EmbeddedEtcd(os.path.join(work, "etcd")).start()
    procs: list[subprocess.Popen[bytes]] = []
    workers: list[subprocess.Popen[str]] = []
    try:
        t = etcd.client_tls
        auth = save_auth(os.path.join(work, "auth.toml"))
        ports = [free_port() for _ in range(a.replicas)]
        for i, port in enumerate(ports):
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "fleetcap",
                        "--log-level",
                        "WARNING",
                        "coordinator",
                        "--listen",
                        f"127.0.0.1:{port}",
                        "--agent-ttl",
                        str(a.agent_ttl),
                        "--auth-file",
                        auth,
                        "--data-dir",
                        os.path.join(work, f"data{i}"),
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
                    stderr=open(os.path.join(work, f"coord{i}.log"), "w"),
                )
            )
        for port, proc in zip(ports, procs):
            wait_port(port, proc, "coordinator")
        addresses = [f"127.0.0.1:{port}" for port in ports]
        t0 = time.monotonic()
        share = -(-total // a.workers)
        for k in range(a.workers):
            first = k * share
            workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bench.replicas_bench",
                        "--worker",
                        ",".join(addresses),
                        str(first),
                        str(min(share, total - first)),
                        str(a.instances),
                    ],
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "FLEETCAP_BENCH_AGENT_TOKEN": TOKENS["agent"]},
                )
            )
        for w in workers:
            if w.stdout is None or w.stdout.readline().strip() != "connected":
                raise RuntimeError("an agent worker did not connect its agents")
        print(f"{total} agents connected over {a.replicas} replicas in {time.monotonic() - t0:.1f} s", flush=True)
        time.sleep(5)
        idle = {f"coordinator {i}": p.pid for i, p in enumerate(procs)}
        idle.update({"etcd": etcd.process.pid if etcd.process else 0, **{f"agents {k}": w.pid for k, w in enumerate(workers)}})
        before = {n: cpu_s(pid) for n, pid in idle.items()}
        time.sleep(10)
        print(
            f"idle (heartbeats only), share of a core over 10 s: "
            f"{', '.join(f'{n} {(cpu_s(pid) - before[n]) / 10:.0%}' for n, pid in idle.items())}",
            flush=True,
        )
        assert etcd.process is not None
        others = {"etcd": etcd.process.pid, **{f"agents {k}": w.pid for k, w in enumerate(workers)}}
        r = asyncio.run(measure(addresses, etcd, procs, a.scale_sets, a.instances, a.runs, others))
        streams = 0
        for w in workers:
            if w.stdin is not None:
                w.stdin.close()
            line = w.stdout.readline().split() if w.stdout is not None else []
            streams += int(line[1]) if line[:1] == ["streams"] else 0
        logs = "".join(open(os.path.join(work, f"coord{i}.log")).read() for i in range(a.replicas))
        print(
            f"streams opened by the {total} agents: {streams}; coordinators logged {logs.count('silent for')} "
            f"agents closed as silent, {logs.count('DEADLINE_EXCEEDED')} etcd calls past their deadline"
        )
        lo, hi = r["range"]
        print(
            f"\n== {total} agents ({a.scale_sets} scale sets × {a.instances}) over {a.replicas} replicas, "
            f"{a.runs} runs: create → all Running p50 {r['p50'] * 1000:.0f} ms, p99 {r['p99'] * 1000:.0f} ms "
            f"(range {lo * 1000:.0f}-{hi * 1000:.0f}); coordinator RSS connected "
            f"{', '.join(f'{x:.0f}' for x in r['rss_connected'])} MiB, peak "
            f"{', '.join(f'{x:.0f}' for x in r['rss_peak'])} MiB"
        )
        return 0
    finally:
        for w in workers:
            if w.stdin is not None:
                w.stdin.close()
            LocalFleet.stop_process(w, timeout_s=15)
        for proc in procs:
            LocalFleet.stop_process(proc, timeout_s=15)
        etcd.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
