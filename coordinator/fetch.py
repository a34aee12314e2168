"""Downloads of files that only their instance holds (a capture without a storage account, or a
file whose upload failed): the coordinator asks the agent for the file over the fleet channel
and streams it to the caller while it arrives.

The request is a FetchRecord in etcd under a lease this replica keeps alive while the download
lasts; the replica holding the agent's control stream (this one or another: dispatch.py
watches fetches) sends the agent a FetchFile. The agent sends the file through the ordinary
Upload path (chunk CRC-32s, then its size and SHA-256, verified before the commit) into the
fetch area of the local storage account, `fleetcap-fetch/<fetch_id>.cap`, from which the reader
streams the bytes as they land. When the download ends, however it ends, the record and the
copy are deleted: nothing is kept in storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import uuid
from collections.abc import AsyncIterator
from typing import Protocol

from fleetcap.coordinator.errors import DataLoss, FailedPrecondition
from fleetcap.coordinator.state.store import Store
from fleetcap.coordinator.storage.local_sink import LocalSink
from fleetcap.core.vocabulary import Status
from fleetcap.v1 import captures_pb2, fleet_pb2, state_pb2

log = logging.getLogger(__name__)

FETCH_AREA = "fleetcap-fetch"
"""The folder of the local storage account that holds fetched copies while they are read."""
FETCH_TTL_S = 30
"""The fetch record's lease: a replica that dies mid-download lets it go within this."""
FIRST_BYTE_S = 20.0
"""How long the agent has to start sending before the download fails."""
STALL_S = 60.0
"""How long a download waits without a new byte (and without the agent) before it fails."""
POLL_S = 0.1
READ_CHUNK = 1 << 20


def fetch_object(fetch_id: str) -> str:
    return f"{FETCH_AREA}/{fetch_id}.cap"


@dataclasses.dataclass(frozen=True)
class InterfaceRate:
    """An agent's capture interface traffic over its last heartbeat interval."""

    bytes_per_s: int
    packets_per_s: int


class Dispatcher(Protocol):
    """The agent sessions (fleet/agents.py), as the capture service and this module use them."""

    def send(self, instance_key: str, message: fleet_pb2.CoordinatorMessage) -> bool:
        """Queues a message to the agent of that instance; False if it is not connected here."""

    def interface_rate(self, instance_key: str) -> InterfaceRate | None:
        """The agent's capture interface traffic, if it is connected here and measured."""


class InstanceFiles:
    def __init__(self, store: Store, sink: LocalSink, dispatcher: Dispatcher):
        self.store = store
        self.sink = sink
        self.dispatcher = dispatcher

    async def read(
        self,
        record: state_pb2.CaptureRecord,
        inst: state_pb2.InstanceRecord,
        file: captures_pb2.CaptureFile,
        session: str,
        offset: int,
        follow: bool,
    ) -> AsyncIterator[tuple[int, bytes, bool]]:
        """Yields (offset, data, complete) of one file of one instance, fetched from its agent.
        Raises FailedPrecondition when the agent is not connected (naming the instance and where
        the file stays), when the file is still being written and follow is off, or when the
        agent does not send it; DataLoss when what arrived does not hash as the agent reported."""
        name, instance = record.resource.name, inst.status.instance_id
        if not follow and not file.sha256:
            running = inst.status.packet_capture_status in (Status.RUNNING, Status.NOT_STARTED)
            raise FailedPrecondition(
                f"instance '{instance}': {file.file_path} is still being written; follow it with "
                "`fleetcap capture follow`, or download it once the capture has stopped there"
                if running
                else f"instance '{instance}': {file.file_path} was never closed (the instance ended in "
                f"{inst.status.packet_capture_status}); its agent reports it once it restarts"
            )
        if inst.instance_key not in await self.store.agents.list():
            raise FailedPrecondition(f"instance '{instance}' is offline: {file.file_path} stays on it until its agent reconnects")
        fetch_id = uuid.uuid4().hex
        fetch = state_pb2.FetchRecord(
            fetch_id=fetch_id, capture_name=name, capture_id=session, instance_key=inst.instance_key, file_path=file.file_path
        )
        lease = await self.store.fetches.put(fetch, FETCH_TTL_S)
        keeper = asyncio.ensure_future(self._keep_alive(lease))
        obj = fetch_object(fetch_id)
        # Sent at once when the agent is connected here; otherwise its replica sends it (dispatch.py).
        self.dispatcher.send(
            inst.instance_key,
            fleet_pb2.CoordinatorMessage(
                fetch=fleet_pb2.FetchFile(capture_name=name, capture_id=session, file_path=file.file_path, fetch_id=fetch_id)
            ),
        )
        log.info("capture %s: fetching %s from instance %s (%s)", name, file.file_path, instance, fetch_id)
        try:
            async for item in self._stream(obj, name, inst, file, offset):
                yield item
        finally:
            keeper.cancel()
            with contextlib.suppress(Exception):  # etcd away: the lease lets the record go
                await self.store.fetches.end(fetch_id, lease)
            await asyncio.to_thread(self.sink.delete, obj)

    async def _stream(
        self, obj: str, name: str, inst: state_pb2.InstanceRecord, file: captures_pb2.CaptureFile, offset: int
    ) -> AsyncIterator[tuple[int, bytes, bool]]:
        loop = asyncio.get_running_loop()
        digest = hashlib.sha256() if offset == 0 else None
        started = last_byte = loop.time()
        instance = inst.status.instance_id
        while True:
            data = await asyncio.to_thread(self.sink.read, obj, offset, READ_CHUNK)
            if data:
                if digest is not None:
                    digest.update(data)
                last_byte = loop.time()
                yield offset, data, False
                offset += len(data)
                continue
            size = await asyncio.to_thread(self.sink.committed_size, obj)
            if size is not None and offset >= size:
                await self._verify(digest, name, inst, file)
                yield offset, b"", True
                return
            now = loop.time()
            if size is None and offset == 0 and now - started > FIRST_BYTE_S:
                raise FailedPrecondition(
                    f"instance '{instance}' did not send {file.file_path} within {FIRST_BYTE_S:g} s; see its agent's log"
                )
            if now - last_byte > STALL_S and inst.instance_key not in await self.store.agents.list():
                raise FailedPrecondition(f"instance '{instance}' went offline while sending {file.file_path}")
            await asyncio.sleep(POLL_S)

    async def _verify(
        self, digest: hashlib._Hash | None, name: str, inst: state_pb2.InstanceRecord, file: captures_pb2.CaptureFile
    ) -> None:
        """The commit checked the agent's size and SHA-256 for the bytes it sent; the whole
        stream (read from offset 0) is checked again here against what the instance reported."""
        if digest is None:
            return
        reported = file.sha256
        if not reported:  # followed while running: the instance reports the hash when it closes the file
            fresh = next((i for i in await self.store.get_instances(name) if i.instance_key == inst.instance_key), None)
            reported = next((f.sha256 for f in fresh.status.files if f.file_path == file.file_path), "") if fresh else ""
        if reported and digest.hexdigest() != reported:
            raise DataLoss(
                f"instance '{inst.status.instance_id}': {file.file_path} arrived with SHA-256 "
                f"{digest.hexdigest()}, the instance reported {reported}"
            )

    async def _keep_alive(self, lease: int) -> None:
        while True:
            await asyncio.sleep(FETCH_TTL_S / 3)
            with contextlib.suppress(Exception):
                await self.store.leases.refresh(lease)

    async def sweep(self) -> int:
        """Removes fetched copies whose fetch record is gone (a replica died mid-download);
        returns how many. Run at start."""
        live = set(await self.store.fetches.list())
        area = os.path.join(self.sink.root, FETCH_AREA)
        removed = 0
        for entry in await asyncio.to_thread(lambda: os.listdir(area) if os.path.isdir(area) else []):
            fetch_id = entry.split(".", 1)[0]
            if fetch_id not in live:
                await asyncio.to_thread(self.sink.delete, fetch_object(fetch_id))
                removed += 1
        return removed
