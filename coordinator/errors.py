"""Domain errors. The gRPC edge maps each to one status code, in one table
(coordinator/api/status_codes.py)."""


class FleetcapError(Exception):
    """Base of every error a client may see; the message is safe to send."""


class InvalidArgument(FleetcapError):
    """A request field breaks a rule; the message names the field and the rule."""

    def __init__(self, field: str, rule: str):
        super().__init__(f"{field}: {rule}")
        self.field = field


class NotFound(FleetcapError):
    pass


class AlreadyExists(FleetcapError):
    pass


class Unimplemented(FleetcapError):
    pass


class FailedPrecondition(FleetcapError):
    pass


class ResourceExhausted(FleetcapError):
    pass


class Conflict(Exception):
    """A compare-and-swap lost a race; the caller retries. Never reaches a client."""


class StoreUnavailable(FleetcapError):
    """The state store cannot be reached right now."""


class PermissionDenied(FleetcapError):
    """The caller may not do this (an agent uploading for a capture that does not target it)."""


class DataLoss(FleetcapError):
    """Bytes arrived corrupted (a chunk's CRC-32) or stored bytes do not hash as the agent's."""


class Superseded(FleetcapError):
    """A newer stream took over the same work (a second upload of one file)."""


class StorageFailed(FleetcapError):
    """The storage account failed; the agent retries for a while and then gives up. Sent as
    UNAVAILABLE with the error reason StorageFailed in the trailing metadata."""
