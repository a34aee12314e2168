"""A single-node etcd the coordinator starts for itself when no --etcd is given.

It serves clients over TLS only, with client-certificate authentication: the first start makes
a CA, a server certificate for 127.0.0.1 and a client certificate under the data directory
(fleetcap.core.pki, keys 0600), and only a holder of that client certificate is served. Its peer
listener uses the same certificates. Metrics are not served on a port of their own.

The other flags are the ones the dependency lab measured (docs/decisions.md): loopback only, zap
logging, and short heartbeat/election timings so a single node is leader in ~0.1 s.
Used by `fleetcap coordinator` and by the tests, which need a real etcd too.

etcd runs in a session of its own, so a signal sent to the coordinator's process group (a closed
terminal's SIGHUP, `kill -HUP -PGID`, a process manager) does not reach it; `supervise` watches
it, restarts it on the same ports and data with backoff, and gives up (the coordinator then exits
non-zero) when it cannot come back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable

from fleetcap.core import pki
from fleetcap.core.transport import free_port

ETCD_BINARY = "etcd"
# Two ports are picked free and then bound by etcd: another process may take one in between,
# so a start that loses that race tries again with new ports.
START_ATTEMPTS = 3
# Waits before each restart of an etcd that exited: about 30 s in all, then the coordinator
# gives up and exits non-zero (a process manager restarts it whole, and says so).
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)

log = logging.getLogger(__name__)


class EtcdError(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class EtcdTls:
    """What a client needs to reach an etcd over TLS: its CA, and a client certificate."""

    ca: str
    cert: str = ""
    key: str = ""


def make_pki(directory: str, host: str) -> tuple[EtcdTls, EtcdTls]:
    """(server, client) certificates for an etcd on `host`, made once under `directory`."""
    ca_dir = os.path.join(directory, "ca")
    if not os.path.exists(os.path.join(ca_dir, pki.CA_CERT)):
        pki.create_ca(ca_dir, name="fleetcap embedded etcd CA")
        pki.issue(
            ca_dir,
            directory,
            file_stem="server",
            common_name="etcd",
            organizations=["fleetcap-etcd"],
            dns=["localhost"],
            ips=[host],
            server=True,
        )
        pki.issue(ca_dir, directory, file_stem="client", common_name="fleetcap-coordinator", organizations=["fleetcap-coordinator"])
    ca = os.path.join(ca_dir, pki.CA_CERT)
    return (
        EtcdTls(ca, os.path.join(directory, "server.pem"), os.path.join(directory, "server-key.pem")),
        EtcdTls(ca, os.path.join(directory, "client.pem"), os.path.join(directory, "client-key.pem")),
    )


def tls_flags(server: EtcdTls) -> list[str]:
    """etcd's flags for client and peer TLS with client-certificate authentication."""
    return [
        "--cert-file",
        server.cert,
        "--key-file",
        server.key,
        "--trusted-ca-file",
        server.ca,
        "--client-cert-auth",
        "--peer-cert-file",
        server.cert,
        "--peer-key-file",
        server.key,
        "--peer-trusted-ca-file",
        server.ca,
        "--peer-client-cert-auth",
    ]


def healthy(url: str, client: EtcdTls) -> bool:
    """Whether the etcd at `url` (https) answers its health check to this client."""
    context = ssl.create_default_context(cafile=client.ca)
    context.load_cert_chain(client.cert, client.key)
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1, context=context) as r:
            return b'"health":"true"' in r.read()
    except OSError:
        return False


COMPACTION_RETENTION = "10m"
"""History the embedded etcd keeps. etcd keeps every revision until compacted, and compacts
nothing by default: 1,000 agents' progress (150 writes a second per replica) would fill its
2 GiB backend in about half a day, after which etcd refuses every write (NOSPACE). fleetcap
never reads an old revision (a watch that breaks reads everything again), so ten minutes is
plenty; etcd reuses the compacted space."""


class EmbeddedEtcd:
    def __init__(
        self, data_dir: str, *, host: str = "127.0.0.1", log_path: str | None = None, compaction_retention: str = COMPACTION_RETENTION
    ):
        self.data_dir = data_dir
        self.host = host
        self.compaction_retention = compaction_retention
        self.client_port = self.peer_port = 0
        self.log_path = log_path or os.path.join(data_dir, "etcd.log")
        self.process: subprocess.Popen[bytes] | None = None
        self.server_tls, self.client_tls = EtcdTls(""), EtcdTls("")

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedEtcd:
        binary = shutil.which(ETCD_BINARY) or "/usr/bin/etcd"
        if not os.path.exists(binary):
            raise EtcdError("etcd is not installed (Debian package etcd-server); run 'make setup' or pass --etcd")
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        self.server_tls, self.client_tls = make_pki(os.path.join(self.data_dir, "pki"), self.host)
        for attempt in range(START_ATTEMPTS):
            try:
                return self._start(binary, timeout_s)
            except EtcdError as e:
                if "address already in use" not in str(e) or attempt + 1 == START_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def restart(self, timeout_s: float = 20.0) -> EmbeddedEtcd:
        """Stops etcd and starts it again on the same ports, data and certificates: what a
        client sees of an etcd restart (bench/chaos_soak.py)."""
        self.stop()
        return self._start(shutil.which(ETCD_BINARY) or "/usr/bin/etcd", timeout_s, same_ports=True)

    def start_again(self, timeout_s: float = 20.0) -> EmbeddedEtcd:
        """Starts etcd after it exited, on the same ports, data and certificates."""
        return self._start(shutil.which(ETCD_BINARY) or "/usr/bin/etcd", timeout_s, same_ports=True)

    def _start(self, binary: str, timeout_s: float, *, same_ports: bool = False) -> EmbeddedEtcd:
        if not same_ports:
            self.client_port, self.peer_port = free_port(self.host), free_port(self.host)
        client = f"https://{self.host}:{self.client_port}"
        peer = f"https://{self.host}:{self.peer_port}"
        cmd = [
            binary,
            "--name",
            "fleetcap",
            "--data-dir",
            os.path.join(self.data_dir, "member-data"),
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
            "--log-level",
            "warn",
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"fleetcap={peer}",
            "--initial-cluster-state",
            "new",
            "--heartbeat-interval",
            "10",
            "--election-timeout",
            "100",
            "--auto-compaction-mode",
            "periodic",
            "--auto-compaction-retention",
            self.compaction_retention,
            *tls_flags(self.server_tls),
        ]
        start = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                with open(self.log_path, "rb") as f:
                    f.seek(start)
                    why = "address already in use" if b"address already in use" in f.read() else "see the log"
                raise EtcdError(f"etcd exited with {self.process.returncode} ({why}); see {self.log_path}")
            if healthy(client, self.client_tls):
                return self
            time.sleep(0.05)
        self.stop()
        raise EtcdError(f"etcd did not become healthy in {timeout_s}s; see {self.log_path}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:  # within the coordinator's shutdown deadline (app.SHUTDOWN_DEADLINE_S)
                self.process.wait(3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


async def supervise(
    etcd: EmbeddedEtcd, *, on_state: Callable[[bool], None] = lambda up: None, on_restart: Callable[[], None] = lambda: None
) -> None:
    """Watches the embedded etcd for as long as it runs: when it exits, logs how, and starts it
    again after each of RESTART_BACKOFF_S. Returns (and the coordinator exits non-zero) only when
    every restart failed; cancelled, it leaves etcd as it is. `on_state(up)` follows it."""
    while True:
        process = etcd.process
        if process is None:  # between a deliberate stop and start (restart)
            await asyncio.sleep(0.5)
            continue
        code = await asyncio.to_thread(process.wait)
        if etcd.process is not process:  # stopped or restarted on purpose (stop, restart)
            continue
        on_state(False)
        log.error("the embedded etcd exited with %s; restarting it (see %s)", code, etcd.log_path)
        for attempt, delay in enumerate(RESTART_BACKOFF_S, 1):
            await asyncio.sleep(delay)
            try:
                await asyncio.to_thread(etcd.start_again)
            except EtcdError as e:
                log.error("the embedded etcd did not start again (attempt %d of %d): %s", attempt, len(RESTART_BACKOFF_S), e)
                continue
            on_restart()
            on_state(True)
            log.warning("the embedded etcd is back at https://%s after %d attempt(s)", etcd.endpoint, attempt)
            break
        else:
            log.error("the embedded etcd did not come back after %d attempts; giving up", len(RESTART_BACKOFF_S))
            return
