"""`make test`'s coverage gate: prints the branch coverage of the whole run (the daemons the tests
started included) and fails if a domain module of the coordinator or the agent is under
DOMAIN_MINIMUM. Reads the JSON report `coverage json` wrote.

    python -m tests.coverage_gate build/coverage/coverage.json
"""

from __future__ import annotations

import json
import sys

DOMAIN_MINIMUM = 85.0
# The domain: what decides and keeps state. Not the wiring (app.py, settings.py), the servicers
# and transports (api/, fleet_servicer.py), nor the metrics: those are exercised end to end.
DOMAIN = (
    "coordinator/usecases/",
    "coordinator/status.py",
    "coordinator/validation.py",
    "coordinator/targets.py",
    "coordinator/budget.py",
    "coordinator/manifest.py",
    "coordinator/fetch.py",
    "coordinator/token_bucket.py",
    "coordinator/fleet/reports.py",
    "coordinator/fleet/uploads.py",
    "coordinator/state/store.py",
    "coordinator/state/keys.py",
    "coordinator/storage/",
    "node_agent/capture/",
    "node_agent/runner.py",
    "node_agent/active_capture.py",
    "node_agent/journal.py",
    "node_agent/upload/",
)
# Within those folders, the thin bindings to C (libpcap's handle, libc's stdio), whose remaining
# lines are the failure returns of fdopen, setvbuf and pcap calls that no test can provoke
# without breaking libc itself: adapters, not domain logic.
BINDINGS = ("node_agent/capture/live_source.py", "node_agent/capture/pcap_writer.py")


def main(path: str) -> int:
    with open(path) as f:
        report = json.load(f)
    total = report["totals"]["percent_covered"]
    print(f"coverage, branches included, of the whole run: {total:.1f}%")
    rows = []
    for name, data in sorted(report["files"].items()):
        if any(d in name for d in DOMAIN) and not any(b in name for b in BINDINGS):
            rows.append((name, data["summary"]["percent_covered"]))
    low = [(n, p) for n, p in rows if p < DOMAIN_MINIMUM]
    print(f"domain modules: {len(rows)}, at least {DOMAIN_MINIMUM:g}%: {len(rows) - len(low)}")
    for name, percent in low:
        print(f"  {percent:5.1f}%  {name}  (under {DOMAIN_MINIMUM:g}%)")
    if not rows:
        print("no domain module was measured", file=sys.stderr)
        return 1
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "build/coverage/coverage.json"))
