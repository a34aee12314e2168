"""The embedded etcd is the coordinator's to keep: a signal to the coordinator's process group
does not reach it, one that exits is restarted (health and metrics follow), and one that cannot
come back makes the coordinator exit non-zero with the reason, instead of serving errors."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from deploy.localfleet import LocalFleet
from fleetcap.clients import sdk
from tests.conftest import write_auth_file
from tests.integration.conftest import ROOT
from tests.ports import bound_port
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def _children(pid: int) -> list[int]:
    """Every thread's children (etcd is started from a worker thread)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(c) for c in f.read().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _metric(port: int, name: str) -> float | None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


def test_the_embedded_etcd_outlives_group_signals_is_restarted_and_given_up_on(tmp_path):
    api = f"unix:{tmp_path}/api.sock"
    log_path = tmp_path / "coordinator.log"
    # A process group of its own, as a terminal or a process manager would give it.
    coordinator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleetcap",
            "coordinator",
            "--listen",
            api,
            "--data-dir",
            str(tmp_path / "data"),
            "--metrics-listen",
            "127.0.0.1:0",
            "--auth-file",
            write_auth_file(str(tmp_path / "auth.toml")),
        ],
        cwd=ROOT,
        stdout=open(log_path, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        metrics = bound_port(str(log_path), r"metrics on http://127\.0\.0\.1:(\d+)/metrics", what="the metrics port")
        wait_for(
            lambda: os.path.exists(tmp_path / "api.sock") and _metric(metrics, "fleetcap_embedded_etcd_up") == 1,
            what="the coordinator did not start",
            timeout_s=30,
            interval_s=0.2,
            ignoring=(Exception,),
        )
        [etcd] = [c for c in _children(coordinator.pid) if "etcd" in open(f"/proc/{c}/cmdline").read()]
        # 1. SIGHUP to the whole group (a closed terminal): etcd is in a session of its own.
        os.killpg(coordinator.pid, signal.SIGHUP)
        time.sleep(0.5)
        assert _alive(etcd)
        assert coordinator.poll() is None
        with sdk.Client(api) as c:
            c.list()
        # 2. etcd dies: restarted on the same port, the API serves again, the metrics say so.
        os.kill(etcd, signal.SIGKILL)
        wait_for(
            lambda: _metric(metrics, "fleetcap_embedded_etcd_restarts_total") == 1,
            what="etcd was not restarted",
            timeout_s=30,
            interval_s=0.2,
            ignoring=(Exception,),
        )
        assert _metric(metrics, "fleetcap_embedded_etcd_up") == 1
        with sdk.Client(api) as c:
            wait_for(lambda: c.list() == [], what="the API did not serve again", timeout_s=15, interval_s=0.2, ignoring=(Exception,))
        [etcd] = [c for c in _children(coordinator.pid) if "etcd" in open(f"/proc/{c}/cmdline").read()]
        # 3. etcd dies and its data directory is gone (a file in its place): it cannot come back;
        # the coordinator exits 1, saying why.
        data = tmp_path / "data" / "etcd" / "member-data"
        data.rename(tmp_path / "member-data.moved")
        data.write_text("not a directory")
        os.kill(etcd, signal.SIGKILL)
        helpers = [p for p in _children(coordinator.pid) if p != etcd]
        assert coordinator.wait(60) == 1
        # It gave up and ended by its shutdown deadline: its filter compiler's workers end with it.
        wait_for(
            lambda: not any(_alive(p) for p in helpers),
            what="a helper process outlived its coordinator",
            timeout_s=10,
            interval_s=0.2,
            ignoring=(Exception,),
        )
    finally:
        LocalFleet.stop_process(coordinator)
    text = log_path.read_text()
    assert "the embedded etcd exited with -9; restarting it" in text
    assert "the embedded etcd did not come back after 6 attempts; giving up" in text
    assert (
        text.rstrip().splitlines()[-1].startswith("fleetcap: error: the embedded etcd exited and did not come back after 6 restarts; see ")
    )


def test_sigterm_ends_the_coordinator_within_its_deadline_while_etcd_hangs(tmp_path):
    """etcd frozen (SIGSTOP): the coordinator still exits 0 within its shutdown deadline of
    SIGTERM, and takes its etcd with it."""
    api = f"unix:{tmp_path}/api.sock"
    coordinator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleetcap",
            "coordinator",
            "--listen",
            api,
            "--data-dir",
            str(tmp_path / "data"),
            "--auth-file",
            write_auth_file(str(tmp_path / "auth.toml")),
        ],
        cwd=ROOT,
        stdout=open(tmp_path / "coordinator.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: os.path.exists(tmp_path / "api.sock"),
            what="the coordinator did not start",
            timeout_s=30,
            interval_s=0.2,
            ignoring=(Exception,),
        )
        [etcd] = [c for c in _children(coordinator.pid) if "etcd" in open(f"/proc/{c}/cmdline").read()]
        with sdk.Client(api) as c:
            c.list()
        os.kill(etcd, signal.SIGSTOP)
        helpers = _children(coordinator.pid)  # etcd, and the filter compiler's workers and tracker
        assert len(helpers) >= 3
        started = time.monotonic()
        coordinator.send_signal(signal.SIGTERM)
        assert coordinator.wait(30) == 0
        assert time.monotonic() - started < 6.5
        wait_for(
            lambda: not any(_alive(p) for p in helpers),
            what="a helper process outlived its coordinator",
            timeout_s=10,
            interval_s=0.2,
            ignoring=(Exception,),
        )
    finally:
        LocalFleet.stop_process(coordinator)
