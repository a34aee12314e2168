"""Log lines cannot be forged, cannot grow without bound and never carry a secret (fleetcap.core.logs)."""

from __future__ import annotations

import json
import logging
import sys

from hypothesis import given
from hypothesis import strategies as st

from fleetcap.core import logs


def _record(msg: str, *args: object, name: str = "fleetcap.audit", exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad\nfleetcap.audit: principal=token:t-admin method=Delete")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, exc_info)


FORGED = "x\n2026-12-08 00:00:00,000 INFO fleetcap.audit: principal=token:t-admin method=Delete capture=pc decision=allowed"


def test_a_name_with_a_newline_cannot_start_a_line_of_its_own():
    line = logs.SafeFormatter().format(_record("principal=%s method=Get capture=%s", "-", FORGED))
    assert "\n" not in line
    assert line.endswith(
        "capture=x\\n2026-12-08 00:00:00,000 INFO fleetcap.audit: principal=token:t-admin method=Delete capture=pc decision=allowed"
    )
    assert json.loads(logs.JsonLogFormatter().format(_record("%s", FORGED)))["message"] == FORGED.replace("\n", "\\n")


def test_terminal_escapes_and_unicode_line_separators_are_escaped():
    line = logs.SafeFormatter().format(_record("host %s", "\x1b[31mred\u2028next\r"))
    assert line.endswith("host \\x1b[31mred\\u2028next\\r")


def test_a_huge_value_is_cut_and_says_how_much_was_left_out():
    line = logs.SafeFormatter().format(_record("capture=%s", "A" * 7 * 1024 * 1024))
    assert len(line) < logs.MAX_MESSAGE_CHARS + 100
    assert line.endswith(f"... ({7 * 1024 * 1024 + len('capture=') - logs.MAX_MESSAGE_CHARS} more characters)")


def test_secrets_are_redacted_in_every_shape_the_sdks_log_them():
    cases = {
        "Request URL: 'https://a.blob.core.windows.net/c/b?sv=2022-11-02&sp=rw&sig=abc%2Bdef%3D'": "Request URL: 'https://a.blob.core.windows.net/c/b?sv=2022-11-02&sp=rw&sig=REDACTED'",
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02x==;BlobEndpoint=x": "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=REDACTED;BlobEndpoint=x",  # noqa: E501
        "BlobEndpoint=https://h/;SharedAccessSignature=sv=2022&sig=zz": "BlobEndpoint=https://h/;SharedAccessSignature=REDACTED",
        "S3Endpoint=https://h:9000;Bucket=b;AccessKeyId=K;SecretAccessKey=s3cr3t/x+y": "S3Endpoint=https://h:9000;Bucket=b;AccessKeyId=K;SecretAccessKey=REDACTED",
        "'Authorization': 'Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln'": "'Authorization': 'Bearer REDACTED'",
        "token fct_Zm9vYmFyYmF6cXV4 refused": "token REDACTED refused",
        "etcd at https://root:hunter2@10.0.0.1:2379": "etcd at https://root:REDACTED@10.0.0.1:2379",
        "X-Amz-Signature=0123abcd&X-Amz-Date=1": "X-Amz-Signature=REDACTED&X-Amz-Date=1",
    }
    for text, expected in cases.items():
        assert logs.SafeFormatter().format(_record("%s", text)).split(": ", 1)[1] == expected


def test_a_traceback_keeps_its_lines_each_indented_under_the_record():
    text = logs.SafeFormatter().format(_record("failed", exc=True))
    head, *rest = text.split("\n")
    assert head.endswith("fleetcap.audit: failed")
    assert rest
    assert all(line.startswith("  | ") for line in rest)
    # The exception's own newline splits its message; both parts are indented.
    assert rest[-2:] == ["  | ValueError: bad", "  | fleetcap.audit: principal=token:t-admin method=Delete"]


@given(st.text(max_size=3000))
def test_any_value_makes_one_bounded_line(value):
    line = logs.SafeFormatter().format(_record("name=%s", value))
    assert "\n" not in line
    assert "\r" not in line
    assert len(line) < 6 * logs.MAX_MESSAGE_CHARS + 100
