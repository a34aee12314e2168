"""The deployment the security tests attack (tests/integration/conftest.py starts it as the
`secure` fixture): addresses, certificates and tokens made by `fleetcap tls`."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import grpc
import grpc.aio

from fleetcap.clients import sdk
from fleetcap.core import transport

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fleetcap(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleetcap", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)


@contextlib.asynccontextmanager
async def serve_double(add_servicer, servicer, socket_path: str):
    """A gRPC server in this process standing in for a real peer, on a unix socket."""
    server = grpc.aio.server()
    add_servicer(servicer, server)
    server.add_insecure_port(socket_path)
    await server.start()
    try:
        yield socket_path
    finally:
        await server.stop(None)


class Secure:
    """The deployment under attack: addresses, files and tokens."""

    def __init__(self, d) -> None:
        self.d = str(d)
        self.ca = os.path.join(self.d, "ca", "ca.pem")
        self.api = self.fleet = ""  # the ports the coordinator binds itself (conftest.py reads them)
        self.auth_file = os.path.join(self.d, "auth.toml")
        self.tokens: dict[str, str] = {}
        self.procs: list[subprocess.Popen[bytes]] = []

    def cert(self, *args: str) -> None:
        r = fleetcap("tls", "cert", "create", "--ca", os.path.join(self.d, "ca"), *args)
        assert r.returncode == 0, r.stderr

    def token(self, name: str, role: str) -> str:
        r = fleetcap("tls", "token", "create", "--name", name, "--role", role, "--auth-file", self.auth_file)
        assert r.returncode == 0, r.stderr
        self.tokens[name] = r.stdout.strip()
        return self.tokens[name]

    def client(self, token: str = "", **kw: str) -> sdk.Client:
        return sdk.Client(self.api, tls_ca=self.ca, token=token, timeout_s=10, **kw)

    def agent_channel(self, cert_dir: str, stem: str = "agent") -> grpc.aio.Channel:
        return transport.aio_channel(
            self.fleet,
            credentials=transport.ClientCredentials(
                tls_ca=self.ca, tls_cert=os.path.join(cert_dir, f"{stem}.pem"), tls_key=os.path.join(cert_dir, f"{stem}-key.pem")
            ),
        )
