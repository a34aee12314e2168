"""Prometheus metrics on prometheus_client: one registry per daemon, with the process and Python
collectors and `fleetcap_build_info`, served in the text format or in OpenMetrics (by the
scraper's Accept header) from a small asyncio endpoint.

Names follow Prometheus conventions: a `fleetcap_` prefix, base units (`_bytes`, `_seconds`),
`_total` on counters. Each daemon owns its registry (never prometheus_client's global one), so
that several daemons in one process, as in tests, never share a series.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import platform
from collections.abc import Awaitable, Callable
from importlib import metadata

import prometheus_client
from prometheus_client import CollectorRegistry, GCCollector, Info, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)

FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Latency buckets for calls that should take milliseconds (API calls, storage commits)."""
SLOW_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
"""Buckets for things that take seconds to hours (a fan-out to a fleet, a file's upload)."""


@functools.cache
def version() -> str:
    """The installed package's version (read once)."""
    try:
        return metadata.version("fleetcap")
    except metadata.PackageNotFoundError:  # a checkout that was never installed
        return "0+unknown"


def new_registry(component: str) -> CollectorRegistry:
    """A registry with process_* (CPU, memory, file descriptors), python_info, python_gc_*, and
    fleetcap_build_info{version, component, python}."""
    # No *_created series: nothing graphs them. (The function is unannotated upstream.)
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    Info("fleetcap_build", "The fleetcap build this process runs", registry=registry).info(
        {"version": version(), "component": component, "python": platform.python_version()}
    )
    return registry


def exposition(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The registry rendered for a scraper: OpenMetrics if its Accept header asks for it, else
    the text format 0.0.4. Returns (body, content type)."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


async def serve_http(
    registry: CollectorRegistry, listen: str, before_scrape: Callable[[], Awaitable[None]] | None = None
) -> asyncio.Server:
    """GET /metrics on `listen` (HOST:PORT; an empty host is 127.0.0.1); anything else is 404.
    before_scrape, if given, is awaited first (to refresh gauges that need the event loop)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            head = request.decode("latin-1").split("\r\n")
            method, path, *_ = head[0].split(" ")
            accept = next((line.split(":", 1)[1].strip() for line in head[1:] if line.lower().startswith("accept:")), "")
            if method == "GET" and path.split("?")[0] == "/metrics":
                if before_scrape is not None:
                    await before_scrape()
                body, ctype = exposition(registry, accept)
                status = "200 OK"
            else:
                body, status, ctype = b"not found; try /metrics\n", "404 Not Found", "text/plain"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        except Exception:
            log.exception("metrics request failed")
        finally:
            writer.close()

    host, _, port = listen.rpartition(":")
    server = await asyncio.start_server(handle, host.strip("[]") or "127.0.0.1", int(port))
    log.info("metrics on http://%s:%d/metrics", *server.sockets[0].getsockname()[:2])
    return server
