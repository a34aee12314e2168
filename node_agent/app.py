"""`fleetcap agent`: dials out to the coordinator, runs the captures it is given, streams them.

The control stream (hello, heartbeats, progress up; start and stop down) and the uploads
use two channels, so a long upload never delays a stop or a heartbeat. Everything the agent
knows about its captures is in memory and on its disk; after a reconnect its hello tells the
coordinator the state of each.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess

import grpc
from google.protobuf import json_format

from clients import grpc_transport
from clients.metrics import Registry, serve_http
from fleetcap.v1 import captures_pb2, fleet_pb2, fleet_pb2_grpc
from node_agent.capture import bpf
from node_agent.capture import reasons as r
from node_agent.capture.session import (PCAP_FILE_HEADER, PCAP_RECORD_HEADER, CaptureFile, CaptureSession, CaptureSpec,
                                       Ring, file_sha256, ring_file_path, utc_now)
from node_agent.upload.uploader import Uploader

log = logging.getLogger(__name__)

VERSION = "0.1.0"
API_ROOT = "/var/captures"
PROGRESS_INTERVAL_S = 1.0
# A restarted coordinator is found within 2 s; a dead one costs a connection attempt per 2 s.
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.2, 2.0


@dataclasses.dataclass(frozen=True)
class AgentSettings:
    coordinator: str
    """host:port or unix:/path of the coordinator; several, comma-separated, for replicas (the
    agent moves to the next one when it loses its connection)."""
    identity: fleet_pb2.AgentIdentity
    interface: str = ""
    """Capture interface; empty = the first non-loopback interface that is up."""
    capture_root: str = API_ROOT
    """Where the API's /var/captures lives on this machine."""
    buffer_size: int = 32 << 20
    """Kernel capture ring per capture, in bytes (libpcap's default is 2 MiB)."""
    storage_retry_s: float = 300.0
    """How long an upload retries while the coordinator reports its storage failing."""
    metrics_listen: str = ""
    """HOST:PORT of the Prometheus /metrics endpoint; empty = none."""


def interface_addresses(interface: str) -> list[str]:
    out = subprocess.run(["ip", "-j", "addr", "show", "dev", interface], capture_output=True, text=True, check=True)
    return [a["local"] for link in json.loads(out.stdout) for a in link.get("addr_info", [])]


def default_interface() -> str:
    out = subprocess.run(["ip", "-j", "link", "show", "up"], capture_output=True, text=True, check=True)
    for link in json.loads(out.stdout):
        if "LOOPBACK" not in link.get("flags", []):
            return link["ifname"]
    raise RuntimeError("no network interface is up; pass --interface")


def coordinator_endpoints(address: str) -> list[tuple[str, int]]:
    """The (ip, port) pairs of a TCP coordinator address, to keep our own traffic out."""
    if address.startswith("unix:"):
        return []
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    return sorted({(i[4][0], int(port)) for i in infos})


def local_path(root: str, api_path: str) -> str:
    """Maps /var/captures/x.cap under the capture root; refuses anything that escapes it."""
    rel = os.path.relpath(os.path.normpath(api_path), API_ROOT)
    if rel.startswith("..") or os.path.isabs(rel):
        raise ValueError(f"{api_path} is outside {API_ROOT}")
    return os.path.join(root, rel)


class ActiveCapture:
    """One capture on this agent: its session, and one uploader per file."""

    def __init__(self, start: fleet_pb2.StartCapture, path: str):
        self.start = start
        self.path = path
        self.session: CaptureSession | None = None
        self.uploaders: dict[int, Uploader] = {}
        self.upload_tasks: dict[int, asyncio.Future] = {}
        self.failure: tuple[str, str] | None = None  # (error kind, message) before a session ran
        self.removed: set[int] = set()  # files removed after a verified upload (storage only)
        self.hashing: set[int] = set()

    def api_path(self, index: int) -> str:
        return ring_file_path(self.start.file_path, index, self.start.continuous)

    def file_final(self, index: int) -> tuple[int, str] | None:
        """(size, sha256) once file `index` is closed and hashed."""
        f = self._file(index)
        return (f.size, f.sha256) if f and f.closed and f.sha256 else None

    def _file(self, index: int) -> CaptureFile | None:
        if self.session is None:
            return None
        return next((f for f in self.session.files if f.index == index), None)

    def progress(self) -> fleet_pb2.CaptureProgress:
        status = captures_pb2.InstanceStatus()
        if self.failure:
            status.packet_capture_status, status.stop_reason = r.ERROR, r.CAPTURE_FAILED
            status.packet_capture_error.append(self.failure[0])
            status.error_message = self.failure[1]
        elif self.session:
            c = self.session.counters
            status.packet_capture_status = c.status
            status.stop_reason = c.stop_reason
            status.packet_capture_error.extend(c.errors)
            status.error_message = c.error_message
            status.capture_start_time, status.capture_stop_time = c.start_time, c.stop_time
            status.packets_captured, status.bytes_captured = c.packets, c.bytes
            status.kernel_drops, status.interface_drops = c.kernel_drops, c.interface_drops
            failed = []
            for f in list(self.session.files):
                out = status.files.add(file_path=self.api_path(f.index), size_bytes=f.size, sha256=f.sha256)
                u = self.uploaders.get(f.index)
                if u:
                    out.uploaded_bytes, out.upload_complete = u.state.acked, u.state.committed
                    out.stored_sha256 = u.state.stored_sha256
                    if u.state.failed:
                        failed.append(f"{out.file_path}: {u.state.failed}")
            if failed:
                status.packet_capture_status = r.ERROR
                status.packet_capture_error.append(r.E_STORAGE_FAILED)
                status.error_message = "upload failed, the instance keeps the file: " + "; ".join(failed)
        return fleet_pb2.CaptureProgress(capture_name=self.start.capture_name, capture_id=self.start.capture_id,
                                         status=status)


def repair_pcap(path: str) -> tuple[int, int]:
    """Cuts a pcap file left by a killed capture back to its last whole record, so every
    reader opens it; returns (packets, size)."""
    with open(path, "r+b") as f:
        data = f.read()
        off, packets = PCAP_FILE_HEADER, 0
        if len(data) < PCAP_FILE_HEADER:
            return 0, len(data)
        while off + PCAP_RECORD_HEADER <= len(data):
            caplen = int.from_bytes(data[off + 8:off + 12], "little")
            if off + PCAP_RECORD_HEADER + caplen > len(data):
                break
            off += PCAP_RECORD_HEADER + caplen
            packets += 1
        if off != len(data):
            f.truncate(off)
            log.warning("%s ended in a partial record: cut from %d to %d bytes", path, len(data), off)
        return packets, off


class Agent:
    def __init__(self, settings: AgentSettings):
        self.settings = settings
        self.interface = settings.interface or default_interface()
        self.captures: dict[str, ActiveCapture] = {}
        self.journal_dir = os.path.join(settings.capture_root, ".fleetcap")
        self._outbox: asyncio.Queue[fleet_pb2.AgentMessage] = asyncio.Queue()
        self._dirty: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._addresses = [a.strip() for a in settings.coordinator.split(",") if a.strip()]
        self._current = 0
        self._data_channels: dict[str, grpc.aio.Channel] = {}
        self._exclude = sorted({e for a in self._addresses for e in coordinator_endpoints(a)})

    @property
    def address(self) -> str:
        return self._addresses[self._current % len(self._addresses)]

    def _data_stub(self) -> fleet_pb2_grpc.FleetStub:
        """The data path follows the control path to the same coordinator replica."""
        address = self.address
        if address not in self._data_channels:
            self._data_channels[address] = grpc_transport.aio_channel(address, dedicated=True)
        return fleet_pb2_grpc.FleetStub(self._data_channels[address])

    # -- the journal: what the agent knows of its captures survives a restart ------------------

    def _journal(self, cap: ActiveCapture) -> None:
        files = [dataclasses.asdict(f) for f in cap.session.files] if cap.session else []
        entry = {"start": json_format.MessageToDict(cap.start), "path": cap.path, "files": files,
                 "removed": sorted(cap.removed),
                 "status": json_format.MessageToDict(cap.progress().status)}
        os.makedirs(self.journal_dir, exist_ok=True)
        path = os.path.join(self.journal_dir, f"{cap.start.capture_name}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(entry, f)
        os.replace(path + ".tmp", path)

    def recover(self) -> None:
        """Loads the journal: finished captures as they were; captures the agent was running
        when it died are cut back to whole records and reported as interrupted (AgentStopped).
        Their files are then uploaded if they were meant to be."""
        if not os.path.isdir(self.journal_dir):
            return
        for name in sorted(os.listdir(self.journal_dir)):
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.journal_dir, name)) as f:
                    entry = json.load(f)
                start = json_format.ParseDict(entry["start"], fleet_pb2.StartCapture())
                status = json_format.ParseDict(entry["status"], captures_pb2.InstanceStatus())
            except (OSError, ValueError, KeyError, json_format.ParseError) as e:
                log.error("journal %s unreadable (%s); skipped", name, e)
                continue
            cap = ActiveCapture(start, entry["path"])
            cap.removed = set(entry.get("removed", []))
            session = CaptureSession(CaptureSpec(name=start.capture_name, capture_id=start.capture_id,
                                                 interface=self.interface, path=entry["path"], expression=""))
            session.files = [CaptureFile(**f) for f in entry["files"]
                             if os.path.exists(f["path"]) or f["index"] in cap.removed]
            c = session.counters
            c.start_time, c.stop_time = status.capture_start_time, status.capture_stop_time
            c.kernel_drops, c.interface_drops = status.kernel_drops, status.interface_drops
            if status.packet_capture_status in (r.STOPPED, r.ERROR):
                c.status, c.stop_reason = status.packet_capture_status, status.stop_reason
                c.errors, c.error_message = list(status.packet_capture_error), status.error_message
                c.packets, c.bytes = status.packets_captured, status.bytes_captured
            else:
                packets = 0
                for f in session.files:
                    if f.index not in cap.removed and os.path.exists(f.path):
                        n, f.size = repair_pcap(f.path)
                        packets += n
                    f.closed, f.sha256 = True, ""
                c.status, c.stop_reason, c.errors = r.ERROR, r.AGENT_STOPPED, [r.E_AGENT_STOPPED]
                c.error_message = "the agent stopped during the capture; its files hold what was captured until then"
                c.packets, c.bytes = packets, sum(f.size for f in session.files)
                c.stop_time = utc_now()
                log.warning("capture %s was interrupted by an agent restart: %d packets kept", start.capture_name, packets)
            session.done.set()
            cap.session = session
            self.captures[start.capture_name] = cap

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self.recover()
        for name in list(self.captures):
            self._changed(name)
        delay = RECONNECT_MIN_S
        while not stop.is_set():
            connected = await self._connect_once(stop)
            if stop.is_set():
                break
            delay = RECONNECT_MIN_S if connected else min(delay * 2, RECONNECT_MAX_S)
            self._current += 1  # the next replica, if there are several
            log.info("reconnecting to %s in %.1fs", self.address, delay)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass
        await self.shutdown()

    async def _connect_once(self, stop: asyncio.Event) -> bool:
        """One control-stream connection; returns whether it got as far as the welcome."""
        channel = grpc_transport.aio_channel(self.address)
        call = fleet_pb2_grpc.FleetStub(channel).Connect()
        tasks: list[asyncio.Future] = []
        welcomed = False
        try:
            hello = fleet_pb2.AgentHello(
                identity=self.settings.identity, hostname=socket.gethostname(), agent_version=VERSION,
                interface=self.interface, addresses=interface_addresses(self.interface),
                captures=[c.progress() for c in self.captures.values()])
            await call.write(fleet_pb2.AgentMessage(hello=hello))
            first = await call.read()
            if first is grpc.aio.EOF or not first.HasField("welcome"):
                return False
            welcomed = True
            log.info("connected to %s as %s", self.address, first.welcome.instance_resource_id)
            self._outbox = asyncio.Queue()
            self._dirty.update(self.captures)  # everything is reported once more after the hello
            interval = first.welcome.heartbeat_interval_ms / 1000
            tasks = [asyncio.ensure_future(self._write(call)), asyncio.ensure_future(self._heartbeat(interval)),
                     asyncio.ensure_future(self._progress()), asyncio.ensure_future(stop.wait())]
            reader = asyncio.ensure_future(self._read(call))
            tasks.append(reader)
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t.exception() and not isinstance(t.exception(), grpc.aio.AioRpcError):
                    log.error("agent task failed", exc_info=t.exception())
        except grpc.aio.AioRpcError as e:
            log.warning("control stream to %s: %s %s", self.address, e.code().name, e.details())
        finally:
            for t in tasks:
                t.cancel()
            call.cancel()
            await channel.close()
        return welcomed

    async def _write(self, call) -> None:
        while True:
            await call.write(await self._outbox.get())

    async def _heartbeat(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self._outbox.put_nowait(fleet_pb2.AgentMessage(heartbeat=fleet_pb2.Heartbeat()))

    async def _progress(self) -> None:
        """Sends the progress of running captures about once a second, and state changes at once."""
        while True:
            for name, cap in list(self.captures.items()):
                running = cap.session is not None and not cap.session.done.is_set()
                uploading = any(not u.state.committed and not u.state.failed for u in cap.uploaders.values())
                if running or uploading or name in self._dirty:
                    self._dirty.discard(name)
                    self._outbox.put_nowait(fleet_pb2.AgentMessage(progress=cap.progress()))
            await asyncio.sleep(PROGRESS_INTERVAL_S)

    def _changed(self, name: str) -> None:
        """A capture changed state: report it now (called on the event loop)."""
        cap = self.captures.get(name)
        if cap is not None:
            self._hash_closed_files(cap)
            self._sync_uploads(cap)
            self._maybe_remove_local(cap)
            self._journal(cap)
            self._outbox.put_nowait(fleet_pb2.AgentMessage(progress=cap.progress()))
            self._dirty.add(name)  # and again on the next tick, in case this stream was already gone

    async def _read(self, call) -> None:
        while True:
            msg = await call.read()
            if msg is grpc.aio.EOF:
                return
            if msg.HasField("start"):
                self._start(msg.start)
            elif msg.HasField("stop"):
                cap = self.captures.get(msg.stop.capture_name)
                if cap and cap.start.capture_id == msg.stop.capture_id and cap.session:
                    log.info("capture %s: stop requested (%s)", msg.stop.capture_name, msg.stop.reason)
                    cap.session.stop(msg.stop.reason or r.STOPPED_BY_USER)

    def _start(self, start: fleet_pb2.StartCapture) -> None:
        name = start.capture_name
        old = self.captures.get(name)
        if old is not None:
            if old.start.capture_id == start.capture_id:
                return  # a repeated start after a reconnect
            if old.session:
                old.session.stop(r.DELETED)
        notify = lambda: self._loop.call_soon_threadsafe(self._changed, name)
        try:
            path = local_path(self.settings.capture_root, start.file_path)
        except ValueError as e:
            cap = self.captures[name] = ActiveCapture(start, "")
            cap.failure = (r.E_LOCAL_FILE_FAILED, str(e))
            notify()
            return
        cap = self.captures[name] = ActiveCapture(start, path)
        try:
            filters = [bpf.parse_filter(i, protocol=f.protocol, local_ip=f.local_ip_address,
                                        remote_ip=f.remote_ip_address, local_port=f.local_port,
                                        remote_port=f.remote_port) for i, f in enumerate(start.filters)]
            expression = bpf.capture_expression(filters, interface_addresses(self.interface),
                                                bpf_filter=start.bpf_filter, exclude_tcp=self._exclude)
        except (bpf.FilterError, subprocess.CalledProcessError) as e:
            cap.failure = (r.E_CAPTURE_FAILED, str(e))
            notify()
            return
        log.info("capture %s: starting on %s into %s, filter: %s", name, self.interface, path, expression or "(all)")
        ring = Ring(file_size=start.file_size, file_count=start.file_count) if start.continuous else None
        cap.session = CaptureSession(CaptureSpec(
            name=name, capture_id=start.capture_id, interface=self.interface, path=path, expression=expression,
            snaplen=start.snaplen, total_bytes=start.total_bytes, time_limit_s=start.time_limit_s, ring=ring,
            buffer_size=self.settings.buffer_size), on_change=lambda s: notify())
        cap.session.start()

    def _hash_closed_files(self, cap: ActiveCapture) -> None:
        """Each finished file is hashed once, in a worker thread (never on the capture thread);
        the SHA-256 is what the stored copy is verified against."""
        if cap.session is None:
            return
        for f in list(cap.session.files):
            if f.closed and not f.sha256 and f.index not in cap.hashing:
                cap.hashing.add(f.index)
                asyncio.ensure_future(self._hash(cap, f))

    async def _hash(self, cap: ActiveCapture, f: CaptureFile) -> None:
        try:
            f.sha256 = await asyncio.to_thread(file_sha256, f.path)
        except FileNotFoundError:
            return  # the ring deleted it first
        self._changed(cap.start.capture_name)

    def _sync_uploads(self, cap: ActiveCapture) -> None:
        """One uploader per file the session holds; a file the ring deleted loses its upload."""
        if not cap.start.upload or cap.session is None:
            return
        held = {f.index: f for f in list(cap.session.files)}
        for index, f in held.items():
            if index not in cap.uploaders and index not in cap.removed:
                u = Uploader(self._data_stub, fleet_pb2.UploadOpen(
                    identity=self.settings.identity, capture_name=cap.start.capture_name,
                    capture_id=cap.start.capture_id, file_path=cap.api_path(index)),
                    f.path, lambda i=index: cap.file_final(i), lambda n=cap.start.capture_name: self._changed(n),
                    storage_retry_s=self.settings.storage_retry_s)
                cap.uploaders[index] = u
                cap.upload_tasks[index] = asyncio.ensure_future(u.run())
        for index in [i for i in cap.uploaders if i not in held]:
            log.info("capture %s: file %d left the ring; its upload ends", cap.start.capture_name, index)
            cap.upload_tasks.pop(index).cancel()
            del cap.uploaders[index]

    def _maybe_remove_local(self, cap: ActiveCapture) -> None:
        """Storage-only captures: the instance's copy goes once the stored copy is verified."""
        if cap.start.keep_local:
            return
        for index, u in cap.uploaders.items():
            final = cap.file_final(index)
            if final and u.state.committed and u.state.stored_sha256 == final[1] and index not in cap.removed:
                path = next(f.path for f in cap.session.files if f.index == index)
                os.remove(path)
                cap.removed.add(index)
                log.info("capture %s: stored copy of %s verified, local file removed", cap.start.capture_name, path)

    # -- metrics ---------------------------------------------------------------------------------

    def metric_families(self):
        """The agent's Prometheus metrics, read from its captures at scrape time (a collector
        for clients.metrics.Registry). Per-capture series carry the capture's name."""
        rows = [(name, cap.progress().status, cap) for name, cap in sorted(self.captures.items())]
        running = sum(1 for _, s, _ in rows if s.packet_capture_status == r.RUNNING)
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

    async def shutdown(self) -> None:
        for cap in self.captures.values():
            if cap.session:
                cap.session.stop(r.AGENT_STOPPED)
        for cap in self.captures.values():
            if cap.session:
                await asyncio.to_thread(cap.session.join, 5)
        for channel in self._data_channels.values():
            await channel.close()


async def serve(settings: AgentSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    agent = Agent(settings)
    if settings.metrics_listen:
        registry = Registry()
        registry.collector(agent.metric_families)
        host, _, port = settings.metrics_listen.rpartition(":")
        server = await serve_http(registry, host or "127.0.0.1", int(port))
        log.info("metrics on http://%s:%d/metrics", *server.sockets[0].getsockname()[:2])
    print(f"fleetcap agent on {agent.interface} dialing {settings.coordinator}", flush=True)
    await agent.run(stop)
