"""A real coordinator (embedded etcd) and one real agent, VM vm1 in rg1 on loopback, for the
API-level tests. Module-scoped: each test module gets its own."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from deploy.localfleet import LocalFleet
from fleetcap.clients import sdk
from tests.conftest import AGENT_ENV, write_auth_file
from tests.integration.security_support import Secure, fleetcap
from tests.ports import bound_port
from tests.waiting import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Deployment(str):
    """The coordinator's API address (a str, for the SDK), plus what a test may need of it."""

    dir: str
    coordinator_metrics: str
    agent_metrics: str
    auth_file: str


def wait_every_instance(client: sdk.Client, name: str, status: str = "Running", timeout_s: float = 15):
    """Until every instance of the capture reports `status`; returns the capture's status."""

    def every() -> object:
        now = client.get_status(name=name)
        return now if now.instances and all(i.packet_capture_status == status for i in now.instances) else None

    return wait_for(every, what=f"every instance of {name} {status}", timeout_s=timeout_s)


def wait_agents(client: sdk.Client, count: int, log_path: str, timeout_s: float = 30) -> None:
    """Until `count` agents are registered (the coordinator may still be starting); a failure
    shows the coordinator's log."""
    try:
        wait_for(lambda: len(client.list_agents()) == count, what=f"{count} agents", timeout_s=timeout_s, ignoring=(sdk.FleetcapError,))
    except AssertionError as e:
        raise AssertionError(f"{e}\n{open(log_path).read()}") from None


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory):
    """A coordinator (embedded etcd) and agent vm1 (rg1) capturing on lo, both with /metrics."""
    with deployment(tmp_path_factory.mktemp("coord")) as dep:
        yield dep


@contextlib.contextmanager
def deployment(d, *coordinator_args: str, coordinator_env: dict[str, str] | None = None) -> Iterator[Deployment]:
    """The `coordinator` fixture's deployment in directory `d`, the coordinator given
    `coordinator_args` (a storage account, say) and `coordinator_env` on top of its environment."""
    if os.geteuid() != 0:
        pytest.skip("the agent needs root to open a capture handle")
    dep = Deployment(f"unix:{d}/api.sock")
    dep.dir = str(d)
    logs = open(d / "coordinator.log", "wb")
    dep.auth_file = write_auth_file(str(d / "auth.toml"))
    coord = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleetcap",
            "coordinator",
            "--listen",
            dep,
            "--auth-file",
            dep.auth_file,
            "--data-dir",
            str(d / "data"),
            "--agent-ttl",
            "5",
            "--metrics-listen",
            "127.0.0.1:0",
            *coordinator_args,
        ],
        cwd=ROOT,
        stdout=logs,
        stderr=logs,
        env=dict(os.environ, **(coordinator_env or {})),
    )
    agent_log = open(d / "agent.log", "wb")
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleetcap",
            "agent",
            "--coordinator",
            dep,
            "--vm",
            "vm1",
            "--resource-group",
            "rg1",
            "--interface",
            "lo",
            "--capture-root",
            str(d / "captures"),
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        cwd=ROOT,
        stdout=agent_log,
        stderr=agent_log,
        env=AGENT_ENV,
    )
    try:
        metrics_line = r"metrics on http://127\.0\.0\.1:(\d+)/metrics"
        coordinator_port = bound_port(str(d / "coordinator.log"), metrics_line, what="the metrics port")
        agent_port = bound_port(str(d / "agent.log"), metrics_line, what="the metrics port")
        dep.coordinator_metrics, dep.agent_metrics = f"127.0.0.1:{coordinator_port}", f"127.0.0.1:{agent_port}"
        with sdk.Client(dep, timeout_s=2) as c:
            wait_agents(c, 1, str(d / "coordinator.log"))
        yield dep
    finally:
        LocalFleet.stop_process(agent)
        LocalFleet.stop_process(coord)


@pytest.fixture(scope="module")
def no_ambient_token():
    """The suite's admin token (FLEETCAP_TOKEN) means nothing here; every caller says who it is."""
    with pytest.MonkeyPatch.context() as m:
        m.delenv("FLEETCAP_TOKEN", raising=False)
        yield


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the agent needs root to open a capture handle")
    s = Secure(tmp_path_factory.mktemp("secure"))
    assert fleetcap("tls", "ca", "create", "--out", os.path.join(s.d, "ca")).returncode == 0
    s.cert("--out", os.path.join(s.d, "coord"), "--coordinator")
    s.cert("--out", os.path.join(s.d, "vm1"), "--agent", "--vm", "vm1", "-g", "rg1")
    s.cert("--out", os.path.join(s.d, "vm2"), "--agent", "--vm", "vm2", "-g", "rg1")
    s.cert("--out", os.path.join(s.d, "alice"), "--client", "alice", "--role", "contributor")
    for name, role in (("viewer", "reader"), ("analyst", "data-reader"), ("ops", "contributor"), ("boss", "admin")):
        s.token(name, role)
    env = dict(os.environ)
    env.pop("FLEETCAP_TOKEN", None)
    coord_log = open(os.path.join(s.d, "coordinator.log"), "wb")
    s.procs.append(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleetcap",
                "coordinator",
                "--listen",
                "127.0.0.1:0",
                "--mtls-listen",
                "127.0.0.1:0",
                "--tls-cert",
                os.path.join(s.d, "coord", "coordinator.pem"),
                "--tls-key",
                os.path.join(s.d, "coord", "coordinator-key.pem"),
                "--tls-client-ca",
                s.ca,
                "--auth-file",
                s.auth_file,
                "--data-dir",
                os.path.join(s.d, "data"),
                "--agent-ttl",
                "5",
            ],
            cwd=ROOT,
            stdout=coord_log,
            stderr=coord_log,
            env=env,
        )
    )
    try:
        # The coordinator binds both ports itself (port 0) and logs which ones it got.
        log_path = os.path.join(s.d, "coordinator.log")
        api_port = bound_port(log_path, r"listening on 127\.0\.0\.1:(\d+) \(TLS\)", what="the API port")
        fleet_port = bound_port(log_path, r"listening on 127\.0\.0\.1:(\d+) \(mutual TLS\)", what="the fleet port")
        s.api, s.fleet = f"127.0.0.1:{api_port}", f"127.0.0.1:{fleet_port}"
        agent_log = open(os.path.join(s.d, "agent.log"), "wb")
        s.procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fleetcap",
                    "agent",
                    "--coordinator",
                    s.fleet,
                    "--vm",
                    "vm1",
                    "-g",
                    "rg1",
                    "--interface",
                    "lo",
                    "--capture-root",
                    os.path.join(s.d, "captures"),
                    "--tls-ca",
                    s.ca,
                    "--tls-cert",
                    os.path.join(s.d, "vm1", "agent.pem"),
                    "--tls-key",
                    os.path.join(s.d, "vm1", "agent-key.pem"),
                ],
                cwd=ROOT,
                stdout=agent_log,
                stderr=agent_log,
                env=env,
            )
        )
        with s.client(s.tokens["boss"]) as c:
            wait_agents(c, 1, os.path.join(s.d, "coordinator.log"))
        yield s
    finally:
        for p in reversed(s.procs):
            LocalFleet.stop_process(p)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """moto's S3 server with its authentication on, on a port the OS gave it: every call must be
    signed with a key of an IAM user it knows. The first three calls (unauthenticated, as moto
    allows) make that user, its policy and its key; a wrong secret is refused from then on."""
    import boto3

    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3", MOTO_IAM_LOAD_MANAGED_POLICIES="false")
    log_path = str(tmp_path_factory.mktemp("s3") / "moto.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:
        port = bound_port(log_path, r"Running on http://127\.0\.0\.1:(\d+)", what="moto's port", proc=proc)
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client("iam", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="y", region_name="us-east-1")
        iam.create_user(UserName="fleetcap")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="fleetcap", PolicyName="captures", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="fleetcap")["AccessKey"]
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket="captures")
        yield (
            f"S3Endpoint={endpoint};Bucket=captures;Region=us-east-1;AccessKeyId={key['AccessKeyId']};"
            f"SecretAccessKey={key['SecretAccessKey']};PathStyle=true;Prefix=fleet/a",
            key["SecretAccessKey"],
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
