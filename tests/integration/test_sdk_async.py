"""The asyncio SDK against a real coordinator and agent: the same typed errors as the sync
client, a live watch, and a download that yields the exact stored bytes."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

import fleetcap
from fleetcap.clients import sdk
from fleetcap.clients.errors import ErrorCode

pytestmark = pytest.mark.integration


def test_async_client_lifecycle_and_typed_errors(coordinator, tmp_path):
    async def scenario():
        async with fleetcap.AsyncClient(coordinator) as c:
            with pytest.raises(fleetcap.InvalidCapture) as e:
                await c.create(name="as-1", target="vm1", resource_group="rg1", file_path="/var/captures/x.txt")
            assert e.value.code == ErrorCode.INVALID_ARGUMENT
            assert e.value.message.startswith("storageLocation.filePath: ")
            [local] = await c.list_storage_accounts()
            assert (local.name, local.kind, local.endpoint) == (
                "local",
                "Local",
                "file://" + os.path.join(coordinator.dir, "data", "storage"),
            )
            with pytest.raises(fleetcap.CaptureNotFound) as e:
                await c.get_status(name="as-none")
            assert e.value.message == "packet capture 'as-none' not found"

            created = await c.create(
                name="as-1",
                target="vm1",
                resource_group="rg1",
                storage_account="local",
                file_path="/var/captures/as-1.cap",
                time_limit_in_seconds=2,
                filters=[{"protocol": "UDP", "localPort": "9"}],
            )
            assert created.properties.time_limit_in_seconds == 2
            with pytest.raises(fleetcap.CaptureAlreadyExists):
                await c.create(name="as-1", target="vm1", resource_group="rg1", file_path="/var/captures/as-1.cap")
            assert [x.name for x in await c.list() if x.name == "as-1"] == ["as-1"]

            seen = [s.packet_capture_status async for s in c.watch(name="as-1", timeout_s=30)]
            assert seen[-1] == "Stopped"
            assert "Running" in seen
            final = await c.wait(name="as-1", timeout_s=30)
            assert (final.packet_capture_status, final.stop_reason) == ("Stopped", "TimeExceeded")
            stored = final.instances[0].files[0]
            assert stored.upload_complete
            assert stored.stored_sha256 == stored.sha256

            paths = await c.download(name="as-1", dest=str(tmp_path), merge=False)
            assert paths == [str(tmp_path / final.instances[0].instance_id / "as-1.cap")]
            with open(paths[0], "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == stored.sha256
            await c.delete(name="as-1")
            with pytest.raises(fleetcap.CaptureNotFound):
                await c.get(name="as-1")

    asyncio.run(scenario())


def test_sync_and_async_clients_are_the_sdk():
    assert fleetcap.Client is sdk.Client
    assert fleetcap.QuotaExceeded is sdk.QuotaExceeded
    assert issubclass(fleetcap.CaptureNotFound, fleetcap.FleetcapError)
