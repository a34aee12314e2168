"""The agent's journal: what it knows of each capture survives a restart.

One JSON file per capture under the capture root's .fleetcap directory, rewritten atomically
on every change. After a restart, finished captures come back as they were; a capture that
was running when the agent died is cut back to whole records and reported as interrupted
(AgentStopped), and its files are then uploaded if they were meant to be.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

from google.protobuf import json_format

from fleetcap.core.naming import utc_now
from fleetcap.core.vocabulary import CaptureError, Status, StopReason, is_terminal
from fleetcap.node_agent.active_capture import ActiveCapture
from fleetcap.node_agent.capture.capture_root import CaptureRoot
from fleetcap.node_agent.capture.files import CaptureFile
from fleetcap.node_agent.capture.pcap_format import PCAP_FILE_HEADER, PCAP_RECORD_HEADER
from fleetcap.node_agent.capture.session import CaptureSession, CaptureSpec
from fleetcap.node_agent.capture.standby import remove_segments
from fleetcap.v1 import captures_pb2, fleet_pb2

log = logging.getLogger(__name__)

JOURNAL_DIR = ".fleetcap"


def repair_pcap(root: CaptureRoot, path: str) -> tuple[int, int]:
    """Cuts a pcap file left by a killed capture back to its last whole record, so every
    reader opens it; returns (packets, size)."""
    with os.fdopen(root.open_read(path, write=True), "r+b") as f:
        data = f.read()
        off, packets = PCAP_FILE_HEADER, 0
        if len(data) < PCAP_FILE_HEADER:
            return 0, len(data)
        while off + PCAP_RECORD_HEADER <= len(data):
            caplen = int.from_bytes(data[off + 8 : off + 12], "little")
            if off + PCAP_RECORD_HEADER + caplen > len(data):
                break
            off += PCAP_RECORD_HEADER + caplen
            packets += 1
        if off != len(data):
            f.truncate(off)
            log.warning("%s ended in a partial record: cut from %d to %d bytes", path, len(data), off)
        return packets, off


class Journal:
    def __init__(self, root: CaptureRoot):
        self.root = root
        self.directory = os.path.join(root.root, JOURNAL_DIR)

    def write(self, cap: ActiveCapture) -> None:
        """Records what the agent knows of a capture, atomically (write and rename)."""
        files = [dataclasses.asdict(f) for f in cap.session.files] if cap.session else []
        entry = {
            "start": json_format.MessageToDict(cap.start),
            "path": cap.path,
            "files": files,
            "removed": sorted(cap.removed),
            "status": json_format.MessageToDict(cap.progress().status),
        }
        self.root.replace_with(os.path.join(self.directory, f"{cap.start.capture_name}.json"), json.dumps(entry).encode())

    def recover(self, interface: str) -> dict[str, ActiveCapture]:
        """Loads the journal: finished captures as they were; captures the agent was running
        when it died are cut back to whole records and reported as interrupted (AgentStopped).
        Their files are then uploaded if they were meant to be."""
        captures: dict[str, ActiveCapture] = {}
        if not os.path.isdir(self.directory):
            return captures
        for name in sorted(os.listdir(self.directory)):
            if not name.endswith(".json"):
                continue
            try:
                with os.fdopen(self.root.open_read(os.path.join(self.directory, name)), "rb") as f:
                    entry = json.load(f)
                for f_entry in entry["files"]:
                    self.root.parts(f_entry["path"])  # OutsideRoot for an entry edited to point elsewhere
                start = json_format.ParseDict(entry["start"], fleet_pb2.StartCapture())
                status = json_format.ParseDict(entry["status"], captures_pb2.InstanceStatus())
            except (OSError, ValueError, KeyError, TypeError, json_format.ParseError) as e:
                log.error("journal %s unreadable (%s); skipped", name, e)
                continue
            cap = ActiveCapture(start, entry["path"])
            if status.clock_uncertainty_us:  # the offset it was merged with stays the same
                cap.clock_at_end = (status.clock_offset_us, status.clock_uncertainty_us)
            cap.removed = set(entry.get("removed", []))
            session = CaptureSession(
                CaptureSpec(
                    name=start.capture_name,
                    capture_id=start.capture_id,
                    interface=interface,
                    root=self.root.root,
                    path=entry["path"],
                    expression="",
                )
            )
            session.files = [CaptureFile(**f) for f in entry["files"] if os.path.exists(f["path"]) or f["index"] in cap.removed]
            c = session.counters
            c.start_time, c.stop_time = status.capture_start_time, status.capture_stop_time
            c.kernel_drops, c.interface_drops = status.kernel_drops, status.interface_drops
            c.received = status.packets_received
            if is_terminal(status.packet_capture_status):
                c.status, c.stop_reason = status.packet_capture_status, status.stop_reason
                c.errors, c.error_message = list(status.packet_capture_error), status.error_message
                c.packets, c.bytes = status.packets_captured, status.bytes_captured
            else:
                if start.standby_s and remove_segments(self.root, entry["path"]):
                    log.warning("capture %s: the flight recorder's ring was lost with the agent", start.capture_name)
                packets = 0
                for cf in session.files:
                    if cf.index not in cap.removed and os.path.exists(cf.path):
                        n, cf.size = repair_pcap(self.root, cf.path)
                        packets += n
                    cf.closed, cf.sha256 = True, ""
                c.status, c.stop_reason, c.errors = Status.ERROR, StopReason.AGENT_STOPPED, [CaptureError.AGENT_STOPPED]
                c.error_message = "the agent stopped during the capture; its files hold what was captured until then"
                c.packets, c.bytes = packets, sum(f.size for f in session.files)
                c.stop_time = utc_now()
                log.warning("capture %s was interrupted by an agent restart: %d packets kept", start.capture_name, packets)
            session.done.set()
            cap.session = session
            captures[start.capture_name] = cap
        return captures
