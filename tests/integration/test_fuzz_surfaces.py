"""The live surfaces fuzzed with hypothesis: every gateway route and every string and repeated
field of the gRPC API, with sizes, control characters and nesting an attacker would choose. Each
answer is a clean error in its own shape (an Azure error body with a 4xx, a gRPC status that
names the rule), never a 5xx, INTERNAL, UNKNOWN or a traceback; and the server is unchanged:
the captures it holds, and it still answers."""

from __future__ import annotations

import json
import string

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetcap.clients import sdk
from fleetcap.v1 import captures_pb2 as pb
from tests.integration.gateway_support import ARM, Gateway

pytestmark = pytest.mark.integration
FUZZ = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
API = "?api-version=2024-05-01"
HOSTILE = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=string.printable + "\x00\x1b\u2028é/..%", max_size=300),
    st.sampled_from(["", "..", "../../etc/passwd", "a" * 20_000, "\x1b[2J", "x\ny", "%00", "a/b", "{}", "[]"]),
)
# For gRPC, beyond what a URL carries: a 7 MiB name (the first audit's log-filling one).
HOSTILE_GRPC = HOSTILE | st.just("A" * (7 * 1024 * 1024))
NESTED = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=30,
)
CLEAN_GRPC = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@pytest.fixture(scope="module")
def gateway(coordinator, tmp_path_factory):
    g = Gateway(coordinator, tmp_path_factory.mktemp("fuzz"), "--max-requests-per-caller", "1000")
    yield g
    g.stop()


@pytest.fixture(scope="module")
def before(coordinator):
    with sdk.Client(coordinator) as c:
        return sorted(x.name for x in c.list())


def _unchanged(coordinator, before) -> None:
    with sdk.Client(coordinator) as c:
        assert sorted(x.name for x in c.list()) == before


@FUZZ
@given(
    name=HOSTILE,
    method=st.sampled_from(["GET", "PUT", "DELETE", "POST"]),
    action=st.sampled_from(["", "/stop", "/queryStatus", "/trigger", "/x"]),
    body=NESTED,
)
def test_gateway_arm_routes_answer_every_input_cleanly(gateway, coordinator, before, name, method, action, body):
    from urllib.parse import quote

    path = f"{ARM}/{quote(name, safe='')}{action}{API}"
    status, headers, raw = gateway.request(method, path, body={"properties": body} if method in ("PUT", "POST") else None, timeout=30)
    assert status < 500 or status == 503, (status, raw[:300])
    if status >= 400:
        assert json.loads(raw)["error"]["code"], raw[:300]
    _unchanged(coordinator, before)


@FUZZ
@given(name=HOSTILE, instance=HOSTILE, route=st.sampled_from(["files", "merged", "events", "manifest"]))
def test_gateway_fleetcap_routes_answer_every_input_cleanly(gateway, coordinator, before, name, instance, route):
    from urllib.parse import quote

    status, _, raw = gateway.request(
        "GET", f"/fleetcap/v1/captures/{quote(name, safe='')}/{route}?instance={quote(instance, safe='')}", timeout=30
    )
    assert 400 <= status < 500, (status, raw[:300])  # no such capture, or a malformed name: never served
    assert json.loads(raw)["error"]["code"], raw[:300]
    assert "Traceback" not in gateway.log()


@FUZZ
@given(name=HOSTILE_GRPC, strings=st.lists(HOSTILE, max_size=40), number=st.integers(-(2**31), 2**31 - 1))
def test_grpc_string_and_repeated_fields_answer_cleanly(coordinator, before, name, strings, number):
    async def body() -> list[grpc.StatusCode]:
        codes = []
        async with sdk.AsyncClient(coordinator) as c:
            stub, md = c._link.stub, c._metadata
            calls = [
                lambda: stub.Get(pb.GetPacketCaptureRequest(name=name), metadata=md),
                lambda: stub.GetStatus(pb.GetPacketCaptureStatusRequest(name=name), metadata=md),
                lambda: stub.Stop(pb.StopPacketCaptureRequest(name=name), metadata=md),
                lambda: stub.Delete(pb.DeletePacketCaptureRequest(name=name), metadata=md),
                lambda: stub.Trigger(
                    pb.TriggerPacketCaptureRequest(name=name, note=strings[0] if strings else "", after_in_seconds=number), metadata=md
                ),
                lambda: stub.Create(
                    pb.CreatePacketCaptureRequest(
                        name=name,
                        resource_group=strings[0] if strings else "",
                        properties=pb.PacketCaptureParameters(
                            target=name,
                            bpf_filter=strings[-1] if strings else "",
                            time_limit_in_seconds=number,
                            filters=[pb.PacketCaptureFilter(local_ip_address=s, remote_port=s) for s in strings[:40]],
                            scope=pb.PacketCaptureMachineScope(include=strings, exclude=strings[:3]),
                        ),
                    ),
                    metadata=md,
                ),
            ]
            for call in calls:
                try:
                    await call()
                    codes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as e:
                    assert e.code() in CLEAN_GRPC, (e.code(), e.details())
                    assert "Traceback" not in (e.details() or "")
                    codes.append(e.code())
        return codes

    import asyncio

    codes = asyncio.run(body())
    assert grpc.StatusCode.OK not in codes[-1:]  # no hostile create ever succeeds
    _unchanged(coordinator, before)
