"""Log lines that cannot be forged, cannot fill a disk and never carry a secret.

Every daemon and client logs through one handler whose formatter is in this module, so the rules
hold for every logger (ours, grpc's, the Azure SDK's, uvicorn's) at every level:
- control characters in a message are escaped (a newline becomes the two characters `\\n`), so
  text a caller chose (a capture name, an agent's hostname) can never start a line of its own;
- a message is cut at MAX_MESSAGE_CHARS, saying how much was left out;
- secrets are redacted by pattern: a SAS signature, an account or secret key, a bearer token,
  a fleetcap token, a password in a URL.
A traceback keeps its lines, each indented under the record with `  | `, so no line of it can
pass for a record either.
"""

from __future__ import annotations

import datetime
import json
import logging
import re

# Long enough for any line fleetcap writes (the longest, an agent's welcome, is about 600
# characters); short enough that a hostile value repeated by a flood of anonymous calls costs
# the disk little.
MAX_MESSAGE_CHARS = 4096
REDACTED = "REDACTED"

# Each pattern keeps its first group (the key) and replaces the value after it.
_SECRETS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"(SharedAccessSignature=)[^;\s'\"]+",  # a whole SAS in a connection string
        r"([?&;]sig=)[^&\s;'\"]+",  # a SAS signature in a URL
        r"((?:AccountKey|SecretAccessKey|SessionToken|Password)=)[^;&\s'\"]+",
        r"((?:x-amz-signature|x-amz-security-token|x-amz-credential)=)[^&\s'\"]+",
        r"(authorization['\"]?\s*[:=]\s*['\"]?(?:bearer|basic|sharedkey|aws4-hmac-sha256)\s+)[^\s'\",]+",
        r"(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}",
        r"(\b)fct_[A-Za-z0-9_-]+",  # fleetcap's own tokens, wherever they appear
        r"(://[^/\s:@]+:)[^@\s/]+(?=@)",  # user:password@ in a URL
    )
]
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def redact(text: str) -> str:
    """`text` with every secret the patterns know replaced by REDACTED."""
    for pattern in _SECRETS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def escape_control(text: str) -> str:
    """Control characters as escapes (`\\n`, `\\x1b`, `\\u2028`); everything else unchanged."""
    return _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text`, cut at `limit` characters with a note of how many were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def safe(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """One line of log text from any string: bounded, redacted, and escaped."""
    # Bound first (a 7 MiB value is not run through the patterns), with room for a secret cut
    # in half at the edge to still be matched.
    return escape_control(redact(bounded(text, limit)))


def _message(record: logging.LogRecord) -> str:
    try:
        message = record.getMessage()
    except Exception as e:  # a malformed call (wrong argument count) must not lose the record
        message = f"{record.msg!r} (unformattable: {e})"
    return safe(message)


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    text = formatter.formatException(record.exc_info) if record.exc_info else ""
    if record.stack_info:
        text = f"{text}\n{formatter.formatStack(record.stack_info)}" if text else formatter.formatStack(record.stack_info)
    return "\n".join("  | " + escape_control(redact(line)) for line in text.splitlines())


class SafeFormatter(logging.Formatter):
    """The text format: `time level logger: message`, the message made safe, a traceback indented."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        head = f"{self.formatTime(record)} {record.levelname} {escape_control(record.name)}: {_message(record)}"
        tail = _exception_text(self, record)
        return f"{head}\n{tail}" if tail else head


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line: time (RFC 3339, UTC), level, logger, message, and the exception's
    text when there is one; the message made safe as in the text format."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
        }
        if record.exc_info or record.stack_info:
            entry["exception"] = _exception_text(self, record)
        return json.dumps(entry)


def configure(level: str, *, json_lines: bool = False) -> None:
    """The process's one log handler, on stderr, with the safe formatter (none if the root logger
    has handlers already, as under pytest)."""
    import sys

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter() if json_lines else SafeFormatter())
    logging.basicConfig(level=level, handlers=[handler])
