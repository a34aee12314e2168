"""Signed manifests: `capture manifest`, `capture verify`, `manifest-key show` and the offline `verify`."""

from __future__ import annotations

import argparse
import sys
import types
from typing import TYPE_CHECKING

from fleetcap.clients import sdk
from fleetcap.clients.cli.capture import write_out
from fleetcap.clients.cli.common import EXIT_ERROR, EXIT_OK, Commands, UsageError, optional
from fleetcap.clients.cli.output import emit

if TYPE_CHECKING:  # the cli extra's cryptography, imported when a verb needs it
    from fleetcap.clients import evidence


def cmd_manifest(client: sdk.Client, args: argparse.Namespace) -> int:
    write_out(args.out, client.manifest(name=args.name))
    return EXIT_OK


def cmd_manifest_key(client: sdk.Client, args: argparse.Namespace) -> int:
    pem, _ = client.manifest_key()
    write_out(args.out, pem.encode())
    return EXIT_OK


VERIFY_TABLE = [("Path", "path"), ("Status", "status"), ("Detail", "detail")]


def _verdict_out(verdict: evidence.Verdict, args: argparse.Namespace) -> int:
    d = verdict.as_dict()
    if args.output in ("table", "tsv"):
        print(
            f"signature: {d['signature']}" + (f" ({d['signatureDetail']})" if d["signatureDetail"] else "") + f", key {d['keyId']}",
            file=sys.stderr,
        )
        rows = (
            d["files"]
            + [{"path": p, "status": "unlisted"} for p in d["unlisted"]]
            + [{"path": p, "status": "derived", "detail": "made from the listed files; not signed"} for p in d["derived"]]
        )
        emit(rows, args, VERIFY_TABLE)
    else:
        emit(d, args, VERIFY_TABLE)
    return EXIT_OK if verdict.verified else EXIT_ERROR


def _evidence() -> types.ModuleType:  # the cli extra's cryptography, named if missing
    optional("cryptography", "verify")
    from fleetcap.clients import evidence

    return evidence


def cmd_capture_verify(client: sdk.Client, args: argparse.Namespace) -> int:
    evidence = _evidence()
    signed = client.manifest(name=args.name)
    pem, _ = client.manifest_key()
    try:
        return _verdict_out(evidence.verify(signed, pem.encode(), args.dir), args)
    except evidence.ManifestError as e:
        raise UsageError(str(e)) from None


def cmd_verify(args: argparse.Namespace) -> int:
    """Offline: a manifest file, a directory and the public key; no coordinator."""
    evidence = _evidence()
    try:
        with open(args.manifest, "rb") as f:
            signed = f.read()
        with open(args.public_key, "rb") as f:
            pem = f.read()
        return _verdict_out(evidence.verify(signed, pem, args.dir, manifest_path=args.manifest), args)
    except OSError as e:
        raise UsageError(f"{e.filename}: {e.strerror}") from None
    except evidence.ManifestError as e:
        raise UsageError(str(e)) from None


def add_parsers(sub: Commands) -> None:
    """Adds `manifest-key show` and the offline `verify`."""
    mk = sub.add_parser("manifest-key", help="the public key that verifies the coordinator's signed manifests")
    mk_show = mk.add_subparsers(dest="verb", required=True).add_parser("show", help="print the public key (PEM)")
    mk_show.add_argument("--out", help="write it to this file; default stdout")
    mk_show.set_defaults(func=cmd_manifest_key)
    ve = sub.add_parser(
        "verify", help="offline: check a directory of capture files against a signed manifest, with only the coordinator's public key"
    )
    ve.add_argument("manifest", help="the signed manifest (from `capture manifest`)")
    ve.add_argument("dir", help="the directory `capture download` wrote")
    ve.add_argument("--public-key", required=True, help="the public key (from `manifest-key show`), PEM")
    ve.set_defaults(func=cmd_verify, daemon=True)


def add_capture_parsers(verbs: Commands) -> None:
    """Adds `capture manifest` and `capture verify`."""
    mf = verbs.add_parser(
        "manifest",
        help="the capture's signed manifest (JSON): every file with its size, SHA-256 and packet times, signed by the coordinator",
    )
    mf.add_argument("--name", "-n", required=True)
    mf.add_argument("--out", help="write it to this file; default stdout")
    mf.set_defaults(func=cmd_manifest)
    vf = verbs.add_parser("verify", help="check a directory of downloaded files against the capture's signed manifest")
    vf.add_argument("--name", "-n", required=True)
    vf.add_argument("--dir", required=True, help="the directory `capture download` wrote")
    vf.set_defaults(func=cmd_capture_verify)
