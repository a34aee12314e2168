"""OpenID Connect tokens at the coordinator (as Entra ID or Keycloak issue them): a real
coordinator with --oidc-* flags and a JWKS given as a file or served on loopback; tokens made
here with PyJWT and keys of this test's own. Every forgery an attacker would try is refused, and
the same token works through the gateway, which only passes it on."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from deploy.localfleet import LocalFleet
from fleetcap.clients import sdk
from fleetcap.clients.errors import ErrorCode
from fleetcap.coordinator.api.oidc import _claim
from tests.conftest import write_auth_file
from tests.integration.gateway_support import ARM, ROOT, Gateway
from tests.waiting import started, wait_for

pytestmark = pytest.mark.integration
ISSUER, AUDIENCE = "https://login.example/tenant/v2.0", "api://fleetcap"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
VM1 = "/subscriptions/local/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1"


def jwks() -> dict:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
    return {"keys": [dict(public, kid="k1", use="sig", alg="RS256")]}


def token(roles=("reader",), *, key=KEY, alg="RS256", kid="k1", **claims) -> str:
    now = int(time.time())
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "0f1e2d",
        "preferred_username": "alice@example.com",
        "iat": now,
        "exp": now + 600,
        "roles": list(roles),
        **claims,
    }
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


@pytest.fixture(scope="module", params=["file", "url"])
def oidc_coordinator(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("oidc")
    (d / "jwks.json").write_text(json.dumps(jwks()))
    server = None
    if request.param == "url":
        handler = type(
            "H",
            (http.server.SimpleHTTPRequestHandler,),
            {
                "__init__": lambda self, *a, **k: http.server.SimpleHTTPRequestHandler.__init__(self, *a, directory=str(d), **k),
                "log_message": lambda self, *a: None,
            },
        )
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        source = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    else:
        source = str(d / "jwks.json")
    address = f"unix:{d}/api.sock"
    log_path = d / "coordinator.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleetcap",
            "coordinator",
            "--listen",
            address,
            "--store",
            "memory",
            "--auth-file",
            write_auth_file(str(d / "auth.toml")),
            "--data-dir",
            str(d / "data"),
            "--oidc-issuer",
            ISSUER,
            "--oidc-audience",
            AUDIENCE,
            "--oidc-jwks",
            source,
            "--oidc-role",
            "FleetCap.Operator=contributor",
        ],
        cwd=ROOT,
        stdout=open(log_path, "wb"),
        stderr=subprocess.STDOUT,
    )
    wait_for(
        lambda: started(proc, f"{d}/api.sock", log_path),
        what="the coordinator's API socket (made once it serves)",
        timeout_s=20,
    )
    yield address, log_path
    LocalFleet.stop_process(proc)
    if server:
        server.shutdown()


def call(address: str, bearer: str, what: str = "list"):
    with sdk.Client(address, token=bearer) as c:
        if what == "list":
            return c.list()
        return c.create(name="oidc-1", target=VM1, storage_account="local")


def test_roles_come_from_the_claim(oidc_coordinator):
    address, log_path = oidc_coordinator
    assert call(address, token(["reader"])) == []
    with pytest.raises(sdk.PermissionDenied) as e:
        call(address, token(["reader"]), "create")
    assert e.value.message == "oidc:alice@example.com (reader) may not call Create; it needs the role contributor"
    # Mapped by --oidc-role: past authorisation, to the service's own answer (no agent here).
    with pytest.raises(sdk.CaptureNotFound, match="target: no virtual machine 'vm1'"):
        call(address, token(["FleetCap.Operator"]), "create")
    # A token never makes an agent, and unknown values grant nothing.
    for roles in (["agent"], ["Owner"], []):
        with pytest.raises(sdk.PermissionDenied, match=r"\(no role\) may not call List"):
            call(address, token(roles))


@pytest.mark.parametrize(
    "forged",
    [
        "expired",
        "wrong audience",
        "wrong issuer",
        "another key",
        "unknown kid",
        "alg none",
        "HS256 with the public key",
        "no exp",
        "garbage",
    ],
)
def test_forged_tokens_are_refused(oidc_coordinator, forged):
    address, log_path = oidc_coordinator
    now = int(time.time())
    bearer = {
        "expired": lambda: token(exp=now - 120, iat=now - 1000),
        "wrong audience": lambda: token(aud="api://other"),
        "wrong issuer": lambda: token(iss="https://evil.example/"),
        "another key": lambda: token(key=OTHER_KEY),
        "unknown kid": lambda: token(kid="k9"),
        "alg none": lambda: jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now + 600, "roles": ["admin"]},
            None,
            algorithm="none",
            headers={"kid": "k1"},
        ),
        "HS256 with the public key": lambda: _hs256_with_public_key(now),
        "no exp": lambda: token(exp=None),
        "garbage": lambda: "eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
    }[forged]()
    with pytest.raises(sdk.Unauthenticated) as e:
        call(address, bearer)
    assert e.value.code == ErrorCode.UNAUTHENTICATED
    assert bearer not in log_path.read_text()  # the audit line names no token


def _hs256_with_public_key(now: int) -> str:
    """The algorithm-confusion forgery: HMAC keyed with the (public) RSA key's PEM."""
    import base64
    import hashlib
    import hmac

    pem = KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
    head = enc(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = enc(json.dumps({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now + 600, "roles": ["admin"]}).encode())
    sig = enc(hmac.new(pem, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


def test_the_gateway_passes_the_oidc_token_on(oidc_coordinator, tmp_path):
    address, _ = oidc_coordinator
    g = Gateway(address, tmp_path)
    try:
        assert g.call("GET", f"{ARM}?api-version=2024-05-01", token=token(["reader"])) == (200, {"value": []})
        status, err = g.call(
            "PUT",
            f"{ARM}/oidc-gw?api-version=2024-05-01",
            {"properties": {"target": VM1, "storageLocation": {"storageId": "local"}}},
            token=token(["reader"]),
        )
        assert (status, err["error"]["code"]) == (403, "AuthorizationFailed")
        assert g.call("GET", f"{ARM}?api-version=2024-05-01", token=token(key=OTHER_KEY))[0] == 401
    finally:
        g.stop()


def test_roles_claim_paths():
    claims = {"realm_access": {"roles": ["contributor", 3]}, "scp": "reader data-reader", "roles": "x"}
    assert _claim(claims, "realm_access.roles") == ["contributor"]
    assert _claim(claims, "scp") == ["reader", "data-reader"]
    assert _claim(claims, "missing.path") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--oidc-issuer", ISSUER], "--oidc-issuer, --oidc-audience and --oidc-jwks go together"),
        (
            ["--oidc-issuer", ISSUER, "--oidc-audience", "a", "--oidc-jwks", "http://idp.example/keys"],
            "--oidc-jwks: a JWKS URL beyond loopback must be https://",
        ),
        (
            ["--oidc-issuer", ISSUER, "--oidc-audience", "a", "--oidc-jwks", "/nonexistent/jwks.json"],
            "--oidc-jwks: cannot read /nonexistent/jwks.json",
        ),
        (["--oidc-role", "X=agent"], "--oidc-role: 'agent' is not a role a token may hold"),
        (["--oidc-role", "nothing"], "--oidc-role: 'nothing' is not VALUE=ROLE"),
    ],
)
def test_unusable_oidc_settings_are_refused_at_start(tmp_path, args, message):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleetcap",
            "coordinator",
            "--store",
            "memory",
            "--listen",
            f"unix:{tmp_path}/api.sock",
            "--data-dir",
            str(tmp_path),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
