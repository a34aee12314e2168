"""`fleetcap coordinator`: wires settings, state, sinks, use cases and servers, and runs them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import threading

from fleetcap.coordinator import usecases
from fleetcap.coordinator.api.auth import Authenticator, AuthInterceptor
from fleetcap.coordinator.api.capture_servicer import CaptureServicer
from fleetcap.coordinator.api.health import Health
from fleetcap.coordinator.api.oidc import OidcVerifier
from fleetcap.coordinator.filter_compiler import FilterCompiler
from fleetcap.coordinator.fleet.agents import AgentSessions
from fleetcap.coordinator.fleet.dispatch import dispatch_by_watch
from fleetcap.coordinator.fleet.expiry import watch_agent_expiry
from fleetcap.coordinator.fleet.fleet_servicer import FleetServicer, add_fleet_servicer
from fleetcap.coordinator.leadership import lead
from fleetcap.coordinator.manifest import ManifestSigner
from fleetcap.coordinator.metrics import CoordinatorMetrics
from fleetcap.coordinator.settings import CoordinatorSettings
from fleetcap.coordinator.state.embedded_etcd import RESTART_BACKOFF_S, EmbeddedEtcd, supervise
from fleetcap.coordinator.state.etcd_store import EtcdAccess, EtcdKV
from fleetcap.coordinator.state.memory_store import MemoryKV
from fleetcap.coordinator.state.store import KVBackend, Store
from fleetcap.coordinator.storage import registry
from fleetcap.core import transport
from fleetcap.core.metrics import serve_http
from fleetcap.v1 import captures_pb2_grpc

log = logging.getLogger(__name__)
STORE_STARTUP_S = 15.0


class StoreUnreachable(RuntimeError):
    """The coordinator's store did not answer at start; the message names the flag."""


GC_THRESHOLDS = (50_000, 50, 100)
"""Python's collector, tuned for a coordinator's heap: thousands of agents' streams and up to
100,000 decoded records, all long-lived. With the default thresholds (700, 10, 10) each replica
of the 10,000-agent benchmark spent 10-14 s of CPU in the collector; with these, about 1 s
(docs/decisions.md). Cycles are still collected, later; the peak RSS did not change."""


# From SIGTERM (or the embedded etcd given up on) to the process's end, at most: etcd calls that
# keep retrying, a connection that does not close, must not hold a stopping coordinator (every
# state change is one etcd transaction, so nothing is left half-written by leaving).
SHUTDOWN_DEADLINE_S = 5.0


def _exit_by(seconds: float, code: int, last_words: str = "") -> None:
    """Ends the process with `code` (printing `last_words`) after `seconds` unless it has ended
    by itself by then."""

    def expire() -> None:
        log.error("shutting down took longer than %g s; exiting now", seconds)
        if last_words:
            print(last_words, file=sys.stderr)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


async def serve(settings: CoordinatorSettings, ready: asyncio.Event | None = None, *, hard_exit: bool = False) -> None:
    """Runs a coordinator until SIGTERM or SIGINT. With hard_exit (the `fleetcap coordinator`
    process), its shutdown ends the process within SHUTDOWN_DEADLINE_S whatever it waits for."""
    gc.set_threshold(*GC_THRESHOLDS)
    embedded = None
    kv: KVBackend
    if settings.store == "memory":
        kv = MemoryKV()
    else:
        endpoints = list(settings.etcd)
        access = EtcdAccess(settings.etcd_ca, settings.etcd_cert, settings.etcd_key, settings.etcd_username, settings.etcd_password)
        if not endpoints:
            embedded = await asyncio.to_thread(EmbeddedEtcd(os.path.join(settings.data_dir, "etcd")).start)
            endpoints = [embedded.endpoint]
            etcd_tls = embedded.client_tls
            access = EtcdAccess(etcd_tls.ca, etcd_tls.cert, etcd_tls.key)
            log.info("embedded etcd at https://%s (client certificates only)", embedded.endpoint)
        kv = EtcdKV(endpoints, access=access)
    store = Store(kv)
    try:  # a coordinator that cannot reach its store says so and stops, rather than serving errors
        await asyncio.wait_for(store.ping(), STORE_STARTUP_S)
    except Exception as e:
        await store.close()
        where = f"--etcd {','.join(settings.etcd)}" if settings.etcd else "the embedded etcd"
        detail = f" ({e})" if str(e) else ""
        raise StoreUnreachable(f"{where}: etcd does not answer after {STORE_STARTUP_S:g} s{detail}") from None
    sessions = AgentSessions()
    sinks = registry.build_sinks(settings.local_storage_dir, settings.storage_accounts)
    filters = FilterCompiler()
    await filters.start()
    signer = await asyncio.to_thread(ManifestSigner, settings.manifest_key_path)
    uc = usecases.build(store, sessions, sinks, settings.service, filters, signer=signer)
    if uc.files.instance_files is not None:
        swept = await uc.files.instance_files.sweep()
        if swept:
            log.info("removed %d fetched copies left by interrupted downloads", swept)
    replica = f"{socket.gethostname()}:{os.getpid()}"

    metrics = CoordinatorMetrics()
    uc.progress.on_first_report = metrics.fanout.observe
    metrics.storage_accounts(sinks)
    oidc = OidcVerifier(settings.oidc) if settings.oidc.enabled else None
    authenticator = Authenticator(settings.auth_file, tls=bool(settings.tls_cert), oidc=oidc)
    server = transport.aio_server([AuthInterceptor(authenticator, metrics)])
    captures_pb2_grpc.add_PacketCapturesServicer_to_server(CaptureServicer(uc, metrics), server)
    health = Health(store)
    health.add_to(server)
    fleet = FleetServicer(store, sinks, uc, sessions, agent_ttl_s=settings.agent_ttl_s, replica=replica, metrics=metrics)
    add_fleet_servicer(fleet, server)
    # A unix socket is local IPC, guarded by its file's permissions: plaintext (callers still
    # bring a token). TCP listeners speak TLS when there is a certificate.
    listeners = [(a, None if a.startswith("unix:") else settings.server_tls) for a in settings.listen] + [
        (a, settings.mutual_tls) for a in settings.mtls_listen
    ]
    for address, tls in listeners:
        if address.startswith("unix:"):
            path = address[len("unix:") :]
            if os.path.exists(path):
                os.unlink(path)  # a socket left by a previous run
        port = transport.add_listen(server, address, tls=tls, insecure=settings.insecure)
        where = address if address.startswith("unix:") else f"{address.rsplit(':', 1)[0]}:{port}"
        log.info("listening on %s (%s)", where, "mutual TLS" if tls and tls.client_ca else "TLS" if tls else "plaintext")
    if settings.insecure:
        log.warning(
            "--insecure: plaintext is allowed beyond loopback; anyone on the network path can read and forge this coordinator's traffic"
        )
    await server.start()
    health.start()
    if settings.health_listen:
        await health.serve_plain(settings.health_listen)
    metrics_server = None
    if settings.metrics_listen:
        metrics_server = await serve_http(metrics.registry, settings.metrics_listen, before_scrape=lambda: metrics.refresh(store))

    supervisor = None
    if embedded:
        up, restarts = metrics.embedded_etcd()
        supervisor = asyncio.ensure_future(supervise(embedded, on_state=lambda ok: up.set(1 if ok else 0), on_restart=restarts.inc))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, authenticator.reload)
    leading = asyncio.Event()
    tasks = [
        asyncio.ensure_future(watch_agent_expiry(store, uc.reconciler, sessions, leading)),
        asyncio.ensure_future(lead(store, uc.reconciler, replica, leading, settings.agent_ttl_s)),
        asyncio.ensure_future(dispatch_by_watch(store, uc.lifecycle, uc.recorder, sessions)),
        asyncio.ensure_future(fleet.presence.run(sessions.silent)),
    ]
    if ready:
        ready.set()
    print(f"fleetcap coordinator ready on {', '.join(a for a, _ in listeners)}", flush=True)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({stopping, *([supervisor] if supervisor else [])}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        log.info("shutting down")
        if hard_exit:
            _exit_by(SHUTDOWN_DEADLINE_S, 0 if stop.is_set() else 1, "" if stop.is_set() else f"fleetcap: error: {_given_up(embedded)}")
        for waiter in (stopping, supervisor):
            if waiter is not None:
                waiter.cancel()
        await health.stop()  # probes see NOT_SERVING while in-flight calls finish
        for t in tasks:
            t.cancel()
        if metrics_server is not None:
            metrics_server.close()
        await server.stop(grace=2)
        await store.close()
        filters.close()
        if embedded:
            embedded.stop()
    if not stop.is_set():  # the supervisor gave up
        raise StoreUnreachable(_given_up(embedded))


def _given_up(embedded: EmbeddedEtcd | None) -> str:
    where = embedded.log_path if embedded else "its log"
    return f"the embedded etcd exited and did not come back after {len(RESTART_BACKOFF_S)} restarts; see {where}"
