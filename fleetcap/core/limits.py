"""The documented bounds of a capture: Azure's ranges, and fleetcap's caps on work per
request. The coordinator validates a create against them, and each agent checks every
StartCapture against them again, trusting nothing it is sent (docs/security.md)."""

from __future__ import annotations

import posixpath
import re

from fleetcap.core.naming import CAPTURE_ROOT

U32_MAX = 4294967295
MAX_TIME_LIMIT_S = 18000  # timeLimitInSeconds (Azure)
MAX_SESSION_S = 604800  # captureSettings.sessionTimeLimitInSeconds (Azure)
MAX_FILE_COUNT = 10000  # captureSettings.fileCount (Azure)
# A capture file starts with a 24-byte pcap header, so a smaller byte limit holds nothing.
MIN_TOTAL_BYTES = 24
# A ring file holds the 24-byte header and at least one record (16 + an Ethernet header).
MIN_FILE_SIZE = 24 + 16 + 14
# The flight recorder (standbyInSeconds, standbyBytes; fleetcap's). The ring is 8 files, each of
# which must hold the largest record (16 + a 262144-byte snap length), hence 8 MiB at least.
MAX_STANDBY_S = 3600
MIN_STANDBY_BYTES = 8 << 20
DEFAULT_STANDBY_BYTES = 100 << 20
MAX_TRIGGER_NOTE_CHARS = 200
# fleetBytesLimit (fleetcap's): the whole fleet's files, headers included.
MIN_FLEET_BYTES = 1 << 20
MAX_FLEET_BYTES = 1 << 50
# Caps on work per request (fleetcap's; Azure documents none). They bound the filter compile,
# which is superlinear in the expression, and the size of every record.
MAX_FILTERS = 32  # filters[]
MAX_FILTER_FIELD_CHARS = 1024  # each filter field (a ';' list of addresses or ports)
MAX_BPF_CHARS = 4096  # bpfFilter
MAX_SCOPE_ENTRIES = 1000  # scope.include and scope.exclude, each (a scale set's maximum)

# Azure: 1-80 characters; letters, digits, '_', '.', '-'; starts with a letter or digit and
# ends with a letter, digit or '_'.
CAPTURE_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,78}[A-Za-z0-9_])?$")


def capture_path_problem(path: str) -> str:
    """Why `path` is not a Linux capture path (absolute, under /var/captures, ending in .cap,
    not escaping); "" if it is one."""
    if not path.startswith(CAPTURE_ROOT + "/"):
        return f"'{path}' must start with {CAPTURE_ROOT}/"
    if not path.endswith(".cap"):
        return f"'{path}' must end in .cap"
    if "\x00" in path or ".." in path.split("/"):
        return f"'{path}' must not contain '..' or NUL"
    normal = posixpath.normpath(path)
    if not normal.startswith(CAPTURE_ROOT + "/") or normal == CAPTURE_ROOT:
        return f"'{path}' escapes {CAPTURE_ROOT}"
    return ""
