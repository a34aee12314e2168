"""The CLI's output forms and live watch against a real coordinator and agent."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from fleetcap.core import transport

pytestmark = pytest.mark.integration
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(address: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fleetcap", "--coordinator", address, *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_watch_tsv_and_newer_group_flags(coordinator):
    r = cli(
        coordinator,
        "capture",
        "create",
        "--packet-capture-name",
        "w-1",
        "--vm",
        "vm1",
        "-g",
        "rg1",
        "--storage-location",
        '{"storageId": "local", "filePath": "/var/captures/w-1.cap"}',
        "--time-limit-in-seconds",
        "2",
        "--total-bytes",
        "100000",
        "--no-wait",
        "--filters",
        '[{"protocol": "UDP", "localPort": "9"}]',
    )
    assert r.returncode == 0, r.stderr
    r = cli(coordinator, "capture", "watch", "-n", "w-1", "--timeout", "30")
    assert r.returncode == 0, r.stderr
    blocks = [b.splitlines() for b in r.stdout.strip().split("\n\n")]
    assert blocks[0][0].startswith("w-1: ")
    assert blocks[-1][0] == "w-1: Stopped (TimeExceeded)"
    last = blocks[-1][1]
    assert last.startswith("vm1 ")
    assert "Stopped" in last
    assert last.endswith("TimeExceeded")
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
    assert [rows[[x[0] for x in rows].index("w-1")][i] for i in (0, 4)] == ["w-1", "Succeeded"]
    r = cli(coordinator, "capture", "delete", "-n", "w-1")
    assert r.returncode == 0
    r = cli(coordinator, "capture", "watch", "-n", "w-1")
    assert r.returncode == 3
    assert "NOT_FOUND" in r.stderr


def test_storage_accounts_list(coordinator):
    r = cli(coordinator, "-o", "tsv", "storage-accounts", "list")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"local\tLocal\tfile://{os.path.join(coordinator.dir, 'data', 'storage')}\n"


def test_az_wait_conditions(coordinator):
    fast = ("--interval", "0.2", "--timeout", "20")
    r = cli(
        coordinator,
        "capture",
        "create",
        "-n",
        "wc-1",
        "--vm",
        "vm1",
        "-g",
        "rg1",
        "--storage-account",
        "local",
        "--time-limit",
        "60",
        "--filters",
        '[{"protocol": "UDP", "localPort": "9"}]',
    )
    assert r.returncode == 0, r.stderr
    for condition in (["--created"], ["--exists"], ["--updated"], ["--custom", "status.packetCaptureStatus=='Running'"]):
        r = cli(coordinator, "capture", "wait", "-n", "wc-1", *condition, *fast)
        assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), (condition, r.stderr)
    r = cli(
        coordinator,
        "capture",
        "wait",
        "-n",
        "wc-1",
        "--custom",
        "status.packetCaptureStatus=='Nope'",
        "--interval",
        "0.2",
        "--timeout",
        "1",
    )
    assert r.returncode == 1
    assert r.stderr.strip() == "fleetcap: capture 'wc-1': --custom status.packetCaptureStatus=='Nope' not met after 1s"
    r = cli(coordinator, "capture", "wait", "-n", "wc-1", "--deleted", "--interval", "0.2", "--timeout", "1")
    assert (r.returncode, r.stderr.strip()) == (1, "fleetcap: capture 'wc-1': --deleted not met after 1s")
    for bad, message in (
        (["--created", "--deleted"], "give one of --created, --updated, --exists, --deleted or --custom"),
        (["--interval", "1"], "--interval goes with --created"),
        (["--custom", "[?"], "--custom: "),
    ):
        r = cli(coordinator, "capture", "wait", "-n", "wc-1", *bad)
        assert r.returncode == 2 and r.stderr.startswith(f"fleetcap: error: {message}"), (bad, r.stderr)
    assert cli(coordinator, "capture", "delete", "-n", "wc-1").returncode == 0
    r = cli(coordinator, "capture", "wait", "-n", "wc-1", "--deleted", *fast)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def complete(line: str, tmp_path) -> list[str]:
    """What the shell gets from argcomplete for `line` (the cursor at its end)."""
    out = tmp_path / "completions"
    env = dict(os.environ, _ARGCOMPLETE="1", COMP_LINE=line, COMP_POINT=str(len(line)), _ARGCOMPLETE_STDOUT_FILENAME=str(out))
    r = subprocess.run([sys.executable, "-m", "fleetcap"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return sorted(x.strip() for x in out.read_text().split("\v") if x.strip())


def test_shell_completion_of_verbs_flags_names_and_instances(coordinator, tmp_path):
    assert complete("fleetcap capture sh", tmp_path) == ["show", "show-status"]
    assert "--file-path" in complete("fleetcap capture create --fi", tmp_path)
    r = cli(coordinator, "capture", "create", "-n", "cmp-1", "--vm", "vm1", "-g", "rg1", "--storage-account", "local", "--time-limit", "60")
    assert r.returncode == 0, r.stderr
    try:
        assert complete(f"fleetcap --coordinator {coordinator} capture show -n cmp", tmp_path) == ["cmp-1"]
        assert complete(f"fleetcap capture follow --coordinator {coordinator} -n cmp-1 --instance-id ", tmp_path) == ["vm1"]
        # A coordinator that does not answer: no names, no error, no wait beyond the call's deadline.
        assert complete(f"fleetcap --coordinator unix:{tmp_path}/none.sock capture show -n cmp", tmp_path) == []
    finally:
        assert cli(coordinator, "capture", "delete", "-n", "cmp-1").returncode == 0


def run_in_terminal(argv: list[str], columns: int, rows: int = 40, timeout: float = 60) -> str:
    """argv's output as a terminal of `columns` columns shows it (a pty), escape sequences removed."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(argv, cwd=ROOT, stdin=slave, stdout=slave, stderr=slave, env=dict(env, TERM="xterm"), close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(10)
    os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    text = re.sub(r"\x1b\[[0-9;]*[ABFK]", "\n", text)  # cursor moves and line erases: a new line on screen
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r", "", text), proc.returncode


def test_watch_on_a_terminal_fits_its_width(coordinator):
    r = cli(
        coordinator,
        "capture",
        "create",
        "-n",
        "tty-1",
        "--vm",
        "vm1",
        "-g",
        "rg1",
        "--storage-account",
        "local",
        "--time-limit",
        "3",
        "--capture-limit",
        "1000000",
        "--filters",
        '[{"protocol": "UDP", "localPort": "9"}]',
    )
    assert r.returncode == 0, r.stderr
    try:
        text, code = run_in_terminal(
            [sys.executable, "-m", "fleetcap", "--coordinator", coordinator, "capture", "watch", "-n", "tty-1", "--timeout", "30"],
            columns=100,
        )
        assert code == 0, text[-3000:]
        lines = [line for line in text.split("\n") if line.strip()]
        assert max(len(line) for line in lines) <= 100, [line for line in lines if len(line) > 100]
        assert "tty-1: Stopped (TimeExceeded)" in text
        assert any(line.split()[:3] == ["Total", "1", "instance"] for line in lines), text[-2000:]
        assert any(line.split()[:2] == ["Instance", "Status"] and "Pkt/s" in line for line in lines)
    finally:
        cli(coordinator, "capture", "delete", "-n", "tty-1")
    # wait --progress draws the same table, on the terminal's stderr; a wide terminal gets the
    # stored bytes and the reason too.
    r = cli(
        coordinator,
        "capture",
        "create",
        "-n",
        "tty-2",
        "--vm",
        "vm1",
        "-g",
        "rg1",
        "--storage-account",
        "local",
        "--time-limit",
        "2",
        "--filters",
        '[{"protocol": "UDP", "localPort": "9"}]',
    )
    assert r.returncode == 0, r.stderr
    try:
        text, code = run_in_terminal(
            [
                sys.executable,
                "-m",
                "fleetcap",
                "--coordinator",
                coordinator,
                "capture",
                "wait",
                "-n",
                "tty-2",
                "--progress",
                "--timeout",
                "30",
            ],
            columns=160,
        )
        assert code == 0, text[-3000:]
        lines = [line for line in text.split("\n") if line.strip()]
        lines = lines[: lines.index("{")]  # the table on stderr; then the result, JSON, on stdout
        assert max(len(line) for line in lines) <= 160
        assert any(line.split()[:2] == ["Instance", "Status"] and "Stored" in line and "Reason" in line for line in lines), text[-2000:]
        assert any(line.split()[:3] == ["Total", "1", "instance"] for line in lines)
        assert any("TimeExceeded" in line for line in lines)
    finally:
        cli(coordinator, "capture", "delete", "-n", "tty-2")


@pytest.mark.parametrize("how", ["env", "flag", "config", "default"])
def test_an_unreachable_coordinator_is_named_with_the_setting_it_came_from(tmp_path, how, refused_port):
    address = f"127.0.0.1:{refused_port}"  # nothing listens there: connection refused
    env = {k: v for k, v in os.environ.items() if k not in ("FLEETCAP_COORDINATOR", "FLEETCAP_CONFIG")}
    args = ["capture", "list"]
    source = {"env": "from FLEETCAP_COORDINATOR", "flag": "from --coordinator", "config": "from --config", "default": "the default"}[how]
    if how == "env":
        env["FLEETCAP_COORDINATOR"] = address
    elif how == "flag":
        args = ["--coordinator", address, *args]
    elif how == "config":
        (tmp_path / "c.toml").write_text(f'[global]\ncoordinator = "{address}"\n')
        args = ["--config", str(tmp_path / "c.toml"), *args]
    else:
        address = transport.DEFAULT_ADDRESS
        if _listening(address):
            pytest.skip(f"something listens on the default address {address}")
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "fleetcap", *args], capture_output=True, text=True, timeout=60, env=env)
    assert (r.returncode, r.stderr.splitlines()[0]) == (
        1,
        f"fleetcap: cannot reach the coordinator at {address} ({source}; set --coordinator or FLEETCAP_COORDINATOR)",
    )
    assert r.stderr.splitlines()[1].startswith("fleetcap: the connection failed with: ")
    assert time.monotonic() - started < 10


def _listening(address: str) -> bool:
    import socket

    host, port = address.rsplit(":", 1)
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) == 0
