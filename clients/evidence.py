"""Checks a directory of capture files against a signed manifest, offline: the signature with
the coordinator's public key, then every file's size and SHA-256, then what the directory holds
that the manifest does not list. fleetcap.core.manifest has the signed form.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fleetcap.core import manifest
from fleetcap.core.integrity import sha256_file


@dataclasses.dataclass
class FileCheck:
    path: str      # relative to the directory, as the manifest names it
    status: str    # "ok" | "modified" | "missing" | "unsafe-path"
    detail: str = ""


@dataclasses.dataclass
class Verdict:
    signature: str   # "valid" | "invalid"
    signature_detail: str
    key_id: str
    capture: str
    files: list[FileCheck]
    unlisted: list[str]   # files in the directory the manifest does not list
    derived: list[str]    # the merged pcapng (made from the listed files; not itself signed)

    @property
    def verified(self) -> bool:
        return self.signature == "valid" and all(f.status == "ok" for f in self.files) and not self.unlisted

    def as_dict(self) -> dict[str, Any]:
        return {"verified": self.verified, "signature": self.signature, "signatureDetail": self.signature_detail,
                "keyId": self.key_id, "capture": self.capture,
                "files": [{k: v for k, v in dataclasses.asdict(f).items() if v} for f in self.files],
                "unlisted": self.unlisted, "derived": self.derived}


class ManifestError(ValueError):
    """A manifest or key that cannot be read at all; the message says what is wrong."""


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as e:
        raise ManifestError(f"the public key is not a PEM public key ({e})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ManifestError("the public key is not an Ed25519 key")
    return key


def _signature(doc: dict[str, Any], key: Ed25519PublicKey) -> tuple[str, str]:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if doc.get("algorithm") != manifest.ALGORITHM:
        return "invalid", f"algorithm {doc.get('algorithm')!r} is not {manifest.ALGORITHM}"
    if doc.get("keyId") != manifest.key_id(raw):
        return "invalid", f"signed with key {doc.get('keyId')!r}, not with this key ({manifest.key_id(raw)})"
    try:
        key.verify(base64.b64decode(str(doc.get("signature", "")), validate=True), manifest.canonical(doc["manifest"]))
    except (InvalidSignature, binascii.Error, ValueError):
        return "invalid", "the signature does not match the manifest: it was edited, or signed by another key"
    return "valid", ""


def _safe(rel: str) -> bool:
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and all(p not in ("", ".", "..") and "\x00" not in p for p in parts)


def verify(signed: bytes, public_key_pem: bytes, directory: str, *, manifest_path: str = "") -> Verdict:
    """Raises ManifestError for a manifest that is not a signed manifest at all."""
    try:
        doc = json.loads(signed)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"the manifest is not JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("manifest"), dict) or \
            not isinstance(doc["manifest"].get("files"), list):
        raise ManifestError('the manifest is not a signed manifest ({"manifest": {...}, "signature": ...})')
    if not os.path.isdir(directory):
        raise ManifestError(f"{directory} is not a directory")
    signature, detail = _signature(doc, load_public_key(public_key_pem))
    body = doc["manifest"]
    capture = str(body.get("capture", {}).get("name", "")) if isinstance(body.get("capture"), dict) else ""
    checks, listed = [], set()
    for entry in body["files"]:
        rel = str(entry.get("path", "")) if isinstance(entry, dict) else ""
        if not _safe(rel):
            checks.append(FileCheck(rel, "unsafe-path", "not a plain relative path; not read"))
            continue
        listed.add(rel)
        full = os.path.join(directory, *rel.split("/"))
        if not os.path.isfile(full) or os.path.islink(full):
            checks.append(FileCheck(rel, "missing"))
            continue
        size, digest = os.path.getsize(full), sha256_file(full)
        if (size, digest) != (entry.get("sizeBytes"), entry.get("sha256")):
            checks.append(FileCheck(rel, "modified", f"{size} bytes, SHA-256 {digest}; the manifest says "
                                                     f"{entry.get('sizeBytes')} bytes, {entry.get('sha256')}"))
        else:
            checks.append(FileCheck(rel, "ok"))
    skip = os.path.realpath(manifest_path) if manifest_path else ""
    unlisted: list[str] = []
    derived: list[str] = []
    for top, dirs, names in os.walk(directory):
        dirs.sort()
        for n in sorted(names):
            full = os.path.join(top, n)
            rel = os.path.relpath(full, directory).replace(os.sep, "/")
            if rel in listed or os.path.realpath(full) == skip:
                continue
            (derived if capture and rel == f"{capture}.pcapng" else unlisted).append(rel)
    return Verdict(signature, detail, str(doc.get("keyId", "")), capture, checks, unlisted, derived)
