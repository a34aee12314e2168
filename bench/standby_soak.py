"""Flight recorder soak: one agent armed for a long time under a steady flood, its memory and disk.

    sudo python -m bench.standby_soak [--seconds 600] [--pps 50000] [--standby 30] [--ring-mb 100]

Two namespaces made here (fcb<pid>-snd, fcb<pid>-cap) joined by a veth (bench/capture_bench.py);
the traffic goes from 10.78.0.2 to 10.78.0.1 and nowhere else; both are deleted at the end. A
coordinator (embedded etcd, unix socket) and one real agent in the capture namespace; a capture
with --standby arms it, bench/udpflood.c sends 60-byte UDP frames at --pps for --seconds, and
every 5 s the agent's RSS, its CPU, the ring's bytes on disk (its hidden files) and the reported
counters are sampled. Then the recorder is triggered, and the file checked: every packet within
the window before the trigger. Printed: the samples, and a summary line (JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time

from bench.capture_bench import ROOT, Bench
from bench.datapath_bench import TOKENS, save_auth
from deploy.localfleet import LocalFleet
from fleetcap.clients import sdk

FRAME = 14 + 20 + 8 + 18


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ring_bytes(root: str, name: str) -> int:
    total = 0
    for n in os.listdir(root):
        if n.startswith(f".{name}.cap.standby-"):
            with contextlib.suppress(FileNotFoundError):
                total += os.path.getsize(os.path.join(root, n))
    return total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=600)
    p.add_argument("--pps", type=int, default=50000)
    p.add_argument("--standby", type=int, default=30)
    p.add_argument("--ring-mb", type=int, default=100)
    a = p.parse_args()
    ring = a.ring_mb << 20
    with Bench() as b:
        work = b.dir
        api = f"unix:{work}/api.sock"
        root = os.path.join(work, "captures")
        save_auth(os.path.join(work, "auth.toml"))
        env = dict(os.environ, FLEETCAP_TOKEN=TOKENS["agent"])
        coord = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleetcap",
                "--log-level",
                "WARNING",
                "coordinator",
                "--listen",
                api,
                "--auth-file",
                os.path.join(work, "auth.toml"),
                "--data-dir",
                os.path.join(work, "data"),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(work, "coordinator.log"), "w"),
        )
        agent = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                b.cap,
                sys.executable,
                "-m",
                "fleetcap",
                "--log-level",
                "WARNING",
                "agent",
                "--coordinator",
                api,
                "--vm",
                "soak",
                "--interface",
                "veth0",
                "--capture-root",
                root,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(work, "agent.log"), "w"),
        )
        try:
            with sdk.Client(api, token=TOKENS["admin"], timeout_s=10) as c:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if c.list_agents():
                            break
                    except sdk.CoordinatorUnavailable:
                        pass  # still starting
                    assert time.monotonic() < deadline, "the agent did not connect"
                    time.sleep(0.2)
                c.create(
                    name="soak",
                    target="soak",
                    storage_account="local",
                    file_path="/var/captures/soak.cap",
                    standby_in_seconds=a.standby,
                    standby_bytes=ring,
                    time_limit_in_seconds=0,
                    filters=[{"protocol": "UDP", "localPort": "5001"}],
                )
                while c.get_status(name="soak").packet_capture_status != "Standby":
                    time.sleep(0.1)
                flood = threading.Thread(target=b.send, args=(1, a.pps * a.seconds, a.pps))
                start, cpu0 = time.monotonic(), cpu_s(agent.pid)
                flood.start()
                samples = []
                while flood.is_alive():
                    time.sleep(5)
                    inst = c.get_status(name="soak").instances[0]
                    s = {
                        "t": round(time.monotonic() - start),
                        "rss_mib": round(rss_kib(agent.pid) / 1024, 1),
                        "cpu_pct": round(100 * (cpu_s(agent.pid) - cpu0) / (time.monotonic() - start), 1),
                        "ring_mib": round(ring_bytes(root, "soak") / 2**20, 2),
                        "ring_packets": inst.packets_captured,
                        "kernel_drops": inst.kernel_drops,
                        "status": inst.packet_capture_status,
                    }
                    samples.append(s)
                    print(json.dumps(s), flush=True)
                flood.join()
                trig = c.trigger(name="soak")
                final = c.wait(name="soak", timeout_s=120)
                inst = final.instances[0]
            path = os.path.join(root, "soak.cap")
            first = samples[: max(1, len(samples) // 10)]
            last = samples[-max(1, len(samples) // 10) :]
            summary = {
                "seconds": a.seconds,
                "pps": a.pps,
                "standby_s": a.standby,
                "ring_mib": a.ring_mb,
                "rss_first_mib": max(s["rss_mib"] for s in first),
                "rss_last_mib": max(s["rss_mib"] for s in last),
                "rss_max_mib": max(s["rss_mib"] for s in samples),
                "ring_max_mib": max(s["ring_mib"] for s in samples),
                "ring_cap_mib": a.ring_mb,
                "agent_cpu_pct": samples[-1]["cpu_pct"],
                "kernel_drops": inst.kernel_drops,
                "stop_reason": final.stop_reason,
                "file_packets": inst.packets_captured,
                "file_bytes": os.path.getsize(path),
                "file_mib_le_ring": os.path.getsize(path) <= ring,
                "trigger_time": trig.trigger_time,
            }
            print(json.dumps(summary), flush=True)
        finally:
            LocalFleet.stop_process(agent)
            LocalFleet.stop_process(coord)
            shutil.rmtree(os.path.join(work, "captures"), ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
