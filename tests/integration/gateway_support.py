"""Starts `fleetcap gateway` on a free loopback port for a test module, and a tiny JSON client."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

from deploy.localfleet import LocalFleet
from fleetcap.core import pki
from fleetcap.core.auth import Role
from tests.conftest import AGENT_ENV, TOKENS
from tests.ports import bound_port
from tests.waiting import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARM = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/NetworkWatcherRG/providers/"
    "Microsoft.Network/networkWatchers/NetworkWatcher_westeurope/packetCaptures"
)


_GATEWAYS = itertools.count(1)  # each gateway of a test run: its log and certificate directory


class Gateway:
    """`fleetcap gateway` on a free loopback port, over HTTPS with a CA of its own (`ca`), or
    over plain HTTP with tls=False. `call` sends the admin token unless told otherwise."""

    def __init__(
        self, coordinator: str, workdir, *extra: str, tls: bool = True, host: str = "127.0.0.1", env: dict[str, str] | None = None
    ):
        self.workdir = str(workdir)
        self.tls = tls
        shown = f"[{host}]" if ":" in host else host
        tag = next(_GATEWAYS)
        self.log_path = os.path.join(self.workdir, f"gateway-{tag}.log")
        args = []
        if tls:
            pki_dir = os.path.join(self.workdir, f"gw-pki-{tag}")
            pki.create_ca(os.path.join(pki_dir, "ca"))
            issued = pki.issue_gateway(os.path.join(pki_dir, "ca"), pki_dir, name="gateway")
            self.ca = os.path.join(pki_dir, "ca", "ca.pem")
            self.cert = issued.cert_path
            args = ["--tls-cert", issued.cert_path, "--tls-key", issued.key_path]
        log = open(self.log_path, "wb")
        # Port 0: the gateway binds a port the OS gives it and names it in its log.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fleetcap", "--coordinator", coordinator, "gateway", "--listen", f"{shown}:0", *args, *extra],
            cwd=ROOT,
            stdout=log,
            stderr=log,
            env=env,
        )
        self.port = bound_port(self.log_path, r"gateway on https?://\S+:(\d+) ", what="the gateway's port", timeout_s=20, proc=self.proc)
        self.base = f"{'https' if tls else 'http'}://{shown}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=self.ca) if self.tls else None

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def stop(self) -> None:
        LocalFleet.stop_process(self.proc)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | None = None,
        *,
        token: str | None = TOKENS[Role.ADMIN],
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> tuple[int, Any, bytes]:
        """(status, headers (case-insensitive), body bytes) of one call."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"Content-Type": "application/json"} if data is not None else {}
        if token:
            h["Authorization"] = f"Bearer {token}"
        h.update(headers or {})
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context()) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None, **options: Any) -> tuple[int, Any]:
        status, _, payload = self.request(method, path, body, raw, **options)
        return status, (json.loads(payload) if payload and payload[:1] in (b"{", b"[") else payload)


@contextlib.contextmanager
def scale_set_agents(coordinator: str, workdir, vmss: str, instance_ids, resource_group: str = "rg1"):
    """Agents on lo for instances of a scale set, connected on entry and stopped on exit."""
    from fleetcap.clients import sdk

    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleetcap",
                "agent",
                "--coordinator",
                coordinator,
                "--vmss",
                vmss,
                "--instance-id",
                str(i),
                "--resource-group",
                resource_group,
                "--interface",
                "lo",
                "--capture-root",
                os.path.join(str(workdir), f"captures{i}"),
            ],
            cwd=ROOT,
            stdout=open(os.path.join(str(workdir), f"agent{i}.log"), "wb"),
            stderr=subprocess.STDOUT,
            env=AGENT_ENV,
        )
        for i in instance_ids
    ]
    try:
        wanted = {f"/virtualMachineScaleSets/{vmss}/virtualMachines/{i}" for i in instance_ids}
        with sdk.Client(coordinator) as c:
            wait_for(
                lambda: (
                    wanted
                    <= {a.id[a.id.index("/virtualMachineScaleSets/") :] for a in c.list_agents() if "/virtualMachineScaleSets/" in a.id}
                ),
                what=f"the agents of scale set {vmss}",
                timeout_s=30,
                interval_s=0.2,
            )
        yield
    finally:
        for p in procs:
            LocalFleet.stop_process(p)
