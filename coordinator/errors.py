"""Domain errors. The gRPC edge maps each to one status code (coordinator/api/status_codes.py)."""


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
