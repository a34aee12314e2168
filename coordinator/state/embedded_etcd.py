"""A single-node etcd the coordinator starts for itself when no --etcd is given.

The flags are the ones the dependency lab measured (docs/decisions.md): loopback only, zap
logging, and short heartbeat/election timings so a single node is leader in ~0.1 s.
Used by `fleetcap coordinator` and by the tests, which need a real etcd too.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request

from fleetcap.core.transport import free_port

ETCD_BINARY = "etcd"


class EtcdError(RuntimeError):
    pass


class EmbeddedEtcd:
    def __init__(self, data_dir: str, *, host: str = "127.0.0.1", client_port: int = 0, peer_port: int = 0,
                 log_path: str | None = None):
        self.data_dir = data_dir
        self.host = host
        self.client_port = client_port or free_port(host)
        self.peer_port = peer_port or free_port(host)
        self.log_path = log_path or os.path.join(data_dir, "etcd.log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedEtcd:
        binary = shutil.which(ETCD_BINARY) or "/usr/bin/etcd"
        if not os.path.exists(binary):
            raise EtcdError("etcd is not installed (Debian package etcd-server); run 'make setup' or pass --etcd")
        os.makedirs(self.data_dir, exist_ok=True)
        client = f"http://{self.host}:{self.client_port}"
        peer = f"http://{self.host}:{self.peer_port}"
        cmd = [binary, "--name", "fleetcap", "--data-dir", os.path.join(self.data_dir, "member-data"),
               "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
               "--listen-client-urls", client, "--advertise-client-urls", client,
               "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
               "--initial-cluster", f"fleetcap={peer}", "--initial-cluster-state", "new",
               "--listen-metrics-urls", f"http://{self.host}:{free_port(self.host)}",
               "--heartbeat-interval", "10", "--election-timeout", "100"]
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EtcdError(f"etcd exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{client}/health", timeout=1) as r:
                    if b'"health":"true"' in r.read():
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise EtcdError(f"etcd did not become healthy in {timeout_s}s; see {self.log_path}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
