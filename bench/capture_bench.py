"""Capture benchmark: fleetcap's capture engine against `tcpdump -w`, same veth, same traffic.

    python -m bench.capture_bench [--packets 1500000] [--runs 3]

Two namespaces made here (fcb<pid>-snd, fcb<pid>-cap) joined by a veth; all traffic goes from
10.78.0.2 to 10.78.0.1 and nowhere else; both namespaces are deleted at the end. Two C senders
(bench/udpflood.c, sendmmsg) flood 60-byte UDP frames at their top rate. Each variant captures
with `udp and port 5001` and snaplen 128; CPU time and peak RSS come from wait4() on the
capture process. Printed: per run and the median, packets sent/captured, drops, CPU µs per
packet, and the ratios fleetcap/tcpdump.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAME = 14 + 20 + 8 + 18  # the flood's frames: 18-byte payloads
RECORD = 16 + FRAME
FILTER = "udp and port 5001"


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


class Bench:
    def __init__(self) -> None:
        tag = f"fcb{os.getpid() % 100000}"
        self.snd, self.cap = f"{tag}-snd", f"{tag}-cap"
        self.dir = tempfile.mkdtemp(prefix="fleetcap-bench-")
        self.flood = os.path.join(self.dir, "udpflood")

    def __enter__(self) -> Bench:
        sh("gcc", "-O2", "-o", self.flood, os.path.join(ROOT, "bench", "udpflood.c"))
        for ns in (self.snd, self.cap):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.cap, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns", self.snd)
        sh("ip", "-n", self.cap, "addr", "add", "10.78.0.1/24", "dev", "veth0")
        sh("ip", "-n", self.snd, "addr", "add", "10.78.0.2/24", "dev", "veth0")
        for ns in (self.snd, self.cap):
            sh("ip", "-n", ns, "link", "set", "veth0", "up")
        # A static neighbour entry: no ARP in the measured traffic.
        mac = json.loads(
            subprocess.run(["ip", "-n", self.cap, "-j", "link", "show", "veth0"], check=True, capture_output=True, text=True).stdout
        )[0]["address"]
        sh("ip", "-n", self.snd, "neigh", "replace", "10.78.0.1", "lladdr", mac, "dev", "veth0", "nud", "permanent")
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in (self.snd, self.cap):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- one measured run ------------------------------------------------------------------

    def start_capture(self, variant: str, path: str, *, total_bytes: int = 0, buffer_mb: int | None = None, cpu: int | None = None):
        ns = ["ip", "netns", "exec", self.cap] + (["taskset", "-c", str(cpu)] if cpu is not None else [])
        if variant == "tcpdump":
            cmd = ns + ["tcpdump", "-i", "veth0", "-n", "-s", "128", "-Z", "root", "-w", path]
            if buffer_mb:
                cmd += ["-B", str(buffer_mb * 1024)]
            cmd += [FILTER]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            wait_for = lambda: "listening on" in proc.stderr.readline()
        else:
            cmd = ns + [
                sys.executable,
                "-m",
                "bench.capture_worker",
                "--interface",
                "veth0",
                "--path",
                path,
                "--filter",
                FILTER,
                "--snaplen",
                "128",
                "--total-bytes",
                str(total_bytes),
            ]
            if buffer_mb:
                cmd += ["--buffer-mb", str(buffer_mb)]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
            wait_for = lambda: proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 10
        while not wait_for():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{variant} did not start: {proc.stderr.read()}")
        return proc

    def send(self, senders: int, packets: int, pps: float = 0, cpu: int | None = None) -> tuple[int, float]:
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        cmd = ["ip", "netns", "exec", self.snd, *pin, self.flood, "10.78.0.1", "5001", str(packets), "18"]
        if pps:
            cmd.append(str(pps / senders))
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(senders)]
        sent, longest = 0, 0.0
        for p in procs:
            n, el = p.communicate()[0].split()
            sent, longest = sent + int(n), max(longest, float(el))
        return sent, longest

    def finish(self, variant: str, proc: subprocess.Popen, path: str) -> dict:
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGTERM)  # not proc.send_signal: it would reap the child first
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = status
        out, err = proc.stdout.read(), proc.stderr.read()
        size = os.path.getsize(path)
        assert (size - 24) % RECORD == 0, f"{variant}: odd file size {size}"
        r = {
            "file_packets": (size - 24) // RECORD,
            "file_bytes": size,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "maxrss_mb": usage.ru_maxrss / 1024,
        }
        if variant == "tcpdump":
            for line in err.splitlines():
                if "dropped by kernel" in line:
                    r["kernel_drops"] = int(line.split()[0])
        else:
            counters = json.loads(out.strip().splitlines()[-1])
            r["kernel_drops"] = counters["kernel_drops"]
            r["stop_reason"] = counters["stop_reason"]
        os.remove(path)
        return r

    def run(
        self, variant: str, *, senders: int, packets: int, pps: float = 0, total_bytes: int = 0, buffer_mb: int | None = None, hogs: int = 0
    ) -> dict:
        """hogs > 0: the busy case. The senders get CPU 0; the capture shares CPU 1 with `hogs`
        busy loops (bounded to 30 s), so it runs in time slices while packets keep arriving."""
        path = os.path.join(self.dir, f"{variant}.pcap")
        cap_cpu, snd_cpu = (1, 0) if hogs else (None, None)
        proc = self.start_capture(variant, path, total_bytes=total_bytes, buffer_mb=buffer_mb, cpu=cap_cpu)
        hog_procs = [
            subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", "import time\nt=time.time()+30\nwhile time.time()<t: pass"])
            for _ in range(hogs)
        ]
        try:
            sent, elapsed = self.send(senders, packets, pps, cpu=snd_cpu) if packets else (0, 0.0)
        finally:
            for h in hog_procs:
                h.kill()
                h.wait()
        r = self.finish(variant, proc, path)
        r.update(sent=sent, send_pps=sent / elapsed if elapsed else 0.0)
        return r


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--packets", type=int, default=1_500_000, help="per sender")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--hogs", type=int, default=16, help="busy loops sharing the capture's CPU in the busy case")
    a = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces)")
    results: dict[str, list[dict]] = {}
    with Bench() as b:
        for i in range(a.runs):
            for variant in ("tcpdump", "fleetcap"):
                # Start-up and shutdown with no traffic: subtracted to get CPU per packet.
                r = b.run(variant, senders=2, packets=0)
                results.setdefault(f"idle/{variant}", []).append(r)
                print(f"idle     run {i} {variant:8}: cpu {r['cpu_s']:.3f}s rss {r['maxrss_mb']:.1f} MiB", flush=True)
        for i in range(a.runs):
            # Interleaved, so drift hits every variant alike. tcpdump-32: tcpdump with fleetcap's
            # default ring (-B 32768), to separate the ring's cache cost from the tool's own.
            for variant, ring in (("tcpdump", None), ("tcpdump-32", 32), ("fleetcap", None), ("fleetcap-2", 2)):
                r = b.run(variant.split("-")[0], senders=2, packets=a.packets, buffer_mb=ring)
                results.setdefault(f"flood/{variant}", []).append(r)
                print(f"flood    run {i} {variant:10}: {r}", flush=True)
        for i in range(a.runs):
            for variant in ("tcpdump", "fleetcap"):
                # Both cores busy: senders flood from CPU 0, the capture shares CPU 1 with busy
                # loops; each tool with its defaults.
                r = b.run(variant, senders=2, packets=a.packets, hogs=a.hogs)
                results.setdefault(f"busy/{variant}", []).append(r)
                print(f"busy     run {i} {variant:8}: {r}", flush=True)
        limit = 10_000_000
        for i in range(a.runs):
            r = b.run("fleetcap", senders=2, packets=a.packets, total_bytes=limit)
            r["limit"] = limit
            results.setdefault("bytelimit/fleetcap", []).append(r)
            print(f"bytelimit run {i}: {r}", flush=True)

    for variant in ("tcpdump", "tcpdump-32", "fleetcap", "fleetcap-2"):
        idle = median(results[f"idle/{variant.split('-')[0]}"], "cpu_s")
        for case in ("flood", "busy"):
            for r in results.get(f"{case}/{variant}", []):
                r["us_per_packet"] = (r["cpu_s"] - idle) / max(1, r["file_packets"]) * 1e6
    print("\n== medians")
    print(
        f"idle CPU (start-up + shutdown, subtracted below): tcpdump {median(results['idle/tcpdump'], 'cpu_s'):.3f}s "
        f"fleetcap {median(results['idle/fleetcap'], 'cpu_s'):.3f}s"
    )
    for case in ("flood", "busy"):
        t, f = results[f"{case}/tcpdump"], results[f"{case}/fleetcap"]
        print(
            f"{case}: send rate {median(t, 'send_pps') / 1e3:.0f}k / {median(f, 'send_pps') / 1e3:.0f}k pps; "
            f"sent {median(t, 'sent'):.0f}; captured tcpdump {median(t, 'file_packets'):.0f} "
            f"fleetcap {median(f, 'file_packets'):.0f}; kernel drops tcpdump {median(t, 'kernel_drops'):.0f} "
            f"fleetcap {median(f, 'kernel_drops'):.0f}"
        )
        print(
            f"{case}: CPU µs/packet tcpdump {median(t, 'us_per_packet'):.3f} fleetcap {median(f, 'us_per_packet'):.3f} "
            f"ratio {median(f, 'us_per_packet') / median(t, 'us_per_packet'):.2f}; "
            f"peak RSS tcpdump {median(t, 'maxrss_mb'):.1f} MiB fleetcap {median(f, 'maxrss_mb'):.1f} MiB"
        )
        if case == "flood":
            t32 = results["flood/tcpdump-32"]
            print(
                f"flood: with the same 32 MiB ring: tcpdump -B 32768 {median(t32, 'us_per_packet'):.3f} µs/packet, "
                f"ratio fleetcap/tcpdump {median(f, 'us_per_packet') / median(t32, 'us_per_packet'):.2f}; "
                f"captured {median(t32, 'file_packets'):.0f}, drops {median(t32, 'kernel_drops'):.0f}"
            )
            f2 = results["flood/fleetcap-2"]
            print(
                f"flood: with tcpdump's 2 MiB ring: fleetcap --buffer-size-mb 2 {median(f2, 'us_per_packet'):.3f} "
                f"µs/packet, ratio fleetcap/tcpdump {median(f2, 'us_per_packet') / median(t, 'us_per_packet'):.2f}; "
                f"captured {median(f2, 'file_packets'):.0f}, drops {median(f2, 'kernel_drops'):.0f}"
            )
    bl = results["bytelimit/fleetcap"]
    exact = all(
        r["file_bytes"] <= r["limit"] and r["limit"] - r["file_bytes"] < RECORD and r["stop_reason"] == "TotalBytesExceeded" for r in bl
    )
    print(f"bytelimit: limit {limit}, file bytes {[r['file_bytes'] for r in bl]}, exact (never over, next record would not fit): {exact}")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
