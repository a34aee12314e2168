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
from fleetcap.core.transport import free_port
from tests.conftest import write_auth_file
from tests.integration.conftest import ROOT

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


def _until(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while True:
        try:
            value = condition()
        except Exception:  # noqa: BLE001 (a coordinator between states: try again)
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_the_embedded_etcd_outlives_group_signals_is_restarted_and_given_up_on(tmp_path):
    api, metrics = f"unix:{tmp_path}/api.sock", free_port()
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
            f"127.0.0.1:{metrics}",
            "--auth-file",
            write_auth_file(str(tmp_path / "auth.toml")),
        ],
        cwd=ROOT,
        stdout=open(log_path, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _until(
            lambda: os.path.exists(tmp_path / "api.sock") and _metric(metrics, "fleetcap_embedded_etcd_up") == 1,
            30,
            "the coordinator did not start",
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
        _until(lambda: _metric(metrics, "fleetcap_embedded_etcd_restarts_total") == 1, 30, "etcd was not restarted")
        assert _metric(metrics, "fleetcap_embedded_etcd_up") == 1
        with sdk.Client(api) as c:
            _until(lambda: c.list() == [], 15, "the API did not serve again")
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
        _until(lambda: not any(_alive(p) for p in helpers), 10, "a helper process outlived its coordinator")
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
        _until(lambda: os.path.exists(tmp_path / "api.sock"), 30, "the coordinator did not start")
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
        _until(lambda: not any(_alive(p) for p in helpers), 10, "a helper process outlived its coordinator")
    finally:
        LocalFleet.stop_process(coordinator)
