"""Alert-triggered captures through real webhooks: Azure Monitor's common alert schema and its
older schema, and Alertmanager's payload, against a real gateway, coordinator and agent."""

from __future__ import annotations

import copy
import json

import pytest

from fleetcap.clients import sdk
from fleetcap.core.auth import Role
from tests.conftest import TOKENS
from tests.integration.gateway_support import Gateway, scale_set_agents
from tests.waiting import wait_for

pytestmark = pytest.mark.integration
TOKEN = "s3cret"
VM1 = "/subscriptions/local/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1"

RULES = {
    "rules": [
        {
            "name": "net-out-high",
            "source": "azure-monitor",
            "match": {"alertRule": "Network Out High"},
            "properties": {
                "storageLocation": {"storageId": "local", "filePath": "/var/captures/netout.cap"},
                "timeLimitInSeconds": 2,
                "filters": [{"protocol": "UDP", "localPort": "9"}],
            },
        },
        {
            "name": "tight",
            "source": "azure-monitor",
            "match": {"alertRule": "Tight"},
            "maxCaptures": 1,
            "properties": {"storageLocation": {"filePath": "/var/captures/tight.cap"}, "timeLimitInSeconds": 2},
        },
        {
            "name": "am-vmss",
            "source": "alertmanager",
            "match": {"alertname": "InstanceEgress"},
            "scaleSetLabel": "vmss",
            "instanceLabel": "instance",
            "properties": {"storageLocation": {"filePath": "/var/captures/inst.cap"}, "timeLimitInSeconds": 30},
        },
        {
            "name": "vmss-cpu",
            "source": "azure-monitor",
            "match": {"alertRule": "Instance CPU"},
            "properties": {"storageLocation": {"filePath": "/var/captures/cpu.cap"}, "timeLimitInSeconds": 30},
        },
        {
            "name": "am",
            "source": "alertmanager",
            "match": {"alertname": "HighTraffic"},
            "targetLabel": "vm",
            "captureName": "am-{target}",
            "properties": {
                "storageLocation": {"filePath": "/var/captures/am.cap"},
                "timeLimitInSeconds": 30,
                "bytesToCapturePerPacket": 128,
            },
        },
        {
            "name": "latency",
            "source": "alertmanager",
            "match": {"alertname": "Latency"},
            "action": "trigger",
            "captureName": "rec-vm1",
            "afterInSeconds": 1,
        },
    ]
}

# Azure Monitor's common alert schema, as an action group posts it (metric alert on a VM; the
# target id comes lowercased, as Azure sends it).
AZURE = {
    "schemaId": "azureMonitorCommonAlertSchema",
    "data": {
        "essentials": {
            "alertId": "/subscriptions/local/providers/Microsoft.AlertsManagement/alerts/b9569717-bc32-442f-add5-83a997729330",
            "alertRule": "Network Out High",
            "severity": "Sev3",
            "signalType": "Metric",
            "monitorCondition": "Fired",
            "monitoringService": "Platform",
            "alertTargetIDs": ["/subscriptions/local/resourcegroups/rg1/providers/microsoft.compute/virtualmachines/vm1"],
            "configurationItems": ["vm1"],
            "originAlertId": "3f2d4487-b0fc-4125-8bd5-7ad17384221e_rg1_microsoft.insights_metricAlerts_Network Out High",
            "firedDateTime": "2026-11-26T13:58:24.3713213Z",
            "description": "",
            "essentialsVersion": "1.0",
            "alertContextVersion": "1.0",
        },
        "alertContext": {
            "properties": None,
            "conditionType": "SingleResourceMultipleMetricCriteria",
            "condition": {
                "windowSize": "PT5M",
                "allOf": [
                    {
                        "metricName": "Network Out Total",
                        "metricNamespace": "Microsoft.Compute/virtualMachines",
                        "operator": "GreaterThan",
                        "threshold": "3",
                        "timeAggregation": "Average",
                        "dimensions": [{"name": "ResourceId", "value": "3efad9dc-3d50-4eac-9c87-8b3fd6f97e4e"}],
                        "metricValue": 7.727,
                    }
                ],
            },
        },
    },
}

ALERTMANAGER = {
    "version": "4",
    "groupKey": '{}:{alertname="HighTraffic"}',
    "truncatedAlerts": 0,
    "status": "firing",
    "receiver": "fleetcap",
    "groupLabels": {"alertname": "HighTraffic"},
    "commonLabels": {"alertname": "HighTraffic", "vm": "vm1", "severity": "page"},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager.local:9093",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "HighTraffic", "vm": "vm1", "severity": "page"},
            "annotations": {"summary": "egress above 1 Gbit/s"},
            "startsAt": "2026-11-26T13:58:24Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.local/graph",
            "fingerprint": "c6a1b2e3d4f50617",
        }
    ],
}


@pytest.fixture(scope="module")
def gateway(coordinator, tmp_path_factory):
    d = tmp_path_factory.mktemp("alerts")
    rules = d / "rules.json"
    rules.write_text(json.dumps(RULES))
    (d / "webhook.token").write_text(TOKEN + "\n")
    g = Gateway(coordinator, d, "--alert-rules", str(rules), "--webhook-token", f"file:{d / 'webhook.token'}")
    yield g
    g.stop()


def post(gateway, path: str, payload) -> tuple[int, dict]:
    return gateway.call("POST", path, payload, token=TOKEN)


def alert_captures(client: sdk.Client, prefix: str) -> list:
    return [c for c in client.list() if c.name.startswith(prefix)]


def test_azure_monitor_alert_flow_never_piles_up(gateway, coordinator):
    with sdk.Client(coordinator) as c:
        status, out = post(gateway, "/webhooks/azure-monitor", AZURE)
        assert status == 200, out
        assert out == {
            "results": [{"alert": "Network Out High", "action": "created", "rule": "net-out-high", "capture": "alert-net-out-high-vm1"}]
        }
        first = c.get(name="alert-net-out-high-vm1")
        p = first.properties
        assert (p.target, p.target_type, p.time_limit_in_seconds) == (VM1, "AzureVM", 2)
        assert p.storage_location.file_path.startswith("/var/captures/netout_")
        assert p.storage_location.storage_id == "local"
        assert [(f.protocol, f.local_port) for f in p.filters] == [("UDP", "9")]

        # Fired again while the capture runs: it is kept, nothing new.
        assert post(gateway, "/webhooks/azure-monitor", AZURE)[1]["results"][0]["action"] == "kept-running"
        assert [x.name for x in alert_captures(c, "alert-")] == ["alert-net-out-high-vm1"]

        # Once it has finished, the next firing deletes it and creates the new one (Azure's flow).
        final = c.wait(name="alert-net-out-high-vm1", timeout_s=30)
        assert (final.packet_capture_status, final.stop_reason) == ("Stopped", "TimeExceeded")
        assert post(gateway, "/webhooks/azure-monitor", AZURE)[1]["results"][0]["action"] == "created"
        again = alert_captures(c, "alert-")
        assert [x.name for x in again] == ["alert-net-out-high-vm1"]
        assert again[0].etag != first.etag

        resolved = copy.deepcopy(AZURE)
        resolved["data"]["essentials"]["monitorCondition"] = "Resolved"
        assert post(gateway, "/webhooks/azure-monitor", resolved)[1]["results"] == [
            {"alert": "Network Out High", "action": "ignored", "message": "resolved alerts start no capture"}
        ]
        other = copy.deepcopy(AZURE)
        other["data"]["essentials"]["alertRule"] = "Disk Full"
        assert post(gateway, "/webhooks/azure-monitor", other)[1]["results"][0]["action"] == "no-rule"

        # The quota check: a rule allowing 1 capture while one exists creates nothing.
        tight = copy.deepcopy(AZURE)
        tight["data"]["essentials"]["alertRule"] = "Tight"
        n = len(c.list())
        assert post(gateway, "/webhooks/azure-monitor", tight)[1]["results"] == [
            {
                "alert": "Tight",
                "action": "quota-exceeded",
                "rule": "tight",
                "capture": "alert-tight-vm1",
                "message": f"{n} captures exist; the rule allows 1",
            }
        ]
        assert alert_captures(c, "alert-tight") == []
        c.wait(name="alert-net-out-high-vm1", timeout_s=30)


def test_older_azure_schema_is_understood(gateway, coordinator):
    old = {
        "schemaId": "AzureMonitorMetricAlert",
        "data": {
            "version": "2.0",
            "status": "Activated",
            "context": {
                "timestamp": "2026-11-26T13:58:24Z",
                "id": "/subscriptions/local/providers/microsoft.insights/metricAlerts/x",
                "name": "Tight",
                "conditionType": "SingleResourceMultipleMetricCriteria",
                "resourceGroupName": "rg1",
                "resourceType": "microsoft.compute/virtualmachines",
                "resourceName": "vm1",
                "resourceId": "/subscriptions/local/resourcegroups/rg1/providers/microsoft.compute/virtualmachines/vm1",
            },
        },
    }
    status, out = post(gateway, "/webhooks/azure-monitor", old)
    assert status == 200
    assert out["results"][0]["rule"] == "tight"
    assert out["results"][0]["action"] in ("quota-exceeded", "created")


def test_alertmanager_repeats_leave_one_capture(gateway, coordinator):
    with sdk.Client(coordinator) as c:
        actions = [post(gateway, "/webhooks/alertmanager", ALERTMANAGER)[1]["results"][0]["action"] for _ in range(3)]
        assert actions == ["created", "kept-running", "kept-running"]
        [cap] = alert_captures(c, "am-")
        assert cap.name == "am-vm1"
        assert cap.properties.target == VM1
        assert cap.properties.bytes_to_capture_per_packet == 128
        resolved = copy.deepcopy(ALERTMANAGER)
        resolved["status"] = resolved["alerts"][0]["status"] = "resolved"
        assert post(gateway, "/webhooks/alertmanager", resolved)[1]["results"][0]["action"] == "ignored"
        unknown_vm = copy.deepcopy(ALERTMANAGER)
        unknown_vm["alerts"][0]["labels"]["vm"] = "vm9"
        assert post(gateway, "/webhooks/alertmanager", unknown_vm)[1]["results"] == [
            {"alert": "HighTraffic", "action": "failed", "rule": "am", "message": "no connected agent is VM vm9"}
        ]
        c.delete(name="am-vm1")


def test_webhooks_check_the_token_and_the_payload(gateway, coordinator):
    # No token, a wrong one, a fleetcap API token, the right one in the URL: 401 each time.
    for token, query in ((None, ""), (TOKEN + "x", ""), (TOKENS[Role.ADMIN], ""), (None, f"?token={TOKEN}")):
        status, err = gateway.call("POST", "/webhooks/alertmanager" + query, ALERTMANAGER, token=token)
        assert (status, err["error"]["code"]) == (401, "Unauthorized"), (token, query)
    # A body a browser could send cross-site without asking (text/plain, a form): 415, even
    # with the token.
    for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        status, err = gateway.call(
            "POST", "/webhooks/alertmanager", raw=json.dumps(ALERTMANAGER).encode(), token=TOKEN, headers={"Content-Type": media}
        )
        assert (status, err["error"]["code"]) == (415, "UnsupportedMediaType"), media
    with sdk.Client(coordinator) as c:
        assert alert_captures(c, "am-") == []
    status, err = post(gateway, "/webhooks/azure-monitor", {"schemaId": "azureMonitorCommonAlertSchema"})
    assert (status, err["error"]["message"]) == (400, "data: required; not an Azure Monitor alert payload")
    status, err = post(gateway, "/webhooks/alertmanager", {"alerts": "x"})
    assert (status, err["error"]["message"]) == (400, "alerts: required; not an Alertmanager webhook payload")
    assert "Traceback" not in gateway.log()


WEB = "/subscriptions/local/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/web"


@pytest.fixture(scope="module")
def web(coordinator, tmp_path_factory):
    with scale_set_agents(coordinator, tmp_path_factory.mktemp("web"), "web", (2, 5)):
        yield


def test_scale_set_instances_from_both_sources(gateway, coordinator, web):
    am = copy.deepcopy(ALERTMANAGER)
    am["alerts"][0]["labels"] = {"alertname": "InstanceEgress", "vmss": "web", "instance": "5"}
    assert post(gateway, "/webhooks/alertmanager", am)[1]["results"] == [
        {"alert": "InstanceEgress", "action": "created", "rule": "am-vmss", "capture": "alert-am-vmss-web_5"}
    ]
    az = copy.deepcopy(AZURE)
    az["data"]["essentials"]["alertRule"] = "Instance CPU"
    az["data"]["essentials"]["alertTargetIDs"] = [
        "/subscriptions/local/resourcegroups/rg1/providers/microsoft.compute/virtualmachinescalesets/web/virtualmachines/2"
    ]
    assert post(gateway, "/webhooks/azure-monitor", az)[1]["results"] == [
        {"alert": "Instance CPU", "action": "created", "rule": "vmss-cpu", "capture": "alert-vmss-cpu-web_2"}
    ]
    with sdk.Client(coordinator) as c:
        for name, instance in (("alert-am-vmss-web_5", "5"), ("alert-vmss-cpu-web_2", "2")):
            cap = c.get(name=name)
            assert (cap.properties.target, cap.properties.target_type) == (WEB, "AzureVMSS")
            assert [i.instance_id for i in c.get_status(name=name).instances] == [instance]
            c.delete(name=name)


def test_a_trigger_rule_freezes_the_flight_recorder_once(gateway, coordinator):
    """A rule whose action is trigger freezes the named flight recorder: the first alert
    triggers it, a re-fire finds the same trigger, and a recorder that does not exist is a failure
    named in the answer. The REST action does the same, with its body checked field by field."""
    latency = copy.deepcopy(ALERTMANAGER)
    latency["commonLabels"]["alertname"] = latency["alerts"][0]["labels"]["alertname"] = "Latency"
    with sdk.Client(coordinator) as c:
        assert post(gateway, "/webhooks/alertmanager", latency)[1]["results"] == [
            {
                "alert": "Latency",
                "action": "failed",
                "rule": "latency",
                "capture": "rec-vm1",
                "message": "NOT_FOUND: packet capture 'rec-vm1' not found",
            }
        ]
        c.create(
            name="rec-vm1",
            target="vm1",
            resource_group="rg1",
            storage_account="local",
            standby_in_seconds=5,
            filters=[{"protocol": "UDP", "localPort": "9"}],
        )
        wait_for(
            lambda: c.get_status(name="rec-vm1").packet_capture_status == "Standby",
            what='c.get_status(name="rec-vm1").packet_capture_status == "Standby"',
            timeout_s=15,
            interval_s=0.1,
        )
        status, out = post(gateway, "/webhooks/alertmanager", latency)
        assert status == 200, out
        [result] = out["results"]
        triggered = c.get_status(name="rec-vm1")
        # The source is the gateway's own credential (here the tests' admin token), with the alert.
        assert triggered.trigger_source == "admin (alert Latency)"
        assert triggered.trigger_after_seconds == 1
        assert result == {
            "alert": "Latency",
            "action": "triggered",
            "rule": "latency",
            "capture": "rec-vm1",
            "message": f"triggered at {triggered.trigger_time} by admin (alert Latency)",
        }
        assert post(gateway, "/webhooks/alertmanager", latency)[1]["results"] == [result]  # a re-fire: the same
        final = c.wait(name="rec-vm1", timeout_s=30)
        assert (final.packet_capture_status, final.stop_reason) == ("Stopped", "TriggerWindowEnded")
        assert final.trigger_time == triggered.trigger_time

        base = (
            "/subscriptions/local/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/"
            "NetworkWatcher_local/packetCaptures"
        )
        # Armed through the REST API: standbyInSeconds in the ARM properties, as any other property.
        status, created = gateway.call(
            "PUT",
            f"{base}/rec-rest?api-version=2024-10-01",
            {
                "properties": {
                    "target": VM1,
                    "storageLocation": {"storageId": "local"},
                    "standbyInSeconds": 5,
                    "filters": [{"protocol": "UDP", "localPort": "9"}],
                }
            },
            token=TOKENS[Role.CONTRIBUTOR],
        )
        assert status == 201, created
        assert (created["properties"]["standbyInSeconds"], created["properties"]["standbyBytes"]) == (5, 104857600)
        for body, want in (
            ({"afterInSeconds": "5"}, (400, "afterInSeconds: must be a whole number of seconds")),
            ({"after": 5}, (400, "after: unknown member of the request body")),
            ({"afterInSeconds": -1}, (400, "afterInSeconds: -1 is out of range 0..18000")),
        ):
            status, err = gateway.call("POST", f"{base}/rec-rest/trigger?api-version=2024-10-01", body, token=TOKENS[Role.CONTRIBUTOR])
            assert (status, err["error"]["message"]) == want, err
        status, err = gateway.call(
            "POST", f"{base}/rec-rest/trigger?api-version=2024-10-01", {"afterInSeconds": 0}, token=TOKENS[Role.READER]
        )
        assert status == 403, err  # a reader may look, not trigger
        status, body = gateway.call(
            "POST",
            f"{base}/rec-rest/trigger?api-version=2024-10-01",
            {"afterInSeconds": 0, "note": "INC-7"},
            token=TOKENS[Role.CONTRIBUTOR],
        )
        assert status == 200, body
        # Through the REST API the caller's own credential is the source.
        assert (body["packetCaptureStatus"], body["triggerSource"]) == ("Triggered", "contributor (INC-7)")
        assert body["triggerAfterSeconds"] == 0
        assert body["triggerTime"].endswith("Z")
        assert c.wait(name="rec-rest", timeout_s=30).stop_reason == "TriggerWindowEnded"
        status, err = gateway.call("POST", f"{base}/rec-vm1/trigger?api-version=2024-10-01", None, token=TOKENS[Role.CONTRIBUTOR])
        assert (status, err) == (200, err)
        assert err["triggerTime"] == triggered.trigger_time
        c.delete(name="rec-vm1")
        c.delete(name="rec-rest")


def test_without_a_webhook_token_no_webhook_acts(coordinator, tmp_path):
    """On loopback a gateway may run without --webhook-token; then its webhooks are off, so that
    no local process acts with the gateway's own credential by posting an alert."""
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(RULES))
    g = Gateway(coordinator, tmp_path, "--alert-rules", str(rules))
    with sdk.Client(coordinator) as c:
        before = sorted(x.name for x in c.list())
    try:
        for path, payload in (("/webhooks/alertmanager", ALERTMANAGER), ("/webhooks/azure-monitor", AZURE)):
            for token in (None, TOKENS[Role.ADMIN]):
                status, err = g.call("POST", path, payload, token=token)
                assert (status, err["error"]["code"], err["error"]["message"]) == (
                    404,
                    "NotFound",
                    "webhooks are off: start the gateway with --webhook-token (FLEETCAP_WEBHOOK_TOKEN) to serve them",
                ), (path, token)
        with sdk.Client(coordinator) as c:
            assert sorted(x.name for x in c.list()) == before
    finally:
        g.stop()
