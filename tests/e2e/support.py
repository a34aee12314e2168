"""Shared pieces of the end-to-end tests: a running local fleet, waiting, expected datagrams."""

from __future__ import annotations

import collections
import contextlib
import os
import time

import pytest

from deploy.localfleet import LocalFleet
from fleetcap.clients import sdk

PAYLOAD = 300  # UDP payload bytes of every test datagram


@contextlib.contextmanager
def running_fleet(tmp_path_factory, name: str, instances: int, **kwargs):
    """A LocalFleet of scale set "web" in resource group "rg1", removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, packet capture)")
    f = LocalFleet(instances, vmss="web", resource_group="rg1", workdir=str(tmp_path_factory.mktemp(name)), **kwargs)
    f.start()
    try:
        yield f
    finally:
        f.close()


def wait_running(client: sdk.Client, name: str, timeout_s: float = 20) -> None:
    """Until every instance captures; fails if one ends first."""
    deadline = time.monotonic() + timeout_s
    for status in client.watch(name=name):
        states = {i.packet_capture_status for i in status.instances}
        assert states <= {"NotStarted", "Running"}, f"{name} ended before traffic: {status}"
        if states == {"Running"}:
            return
        assert time.monotonic() < deadline, f"{name} not running after {timeout_s}s"
    raise AssertionError(f"watch of {name} ended before it was running")


def expected(src, sport, dst, dport, tag, count) -> collections.Counter:
    """The datagrams deploy.trafficgen sends: (src, sport, dst, dport, tag, seq) for each seq."""
    return collections.Counter({(src.ip, sport, dst.ip, dport, tag, seq): 1 for seq in range(count)})
