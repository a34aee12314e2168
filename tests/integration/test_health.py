"""gRPC health checking and server reflection on a real coordinator (embedded etcd): the standard
health client without a credential, on the API socket and on the plaintext --health-listen port
(kubelet's probes); NOT_SERVING when the store stops answering and SERVING again when it is back;
the service list through reflection, for a reader only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from deploy.localfleet import LocalFleet
from fleetcap.core.auth import Role
from tests.conftest import TOKENS, write_auth_file
from tests.ports import bound_port
from tests.waiting import started, wait_for

pytestmark = pytest.mark.integration
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory):
    d = tmp_path_factory.mktemp("health")
    log_path = d / "coordinator.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleetcap",
            "coordinator",
            "--listen",
            f"unix:{d}/api.sock",
            "--auth-file",
            write_auth_file(str(d / "auth.toml")),
            "--data-dir",
            str(d / "data"),
            "--health-listen",
            "127.0.0.1:0",
        ],
        cwd=ROOT,
        stdout=open(log_path, "wb"),
        stderr=subprocess.STDOUT,
    )
    wait_for(
        lambda: started(proc, f"{d}/api.sock", log_path),
        what="the coordinator's API socket (made once it serves)",
        timeout_s=30,
    )
    health_port = bound_port(str(log_path), r"health checks on 127\.0\.0\.1:(\d+) ", what="the health port")
    yield f"unix:{d}/api.sock", f"127.0.0.1:{health_port}", proc, log_path
    LocalFleet.stop_process(proc)


def check(address: str, service: str = "", timeout: float = 5) -> int:
    with grpc.insecure_channel(address) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status


def wait_status(address: str, wanted: int, service: str = "", seconds: float = 30) -> None:
    wait_for(
        lambda: check(address, service) == wanted,
        what=f"health of {address!r} {service!r} to be {wanted}",
        timeout_s=seconds,
        interval_s=0.2,
        ignoring=(grpc.RpcError,),
    )


def test_health_without_a_credential_on_both_ports(coordinator):
    api, health_port, _, _ = coordinator
    for address in (api, health_port):
        wait_status(address, SERVING)
        for service in ("fleetcap.v1.PacketCaptures", "fleetcap.v1.Fleet"):
            assert check(address, service) == SERVING
        with pytest.raises(grpc.RpcError) as e:
            check(address, "no.such.Service")
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    # The plaintext health port serves health and nothing else.
    with grpc.insecure_channel(health_port) as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/fleetcap.v1.PacketCaptures/List")(b"", timeout=5)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def reflected_services(address: str, token: str | None) -> list[str]:
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(address) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata, timeout=5
        )
        return sorted(s.name for r in responses for s in r.list_services_response.service)


def test_reflection_lists_the_services_to_a_reader(coordinator):
    api, _, _, _ = coordinator
    wait_status(api, SERVING)
    assert reflected_services(api, TOKENS[Role.READER]) == [
        "fleetcap.v1.Fleet",
        "fleetcap.v1.PacketCaptures",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    for token in (None, "fct_forged"):
        with pytest.raises(grpc.RpcError) as e:
            reflected_services(api, token)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_not_serving_while_the_store_does_not_answer(coordinator):
    """The embedded etcd is stopped (SIGSTOP) and resumed: readiness follows it."""
    api, health_port, proc, log_path = coordinator
    wait_status(health_port, SERVING)
    etcd = list(subprocess.run(["pgrep", "-P", str(proc.pid), "etcd"], capture_output=True, text=True).stdout.split())
    assert len(etcd) == 1, (etcd, log_path.read_text()[-2000:])
    os.kill(int(etcd[0]), signal.SIGSTOP)
    try:
        wait_status(health_port, NOT_SERVING, seconds=20)
        assert check(api, "fleetcap.v1.PacketCaptures") == NOT_SERVING
    finally:
        os.kill(int(etcd[0]), signal.SIGCONT)
    wait_status(health_port, SERVING, seconds=30)
