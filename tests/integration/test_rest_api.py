"""The ARM-shaped REST API against a real gateway, coordinator and agent: Azure's paths, status
codes, body shapes and error shape; then schemathesis against the served OpenAPI document."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from fleetcap.core.auth import Role
from tests.conftest import TOKENS
from tests.integration.gateway_support import ARM, ROOT, Gateway
from tests.metrics_doc import documented, served
from tests.waiting import wait_for

pytestmark = pytest.mark.integration
API = "?api-version=2024-05-01"
VM1 = "/subscriptions/local/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1"


@pytest.fixture(scope="module")
def gateway(coordinator, tmp_path_factory):
    g = Gateway(coordinator, tmp_path_factory.mktemp("gw"))
    yield g
    g.stop()


def body(**props):
    p = {
        "target": VM1,
        "storageLocation": {"filePath": "/var/captures/rest.cap", "storageId": "local"},
        "timeLimitInSeconds": 1,
        "filters": [{"protocol": "UDP", "localPort": "9"}],
    }
    p.update(props)
    return {"properties": p}


def query_until(gateway, name: str, wanted: str) -> dict:
    def status() -> dict | None:
        code, st = gateway.call("POST", f"{ARM}/{name}/queryStatus{API}")
        assert code == 200, st
        return st if st["packetCaptureStatus"] == wanted else None

    return wait_for(status, what=f"{name} {wanted} (queryStatus)", timeout_s=20, interval_s=0.2)


def test_put_get_list_stop_status_delete(gateway):
    status, created = gateway.call("PUT", f"{ARM}/rest-1{API}", body(timeLimitInSeconds=60))
    assert status == 201, created
    assert created["name"] == "rest-1"
    assert created["type"] == "Microsoft.Network/networkWatchers/packetCaptures"
    assert created["id"].endswith("/providers/Microsoft.Network/networkWatchers/NetworkWatcher_local/packetCaptures/rest-1")
    p = created["properties"]
    assert (p["target"], p["targetType"], p["provisioningState"]) == (VM1, "AzureVM", "Succeeded")
    assert (p["timeLimitInSeconds"], p["totalBytesPerSession"], p["bytesToCapturePerPacket"]) == (60, 1073741824, 0)
    assert p["storageLocation"]["storagePath"].startswith("file://")
    assert gateway.call("GET", f"{ARM}/rest-1{API}") == (200, created)

    status, listed = gateway.call("GET", f"{ARM}{API}")
    assert status == 200
    assert [c for c in listed["value"] if c["name"] == "rest-1"] == [created]

    # PUT of an existing name: captures cannot be updated (Azure: PacketCaptureExistingAlready).
    status, err = gateway.call("PUT", f"{ARM}/rest-1{API}", body(timeLimitInSeconds=5))
    assert status == 409
    assert err["error"]["code"] == "PacketCaptureExistingAlready"
    assert err["error"]["message"] == "a packet capture named 'rest-1' already exists; captures cannot be updated, delete it first"

    st = query_until(gateway, "rest-1", "Running")
    assert st["name"] == "rest-1"
    assert st["id"] == created["id"]
    assert st["packetCaptureError"] == []
    assert st["instances"][0]["id"] == VM1
    assert gateway.call("POST", f"{ARM}/rest-1/stop{API}") == (200, b"")
    assert gateway.call("POST", f"{ARM}/rest-1/stop{API}") == (200, b"")  # idempotent
    st = query_until(gateway, "rest-1", "Stopped")
    assert (st["stopReason"], st["packetCaptureError"]) == ("StoppedByUser", [])

    assert gateway.call("DELETE", f"{ARM}/rest-1{API}") == (202, b"")
    assert gateway.call("DELETE", f"{ARM}/rest-1{API}") == (204, b"")
    status, err = gateway.call("GET", f"{ARM}/rest-1{API}")
    assert (status, err) == (404, {"error": {"code": "ResourceNotFound", "message": "packet capture 'rest-1' not found"}})


@pytest.mark.parametrize(
    ("payload", "status", "code", "message"),
    [
        (body(timeLimitInSeconds=18001), 400, "InvalidParameter", "timeLimitInSeconds: "),
        (body(targetType="AzureVMs"), 400, "InvalidParameter", "targetType: "),
        (body(filters=[{"protocol": "TCP", "localPort": "1-5;7"}]), 400, "InvalidParameter", "filters[0].localPort: "),
        (body(timeLimitInSeconds="soon"), 400, "InvalidRequestFormat", "properties: timeLimitInSeconds field"),
        (body(colour="blue"), 400, "InvalidRequestFormat", "properties: Message type"),
        ({"props": {}}, 400, "InvalidRequestFormat", "props: unknown member"),
        ([1, 2], 400, "InvalidRequestFormat", "the request body must be a JSON object"),
        (body(target=VM1.replace("vm1", "vm9")), 404, "ResourceNotFound", "target: no virtual machine 'vm9'"),
    ],
)
def test_bad_requests_get_azure_error_shape_and_leave_nothing(gateway, payload, status, code, message):
    got_status, err = gateway.call("PUT", f"{ARM}/rest-bad{API}", payload)
    assert got_status == status, err
    assert set(err) == {"error"}
    assert err["error"]["code"] == code
    assert err["error"]["message"].startswith(message), err
    assert gateway.call("GET", f"{ARM}/rest-bad{API}")[0] == 404


def test_malformed_json_and_unknown_routes(gateway):
    status, err = gateway.call("PUT", f"{ARM}/rest-x{API}", raw=b"{not json")
    assert status == 400
    assert err["error"]["message"].startswith("the body is not valid JSON")
    status, err = gateway.call("PATCH", f"{ARM}/rest-x{API}", body())
    assert status == 405
    assert err["error"]["code"] == "MethodNotAllowed"
    status, err = gateway.call("GET", "/subscriptions/x/nothing")
    assert status == 404
    assert err["error"]["code"] == "NotFound"
    assert "Traceback" not in gateway.log()


def test_schemathesis_finds_no_5xx_and_no_schema_violation(gateway, tmp_path):
    st = shutil.which("schemathesis", path=os.path.dirname(sys.executable))
    assert st, "schemathesis is a dev dependency; run make setup"
    r = subprocess.run(
        [
            st,
            "run",
            f"{gateway.base}/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "40",
            "--workers",
            "1",
            "--phases",
            "examples,coverage,fuzzing",
            "--seed",
            "1",
            "--suppress-health-check",
            "all",
            "--tls-verify",
            gateway.ca,
            "-H",
            f"Authorization: Bearer {TOKENS[Role.ADMIN]}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "Traceback" not in gateway.log()
    # The served document's example (a capture of the connected VM) took schemathesis past the
    # error paths: real resources were created and read, and their bodies matched the schema.
    status, metrics = gateway.call("GET", "/metrics")
    assert status == 200, metrics
    counts = dict(line.rsplit(" ", 1) for line in metrics.decode().splitlines() if not line.startswith("#"))
    assert int(float(counts['fleetcap_gateway_requests_total{code="201",route="arm"}'])) >= 1, metrics
    assert int(float(counts['fleetcap_gateway_requests_total{code="200",route="arm"}'])) >= 1
    assert int(float(counts['fleetcap_gateway_request_duration_seconds_count{route="arm"}'])) >= 2
    # docs/operations.md lists the gateway's metrics with their types and labels.
    assert served(metrics.decode(), "fleetcap_gateway_") == documented("fleetcap_gateway_")
    assert 'fleetcap_build_info{component="gateway"' in metrics.decode()


def test_coordinator_down_is_503_in_azure_shape(tmp_path):
    rules = tmp_path / "rules.json"
    rules.write_text('{"rules": [{"name": "any-alert"}]}')
    (tmp_path / "webhook.token").write_text("hook-token\n")
    g = Gateway(
        f"unix:{tmp_path}/no-coordinator.sock",
        tmp_path,
        "--alert-rules",
        str(rules),
        "--webhook-token",
        f"file:{tmp_path / 'webhook.token'}",
    )
    try:
        status, err = g.call("GET", f"{ARM}{API}")
        assert status == 503 and err["error"]["code"] == "ServiceUnavailable", err
        status, err = g.call("PUT", f"{ARM}/down-1{API}", body())
        assert status == 503
        assert err["error"]["code"] == "ServiceUnavailable"
        # A webhook is answered 503 too, so that Alertmanager or Azure Monitor delivers it again.
        status, err = g.call(
            "POST",
            "/webhooks/alertmanager",
            {"status": "firing", "alerts": [{"status": "firing", "labels": {"alertname": "X", "vm": "vm1"}}]},
            token="hook-token",
        )
        assert status == 503 and err["error"]["code"] == "ServiceUnavailable", err
        assert "Traceback" not in g.log()
    finally:
        g.stop()


def test_file_download_endpoint_errors(gateway):
    status, err = gateway.call("GET", "/fleetcap/v1/captures/nope/files?instance=vm1")
    assert (status, err["error"]["code"]) == (404, "ResourceNotFound")
    status, err = gateway.call("GET", "/fleetcap/v1/captures/nope/files")
    assert (status, err["error"]["message"]) == (400, "instance: required, an instance id or VM name")
    status, err = gateway.call("GET", "/fleetcap/v1/captures/nope/merged")
    assert (status, err["error"]["code"]) == (404, "ResourceNotFound")
