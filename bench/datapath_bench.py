"""Data-path benchmark: agent → coordinator → sink, against the baselines measured in the same run.

    python -m bench.datapath_bench [--size-mb 1024] [--runs 3]

Everything on loopback. A real coordinator process (memory store) serves the real Fleet
protocol; "agents" here are lightweight: they speak the real Connect/Upload protocol and run the
real node_agent Uploader on a pre-written file, but do not capture. Measured:
  1. local sink: Uploader → coordinator → --storage-dir (fsynced, SHA-256 verified) vs a raw
     gRPC byte stream of the same size (bench/raw_grpc.py, bytes discarded on arrival);
  2. Azure Blob (Azurite): Uploader → coordinator → staged blocks vs azure-storage-blob
     upload_blob() of the same file straight to Azurite;
  3. coordinator RSS while 10 agents upload at once, for two file sizes (flat = no growth).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from deploy.localfleet import AZURITE, AZURITE_KEY
from fleetcap.clients import sdk
from fleetcap.core import naming, pki, transport
from fleetcap.core.auth import AuthFile, Role, new_token
from fleetcap.core.transport import free_port
from fleetcap.node_agent.upload.uploader import Uploader
from fleetcap.v1 import fleet_pb2, fleet_pb2_grpc

TOKENS = {"admin": new_token(), "agent": new_token()}

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def save_auth(path: str) -> str:
    """An auth file with the benchmark's admin and agent tokens (TOKENS)."""
    auth = AuthFile()
    for role in ("admin", "agent"):
        auth = auth.with_token(role, frozenset({Role(role)}), TOKENS[role])
    auth.save(path)
    return path


def make_file(path: str, size: int) -> str:
    block = os.urandom(16 << 20)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = block[: min(left, len(block))]
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.1)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclasses.dataclass(frozen=True)
class Deployment:
    """A coordinator under test: where clients and agents dial, and how each proves itself.
    Plain: loopback, tokens. TLS: clients over TLS with a token, agents over mutual TLS with a
    certificate each (issued on the fly), as a production fleet runs."""

    api: str
    agents: str
    work: str
    tls: bool

    def client_creds(self) -> dict[str, str]:
        return {"token": TOKENS["admin"], "tls_ca": self.ca if self.tls else ""}

    @property
    def ca(self) -> str:
        return os.path.join(self.work, "pki", "ca", "ca.pem")

    def agent_creds(self, vm: str) -> transport.ClientCredentials:
        if not self.tls:
            return transport.ClientCredentials(token=TOKENS["agent"])
        out = os.path.join(self.work, "pki", vm)
        ident = fleet_pb2.AgentIdentity(vm_name=vm, resource_group="bench")
        pki.issue_agent(os.path.join(self.work, "pki", "ca"), out, arm_id=naming.resource_id(ident), instance_name=vm)
        return transport.ClientCredentials(
            tls_ca=self.ca, tls_cert=os.path.join(out, "agent.pem"), tls_key=os.path.join(out, "agent-key.pem")
        )


class LightAgent:
    """Registers as VM `vm` over the real control stream, then uploads one file when told to."""

    def __init__(self, dep: Deployment, vm: str):
        self.address, self.vm = dep.agents, vm
        self.creds = dep.agent_creds(vm)
        self.identity = fleet_pb2.AgentIdentity(vm_name=vm, resource_group="bench")

    async def connect(self) -> None:
        self.channel = transport.aio_channel(self.address, credentials=self.creds)
        self.data = transport.aio_channel(self.address, credentials=self.creds, dedicated=True)
        self.call = fleet_pb2_grpc.FleetStub(self.channel).Connect(metadata=self.creds.metadata())
        await self.call.write(
            fleet_pb2.AgentMessage(
                hello=fleet_pb2.AgentHello(identity=self.identity, hostname="bench", interface="lo", addresses=["127.0.0.1"])
            )
        )
        await self.call.read()  # welcome
        self.beat = asyncio.ensure_future(self._heartbeat())

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(1)
            await self.call.write(fleet_pb2.AgentMessage(heartbeat=fleet_pb2.Heartbeat()))

    async def upload(self, path: str, size: int, sha: str) -> float:
        msg = await self.call.read()
        start = self.start = msg.start
        u = Uploader(
            fleet_pb2_grpc.FleetStub(self.data),
            fleet_pb2.UploadOpen(
                identity=self.identity, capture_name=start.capture_name, capture_id=start.capture_id, file_path=start.file_path
            ),
            path,
            lambda: (size, sha),
            lambda: None,
            metadata=self.creds.metadata(),
        )
        t0 = time.perf_counter()
        state = await u.run()
        elapsed = time.perf_counter() - t0
        assert state.committed and state.stored_sha256 == sha, state
        return elapsed

    async def close(self) -> None:
        self.beat.cancel()
        self.call.cancel()
        await self.channel.close()
        await self.data.close()


async def fleetcap_uploads(dep: Deployment, files: list[tuple[str, int, str]], account: str, tag: str) -> list[float]:
    """One light agent per file, all uploading at once; returns each upload's seconds."""
    agents = [LightAgent(dep, f"{tag}{i}") for i in range(len(files))]
    for a in agents:
        await a.connect()
    tasks = [asyncio.ensure_future(a.upload(*f)) for a, f in zip(agents, files)]
    with sdk.Client(dep.api, **dep.client_creds()) as c:
        for a in agents:
            await asyncio.to_thread(
                c.create,
                name=f"{a.vm}",
                target=a.vm,
                resource_group="bench",
                storage_account=account,
                file_path=f"/var/captures/{a.vm}.cap",
                time_limit_in_seconds=0,
                total_bytes_per_session=0,
            )
    times = await asyncio.gather(*tasks)
    for a in agents:
        await a.close()
    return list(times)


def raw_grpc(address: str, path: str) -> float:
    return float(
        subprocess.run(
            [sys.executable, "-m", "bench.raw_grpc", "client", address, path], check=True, capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
    )


def direct_upload_blob(conn: str, path: str, name: str) -> float:
    from azure.storage.blob import BlobServiceClient

    svc = BlobServiceClient.from_connection_string(conn)
    try:
        svc.create_container("direct")
    except Exception:  # exists from an earlier run
        pass
    blob = svc.get_blob_client("direct", name)
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        blob.upload_blob(f, overwrite=True)
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mb", type=int, default=1024)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--agents", type=int, default=10)
    a = p.parse_args()
    size = a.size_mb << 20
    work = tempfile.mkdtemp(prefix="fleetcap-dp-")
    procs: list[subprocess.Popen] = []
    try:
        big = os.path.join(work, "big.cap")
        sha = make_file(big, size)
        az_port, api_port, raw_port, tls_api_port, tls_agent_port = (free_port() for _ in range(5))
        save_auth(os.path.join(work, "auth.toml"))
        ca = os.path.join(work, "pki", "ca")
        pki.create_ca(ca)
        pki.issue_coordinator(ca, os.path.join(work, "pki"), dns=[], ips=[])
        conn = (
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{az_port}/devstoreaccount1;"
        )
        az = subprocess.Popen(
            [
                AZURITE,
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(az_port),
                "--location",
                os.path.join(work, "azurite"),
                "--disableTelemetry",
                "--silent",
                "--skipApiVersionCheck",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(az)
        env = dict(os.environ, BENCH_BLOB=conn)
        common = [
            "--store",
            "memory",
            "--auth-file",
            os.path.join(work, "auth.toml"),
            "--storage-dir",
            os.path.join(work, "storage"),
            "--storage-account",
            "blob1=env:BENCH_BLOB",
        ]
        coord = subprocess.Popen(
            [sys.executable, "-m", "fleetcap", "--log-level", "WARNING", "coordinator", "--listen", f"127.0.0.1:{api_port}", *common],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(work, "coord.log"), "w"),
        )
        tls_coord = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleetcap",
                "--log-level",
                "WARNING",
                "coordinator",
                "--listen",
                f"127.0.0.1:{tls_api_port}",
                "--mtls-listen",
                f"127.0.0.1:{tls_agent_port}",
                "--tls-cert",
                os.path.join(work, "pki", "coordinator.pem"),
                "--tls-key",
                os.path.join(work, "pki", "coordinator-key.pem"),
                "--tls-client-ca",
                os.path.join(ca, "ca.pem"),
                *common,
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(work, "coord-tls.log"), "w"),
        )
        procs += [coord, tls_coord]
        raw = subprocess.Popen([sys.executable, "-m", "bench.raw_grpc", "server", f"127.0.0.1:{raw_port}"], cwd=ROOT)
        disk_port = free_port()
        raw_disk = subprocess.Popen(
            [sys.executable, "-m", "bench.raw_grpc", "server", f"127.0.0.1:{disk_port}", os.path.join(work, "raw-disk.bin")], cwd=ROOT
        )
        procs += [raw, raw_disk]
        for port, proc, what in (
            (az_port, az, "Azurite"),
            (api_port, coord, "coordinator"),
            (raw_port, raw, "raw"),
            (disk_port, raw_disk, "raw to disk"),
            (tls_api_port, tls_coord, "TLS coordinator"),
        ):
            wait_port(port, proc, what)
        address = Deployment(f"127.0.0.1:{api_port}", f"127.0.0.1:{api_port}", work, tls=False)
        secure = Deployment(f"127.0.0.1:{tls_api_port}", f"127.0.0.1:{tls_agent_port}", work, tls=True)
        res: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}  # receiving process's CPU seconds per GiB
        gib = size / (1 << 30)
        for run in range(a.runs):
            c0 = cpu_s(raw.pid)
            res.setdefault("raw", []).append(size / raw_grpc(f"127.0.0.1:{raw_port}", big) / 1e6)
            cpu.setdefault("raw", []).append((cpu_s(raw.pid) - c0) / gib)
            c0 = cpu_s(raw_disk.pid)
            res.setdefault("raw_disk", []).append(size / raw_grpc(f"127.0.0.1:{disk_port}", big) / 1e6)
            cpu.setdefault("raw_disk", []).append((cpu_s(raw_disk.pid) - c0) / gib)
            c0 = cpu_s(coord.pid)
            t = asyncio.run(fleetcap_uploads(address, [(big, size, sha)], "local", f"l{run}x"))[0]
            cpu.setdefault("local", []).append((cpu_s(coord.pid) - c0) / gib)
            res.setdefault("local", []).append(size / t / 1e6)
            c0 = cpu_s(tls_coord.pid)
            t = asyncio.run(fleetcap_uploads(secure, [(big, size, sha)], "local", f"t{run}x"))[0]
            cpu.setdefault("local_tls", []).append((cpu_s(tls_coord.pid) - c0) / gib)
            res.setdefault("local_tls", []).append(size / t / 1e6)
            res.setdefault("direct", []).append(size / direct_upload_blob(conn, big, f"d{run}") / 1e6)
            t = asyncio.run(fleetcap_uploads(address, [(big, size, sha)], "blob1", f"b{run}x"))[0]
            res.setdefault("blob", []).append(size / t / 1e6)
            print(
                f"run {run}: raw gRPC {res['raw'][-1]:.0f} MB/s, raw gRPC→disk {res['raw_disk'][-1]:.0f} MB/s, "
                f"fleetcap→local {res['local'][-1]:.0f} MB/s, with TLS {res['local_tls'][-1]:.0f} MB/s, "
                f"upload_blob {res['direct'][-1]:.0f} MB/s, fleetcap→blob {res['blob'][-1]:.0f} MB/s",
                flush=True,
            )
        med = {k: statistics.median(v) for k, v in res.items()}
        print(f"\n== medians over {a.runs} runs, {a.size_mb} MiB file")
        print(
            f"local sink: fleetcap {med['local']:.0f} MB/s vs raw gRPC stream {med['raw']:.0f} MB/s (bytes "
            f"discarded): ratio {med['local'] / med['raw']:.2f}; vs raw gRPC written to disk with the same fsync "
            f"batching {med['raw_disk']:.0f} MB/s: ratio {med['local'] / med['raw_disk']:.2f}"
        )
        print(
            f"TLS (agents over mutual TLS, a certificate each): fleetcap→local {med['local_tls']:.0f} MB/s against "
            f"{med['local']:.0f} MB/s in plaintext: ratio {med['local_tls'] / med['local']:.2f} "
            f"(TLS costs {100 * (1 - med['local_tls'] / med['local']):.0f} %)"
        )
        print("receiving process CPU seconds per GiB (median): " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in cpu.items()))
        print(
            f"Azure Blob (Azurite): fleetcap {med['blob']:.0f} MB/s vs upload_blob {med['direct']:.0f} MB/s: "
            f"ratio {med['blob'] / med['direct']:.2f}"
        )

        # Memory: 10 agents at once, small then large files; the coordinator's RSS must not grow with size.
        for each_mb in (64, 256):
            files = []
            for i in range(a.agents):
                path = os.path.join(work, f"m{each_mb}-{i}.cap")
                files.append((path, each_mb << 20, make_file(path, each_mb << 20)))
            idle = rss_mb(coord.pid)
            peak = [idle]
            stop = threading.Event()

            def sample(stop: threading.Event = stop, peak: list[float] = peak) -> None:
                while not stop.is_set():
                    peak.append(rss_mb(coord.pid))
                    time.sleep(0.1)

            sampler = threading.Thread(target=sample)
            sampler.start()
            t0 = time.perf_counter()
            asyncio.run(fleetcap_uploads(address, files, "local", f"m{each_mb}x"))
            total = time.perf_counter() - t0
            stop.set()
            sampler.join()
            print(
                f"{a.agents} agents × {each_mb} MiB at once to the local sink: {a.agents * each_mb / total:.0f} MiB/s "
                f"total; coordinator RSS idle {idle:.0f} MiB, peak {max(peak):.0f} MiB"
            )
            for path, _, _ in files:
                os.remove(path)
        return 0
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
