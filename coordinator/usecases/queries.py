"""Reading captures: get, list (paged), status and its watch, the agents and the storage accounts."""

from __future__ import annotations

import asyncio
import base64
import builtins
import logging
from collections.abc import AsyncIterator, Mapping

from fleetcap.coordinator import status as st
from fleetcap.coordinator.errors import (
    InvalidArgument,
)
from fleetcap.coordinator.state import keys
from fleetcap.coordinator.state.store import Store, WatchKind
from fleetcap.coordinator.storage.sink import Sink
from fleetcap.coordinator.usecases.common import (
    Captures,
)
from fleetcap.core import limits
from fleetcap.core.naming import resource_id
from fleetcap.core.vocabulary import LOCAL_ACCOUNT
from fleetcap.v1 import captures_pb2

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
_TOKEN_PREFIX = "after:"


def _page_token(last_name: str) -> str:
    """Opaque to clients: the last name of the page. (A made-up token only moves where a
    listing starts; it reaches nothing the caller may not list.)"""
    return base64.urlsafe_b64encode((_TOKEN_PREFIX + last_name).encode()).decode().rstrip("=")


def _page_after(token: str) -> str:
    if not token:
        return ""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        text = ""
    name = text.removeprefix(_TOKEN_PREFIX)
    if not text.startswith(_TOKEN_PREFIX) or not limits.CAPTURE_NAME_RE.match(name) or len(token) > 200:
        raise InvalidArgument("page_token", "is not a token this service issued (pass next_page_token as it came)")
    return name


class Queries:
    """What clients read; nothing here writes."""

    def __init__(self, store: Store, sinks: Mapping[str, Sink]):
        self.store = store
        self.sinks = sinks
        self.captures = Captures(store)

    async def get(self, name: str) -> captures_pb2.PacketCaptureResult:
        return (await self.captures.record(name)).resource

    async def list(self, page_size: int = 0, page_token: str = "") -> tuple[list[captures_pb2.PacketCaptureResult], str]:
        """Captures in name order, a page at a time: (captures, the next page's token or "").
        page_size 0 without a token is every capture at once (the API before paging)."""
        if not 0 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument("page_size", f"must be from 1 to {MAX_PAGE_SIZE} (0: every capture at once)")
        after = _page_after(page_token)
        if page_size == 0 and not after:
            return [c.resource for c in await self.store.list_captures()], ""
        records, more = await self.store.list_captures_page(after, page_size or DEFAULT_PAGE_SIZE)
        return [c.resource for c in records], _page_token(records[-1].resource.name) if more and records else ""

    async def get_status(self, name: str) -> captures_pb2.PacketCaptureQueryStatusResult:
        record = await self.captures.record(name)
        return st.aggregate(record, await self.store.get_instances(name))

    async def watch_status(self, name: str) -> AsyncIterator[captures_pb2.PacketCaptureQueryStatusResult]:
        """Yields the status now and on every change, until every instance has settled."""
        await self.captures.record(name)  # NotFound before anything is watched
        changed = asyncio.Event()
        ready = [asyncio.Event(), asyncio.Event()]

        async def follow(prefix: str, established: asyncio.Event) -> None:
            async for event in self.store.watch(prefix):
                if event.kind == WatchKind.READY:
                    established.set()
                else:
                    changed.set()

        watchers = [
            asyncio.ensure_future(follow(keys.capture(name), ready[0])),
            asyncio.ensure_future(follow(keys.instances_of(name), ready[1])),
        ]
        try:
            # Read only once both watches exist: no change can fall between the read and them.
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), timeout=10)
            last = None
            while True:
                changed.clear()
                record = await self.store.get_capture(name)
                if record is None:
                    return
                instances = await self.store.get_instances(name)
                current = st.aggregate(record, instances)
                if current != last:
                    yield current
                    last = current
                upload = bool(record.resource.properties.storage_location.storage_id)
                if instances and all(st.uploads_settled(i.status, upload) for i in instances):
                    return
                try:
                    await asyncio.wait_for(changed.wait(), timeout=5.0)
                except TimeoutError:
                    pass  # re-read anyway: a watch may have been interrupted
        finally:
            for w in watchers:
                w.cancel()

    async def list_agents(self) -> builtins.list[captures_pb2.AgentInfo]:
        agents = await self.store.agents.list()
        return [
            captures_pb2.AgentInfo(
                id=resource_id(a.identity),
                hostname=a.hostname,
                interface=a.interface,
                addresses=a.addresses,
                connected_time=a.connected_time,
            )
            for _, a in sorted(agents.items())
        ]

    def list_storage_accounts(self) -> builtins.list[captures_pb2.StorageAccountInfo]:
        return [
            captures_pb2.StorageAccountInfo(name=name, kind=sink.kind, endpoint=sink.endpoint())
            for name, sink in sorted(self.sinks.items(), key=lambda kv: (kv[0] != LOCAL_ACCOUNT, kv[0]))
        ]
