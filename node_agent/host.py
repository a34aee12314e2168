"""What the agent learns from its own machine: interfaces and their addresses, where the
coordinator is (so its own traffic stays out of every capture), and where the API's
/var/captures lives under the capture root."""

from __future__ import annotations

import json
import os
import socket
import subprocess

from fleetcap.core.naming import CAPTURE_ROOT
from fleetcap.v1 import fleet_pb2


def interface_addresses(interface: str) -> list[str]:
    out = subprocess.run(["ip", "-j", "addr", "show", "dev", interface], capture_output=True, text=True, check=True)
    return [a["local"] for link in json.loads(out.stdout) for a in link.get("addr_info", [])]


def default_interface() -> str:
    out = subprocess.run(["ip", "-j", "link", "show", "up"], capture_output=True, text=True, check=True)
    for link in json.loads(out.stdout):
        if "LOOPBACK" not in link.get("flags", []):
            return str(link["ifname"])
    raise RuntimeError("no network interface is up; pass --interface")


def coordinator_endpoints(address: str) -> list[tuple[str, int]]:
    """The (ip, port) pairs of a TCP coordinator address, to keep our own traffic out."""
    if address.startswith("unix:"):
        return []
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    return sorted({(str(i[4][0]), int(port)) for i in infos})


def local_path(root: str, api_path: str) -> str:
    """Maps /var/captures/x.cap under the capture root; refuses anything that escapes it."""
    rel = os.path.relpath(os.path.normpath(api_path), CAPTURE_ROOT)
    if rel.startswith("..") or os.path.isabs(rel):
        raise ValueError(f"{api_path} is outside {CAPTURE_ROOT}")
    return os.path.join(root, rel)


SYS_NET = "/sys/class/net"


def interface_counters(interface: str) -> fleet_pb2.InterfaceCounters:
    """The interface's kernel counters (zeros for one without them: `any`, or gone)."""
    out = fleet_pb2.InterfaceCounters()
    if not interface or "/" in interface or interface in (".", ".."):
        return out
    for field in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets"):
        try:
            with open(os.path.join(SYS_NET, interface, "statistics", field)) as f:
                setattr(out, field, int(f.read().strip() or 0))
        except (OSError, ValueError):
            return fleet_pb2.InterfaceCounters()
    return out
