"""Filter rules in the real kernel: ebpf/flows.c with filter.h, loaded by BCC and run with
BPF_PROG_TEST_RUN.

Nothing is attached to an interface and no packet is sent: each hand-built Ethernet frame is
given to the classifier by the kernel's test-run facility (nobs_tc_ingress for direction 0,
nobs_tc_egress for 1), and the flow map is drained after every frame to see whether that
frame was recorded. Each case states exactly which frames must be recorded; a property test
then compares the kernel with a reference matcher written here, in Python, from the rules
in docs/filters.md.
"""

from __future__ import annotations

import ctypes as ct
import ipaddress
import os
import platform
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netobserv_tui.agent.bpf import FlowProgram
from netobserv_tui.agent.filter_rules import RULE, defines, pack_rules
from netobserv_tui.model.errors import KernelError
from netobserv_tui.model.filters import (
    ACCEPT,
    MAX_RULES,
    TCP_FLAGS,
    FilterRule,
    FilterSet,
)

pytestmark = pytest.mark.kernel

BPF_PROG_TEST_RUN = 10
BPF_OBJ_GET_INFO_BY_FD = 15
SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine())
VERIFIER_LIMIT = 1_000_000

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmpv6": 58}
_libc = ct.CDLL(None, use_errno=True)


def _bpf(cmd: int, attr: ct.Array[ct.c_char]) -> None:
    if SYS_BPF is None:
        pytest.skip(f"no bpf() syscall number known for {platform.machine()}")
    if _libc.syscall(ct.c_long(SYS_BPF), ct.c_int(cmd), attr, ct.c_uint(len(attr))) != 0:
        err = ct.get_errno()
        raise OSError(err, f"bpf({cmd}): {os.strerror(err)}")


def prog_test_run(prog_fd: int, frame: bytes, repeat: int = 1) -> tuple[int, int]:
    """BPF_PROG_TEST_RUN: (return value, mean nanoseconds per run)."""
    data = ct.create_string_buffer(frame, len(frame))
    attr = ct.create_string_buffer(80)  # the test member of union bpf_attr
    struct.pack_into("<IIIIQQII", attr, 0, prog_fd, 0, len(frame), 0, ct.addressof(data), 0,
                     repeat, 0)
    _bpf(BPF_PROG_TEST_RUN, attr)
    retval, duration = struct.unpack_from("<I", attr, 4)[0], struct.unpack_from("<I", attr, 36)[0]
    return retval, duration


def verified_insns(prog_fd: int) -> int:
    """bpf_prog_info.verified_insns (Linux 5.16+; 0 before)."""
    info = ct.create_string_buffer(256)
    attr = ct.create_string_buffer(16)
    struct.pack_into("<IIQ", attr, 0, prog_fd, len(info), ct.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return int(struct.unpack_from("<I", info, 216)[0])


# -- frames ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Pkt:
    """One packet at one hook; ports, flags and ICMP fields only where the protocol has them."""

    src: str
    dst: str
    proto: str = "tcp"
    sport: int = 0
    dport: int = 0
    flags: int = ACK
    icmp: tuple[int, int] = (8, 0)
    direction: int = 0  # 0 ingress, 1 egress

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.src).version

    @property
    def number(self) -> int:
        return PROTOCOLS.get(self.proto) or int(self.proto)

    def frame(self) -> bytes:
        if self.proto == "tcp":
            l4 = struct.pack("!HHIIBBHHH", self.sport, self.dport, 1, 0, 0x50, self.flags,
                             65535, 0, 0)
        elif self.proto == "udp":
            l4 = struct.pack("!HHHH", self.sport, self.dport, 16, 0)
        elif self.proto == "sctp":
            l4 = struct.pack("!HHII", self.sport, self.dport, 0, 0)
        elif self.proto in ("icmp", "icmpv6"):
            l4 = struct.pack("!BBHHH", *self.icmp, 0, 0, 0)
        else:
            l4 = b""
        payload = l4 + bytes(8)
        if self.family == 4:
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0x4000, 64,
                             self.number, 0, socket.inet_aton(self.src),
                             socket.inet_aton(self.dst))
            ethertype = 0x0800
        else:
            ip = struct.pack("!IHBB16s16s", 0x6000_0000, len(payload), self.number, 64,
                             socket.inet_pton(socket.AF_INET6, self.src),
                             socket.inet_pton(socket.AF_INET6, self.dst))
            ethertype = 0x86DD
        return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + \
            struct.pack("!H", ethertype) + ip + payload


# -- the program -----------------------------------------------------------------------

class Programs:
    """flows.c compiled once per rule count (FILTER_RULES is a compile-time constant)."""

    def __init__(self) -> None:
        self._loaded: dict[int, FlowProgram] = {}

    def get(self, count: int) -> FlowProgram:
        if count not in self._loaded:
            switches = defines(FilterSet(tuple(FilterRule() for _ in range(count)), 0, True))
            self._loaded[count] = FlowProgram(max_flows=64, defines=switches).load()
        return self._loaded[count]

    def close(self) -> None:
        for prog in self._loaded.values():
            prog.close()


@pytest.fixture(scope="module")
def programs(bcc_ready: None) -> Iterator[Programs]:
    loaded = Programs()
    try:
        yield loaded
    finally:
        loaded.close()


def load_rules(prog: FlowProgram, filters: FilterSet) -> None:
    """What the agent does after loading: filter_rules[i] = pack_rules()[i]."""
    table = prog.bpf[b"filter_rules"]
    for index, raw in enumerate(pack_rules(filters)):
        table[table.Key(index)] = table.Leaf.from_buffer_copy(raw)


def recorded(programs: Programs, filters: FilterSet, packets: Sequence[Pkt]) -> list[bool]:
    """For each packet, whether the classifier recorded it as a flow."""
    prog = programs.get(len(filters.rules))
    load_rules(prog, filters)
    prog.drain()
    names = ("nobs_tc_ingress", "nobs_tc_egress")
    out = []
    for pkt in packets:
        retval, _ = prog_test_run(prog.fds[names[pkt.direction]], pkt.frame())
        assert retval == 0, "the classifier must always return TC_ACT_OK"
        drained = prog.drain()
        assert drained.count <= 1
        out.append(drained.count == 1)
    return out


def check(programs: Programs, argv: str, expected: dict[Pkt, bool]) -> None:
    filters, rest = FilterSet.parse(["--enable_filter=true", *argv.split()])
    assert rest == []
    got = dict(zip(expected, recorded(programs, filters, list(expected)), strict=True))
    wrong = {pkt: got[pkt] for pkt in expected if got[pkt] != expected[pkt]}
    assert not wrong, f"{argv}: recorded when it should not, or the reverse: {wrong}"


# Packets the cases use.
T80 = Pkt("10.0.0.1", "10.1.0.2", "tcp", 40000, 80)
T80_REPLY = Pkt("10.1.0.2", "10.0.0.1", "tcp", 80, 40000)
T443 = Pkt("10.0.0.1", "10.1.0.2", "tcp", 40001, 443)
T81 = Pkt("10.0.0.1", "10.1.0.2", "tcp", 40002, 81)
U53 = Pkt("10.0.0.1", "10.1.0.3", "udp", 40003, 53)
U80 = Pkt("10.0.0.1", "10.1.0.3", "udp", 40004, 80)
S80 = Pkt("10.0.0.1", "10.1.0.3", "sctp", 40005, 80)
PING = Pkt("10.0.0.1", "10.1.0.2", "icmp", icmp=(8, 0))
PONG = Pkt("10.1.0.2", "10.0.0.1", "icmp", icmp=(0, 0))
UNREACH = Pkt("10.1.0.2", "10.0.0.1", "icmp", icmp=(3, 3))
T6 = Pkt("fd00:1::1", "fd00:2::2", "tcp", 40000, 80)
PING6 = Pkt("fd00:1::1", "fd00:2::2", "icmpv6", icmp=(128, 0))
MAPPED6 = Pkt("::ffff:10.0.0.1", "::ffff:10.1.0.2", "tcp", 40000, 80)  # an IPv6 packet
GRE = Pkt("10.0.0.1", "10.1.0.2", "47")


def test_no_rules_records_everything(programs: Programs) -> None:
    check(programs, "", {T80: True, U53: True, PING: True, T6: True, GRE: True})


def test_protocol(programs: Programs) -> None:
    check(programs, "--protocol=tcp", {T80: True, U53: False, PING: False, T6: True})
    check(programs, "--protocol=UDP", {T80: False, U53: True, U80: True, S80: False})
    check(programs, "--protocol=sctp", {S80: True, U80: False})
    check(programs, "--protocol=icmp", {PING: True, PING6: False, T80: False})
    check(programs, "--protocol=icmpv6", {PING6: True, PING: False})
    check(programs, "--protocol=47", {GRE: True, T80: False})


def test_direction_is_the_hook(programs: Programs) -> None:
    egress = replace(T80, direction=1)
    check(programs, "--direction=Ingress", {T80: True, egress: False})
    check(programs, "--direction=egress", {T80: False, egress: True})


def test_single_ports(programs: Programs) -> None:
    check(programs, "--port=80", {T80: True, T80_REPLY: True, T443: False, U80: True,
                                  S80: True, PING: False})
    check(programs, "--dport=80", {T80: True, T80_REPLY: False, T443: False})
    check(programs, "--sport=80", {T80: False, T80_REPLY: True})


def test_port_ranges(programs: Programs) -> None:
    at = {p: Pkt("10.0.0.1", "10.1.0.2", "tcp", 40000, p) for p in (79, 80, 90, 91)}
    check(programs, "--dport_range=80-90", {at[79]: False, at[80]: True, at[90]: True,
                                            at[91]: False})
    check(programs, "--sport_range=80-80", {T80_REPLY: True, T80: False})
    check(programs, "--port_range=40000-40000", {T80: True, T80_REPLY: True, T443: False})


def test_two_port_lists(programs: Programs) -> None:
    check(programs, "--dports=80,443", {T80: True, T443: True, T81: False, T80_REPLY: False})
    check(programs, "--ports=443,80", {T80: True, T443: True, T80_REPLY: True, T81: False})
    check(programs, "--sports=80,8080", {T80_REPLY: True, T80: False})


def test_icmp_type_and_code(programs: Programs) -> None:
    check(programs, "--icmp_type=8", {PING: True, PONG: False, T80: False})
    # flow_id's ICMP type is 0 for TCP too: type 0 must still match only ICMP.
    check(programs, "--icmp_type=0", {PONG: True, PING: False, T80: False, U53: False})
    check(programs, "--icmp_type=3 --icmp_code=3", {UNREACH: True, PING: False})
    check(programs, "--icmp_code=0", {PING: True, PONG: True, UNREACH: False, T80: False})
    check(programs, "--protocol=icmpv6 --icmp_type=128", {PING6: True, PING: False})


def test_ipv4_cidr_on_either_side(programs: Programs) -> None:
    check(programs, "--cidr=10.0.0.0/24", {T80: True, T80_REPLY: True, PING: True,
                                          Pkt("10.2.0.1", "10.1.0.2"): False,
                                          T6: False, MAPPED6: False})
    # A prefix that ends inside a byte.
    check(programs, "--cidr=10.0.0.128/25", {Pkt("10.0.0.200", "192.0.2.1"): True,
                                            Pkt("192.0.2.1", "10.0.0.255"): True,
                                            Pkt("10.0.0.127", "192.0.2.1"): False})
    check(programs, "--cidr=10.1.0.2/32", {T80: True, U53: False})


def test_ipv6_cidr_matches_only_ipv6(programs: Programs) -> None:
    check(programs, "--cidr=fd00:2::/32", {T6: True, PING6: True, T80: False,
                                          Pkt("fd00:3::1", "fd00:4::1"): False})
    # Prefixes ending inside a byte, in the first and in the last word.
    check(programs, "--cidr=fc00::/7", {T6: True, Pkt("fe80::1", "fe80::2"): False})
    check(programs, "--cidr=fd00:1::0/127", {T6: True, Pkt("fd00:1::", "2001:db8::1"): True,
                                            Pkt("2001:db8::1", "fd00:1::2"): False})
    check(programs, "--cidr=::ffff:10.0.0.0/104", {MAPPED6: True, T80: False})


def test_any_address_and_family_only(programs: Programs) -> None:
    check(programs, "--cidr=0.0.0.0/0 --protocol=tcp", {T80: True, T6: True, MAPPED6: True})
    check(programs, "--cidr=::/0", {T6: True, MAPPED6: True, T80: False, PING: False})


def test_peer_is_the_other_side(programs: Programs) -> None:
    check(programs, "--peer_ip=10.1.0.2", {T80: True, T80_REPLY: True, U53: False})
    check(programs, "--peer-ip=fd00:2::2", {T6: True, T80: False})
    rule = "--cidr=10.0.0.0/24 --peer_cidr=10.1.0.0/24"
    check(programs, rule, {
        T80: True,                                  # cidr is the source, peer the destination
        T80_REPLY: True,                            # and the other way round
        Pkt("10.0.0.1", "10.2.0.1"): False,         # peer side outside
        Pkt("10.0.0.1", "10.0.0.2"): False,         # both in the cidr, neither in the peer
        Pkt("10.1.0.1", "10.1.0.2"): False,         # both in the peer, neither in the cidr
    })
    # An address in both: it may play either part, but the other side must play the other.
    check(programs, "--cidr=10.0.0.0/8 --peer_cidr=10.1.0.0/16", {
        Pkt("10.1.0.5", "10.2.0.1"): True,
        Pkt("10.2.0.1", "10.1.0.5"): True,
        Pkt("10.2.0.1", "10.3.0.1"): False,
    })


TCP_CASES = {
    "SYN": {SYN},
    "SYN-ACK": {SYN | ACK},
    "ACK": {ACK, PSH | ACK, ACK | URG, ACK | ECE, ACK | CWR},
    "FIN": {FIN},
    "FIN-ACK": {FIN | ACK},
    "RST": {RST},
    "RST-ACK": {RST | ACK},
    "PSH": {PSH | ACK},
    "URG": {ACK | URG},
    "ECE": {ACK | ECE, SYN | ECE | CWR},
    "CWR": {ACK | CWR, SYN | ECE | CWR},
}
ALL_FLAGS = sorted({f for s in TCP_CASES.values() for f in s})


@pytest.mark.parametrize("name", sorted(TCP_FLAGS))
def test_tcp_flags(programs: Programs, name: str) -> None:
    packets = {replace(T80, flags=flags): flags in TCP_CASES[name] for flags in ALL_FLAGS}
    if name == "SYN":
        packets[replace(T80, flags=SYN | ECE | CWR)] = True
    packets[replace(U53)] = False
    check(programs, f"--tcp_flags={name}", packets)


def test_or_records_what_any_rule_accepts(programs: Programs) -> None:
    check(programs, "--protocol=tcp --port=80 or --protocol=udp --port=53",
          {T80: True, U53: True, U80: False, T443: False, PING: False})


def test_reject_only_rules_record_the_rest(programs: Programs) -> None:
    check(programs, "--action=Reject --port=80", {T80: False, T80_REPLY: False, T443: True,
                                                   U53: True, PING: True})
    check(programs, "--action=Reject --protocol=icmp or --action=Reject --cidr=fd00::/8",
          {PING: False, T6: False, T80: True, U53: True})


def test_first_matching_rule_decides(programs: Programs) -> None:
    near = Pkt("10.0.0.5", "192.0.2.1")
    neighbour = Pkt("10.0.0.6", "192.0.2.1")
    far = Pkt("10.9.0.1", "192.0.2.1")
    check(programs, "--action=Reject --cidr=10.0.0.5/32 or --cidr=10.0.0.0/24",
          {near: False, neighbour: True, far: False})
    check(programs, "--cidr=10.0.0.0/24 or --action=Reject --cidr=10.0.0.5/32",
          {near: True, neighbour: True, far: False})


def test_drop_rules_never_match_at_tc(programs: Programs) -> None:
    check(programs, "--drops --port=80", {T80: False, T443: False})
    check(programs, "--drops --port=80 or --port=443", {T80: False, T443: True})
    check(programs, "--action=Reject --drops", {T80: True})


def test_sixteen_rules_fit_and_the_last_one_counts(programs: Programs) -> None:
    argv = " or ".join(f"--protocol=tcp --dport=80 --cidr=10.0.0.0/8 --peer_cidr=10.1.{i}.0/24"
                       for i in range(1, MAX_RULES))
    argv += " or --protocol=tcp --dport=80 --cidr=10.0.0.0/8 --peer_ip=10.1.0.2"
    check(programs, argv, {
        T80: True,                                           # the 16th rule only
        Pkt("10.0.0.1", "10.1.15.2", "tcp", 1, 80): True,     # the 15th
        Pkt("10.0.0.1", "10.1.16.2", "tcp", 1, 80): False,    # none
        T443: False,
    })


def test_verifier_budget_for_the_largest_rule_set(programs: Programs) -> None:
    """A guard for whoever edits flows.c: the filter's per-path cost multiplies with the parse
    paths that reach it; keep 16 rules well inside the verifier's limit."""
    prog = programs.get(MAX_RULES)
    for name in ("nobs_tc_ingress", "nobs_tc_egress"):
        count = verified_insns(prog.fds[name])
        assert count < VERIFIER_LIMIT // 4, f"{name}: {count} instructions verified"


def test_rule_layout_matches_the_c_struct(programs: Programs) -> None:
    leaf = programs.get(1).bpf[b"filter_rules"].Leaf
    assert ct.sizeof(leaf) == RULE.size
    offsets = {name: getattr(leaf, name).offset for name, *_ in leaf._fields_}
    expected = {"addr": 0, "addr_mask": 16, "peer": 32, "peer_mask": 48, "sport": 64,
                "dport": 72, "eth_protocol": 80, "flags": 82, "protocol": 84, "direction": 85,
                "icmp_type": 86, "icmp_code": 87, "tcp_mask": 88, "tcp_value": 89, "action": 90,
                "addr_len": 91, "peer_len": 92, "pad": 93}
    assert offsets == expected


def test_more_rules_than_the_map_holds_do_not_compile(programs: Programs) -> None:
    defines: dict[str, int | str | None] = {"ENABLE_FILTER": None, "FILTER_RULES": 17,
                                            "FILTER_MAX_RULES": 16}
    with pytest.raises(KernelError):
        FlowProgram(max_flows=64, defines=defines).load().close()


# -- the kernel against a reference written from the documentation ----------------------

def reference_matches(rule: FilterRule, pkt: Pkt) -> bool:
    """docs/filters.md, "How a rule matches", as plain Python (a TC hook sees no drops)."""
    if rule.drops:
        return False
    if rule.direction is not None and ("Ingress", "Egress").index(rule.direction) != \
            pkt.direction:
        return False
    if rule.family is not None and rule.family != pkt.family:
        return False
    if rule.protocol is not None and rule.protocol != pkt.number:
        return False
    if rule.icmp_type is not None or rule.icmp_code is not None:
        if pkt.proto not in ("icmp", "icmpv6"):
            return False
        if rule.icmp_type is not None and rule.icmp_type != pkt.icmp[0]:
            return False
        if rule.icmp_code is not None and rule.icmp_code != pkt.icmp[1]:
            return False
    if rule.tcp_flags is not None:
        mask, value = TCP_FLAGS[rule.tcp_flags]
        if pkt.proto != "tcp" or pkt.flags & mask != value:
            return False
    has_ports = pkt.proto in ("tcp", "udp", "sctp")
    sport, dport = (pkt.sport, pkt.dport) if has_ports else (0, 0)

    def within(port: int, ranges: tuple[tuple[int, int], ...]) -> bool:
        return any(a <= port <= b for a, b in ranges)

    if rule.port is not None and not (within(sport, rule.port) or within(dport, rule.port)):
        return False
    if rule.sport is not None and not within(sport, rule.sport):
        return False
    if rule.dport is not None and not within(dport, rule.dport):
        return False
    cidr = ipaddress.ip_network(rule.cidr) if rule.cidr else None
    peer = ipaddress.ip_network(rule.peer_cidr) if rule.peer_cidr else None

    def inside(address: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network | None) -> bool:
        return net is None or ipaddress.ip_address(address) in net

    return (inside(pkt.src, cidr) and inside(pkt.dst, peer)) or \
        (inside(pkt.dst, cidr) and inside(pkt.src, peer))


def reference_verdict(filters: FilterSet, pkt: Pkt) -> bool:
    for rule in filters.rules:
        if reference_matches(rule, pkt):
            return rule.action == ACCEPT
    return not any(rule.action == ACCEPT for rule in filters.rules)


V4 = ["10.0.0.1", "10.0.0.200", "10.1.0.2", "192.168.1.1"]
V6 = ["fd00::1", "fd00:1::2", "fe80::1", "::ffff:10.0.0.1"]
NETS = ["10.0.0.0/8", "10.0.0.128/25", "10.0.0.0/24", "10.1.0.0/16", "192.168.1.1/32",
        "fd00::/16", "fd00:1::/32", "fe80::/10", "::/0", "::ffff:0:0/96", "fd00::1/128"]
PORTS = [53, 80, 443, 40000]


@st.composite
def packets(draw: st.DrawFn) -> Pkt:
    pool = draw(st.sampled_from([V4, V6]))
    proto = draw(st.sampled_from(["tcp", "udp", "sctp", "icmp" if pool is V4 else "icmpv6"]))
    return Pkt(draw(st.sampled_from(pool)), draw(st.sampled_from(pool)), proto,
               draw(st.sampled_from(PORTS)), draw(st.sampled_from(PORTS)),
               draw(st.sampled_from(ALL_FLAGS)),
               (draw(st.sampled_from([0, 3, 8, 128])), draw(st.sampled_from([0, 3]))),
               draw(st.integers(0, 1)))


@st.composite
def rules(draw: st.DrawFn) -> FilterRule:
    net = draw(st.none() | st.sampled_from(NETS))
    peers = [n for n in NETS if net is None or
             ipaddress.ip_network(n).version == ipaddress.ip_network(net).version]
    ranges = st.sampled_from([((80, 80),), ((53, 443),), ((53, 53), (40000, 40000))])
    kind = draw(st.sampled_from(["ports", "icmp", "tcp", "plain"]))
    values: dict[str, object] = {
        "action": draw(st.sampled_from(["Accept", "Reject"])),
        "direction": draw(st.sampled_from([None, "Ingress", "Egress"])),
        "cidr": net,
        "peer_cidr": draw(st.none() | st.sampled_from(peers)),
        "drops": draw(st.sampled_from([False, False, False, True])),
    }
    if kind == "ports":
        for side in draw(st.sampled_from([("port",), ("sport",), ("dport",),
                                          ("sport", "dport")])):
            values[side] = draw(ranges)
        values["protocol"] = draw(st.sampled_from([None, 6, 17, 132]))
    elif kind == "icmp":
        values["protocol"] = draw(st.sampled_from([None, 1, 58]))
        values["icmp_type"] = draw(st.none() | st.sampled_from([0, 3, 8, 128]))
        values["icmp_code"] = draw(st.none() | st.sampled_from([0, 3]))
    elif kind == "tcp":
        values["tcp_flags"] = draw(st.sampled_from(sorted(TCP_FLAGS)))
    else:
        values["protocol"] = draw(st.none() | st.sampled_from([6, 17, 1, 58]))
    return FilterRule(**values)  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(rules(), min_size=1, max_size=4), st.lists(packets(), min_size=8, max_size=8))
def test_kernel_agrees_with_the_reference(
    programs: Programs, found: list[FilterRule], sent: list[Pkt]
) -> None:
    filters = FilterSet(tuple(found), 0, True)
    expected = [reference_verdict(filters, pkt) for pkt in sent]
    assert recorded(programs, filters, sent) == expected, filters.argv()
