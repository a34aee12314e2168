"""The capture runner: starts and stops this agent's captures, and keeps what follows a change
in step (hashing closed files, one upload per file, removing a verified local copy, the
journal). It knows nothing of the control stream; it reports each change to `on_report`."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import subprocess
import time
from collections.abc import Callable

from fleetcap.core import filters, limits
from fleetcap.core.tasks import TaskSet
from fleetcap.core.vocabulary import CaptureError, StopReason
from fleetcap.node_agent.active_capture import ActiveCapture
from fleetcap.node_agent.capture.capture_root import CaptureRoot, FileReplaced
from fleetcap.node_agent.capture.file_summary import summarize
from fleetcap.node_agent.capture.files import CaptureFile
from fleetcap.node_agent.capture.live_source import LiveHandle
from fleetcap.node_agent.capture.session import CaptureSession, CaptureSpec, Ring
from fleetcap.node_agent.capture.source import SourceFactory
from fleetcap.node_agent.capture.standby import Standby
from fleetcap.node_agent.clock import Clock
from fleetcap.node_agent.host import interface_addresses, local_path
from fleetcap.node_agent.journal import Journal
from fleetcap.node_agent.settings import AgentSettings
from fleetcap.node_agent.upload.uploader import StubProvider, Uploader
from fleetcap.v1 import fleet_pb2

log = logging.getLogger(__name__)

# Downloads this agent serves at once (FetchFile); more are refused until one ends.
MAX_FETCHES = 4
FETCH_ID = re.compile(r"[0-9a-f]{32}")
# How long shutdown waits for each capture thread to write what its ring still holds.
SHUTDOWN_JOIN_S = 5.0


def start_problem(start: fleet_pb2.StartCapture) -> str:
    """Why the agent refuses a StartCapture ("" if it does not): the agent trusts nothing it is
    sent, so every bound the coordinator checked is checked again here (fleetcap.core.limits)."""
    if not limits.CAPTURE_NAME_RE.match(start.capture_name):
        return f"capture name '{start.capture_name[:100]}' is not a valid capture name"
    problem = limits.capture_path_problem(start.file_path)
    if problem:
        return f"file path {problem}"
    if not 0 <= start.snaplen <= limits.U32_MAX or not 0 <= start.total_bytes <= limits.U32_MAX:
        return "snap length or byte limit out of range"
    if 0 < start.total_bytes < limits.MIN_TOTAL_BYTES:
        return f"byte limit {start.total_bytes} is below {limits.MIN_TOTAL_BYTES}"
    if not 0 <= start.time_limit_s <= (limits.MAX_SESSION_S if start.continuous else limits.MAX_TIME_LIMIT_S):
        return f"time limit {start.time_limit_s} s is out of range"
    if start.continuous and not (
        limits.MIN_FILE_SIZE <= start.file_size <= limits.U32_MAX and 1 <= start.file_count <= limits.MAX_FILE_COUNT
    ):
        return "continuous capture: file size or file count out of range"
    if start.standby_s and not (
        1 <= start.standby_s <= limits.MAX_STANDBY_S
        and not start.continuous
        and limits.MIN_STANDBY_BYTES <= start.standby_bytes <= limits.U32_MAX
    ):
        return "flight recorder: window, ring size or mode out of range"
    if start.standby_s < 0:
        return "flight recorder: window out of range"
    if not 0 <= start.fleet_allowance <= limits.MAX_FLEET_BYTES or (start.fleet_allowance and (start.continuous or start.standby_s)):
        return "fleet budget: allowance out of range, or not a standard capture"
    if len(start.filters) > limits.MAX_FILTERS or len(start.bpf_filter) > limits.MAX_BPF_CHARS:
        return f"more than {limits.MAX_FILTERS} filters or a BPF filter over {limits.MAX_BPF_CHARS} characters"
    for f in start.filters:
        if max(len(f.local_ip_address), len(f.remote_ip_address), len(f.local_port), len(f.remote_port)) > limits.MAX_FILTER_FIELD_CHARS:
            return f"a filter field over {limits.MAX_FILTER_FIELD_CHARS} characters"
    return ""


def capture_spec(
    start: fleet_pb2.StartCapture, interface: str, root: str, path: str, expression: str, buffer_size: int, clock_shift_us: int
) -> CaptureSpec:
    """What a checked StartCapture asks of the capture engine (session.py)."""
    return CaptureSpec(
        name=start.capture_name,
        capture_id=start.capture_id,
        interface=interface,
        root=root,
        path=path,
        expression=expression,
        snaplen=start.snaplen,
        total_bytes=start.total_bytes,
        time_limit_s=start.time_limit_s,
        ring=Ring(file_size=start.file_size, file_count=start.file_count) if start.continuous else None,
        buffer_size=buffer_size,
        standby=Standby(window_s=start.standby_s, ring_bytes=start.standby_bytes) if start.standby_s else None,
        clock_shift_us=clock_shift_us,
        fleet_allowance=start.fleet_allowance,
    )


class CaptureRunner:
    """This agent's captures, by name. Every method runs on the event loop."""

    def __init__(
        self,
        settings: AgentSettings,
        interface: str,
        *,
        data_stub: StubProvider,
        exclude_tcp: list[tuple[str, int]],
        on_report: Callable[[ActiveCapture], None],
        open_source: SourceFactory = LiveHandle,
        addresses: Callable[[str], list[str]] = interface_addresses,
    ):
        self.settings = settings
        self.interface = interface
        self.captures: dict[str, ActiveCapture] = {}
        self.root = CaptureRoot(settings.capture_root)
        self.journal = Journal(self.root)
        self._data_stub = data_stub
        self._exclude_tcp = exclude_tcp
        self._on_report = on_report
        self._open_source = open_source
        self._addresses = addresses
        self._loop: asyncio.AbstractEventLoop | None = None
        self.clock = Clock(settings.test_clock_offset_s)
        self._hashes = TaskSet("hashing a finished file", log)
        # Messages to the coordinator outside a capture's progress (budget requests and returns);
        # the control loop sets it, and a message sent while disconnected is lost (the session asks again).
        self.send: Callable[[fleet_pb2.AgentMessage], None] = lambda message: None
        if self.clock.shift_ns:
            log.warning(
                "TEST ONLY: this agent's clock is moved by %+.3f s (FLEETCAP_TEST_CLOCK_OFFSET_S); the packet "
                "times it writes are wrong by that much",
                settings.test_clock_offset_s,
            )

    def _new(self, start: fleet_pb2.StartCapture, path: str) -> ActiveCapture:
        cap = self.captures[start.capture_name] = ActiveCapture(start, path)
        cap.clock = self.clock
        return cap

    def recover(self) -> None:
        """Loads the journal and reports every capture it knew."""
        self._loop = asyncio.get_running_loop()
        self.captures.update(self.journal.recover(self.interface))
        for cap in self.captures.values():
            cap.clock = self.clock
        for name in list(self.captures):
            self.changed(name)

    def start(self, start: fleet_pb2.StartCapture) -> None:
        self._loop = asyncio.get_running_loop()
        problem = start_problem(start)
        if problem:
            log.warning("StartCapture refused: %s", problem)
            if limits.CAPTURE_NAME_RE.match(start.capture_name) and start.capture_name not in self.captures:
                cap = self._new(start, "")
                cap.failure = (CaptureError.CAPTURE_FAILED, f"the agent refused the capture: {problem}")
                self.changed(start.capture_name)
            return
        name = start.capture_name
        old = self.captures.get(name)
        if old is not None:
            if old.start.capture_id == start.capture_id:
                return  # a repeated start after a reconnect
            if old.session:
                old.session.stop(StopReason.DELETED)
        loop = self._loop

        def notify(_: object = None) -> None:  # from the capture thread
            loop.call_soon_threadsafe(self.changed, name)

        try:
            path = local_path(self.settings.capture_root, start.file_path)
        except ValueError as e:
            cap = self._new(start, "")
            cap.failure = (CaptureError.LOCAL_FILE_FAILED, str(e))
            notify()
            return
        cap = self._new(start, path)
        try:
            expression = filters.capture_expression(
                filters.parse_filters(start.filters),
                self._addresses(self.interface),
                bpf_filter=start.bpf_filter,
                exclude_tcp=self._exclude_tcp,
            )
        except (filters.FilterError, subprocess.CalledProcessError) as e:
            cap.failure = (CaptureError.CAPTURE_FAILED, str(e))
            notify()
            return
        log.info("capture %s: starting on %s into %s, filter: %s", name, self.interface, path, expression or "(all)")

        def budget(kind: str, amount: int, used: int) -> None:  # from the capture thread
            ids = {"capture_name": name, "capture_id": start.capture_id}
            message = (
                fleet_pb2.AgentMessage(budget_request=fleet_pb2.BudgetRequest(**ids, used=used, need=amount))
                if kind == "request"
                else fleet_pb2.AgentMessage(budget_return=fleet_pb2.BudgetReturn(**ids, returned=amount))
            )
            loop.call_soon_threadsafe(self.send, message)

        spec = capture_spec(start, self.interface, self.root.root, path, expression, self.settings.buffer_size, self.clock.shift_ns // 1000)
        cap.session = CaptureSession(
            spec,
            on_change=notify,
            open_source=self._open_source,
            on_budget=budget,
        )
        cap.session.start()

    def stop(self, stop: fleet_pb2.StopCapture) -> None:
        cap = self.captures.get(stop.capture_name)
        if cap and cap.start.capture_id == stop.capture_id and cap.session:
            log.info("capture %s: stop requested (%s)", stop.capture_name, stop.reason)
            cap.session.stop(stop.reason or StopReason.STOPPED_BY_USER)

    def trigger(self, trigger: fleet_pb2.TriggerCapture) -> None:
        """Freezes a flight recorder's window. The agent trusts nothing it is sent: the capture
        and its session id must be its own and armed, the seconds after within the time limit's
        range, the source short; a trigger time later than this agent's clock is taken as now."""
        cap = self.captures.get(trigger.capture_name)
        if (
            cap is None
            or cap.session is None
            or cap.start.capture_id != trigger.capture_id
            or not cap.start.standby_s
            or not 0 <= trigger.after_s <= limits.MAX_TIME_LIMIT_S
            or trigger.trigger_time_ms <= 0
        ):
            log.warning(
                "TriggerCapture refused: capture %s is not an armed flight recorder here (or a malformed trigger)",
                trigger.capture_name[:100],
            )
            return
        at = min(trigger.trigger_time_ms / 1000, time.time())
        source = "".join(ch for ch in trigger.source[: limits.MAX_TRIGGER_NOTE_CHARS + 100] if ch.isprintable())
        if cap.session.trigger(at, trigger.after_s, source):
            log.info("capture %s: triggered (%s), %d s more", trigger.capture_name, source, trigger.after_s)

    def budget_grant(self, grant: fleet_pb2.BudgetGrant) -> None:
        """More fleet budget for a capture, or its end. Only for this agent's own budgeted capture
        (its session id), and never a negative amount: the agent trusts nothing it is sent."""
        cap = self.captures.get(grant.capture_name)
        if (
            cap is None
            or cap.session is None
            or cap.start.capture_id != grant.capture_id
            or not cap.start.fleet_allowance
            or grant.granted < 0
        ):
            log.warning("BudgetGrant refused: capture %s has no fleet budget here (or a malformed grant)", grant.capture_name[:100])
            return
        cap.session.grant(grant.granted, grant.exhausted)

    def fetch(self, fetch: fleet_pb2.FetchFile) -> None:
        """Sends one file of a capture this agent holds for a download (the capture has no
        storage account, or its upload failed), through the ordinary upload path into the
        coordinator's fetch area. The agent trusts nothing it is sent: the capture, its session
        id and the file must be its own, the fetch id well formed, and at most MAX_FETCHES run at
        once; anything else is refused in the log."""
        cap = self.captures.get(fetch.capture_name)
        index = (
            next((f.index for f in list(cap.session.files) if cap.api_path(f.index) == fetch.file_path), None)
            if cap is not None and cap.session is not None and cap.start.capture_id == fetch.capture_id
            else None
        )
        if cap is None or index is None or not FETCH_ID.fullmatch(fetch.fetch_id):
            log.warning(
                "FetchFile refused: no file %s of capture %s here (or a malformed fetch id)",
                fetch.file_path[:200],
                fetch.capture_name[:100],
            )
            return
        if fetch.fetch_id in cap.fetches or index in cap.removed:
            return  # a repeated request (both replicas may send it), or a file no longer here
        running = sum(1 for c in self.captures.values() for t in c.fetches.values() if not t.done())
        if running >= MAX_FETCHES:
            log.warning(
                "FetchFile for %s of capture %s refused: %d downloads already running", fetch.file_path, fetch.capture_name, running
            )
            return
        path = next(f.path for f in cap.session.files if f.index == index)  # type: ignore[union-attr]
        u = self._uploader(cap, index, path, lambda: None, fetch_id=fetch.fetch_id)
        log.info("capture %s: sending %s for a download (%s)", fetch.capture_name, path, fetch.fetch_id)
        task: asyncio.Future[object] = asyncio.ensure_future(u.run())
        cap.fetches[fetch.fetch_id] = task
        task.add_done_callback(lambda _: cap.fetches.pop(fetch.fetch_id, None))

    def changed(self, name: str) -> None:
        """A capture changed state: bring its files, uploads and journal in step, and report it."""
        cap = self.captures.get(name)
        if cap is None:
            return
        self._hash_closed_files(cap)
        self._sync_uploads(cap)
        self._maybe_remove_local(cap)
        self.journal.write(cap)
        self._on_report(cap)

    def _hash_closed_files(self, cap: ActiveCapture) -> None:
        """Each finished file is hashed once, in a worker thread (never on the capture thread);
        the SHA-256 is what the stored copy is verified against."""
        if cap.session is None:
            return
        for f in list(cap.session.files):
            if f.closed and not f.sha256 and f.index not in cap.hashing:
                cap.hashing.add(f.index)
                self._hashes.start(self._hash(cap, f), on_error=functools.partial(self._hash_failed, cap, f), detail=f.path)

    async def _hash(self, cap: ActiveCapture, f: CaptureFile) -> None:
        try:
            summary = await asyncio.to_thread(summarize, self.root, f.path, f.tail_from)
        except FileNotFoundError:
            return  # the ring deleted it first
        except FileReplaced as e:  # never hash (and so vouch for) what a local user put there
            log.error("capture %s: %s", cap.start.capture_name, e)
            cap.file_problems.append(str(e))
            self.changed(cap.start.capture_name)
            return
        f.first_us, f.last_us, f.sha256 = summary.first_us, summary.last_us, summary.sha256
        self.changed(cap.start.capture_name)

    def _hash_failed(self, cap: ActiveCapture, f: CaptureFile, error: BaseException) -> None:
        """A file that cannot be hashed cannot be vouched for: the instance fails LocalFileFailed
        with the reason, rather than waiting for a SHA-256 that will never come."""
        cap.file_problems.append(f"{cap.api_path(f.index)}: cannot be hashed: {type(error).__name__}: {error}")
        self.changed(cap.start.capture_name)

    def _sync_uploads(self, cap: ActiveCapture) -> None:
        """One uploader per file the session holds; a file the ring deleted loses its upload."""
        if not cap.start.upload or cap.session is None:
            return
        held = {f.index: f for f in list(cap.session.files)}
        name = cap.start.capture_name
        for index, f in held.items():
            if index not in cap.uploaders and index not in cap.removed:
                u = self._uploader(cap, index, f.path, functools.partial(self.changed, name))
                cap.uploaders[index] = u
                cap.upload_tasks[index] = asyncio.ensure_future(u.run())
        for index in [i for i in cap.uploaders if i not in held]:
            log.info("capture %s: file %d left the ring; its upload ends", name, index)
            cap.upload_tasks.pop(index).cancel()
            del cap.uploaders[index]

    def _uploader(self, cap: ActiveCapture, index: int, path: str, on_change: Callable[[], None], fetch_id: str = "") -> Uploader:
        """The stream of one file to the coordinator: into its storage account, or, with a fetch
        id, into the fetch area for a download."""
        start = cap.start
        return Uploader(
            self._data_stub,
            fleet_pb2.UploadOpen(
                identity=self.settings.identity,
                capture_name=start.capture_name,
                capture_id=start.capture_id,
                file_path=cap.api_path(index),
                fetch_id=fetch_id,
            ),
            path,
            functools.partial(cap.file_final, index),
            on_change,
            storage_retry_s=self.settings.storage_retry_s,
            metadata=self.settings.credentials.metadata(),
            open_read=self.root.open_read,
        )

    def _maybe_remove_local(self, cap: ActiveCapture) -> None:
        """Storage-only captures: the instance's copy goes once the stored copy is verified."""
        if cap.start.keep_local or cap.session is None:
            return
        for index, u in cap.uploaders.items():
            final = cap.file_final(index)
            if final and u.state.committed and u.state.stored_sha256 == final[1] and index not in cap.removed:
                path = next(f.path for f in cap.session.files if f.index == index)
                self.root.remove(path)
                cap.removed.add(index)
                log.info("capture %s: stored copy of %s verified, local file removed", cap.start.capture_name, path)

    async def shutdown(self) -> None:
        """Stops every capture (AgentStopped) and waits for each to write what it holds."""
        for cap in self.captures.values():
            if cap.session:
                cap.session.stop(StopReason.AGENT_STOPPED)
        for cap in self.captures.values():
            if cap.session:
                await asyncio.to_thread(cap.session.join, SHUTDOWN_JOIN_S)
