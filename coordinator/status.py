"""The instance state machine, as data, and the capture-level aggregate of its instances."""

from __future__ import annotations

from collections.abc import Iterable

from fleetcap.core.vocabulary import CaptureError, Status, StopReason, is_active, is_terminal
from fleetcap.v1 import captures_pb2, state_pb2

# Allowed moves of one instance's packetCaptureStatus. Progress within a state is allowed
# (Running → Running); nothing leaves Error, and Stopped may only turn into Error (an upload
# that fails after the capture ended).
TRANSITIONS: dict[str, frozenset[str]] = {
    Status.NOT_STARTED: frozenset({Status.NOT_STARTED, Status.RUNNING, Status.STANDBY, Status.TRIGGERED, Status.STOPPED, Status.ERROR}),
    Status.RUNNING: frozenset({Status.RUNNING, Status.STOPPED, Status.ERROR}),
    # A flight recorder: armed, then triggered (or stopped while armed, storing nothing).
    Status.STANDBY: frozenset({Status.STANDBY, Status.TRIGGERED, Status.STOPPED, Status.ERROR}),
    Status.TRIGGERED: frozenset({Status.TRIGGERED, Status.STOPPED, Status.ERROR}),
    Status.STOPPED: frozenset({Status.STOPPED, Status.ERROR}),
    Status.ERROR: frozenset({Status.ERROR}),
}


class IllegalTransition(Exception):
    def __init__(self, old: str, new: str):
        super().__init__(f"instance status cannot move from {old} to {new}")


def check_transition(old: str, new: str, old_errors: Iterable[str] = ()) -> None:
    """Raises IllegalTransition. One exception to "nothing leaves Error": an instance failed
    only because its agent went silent (AgentStopped) takes whatever the agent reports when
    it comes back, since its capture went on (a network cut, a coordinator restart)."""
    if old == Status.ERROR and list(old_errors) == [CaptureError.AGENT_STOPPED]:
        return
    if new not in TRANSITIONS.get(old, frozenset()):
        raise IllegalTransition(old, new)


def is_final(status: captures_pb2.InstanceStatus) -> bool:
    return is_terminal(status.packet_capture_status)


def is_settled_for_good(status: captures_pb2.InstanceStatus, upload: bool) -> bool:
    """An instance whose record nothing may change any more: it has ended and settled (its files
    hashed, and committed if it uploads). The one exception is an instance failed only because
    its agent went silent (AgentStopped): its agent may still report how the capture went on."""
    if list(status.packet_capture_error) == [CaptureError.AGENT_STOPPED]:
        return False
    return uploads_settled(status, upload)


def uploads_settled(status: captures_pb2.InstanceStatus, upload: bool) -> bool:
    """True when nothing more will change for this instance: it has ended, its files are
    hashed, and if it uploads, they are committed (or it failed)."""
    if not is_final(status):
        return False
    if status.packet_capture_status == Status.ERROR or not status.capture_start_time:
        return True  # failed, or stopped before it ever started: no file will come
    if not upload:  # its files stay on the instance: settled once each is hashed (what a download checks)
        return all(f.sha256 for f in status.files)
    if not status.files:  # a flight recorder stopped while armed: it stored nothing, by design
        return True
    return bool(status.files) and all(f.upload_complete for f in status.files)


def aggregate(
    capture: state_pb2.CaptureRecord, instances: Iterable[state_pb2.InstanceRecord]
) -> captures_pb2.PacketCaptureQueryStatusResult:
    res = capture.resource
    out = captures_pb2.PacketCaptureQueryStatusResult(name=res.name, id=res.id)
    statuses = [i.status for i in sorted(instances, key=lambda i: _order(i.status.instance_id))]
    out.instances.extend(statuses)
    kinds = [s.packet_capture_status for s in statuses]
    starts = sorted(s.capture_start_time for s in statuses if s.capture_start_time)
    out.capture_start_time = starts[0] if starts else ""
    if not kinds:
        out.packet_capture_status = Status.UNKNOWN
    elif any(is_active(k) for k in kinds):
        # A flight recorder is Triggered from its trigger on, Standby while any instance is armed.
        if capture.trigger_time or Status.TRIGGERED in kinds:
            out.packet_capture_status = Status.TRIGGERED
        elif all(k == Status.NOT_STARTED for k in kinds):
            out.packet_capture_status = Status.NOT_STARTED
        else:
            out.packet_capture_status = Status.STANDBY if Status.STANDBY in kinds else Status.RUNNING
    elif all(k == Status.ERROR for k in kinds):
        out.packet_capture_status = Status.ERROR
    else:
        out.packet_capture_status = Status.STOPPED
    errors: list[str] = []
    for s in statuses:
        errors += [e for e in s.packet_capture_error if e not in errors]
    out.packet_capture_error.extend(errors)
    out.trigger_time, out.trigger_source = capture.trigger_time, capture.trigger_source
    out.trigger_after_seconds = capture.trigger_after_s
    if is_terminal(out.packet_capture_status):
        if capture.stop_requested:
            out.stop_reason = capture.stop_requested
        else:
            found = {s.stop_reason for s in statuses if s.stop_reason}
            out.stop_reason = found.pop() if len(found) == 1 else (StopReason.MIXED if found else "")
    return out


def _order(instance_id: str) -> tuple[int, str]:
    return (int(instance_id), "") if instance_id.isdigit() else (1 << 62, instance_id)
