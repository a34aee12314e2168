"""A coordinator (embedded etcd) and two real agents, instances 0 and 1 of scale set `web`,
capturing on lo: the deployment of the File-only, flight recorder, budget, clock and evidence
tests, with the traffic they send."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from deploy.localfleet import LocalFleet
from fleetcap.clients import sdk
from tests.conftest import AGENT_ENV, write_auth_file
from tests.integration.conftest import ROOT, wait_agents

PAYLOAD = 100


RECORD = 16 + 14 + 20 + 8 + PAYLOAD  # pcap record header, Ethernet, IPv4, UDP, payload


class Fleet:
    def __init__(self, d):
        self.dir = d
        self.api = f"unix:{d}/api.sock"
        self.storage = d / "data" / "storage"
        self.agents: dict[str, subprocess.Popen] = {}
        logs = open(d / "coordinator.log", "wb")
        self.coordinator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleetcap",
                "coordinator",
                "--listen",
                self.api,
                "--auth-file",
                write_auth_file(str(d / "auth.toml")),
                "--data-dir",
                str(d / "data"),
                "--agent-ttl",
                "3",
            ],
            cwd=ROOT,
            stdout=logs,
            stderr=logs,
        )

    def root(self, instance: str):
        return self.dir / f"captures-{instance}"

    def start_agent(self, instance: str, interface: str = "lo", **env: str) -> None:
        log = open(self.dir / f"agent-{instance}.log", "ab")
        self.agents[instance] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleetcap",
                "agent",
                "--coordinator",
                self.api,
                "--vmss",
                "web",
                "--instance-id",
                instance,
                "--resource-group",
                "rg1",
                "--interface",
                interface,
                "--capture-root",
                str(self.root(instance)),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=log,
            env=dict(AGENT_ENV, **env),
        )

    def stop_agent(self, instance: str) -> None:
        LocalFleet.stop_process(self.agents.pop(instance))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fleetcap", "--coordinator", self.api, *args], capture_output=True, text=True, cwd=ROOT, timeout=120
        )

    def close(self) -> None:
        for instance in list(self.agents):
            self.stop_agent(instance)
        LocalFleet.stop_process(self.coordinator)


@contextlib.contextmanager
def two_agents(d, agent1_interface: str = "lo", **agent1_env: str) -> Iterator[Fleet]:
    """A coordinator and the agents of instances 0 and 1 (the second capturing
    `agent1_interface`, with `agent1_env` in its environment), connected; all stopped at the end."""
    if os.geteuid() != 0:
        pytest.skip("the agents need root to open a capture handle")
    f = Fleet(d)
    try:
        f.start_agent("0")
        f.start_agent("1", agent1_interface, **agent1_env)
        with sdk.Client(f.api, timeout_s=5) as c:
            wait_agents(c, 2, str(f.dir / "coordinator.log"))
        yield f
    finally:
        f.close()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def send(port: int, count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(count):
            s.sendto(bytes([i]) * PAYLOAD, ("127.0.0.1", port))
