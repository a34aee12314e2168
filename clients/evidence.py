"""Checks a directory of capture files against a signed manifest, offline: the signature with
the coordinator's public key, then every file's size and SHA-256, then what the directory holds
that the manifest does not list. fleetcap.core.manifest has the signed form.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import errno
import json
import os
import stat
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fleetcap.core import manifest
from fleetcap.core.integrity import sha256_stream


@dataclasses.dataclass
class FileCheck:
    path: str  # relative to the directory, as the manifest names it
    status: str  # "ok" | "modified" | "missing" | "unsafe-path"
    detail: str = ""


@dataclasses.dataclass
class Verdict:
    signature: str  # "valid" | "invalid"
    signature_detail: str
    key_id: str
    capture: str
    files: list[FileCheck]
    unlisted: list[str]  # files in the directory the manifest does not list
    derived: list[str]  # the merged pcapng (made from the listed files; not itself signed)

    @property
    def verified(self) -> bool:
        return self.signature == "valid" and all(f.status == "ok" for f in self.files) and not self.unlisted

    def as_dict(self) -> dict[str, Any]:
        return {
            "verified": self.verified,
            "signature": self.signature,
            "signatureDetail": self.signature_detail,
            "keyId": self.key_id,
            "capture": self.capture,
            "files": [{k: v for k, v in dataclasses.asdict(f).items() if v} for f in self.files],
            "unlisted": self.unlisted,
            "derived": self.derived,
        }


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


def _open_inside(directory: str, parts: list[str]) -> int:
    """The regular file at `parts` below `directory`, opened for reading through directory
    descriptors with O_NOFOLLOW at every step, so that no symbolic link, of a directory on the
    way or of the file, leads the check out of the directory. Raises OSError (ELOOP, ENOTDIR,
    ENOENT), and IsADirectoryError for anything but a regular file."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = child
        leaf = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(leaf).st_mode):
        os.close(leaf)
        raise IsADirectoryError(errno.EISDIR, "not a regular file")
    return leaf


def verify(signed: bytes, public_key_pem: bytes, directory: str, *, manifest_path: str = "") -> Verdict:
    """Raises ManifestError for a manifest that is not a signed manifest at all."""
    try:
        doc = json.loads(signed)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"the manifest is not JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("manifest"), dict) or not isinstance(doc["manifest"].get("files"), list):
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
        try:
            fd = _open_inside(directory, rel.split("/"))
        except FileNotFoundError:
            checks.append(FileCheck(rel, "missing"))
            continue
        except OSError:  # ELOOP or ENOTDIR: a symbolic link on the way, or not a file
            checks.append(FileCheck(rel, "missing", "a symbolic link or not a regular file on its path; not followed"))
            continue
        with os.fdopen(fd, "rb") as f:
            size, digest = os.fstat(f.fileno()).st_size, sha256_stream(f)
        if (size, digest) != (entry.get("sizeBytes"), entry.get("sha256")):
            checks.append(
                FileCheck(
                    rel,
                    "modified",
                    f"{size} bytes, SHA-256 {digest}; the manifest says {entry.get('sizeBytes')} bytes, {entry.get('sha256')}",
                )
            )
        else:
            checks.append(FileCheck(rel, "ok"))
    skip = os.path.realpath(manifest_path) if manifest_path else ""
    unlisted: list[str] = []
    derived: list[str] = []
    for top, dirs, names in os.walk(directory):  # os.walk never descends into a symlinked directory
        dirs.sort()
        for n in sorted(names):
            full = os.path.join(top, n)
            rel = os.path.relpath(full, directory).replace(os.sep, "/")
            if rel in listed or os.path.realpath(full) == skip:
                continue
            (derived if capture and rel == f"{capture}.pcapng" else unlisted).append(rel)
    return Verdict(signature, detail, str(doc.get("keyId", "")), capture, checks, unlisted, derived)
