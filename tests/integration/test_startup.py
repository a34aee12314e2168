"""A coordinator that cannot reach its etcd says so, naming the flag, and exits in bounded time
instead of serving errors; etcd's own URL forms are accepted."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from fleetcap.core.transport import free_port
from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("form", ["http://127.0.0.1:{port}", "127.0.0.1:{port}"])
def test_an_unreachable_etcd_is_a_clear_error_in_bounded_time(tmp_path, form):
    endpoint = form.format(port=free_port())  # nothing listens there
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "fleetcap", "coordinator", "--listen", f"unix:{tmp_path}/api.sock",
                        "--etcd", endpoint, "--data-dir", str(tmp_path / "data")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 40
    assert r.returncode == 1, r.stderr[-2000:]
    host_port = endpoint.removeprefix("http://")
    assert f"fleetcap: error: --etcd {host_port}: etcd does not answer after 15 s" in r.stderr
    assert "Traceback" not in r.stderr and "Misformatted" not in r.stderr
