"""Shared fixtures: a real etcd per test worker, and pcap reading by an independent parser."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from fleetcap.coordinator.state.embedded_etcd import EmbeddedEtcd


@pytest.fixture(scope="session")
def etcd_endpoint():
    """A real etcd (Debian's etcd-server) on free loopback ports, for this test worker."""
    if not shutil.which("etcd"):
        pytest.fail("etcd is not installed; run 'make setup'")
    d = tempfile.mkdtemp(prefix="fleetcap-test-etcd-")
    server = EmbeddedEtcd(d).start()
    yield server.endpoint
    server.stop()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def requires_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, packet capture)")
