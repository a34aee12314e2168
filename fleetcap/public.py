"""The names `import fleetcap` offers (`fleetcap.Client`, ...): the SDK's, re-exported.

This module sits in the top layer of the import contract (`.importlinter`), beside the
composition root, so that nothing below it can reach the SDK through the root package. The
root package's `__init__` loads it on first use of one of these names, so that importing
`fleetcap.v1` or `fleetcap.core` (as the daemons do) does not load the SDK.
"""

from fleetcap.clients.sdk import (
    AsyncClient,
    CaptureAlreadyExists,
    CaptureNotFound,
    Client,
    CoordinatorUnavailable,
    ErrorCode,
    FleetcapError,
    IncompleteDownload,
    InvalidCapture,
    PermissionDenied,
    QuotaExceeded,
    Unauthenticated,
    UnsafeName,
)

__all__ = [
    "AsyncClient",
    "CaptureAlreadyExists",
    "CaptureNotFound",
    "Client",
    "CoordinatorUnavailable",
    "ErrorCode",
    "FleetcapError",
    "IncompleteDownload",
    "InvalidCapture",
    "PermissionDenied",
    "QuotaExceeded",
    "Unauthenticated",
    "UnsafeName",
]
