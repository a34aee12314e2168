"""The coordinator's Prometheus metrics (`--metrics-listen HOST:PORT`, path /metrics).

Counters are this replica's; the gauges describe the whole deployment (read from the store at
scrape time, at most once per REFRESH_S), so any replica can be scraped.

    fleetcap_captures{status}                      captures by aggregate status
    fleetcap_capture_instances{status}             target instances by status
    fleetcap_agents_connected                      agents registered now
    fleetcap_stored_bytes                          bytes of capture files durably stored, all files
    fleetcap_upload_lag_bytes                      bytes captured on instances and not yet stored
    fleetcap_upload_lag_files                      files with bytes not yet stored
    fleetcap_storage_written_bytes_total{account}  bytes this replica made durable, by storage account
    fleetcap_api_requests_total{method,code}       public API calls by gRPC status code
    fleetcap_api_errors_total{method,code}         the calls among them that failed
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from fleetcap.coordinator import status as st
from fleetcap.core.metrics import Registry
from fleetcap.core.vocabulary import Status

if TYPE_CHECKING:
    from fleetcap.coordinator.service import CaptureService

REFRESH_S = 5.0
STATUSES = tuple(Status)


class CoordinatorMetrics:
    def __init__(self) -> None:
        self.registry = Registry()
        r = self.registry
        self.api_requests = r.counter("fleetcap_api_requests_total", "Public API calls by method and gRPC status code",
                                      ("method", "code"))
        self.api_errors = r.counter("fleetcap_api_errors_total", "Public API calls that failed, by method and code",
                                    ("method", "code"))
        self.storage_written = r.counter("fleetcap_storage_written_bytes_total",
                                         "Capture bytes this replica made durable, by storage account", ("account",))
        self.captures = r.gauge("fleetcap_captures", "Packet captures by aggregate status", ("status",))
        self.instances = r.gauge("fleetcap_capture_instances", "Target instances of captures by status", ("status",))
        self.agents = r.gauge("fleetcap_agents_connected", "Agents registered now")
        self.stored = r.gauge("fleetcap_stored_bytes", "Bytes of capture files durably stored")
        self.lag_bytes = r.gauge("fleetcap_upload_lag_bytes", "Bytes captured on instances and not yet stored")
        self.lag_files = r.gauge("fleetcap_upload_lag_files", "Capture files with bytes not yet stored")
        self.auth_decisions = r.counter("fleetcap_auth_decisions_total",
                                        "Authorisation decisions by method and outcome (allowed, denied, "
                                        "unauthenticated, rate-limited)", ("method", "decision"))
        self._refreshed = 0.0
        self._lock = asyncio.Lock()

    def auth_decision(self, method: str, decision: str) -> None:
        self.auth_decisions.inc(method, decision)

    def api_call(self, method: str, code: str) -> None:
        self.api_requests.inc(method, code)
        if code != "OK":
            self.api_errors.inc(method, code)

    async def refresh(self, service: CaptureService) -> None:
        """Recomputes the deployment gauges from the store, unless done in the last REFRESH_S."""
        async with self._lock:
            if time.monotonic() - self._refreshed < REFRESH_S:
                return
            captures: dict[str, int] = {s: 0 for s in STATUSES}
            instances: dict[str, int] = {s: 0 for s in STATUSES}
            stored = lag = lag_files = 0
            for record in await service.store.list_captures():
                status = st.aggregate(record, await service.store.get_instances(record.resource.name))
                captures[status.packet_capture_status or Status.UNKNOWN] = \
                    captures.get(status.packet_capture_status or Status.UNKNOWN, 0) + 1
                for inst in status.instances:
                    instances[inst.packet_capture_status or Status.UNKNOWN] = \
                        instances.get(inst.packet_capture_status or Status.UNKNOWN, 0) + 1
                    for f in inst.files:
                        stored += f.uploaded_bytes
                        if f.storage_path and not f.upload_complete and f.size_bytes > f.uploaded_bytes:
                            lag += f.size_bytes - f.uploaded_bytes
                            lag_files += 1
            for s, n in captures.items():
                self.captures.set(s, value=n)
            for s, n in instances.items():
                self.instances.set(s, value=n)
            self.agents.set(value=len(await service.store.list_agents()))
            self.stored.set(value=stored)
            self.lag_bytes.set(value=lag)
            self.lag_files.set(value=lag_files)
            self._refreshed = time.monotonic()
