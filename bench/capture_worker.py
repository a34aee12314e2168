"""The agent's capture engine (node_agent.capture.session) alone in a process, for the capture
benchmark: captures until SIGTERM or a limit, then prints its counters as JSON."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from fleetcap.core.vocabulary import Status, StopReason
from fleetcap.node_agent.capture.session import CaptureSession, CaptureSpec


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--interface", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--filter", default="")
    p.add_argument("--snaplen", type=int, default=128)
    p.add_argument("--total-bytes", type=int, default=0)
    p.add_argument("--buffer-mb", type=int, default=32)
    a = p.parse_args()
    session = CaptureSession(
        CaptureSpec(
            name="bench",
            capture_id="bench",
            interface=a.interface,
            root=os.path.dirname(os.path.abspath(a.path)),
            path=a.path,
            expression=a.filter,
            snaplen=a.snaplen,
            total_bytes=a.total_bytes,
            buffer_size=a.buffer_mb << 20,
        )
    )
    signal.signal(signal.SIGTERM, lambda *_: session.stop(StopReason.STOPPED_BY_USER))
    session.start()
    while session.counters.status == Status.NOT_STARTED and not session.done.is_set():
        session.join(0.01)
    print("ready", flush=True)
    while not session.join(0.2):
        pass
    c = session.counters
    print(
        json.dumps(
            {
                "status": c.status,
                "stop_reason": c.stop_reason,
                "packets": c.packets,
                "bytes": c.bytes,
                "kernel_drops": c.kernel_drops,
                "interface_drops": c.interface_drops,
                "error": c.error_message,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
