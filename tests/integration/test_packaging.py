"""The wheel and its extras, installed as an operator would, into fresh virtual environments:
`pip install fleetcap` is the agent (and the SDK) and pulls only what the agent imports; the
agent from that install captures for a real coordinator; a command whose extra is missing says
which extra to install; `fleetcap[cli]` brings the CLI's formats back."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from deploy.localfleet import LocalFleet
from fleetcap.clients import sdk
from tests.conftest import AGENT_ENV, write_auth_file
from tests.integration.conftest import ROOT, wait_agents
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

# What the agent imports, and what those packages require (grpcio: typing-extensions).
AGENT_DISTRIBUTIONS = {"fleetcap", "grpcio", "protobuf", "prometheus-client", "typing-extensions", "google-crc32c"}
# Never on an agent-only install.
OTHER_EXTRAS = {
    "aetcd",
    "azure-storage-blob",
    "boto3",
    "pyjwt",
    "cryptography",
    "grpcio-health-checking",
    "grpcio-reflection",
    "starlette",
    "uvicorn",
    "rich",
    "jmespath",
    "pyyaml",
    "argcomplete",
}


def run(*args: str, env: dict[str, str] | None = None, cwd: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
    # Built from a copy of the source, so that no build/ or egg-info of an earlier build (or of
    # the checkout) can leak into it, and the checkout stays untouched.
    out, src = tmp_path_factory.mktemp("dist"), tmp_path_factory.mktemp("src") / "fleetcap"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(".venv", "build", "node_modules", ".git", "demo-out", "test-artifacts", "*.egg-info", "__pycache__"),
    )
    r = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src))
    assert r.returncode == 0, r.stdout + r.stderr
    [name] = os.listdir(out)
    return str(out / name)


def venv(path, wheel: str, extras: str = "") -> str:
    """A fresh virtual environment (no system site packages) with the wheel installed; returns
    its bin directory."""
    r = run(sys.executable, "-m", "venv", str(path))
    assert r.returncode == 0, r.stderr
    pip = str(path / "bin" / "pip")
    r = run(pip, "install", "-q", "--disable-pip-version-check", wheel + (f"[{extras}]" if extras else ""))
    assert r.returncode == 0, r.stdout + r.stderr
    return str(path / "bin")


def distributions(bin_dir: str) -> set[str]:
    r = run(f"{bin_dir}/pip", "list", "--format", "json", "--disable-pip-version-check")
    names = {d["name"].lower().replace("_", "-") for d in json.loads(r.stdout)}
    return names - {"pip", "setuptools", "wheel"}


def test_the_agent_install_has_only_what_the_agent_imports_and_captures(wheel, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the agent needs root to open a capture handle")
    bin_dir = venv(tmp_path / "agent-venv", wheel)
    assert distributions(bin_dir) == AGENT_DISTRIBUTIONS
    fleetcap = f"{bin_dir}/fleetcap"
    r = run(fleetcap, "agent", "--help", cwd=str(tmp_path))
    assert r.returncode == 0 and r.stdout.startswith("usage: fleetcap agent"), r.stdout + r.stderr

    # Commands whose extra is missing say which one, with exit code 2 and no traceback.
    for args, extra in (
        (["coordinator", "--data-dir", str(tmp_path / "c")], "coordinator"),
        (["tls", "ca", "create", "--out", str(tmp_path / "ca")], "cli"),
        (["gateway", "--listen", "127.0.0.1:0"], "gateway"),
        (["--coordinator", "unix:/nonexistent", "capture", "list", "-o", "yaml"], "cli"),
    ):
        r = run(fleetcap, *args, cwd=str(tmp_path))
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert f"pip install 'fleetcap[{extra}]'" in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)

    # The agent of that install captures for a real coordinator (of the development install).
    api = f"unix:{tmp_path}/api.sock"
    logs = open(tmp_path / "coordinator.log", "wb")
    coord = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleetcap",
            "coordinator",
            "--listen",
            api,
            "--auth-file",
            write_auth_file(str(tmp_path / "auth.toml")),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=ROOT,
        stdout=logs,
        stderr=logs,
    )
    agent_log = open(tmp_path / "agent.log", "wb")
    agent = subprocess.Popen(
        [
            fleetcap,
            "agent",
            "--coordinator",
            api,
            "--vm",
            "pkg-vm",
            "--resource-group",
            "rg1",
            "--interface",
            "lo",
            "--capture-root",
            str(tmp_path / "captures"),
        ],
        cwd=str(tmp_path),
        stdout=agent_log,
        stderr=agent_log,
        env=AGENT_ENV,
    )
    try:
        with sdk.Client(api, timeout_s=5) as c:
            wait_agents(c, 1, str(tmp_path / "coordinator.log"))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            # The base install's CLI creates it, in its default output (JSON).
            r = run(
                fleetcap,
                "--coordinator",
                api,
                "capture",
                "create",
                "-n",
                "pkg-1",
                "--vm",
                "pkg-vm",
                "-g",
                "rg1",
                "--storage-account",
                "local",
                "--file-path",
                "/var/captures/pkg-1.cap",
                "--time-limit",
                "3",
                "--filters",
                json.dumps([{"protocol": "UDP", "localPort": str(port)}]),
                cwd=str(tmp_path),
            )
            assert r.returncode == 0 and json.loads(r.stdout)["name"] == "pkg-1", r.stdout + r.stderr
            wait_for(
                lambda: c.get_status(name="pkg-1").packet_capture_status == "Running",
                what='c.get_status(name="pkg-1").packet_capture_status == "Running"',
                timeout_s=15,
                interval_s=0.1,
                detail=lambda: (tmp_path / "agent.log").read_text(),
            )
            time.sleep(0.5)  # the handle is open once Running is reported; give libpcap its first poll
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for i in range(3):
                    s.sendto(bytes([i]) * 50, ("127.0.0.1", port))
            final = c.wait(name="pkg-1", timeout_s=30)
        [inst] = final.instances
        assert (final.packet_capture_status, final.stop_reason) == ("Stopped", "TimeExceeded")
        assert inst.packets_captured == 3
        assert inst.files[0].upload_complete
        assert "Traceback" not in (tmp_path / "agent.log").read_text()
    finally:
        LocalFleet.stop_process(agent)
        LocalFleet.stop_process(coord)


def test_the_cli_extra_brings_the_formats_and_the_pki_helper(wheel, tmp_path):
    bin_dir = venv(tmp_path / "cli-venv", wheel, "cli")
    assert {"rich", "jmespath", "pyyaml", "argcomplete", "cryptography"} <= distributions(bin_dir)
    assert distributions(bin_dir) & {"aetcd", "azure-storage-blob", "starlette", "pyjwt"} == set()
    r = run(f"{bin_dir}/fleetcap", "tls", "ca", "create", "--out", str(tmp_path / "ca"))
    assert r.returncode == 0 and (tmp_path / "ca" / "ca.pem").exists(), r.stdout + r.stderr


def test_the_wheel_declares_its_extras_licence_and_urls(wheel):
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        [meta] = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        text = z.read(meta).decode()
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in z.namelist())
    headers = [tuple(line.split(": ", 1)) for line in text.split("\n\n", 1)[0].splitlines() if ": " in line]
    extras = {v for k, v in headers if k == "Provides-Extra"}
    assert extras == {"cli", "coordinator", "azure", "s3", "gateway", "all", "dev"}
    assert ("License-Expression", "Apache-2.0") in headers
    assert {k for k, v in headers if k == "Project-URL"}
    assert any(v.startswith("Source, https://") for k, v in headers)
    assert ("Classifier", "Topic :: System :: Networking :: Monitoring") in headers
    # The base requirements are the agent's alone.
    base = {v.split(">")[0].split("=")[0].split("<")[0].strip() for k, v in headers if k == "Requires-Dist" and "extra ==" not in v}
    assert base == {"grpcio", "protobuf", "prometheus_client", "google-crc32c"}
