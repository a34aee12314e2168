"""The daemons' registry: process and Python collectors, build info, and the exposition a
scraper negotiates (the text format 0.0.4, or OpenMetrics)."""

from __future__ import annotations

import asyncio

from prometheus_client import Counter

from fleetcap.core.metrics import exposition, new_registry, serve_http, version
from tests.metrics_doc import samples


def test_registry_has_process_python_and_build_info():
    r = new_registry("agent")
    body, ctype = exposition(r, "")
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    got = samples(body.decode())
    names = {name for name, _ in got}
    assert {
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "python_info",
        "python_gc_collections_total",
    } <= names
    [(labels, value)] = [(dict(lbl), v) for (n, lbl), v in got.items() if n == "fleetcap_build_info"]
    assert value == 1.0
    assert labels["component"] == "agent"
    assert labels["version"] == version()
    assert not any(n.endswith("_created") for n in names)  # no *_created series


def test_openmetrics_when_the_scraper_asks_for_it():
    r = new_registry("coordinator")
    Counter("fleetcap_x", "X things", ("method",), registry=r).labels('NOT"FOUND\n').inc(3)
    body, ctype = exposition(r, "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
    assert ctype.startswith("application/openmetrics-text; version=1.0.0")
    text = body.decode()
    assert text.endswith("# EOF\n")
    assert "# TYPE fleetcap_x counter\n" in text
    assert 'fleetcap_x_total{method="NOT\\"FOUND\\n"} 3.0\n' in text


def test_the_endpoint_serves_metrics_and_nothing_else():
    async def run() -> tuple[bytes, bytes, bytes]:
        r = new_registry("gateway")
        server = await serve_http(r, "127.0.0.1:0")
        port = server.sockets[0].getsockname()[1]

        async def get(path: str, accept: str = "") -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n\r\n".encode())
            data = await reader.read()
            writer.close()
            return data

        try:
            return await get("/metrics"), await get("/metrics", "application/openmetrics-text"), await get("/etc")
        finally:
            server.close()

    text, om, other = asyncio.run(run())
    assert text.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n")
    assert b"\r\n\r\n# HELP " in text
    assert b"fleetcap_build_info{" in text
    assert om.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0")
    assert om.endswith(b"# EOF\n")
    assert other.startswith(b"HTTP/1.1 404 Not Found\r\n")
