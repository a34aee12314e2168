"""The agent's Prometheus metrics, read from its captures at scrape time, next to the process
collectors (the agent's own CPU and memory on every VM) that fleetcap.core.metrics adds."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fleetcap.core.metrics import new_registry
from fleetcap.core.vocabulary import Status
from fleetcap.node_agent.runner import CaptureRunner

_COUNTERS = (
    ("fleetcap_agent_packets_captured", "Packets written to capture files", "packets_captured"),
    ("fleetcap_agent_captured_bytes", "Bytes written to capture files, pcap headers included", "bytes_captured"),
    ("fleetcap_agent_kernel_drops", "Packets the kernel dropped for lack of ring space", "kernel_drops"),
    ("fleetcap_agent_interface_drops", "Packets the interface dropped", "interface_drops"),
)


class CaptureCollector(Collector):
    """Per-capture series carry the capture's name; they live as long as the agent knows it."""

    def __init__(self, runner: CaptureRunner):
        self.runner = runner

    def describe(self) -> list[Metric]:
        return []  # the families are known only at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        rows = [(name, cap.progress().status, cap) for name, cap in sorted(self.runner.captures.items())]
        running = sum(1 for _, s, _ in rows if s.packet_capture_status == Status.RUNNING)
        yield GaugeMetricFamily("fleetcap_agent_active_captures", "Captures running on this agent now", value=running)
        for metric, help_text, field in _COUNTERS:
            family = CounterMetricFamily(metric, help_text, labels=["capture"])
            for name, status, _ in rows:
                family.add_metric([name], getattr(status, field))
            yield family
        pending = GaugeMetricFamily(
            "fleetcap_agent_upload_pending_bytes", "Captured bytes not yet acknowledged as stored", labels=["capture"]
        )
        for name, status, cap in rows:
            if cap.start.upload:
                pending.add_metric([name], sum(max(0, f.size_bytes - f.uploaded_bytes) for f in status.files if not f.upload_complete))
        yield pending


def agent_registry(runner: CaptureRunner) -> CollectorRegistry:
    registry = new_registry("agent")
    registry.register(CaptureCollector(runner))
    return registry
