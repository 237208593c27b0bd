"""The filter rules as the kernel holds them: a :class:`~netobserv_tui.model.filters.FilterSet`
packed into ``struct filter_rule`` entries for the ``filter_rules`` array map, and the
``-D`` switches that size and enable the filter in ``ebpf/flows.c``.  Serves the agent,
which loads both (:func:`netobserv_tui.agent.main.filter_setup`); the filter language itself
(parsing, validation, the JSON that travels to the agent) is ``model.filters``.

``RULE`` mirrors the C struct; ``ebpf/filter.h`` documents the layout and the matching.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Final

from ..model.filters import (
    ACCEPT,
    EGRESS,
    MAX_RULES,
    TCP_FLAGS,
    FilterRule,
    FilterSet,
    PortRanges,
)

#: Mirror of ``struct filter_rule`` in ebpf/filter.h (96 bytes, little-endian host).
RULE: Final = struct.Struct("<16s16s16s16s4H4HHHBBBBBBBBB3x")
assert RULE.size == 96

# Bits of filter_rule.flags: which conditions a rule sets (ebpf/filter.h, FILTER_F_*).
F_ADDR: Final = 0x0001
F_PEER: Final = 0x0002
F_PROTO: Final = 0x0004
F_DIRECTION: Final = 0x0008
F_SPORT: Final = 0x0010
F_DPORT: Final = 0x0020
F_PORT: Final = 0x0040
F_ICMP_TYPE: Final = 0x0080
F_ICMP_CODE: Final = 0x0100
F_TCP_FLAGS: Final = 0x0200
F_DROPS: Final = 0x0400

ETH_P_IP: Final = 0x0800
ETH_P_IPV6: Final = 0x86DD


def defines(filters: FilterSet) -> dict[str, int | str | None]:
    """The ``-D`` switches for ebpf/flows.c (``FlowProgram(defines=...)``)."""
    out: dict[str, int | str | None] = {}
    if filters.enabled:
        out.update(ENABLE_FILTER=None, FILTER_RULES=len(filters.rules),
                   FILTER_MAX_RULES=MAX_RULES)
    if filters.sampling > 1:
        out["SAMPLING"] = filters.sampling
    return out


def pack_rules(filters: FilterSet) -> list[bytes]:
    """``struct filter_rule`` entries for filter_rules[0..n-1], in rule order."""
    return [pack_rule(rule) for rule in filters.rules]


def pack_rule(rule: FilterRule) -> bytes:
    """One rule as ``struct filter_rule`` (see ebpf/filter.h)."""
    flags = 0
    addr = addr_mask = peer = peer_mask = bytes(16)
    addr_len = peer_len = 0
    eth_protocol = {4: ETH_P_IP, 6: ETH_P_IPV6, None: 0}[rule.family]
    if rule.cidr is not None:
        addr, addr_mask, addr_len = _packed_network(rule.cidr)
        flags |= F_ADDR if addr_len else 0
    if rule.peer_cidr is not None:
        peer, peer_mask, peer_len = _packed_network(rule.peer_cidr)
        flags |= F_PEER if peer_len else 0
    sport = dport = (0, 0, 0, 0)
    if rule.port is not None:
        flags |= F_PORT
        sport = dport = _packed_ports(rule.port)
    if rule.sport is not None:
        flags |= F_SPORT
        sport = _packed_ports(rule.sport)
    if rule.dport is not None:
        flags |= F_DPORT
        dport = _packed_ports(rule.dport)
    flags |= F_PROTO if rule.protocol is not None else 0
    flags |= F_DIRECTION if rule.direction is not None else 0
    flags |= F_ICMP_TYPE if rule.icmp_type is not None else 0
    flags |= F_ICMP_CODE if rule.icmp_code is not None else 0
    flags |= F_TCP_FLAGS if rule.tcp_flags is not None else 0
    flags |= F_DROPS if rule.drops else 0
    tcp_mask, tcp_value = TCP_FLAGS[rule.tcp_flags] if rule.tcp_flags else (0, 0)
    return RULE.pack(
        addr, addr_mask, peer, peer_mask, *sport, *dport, eth_protocol, flags,
        rule.protocol or 0, 1 if rule.direction == EGRESS else 0,
        rule.icmp_type or 0, rule.icmp_code or 0, tcp_mask, tcp_value,
        1 if rule.action == ACCEPT else 0, addr_len, peer_len,
    )


def _packed_network(text: str) -> tuple[bytes, bytes, int]:
    """The network and its mask as flow_id lays addresses out (IPv4-mapped for IPv4, so an
    IPv4 /24 is the mapped /120), and the prefix length as given."""
    net = ipaddress.ip_network(text)
    if isinstance(net, ipaddress.IPv4Network):
        mapped = ipaddress.IPv6Network((b"\x00" * 10 + b"\xff\xff" + net.network_address.packed,
                                        96 + net.prefixlen))
        mask = mapped.netmask.packed if net.prefixlen else bytes(16)
        return mapped.network_address.packed, mask, net.prefixlen
    return net.network_address.packed, net.netmask.packed, net.prefixlen


def _packed_ports(ranges: PortRanges) -> tuple[int, int, int, int]:
    first = ranges[0]
    second = ranges[1] if len(ranges) > 1 else first
    return (*first, *second)
