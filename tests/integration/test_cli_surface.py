"""The CLI's output forms and live watch against a real coordinator and agent."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(address: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleetcap", "--coordinator", address, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_watch_tsv_and_newer_group_flags(coordinator):
    r = cli(coordinator, "capture", "create", "--packet-capture-name", "w-1", "--vm", "vm1", "-g", "rg1",
            "--storage-location", '{"storageId": "local", "filePath": "/var/captures/w-1.cap"}',
            "--time-limit-in-seconds", "2", "--total-bytes", "100000", "--no-wait",
            "--filters", '[{"protocol": "UDP", "localPort": "9"}]')
    assert r.returncode == 0, r.stderr
    r = cli(coordinator, "capture", "watch", "-n", "w-1", "--timeout", "30")
    assert r.returncode == 0, r.stderr
    blocks = [b.splitlines() for b in r.stdout.strip().split("\n\n")]
    assert blocks[0][0].startswith("w-1: ")
    assert blocks[-1][0] == "w-1: Stopped (TimeExceeded)"
    last = blocks[-1][1]
    assert last.startswith("vm1 ") and "Stopped" in last and last.endswith("TimeExceeded")
    # No packet matches: the file is its 24-byte header, 0 % of the byte limit; the time bar is full.
    assert "bytes [--------------------]   0% 24 B/97.7 KiB" in last
    # The time limit ends the capture within [limit, limit + 1 s] (docs/stop-reasons.md).
    assert re.search(r"time \[#{20}\] 100% [23]s/2s", last), last
    assert "stored 24 B/24 B" in last

    r = cli(coordinator, "-o", "tsv", "capture", "show-status", "-n", "w-1", "-l", "westeurope")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0].split("\t") == ["vm1", "Stopped", "TimeExceeded", "0", "24", "0"]
    r = cli(coordinator, "-o", "tsv", "capture", "list")
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert ["w-1", "Succeeded"] == [rows[[x[0] for x in rows].index("w-1")][i] for i in (0, 4)]
    r = cli(coordinator, "capture", "delete", "-n", "w-1")
    assert r.returncode == 0
    r = cli(coordinator, "capture", "watch", "-n", "w-1")
    assert r.returncode == 3 and "NOT_FOUND" in r.stderr


def test_storage_accounts_list(coordinator):
    r = cli(coordinator, "-o", "tsv", "storage-accounts", "list")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"local\tLocal\tfile://{os.path.join(coordinator.dir, 'data', 'storage')}\n"


def test_az_wait_conditions(coordinator):
    fast = ("--interval", "0.2", "--timeout", "20")
    r = cli(coordinator, "capture", "create", "-n", "wc-1", "--vm", "vm1", "-g", "rg1", "--storage-account", "local",
            "--time-limit", "60", "--filters", '[{"protocol": "UDP", "localPort": "9"}]')
    assert r.returncode == 0, r.stderr
    for condition in (["--created"], ["--exists"], ["--updated"],
                      ["--custom", "status.packetCaptureStatus=='Running'"]):
        r = cli(coordinator, "capture", "wait", "-n", "wc-1", *condition, *fast)
        assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), (condition, r.stderr)
    r = cli(coordinator, "capture", "wait", "-n", "wc-1", "--custom", "status.packetCaptureStatus=='Nope'",
            "--interval", "0.2", "--timeout", "1")
    assert r.returncode == 1
    assert r.stderr.strip() == "fleetcap: capture 'wc-1': --custom status.packetCaptureStatus=='Nope' not met after 1s"
    r = cli(coordinator, "capture", "wait", "-n", "wc-1", "--deleted", "--interval", "0.2", "--timeout", "1")
    assert (r.returncode, r.stderr.strip()) == (1, "fleetcap: capture 'wc-1': --deleted not met after 1s")
    for bad, message in ((["--created", "--deleted"], "give one of --created, --updated, --exists, --deleted or --custom"),
                         (["--interval", "1"], "--interval goes with --created"),
                         (["--custom", "[?"], "--custom: ")):
        r = cli(coordinator, "capture", "wait", "-n", "wc-1", *bad)
        assert r.returncode == 2 and r.stderr.startswith(f"fleetcap: error: {message}"), (bad, r.stderr)
    assert cli(coordinator, "capture", "delete", "-n", "wc-1").returncode == 0
    r = cli(coordinator, "capture", "wait", "-n", "wc-1", "--deleted", *fast)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def complete(line: str, tmp_path) -> list[str]:
    """What the shell gets from argcomplete for `line` (the cursor at its end)."""
    out = tmp_path / "completions"
    env = dict(os.environ, _ARGCOMPLETE="1", COMP_LINE=line, COMP_POINT=str(len(line)),
               _ARGCOMPLETE_STDOUT_FILENAME=str(out))
    r = subprocess.run([sys.executable, "-m", "fleetcap"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return sorted(x.strip() for x in out.read_text().split("\v") if x.strip())


def test_shell_completion_of_verbs_flags_names_and_instances(coordinator, tmp_path):
    assert complete("fleetcap capture sh", tmp_path) == ["show", "show-status"]
    assert "--file-path" in complete("fleetcap capture create --fi", tmp_path)
    r = cli(coordinator, "capture", "create", "-n", "cmp-1", "--vm", "vm1", "-g", "rg1", "--storage-account", "local",
            "--time-limit", "60")
    assert r.returncode == 0, r.stderr
    try:
        assert complete(f"fleetcap --coordinator {coordinator} capture show -n cmp", tmp_path) == ["cmp-1"]
        assert complete(f"fleetcap capture follow --coordinator {coordinator} -n cmp-1 --instance-id ", tmp_path) == \
            ["vm1"]
        # A coordinator that does not answer: no names, no error, no wait beyond the call's deadline.
        assert complete(f"fleetcap --coordinator unix:{tmp_path}/none.sock capture show -n cmp", tmp_path) == []
    finally:
        assert cli(coordinator, "capture", "delete", "-n", "cmp-1").returncode == 0
