"""File access: one instance's file streamed from storage, or fetched from the instance when only it holds it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping

from fleetcap.coordinator.errors import (
    FailedPrecondition,
    NotFound,
)
from fleetcap.coordinator.fetch import Dispatcher, InstanceFiles
from fleetcap.coordinator.state.store import Store
from fleetcap.coordinator.storage.local_sink import LocalSink
from fleetcap.coordinator.storage.sink import Sink
from fleetcap.coordinator.usecases.common import (
    Captures,
    kept_on_instance,
    object_name,
    session_id,
)
from fleetcap.core.naming import ring_file_path
from fleetcap.core.vocabulary import LOCAL_ACCOUNT, CaptureError, Status, is_terminal

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20
FOLLOW_POLL_S = 0.5


class FileAccess:
    """Reads for clients, who need no storage credentials."""

    def __init__(self, store: Store, sinks: Mapping[str, Sink], dispatcher: Dispatcher):
        self.store = store
        self.sinks = sinks
        self.captures = Captures(store)
        local = sinks.get(LOCAL_ACCOUNT)
        # Files only an instance holds are fetched through the local account's fetch area.
        self.instance_files = InstanceFiles(store, local, dispatcher) if isinstance(local, LocalSink) else None

    async def read_file(
        self, name: str, instance_id: str, file_path: str, offset: int, follow: bool
    ) -> AsyncIterator[tuple[int, bytes, bool]]:
        """Yields (offset, data, complete) from the stored copy of one instance's file. With
        follow, waits for more bytes until the file is committed. The local sink serves bytes
        as they become durable; a blob becomes readable once committed."""
        record = await self.captures.record(name)
        account = record.resource.properties.storage_location.storage_id
        inst = next((i for i in await self.store.get_instances(name) if i.status.instance_id == instance_id), None)
        if inst is None:
            raise NotFound(f"instance_id: capture '{name}' has no instance '{instance_id}'")
        files = list(inst.status.files)
        if not account or kept_on_instance(inst.status):
            # Only the instance holds it: its agent sends it (fetch.py).
            wanted = next((f for f in files if f.file_path == file_path), None) if file_path else (files[-1] if files else None)
            if wanted is None:
                raise NotFound(
                    f"file_path: instance '{instance_id}' of capture '{name}' has no file '{file_path}'"
                    if file_path
                    else f"instance '{instance_id}' of capture '{name}' has no file yet"
                )
            if self.instance_files is None:
                raise FailedPrecondition(
                    f"{wanted.file_path} is only on instance '{instance_id}', and this coordinator has no local storage to fetch it through"
                )
            async for item in self.instance_files.read(record, inst, wanted, session_id(record), offset, follow):
                yield item
            return
        if not file_path and not files and follow:
            file_path = ring_file_path(record.local_path, 0, record.resource.properties.HasField("continuous_capture"))
        chosen = next((f for f in files if f.file_path == file_path), None) if file_path else (files[-1] if files else None)
        if chosen is None and not (follow and file_path):
            raise NotFound(f"file_path: instance '{instance_id}' of capture '{name}' has no file '{file_path}'")
        if (
            chosen is not None
            and not chosen.upload_complete
            and is_terminal(inst.status.packet_capture_status)
            and CaptureError.LOCAL_FILE_FAILED in inst.status.packet_capture_error
        ):
            # The instance's file was not the agent's any more: what was stored of it is unverified.
            raise FailedPrecondition(
                f"{chosen.file_path} of instance '{instance_id}' was never stored whole, and "
                f"the instance's copy is refused: {inst.status.error_message}"
            )
        path = chosen.file_path if chosen else file_path
        obj = object_name(record, inst.identity, path)
        sink = self.sinks[account]
        while True:
            data = await asyncio.to_thread(sink.read, obj, offset, READ_CHUNK)
            if data:
                yield offset, data, False
                offset += len(data)
                continue
            status = await self.captures.instance_status(name, inst.instance_key)
            f = next((f for f in status.files if f.file_path == path), None) if status else None
            done = status is None or (f is not None and f.upload_complete) or status.packet_capture_status == Status.ERROR
            if done or not follow:
                if done and f is not None and f.upload_complete and offset < f.size_bytes:
                    continue  # committed between our read and the status: read the rest
                yield offset, b"", True
                return
            await asyncio.sleep(FOLLOW_POLL_S)
