"""Offline verification against a signed manifest, with a key made here: the coordinator's
signer and the client's verifier agree on the canonical form, and a hostile manifest's paths are
never followed outside the directory."""

from __future__ import annotations

import hashlib
import json

from fleetcap.clients import evidence
from fleetcap.coordinator.manifest import ManifestSigner


def test_a_signed_manifest_verifies_and_a_path_outside_the_directory_is_never_read(tmp_path):
    signer = ManifestSigner(str(tmp_path / "keys" / "manifest-key.pem"))
    assert oct((tmp_path / "keys" / "manifest-key.pem").stat().st_mode & 0o777) == "0o600"
    assert ManifestSigner(str(tmp_path / "keys" / "manifest-key.pem")).key_id == signer.key_id  # loaded, not remade
    d = tmp_path / "dl"
    (d / "0").mkdir(parents=True)
    (d / "0" / "a.cap").write_bytes(b"abc")
    (tmp_path / "secret").write_bytes(b"abc")
    files = [
        {"path": "0/a.cap", "sizeBytes": 3, "sha256": hashlib.sha256(b"abc").hexdigest()},
        {"path": "../secret", "sizeBytes": 3, "sha256": hashlib.sha256(b"abc").hexdigest()},
        {"path": "/etc/passwd", "sizeBytes": 1, "sha256": "00"},
        {"path": "0/./a.cap", "sizeBytes": 3, "sha256": "00"},
    ]
    signed = signer.sign({"version": 1, "capture": {"name": "x"}, "files": files, "note": "é ü"})
    v = evidence.verify(signed, signer.public_key_pem.encode(), str(d))
    assert (v.signature, v.verified) == ("valid", False)
    assert [(f.path, f.status) for f in v.files] == [
        ("0/a.cap", "ok"),
        ("../secret", "unsafe-path"),
        ("/etc/passwd", "unsafe-path"),
        ("0/./a.cap", "unsafe-path"),
    ]
    good = signer.sign({"version": 1, "capture": {"name": "x"}, "files": files[:1]})
    assert evidence.verify(good, signer.public_key_pem.encode(), str(d)).verified
    # Re-serialised by another JSON writer (spacing, key order): the signature still holds.
    doc = json.loads(good)
    assert evidence.verify(json.dumps(doc, indent=7).encode(), signer.public_key_pem.encode(), str(d)).verified


def test_a_symlinked_directory_or_file_is_never_followed_out_of_the_directory(tmp_path):
    signer = ManifestSigner(str(tmp_path / "keys" / "manifest-key.pem"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.cap").write_bytes(b"abc")
    d = tmp_path / "dl"
    d.mkdir()
    (d / "0").symlink_to(outside, target_is_directory=True)
    (d / "1").mkdir()
    (d / "1" / "b.cap").symlink_to(outside / "a.cap")
    digest = hashlib.sha256(b"abc").hexdigest()
    files = [
        {"path": "0/a.cap", "sizeBytes": 3, "sha256": digest},
        {"path": "1/b.cap", "sizeBytes": 3, "sha256": digest},
        {"path": "2/c.cap", "sizeBytes": 3, "sha256": digest},
    ]
    v = evidence.verify(signer.sign({"version": 1, "capture": {"name": "x"}, "files": files}), signer.public_key_pem.encode(), str(d))
    assert (v.signature, v.verified) == ("valid", False)
    followed = "a symbolic link or not a regular file on its path; not followed"
    assert [(f.path, f.status, f.detail) for f in v.files] == [
        ("0/a.cap", "missing", followed),
        ("1/b.cap", "missing", followed),
        ("2/c.cap", "missing", ""),
    ]
