"""Status, stop-reason and error vocabulary shared by agent and coordinator (docs/stop-reasons.md).

These strings are the wire values of InstanceStatus and PacketCaptureQueryStatusResult.
"""

# packetCaptureStatus (Azure's values).
NOT_STARTED = "NotStarted"
RUNNING = "Running"
STOPPED = "Stopped"
ERROR = "Error"
UNKNOWN = "Unknown"
FINAL_STATUSES = frozenset({STOPPED, ERROR})

# stopReason: one for every way a capture ends.
TIME_EXCEEDED = "TimeExceeded"            # timeLimitInSeconds reached (Azure's value)
TOTAL_BYTES_EXCEEDED = "TotalBytesExceeded"  # the next packet would cross totalBytesPerSession
STOPPED_BY_USER = "StoppedByUser"         # Stop was called
DELETED = "Deleted"                       # Delete was called while it ran
SESSION_TIME_EXCEEDED = "SessionTimeExceeded"  # continuous mode: sessionTimeLimitInSeconds
CAPTURE_FAILED = "CaptureFailed"          # libpcap or the file failed; see packetCaptureError
AGENT_STOPPED = "AgentStopped"            # the agent went away (its lease expired)
MIXED = "Mixed"                           # capture level only: instances stopped for different reasons

# packetCaptureError (Azure's values).
E_INTERNAL = "InternalError"
E_AGENT_STOPPED = "AgentStopped"
E_CAPTURE_FAILED = "CaptureFailed"
E_LOCAL_FILE_FAILED = "LocalFileFailed"
E_STORAGE_FAILED = "StorageFailed"
