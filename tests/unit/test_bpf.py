"""Filter parsing rules, and the compiled BPF against a plain-Python reference matcher."""

from __future__ import annotations

import ipaddress
import random

import dpkt
import pytest

from fleetcap.core import filters
from fleetcap.core.libpcap import CompiledFilter, PcapError, check_filter

LOCAL4, LOCAL6 = "10.1.0.5", "fd00::5"


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("localPort", "80-85;90", "a range mixed with a list"),
        ("localPort", "80-85-90", "not a port"),
        ("remotePort", "70000", "not a port"),
        ("remotePort", "90-80", "starts above its end"),
        ("localPort", "80;;81", "empty entry"),
        ("localIPAddress", "10.0.0.1-10.0.0.9;10.0.0.20", "a range mixed with a list"),
        ("remoteIPAddress", "10.0.0.300", "not an IP address"),
        ("remoteIPAddress", "10.0.0.9-10.0.0.1", "starts above its end"),
        ("remoteIPAddress", "10.0.0.1-fd00::1", "mixes IPv4 and IPv6"),
    ],
)
def test_forbidden_forms_name_the_filter_and_field(field, value, rule):
    kwargs = {"localPort": "local_port", "remotePort": "remote_port", "localIPAddress": "local_ip", "remoteIPAddress": "remote_ip"}
    with pytest.raises(filters.FilterError) as e:
        filters.parse_filter(2, protocol="TCP", **{kwargs[field]: value})
    assert e.value.field == f"filters[2].{field}"
    assert rule in e.value.rule


def test_all_empty_filter_and_bad_protocol_and_icmp_ports_are_rejected():
    with pytest.raises(filters.FilterError, match=r"filters\[0\]: a filter cannot be all empty"):
        filters.parse_filter(0)
    with pytest.raises(filters.FilterError, match=r"filters\[1\].protocol: 'SCTP' is not one of"):
        filters.parse_filter(1, protocol="SCTP")
    with pytest.raises(filters.FilterError, match=r"filters\[0\].localPort: ports need protocol"):
        filters.parse_filter(0, protocol="ICMP", local_port="80")


def test_accepted_forms():
    f = filters.parse_filter(
        0, protocol="tcp", local_ip="10.0.0.1;10.0.0.5;", remote_ip="10.0.0.0/30", local_port="80;443;", remote_port="1000-2000"
    )
    assert f.protocol == "TCP"
    assert f.local_ip.contains("10.0.0.5")
    assert not f.local_ip.contains("10.0.0.2")
    assert f.remote_ip.contains("10.0.0.3")
    assert not f.remote_ip.contains("10.0.0.4")
    assert f.local_port.ranges == ((80, 80), (443, 443))
    assert f.remote_port.ranges == ((1000, 2000),)
    r = filters.parse_filter(0, remote_ip="10.0.0.1-10.0.0.6")
    assert [str(n) for n in r.remote_ip.networks] == ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]


def test_expression_for_a_typical_filter():
    f = filters.parse_filter(0, protocol="UDP", local_port="5001")
    expr = filters.capture_expression([f], [LOCAL4], exclude_tcp=[("10.1.0.1", 7770)])
    assert expr == (
        "((udp and ((src host 10.1.0.5 and src port 5001) or (dst host 10.1.0.5 and dst port 5001))))"
        " and not (tcp and host 10.1.0.1 and port 7770)"
    )
    check_filter(expr)


def test_libpcap_errors_carry_its_message():
    with pytest.raises(PcapError, match="syntax error"):
        check_filter("udp and and port 5")


# -- property test: compiled BPF == reference semantics ---------------------------------------

PEERS4 = ["10.1.0.7", "10.1.0.200", "192.168.3.4"]
PEERS6 = ["fd00::7", "fd00::1:2", "2001:db8::9"]
PORTS = [22, 53, 80, 443, 5001, 5002, 40000, 65535]


def frame(proto: str, src: str, dst: str, sport: int, dport: int) -> bytes:
    v6 = ":" in src
    if proto == "TCP":
        l4 = dpkt.tcp.TCP(sport=sport, dport=dport, flags=dpkt.tcp.TH_ACK, data=b"x" * 10)
    elif proto == "UDP":
        l4 = dpkt.udp.UDP(sport=sport, dport=dport, data=b"x" * 10)
        l4.ulen = len(l4)
    else:
        l4 = (
            dpkt.icmp6.ICMP6(type=128, data=b"\0\0\0\0ping")
            if v6
            else dpkt.icmp.ICMP(type=8, data=dpkt.icmp.ICMP.Echo(id=1, seq=1, data=b"ping"))
        )
    p = {"TCP": 6, "UDP": 17, "ICMP": 58 if v6 else 1}[proto]
    if v6:
        ip = dpkt.ip6.IP6(
            src=ipaddress.ip_address(src).packed, dst=ipaddress.ip_address(dst).packed, nxt=p, hlim=64, data=l4, plen=len(bytes(l4))
        )
        etype = dpkt.ethernet.ETH_TYPE_IP6
    else:
        ip = dpkt.ip.IP(src=ipaddress.ip_address(src).packed, dst=ipaddress.ip_address(dst).packed, p=p, ttl=64, data=l4)
        ip.len = len(bytes(ip))
        etype = dpkt.ethernet.ETH_TYPE_IP
    return bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=etype, data=ip))


def reference(filters: list[filters.Filter], locals_: list[str], proto: str, src: str, dst: str, sport: int, dport: int) -> bool:
    """Azure's semantics written plainly: some filter matches with the instance on one side."""

    def side_ok(f: filters.Filter, here_ip, here_port, there_ip, there_port) -> bool:
        if here_ip not in locals_:
            return False
        ported = proto in ("TCP", "UDP")
        return (
            (f.local_ip is None or f.local_ip.contains(here_ip))
            and (f.remote_ip is None or f.remote_ip.contains(there_ip))
            and (f.local_port is None or (ported and f.local_port.contains(here_port)))
            and (f.remote_port is None or (ported and f.remote_port.contains(there_port)))
        )

    for f in filters:
        if f.protocol not in ("Any", proto):
            continue
        if not (f.local_ip or f.remote_ip or f.local_port or f.remote_port):
            return True
        if side_ok(f, src, sport, dst, dport) or side_ok(f, dst, dport, src, sport):
            return True
    return False


def random_field(rng: random.Random, kind: str, v6: bool) -> str:
    if rng.random() < 0.5:
        return ""
    if kind == "port":
        choice = rng.randrange(3)
        if choice == 0:
            return str(rng.choice(PORTS))
        if choice == 1:
            lo = rng.choice(PORTS)
            return f"{lo}-{min(65535, lo + rng.choice([0, 1, 100, 5000]))}"
        return ";".join(str(p) for p in rng.sample(PORTS, 2)) + rng.choice(["", ";"])
    pool = (PEERS6 + [LOCAL6]) if v6 else (PEERS4 + [LOCAL4])
    choice = rng.randrange(4)
    if choice == 0:
        return rng.choice(pool)
    if choice == 1:
        return "fd00::/112" if v6 else "10.1.0.0/24"
    if choice == 2:
        return "fd00::1-fd00::8" if v6 else "10.1.0.1-10.1.0.9"
    return ";".join(rng.sample(pool, 2))


def test_compiled_bpf_matches_reference_semantics():
    rng = random.Random(20261126)
    locals_ = [LOCAL4, LOCAL6]
    checked = matched = 0
    for _ in range(120):
        chosen = []
        for i in range(rng.randint(1, 3)):
            v6 = rng.random() < 0.3
            fields = {
                "protocol": rng.choice(["TCP", "UDP", "Any", "ICMP"]),
                "local_ip": random_field(rng, "ip", v6),
                "remote_ip": random_field(rng, "ip", v6),
                "local_port": random_field(rng, "port", v6),
                "remote_port": random_field(rng, "port", v6),
            }
            if fields["protocol"] == "ICMP":
                fields["local_port"] = fields["remote_port"] = ""
            if fields["protocol"] == "Any" and not any(fields[k] for k in ("local_ip", "remote_ip", "local_port", "remote_port")):
                fields["protocol"] = "UDP"
            chosen.append(filters.parse_filter(i, **fields))
        with CompiledFilter(filters.capture_expression(chosen, locals_)) as compiled:
            for _ in range(40):
                v6 = rng.random() < 0.4
                proto = rng.choice(["TCP", "UDP", "ICMP"])
                here, there = (LOCAL6, rng.choice(PEERS6)) if v6 else (LOCAL4, rng.choice(PEERS4))
                hp, tp = (rng.choice(PORTS), rng.choice(PORTS)) if proto != "ICMP" else (0, 0)
                src, dst, sport, dport = (here, there, hp, tp) if rng.random() < 0.5 else (there, here, tp, hp)
                want = reference(chosen, locals_, proto, src, dst, sport, dport)
                got = compiled.matches(frame(proto, src, dst, sport, dport))
                assert got == want, (chosen, proto, src, dst, sport, dport)
                checked += 1
                matched += want
    # The generator must exercise both outcomes substantially, or the test proves nothing.
    assert checked == 4800
    assert 400 < matched < 4400


def test_a_filter_that_can_never_match_compiles_and_matches_nothing():
    # localIPAddress names an address the instance does not have: libpcap's optimizer proves
    # the expression empty; that is a valid capture of nothing, not an error.
    f = filters.parse_filter(0, protocol="UDP", local_ip="10.9.9.9")
    with CompiledFilter(filters.capture_expression([f], [LOCAL4])) as compiled:
        assert not compiled.matches(frame("UDP", LOCAL4, "10.9.9.9", 5001, 5001))
        assert not compiled.matches(frame("UDP", "10.9.9.9", LOCAL4, 5001, 5001))
