"""`make demo`: a local scale set of four instances, one capture across it, live progress, pcaps.

Everything runs in network namespaces this script creates and removes: a hub with etcd and
the coordinator, and one namespace per scale-set instance with its agent. The capture is
driven through the real `fleetcap` CLI, and the pcaps are summarized by tshark.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from deploy.localfleet import LocalFleet
from fleetcap.core.vocabulary import Status

OUT = os.path.abspath("demo-out")
NAME = "demo-capture"


def banner(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def cli(fleet: LocalFleet, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "fleetcap", "--coordinator", fleet.api_address, *args]
    shown = ["fleetcap", *args]
    print("$ " + " ".join(a if " " not in a and "{" not in a else f"'{a}'" for a in shown), flush=True)
    r = subprocess.run(cmd, text=True, env=dict(fleet.cli_env(), FLEETCAP_LOG_LEVEL="WARNING"))
    if check and r.returncode != 0:
        raise SystemExit(f"fleetcap {args[0]} {args[1] if len(args) > 1 else ''} failed with exit code {r.returncode}")
    return r


def tshark_summary(path: str) -> str:
    out = subprocess.run(
        ["tshark", "-r", path, "-T", "fields", "-e", "frame.cap_len", "-e", "frame.len"], capture_output=True, text=True, check=True
    ).stdout.split()
    caps, wires = [int(x) for x in out[0::2]], [int(x) for x in out[1::2]]
    return f"{len(caps)} packets, {sum(caps)} bytes captured of {sum(wires)} on the wire" + (
        f", largest record {max(caps)} B" if caps else ""
    )


def gateway_demo(fleet: LocalFleet) -> None:
    """Starts a gateway on loopback, asks it for the capture's status as an Azure script would."""
    import socket
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(os.path.join(OUT, "gateway.log"), "wb")
    gw = subprocess.Popen(
        [sys.executable, "-m", "fleetcap", "--coordinator", fleet.api_address, "gateway", "--listen", f"127.0.0.1:{port}"],
        stdout=log,
        stderr=log,
        env=fleet.cli_env(),
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        url = (
            f"http://127.0.0.1:{port}/subscriptions/local/resourceGroups/NetworkWatcherRG/providers/"
            f"Microsoft.Network/networkWatchers/NetworkWatcher_local/packetCaptures/{NAME}/queryStatus"
            "?api-version=2024-05-01"
        )
        print(f"$ curl -X POST -H \"Authorization: Bearer $FLEETCAP_TOKEN\" '{url}'")
        request = urllib.request.Request(url, method="POST", headers={"Authorization": f"Bearer {fleet.token}"})
        for _ in range(50):
            try:
                with urllib.request.urlopen(request, timeout=10) as r:
                    status = json.loads(r.read())
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("the gateway did not answer; see demo-out/gateway.log")
        shown = {k: status[k] for k in ("name", "captureStartTime", "packetCaptureStatus", "stopReason", "packetCaptureError")}
        shown["instances"] = [
            f"{i['instanceId']}: {i['packetCaptureStatus']} {i['stopReason']} {i['packetsCaptured']} packets" for i in status["instances"]
        ]
        print(json.dumps(shown, indent=2))
        print("The web portal is served by the same process; it asks for a token and sends it as a header.")
    finally:
        gw.terminate()
        gw.wait(10)


def main() -> int:
    if os.geteuid() != 0:
        raise SystemExit("make demo needs root: it creates network namespaces")
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    banner(
        "Starting a local fleet: etcd + coordinator in a hub namespace, 4 agents as scale set 'web', "
        "secure: agents on mutual TLS with a certificate each (demo-out/pki), etcd on TLS, every call "
        "below with a bearer token"
    )
    fleet = LocalFleet(4, vmss="web", resource_group="demo-rg", workdir=OUT, log_level="WARNING")
    senders: list[subprocess.Popen] = []
    try:
        fleet.start()
        cli(fleet, "-o", "table", "agents", "list")

        banner(
            "Creating a scale-set capture: instances 0-2 (3 excluded), UDP to local port 5001, "
            "128 bytes per packet, 64 KiB per instance, 10 s"
        )
        filters = json.dumps([{"protocol": "UDP", "localPort": "5001"}])
        cli(
            fleet,
            "-o",
            "table",
            "capture",
            "create",
            "--name",
            NAME,
            "--resource-group",
            "demo-rg",
            "--target",
            "web",
            "--target-type",
            "AzureVMSS",
            "--exclude",
            "3",
            "--filters",
            filters,
            "--capture-size",
            "128",
            "--capture-limit",
            "65536",
            "--time-limit",
            "10",
            "--storage-account",
            "local",
            "--file-path",
            "/var/captures/demo.cap",
        )

        with fleet.client() as c:  # traffic starts once every instance captures
            for status in c.watch(name=NAME):
                if all(i.packet_capture_status == Status.RUNNING for i in status.instances):
                    break

        banner(
            "Traffic: every instance sends to port 5001 (captured) and 5002 (filtered out) of the next one; "
            "instance 0 gets enough to hit its byte limit"
        )
        for inst in fleet.instances:
            peer = fleet.instances[(inst.index + 1) % len(fleet.instances)]
            for dport, tag in ((5001, 1), (5002, 2)):
                count = 600 if peer.index == 0 and dport == 5001 else 40
                senders.append(
                    subprocess.Popen(
                        [
                            "ip",
                            "netns",
                            "exec",
                            inst.namespace,
                            sys.executable,
                            "-m",
                            "deploy.trafficgen",
                            "--dst",
                            peer.ip,
                            "--dport",
                            str(dport),
                            "--sport",
                            str(40000 + 1000 * tag + inst.index),
                            "--count",
                            str(count),
                            "--size",
                            "400",
                            "--tag",
                            str(tag),
                            "--interval",
                            str(4.0 / count),
                        ],
                        stderr=subprocess.DEVNULL,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    )
                )

        banner("Live progress: per instance, bytes against the byte limit and time against the time limit")
        cli(fleet, "capture", "watch", "--name", NAME, "--timeout", "60", check=False)
        for p in senders:
            p.wait()

        banner("Final status, Azure's fields plus the per-instance breakdown")
        cli(fleet, "-o", "table", "capture", "show-status", "--name", NAME)

        banner("The pcaps, read back by tshark")
        with fleet.client() as c:
            status = c.get_status(name=NAME)
        for inst in status.instances:
            f = inst.files[0]
            local = os.path.join(fleet.instances[int(inst.instance_id)].capture_root, "demo.cap")
            stored = f.storage_path.removeprefix("file://")
            verdict = "matches" if f.stored_sha256 == f.sha256 else "DIFFERS"
            print(
                f"instance {inst.instance_id}: stopped by {inst.stop_reason}, "
                f"kernel drops {inst.kernel_drops}, sha256 {f.sha256[:16]}… (stored copy {verdict})"
            )
            print(f"  on the instance: {local}\n      {tshark_summary(local)}")
            print(f"  in storage:      {stored}\n      {tshark_summary(stored)}")

        banner("Every instance in one trace: download --merge writes a pcapng, one interface per instance")
        cli(fleet, "-o", "tsv", "capture", "download", "--name", NAME, "--dest", os.path.join(OUT, "download"), "--merge")
        merged = os.path.join(OUT, "download", f"{NAME}.pcapng")
        per_if = subprocess.run(
            ["tshark", "-r", merged, "-T", "fields", "-e", "frame.interface_name"], capture_output=True, text=True, check=True
        ).stdout.split()
        print("  " + ", ".join(f"{name}: {per_if.count(name)} packets" for name in sorted(set(per_if))))

        banner("The same capture through Azure's REST API: fleetcap gateway")
        gateway_demo(fleet)
        print(f"\nLogs and files are under {OUT}. Open any .cap or the .pcapng in Wireshark.")
        return 0
    finally:
        for p in senders:
            if p.poll() is None:
                p.kill()
        fleet.close()


if __name__ == "__main__":
    sys.exit(main())
