"""The agent's runner without root or namespaces: a replayed capture started by the
coordinator's own StartCapture, uploaded through a real in-process coordinator (memory store,
a unix socket, the local sink), and the journal that brings it back after a restart."""

from __future__ import annotations

import asyncio
import os
import struct

import dpkt

from fleetcap.coordinator import usecases
from fleetcap.coordinator.api.auth import Authenticator, AuthInterceptor
from fleetcap.coordinator.fleet.agents import AgentSessions
from fleetcap.coordinator.fleet.fleet_servicer import FleetServicer, add_fleet_servicer
from fleetcap.coordinator.metrics import CoordinatorMetrics
from fleetcap.coordinator.state import keys
from fleetcap.coordinator.state.memory_store import MemoryKV
from fleetcap.coordinator.state.store import Store
from fleetcap.coordinator.storage.local_sink import LocalSink
from fleetcap.core import transport
from fleetcap.core.auth import AuthFile, Role, new_token
from fleetcap.core.integrity import sha256_file
from fleetcap.core.vocabulary import CaptureError, Status, StopReason
from fleetcap.node_agent import runner as runner_module
from fleetcap.node_agent.active_capture import ActiveCapture
from fleetcap.node_agent.capture.capture_root import CaptureRoot
from fleetcap.node_agent.capture.files import CaptureFile
from fleetcap.node_agent.capture.replay_source import ReplaySourceFactory
from fleetcap.node_agent.capture.session import CaptureSession, CaptureSpec
from fleetcap.node_agent.journal import Journal, repair_pcap
from fleetcap.node_agent.runner import CaptureRunner
from fleetcap.node_agent.settings import AgentSettings
from fleetcap.v1 import captures_pb2 as pb
from fleetcap.v1 import fleet_pb2, fleet_pb2_grpc, state_pb2
from tests import pcaps
from tests.replay_traces import write_trace
from tests.waiting import wait_for_async

IDENT = fleet_pb2.AgentIdentity(resource_group="rg", vm_name="vm1")


class Recorder:
    def __init__(self) -> None:
        self.sent: list[fleet_pb2.CoordinatorMessage] = []

    def send(self, instance_key: str, message: fleet_pb2.CoordinatorMessage) -> bool:
        self.sent.append(message)
        return True


def test_a_replayed_capture_is_uploaded_verified_and_journaled(tmp_path):
    trace = str(tmp_path / "in.pcap")
    udp = write_trace(trace, 30)

    async def body() -> None:
        store = Store(MemoryKV())
        await store.agents.register(keys.instance_key(IDENT), state_pb2.AgentRecord(identity=IDENT), ttl_s=60)
        storage = tmp_path / "storage"
        recorder = Recorder()
        sinks = {"local": LocalSink(str(storage))}
        uc = usecases.build(store, recorder, sinks)
        token = new_token()  # no TLS here: the agent proves itself with a token of role agent
        auth_file = str(tmp_path / "auth.toml")
        AuthFile().with_token("agents", frozenset({Role.AGENT}), token).save(auth_file)
        server = transport.aio_server([AuthInterceptor(Authenticator(auth_file), CoordinatorMetrics())])
        add_fleet_servicer(FleetServicer(store, sinks, uc, AgentSessions(), agent_ttl_s=60, replica="r1"), server)
        socket_path = f"unix:{tmp_path}/fleet.sock"
        transport.add_listen(server, socket_path)
        await server.start()
        channel = transport.aio_channel(socket_path, dedicated=True)
        try:
            await uc.lifecycle.create(
                name="pc",
                resource_group="rg",
                subscription="",
                params=pb.PacketCaptureParameters(
                    target="vm1",
                    target_type="AzureVM",
                    time_limit_in_seconds=1,
                    storage_location=pb.PacketCaptureStorageLocation(storage_id="local", file_path="/var/captures/pc.cap"),
                    filters=[pb.PacketCaptureFilter(protocol="UDP", local_port="5001")],
                ),
            )
            [start] = [m.start for m in recorder.sent if m.HasField("start")]
            assert (start.upload, start.keep_local, start.time_limit_s) == (True, True, 1)

            reports: list[fleet_pb2.CaptureProgress] = []
            settings = AgentSettings(
                identity=IDENT, capture_root=str(tmp_path / "root"), credentials=transport.ClientCredentials(token=token)
            )
            runner = CaptureRunner(
                settings,
                "replay0",
                data_stub=lambda: fleet_pb2_grpc.FleetStub(channel),
                exclude_tcp=[],
                on_report=lambda cap: reports.append(cap.progress()),
                open_source=ReplaySourceFactory(trace),
                addresses=lambda _: ["10.0.0.2"],
            )  # the receiver
            runner.recover()  # an empty journal
            runner.start(start)
            cap = runner.captures["pc"]
            await wait_for_async(
                lambda: any(u.state.committed for u in cap.uploaders.values()), what="the upload to commit", timeout_s=20.0
            )
            status = cap.progress().status
            local = cap.session.files[0].path if cap.session else ""
            stored = storage / "network-watcher-logs"
            [stored_file] = [os.path.join(d, f) for d, _, fs in os.walk(stored) for f in fs]
            assert (status.packet_capture_status, status.stop_reason) == (Status.STOPPED, StopReason.TIME_EXCEEDED)
            assert [r.seq for r in pcaps.read(local).records] == list(range(len(udp)))
            assert sha256_file(stored_file) == sha256_file(local) == status.files[0].sha256
            assert status.files[0].stored_sha256 == status.files[0].sha256
            assert status.files[0].upload_complete
            assert reports[-1].status.files[0].upload_complete  # the runner reported the commit

            # The journal brings the finished capture back as it was, after an agent restart.
            again = Journal(CaptureRoot(settings.capture_root)).recover("replay0")
            assert list(again) == ["pc"]
            assert again["pc"].progress().status.packet_capture_status == Status.STOPPED
            assert again["pc"].progress().status.packets_captured == len(udp)
            await runner.shutdown()
        finally:
            await channel.close()
            await server.stop(None)

    asyncio.run(body())


def test_a_capture_cut_by_an_agent_death_comes_back_as_agent_stopped_with_whole_records(tmp_path):
    root = tmp_path / "root"
    path = root / "cut.cap"
    root.mkdir()
    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f, snaplen=65535)
        for i in range(4):
            w.writepkt(b"\x00" * 60, ts=1_700_000_000 + i)
    whole = os.path.getsize(path)
    with open(path, "ab") as f:  # the fifth record, cut in its data by the kill
        f.write(struct.pack("<IIII", 1_700_000_005, 0, 60, 60) + b"\x00" * 20)
    start = fleet_pb2.StartCapture(capture_name="cut", capture_id="cut@1", file_path="/var/captures/cut.cap")
    running = ActiveCapture(start, str(path))
    journal = Journal(CaptureRoot(str(root)))
    running.session = CaptureSession(
        CaptureSpec(name="cut", capture_id="cut@1", interface="x", root=str(root), path=str(path), expression="")
    )
    running.session.files = [CaptureFile(0, str(path), size=whole + 36)]
    running.session.counters.status = Status.RUNNING
    journal.write(running)

    [(name, cap)] = journal.recover("x").items()
    status = cap.progress().status
    assert name == "cut"
    assert (status.packet_capture_status, status.stop_reason, list(status.packet_capture_error)) == (
        Status.ERROR,
        StopReason.AGENT_STOPPED,
        [CaptureError.AGENT_STOPPED],
    )
    assert (status.packets_captured, status.bytes_captured, os.path.getsize(path)) == (4, whole, whole)
    assert repair_pcap(CaptureRoot(str(root)), str(path)) == (4, whole)  # already whole: nothing more is cut


def test_the_agent_refuses_a_start_outside_its_capture_root_and_writes_nothing_outside(tmp_path):
    """A StartCapture from a hostile or confused coordinator: a path that escapes the root, a
    symlink planted in the root, and limits past the documented maximums. Nothing is written
    outside the root, and the refusal is reported under the capture's name."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "planted.cap").symlink_to(outside / "stolen.cap")  # dangling: a write through it lands outside
    (root / "dir").symlink_to(outside)  # a directory on the way is a link

    async def body() -> None:
        reports: list[pb.InstanceStatus] = []
        runner = CaptureRunner(
            AgentSettings(identity=IDENT, capture_root=str(root)),
            "replay0",
            data_stub=lambda: None,
            exclude_tcp=[],  # type: ignore[arg-type,return-value]
            on_report=lambda cap: reports.append(cap.progress().status),
            open_source=ReplaySourceFactory(str(tmp_path / "none.pcap")),
            addresses=lambda _: ["10.0.0.2"],
        )
        starts = {
            "esc": fleet_pb2.StartCapture(capture_name="esc", capture_id="1", file_path="/var/captures/../../etc/x.cap"),
            "big": fleet_pb2.StartCapture(capture_name="big", capture_id="2", file_path="/var/captures/b.cap", time_limit_s=18001),
            "bpf": fleet_pb2.StartCapture(capture_name="bpf", capture_id="3", file_path="/var/captures/c.cap", bpf_filter="udp " * 1025),
            "link": fleet_pb2.StartCapture(capture_name="link", capture_id="4", file_path="/var/captures/planted.cap"),
            "dir": fleet_pb2.StartCapture(capture_name="dir", capture_id="5", file_path="/var/captures/dir/x.cap"),
        }
        for start in starts.values():
            runner.start(start)
        await wait_for_async(
            lambda: all(c.session is None or c.session.done.is_set() for c in runner.captures.values()) and len(runner.captures) == 5,
            what="every capture to end",
            timeout_s=20.0,
        )
        await asyncio.sleep(0)  # the last reports are delivered on the loop
        by_name = {n: c.progress().status for n, c in runner.captures.items()}
        assert {n: (s.packet_capture_status, list(s.packet_capture_error)) for n, s in by_name.items()} == {
            "esc": (Status.ERROR, [CaptureError.CAPTURE_FAILED]),
            "big": (Status.ERROR, [CaptureError.CAPTURE_FAILED]),
            "bpf": (Status.ERROR, [CaptureError.CAPTURE_FAILED]),
            "link": (Status.ERROR, [CaptureError.LOCAL_FILE_FAILED]),
            "dir": (Status.ERROR, [CaptureError.LOCAL_FILE_FAILED]),
        }
        assert (
            by_name["esc"].error_message == "the agent refused the capture: file path '/var/captures/../../etc/x.cap' "
            "must not contain '..' or NUL"
        )
        assert by_name["big"].error_message == "the agent refused the capture: time limit 18001 s is out of range"
        assert "already exists; fleetcap never overwrites" in by_name["link"].error_message
        assert list(outside.iterdir()) == []  # nothing was written through either link
        await runner.shutdown()

    write_trace(str(tmp_path / "none.pcap"), 1)
    asyncio.run(body())


def test_the_agent_sends_a_file_for_a_download_only_when_it_is_its_own(tmp_path):
    """FetchFile from a hostile or confused coordinator: another capture, another session of the
    same name, a file the capture does not have, a path outside the root, a malformed fetch id.
    Each is refused and no upload starts; the one that names its own file starts exactly one
    upload, however often it is repeated; a fifth download at once is refused."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "pc.cap").write_bytes(b"x" * 40)
    opened: list[fleet_pb2.UploadOpen] = []

    class Stub:  # records what the runner would send, and ends every upload there
        def Upload(self, metadata=()):  # noqa: N802 - gRPC's name
            class Call:
                async def write(self, request):
                    opened.append(request.open)

                async def read(self):
                    return fleet_pb2.UploadResponse(committed=True, acked_offset=40)

                def cancel(self):
                    pass

            return Call()

    async def body() -> None:
        runner = CaptureRunner(
            AgentSettings(identity=IDENT, capture_root=str(root)),
            "replay0",
            data_stub=lambda: Stub(),
            exclude_tcp=[],  # type: ignore[arg-type,return-value]
            on_report=lambda cap: None,
            addresses=lambda _: ["10.0.0.2"],
        )
        start = fleet_pb2.StartCapture(capture_name="pc", capture_id="s1", file_path="/var/captures/pc.cap", keep_local=True)
        cap = ActiveCapture(start, str(root / "pc.cap"))
        cap.session = CaptureSession(
            CaptureSpec(name="pc", capture_id="s1", interface="replay0", root=str(root), path=str(root / "pc.cap"), expression="")
        )
        cap.session.files = [CaptureFile(index=0, path=str(root / "pc.cap"), size=40, sha256="ab", closed=True)]
        runner.captures["pc"] = cap
        good = "0123456789abcdef" * 2
        refused = [
            fleet_pb2.FetchFile(capture_name="other", capture_id="s1", file_path="/var/captures/pc.cap", fetch_id=good),
            fleet_pb2.FetchFile(capture_name="pc", capture_id="s0", file_path="/var/captures/pc.cap", fetch_id=good),
            fleet_pb2.FetchFile(capture_name="pc", capture_id="s1", file_path="/var/captures/x.cap", fetch_id=good),
            fleet_pb2.FetchFile(capture_name="pc", capture_id="s1", file_path="/var/captures/../../etc/shadow", fetch_id=good),
            fleet_pb2.FetchFile(capture_name="pc", capture_id="s1", file_path="/var/captures/pc.cap", fetch_id="../" + good[3:]),
        ]
        for fetch in refused:
            runner.fetch(fetch)
        assert cap.fetches == {}
        ok = fleet_pb2.FetchFile(capture_name="pc", capture_id="s1", file_path="/var/captures/pc.cap", fetch_id=good)
        runner.fetch(ok)
        runner.fetch(ok)  # both replicas may send it
        assert list(cap.fetches) == [good]
        await wait_for_async(lambda: cap.fetches == {}, what="the upload to end", timeout_s=20.0)
        assert [(o.capture_name, o.capture_id, o.file_path, o.fetch_id) for o in opened] == [("pc", "s1", "/var/captures/pc.cap", good)]
        # At most MAX_FETCHES at once: hold four, and the fifth is refused.
        cap.fetches.update({f"{i:032x}": asyncio.get_running_loop().create_future() for i in range(4)})
        runner.fetch(fleet_pb2.FetchFile(capture_name="pc", capture_id="s1", file_path="/var/captures/pc.cap", fetch_id="f" * 32))
        assert "f" * 32 not in cap.fetches

    asyncio.run(body())


def test_reconnects_are_spread_over_half_to_one_and_a_half_delays():
    import random

    from fleetcap.node_agent.control import RECONNECT_MAX_S, RECONNECT_MIN_S, jittered

    rng = random.Random(7)
    for delay in (RECONNECT_MIN_S, 1.0, RECONNECT_MAX_S):
        waits = [jittered(delay, rng) for _ in range(2000)]
        assert delay * 0.5 <= min(waits) < delay * 0.55
        assert delay * 1.45 < max(waits) <= delay * 1.5
        # A thousand agents cut at once come back spread out: no tenth of the range holds more than 15 %.
        buckets = [0] * 10
        for w in waits:
            buckets[min(9, int((w / delay - 0.5) * 10))] += 1
        assert max(buckets) < 0.15 * len(waits)


def idle_runner(tmp_path) -> CaptureRunner:
    """A runner with a capture root and no coordinator: for what it does with a message."""
    root = tmp_path / "root"
    root.mkdir()
    return CaptureRunner(
        AgentSettings(identity=IDENT, capture_root=str(root)),
        "replay0",
        data_stub=lambda: None,
        exclude_tcp=[],  # type: ignore[arg-type,return-value]
        on_report=lambda cap: None,
        addresses=lambda _: ["10.0.0.2"],
    )


def held(runner: CaptureRunner, name: str, **start: int) -> CaptureSession:
    """A capture the runner holds, session id s1, not started, with `start`'s settings."""
    from fleetcap.node_agent.capture.standby import Standby

    msg = fleet_pb2.StartCapture(capture_name=name, capture_id="s1", file_path=f"/var/captures/{name}.cap", **start)
    path = os.path.join(runner.root.root, f"{name}.cap")
    cap = ActiveCapture(msg, path)
    cap.session = CaptureSession(
        CaptureSpec(
            name=name,
            capture_id="s1",
            interface="replay0",
            root=runner.root.root,
            path=path,
            expression="",
            standby=Standby(msg.standby_s, msg.standby_bytes) if msg.standby_s else None,
            fleet_allowance=msg.fleet_allowance,
        )
    )
    runner.captures[name] = cap
    return cap.session


def test_the_agent_takes_a_trigger_only_for_its_own_armed_recorder(tmp_path):
    """TriggerCapture from a hostile or confused coordinator: another capture, another session of
    the same name, a capture that is no flight recorder, seconds after out of range, no time.
    Each is refused and the recorder stays armed. A trigger time later than the agent's clock is
    taken as now, and the source is kept printable. A second trigger changes nothing."""
    import time

    from fleetcap.node_agent.runner import start_problem

    runner = idle_runner(tmp_path)
    rec = held(runner, "rec", standby_s=30, standby_bytes=8 << 20)
    plain = held(runner, "plain")
    now_ms = int(time.time() * 1000)
    for t in (
        fleet_pb2.TriggerCapture(capture_name="other", capture_id="s1", trigger_time_ms=now_ms),
        fleet_pb2.TriggerCapture(capture_name="rec", capture_id="s0", trigger_time_ms=now_ms),
        fleet_pb2.TriggerCapture(capture_name="plain", capture_id="s1", trigger_time_ms=now_ms),
        fleet_pb2.TriggerCapture(capture_name="rec", capture_id="s1", trigger_time_ms=now_ms, after_s=18001),
        fleet_pb2.TriggerCapture(capture_name="rec", capture_id="s1", trigger_time_ms=now_ms, after_s=-1),
        fleet_pb2.TriggerCapture(capture_name="rec", capture_id="s1", trigger_time_ms=0),
    ):
        runner.trigger(t)
    assert (rec.recorder.trigger, plain.recorder, rec.counters.trigger_time) == (None, None, "")
    runner.trigger(
        fleet_pb2.TriggerCapture(
            capture_name="rec", capture_id="s1", trigger_time_ms=now_ms + 86_400_000, after_s=600, source="ops\n\x1b[2Jx"
        )
    )
    assert rec.recorder.trigger is not None
    assert rec.recorder.trigger.at <= time.time()
    assert rec.recorder.trigger.after_s == 600
    assert rec.counters.trigger_source == "ops[2Jx"
    first = rec.recorder.trigger
    runner.trigger(fleet_pb2.TriggerCapture(capture_name="rec", capture_id="s1", trigger_time_ms=now_ms, after_s=1))
    assert rec.recorder.trigger is first
    rec.stop(StopReason.STOPPED_BY_USER)  # its timer would end it in 600 s

    base = {"capture_name": "r", "capture_id": "s", "file_path": "/var/captures/r.cap"}
    assert start_problem(fleet_pb2.StartCapture(**base, standby_s=30, standby_bytes=8 << 20)) == ""
    for bad in (
        {"standby_s": 3601, "standby_bytes": 8 << 20},
        {"standby_s": 30, "standby_bytes": (8 << 20) - 1},
        {"standby_s": 30, "standby_bytes": 8 << 20, "continuous": True, "file_size": 1 << 20, "file_count": 2},
        {"standby_s": -5, "standby_bytes": 8 << 20},
    ):
        assert start_problem(fleet_pb2.StartCapture(**base, **bad)).startswith("flight recorder:"), bad


def test_the_agent_takes_budget_grants_only_for_its_own_budgeted_capture(tmp_path):
    runner = idle_runner(tmp_path)
    budgeted, plain = held(runner, "bud", fleet_allowance=1000), held(runner, "plain")
    for g in (
        fleet_pb2.BudgetGrant(capture_name="other", capture_id="s1", granted=5),
        fleet_pb2.BudgetGrant(capture_name="bud", capture_id="s0", granted=5),
        fleet_pb2.BudgetGrant(capture_name="bud", capture_id="s1", granted=-500),
        fleet_pb2.BudgetGrant(capture_name="plain", capture_id="s1", granted=5, exhausted=True),
    ):
        runner.budget_grant(g)
    assert (budgeted.budget.allowance, budgeted.budget.exhausted, plain.budget.allowance, plain.budget.exhausted) == (1000, False, 0, False)
    runner.budget_grant(fleet_pb2.BudgetGrant(capture_name="bud", capture_id="s1", granted=500))
    assert budgeted.budget.allowance == 1500
    runner.budget_grant(fleet_pb2.BudgetGrant(capture_name="bud", capture_id="s1", exhausted=True))
    assert (budgeted.budget.allowance, budgeted.budget.exhausted) == (1500, True)
    from fleetcap.node_agent.runner import start_problem

    base = {"capture_name": "r", "capture_id": "s", "file_path": "/var/captures/r.cap"}
    assert start_problem(fleet_pb2.StartCapture(**base, fleet_allowance=1 << 20)) == ""
    for bad in (
        {"fleet_allowance": -1},
        {"fleet_allowance": (1 << 50) + 1},
        {"fleet_allowance": 1 << 20, "standby_s": 30, "standby_bytes": 8 << 20},
    ):
        assert start_problem(fleet_pb2.StartCapture(**base, **bad)).startswith("fleet budget:"), bad


def test_a_file_that_cannot_be_hashed_fails_its_instance_instead_of_waiting_for_ever(tmp_path, monkeypatch, caplog):
    """Hashing runs as an owned background task: an unexpected error there (a disk that fails the
    read) ends the instance in LocalFileFailed naming the file, and is logged with its cause."""
    root = tmp_path / "root"
    root.mkdir()
    write_trace(str(tmp_path / "in.pcap"), 5)

    def failing_read(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(runner_module, "summarize", failing_read)

    async def body() -> None:
        runner = CaptureRunner(
            AgentSettings(identity=IDENT, capture_root=str(root)),
            "replay0",
            data_stub=lambda: None,
            exclude_tcp=[],  # type: ignore[arg-type,return-value]
            on_report=lambda cap: None,
            open_source=ReplaySourceFactory(str(tmp_path / "in.pcap")),
            addresses=lambda _: ["10.0.0.2"],
        )
        runner.start(fleet_pb2.StartCapture(capture_name="h", capture_id="h@1", file_path="/var/captures/h.cap", time_limit_s=1))

        def failed() -> bool:
            cap = runner.captures["h"]
            return cap.session is not None and cap.session.done.is_set() and bool(cap.file_problems)

        await wait_for_async(failed, what="the hash failure to reach the instance", timeout_s=20.0)
        status = runner.captures["h"].progress().status
        assert (status.packet_capture_status, list(status.packet_capture_error), status.error_message) == (
            Status.ERROR,
            [CaptureError.LOCAL_FILE_FAILED],
            "/var/captures/h.cap: cannot be hashed: OSError: [Errno 5] Input/output error",
        )
        assert [f.sha256 for f in runner.captures["h"].session.files] == [""]
        await runner.shutdown()

    asyncio.run(body())
    [record] = [r for r in caplog.records if r.name == "fleetcap.node_agent.runner" and "hashing a finished file" in r.getMessage()]
    assert record.getMessage() == f"hashing a finished file ({root}/h.cap) failed: [Errno 5] Input/output error"
    assert record.exc_info is not None
