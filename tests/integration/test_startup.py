"""A coordinator that cannot reach its etcd says so, naming the flag, and exits in bounded time
instead of serving errors; etcd's own URL forms are accepted."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.integration.conftest import ROOT
from tests.waiting import started, wait_for

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("form", ["http://127.0.0.1:{port}", "127.0.0.1:{port}"])
def test_an_unreachable_etcd_is_a_clear_error_in_bounded_time(tmp_path, form, refused_port):
    endpoint = form.format(port=refused_port)  # nothing listens there
    started = time.monotonic()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleetcap",
            "coordinator",
            "--listen",
            f"unix:{tmp_path}/api.sock",
            "--etcd",
            endpoint,
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.monotonic() - started < 40
    assert r.returncode == 1, r.stderr[-2000:]
    host_port = endpoint.removeprefix("http://")
    assert f"fleetcap: error: --etcd {host_port}: etcd does not answer after 15 s" in r.stderr
    assert "Traceback" not in r.stderr
    assert "Misformatted" not in r.stderr


def test_a_coordinator_from_a_config_file_alone(tmp_path):
    """Every flag from `--config`; the running coordinator answers a client that also takes its
    address from a config file."""

    from deploy.localfleet import LocalFleet
    from fleetcap.clients import sdk
    from tests.conftest import write_auth_file

    (tmp_path / "coordinator.toml").write_text(
        f'log-level = "warning"\n[coordinator]\nlisten = ["unix:{tmp_path}/api.sock"]\nstore = "memory"\n'
        f'data-dir = "{tmp_path}/data"\nauth-file = "{write_auth_file(str(tmp_path / "auth.toml"))}"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetcap", "coordinator", "--config", str(tmp_path / "coordinator.toml")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: started(proc, str(tmp_path / "api.sock")), what="the coordinator's API socket", timeout_s=30)
        (tmp_path / "client.toml").write_text(f'coordinator = "unix:{tmp_path}/api.sock"\noutput = "tsv"\n')
        r = subprocess.run(
            [sys.executable, "-m", "fleetcap", "--config", str(tmp_path / "client.toml"), "storage-accounts", "list"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (r.returncode, r.stdout.split("\t")[0]) == (0, "local"), r.stderr
        with sdk.Client(f"unix:{tmp_path}/api.sock") as c:
            assert c.list() == []
    finally:
        LocalFleet.stop_process(proc)
