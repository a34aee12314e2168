"""Prometheus metrics without a dependency: counters, gauges and scrape-time collectors,
rendered in the text exposition format 0.0.4, and a minimal HTTP endpoint for asyncio daemons.

Names follow Prometheus conventions: a `fleetcap_` prefix, base units (`_bytes`, `_seconds`),
`_total` on counters.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable

log = logging.getLogger(__name__)

Sample = tuple[tuple[str, ...], float]  # label values, value
Family = tuple[str, str, str, tuple[str, ...], Iterable[Sample]]  # name, type, help, label names, samples
Collector = Callable[[], Iterable[Family]]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _lines(name: str, kind: str, help_text: str, labels: tuple[str, ...], samples: Iterable[Sample]) -> list[str]:
    out = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for values, value in samples:
        label = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(labels, values))
        out.append(f"{name}{{{label}}} {_format(value)}" if label else f"{name} {_format(value)}")
    return out


class _Metric:
    def __init__(self, registry: Registry, name: str, help_text: str, labels: tuple[str, ...], kind: str):
        self.name, self.help, self.labels, self.kind = name, help_text, labels, kind
        self._lock = registry._lock
        self._values: dict[tuple[str, ...], float] = {} if labels else {(): 0.0}

    def samples(self) -> list[Sample]:
        return sorted(self._values.items())


class Counter(_Metric):
    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        with self._lock:
            self._values[label_values] = self._values.get(label_values, 0.0) + amount


class Gauge(_Metric):
    def set(self, *label_values: str, value: float) -> None:
        with self._lock:
            self._values[label_values] = value


class Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: list[_Metric] = []
        self._collectors: list[Collector] = []

    def counter(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> Counter:
        m = Counter(self, name, help_text, labels, "counter")
        self._metrics.append(m)
        return m

    def gauge(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> Gauge:
        m = Gauge(self, name, help_text, labels, "gauge")
        self._metrics.append(m)
        return m

    def collector(self, fn: Collector) -> None:
        """fn() yields (name, type, help, label names, samples), computed at each scrape."""
        self._collectors.append(fn)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for m in self._metrics:
                lines += _lines(m.name, m.kind, m.help, m.labels, m.samples())
        for fn in self._collectors:
            for name, kind, help_text, labels, samples in fn():
                lines += _lines(name, kind, help_text, labels, samples)
        return "\n".join(lines) + "\n"


async def serve_http(registry: Registry, listen: str,
                     before_scrape: Callable[[], Awaitable[None]] | None = None) -> asyncio.Server:
    """GET /metrics on `listen` (HOST:PORT; an empty host is 127.0.0.1); anything else is 404.
    before_scrape, if given, is awaited first (to refresh gauges that need the event loop)."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, path, *_ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            if method == "GET" and path.split("?")[0] == "/metrics":
                if before_scrape is not None:
                    await before_scrape()
                body, status = registry.render().encode(), "200 OK"
                ctype = "text/plain; version=0.0.4; charset=utf-8"
            else:
                body, status, ctype = b"not found; try /metrics\n", "404 Not Found", "text/plain"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         f"Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        except Exception:
            log.exception("metrics request failed")
        finally:
            writer.close()
    host, _, port = listen.rpartition(":")
    server = await asyncio.start_server(handle, host.strip("[]") or "127.0.0.1", int(port))
    log.info("metrics on http://%s:%d/metrics", *server.sockets[0].getsockname()[:2])
    return server
