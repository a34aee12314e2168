"""Gateway benchmark: the REST API against the gRPC SDK, measured in the same run.

    python -m bench.gateway_bench [--clients 50] [--requests 20] [--size-mb 1024] [--runs 3]

A real coordinator (memory store, local storage) and `fleetcap gateway` over HTTPS, each in its
own process; the clients run in this process. Stored captures come from light agents that speak
the real Upload protocol with synthetic pcap files (bench/datapath_bench.py's LightAgent).
Measured, per run:
  1. latency of Get (one capture) and List (ARM's collection) with `--clients` concurrent
     clients each making `--requests` calls: REST through the gateway (httpx, one keep-alive
     connection per client) against the SDK's AsyncClient (one channel per client);
  2. download throughput of one stored file: GET /fleetcap/v1/captures/N/files through the
     gateway against ReadFile through the SDK;
  3. /merged of a capture of 4 instances × size/2 (2 GiB at the default size): the time to the
     first byte and the throughput of the whole stream.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import httpx

from bench.datapath_bench import ROOT, TOKENS, Deployment, LightAgent, cpu_s, wait_port
from fleetcap.clients import sdk
from fleetcap.core import naming, pki, transport
from fleetcap.core.auth import AuthFile, Role
from fleetcap.core.transport import free_port
from fleetcap.v1 import captures_pb2, fleet_pb2

ARM = "/subscriptions/local/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_local/packetCaptures"
API = "?api-version=2024-05-01"
PACKET = 1400


def make_pcap(path: str, size: int, start_s: int) -> tuple[int, str]:
    """A valid pcap of PACKET-byte records, about `size` bytes; returns (size, SHA-256)."""
    import hashlib

    h = hashlib.sha256()
    payload = os.urandom(PACKET)
    with open(path, "wb") as f:
        head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
        f.write(head)
        h.update(head)
        written, i = len(head), 0
        batch = []
        while written < size:
            rec = struct.pack("<IIII", start_s + i // 1000, (i % 1000) * 1000, PACKET, PACKET) + payload
            batch.append(rec)
            written += len(rec)
            i += 1
            if len(batch) == 4096:
                data = b"".join(batch)
                f.write(data)
                h.update(data)
                batch = []
        data = b"".join(batch)
        f.write(data)
        h.update(data)
    return written, h.hexdigest()


class ReportingAgent(LightAgent):
    """A light agent that also reports its capture as a real one does: Running, then Stopped with
    its file (the status the gateway's downloads are planned from). With a scale set, it is
    instance `index` of it."""

    def __init__(self, dep: Deployment, vm: str, scale_set: str = "", index: int = 0):
        super().__init__(dep, vm)
        if scale_set:
            self.identity = fleet_pb2.AgentIdentity(vmss_name=scale_set, instance_id=str(index), resource_group="bench")
            out = os.path.join(dep.work, "pki", f"{scale_set}_{index}")
            pki.issue_agent(
                os.path.join(dep.work, "pki", "ca"),
                out,
                arm_id=naming.resource_id(self.identity),
                instance_name=naming.instance_name(naming.resource_id(self.identity)),
            )
            self.creds = transport.ClientCredentials(
                tls_ca=dep.ca, tls_cert=os.path.join(out, "agent.pem"), tls_key=os.path.join(out, "agent-key.pem")
            )

    async def upload(self, path: str, size: int, sha: str) -> float:
        elapsed = await super().upload(path, size, sha)
        start = self.start
        for status in ("Running", "Stopped"):
            await self.call.write(
                fleet_pb2.AgentMessage(
                    progress=fleet_pb2.CaptureProgress(
                        capture_name=start.capture_name,
                        capture_id=start.capture_id,
                        status=captures_pb2.InstanceStatus(
                            packet_capture_status=status,
                            stop_reason="StoppedByUser" if status == "Stopped" else "",
                            bytes_captured=size,
                            files=[
                                captures_pb2.CaptureFile(
                                    file_path=start.file_path,
                                    size_bytes=size,
                                    sha256=sha,
                                    uploaded_bytes=size,
                                    upload_complete=True,
                                    stored_sha256=sha,
                                )
                            ],
                        ),
                    )
                )
            )
        return elapsed


async def store(dep: Deployment, name: str, files: list[tuple[str, int, str]], scale_set: bool = False) -> None:
    """Stores `files` as capture `name`: of VM `name` (one file), or of scale set `name` (an
    instance per file), each uploaded by a light agent."""
    agents = [ReportingAgent(dep, f"{name}-vm{i}" if scale_set else name, name if scale_set else "", i) for i in range(len(files))]
    for a in agents:
        await a.connect()
    uploads = [asyncio.ensure_future(a.upload(*f)) for a, f in zip(agents, files)]
    with sdk.Client(dep.api, **dep.client_creds()) as c:
        await asyncio.to_thread(
            c.create,
            name=name,
            target=name,
            resource_group="bench",
            storage_account="local",
            target_type="AzureVMSS" if scale_set else "AzureVM",
            file_path="" if scale_set else f"/var/captures/{name}.cap",
            time_limit_in_seconds=0,
            total_bytes_per_session=0,
        )
        await asyncio.gather(*uploads)
        deadline = time.monotonic() + 30
        while True:
            status = await asyncio.to_thread(c.get_status, name=name)
            if len(status.instances) == len(files) and all(i.files and all(f.upload_complete for f in i.files) for i in status.instances):
                break
            assert time.monotonic() < deadline, f"{name}: the stored files are not in the status"
            await asyncio.sleep(0.1)
    for a in agents:
        await a.close()


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def rest_latency(base: str, ca: str, path: str, clients: int, requests: int) -> list[float]:
    ctx = ssl.create_default_context(cafile=ca)
    headers = {"Authorization": f"Bearer {TOKENS['admin']}"}

    async def one() -> list[float]:
        async with httpx.AsyncClient(base_url=base, verify=ctx, headers=headers, http2=False) as h:
            (await h.get(path)).raise_for_status()  # connect and warm up
            out = []
            for _ in range(requests):
                t = time.perf_counter()
                r = await h.get(path)
                out.append(time.perf_counter() - t)
                r.raise_for_status()
            return out

    return [x for xs in await asyncio.gather(*(one() for _ in range(clients))) for x in xs]


async def grpc_latency(address: str, ca: str, what: str, name: str, clients: int, requests: int) -> list[float]:
    async def one() -> list[float]:
        async with sdk.AsyncClient(address, token=TOKENS["admin"], tls_ca=ca) as c:
            call = (lambda: c.get(name=name)) if what == "get" else c.list
            await call()
            out = []
            for _ in range(requests):
                t = time.perf_counter()
                await call()
                out.append(time.perf_counter() - t)
            return out

    return [x for xs in await asyncio.gather(*(one() for _ in range(clients))) for x in xs]


async def rest_download(base: str, ca: str, path: str) -> tuple[float, int, float]:
    """(seconds, bytes, seconds to the first byte)."""
    ctx = ssl.create_default_context(cafile=ca)
    async with httpx.AsyncClient(base_url=base, verify=ctx, timeout=600, headers={"Authorization": f"Bearer {TOKENS['admin']}"}) as h:
        t = time.perf_counter()
        first = None
        n = 0
        async with h.stream("GET", path) as r:
            r.raise_for_status()
            async for chunk in r.aiter_raw(1 << 20):
                if first is None:
                    first = time.perf_counter() - t
                n += len(chunk)
        return time.perf_counter() - t, n, first or 0.0


def curl_download(base: str, ca: str, path: str) -> tuple[float, int]:
    """The same download by curl, a client in a process of its own: (seconds, bytes)."""
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail",
            "-o",
            "/dev/null",
            "--cacert",
            ca,
            "-w",
            "%{time_total} %{size_download}",
            "-H",
            f"Authorization: Bearer {TOKENS['admin']}",
            base + path,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[0]), int(out[1])


async def grpc_download(address: str, ca: str, name: str, instance: str) -> tuple[float, int]:
    async with sdk.AsyncClient(address, token=TOKENS["admin"], tls_ca=ca) as c:
        t = time.perf_counter()
        n = 0
        async for data in c.read_file(name=name, instance_id=instance):
            n += len(data)
        return time.perf_counter() - t, n


def show(label: str, xs: list[float], unit: str = "") -> str:
    return f"{label}: median {statistics.median(xs):.2f}{unit} (range {min(xs):.2f}–{max(xs):.2f})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--requests", type=int, default=20)
    p.add_argument("--size-mb", type=int, default=1024)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    size = a.size_mb << 20
    work = tempfile.mkdtemp(prefix="fleetcap-gw-bench-")
    procs: list[subprocess.Popen] = []
    try:
        auth = AuthFile()
        for role in ("admin", "agent"):
            auth = auth.with_token(role, frozenset({Role(role)}), TOKENS[role])
        auth.save(os.path.join(work, "auth.toml"))
        api_port, agent_port, gw_port = free_port(), free_port(), free_port()
        # As in production: the coordinator serves TLS (agents with mutual TLS), so the SDK's
        # ReadFile and the gateway's own calls pay for it as the gateway's clients do.
        ca_dir = os.path.join(work, "pki", "ca")
        pki.create_ca(ca_dir)
        coord_cert = pki.issue_coordinator(ca_dir, os.path.join(work, "pki"), dns=[], ips=[])
        ca = os.path.join(ca_dir, "ca.pem")
        coord = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleetcap",
                "--log-level",
                "WARNING",
                "coordinator",
                "--listen",
                f"127.0.0.1:{api_port}",
                "--mtls-listen",
                f"127.0.0.1:{agent_port}",
                "--store",
                "memory",
                "--tls-client-ca",
                ca,
                "--tls-cert",
                coord_cert.cert_path,
                "--tls-key",
                coord_cert.key_path,
                "--auth-file",
                os.path.join(work, "auth.toml"),
                "--storage-dir",
                os.path.join(work, "storage"),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(work, "coord.log"), "w"),
        )
        procs.append(coord)
        wait_port(api_port, coord, "coordinator")
        gw_cert = pki.issue_gateway(ca_dir, work, name="gateway")
        gw = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleetcap",
                "--log-level",
                "WARNING",
                "--coordinator",
                f"127.0.0.1:{api_port}",
                "gateway",
                "--listen",
                f"127.0.0.1:{gw_port}",
                "--tls-ca",
                ca,
                "--tls-cert",
                gw_cert.cert_path,
                "--tls-key",
                gw_cert.key_path,
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(work, "gw.log"), "w"),
        )
        procs.append(gw)
        wait_port(gw_port, gw, "gateway")
        base = f"https://127.0.0.1:{gw_port}"
        dep = Deployment(f"127.0.0.1:{api_port}", f"127.0.0.1:{agent_port}", work, tls=True)

        one = os.path.join(work, "one.cap")
        files = [(one, *make_pcap(one, size, 1_700_000_000))]
        asyncio.run(store(dep, "dl", files))
        quarter = []
        for i in range(4):
            path = os.path.join(work, f"q{i}.cap")
            quarter.append((path, *make_pcap(path, size // 2, 1_700_000_000 + i)))
        asyncio.run(store(dep, "mg", quarter, scale_set=True))
        for path in [one] + [q[0] for q in quarter]:  # the stored copies as well: every reader starts warm
            with open(path, "rb") as f:
                while f.read(16 << 20):
                    pass
        asyncio.run(grpc_download(dep.api, ca, "dl", "dl"))
        print(f"stored: dl ({size >> 20} MiB, one VM), mg (4 instances × {(size // 2) >> 20} MiB)", flush=True)

        res: dict[str, list[float]] = {}
        for run in range(a.runs):
            for what, path in (("get", f"{ARM}/dl{API}"), ("list", f"{ARM}{API}")):
                rest = asyncio.run(rest_latency(base, ca, path, a.clients, a.requests))
                grpc = asyncio.run(grpc_latency(dep.api, ca, what, "dl", a.clients, a.requests))
                for tag, xs in (("rest", rest), ("grpc", grpc)):
                    res.setdefault(f"{what}_{tag}_p50", []).append(percentile(xs, 0.5) * 1000)
                    res.setdefault(f"{what}_{tag}_p99", []).append(percentile(xs, 0.99) * 1000)
            # Downloads: the SDK, curl (a client in its own process, as a user's) and httpx (in
            # this process), in turn; the stored file is in the page cache for all three.
            t_sdk, n_sdk = asyncio.run(grpc_download(dep.api, ca, "dl", "dl"))
            c_gw, c_co = cpu_s(gw.pid), cpu_s(coord.pid)
            t_curl, n_curl = curl_download(base, ca, "/fleetcap/v1/captures/dl/files?instance=dl")
            gib = n_curl / (1 << 30)
            res.setdefault("dl_gateway_cpu_s_per_gib", []).append((cpu_s(gw.pid) - c_gw) / gib)
            res.setdefault("dl_coordinator_cpu_s_per_gib", []).append((cpu_s(coord.pid) - c_co) / gib)
            t_gw, n_gw, _ = asyncio.run(rest_download(base, ca, "/fleetcap/v1/captures/dl/files?instance=dl"))
            assert n_gw == n_sdk == n_curl == files[0][1], (n_gw, n_sdk, n_curl)
            res.setdefault("dl_sdk", []).append(n_sdk / t_sdk / 1e6)
            res.setdefault("dl_curl", []).append(n_curl / t_curl / 1e6)
            res.setdefault("dl_httpx", []).append(n_gw / t_gw / 1e6)
            res.setdefault("dl_ratio_curl", []).append((n_curl / t_curl) / (n_sdk / t_sdk))
            res.setdefault("dl_ratio_httpx", []).append((n_gw / t_gw) / (n_sdk / t_sdk))
            t_m, n_m, first = asyncio.run(rest_download(base, ca, "/fleetcap/v1/captures/mg/merged"))
            res.setdefault("merged_first_ms", []).append(first * 1000)
            res.setdefault("merged_mb_s", []).append(n_m / t_m / 1e6)
            print(
                f"run {run}: get p99 REST {res['get_rest_p99'][-1]:.1f} ms vs gRPC {res['get_grpc_p99'][-1]:.1f} ms; "
                f"list p99 REST {res['list_rest_p99'][-1]:.1f} ms vs gRPC {res['list_grpc_p99'][-1]:.1f} ms; "
                f"download curl {res['dl_curl'][-1]:.0f} MB/s, httpx {res['dl_httpx'][-1]:.0f} MB/s vs SDK "
                f"{res['dl_sdk'][-1]:.0f} MB/s (ratio {res['dl_ratio_curl'][-1]:.2f}, {res['dl_ratio_httpx'][-1]:.2f}); "
                f"merged ({n_m >> 20} MiB) first byte "
                f"{res['merged_first_ms'][-1]:.0f} ms, {res['merged_mb_s'][-1]:.0f} MB/s",
                flush=True,
            )
        print(f"\n{a.clients} clients × {a.requests} requests, {a.runs} runs")
        for key in sorted(res):
            unit = (
                " ms" if key.endswith(("_p50", "_p99", "_ms")) else ("" if "ratio" in key else (" CPU-s/GiB" if "cpu" in key else " MB/s"))
            )
            print(show(key, res[key], unit))
        return 0
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
