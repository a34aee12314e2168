"""Shared fixtures: a real etcd per test worker, the tokens every test caller uses, and pcap
reading by an independent parser.

Each test process has one token per role. The admin token is FLEETCAP_TOKEN in the
environment, so the SDK and every `fleetcap` CLI run of a test authenticate as admin unless
the test says otherwise; agents started by tests get the agent token (`AGENT_ENV`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from fleetcap.coordinator.state.embedded_etcd import EmbeddedEtcd
from fleetcap.core.auth import AuthFile, Role, new_token
from tests import ports

TOKENS = {role: new_token() for role in Role}
os.environ["FLEETCAP_TOKEN"] = TOKENS[Role.ADMIN]
AGENT_ENV = dict(os.environ, FLEETCAP_TOKEN=TOKENS[Role.AGENT])


def write_auth_file(path: str) -> str:
    """An auth file with one token per role, named after the role."""
    auth = AuthFile()
    for role, token in TOKENS.items():
        auth = auth.with_token(str(role), frozenset({role}), token)
    auth.save(path)
    return path


@pytest.fixture(scope="session")
def etcd_endpoint():
    """A real etcd (Debian's etcd-server) on free loopback ports, for this test worker: TLS
    with client certificates, as the coordinator runs it (EmbeddedEtcd; `.client_tls`)."""
    if not shutil.which("etcd"):
        pytest.fail("etcd is not installed; run 'make setup'")
    d = tempfile.mkdtemp(prefix="fleetcap-test-etcd-")
    server = EmbeddedEtcd(d).start()
    yield server
    server.stop()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def requires_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, packet capture)")


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 where a connection is refused for the whole test: bound, never
    listening, so that no test running beside it can take it (tests/ports.py)."""
    with ports.refused_port() as port:
        yield port
