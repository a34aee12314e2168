"""Azure's 5-tuple filters, parsed and validated, and compiled to one libpcap expression.

Semantics (docs/filters.md): the filters of a capture are OR-ed, the fields of one filter
AND-ed. "Local" is the instance's own side of each packet, in both directions, so the local
address and port must match one side of a packet and the remote address and port the other.
Each field takes a single value, one range "a-b" or a ";" list; Azure forbids several ranges
and a range mixed with a list, and so do we. Extensions: CIDR, IPv6 and protocol ICMP.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Protocol

PROTOCOLS = {"tcp": "TCP", "udp": "UDP", "any": "Any", "icmp": "ICMP"}

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class FilterError(ValueError):
    """A filter field breaks a rule. `field` is the API path, e.g. filters[1].localPort."""

    def __init__(self, field: str, rule: str):
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


@dataclasses.dataclass(frozen=True)
class PortSet:
    """Ports as inclusive (low, high) ranges; a single port is (p, p)."""

    ranges: tuple[tuple[int, int], ...]

    def contains(self, port: int) -> bool:
        return any(lo <= port <= hi for lo, hi in self.ranges)


@dataclasses.dataclass(frozen=True)
class AddressSet:
    networks: tuple[IPNetwork, ...]

    def contains(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip.version == n.version and ip in n for n in self.networks)


@dataclasses.dataclass(frozen=True)
class Filter:
    """One parsed filter; None fields match anything."""

    protocol: str = "Any"
    local_ip: AddressSet | None = None
    remote_ip: AddressSet | None = None
    local_port: PortSet | None = None
    remote_port: PortSet | None = None


def _split(value: str, field: str) -> tuple[list[str], bool]:
    """Returns the items of a field and whether it is a range; enforces Azure's form rules."""
    items = [v.strip() for v in value.split(";")]
    if items and items[-1] == "":
        items.pop()  # Azure's trailing ";"
    if not items or any(v == "" for v in items):
        raise FilterError(field, f"'{value}' has an empty entry; use a value, 'a-b' or 'a;b;'")
    ranges = [v for v in items if "-" in v]
    if len(ranges) > 1 or (ranges and len(items) > 1):
        kind = "several ranges" if len(ranges) > 1 else "a range mixed with a list"
        raise FilterError(field, f"'{value}' has {kind}; Azure allows one range or one list")
    return items, bool(ranges)


def parse_ports(value: str, field: str) -> PortSet | None:
    if not value.strip():
        return None
    items, is_range = _split(value, field)

    def port(text: str) -> int:
        if not text.isdigit() or not 0 <= int(text) <= 65535:
            raise FilterError(field, f"'{text}' is not a port (0-65535)")
        return int(text)

    if is_range:
        lo_text, _, hi_text = items[0].partition("-")
        lo, hi = port(lo_text.strip()), port(hi_text.strip())
        if lo > hi:
            raise FilterError(field, f"range '{items[0]}' starts above its end")
        return PortSet(((lo, hi),))
    return PortSet(tuple((port(p), port(p)) for p in items))


def parse_addresses(value: str, field: str) -> AddressSet | None:
    if not value.strip():
        return None
    items, is_range = _split(value, field)
    try:
        if is_range:
            first, _, last = items[0].partition("-")
            lo, hi = ipaddress.ip_address(first.strip()), ipaddress.ip_address(last.strip())
            if lo.version != hi.version:
                raise FilterError(field, f"range '{items[0]}' mixes IPv4 and IPv6")
            if int(lo) > int(hi):
                raise FilterError(field, f"range '{items[0]}' starts above its end")
            return AddressSet(tuple(ipaddress.summarize_address_range(lo, hi)))
        return AddressSet(tuple(ipaddress.ip_network(v, strict=False) for v in items))
    except ValueError as e:
        if isinstance(e, FilterError):
            raise
        raise FilterError(field, f"'{value}' is not an IP address, CIDR or 'a-b' range") from None


def parse_filter(
    index: int, *, protocol: str = "", local_ip: str = "", remote_ip: str = "", local_port: str = "", remote_port: str = ""
) -> Filter:
    base = f"filters[{index}]"
    proto = PROTOCOLS.get((protocol or "Any").strip().lower())
    if proto is None:
        raise FilterError(f"{base}.protocol", f"'{protocol}' is not one of TCP, UDP, Any, ICMP")
    f = Filter(
        protocol=proto,
        local_ip=parse_addresses(local_ip, f"{base}.localIPAddress"),
        remote_ip=parse_addresses(remote_ip, f"{base}.remoteIPAddress"),
        local_port=parse_ports(local_port, f"{base}.localPort"),
        remote_port=parse_ports(remote_port, f"{base}.remotePort"),
    )
    if proto == "ICMP" and (f.local_port or f.remote_port):
        port_field = "localPort" if f.local_port else "remotePort"
        raise FilterError(f"{base}.{port_field}", "ports need protocol TCP, UDP or Any, not ICMP")
    if proto == "Any" and not (f.local_ip or f.remote_ip or f.local_port or f.remote_port):
        raise FilterError(base, "a filter cannot be all empty; give a protocol, an address or a port")
    return f


class FilterFields(Protocol):
    """Azure's 5-tuple filter as the API carries it (PacketCaptureFilter has these fields)."""

    protocol: str
    local_ip_address: str
    remote_ip_address: str
    local_port: str
    remote_port: str


def parse_filters(items: Iterable[FilterFields]) -> list[Filter]:
    """Every filter of a request, parsed; raises FilterError naming the first bad field."""
    return [
        parse_filter(
            i,
            protocol=f.protocol,
            local_ip=f.local_ip_address,
            remote_ip=f.remote_ip_address,
            local_port=f.local_port,
            remote_port=f.remote_port,
        )
        for i, f in enumerate(items)
    ]


def _networks_expr(direction: str, addresses: AddressSet) -> str:
    parts = []
    for n in addresses.networks:
        full = n.prefixlen == n.max_prefixlen
        parts.append(f"{direction} host {n.network_address}" if full else f"{direction} net {n}")
    return _any(parts)


def _ports_expr(direction: str, ports: PortSet) -> str:
    return _any(f"{direction} port {lo}" if lo == hi else f"{direction} portrange {lo}-{hi}" for lo, hi in ports.ranges)


def _any(parts: Iterable[str]) -> str:
    parts = list(parts)
    return parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"


def _all(parts: Iterable[str | None]) -> str:
    present = [p for p in parts if p]
    return present[0] if len(present) == 1 else "(" + " and ".join(present) + ")"


_PROTO_EXPR = {"TCP": "tcp", "UDP": "udp", "ICMP": "(icmp or icmp6)", "Any": ""}


def filter_expression(f: Filter, local_addresses: Sequence[str]) -> str:
    """libpcap expression for one filter, given the instance's own addresses."""
    directional = f.local_ip or f.remote_ip or f.local_port or f.remote_port
    if not directional:
        return _PROTO_EXPR[f.protocol]
    if not local_addresses:
        raise FilterError("filters", "the capture interface has no address, so 'local' is undefined")
    locals_ = AddressSet(tuple(ipaddress.ip_network(a) for a in local_addresses))

    def side(here: str, there: str) -> str:
        return _all(
            [
                _networks_expr(here, locals_),
                _networks_expr(here, f.local_ip) if f.local_ip else None,
                _ports_expr(here, f.local_port) if f.local_port else None,
                _networks_expr(there, f.remote_ip) if f.remote_ip else None,
                _ports_expr(there, f.remote_port) if f.remote_port else None,
            ]
        )

    return _all([_PROTO_EXPR[f.protocol], f"({side('src', 'dst')} or {side('dst', 'src')})"])


def capture_expression(
    filters: Sequence[Filter], local_addresses: Sequence[str], *, bpf_filter: str = "", exclude_tcp: Sequence[tuple[str, int]] = ()
) -> str:
    """The whole capture's expression: (f1 or f2 ...) and (bpf) and not (own connections).

    exclude_tcp lists (address, port) of the coordinator endpoints the agent talks to; the
    agent's own control and upload traffic is never captured.
    """
    parts = []
    if filters:
        parts.append(_any(f"({filter_expression(f, local_addresses)})" for f in filters))
    if bpf_filter.strip():
        parts.append(f"({bpf_filter.strip()})")
    for address, port in exclude_tcp:
        parts.append(f"not (tcp and host {address} and port {port})")
    return " and ".join(parts)


# Stand-in local addresses for compile-checking an expression before any agent has it.
PLACEHOLDER_LOCALS = ("192.0.2.1", "2001:db8::1")
