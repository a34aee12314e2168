"""A whole fleetcap deployment on one machine, in network namespaces it creates and removes.

    hub namespace:  bridge br0 (10.77.0.1/24), etcd on its loopback, the coordinator
                    (agents on 10.77.0.1:7770 with mutual TLS, API on a unix socket reachable
                    from the host, callers with a bearer token)
    instance i<N>:  eth0 = 10.77.0.<10+N>/24, veth to the hub's bridge; one agent each, with a
                    certificate that names its instance

The fleet runs the secure configuration: its own CA (made with fleetcap.core.pki, as
`fleetcap tls` does), a coordinator certificate, one agent certificate per instance, and an
auth file with an admin token (`self.token`).

Every namespace is private to one LocalFleet (its names carry a unique prefix), so several
fleets run in parallel without sharing ports or addresses, and all test traffic stays inside
namespaces this module made. `close()` stops the processes it started, by PID, and deletes
the namespaces (which removes their veths).
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from fleetcap.clients import sdk
from fleetcap.coordinator.state import embedded_etcd
from fleetcap.core import auth, naming, pki
from fleetcap.v1 import fleet_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AZURITE = os.path.join(ROOT, "node_modules", ".bin", "azurite-blob")
# Azurite's well-known development account (public; see Azurite's README).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURITE_PORT = 10000
BLOB_ACCOUNT = "blob1"
SAS_ACCOUNT = "sas1"  # the same Azurite account, through an account SAS
SUBNET = "10.77.0"
HUB_IP = f"{SUBNET}.1"
FLEET_PORT = 7770
_counter = itertools.count()


def run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


@dataclasses.dataclass
class Instance:
    index: int
    namespace: str
    ip: str
    capture_root: str
    process: subprocess.Popen | None = None
    vmss: str = "web"

    @property
    def instance_id(self) -> str:
        return str(self.index)


class LocalFleet:
    def __init__(
        self,
        instances: int = 3,
        *,
        vmss: str = "web",
        resource_group: str = "rg1",
        workdir: str | None = None,
        agent_ttl_s: int = 4,
        log_level: str = "INFO",
        azurite: bool = False,
        storage_retry_s: float = 300,
        external_etcd: bool = False,
        coordinators: int = 1,
    ):
        self.prefix = f"fc{os.getpid() % 100000}x{next(_counter)}"
        self.workdir = workdir or tempfile.mkdtemp(prefix="fleetcap-")
        self.vmss = vmss
        self.resource_group = resource_group
        self.agent_ttl_s = agent_ttl_s
        self.log_level = log_level
        self.hub = f"{self.prefix}-hub"
        self.api_socket = os.path.join(self.workdir, "api.sock")
        self.storage_dir = os.path.join(self.workdir, "storage")
        self.replicas: list[subprocess.Popen | None] = [None] * coordinators
        if coordinators > 1 and not external_etcd:
            raise ValueError("several coordinators share one etcd: use external_etcd=True")
        self.azurite: subprocess.Popen | None = None
        self.use_azurite = azurite
        self.external_etcd = external_etcd
        self.etcd: subprocess.Popen | None = None
        self.storage_retry_s = storage_retry_s
        self.instances = [
            Instance(i, f"{self.prefix}-i{i}", f"{SUBNET}.{10 + i}", os.path.join(self.workdir, f"i{i}", "captures"), vmss=vmss)
            for i in range(instances)
        ]
        self._namespaces: list[str] = []
        self.pki_dir = os.path.join(self.workdir, "pki")
        self.auth_file = os.path.join(self.workdir, "auth.toml")
        self.token = self._make_pki()

    def _make_pki(self) -> str:
        ca = os.path.join(self.pki_dir, "ca")
        pki.create_ca(ca)
        pki.issue_coordinator(ca, self.pki_dir, dns=[], ips=[HUB_IP])
        for inst in self.instances:
            self.issue_agent_cert(inst)
        token = auth.new_token()
        auth.AuthFile().with_token("admin", frozenset({auth.Role.ADMIN}), token).save(self.auth_file)
        return token

    def issue_agent_cert(self, inst: Instance) -> None:
        ident = fleet_pb2.AgentIdentity(vmss_name=inst.vmss, instance_id=inst.instance_id, resource_group=self.resource_group)
        arm_id = naming.resource_id(ident)
        pki.issue_agent(
            os.path.join(self.pki_dir, "ca"), self.agent_cert_dir(inst), arm_id=arm_id, instance_name=naming.instance_name(arm_id)
        )

    def agent_cert_dir(self, inst: Instance) -> str:
        return os.path.join(self.pki_dir, f"agent-i{inst.index}")

    def add_token(self, name: str, role: auth.Role) -> str:
        """A new token of one role in the coordinator's auth file (send SIGHUP to load it)."""
        token = auth.new_token()
        auth.AuthFile.load(self.auth_file).with_token(name, frozenset({role}), token).save(self.auth_file)
        return token

    @property
    def coordinator(self) -> subprocess.Popen | None:
        return self.replicas[0]

    def replica_socket(self, index: int) -> str:
        return self.api_socket if index == 0 else os.path.join(self.workdir, f"api-{index}.sock")

    @property
    def api_address(self) -> str:
        """Every replica's API socket; the SDK moves to the next one when one is unavailable."""
        return ",".join(f"unix:{self.replica_socket(i)}" for i in range(len(self.replicas)))

    def agent_coordinators(self, inst: Instance) -> str:
        """All replicas, starting with a different one per instance to spread the agents."""
        ports = [FLEET_PORT + (inst.index + i) % len(self.replicas) for i in range(len(self.replicas))]
        return ",".join(f"{HUB_IP}:{port}" for port in ports)

    def client(self, token: str | None = None) -> sdk.Client:
        return sdk.Client(self.api_address, token=self.token if token is None else token)

    def cli_env(self) -> dict[str, str]:
        """The environment for a `fleetcap` CLI run against this fleet (the admin token)."""
        return dict(os.environ, FLEETCAP_TOKEN=self.token)

    def log_path(self, name: str) -> str:
        return os.path.join(self.workdir, f"{name}.log")

    # -- network ---------------------------------------------------------------------------

    def _netns(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self._namespaces.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def build_network(self) -> None:
        self._netns(self.hub)
        run("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.hub, "addr", "add", f"{HUB_IP}/24", "dev", "br0")
        run("ip", "-n", self.hub, "link", "set", "br0", "up")
        for inst in self.instances:
            self._netns(inst.namespace)
            port = f"p{inst.index}"
            run("ip", "-n", self.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", inst.namespace)
            run("ip", "-n", self.hub, "link", "set", port, "master", "br0")
            run("ip", "-n", self.hub, "link", "set", port, "up")
            run("ip", "-n", inst.namespace, "addr", "add", f"{inst.ip}/24", "dev", "eth0")
            run("ip", "-n", inst.namespace, "link", "set", "eth0", "up")

    # -- processes -------------------------------------------------------------------------

    def _spawn(self, namespace: str, args: Sequence[str], log_name: str) -> subprocess.Popen:
        log = open(self.log_path(log_name), "ab")
        env = dict(
            os.environ,
            PYTHONUNBUFFERED="1",
            FLEETCAP_LOG_LEVEL=self.log_level,
            AZURITE_CONNECTION_STRING=self.azurite_connection_string,
            AZURITE_SAS_CONNECTION_STRING=self.azurite_sas_connection_string if self.use_azurite else "",
        )
        env.pop("FLEETCAP_TOKEN", None)  # each daemon proves itself with its own certificate
        cmd = ["ip", "netns", "exec", namespace, sys.executable, "-m", "fleetcap", *args]
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        )
        log.close()
        return proc

    @property
    def azurite_sas_connection_string(self) -> str:
        """The same Azurite account through an account SAS: the form in which a SAS leaks if
        anything prints a blob URL with its query."""
        from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

        sas = generate_account_sas(
            "devstoreaccount1",
            AZURITE_KEY,
            ResourceTypes(service=True, container=True, object=True),
            AccountSasPermissions(read=True, write=True, delete=True, list=True, add=True, create=True),
            expiry=datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1),
        )
        return f"BlobEndpoint=http://127.0.0.1:{AZURITE_PORT}/devstoreaccount1;SharedAccessSignature={sas}"

    @property
    def azurite_connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{AZURITE_PORT}/devstoreaccount1;"
        )

    def start_azurite(self) -> None:
        """Azurite (npm azurite@3.35.0) on the hub's loopback, its data on disk in the workdir,
        so a restart keeps what was stored."""
        if not os.path.exists(AZURITE):
            raise RuntimeError("Azurite is not installed; run 'make setup'")
        log = open(self.log_path("azurite"), "ab")
        self.azurite = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.hub,
                AZURITE,
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(AZURITE_PORT),
                "--location",
                os.path.join(self.workdir, "azurite"),
                "--disableTelemetry",
                "--silent",
                "--skipApiVersionCheck",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + 30
        while (
            subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.hub,
                    sys.executable,
                    "-c",
                    f"import socket; socket.create_connection(('127.0.0.1', {AZURITE_PORT}), 1)",
                ],
                capture_output=True,
            ).returncode
            != 0
        ):
            if time.monotonic() > deadline or self.azurite.poll() is not None:
                raise RuntimeError(f"Azurite did not start; see {self.log_path('azurite')}")
            time.sleep(0.2)

    def stop_azurite(self, sig: int = signal.SIGTERM) -> None:
        self.stop_process(self.azurite, sig)
        self.azurite = None

    def fetch_blob(self, url: str, dest: str) -> None:
        """Downloads a blob with azure-storage-blob from inside the hub (where Azurite is)."""
        container, _, blob = url.split(f":{AZURITE_PORT}/devstoreaccount1/", 1)[1].partition("/")
        code = (
            "import sys; from azure.storage.blob import BlobServiceClient as S; "
            "c = S.from_connection_string(sys.argv[1]).get_blob_client(sys.argv[2], sys.argv[3]); "
            "open(sys.argv[4], 'wb').write(c.download_blob().readall())"
        )
        subprocess.run(
            ["ip", "netns", "exec", self.hub, sys.executable, "-c", code, self.azurite_connection_string, container, blob, dest],
            check=True,
            capture_output=True,
        )

    ETCD_PORT, ETCD_PEER_PORT = 23790, 23800

    def start_etcd(self) -> None:
        """etcd as its own process in the hub (so the coordinator can die without it), serving
        TLS with client certificates only, as deploy/ runs it."""
        client, peer = f"https://127.0.0.1:{self.ETCD_PORT}", f"https://127.0.0.1:{self.ETCD_PEER_PORT}"
        server_tls, self.etcd_client_tls = embedded_etcd.make_pki(os.path.join(self.pki_dir, "etcd"), "127.0.0.1")
        log = open(self.log_path("etcd"), "ab")
        self.etcd = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.hub,
                "etcd",
                "--name",
                "fleet",
                "--data-dir",
                os.path.join(self.workdir, "etcd"),
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
                f"fleet={peer}",
                "--heartbeat-interval",
                "10",
                "--election-timeout",
                "100",
                "--auto-compaction-mode",
                "periodic",
                "--auto-compaction-retention",
                embedded_etcd.COMPACTION_RETENTION,
                *embedded_etcd.tls_flags(server_tls),
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        t = self.etcd_client_tls
        code = (
            "import sys; from fleetcap.coordinator.state.embedded_etcd import EtcdTls, healthy; "
            f"sys.exit(0 if healthy({client!r}, EtcdTls({t.ca!r}, {t.cert!r}, {t.key!r})) else 1)"
        )
        deadline = time.monotonic() + 30
        while subprocess.run(["ip", "netns", "exec", self.hub, sys.executable, "-c", code], capture_output=True).returncode:
            if time.monotonic() > deadline or self.etcd.poll() is not None:
                raise RuntimeError(f"etcd did not start; see {self.log_path('etcd')}")
            time.sleep(0.1)

    def stop_etcd(self, sig: int = signal.SIGTERM) -> None:
        self.stop_process(self.etcd, sig)
        self.etcd = None

    def kill_coordinator(self, sig: int = signal.SIGKILL, index: int = 0) -> None:
        self.stop_process(self.replicas[index], sig)
        self.replicas[index] = None

    def kill_agent(self, inst: Instance, sig: int = signal.SIGKILL) -> None:
        self.stop_process(inst.process, sig)
        inst.process = None

    def cut_network(self, inst: Instance) -> None:
        """Detaches the instance's port from the hub bridge: its link stays up, but nothing
        crosses between it and the rest of the fleet (or the coordinator)."""
        run("ip", "-n", self.hub, "link", "set", f"p{inst.index}", "nomaster")

    def restore_network(self, inst: Instance) -> None:
        run("ip", "-n", self.hub, "link", "set", f"p{inst.index}", "master", "br0")

    def start_coordinator(self, index: int = 0) -> None:
        extra = (
            [
                "--storage-account",
                f"{BLOB_ACCOUNT}=env:AZURITE_CONNECTION_STRING",
                "--storage-account",
                f"{SAS_ACCOUNT}=env:AZURITE_SAS_CONNECTION_STRING",
            ]
            if self.use_azurite
            else []
        )
        if self.external_etcd:
            t = self.etcd_client_tls
            extra += ["--etcd", f"127.0.0.1:{self.ETCD_PORT}", "--etcd-ca", t.ca, "--etcd-cert", t.cert, "--etcd-key", t.key]
        # Replicas share the storage directory, as they would share a network file system.
        log = "coordinator" if index == 0 else f"coordinator-{index}"
        self.replicas[index] = self._spawn(
            self.hub,
            [
                "coordinator",
                "--mtls-listen",
                f"{HUB_IP}:{FLEET_PORT + index}",
                "--listen",
                f"unix:{self.replica_socket(index)}",
                "--tls-cert",
                os.path.join(self.pki_dir, "coordinator.pem"),
                "--tls-key",
                os.path.join(self.pki_dir, "coordinator-key.pem"),
                "--tls-client-ca",
                os.path.join(self.pki_dir, "ca", "ca.pem"),
                "--auth-file",
                self.auth_file,
                "--data-dir",
                os.path.join(self.workdir, log),
                "--storage-dir",
                self.storage_dir,
                "--agent-ttl",
                str(self.agent_ttl_s),
                *extra,
            ],
            log,
        )
        self._wait(lambda: self._api_up(index), 30, "the coordinator API", log, self.replicas[index])

    def start_agent(self, inst: Instance) -> None:
        os.makedirs(inst.capture_root, exist_ok=True)
        inst.process = self._spawn(
            inst.namespace,
            [
                "agent",
                "--vmss",
                inst.vmss,
                "--instance-id",
                inst.instance_id,
                "--resource-group",
                self.resource_group,
                "--interface",
                "eth0",
                "--capture-root",
                inst.capture_root,
                "--storage-retry",
                str(self.storage_retry_s),
                "--coordinator",
                self.agent_coordinators(inst),
                "--tls-ca",
                os.path.join(self.pki_dir, "ca", "ca.pem"),
                "--tls-cert",
                os.path.join(self.agent_cert_dir(inst), "agent.pem"),
                "--tls-key",
                os.path.join(self.agent_cert_dir(inst), "agent-key.pem"),
            ],
            f"agent-i{inst.index}",
        )

    def wait_agents(self, count: int | None = None, timeout_s: float = 30) -> None:
        want = len(self.instances) if count is None else count
        with self.client() as c:
            self._wait(lambda: len(c.list_agents()) >= want, timeout_s, f"{want} agents to register", "coordinator")

    def _api_up(self, index: int = 0) -> bool:
        if not os.path.exists(self.replica_socket(index)):
            return False
        with sdk.Client(f"unix:{self.replica_socket(index)}", timeout_s=2, token=self.token) as c:
            try:
                c.list()
                return True
            except sdk.FleetcapError:
                return False

    def _wait(self, cond, timeout_s: float, what: str, log_name: str, proc: subprocess.Popen | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                break
            if cond():
                return
            time.sleep(0.1)
        tail = ""
        if os.path.exists(self.log_path(log_name)):
            with open(self.log_path(log_name)) as f:
                tail = "".join(f.readlines()[-30:])
        raise RuntimeError(f"timed out waiting for {what}; {log_name} log:\n{tail}")

    def start(self) -> LocalFleet:
        try:
            self.build_network()
            if self.use_azurite:
                self.start_azurite()
            if self.external_etcd:
                self.start_etcd()
            for index in range(len(self.replicas)):
                self.start_coordinator(index)
            for inst in self.instances:
                self.start_agent(inst)
            self.wait_agents()
        except Exception:
            self.close()
            raise
        return self

    def exec_in(self, inst: Instance, *args: str) -> subprocess.CompletedProcess:
        """Runs a command inside an instance's namespace (e.g. the traffic generator)."""
        return subprocess.run(
            ["ip", "netns", "exec", inst.namespace, *args],
            check=True,
            capture_output=True,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )

    def send_udp(self, src: Instance, dst: Instance, *, dport: int, sport: int, count: int, size: int, tag: int) -> None:
        self.exec_in(
            src,
            sys.executable,
            "-m",
            "deploy.trafficgen",
            "--dst",
            dst.ip,
            "--dport",
            str(dport),
            "--sport",
            str(sport),
            "--count",
            str(count),
            "--size",
            str(size),
            "--tag",
            str(tag),
        )

    @staticmethod
    def stop_process(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout_s: float = 10) -> None:
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        for inst in self.instances:
            self.stop_process(inst.process)
        for proc in self.replicas:
            self.stop_process(proc)
        self.stop_process(self.azurite)
        self.stop_process(self.etcd)
        for ns in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._namespaces.clear()

    def __enter__(self) -> LocalFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
