"""Ingest scale-out: 10 agents uploading at once to one coordinator replica, then spread over two
replicas of the same deployment (one etcd, one shared --storage-dir).

    python -m bench.scaleout_bench [--agents 10] [--size-mb 128] [--runs 3]

Per run and layout: the aggregate upload rate (all bytes / time until the last file is
committed), and each replica's CPU seconds per GiB it received. The two layouts alternate in
each run, so that both see the same machine. On a 2-core machine the agents (this process),
etcd and the replicas share the cores: the rate cannot double there, and the figure that shows
whether anything serialises across replicas is the CPU per GiB of each replica, which must not
grow when there are two.
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

from bench.datapath_bench import ROOT, Deployment, cpu_s, fleetcap_uploads, make_file, save_auth, wait_port
from deploy.localfleet import LocalFleet
from fleetcap.coordinator.state.embedded_etcd import EmbeddedEtcd
from fleetcap.core.transport import free_port


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=10)
    p.add_argument("--size-mb", type=int, default=128)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    size = a.size_mb << 20
    work = tempfile.mkdtemp(prefix="fleetcap-scale-")
    procs: list[subprocess.Popen] = []
    etcd = EmbeddedEtcd(os.path.join(work, "etcd")).start()
    try:
        t = etcd.client_tls
        save_auth(os.path.join(work, "auth.toml"))
        ports = [free_port() for _ in range(2)]
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
                        "--auth-file",
                        os.path.join(work, "auth.toml"),
                        "--data-dir",
                        os.path.join(work, f"data{i}"),
                        "--storage-dir",
                        os.path.join(work, "storage"),
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
        files = []
        for i in range(a.agents):
            path = os.path.join(work, f"f{i}.cap")
            files.append((path, size, make_file(path, size)))
        gib_each = size / (1 << 30)
        rates: dict[str, list[float]] = {"one": [], "two": []}
        cpu: dict[str, list[float]] = {"one": [], "two A": [], "two B": []}

        async def layout(run: int, replicas: int) -> None:
            half = a.agents // 2 if replicas == 2 else a.agents
            groups = [(Deployment(f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[0]}", work, tls=False), files[:half])]
            if replicas == 2:
                groups.append((Deployment(f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}", work, tls=False), files[half:]))
            c0 = [cpu_s(p.pid) for p in procs]
            t0 = time.perf_counter()
            await asyncio.gather(
                *(fleetcap_uploads(dep, group, "local", f"r{run}n{replicas}g{g}x") for g, (dep, group) in enumerate(groups))
            )
            elapsed = time.perf_counter() - t0
            used = [cpu_s(p.pid) - c for p, c in zip(procs, c0)]
            rate = a.agents * size / elapsed / (1 << 20)
            if replicas == 1:
                rates["one"].append(rate)
                cpu["one"].append(used[0] / (gib_each * a.agents))
            else:
                rates["two"].append(rate)
                cpu["two A"].append(used[0] / (gib_each * half))
                cpu["two B"].append(used[1] / (gib_each * (a.agents - half)))
            print(
                f"run {run}, {replicas} replica(s): {rate:.0f} MiB/s aggregate; CPU s/GiB per replica: "
                + ", ".join(f"{u / (gib_each * (half if i == 0 else a.agents - half)):.2f}" for i, u in enumerate(used[:replicas])),
                flush=True,
            )

        for run in range(a.runs):
            order = (1, 2) if run % 2 == 0 else (2, 1)
            for replicas in order:
                asyncio.run(layout(run, replicas))
        one, two = statistics.median(rates["one"]), statistics.median(rates["two"])
        print(f"\n== medians over {a.runs} runs, {a.agents} agents × {a.size_mb} MiB")
        print(
            f"aggregate: one replica {one:.0f} MiB/s (range {min(rates['one']):.0f}-{max(rates['one']):.0f}); "
            f"two replicas {two:.0f} MiB/s (range {min(rates['two']):.0f}-{max(rates['two']):.0f}); ratio {two / one:.2f}"
        )
        print(
            "CPU seconds per GiB received: "
            + ", ".join(f"{k} {statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})" for k, v in cpu.items())
        )
        return 0
    finally:
        for proc in procs:
            LocalFleet.stop_process(proc, timeout_s=15)
        etcd.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
