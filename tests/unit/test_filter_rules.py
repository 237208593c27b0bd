"""The kernel's filter rules: FilterSet packed as ``struct filter_rule`` (the agent's job).

The layout is checked against the kernel's own view of the struct (BTF) in
tests/kernel/test_filter_program.py; here, field by field from the Python mirror.
"""

from __future__ import annotations

import ipaddress

from netobserv_tui.agent.filter_rules import (
    ETH_P_IP,
    ETH_P_IPV6,
    F_ADDR,
    F_DIRECTION,
    F_DPORT,
    F_DROPS,
    F_ICMP_CODE,
    F_ICMP_TYPE,
    F_PEER,
    F_PORT,
    F_PROTO,
    F_SPORT,
    F_TCP_FLAGS,
    RULE,
    pack_rule,
)
from netobserv_tui.model.filters import ACK, SYN, FilterRule, FilterSet

ON = "--enable_filter=true"


def rule(*args: str) -> FilterRule:
    """The single rule that ``--enable_filter=true ARGS`` makes."""
    filters, rest = FilterSet.parse([ON, *args])
    assert rest == []
    assert len(filters.rules) == 1
    return filters.rules[0]


def unpack(raw: bytes) -> dict[str, object]:
    (addr, addr_mask, peer, peer_mask, *rest) = RULE.unpack(raw)
    names = ("sport", "dport")
    ports = {names[0]: tuple(rest[0:4]), names[1]: tuple(rest[4:8])}
    (eth_protocol, flags, protocol, direction, icmp_type, icmp_code, tcp_mask, tcp_value,
     action, addr_len, peer_len) = rest[8:]
    return dict(addr=addr, addr_mask=addr_mask, peer=peer, peer_mask=peer_mask, **ports,
                eth_protocol=eth_protocol, flags=flags, protocol=protocol, direction=direction,
                icmp_type=icmp_type, icmp_code=icmp_code, tcp_mask=tcp_mask,
                tcp_value=tcp_value, action=action, addr_len=addr_len, peer_len=peer_len)



# -- the kernel struct -----------------------------------------------------------------

V4_MAPPED = bytes(10) + b"\xff\xff"


def test_pack_layout_of_a_full_ipv4_rule() -> None:
    packed = pack_rule(rule(
        "--direction=Egress", "--cidr=10.128.0.0/14", "--peer_cidr=10.129.0.0/23",
        "--protocol=tcp", "--sports=80,443", "--dport_range=1000-2000",
        "--tcp_flags=SYN-ACK", "--action=Reject", "--drops"))
    assert len(packed) == RULE.size == 96
    fields = unpack(packed)
    assert fields["addr"] == V4_MAPPED + bytes([10, 128, 0, 0])
    assert fields["addr_mask"] == b"\xff" * 12 + bytes([255, 252, 0, 0])
    assert fields["peer"] == V4_MAPPED + bytes([10, 129, 0, 0])
    assert fields["peer_mask"] == b"\xff" * 12 + bytes([255, 255, 254, 0])
    assert (fields["addr_len"], fields["peer_len"]) == (14, 23)
    assert fields["sport"] == (80, 80, 443, 443)
    assert fields["dport"] == (1000, 2000, 1000, 2000)
    assert fields["eth_protocol"] == ETH_P_IP
    assert fields["flags"] == (F_ADDR | F_PEER | F_PROTO | F_DIRECTION | F_SPORT | F_DPORT
                               | F_TCP_FLAGS | F_DROPS)
    assert (fields["protocol"], fields["direction"], fields["action"]) == (6, 1, 0)
    assert (fields["tcp_mask"], fields["tcp_value"]) == (SYN | ACK, SYN | ACK)


def test_pack_layout_of_an_ipv6_icmp_rule() -> None:
    fields = unpack(pack_rule(rule("--cidr=fd00:12:3400::/39", "--protocol=icmpv6",
                                   "--icmp_type=128", "--icmp_code=0", "--direction=ingress")))
    assert fields["addr"] == ipaddress.ip_address("fd00:12:3400::").packed
    assert fields["addr_mask"] == b"\xff" * 4 + b"\xfe" + bytes(11)
    assert fields["peer_mask"] == bytes(16) and fields["peer_len"] == 0
    assert fields["eth_protocol"] == ETH_P_IPV6
    assert fields["flags"] == F_ADDR | F_PROTO | F_DIRECTION | F_ICMP_TYPE | F_ICMP_CODE
    assert (fields["protocol"], fields["icmp_type"], fields["icmp_code"]) == (58, 128, 0)
    assert (fields["direction"], fields["action"]) == (0, 1)


def test_pack_port_either_side_and_defaults() -> None:
    fields = unpack(pack_rule(rule("--port_range=8000-8080")))
    assert fields["flags"] == F_PORT
    assert fields["sport"] == fields["dport"] == (8000, 8080, 8000, 8080)
    assert fields["eth_protocol"] == 0 and fields["addr_mask"] == bytes(16)
    assert fields["action"] == 1


def test_pack_family_only_and_any_address() -> None:
    v6_only = unpack(pack_rule(rule("--cidr=::/0")))
    assert (v6_only["flags"], v6_only["eth_protocol"]) == (0, ETH_P_IPV6)
    peer_only = unpack(pack_rule(rule("--peer_ip=192.0.2.1")))
    assert peer_only["flags"] == F_PEER and peer_only["eth_protocol"] == ETH_P_IP
    assert peer_only["addr_mask"] == bytes(16)
    assert peer_only["peer_mask"] == b"\xff" * 16
