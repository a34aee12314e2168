"""`fleetcap agent`: wires the capture runner, the control stream to the coordinator and the
metrics endpoint, and runs them until SIGTERM.

Everything the agent knows about its captures is in memory and on its disk (journal.py); after
a reconnect its hello tells the coordinator the state of each.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from fleetcap.core.metrics import serve_http
from fleetcap.node_agent.control import ControlLoop, Coordinators
from fleetcap.node_agent.host import coordinator_endpoints, default_interface
from fleetcap.node_agent.metrics import agent_registry
from fleetcap.node_agent.runner import CaptureRunner
from fleetcap.node_agent.settings import AgentSettings

log = logging.getLogger(__name__)


async def serve(settings: AgentSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    interface = settings.interface or default_interface()
    coordinators = Coordinators(settings.coordinator, settings.credentials)
    exclude = sorted({e for a in coordinators.addresses for e in coordinator_endpoints(a)})
    control: ControlLoop | None = None
    runner = CaptureRunner(
        settings,
        interface,
        data_stub=coordinators.data_stub,
        exclude_tcp=exclude,
        on_report=lambda cap: control.report(cap) if control else None,
    )
    control = ControlLoop(settings.identity, coordinators, runner)
    if settings.metrics_listen:
        await serve_http(agent_registry(runner), settings.metrics_listen)
    print(f"fleetcap agent on {interface} dialing {settings.coordinator}", flush=True)
    runner.recover()
    try:
        await control.run(stop)
    finally:
        await runner.shutdown()
        await coordinators.close()
