"""List and GetStatus at scale: many captures, and one capture of a full-size scale set.

    python -m bench.list_bench [--captures 10000] [--instances 1000] [--calls 100]

A real coordinator with its embedded etcd. The records are written straight into etcd (as the
coordinator writes them, but without agents: this measures reading the state, not creating it):
`--captures` captures of one instance each, and one capture of `--instances` instances, each
with a Running status and a file. Then, through the public gRPC API with a token:
- List, one page of 100 (the first page, and a page in the middle), p50 and p99 over --calls;
- List of every capture, a page of 1,000 at a time (the SDK's list()), and, as the baseline
  measured in the same run, List with page_size 0 (every capture in one answer, as before
  paging);
- GetStatus of the capture of --instances instances, p50 and p99 over --calls.
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

from bench.datapath_bench import ROOT, wait_port
from deploy.localfleet import LocalFleet
from fleetcap.clients import sdk
from fleetcap.coordinator.state.embedded_etcd import EmbeddedEtcd
from fleetcap.coordinator.state.etcd_store import EtcdAccess, EtcdKV
from fleetcap.coordinator.state.store import Store
from fleetcap.core.auth import AuthFile, Role, new_token
from fleetcap.core.transport import free_port
from fleetcap.v1 import captures_pb2 as pb
from fleetcap.v1 import fleet_pb2, state_pb2

TOKEN = new_token()
CREATED = "2026-12-02T12:00:00.000Z"


def record(name: str, instances: int) -> tuple[state_pb2.CaptureRecord, list[state_pb2.InstanceRecord]]:
    props = pb.PacketCaptureParameters(
        target="/subscriptions/local/resourceGroups/bench/providers/Microsoft.Compute/virtualMachineScaleSets/big",
        target_type="AzureVMSS",
        time_limit_in_seconds=18000,
        storage_location=pb.PacketCaptureStorageLocation(file_path=f"/var/captures/{name}.cap"),
    )
    resource = pb.PacketCaptureResult(
        name=name,
        id=f"/subscriptions/local/.../packetCaptures/{name}",
        etag='W/"1"',
        provisioning_state="Succeeded",
        properties=props,
        created_time=CREATED,
    )
    keys = [f"local/bench/vmss/big/{i}" for i in range(instances)]
    insts = []
    for i, key in enumerate(keys):
        ident = fleet_pb2.AgentIdentity(resource_group="bench", vmss_name="big", instance_id=str(i))
        status = pb.InstanceStatus(
            id=f"/subscriptions/local/resourceGroups/bench/providers/Microsoft.Compute/virtualMachineScaleSets/big/virtualMachines/{i}",
            instance_id=str(i),
            packet_capture_status="Running",
            capture_start_time=CREATED,
            packets_captured=123456,
            bytes_captured=98765432,
            kernel_drops=0,
        )
        status.files.add(file_path=f"/var/captures/{name}.cap", size_bytes=98765432, sha256="")
        insts.append(state_pb2.InstanceRecord(instance_key=key, identity=ident, status=status))
    return state_pb2.CaptureRecord(
        resource=resource, instance_keys=keys, local_path=f"/var/captures/{name}.cap", container="network-watcher-logs"
    ), insts


async def populate(store: Store, captures: int, instances: int) -> None:
    sem = asyncio.Semaphore(32)

    async def one(name: str, n: int) -> None:
        async with sem:
            await store.create_capture(*record(name, n))

    await asyncio.gather(*(one(f"pc-{i:05d}", 1) for i in range(captures)))
    await one("big", instances)


def timed(fn, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return sorted(out)


def p(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--captures", type=int, default=10000)
    ap.add_argument("--instances", type=int, default=1000)
    ap.add_argument("--calls", type=int, default=100)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="fleetcap-list-")
    etcd = EmbeddedEtcd(os.path.join(work, "etcd")).start()
    t = etcd.client_tls
    AuthFile().with_token("admin", frozenset({Role.ADMIN}), TOKEN).save(os.path.join(work, "auth.toml"))
    port = free_port()
    coord = None
    try:
        store = Store(EtcdKV([etcd.endpoint], access=EtcdAccess(t.ca, t.cert, t.key)))
        t0 = time.monotonic()
        asyncio.run(populate(store, a.captures, a.instances))
        print(f"wrote {a.captures} captures and one of {a.instances} instances in {time.monotonic() - t0:.0f} s", flush=True)
        coord = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleetcap",
                "--log-level",
                "WARNING",
                "coordinator",
                "--listen",
                f"127.0.0.1:{port}",
                "--data-dir",
                work,
                "--auth-file",
                os.path.join(work, "auth.toml"),
                "--max-captures",
                str(a.captures + 10),
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
        wait_port(port, coord, "coordinator")
        with sdk.Client(f"127.0.0.1:{port}", token=TOKEN, timeout_s=120) as c:
            first, token = c.list_page(page_size=100)
            assert len(first) == 100
            assert token
            middle_token = token
            for _ in range(a.captures // 200):  # to the middle of the listing
                _, middle_token = c.list_page(page_size=100, page_token=middle_token)
            page_first = timed(lambda: c.list_page(page_size=100), a.calls)
            page_middle = timed(lambda: c.list_page(page_size=100, page_token=middle_token), a.calls)
            every = timed(lambda: c.list(), 5)
            assert len(c.list()) == a.captures + 1
            one_answer = timed(lambda: c._run(c._async._call("List", pb.ListPacketCapturesRequest())), 5)
            status = timed(lambda: c.get_status(name="big"), a.calls)
            assert len(c.get_status(name="big").instances) == a.instances
        print(
            f"List, a page of 100 of {a.captures + 1} captures: first page p50 {p(page_first, 0.5):.1f} ms, "
            f"p99 {p(page_first, 0.99):.1f} ms; a middle page p50 {p(page_middle, 0.5):.1f} ms, "
            f"p99 {p(page_middle, 0.99):.1f} ms ({a.calls} calls each)"
        )
        print(
            f"List of every capture, pages of 1,000: median {statistics.median(every) * 1000:.0f} ms; "
            f"baseline, one answer (page_size 0): median {statistics.median(one_answer) * 1000:.0f} ms (5 calls each)"
        )
        print(
            f"GetStatus of a capture of {a.instances} instances: p50 {p(status, 0.5):.1f} ms, "
            f"p99 {p(status, 0.99):.1f} ms ({a.calls} calls)"
        )
    finally:
        LocalFleet.stop_process(coord, timeout_s=15)
        etcd.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
