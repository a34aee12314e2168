"""Who a caller is, and what it may do: roles, how an identity is carried in a certificate or a
bearer token, and the auth file that holds the tokens.

Every component agrees on this: `fleetcap tls` writes certificates and tokens in this form,
the coordinator reads them back, and docs/security.md documents it for operators who bring
their own PKI.

Certificates (X.509, issued by the CA the coordinator trusts):
  - a client:  CN = its name; one Organization (O) per role, e.g. O=contributor (as Kubernetes
    carries groups);
  - an agent:  CN = its instance name; O=agent; a URI SAN
    `fleetcap://agent/subscriptions/S/resourceGroups/G/providers/Microsoft.Compute/...`, the
    instance's ARM id, which is the identity it may claim;
  - the coordinator: CN=fleetcap-coordinator; DNS and IP SANs, among them the DNS name
    `fleetcap-coordinator` (COORDINATOR_SERVER_NAME), which agents require of their peer and no
    other holder may carry; O=fleetcap-coordinator;
  - a gateway: CN = its name; O=fleetcap-gateway (no role: it forwards its callers' tokens).
Tokens: `authorization: Bearer <token>` metadata; the auth file keeps only their SHA-256.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import os
import re
import secrets
import tomllib

from fleetcap.core.naming import parse_compute_id

AGENT_URI_PREFIX = "fleetcap://agent"
COORDINATOR_ORG = "fleetcap-coordinator"
# The DNS name every coordinator certificate carries and no other may: an agent verifies its
# peer's certificate against this name, not the address it dialled, so a certificate of the same
# CA held by a gateway, a client or another agent cannot pose as a coordinator.
COORDINATOR_SERVER_NAME = "fleetcap-coordinator"
GATEWAY_ORG = "fleetcap-gateway"
# A name in a certificate or the auth file: what a log line and an audit entry can carry safely.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
TOKEN_BYTES = 32


class Role(enum.StrEnum):
    """What a caller may do. Each role includes the ones before it, but `agent`, which is only
    for the fleet service and only for the agent's own identity."""

    READER = "reader"  # get, list, status, watch, agents, storage accounts
    DATA_READER = "data-reader"  # reader plus the pcap bytes (download, follow, read)
    CONTRIBUTOR = "contributor"  # data-reader plus create, stop, delete
    ADMIN = "admin"  # everything a client can do
    AGENT = "agent"  # the fleet service, as its own instance

    def allows(self, needed: Role) -> bool:
        if self is Role.AGENT or needed is Role.AGENT:
            return self is needed
        return _RANK[self] >= _RANK[needed]


_RANK = {Role.READER: 1, Role.DATA_READER: 2, Role.CONTRIBUTOR: 3, Role.ADMIN: 4}


@dataclasses.dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    name: str
    roles: frozenset[Role]
    via: str  # "certificate" | "token"
    agent_id: str = ""  # an agent certificate's instance ARM id (or "" for any agent token)

    def allows(self, needed: Role) -> bool:
        return any(role.allows(needed) for role in self.roles)

    def __str__(self) -> str:
        return f"{self.via}:{self.name}"


class AuthError(ValueError):
    """An auth file or a credential is malformed; the message names the entry and the rule."""


def parse_roles(values: list[str] | tuple[str, ...], where: str) -> frozenset[Role]:
    roles = set()
    for value in values:
        try:
            roles.add(Role(value))
        except ValueError:
            raise AuthError(f"{where}: '{value}' is not a role ({', '.join(Role)})") from None
    return frozenset(roles)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "fct_" + secrets.token_urlsafe(TOKEN_BYTES)


def agent_uri(arm_id: str) -> str:
    return AGENT_URI_PREFIX + arm_id


def agent_id_from_uri(uri: str) -> str:
    """The instance ARM id an agent certificate's URI SAN names; "" if it names none."""
    if not uri.startswith(AGENT_URI_PREFIX + "/"):
        return ""
    arm_id = uri[len(AGENT_URI_PREFIX) :]
    parsed = parse_compute_id(arm_id)
    return arm_id if parsed is not None and (not parsed.scale_set or parsed.instance_id) else ""


@dataclasses.dataclass(frozen=True)
class TokenEntry:
    name: str
    roles: frozenset[Role]
    sha256: str


@dataclasses.dataclass(frozen=True)
class AuthFile:
    """The coordinator's auth file (TOML):

    revoked_certificates = ["alice"]       # CNs of client certificates no longer accepted

    [[token]]
    name = "ci"
    roles = ["contributor"]
    sha256 = "…"                           # of the token; the token itself is never stored
    """

    tokens: tuple[TokenEntry, ...] = ()
    revoked_certificates: frozenset[str] = frozenset()

    @classmethod
    def load(cls, path: str) -> AuthFile:
        """Raises OSError, or AuthError naming the entry and the rule."""
        with open(path, "rb") as f:
            try:
                data = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise AuthError(f"{path}: not valid TOML ({e})") from None
        unknown = set(data) - {"token", "revoked_certificates"}
        if unknown:
            raise AuthError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
        tokens, names = [], set()
        for i, entry in enumerate(data.get("token", [])):
            where = f"{path}: token[{i}]"
            if not isinstance(entry, dict) or set(entry) != {"name", "roles", "sha256"}:
                raise AuthError(f"{where}: needs exactly name, roles and sha256")
            name, roles, digest = entry["name"], entry["roles"], entry["sha256"]
            if not isinstance(name, str) or not NAME_RE.match(name):
                raise AuthError(f"{where}.name: must match {NAME_RE.pattern}")
            if name in names:
                raise AuthError(f"{where}.name: '{name}' appears twice")
            if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
                raise AuthError(f"{where}.roles: must be a non-empty list of roles")
            if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise AuthError(f"{where}.sha256: must be 64 lowercase hex digits")
            names.add(name)
            tokens.append(TokenEntry(name, parse_roles(roles, f"{where}.roles"), digest))
        revoked = data.get("revoked_certificates", [])
        if not isinstance(revoked, list) or not all(isinstance(r, str) for r in revoked):
            raise AuthError(f"{path}: revoked_certificates must be a list of names")
        return cls(tuple(tokens), frozenset(revoked))

    def principal_for_token(self, token: str) -> Principal | None:
        """The token's principal, compared in constant time against every entry."""
        digest = token_hash(token)
        found = None
        for entry in self.tokens:
            if hmac.compare_digest(entry.sha256, digest):
                found = entry
        return Principal(found.name, found.roles, "token") if found else None

    def render(self) -> str:
        lines = [f"revoked_certificates = [{', '.join(_quote(n) for n in sorted(self.revoked_certificates))}]", ""]
        for t in self.tokens:
            lines += [
                "[[token]]",
                f"name = {_quote(t.name)}",
                f"roles = [{', '.join(_quote(r) for r in sorted(t.roles))}]",
                f"sha256 = {_quote(t.sha256)}",
                "",
            ]
        return "\n".join(lines)

    def save(self, path: str) -> None:
        """Writes the file atomically, 0600."""
        tmp = f"{path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.render())
        os.replace(tmp, path)

    def with_token(self, name: str, roles: frozenset[Role], token: str) -> AuthFile:
        if not NAME_RE.match(name):
            raise AuthError(f"--name: '{name}' must match {NAME_RE.pattern}")
        if any(t.name == name for t in self.tokens):
            raise AuthError(f"--name: a token named '{name}' exists; revoke it first")
        return dataclasses.replace(self, tokens=(*self.tokens, TokenEntry(name, roles, token_hash(token))))

    def without_token(self, name: str) -> AuthFile:
        if not any(t.name == name for t in self.tokens):
            raise AuthError(f"--name: no token named '{name}'")
        return dataclasses.replace(self, tokens=tuple(t for t in self.tokens if t.name != name))


def _quote(value: str) -> str:
    # Names, roles and digests match NAME_RE, Role or hex: nothing to escape but for safety.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
