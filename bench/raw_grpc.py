"""The raw baseline for the data-path benchmark: a client stream of 1 MiB byte chunks over
gRPC on loopback, with no protobuf message, no disk and no checks; the server discards them.

    python -m bench.raw_grpc server HOST:PORT [FILE]   # with FILE: written and fsynced every 16 MiB
    python -m bench.raw_grpc client HOST:PORT FILE      # prints the seconds the stream took
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import grpc

from fleetcap.core import transport

METHOD = "/fleetcap.bench.Raw/Upload"
CHUNK = 1 << 20


async def serve(address: str, path: str | None) -> None:
    async def upload(request_iterator, context):
        total, synced = 0, 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC) if path else None
        async for chunk in request_iterator:
            if fd is not None:
                os.write(fd, chunk)
            total += len(chunk)
            if fd is not None and total - synced >= 16 << 20:
                os.fsync(fd)
                synced = total
        if fd is not None:
            os.fsync(fd)
            os.close(fd)
        return total.to_bytes(8, "big")

    server = transport.aio_server()
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("fleetcap.bench.Raw", {"Upload": grpc.stream_unary_rpc_method_handler(upload)})]
    )
    transport.add_listen(server, address)
    await server.start()
    await server.wait_for_termination()


async def client(address: str, path: str) -> float:
    channel = transport.aio_channel(address, dedicated=True)
    call = channel.stream_unary(METHOD)

    async def chunks():
        with open(path, "rb") as f:
            while data := f.read(CHUNK):
                yield data

    t0 = time.perf_counter()
    await call(chunks())
    elapsed = time.perf_counter() - t0
    await channel.close()
    return elapsed


if __name__ == "__main__":
    if sys.argv[1] == "server":
        asyncio.run(serve(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
    else:
        print(asyncio.run(client(sys.argv[2], sys.argv[3])))
