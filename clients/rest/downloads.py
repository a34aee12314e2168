"""Reading captures through the gateway: one stored pcap (Range honoured), every instance merged
into one pcapng, and the status as server-sent events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from fleetcap.clients import pcapng, sdk
from fleetcap.clients.rest import arm
from fleetcap.clients.rest.gateway import Gateway, need_method
from fleetcap.core.naming import instance_name

log = logging.getLogger(__name__)


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


KEEPALIVE_S = 15.0  # a comment on the event stream when nothing changed, so proxies keep it open


EVENT_INTERVAL_S = 1.0  # at most one status event a second: a 1,000-instance status is ~300 KB of JSON


def attachment(*parts: str) -> str:
    """A Content-Disposition whose file name holds only [A-Za-z0-9._-]: no quote, no path, no
    header injection, whatever the capture, instance or file is called."""
    name = "_".join(_UNSAFE_FILENAME.sub("-", p).strip(".-") for p in parts if p) or "capture"
    return f'attachment; filename="{name[:200]}"'


async def file_endpoint(gateway: Gateway, request: Request) -> Response:
    """One stored file. Honours a single `Range: bytes=a-b` (206, or 416 when it lies beyond the
    file), with the file's SHA-256 as its ETag and If-Range, so an interrupted download resumes."""
    need_method(request, "GET", "HEAD")
    name = request.path_params["name"]
    instance = request.query_params.get("instance", "")
    if not instance:
        raise arm.HttpError(400, "InvalidParameter", "instance: required, an instance id or VM name")
    c = gateway.caller(request)
    wanted = request.query_params.get("file", "")
    status = await c.get_status(name=name)
    found = [
        (inst, f)
        for inst in status.instances
        for f in inst.files
        if instance in (inst.instance_id, inst.id, instance_name(inst.id))
        and sdk.downloadable(inst, f)
        and (not wanted or f.file_path == wanted)
    ]
    if not found:
        raise arm.HttpError(
            404, "ResourceNotFound", f"packet capture '{name}' has no stored file{' ' + wanted if wanted else ''} for instance '{instance}'"
        )
    inst, f = found[0]
    size = f.size_bytes
    etag = f'"{f.stored_sha256 or f.sha256}"'
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Content-Disposition": attachment(name, instance_name(inst.id), os.path.basename(f.file_path)),
    }
    start, end, code = 0, size - 1, 200
    spec = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if spec and (if_range is None or if_range == etag):
        m = _RANGE.match(spec.strip())
        if m and (m.group(1) or m.group(2)):
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:  # the last N bytes
                start = max(0, size - int(m.group(2)))
            if start >= size or start > end:
                raise arm.HttpError(
                    416, "InvalidRange", f"Range: {spec} lies beyond the file's {size} bytes", {"Content-Range": f"bytes */{size}"}
                )
            code = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)
    if request.method == "HEAD":
        return Response(status_code=code, headers=headers, media_type="application/vnd.tcpdump.pcap")
    chunks = c.read_file(name=name, instance_id=inst.instance_id, file_path=f.file_path, offset=start)
    first = await anext(chunks, b"")  # a NOT_FOUND surfaces here, before any header is sent
    return StreamingResponse(_limit(first, chunks, end - start + 1, name), code, headers=headers, media_type="application/vnd.tcpdump.pcap")


async def _limit(first: bytes, rest: AsyncIterator[bytes], length: int, what: str) -> AsyncIterator[bytes]:
    """Exactly `length` bytes of first + rest. A stream that ends early ends the response early,
    which the client sees as a short body (Content-Length says how much was promised)."""
    left = length
    try:
        data = first
        while left > 0:
            if data:
                piece = data[:left]
                left -= len(piece)
                yield piece
            if left > 0:
                data = await anext(rest)
    except StopAsyncIteration:
        log.warning("download of %s ended %d bytes short", what, left)
    except sdk.FleetcapError as e:
        log.warning("download of %s stopped: %s", what, e)
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


async def merged_endpoint(gateway: Gateway, request: Request) -> Response:
    """Every instance's stored files in one pcapng, merged while it streams: nothing is staged
    on disk, and memory is one chunk and one record per instance."""
    need_method(request, "GET")
    name = request.path_params["name"]
    c = gateway.caller(request)
    status = await c.get_status(name=name)
    sources, offline = [], []
    connected = {a.id.lower() for a in await c.list_agents()}
    for inst in status.instances:
        files = [f.file_path for f in inst.files if sdk.downloadable(inst, f)]
        if files and any(not f.upload_complete for f in inst.files) and inst.id.lower() not in connected:
            offline.append(inst.instance_id)  # only the instance holds them, and its agent is away
            continue
        if files:
            sources.append(
                pcapng.StreamSource(
                    name=instance_name(inst.id),
                    description=inst.id,
                    files=[_opener(c, name, inst.instance_id, path) for path in files],
                    stats=sdk.interface_stats(inst),
                    clock=sdk.clock_correction(inst),
                )
            )
    if not sources:
        raise arm.HttpError(
            404,
            "ResourceNotFound",
            f"packet capture '{name}' has no files to merge yet" + (f" (instances offline: {', '.join(offline)})" if offline else ""),
        )
    stream = pcapng.merge_stream(sources)
    first = await anext(stream)  # every instance's first read has begun: errors surface before the headers
    headers = {"Content-Disposition": attachment(name + ".pcapng")}
    if offline:  # merged without them; the header names them
        headers["Fleetcap-Missing-Instances"] = ",".join(offline)
    return StreamingResponse(_chain(first, stream, name), 200, media_type="application/x-pcapng", headers=headers)


def _opener(c: sdk.AsyncClient, name: str, instance_id: str, path: str) -> Callable[[], AsyncIterator[bytes]]:
    return lambda: c.read_file(name=name, instance_id=instance_id, file_path=path)


async def _chain(first: bytes, rest: AsyncIterator[bytes], what: str) -> AsyncIterator[bytes]:
    yield first
    try:
        async for data in rest:
            yield data
    except sdk.FleetcapError as e:  # the headers are out: end the response without its last chunk
        log.warning("merged download of %s stopped: %s", what, e)


async def events_endpoint(gateway: Gateway, request: Request) -> Response:
    """The capture's status as server-sent events: one `data:` line of JSON at once and on every
    change, until the capture has finished; a comment every KEEPALIVE_S seconds in between. The
    portal reads it with fetch(), so the credential stays in a header."""
    need_method(request, "GET")
    name = request.path_params["name"]
    # The first status is a request like any other; only the watch rides the streams' connection.
    first = await gateway.caller(request).get_status(name=name)  # NOT_FOUND, PERMISSION_DENIED before the headers
    c = gateway.caller(request, stream=True)
    return StreamingResponse(_events(c, name, first), 200, media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})


async def _events(c: sdk.AsyncClient, name: str, first: Any) -> AsyncIterator[bytes]:
    """The coordinator's watch is read continuously by a task of its own, which keeps only the
    newest status; the stream sends that at most every EVENT_INTERVAL_S. So a slow reader never
    holds the watch back, and a status is never older than the interval (each carries its
    instances' countersTime, from which the portal takes rates)."""
    loop = asyncio.get_running_loop()
    yield b"data: " + json.dumps(arm.status(first)).encode() + b"\n\n"
    newest: list[Any] = []  # the newest status not yet sent (at most one)
    ended: list[bytes] = []  # the stream's last event, once the watch has ended
    changed = asyncio.Event()

    async def read() -> None:
        try:
            async for status in c.watch(name=name):
                newest[:] = [status]
                changed.set()
            ended.append(b"event: end\ndata: {}\n\n")
        except sdk.FleetcapError as e:
            ended.append(b"event: error\ndata: " + json.dumps(arm.from_sdk_error(e).body()).encode() + b"\n\n")
        changed.set()

    reader = asyncio.ensure_future(read())
    sent = loop.time()
    try:
        while True:
            try:
                await asyncio.wait_for(changed.wait(), timeout=KEEPALIVE_S)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            await asyncio.sleep(max(0.0, sent + EVENT_INTERVAL_S - loop.time()))
            changed.clear()
            if newest:
                status = newest.pop()
                yield b"data: " + json.dumps(arm.status(status)).encode() + b"\n\n"
                sent = loop.time()
            if ended and not newest:
                yield ended[0]
                return
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
