"""A real coordinator (embedded etcd) and one real agent, VM vm1 in rg1 on loopback, for the
API-level tests. Module-scoped: each test module gets its own."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from clients import sdk
from deploy.localfleet import LocalFleet

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the agent needs root to open a capture handle")
    d = tmp_path_factory.mktemp("coord")
    sock = f"unix:{d}/api.sock"
    logs = open(d / "coordinator.log", "wb")
    coord = subprocess.Popen([sys.executable, "-m", "clients.cli", "coordinator", "--listen", sock,
                              "--data-dir", str(d / "data"), "--agent-ttl", "5"], cwd=ROOT, stdout=logs, stderr=logs)
    agent_log = open(d / "agent.log", "wb")
    agent = subprocess.Popen([sys.executable, "-m", "clients.cli", "agent", "--coordinator", sock, "--vm", "vm1",
                              "--resource-group", "rg1", "--interface", "lo", "--capture-root", str(d / "captures")],
                             cwd=ROOT, stdout=agent_log, stderr=agent_log)
    try:
        deadline = time.monotonic() + 30
        with sdk.Client(sock, timeout_s=2) as c:
            while True:
                try:
                    if len(c.list_agents()) == 1:
                        break
                except sdk.FleetcapError:
                    pass
                assert time.monotonic() < deadline, (d / "coordinator.log").read_text()
                time.sleep(0.1)
        yield sock
    finally:
        LocalFleet.stop_process(agent)
        LocalFleet.stop_process(coord)
