"""The embedded etcd compacts its history (without it, a busy fleet fills etcd's backend in
hours and etcd then refuses every write)."""

from __future__ import annotations

import os
import subprocess

import pytest

from fleetcap.coordinator.state.embedded_etcd import EmbeddedEtcd
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def etcdctl(etcd: EmbeddedEtcd, *args: str) -> subprocess.CompletedProcess[str]:
    t = etcd.client_tls
    return subprocess.run(
        ["etcdctl", "--endpoints", f"https://{etcd.endpoint}", "--cacert", t.ca, "--cert", t.cert, "--key", t.key, *args],
        capture_output=True,
        text=True,
        timeout=10,
        env={**os.environ, "ETCDCTL_API": "3"},
    )


def test_old_revisions_are_compacted_away(tmp_path):
    etcd = EmbeddedEtcd(str(tmp_path / "etcd"), compaction_retention="1s").start()
    try:
        assert etcdctl(etcd, "put", "/fleetcap-test/k", "first").returncode == 0
        first = int(etcdctl(etcd, "get", "/fleetcap-test/k", "-w", "fields").stdout.split('"ModRevision" : ')[1].split()[0])
        assert etcdctl(etcd, "put", "/fleetcap-test/k", "second").returncode == 0
        assert etcdctl(etcd, "get", "/fleetcap-test/k", "--rev", str(first), "--print-value-only").stdout == "first\n"
        old = wait_for(
            lambda: (r := etcdctl(etcd, "get", "/fleetcap-test/k", "--rev", str(first))).returncode != 0 and r,
            what="etcd to compact the old revision",
            timeout_s=30,
            interval_s=0.5,
        )
        assert "required revision has been compacted" in old.stderr
        assert etcdctl(etcd, "get", "/fleetcap-test/k", "--print-value-only").stdout == "second\n"
    finally:
        etcd.stop()
