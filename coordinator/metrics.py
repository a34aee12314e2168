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
    fleetcap_api_request_duration_seconds{method}  latency of unary public API calls
    fleetcap_auth_decisions_total{method,decision} authorisation decisions
    fleetcap_fanout_duration_seconds               create to an instance's first report, per instance
    fleetcap_storage_failures_total{account}       upload streams the storage account failed
    fleetcap_upload_duration_seconds{account}      an upload stream, from its opening to the file's verified commit
    fleetcap_storage_commit_duration_seconds{account}  the final commit (SHA-256 check, rename or block list)
plus process_*, python_* and fleetcap_build_info (fleetcap.core.metrics).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

from fleetcap.coordinator import status as st
from fleetcap.core.metrics import FAST_BUCKETS, SLOW_BUCKETS, new_registry
from fleetcap.core.vocabulary import Status

if TYPE_CHECKING:
    from fleetcap.coordinator.state.store import Store

REFRESH_S = 5.0
STATUSES = tuple(Status)


class CoordinatorMetrics:
    def __init__(self) -> None:
        self.registry = r = new_registry("coordinator")
        self.api_requests = Counter(
            "fleetcap_api_requests", "Public API calls by method and gRPC status code", ("method", "code"), registry=r
        )
        self.api_errors = Counter("fleetcap_api_errors", "Public API calls that failed, by method and code", ("method", "code"), registry=r)
        self.api_latency = Histogram(
            "fleetcap_api_request_duration_seconds",
            "Latency of unary public API calls, by method",
            ("method",),
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.storage_written = Counter(
            "fleetcap_storage_written_bytes", "Capture bytes this replica made durable, by storage account", ("account",), registry=r
        )
        self.storage_failures = Counter(
            "fleetcap_storage_failures",
            "Upload streams the storage account failed (the agent retries, then reports StorageFailed), by storage account",
            ("account",),
            registry=r,
        )
        self.upload_duration = Histogram(
            "fleetcap_upload_duration_seconds",
            "An upload stream through this replica, from its opening to the file's verified commit, by storage account",
            ("account",),
            buckets=SLOW_BUCKETS,
            registry=r,
        )
        self.commit_duration = Histogram(
            "fleetcap_storage_commit_duration_seconds",
            "The final commit of an uploaded file (SHA-256 check, then rename or block list), by storage account",
            ("account",),
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.fanout = Histogram(
            "fleetcap_fanout_duration_seconds",
            "From a capture's creation to an instance's first report (Running or a "
            "failure), observed per instance by the replica the agent reports to",
            buckets=SLOW_BUCKETS,
            registry=r,
        )
        self.captures = Gauge("fleetcap_captures", "Packet captures by aggregate status", ("status",), registry=r)
        self.instances = Gauge("fleetcap_capture_instances", "Target instances of captures by status", ("status",), registry=r)
        self.agents = Gauge("fleetcap_agents_connected", "Agents registered now", registry=r)
        self.stored = Gauge("fleetcap_stored_bytes", "Bytes of capture files durably stored", registry=r)
        self.lag_bytes = Gauge("fleetcap_upload_lag_bytes", "Bytes captured on instances and not yet stored", registry=r)
        self.lag_files = Gauge("fleetcap_upload_lag_files", "Capture files with bytes not yet stored", registry=r)
        self.auth_decisions = Counter(
            "fleetcap_auth_decisions",
            "Authorisation decisions by method and outcome (allowed, denied, unauthenticated, rate-limited)",
            ("method", "decision"),
            registry=r,
        )
        self._refreshed = 0.0
        self._lock = asyncio.Lock()

    def embedded_etcd(self) -> tuple[Gauge, Counter]:
        """The embedded etcd's series, registered only by a coordinator that runs one."""
        up = Gauge(
            "fleetcap_embedded_etcd_up", "1 while the embedded etcd runs, 0 while it is down or being restarted", registry=self.registry
        )
        restarts = Counter("fleetcap_embedded_etcd_restarts", "Restarts of the embedded etcd after it exited", registry=self.registry)
        up.set(1)
        return up, restarts

    def storage_accounts(self, names: Iterable[str]) -> None:
        """Starts each account's series at zero, so that rate() and increase() see the first
        failure or byte, and the dashboards list every account from the start."""
        for name in names:
            for metric in (self.storage_written, self.storage_failures, self.upload_duration, self.commit_duration):
                metric.labels(name)

    def auth_decision(self, method: str, decision: str) -> None:
        self.auth_decisions.labels(method, decision).inc()

    def api_call(self, method: str, code: str, seconds: float | None = None) -> None:
        self.api_requests.labels(method, code).inc()
        if code != "OK":
            self.api_errors.labels(method, code).inc()
        if seconds is not None:
            self.api_latency.labels(method).observe(seconds)

    async def refresh(self, store: Store) -> None:
        """Recomputes the deployment gauges from the store, unless done in the last REFRESH_S."""
        async with self._lock:
            if time.monotonic() - self._refreshed < REFRESH_S:
                return
            captures: dict[str, int] = dict.fromkeys(STATUSES, 0)
            instances: dict[str, int] = dict.fromkeys(STATUSES, 0)
            stored = lag = lag_files = 0
            for record in await store.list_captures():
                status = st.aggregate(record, await store.get_instances(record.resource.name))
                captures[status.packet_capture_status or Status.UNKNOWN] = (
                    captures.get(status.packet_capture_status or Status.UNKNOWN, 0) + 1
                )
                for inst in status.instances:
                    instances[inst.packet_capture_status or Status.UNKNOWN] = (
                        instances.get(inst.packet_capture_status or Status.UNKNOWN, 0) + 1
                    )
                    for f in inst.files:
                        stored += f.uploaded_bytes
                        if f.storage_path and not f.upload_complete and f.size_bytes > f.uploaded_bytes:
                            lag += f.size_bytes - f.uploaded_bytes
                            lag_files += 1
            for s, n in captures.items():
                self.captures.labels(s).set(n)
            for s, n in instances.items():
                self.instances.labels(s).set(n)
            self.agents.set(len(await store.agents.list()))
            self.stored.set(stored)
            self.lag_bytes.set(lag)
            self.lag_files.set(lag_files)
            self._refreshed = time.monotonic()
