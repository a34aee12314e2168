"""Starts `fleetcap gateway` on a free loopback port for a test module, and a tiny JSON client."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from deploy.localfleet import LocalFleet
from fleetcap.core.transport import free_port
from tests.conftest import AGENT_ENV

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARM = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/NetworkWatcherRG/providers/"
       "Microsoft.Network/networkWatchers/NetworkWatcher_westeurope/packetCaptures")


class Gateway:
    def __init__(self, coordinator: str, workdir, *extra: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(str(workdir), f"gateway-{self.port}.log")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "fleetcap", "--coordinator", coordinator, "gateway",
                                      "--listen", f"127.0.0.1:{self.port}", *extra], cwd=ROOT, stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("gateway did not start: " + open(self.log_path).read()) from None
                time.sleep(0.1)

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def stop(self) -> None:
        LocalFleet.stop_process(self.proc)

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, payload = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, payload = e.code, e.read()
        return status, (json.loads(payload) if payload and payload[:1] in (b"{", b"[") else payload)


@contextlib.contextmanager
def scale_set_agents(coordinator: str, workdir, vmss: str, instance_ids, resource_group: str = "rg1"):
    """Agents on lo for instances of a scale set, connected on entry and stopped on exit."""
    from fleetcap.clients import sdk
    procs = [subprocess.Popen([sys.executable, "-m", "fleetcap", "agent", "--coordinator", coordinator,
                               "--vmss", vmss, "--instance-id", str(i), "--resource-group", resource_group,
                               "--interface", "lo", "--capture-root", os.path.join(str(workdir), f"captures{i}")],
                              cwd=ROOT, stdout=open(os.path.join(str(workdir), f"agent{i}.log"), "wb"),
                              stderr=subprocess.STDOUT, env=AGENT_ENV) for i in instance_ids]
    try:
        wanted = {f"/virtualMachineScaleSets/{vmss}/virtualMachines/{i}" for i in instance_ids}
        deadline = time.monotonic() + 30
        with sdk.Client(coordinator) as c:
            while not wanted <= {a.id[a.id.index("/virtualMachineScaleSets/"):] for a in c.list_agents()
                                 if "/virtualMachineScaleSets/" in a.id}:
                if time.monotonic() > deadline:
                    raise RuntimeError("scale-set agents did not connect")
                time.sleep(0.2)
        yield
    finally:
        for p in procs:
            LocalFleet.stop_process(p)
