"""A small PKI for operators without one, in the manner of `consul tls`: a CA, and certificates
for the coordinator, agents, clients and gateways that encode identity and roles as
fleetcap.core.auth documents. Keys are ECDSA P-256; files are PEM, keys 0600.

    fleetcap tls ca create --out DIR            DIR/ca.pem, DIR/ca-key.pem
    fleetcap tls cert create --ca DIR --out DIR --coordinator --dns coord.example
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleetcap.core.auth import (
    AGENT_URI_PREFIX,
    COORDINATOR_ORG,
    COORDINATOR_SERVER_NAME,
    GATEWAY_ORG,
    Role,
    agent_uri,
)

CA_CERT, CA_KEY = "ca.pem", "ca-key.pem"
CA_DAYS = 3650
CERT_DAYS = 825  # the longest lifetime browsers accept for a server certificate
COORDINATOR_NAME = "fleetcap-coordinator"


class PkiError(ValueError):
    """A PKI request cannot be done; the message names the flag or file."""


@dataclasses.dataclass(frozen=True)
class Issued:
    cert_path: str
    key_path: str


def _write(path: str, data: bytes, mode: int) -> None:
    """Creates `path` (never through a symlink, never over an existing file) with `mode`."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except FileExistsError:
        raise PkiError(f"{path} exists; fleetcap tls never overwrites a key or certificate") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def create_ca(out_dir: str, *, name: str = "fleetcap CA") -> Issued:
    os.makedirs(out_dir, mode=0o700, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    issued = Issued(os.path.join(out_dir, CA_CERT), os.path.join(out_dir, CA_KEY))
    _write(issued.key_path, _key_pem(key), 0o600)
    _write(issued.cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return issued


def _load_ca(ca_dir: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        with open(os.path.join(ca_dir, CA_CERT), "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(os.path.join(ca_dir, CA_KEY), "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except (OSError, ValueError) as e:
        raise PkiError(f"--ca {ca_dir}: cannot read {CA_CERT} and {CA_KEY} ({e})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"--ca {ca_dir}: {CA_KEY} is not an EC key")
    return cert, key


def issue(
    ca_dir: str,
    out_dir: str,
    *,
    file_stem: str,
    common_name: str,
    organizations: list[str],
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
    uris: Sequence[str] = (),
    server: bool = False,
) -> Issued:
    """Writes OUT/<file_stem>.pem and OUT/<file_stem>-key.pem, signed by the CA in ca_dir."""
    ca_cert, ca_key = _load_ca(ca_dir)
    os.makedirs(out_dir, mode=0o700, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name), *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations)]
    )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    try:
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    except ValueError as e:
        raise PkiError(f"--ip: {e}") from None
    names += [x509.UniformResourceIdentifier(u) for u in uris]
    now = _now()
    usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    issued = Issued(os.path.join(out_dir, f"{file_stem}.pem"), os.path.join(out_dir, f"{file_stem}-key.pem"))
    _write(issued.key_path, _key_pem(key), 0o600)
    _write(issued.cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return issued


def issue_coordinator(ca_dir: str, out_dir: str, *, dns: Sequence[str], ips: Sequence[str]) -> Issued:
    return issue(
        ca_dir,
        out_dir,
        file_stem="coordinator",
        common_name=COORDINATOR_NAME,
        organizations=[COORDINATOR_ORG],
        dns=["localhost", COORDINATOR_SERVER_NAME, *dns],
        ips=["127.0.0.1", "::1", *ips],
        server=True,
    )


def _not_a_coordinator(name: str, dns: Sequence[str] = ()) -> None:
    """Refuses the coordinators' reserved name for any other holder (agents trust it)."""
    for given in (name, *dns):
        if given.lower() in (COORDINATOR_SERVER_NAME, COORDINATOR_NAME):
            raise PkiError(f"'{given}' is reserved for coordinator certificates (--coordinator)")


def issue_agent(ca_dir: str, out_dir: str, *, arm_id: str, instance_name: str) -> Issued:
    _not_a_coordinator(instance_name)
    return issue(ca_dir, out_dir, file_stem="agent", common_name=instance_name, organizations=[Role.AGENT], uris=[agent_uri(arm_id)])


def issue_client(ca_dir: str, out_dir: str, *, name: str, roles: Sequence[Role]) -> Issued:
    _not_a_coordinator(name)
    return issue(ca_dir, out_dir, file_stem=name, common_name=name, organizations=[str(r) for r in roles])


def issue_gateway(ca_dir: str, out_dir: str, *, name: str, dns: Sequence[str] = (), ips: Sequence[str] = ()) -> Issued:
    """One certificate for both of a gateway's ends: its HTTPS listener (server, with the names
    clients reach it by, loopback included) and mutual TLS to the coordinator (client, no role)."""
    _not_a_coordinator(name, dns)
    return issue(
        ca_dir,
        out_dir,
        file_stem=name,
        common_name=name,
        organizations=[GATEWAY_ORG],
        dns=["localhost", *dns],
        ips=["127.0.0.1", "::1", *ips],
        server=True,
    )


@dataclasses.dataclass(frozen=True)
class CertIdentity:
    """What a peer certificate says about its holder (auth.py documents the encoding)."""

    common_name: str
    organizations: tuple[str, ...]
    agent_uris: tuple[str, ...]


def read_identity(pem: bytes) -> CertIdentity:
    cert = x509.load_pem_x509_certificate(pem)
    cn = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = tuple(u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith(AGENT_URI_PREFIX))
    except x509.ExtensionNotFound:
        uris = ()
    return CertIdentity(cn[0] if cn else "", orgs, uris)
