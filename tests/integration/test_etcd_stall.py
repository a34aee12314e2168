"""etcd stops answering for 5 s (SIGSTOP) while 40 agents report progress every second: the
coordinator delays the progress writes, expires no agent whose stream is alive, closes no
stream (no agent reconnects), and once etcd is back the status holds every agent's latest
report (issue #13, item 4). A real coordinator and etcd; the agents speak the real protocol
from this process (bench/fanout_bench.py's RunningAgent)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from bench.fanout_bench import RunningAgent
from fleetcap.clients import sdk
from fleetcap.coordinator.state.embedded_etcd import EmbeddedEtcd
from fleetcap.coordinator.state.etcd_store import EtcdAccess, EtcdKV
from fleetcap.coordinator.state.store import Store, WatchKind
from fleetcap.core import transport
from fleetcap.core.auth import Role
from fleetcap.v1 import captures_pb2, fleet_pb2
from tests.conftest import TOKENS, write_auth_file
from tests.integration.conftest import ROOT
from tests.waiting import let_time_pass_async

pytestmark = pytest.mark.integration

AGENTS = 40


class CountingAgent(RunningAgent):
    """RunningAgent (whose run() ends when its stream does: it never reconnects), reporting
    growing counters once a second until told to stop."""

    async def report_until(self, stop: asyncio.Event) -> int:
        start, tick = self.started[-1], 0
        while not stop.is_set():
            tick += 1
            await self.write(
                fleet_pb2.AgentMessage(
                    progress=fleet_pb2.CaptureProgress(
                        capture_name=start.capture_name,
                        capture_id=start.capture_id,
                        status=captures_pb2.InstanceStatus(packet_capture_status="Running", packets_captured=tick),
                    )
                )
            )
            await asyncio.sleep(1)
        return tick


def test_a_stalled_etcd_delays_progress_and_expires_no_live_agent(tmp_path):
    work = tempfile.mkdtemp(prefix="fleetcap-stall-")
    etcd = EmbeddedEtcd(os.path.join(work, "etcd")).start()
    t = etcd.client_tls
    api = f"unix:{tmp_path}/api.sock"
    log = open(tmp_path / "coordinator.log", "wb")
    coord = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleetcap",
            "coordinator",
            "--listen",
            api,
            "--auth-file",
            write_auth_file(str(tmp_path / "auth.toml")),
            "--data-dir",
            str(tmp_path / "data"),
            "--agent-ttl",
            "10",
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
        stdout=log,
        stderr=log,
    )

    async def body() -> None:
        store = Store(EtcdKV([etcd.endpoint], access=EtcdAccess(t.ca, t.cert, t.key)))
        removed: list[str] = []

        async def watch_removals() -> None:
            async for event in store.agents.watch():
                if event.kind == WatchKind.DELETE:
                    removed.append(event.instance_key)

        watcher = asyncio.ensure_future(watch_removals())
        for _ in range(100):
            if os.path.exists(str(tmp_path / "api.sock")):
                break
            await asyncio.sleep(0.1)
        channel = transport.aio_channel(api, dedicated=True)
        agents = [CountingAgent(channel, i, (("authorization", f"Bearer {TOKENS[Role.AGENT]}"),)) for i in range(AGENTS)]
        ready, count = asyncio.Event(), [0]
        runs = [asyncio.ensure_future(a.run(ready, count, AGENTS)) for a in agents]
        await asyncio.wait_for(ready.wait(), 60)
        with sdk.Client(api) as c:
            await asyncio.to_thread(
                c.create,
                name="stall",
                target="big",
                target_type="AzureVMSS",
                resource_group="bench",
                file_path="/var/captures/s.cap",
                time_limit_in_seconds=0,
            )
            for _ in range(100):
                if all(a.started for a in agents):
                    break
                await asyncio.sleep(0.1)
            stop = asyncio.Event()
            reporting = asyncio.gather(*(a.report_until(stop) for a in agents))
            await let_time_pass_async(3, why="the agents report normally first")
            os.kill(etcd.process.pid, signal.SIGSTOP)
            try:
                await let_time_pass_async(5, why="etcd stalls for 5 s")
            finally:
                os.kill(etcd.process.pid, signal.SIGCONT)
            await let_time_pass_async(4, why="the agents report on after the stall")
            stop.set()
            last = await reporting
            # Every agent's last report is in the status within a few seconds (the counters
            # persist at most once a second here, and the stall's backlog drains first).
            for _ in range(100):
                status = await asyncio.to_thread(c.get_status, name="stall")
                got = {i.instance_id: i.packets_captured for i in status.instances}
                if got == {str(i): last[i] for i in range(AGENTS)}:
                    break
                await asyncio.sleep(0.2)
            assert got == {str(i): last[i] for i in range(AGENTS)}
            assert all(i.packet_capture_status == "Running" for i in status.instances)
            assert min(last) >= 11  # they kept reporting through the stall
            await asyncio.to_thread(c.stop, name="stall")
        assert removed == []  # no agent was expired
        assert [r.done() for r in runs] == [False] * AGENTS  # no stream was closed
        watcher.cancel()
        for r in runs:
            r.cancel()
        await channel.close()
        await store.close()

    try:
        asyncio.run(body())
        text = (tmp_path / "coordinator.log").read_text()
        assert "silent for" not in text and "lease expired" not in text, text[-3000:]
    finally:
        coord.terminate()
        try:
            coord.wait(15)
        except subprocess.TimeoutExpired:
            coord.kill()
            coord.wait()
        etcd.stop()
        shutil.rmtree(work, ignore_errors=True)
