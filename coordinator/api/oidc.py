"""OpenID Connect bearer tokens (Microsoft Entra ID, Keycloak, any issuer with a JWKS): checked
with PyJWT, their roles read from one claim and mapped to fleetcap's.

A token counts only if it is signed with an asymmetric algorithm by a key of the configured
JWKS (never `none`, never an HMAC, whatever its header says), names the configured issuer and
audience, and has not expired (60 s of clock skew allowed). Its principal is `oidc:<name>`, the
name from `preferred_username` (else `sub`) cut to characters a log line carries safely. Roles
come from `--oidc-roles-claim` (a dotted path, such as Keycloak's `realm_access.roles`): a value
that is a role's name, or that `--oidc-role VALUE=ROLE` maps, grants it. OIDC never grants the
agent role: agents prove who they are with certificates.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any

import jwt

from fleetcap.coordinator.settings import OidcSettings
from fleetcap.core import transport
from fleetcap.core.auth import Principal, Role

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
LEEWAY_S = 60
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.@-]+")


class OidcError(ValueError):
    """OIDC settings that cannot be used; the message names the flag."""


def parse_role_map(values: list[str]) -> tuple[tuple[str, str], ...]:
    """`VALUE=ROLE` pairs. Raises OidcError naming --oidc-role."""
    pairs = []
    for item in values:
        value, sep, role = item.rpartition("=")
        if not sep or not value:
            raise OidcError(f"--oidc-role: '{item}' is not VALUE=ROLE")
        if role not in {r.value for r in Role} or role == Role.AGENT:
            raise OidcError(f"--oidc-role: '{role}' is not a role a token may hold ({', '.join(r for r in Role if r != Role.AGENT)})")
        pairs.append((value, role))
    return tuple(pairs)


class OidcVerifier:
    def __init__(self, settings: OidcSettings):
        if not (settings.issuer and settings.audience and settings.jwks):
            raise OidcError("--oidc-issuer, --oidc-audience and --oidc-jwks go together")
        self.settings = settings
        self._roles = {value: Role(role) for value, role in settings.role_map}
        self._client: jwt.PyJWKClient | None = None
        self._keys: jwt.PyJWKSet | None = None
        if settings.jwks.startswith(("https://", "http://")):
            if settings.jwks.startswith("http://") and not transport.is_local(_host_port(settings.jwks)):
                raise OidcError("--oidc-jwks: a JWKS URL beyond loopback must be https://")
            self._client = jwt.PyJWKClient(settings.jwks, cache_keys=True, lifespan=300, timeout=5)
        else:
            try:
                with open(settings.jwks) as f:
                    self._keys = jwt.PyJWKSet.from_dict(json.load(f))
            except (OSError, ValueError, jwt.PyJWTError) as e:
                raise OidcError(f"--oidc-jwks: cannot read {settings.jwks}: {e}") from None

    @staticmethod
    def looks_like_jwt(token: str) -> bool:
        return token.count(".") == 2 and token.startswith("ey")

    def _key(self, token: str) -> Any:
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        assert self._keys is not None
        kid = jwt.get_unverified_header(token).get("kid")
        matches = [k for k in self._keys.keys if kid is None or k.key_id == kid]
        if len(matches) != 1:
            raise jwt.InvalidTokenError(f"no single key in the JWKS for kid {kid!r}")
        return matches[0].key

    def principal(self, token: str) -> Principal | None:
        """The token's principal, or None (logged at debug, without the token) if it fails any check.
        Blocking: it may fetch the JWKS; call it off the event loop."""
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in ALGORITHMS:
                raise jwt.InvalidAlgorithmError(f"algorithm {header.get('alg')!r} is not accepted")
            claims = jwt.decode(
                token,
                self._key(token),
                algorithms=[header["alg"]],
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except (jwt.PyJWTError, ValueError, KeyError) as e:
            log.debug("OIDC token refused: %s", e)
            return None
        roles = frozenset(r for r in (self._role(v) for v in _claim(claims, self.settings.roles_claim)) if r)
        name = _NAME_CHARS.sub("-", str(claims.get("preferred_username") or claims["sub"]))[:100] or "unnamed"
        return Principal(name, roles, "oidc")

    def _role(self, value: str) -> Role | None:
        if value in self._roles:
            return self._roles[value]
        try:
            role = Role(value)
        except ValueError:
            return None
        return None if role is Role.AGENT else role


def _claim(claims: Mapping[str, Any], path: str) -> list[str]:
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        return value.split()  # a space-separated claim, like OAuth's scope
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _host_port(url: str) -> str:
    netloc = url.split("://", 1)[1].split("/", 1)[0]
    return netloc if ":" in netloc.rsplit("]", 1)[-1] else netloc + ":80"
