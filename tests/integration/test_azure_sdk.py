"""Azure's own Python SDK (azure-mgmt-network), unchanged, against the gateway over HTTPS: its
standard bearer-token policy (which refuses plain http), a certificate from the test CA, its
long-running-operation pollers and its typed errors. Only the base URL differs from a script
written for Azure."""

from __future__ import annotations

import time

import pytest
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.network import models as m

from fleetcap.core.auth import Role
from tests.conftest import TOKENS
from tests.integration.gateway_support import Gateway
from tests.waiting import wait_for

pytestmark = pytest.mark.integration
SUB = "00000000-0000-0000-0000-000000000000"
RG, WATCHER = "NetworkWatcherRG", "NetworkWatcher_westeurope"
VM1 = "/subscriptions/local/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1"


class StaticToken:
    """A TokenCredential, as azure-identity's are: the SDK asks it for a token per request."""

    def __init__(self, token: str):
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options=None) -> AccessTokenInfo:
        self.scopes.append(scopes)
        return AccessTokenInfo(self.token, int(time.time()) + 3600)


@pytest.fixture(scope="module")
def gateway(coordinator, tmp_path_factory):
    g = Gateway(coordinator, tmp_path_factory.mktemp("azsdk"))
    yield g
    g.stop()


def network(gateway, role: Role = Role.ADMIN, **options) -> NetworkManagementClient:
    return NetworkManagementClient(StaticToken(TOKENS[role]), SUB, base_url=gateway.base, connection_verify=gateway.ca, **options)


def params(name: str, **overrides) -> m.PacketCapture:
    props = {
        "target": VM1,
        "storage_location": m.PacketCaptureStorageLocation(file_path=f"/var/captures/{name}.cap", storage_id="local"),
        "time_limit_in_seconds": 60,
        "filters": [m.PacketCaptureFilter(protocol="UDP", local_port="9")],
    }
    props.update(overrides)
    return m.PacketCapture(properties=m.PacketCaptureParameters(**props))


def test_the_whole_lifecycle_through_azures_pollers(gateway):
    pcs = network(gateway).packet_captures
    poller = pcs.begin_create(RG, WATCHER, "sdk-1", params("sdk-1"))
    created = poller.result(timeout=60)
    assert poller.status() == "Succeeded"
    # The create's Azure-AsyncOperation finished only once the capture was running.
    assert created.name == "sdk-1"
    assert created.properties.target == VM1
    assert created.properties.provisioning_state == "Succeeded"
    assert created.properties.filters[0].local_port == "9"

    got = pcs.get(RG, WATCHER, "sdk-1")
    assert (got.id, got.properties.time_limit_in_seconds) == (created.id, 60)
    assert [c.name for c in pcs.list(RG, WATCHER) if c.name == "sdk-1"] == ["sdk-1"]

    status = pcs.begin_get_status(RG, WATCHER, "sdk-1").result(timeout=30)
    assert (status.name, status.packet_capture_status) == ("sdk-1", "Running")

    stop = pcs.begin_stop(RG, WATCHER, "sdk-1")
    assert stop.result(timeout=30) is None
    assert stop.status() == "Succeeded"
    status = wait_for(
        lambda: (st := pcs.begin_get_status(RG, WATCHER, "sdk-1").result()).packet_capture_status == "Stopped" and st,
        what="the capture Stopped",
        timeout_s=30,
        interval_s=0.2,
    )
    assert status.stop_reason == "StoppedByUser"

    delete = pcs.begin_delete(RG, WATCHER, "sdk-1")
    assert delete.result(timeout=30) is None
    assert delete.status() == "Succeeded"
    with pytest.raises(ResourceNotFoundError) as e:
        pcs.get(RG, WATCHER, "sdk-1")
    assert e.value.status_code == 404
    assert e.value.error.code == "ResourceNotFound"


def test_typed_errors(gateway):
    pcs = network(gateway).packet_captures
    with pytest.raises(HttpResponseError) as bad:
        pcs.begin_create(RG, WATCHER, "sdk-bad", params("sdk-bad", time_limit_in_seconds=18001)).result()
    assert bad.value.status_code == 400
    assert bad.value.error.code == "InvalidParameter"
    assert bad.value.error.message.startswith("timeLimitInSeconds: 18001 is out of range")

    pcs.begin_create(RG, WATCHER, "sdk-2", params("sdk-2")).result(timeout=60)
    try:
        with pytest.raises(ResourceExistsError) as exists:
            pcs.begin_create(RG, WATCHER, "sdk-2", params("sdk-2"))
        assert exists.value.status_code == 409
        assert exists.value.error.code == "PacketCaptureExistingAlready"
        # A capture that fails on its instance (its file exists already) fails the create's
        # poller with the capture's error, as Azure's would.
        clash = params("sdk-3")
        clash.properties.storage_location.file_path = "/var/captures/sdk-2.cap"
        with pytest.raises(HttpResponseError) as failed:
            pcs.begin_create(RG, WATCHER, "sdk-3", clash).result(timeout=60)
        assert failed.value.error.code == "LocalFileFailed", failed.value
        pcs.begin_delete(RG, WATCHER, "sdk-3").result(timeout=30)
    finally:
        pcs.begin_delete(RG, WATCHER, "sdk-2").result(timeout=30)
    with pytest.raises(ResourceNotFoundError):
        pcs.begin_get_status(RG, WATCHER, "sdk-none").result()
    with pytest.raises(ResourceNotFoundError):
        pcs.begin_stop(RG, WATCHER, "sdk-none").result()
    assert pcs.begin_delete(RG, WATCHER, "sdk-none").result() is None  # Azure: 204, nothing to delete


def test_the_callers_own_token_decides(gateway):
    reader = network(gateway, Role.READER).packet_captures
    assert isinstance(list(reader.list(RG, WATCHER)), list)
    with pytest.raises(HttpResponseError) as denied:
        reader.begin_create(RG, WATCHER, "sdk-reader", params("sdk-reader"))
    assert denied.value.status_code == 403
    assert denied.value.error.code == "AuthorizationFailed"
    unknown = NetworkManagementClient(StaticToken("fct_unknown"), SUB, base_url=gateway.base, connection_verify=gateway.ca).packet_captures
    with pytest.raises(ClientAuthenticationError) as e:
        unknown.get(RG, WATCHER, "anything")
    assert e.value.status_code == 401
    with pytest.raises(ResourceNotFoundError):
        network(gateway).packet_captures.get(RG, WATCHER, "sdk-reader")  # nothing was created


def test_the_sdk_will_not_send_a_token_over_http_nor_to_an_untrusted_certificate(gateway):
    plain = NetworkManagementClient(StaticToken(TOKENS[Role.ADMIN]), SUB, base_url=gateway.base.replace("https://", "http://"))
    with pytest.raises(ServiceRequestError, match="Bearer token authentication is not permitted for non-TLS"):
        plain.packet_captures.get(RG, WATCHER, "x")
    untrusted = NetworkManagementClient(StaticToken(TOKENS[Role.ADMIN]), SUB, base_url=gateway.base)
    with pytest.raises(ServiceRequestError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusted.packet_captures.get(RG, WATCHER, "x")
