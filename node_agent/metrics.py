"""The agent's Prometheus metrics, read from its captures at scrape time."""
from __future__ import annotations

from collections.abc import Iterator

from fleetcap.core.metrics import Family
from fleetcap.core.vocabulary import Status
from fleetcap.node_agent.runner import CaptureRunner


def metric_families(runner: CaptureRunner) -> Iterator[Family]:
    """A collector for fleetcap.core.metrics.Registry. Per-capture series carry the capture's name."""
    rows = [(name, cap.progress().status, cap) for name, cap in sorted(runner.captures.items())]
    running = sum(1 for _, s, _ in rows if s.packet_capture_status == Status.RUNNING)
    yield ("fleetcap_agent_active_captures", "gauge", "Captures running on this agent now", (), [((), running)])
    for metric, help_text, field in (
            ("fleetcap_agent_packets_captured_total", "Packets written to capture files", "packets_captured"),
            ("fleetcap_agent_captured_bytes_total", "Bytes written to capture files, pcap headers included",
             "bytes_captured"),
            ("fleetcap_agent_kernel_drops_total", "Packets the kernel dropped for lack of ring space",
             "kernel_drops"),
            ("fleetcap_agent_interface_drops_total", "Packets the interface dropped", "interface_drops")):
        yield metric, "counter", help_text, ("capture",), [((n,), getattr(s, field)) for n, s, _ in rows]
    yield ("fleetcap_agent_upload_pending_bytes", "gauge", "Captured bytes not yet acknowledged as stored",
           ("capture",), [((n,), sum(max(0, f.size_bytes - f.uploaded_bytes) for f in s.files
                                     if not f.upload_complete)) for n, s, cap in rows if cap.start.upload])
