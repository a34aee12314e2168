"""The signed manifest's form, shared by the coordinator that signs it and every client that
verifies it: the canonical bytes that are signed, and how a key is named.

A signed manifest is the JSON object {"manifest": BODY, "signature": S, "keyId": K,
"algorithm": "Ed25519"}. S is the base64 of the Ed25519 signature of canonical(BODY): BODY as
JSON with sorted keys, no spaces, UTF-8. BODY holds strings, integers, lists and objects only
(never a float), so that every JSON library reads and writes it back to the same bytes.
K is the first 16 hex digits of the SHA-256 of the raw 32-byte public key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

ALGORITHM = "Ed25519"
VERSION = 1


def canonical(body: Any) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def key_id(raw_public_key: bytes) -> str:
    return hashlib.sha256(raw_public_key).hexdigest()[:16]
