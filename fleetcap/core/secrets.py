"""Secrets by reference: `env:VARIABLE` or `file:PATH`, never the secret itself.

A command line is visible to every user of the machine (ps, /proc/PID/cmdline), so a flag names
where a secret is, and the process reads it from there. Settings keep the reference; the secret
is read when the object that needs it is built, and never logged.
"""

from __future__ import annotations

import os


class SecretError(ValueError):
    """The reference is malformed, or names nothing readable; the message says which."""


def is_reference(source: str) -> bool:
    """`env:VAR` or `file:PATH`, with something after the colon."""
    kind, _, where = source.partition(":")
    return kind in ("env", "file") and bool(where)


def resolve(source: str) -> str:
    """The secret `source` refers to, stripped of surrounding whitespace; SecretError if the
    reference is malformed, or the variable or file is unset, unreadable or empty."""
    kind, _, where = source.partition(":")
    if kind == "env" and where:
        value = os.environ.get(where, "")
        if not value:
            raise SecretError(f"environment variable {where} is not set")
        return value
    if kind == "file" and where:
        try:
            with open(where) as f:
                value = f.read().strip()
        except OSError as e:
            raise SecretError(f"cannot read {where}: {e.strerror}") from None
        if not value:
            raise SecretError(f"{where} is empty")
        return value
    raise SecretError("give the secret as env:VARIABLE or file:PATH, never on the command line")
