"""Filter flags: every spelling parses, every bad value is refused naming the flag, rules
joined by `or`, the JSON the agent receives, and the bytes the kernel reads.

The kernel side of the same rules is tested in tests/kernel/test_filter_program.py.
"""

from __future__ import annotations

import argparse
import ipaddress
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netobserv_tui.agent import filter_rules
from netobserv_tui.agent.filter_rules import RULE, pack_rules
from netobserv_tui.model.errors import UsageError
from netobserv_tui.model.filters import (
    ACK,
    FIN,
    MAX_RULES,
    PSH,
    RST,
    SYN,
    TCP_FLAGS,
    FilterRule,
    FilterSet,
    add_filter_arguments,
    split_rules,
)

ON = "--enable_filter=true"


def rule(*args: str) -> FilterRule:
    """The single rule that ``--enable_filter=true ARGS`` makes."""
    filters, rest = FilterSet.parse([ON, *args])
    assert rest == []
    assert len(filters.rules) == 1
    return filters.rules[0]


# -- every flag parses, in both spellings ----------------------------------------------

PARSES = [
    (["--direction=Ingress"], {"direction": "Ingress"}),
    (["--direction", "egress"], {"direction": "Egress"}),
    (["--cidr=10.128.0.0/14"], {"cidr": "10.128.0.0/14"}),
    (["--cidr=10.129.0.1/24"], {"cidr": "10.129.0.0/24"}),  # host bits dropped, as netobserv
    (["--cidr=fd00:1::/48"], {"cidr": "fd00:1::/48"}),
    (["--cidr=10.0.0.7"], {"cidr": "10.0.0.7/32"}),
    (["--cidr=0.0.0.0/0", "--protocol=tcp"], {"cidr": None, "protocol": 6}),  # the default
    (["--cidr=::/0"], {"cidr": "::/0"}),  # IPv6 only
    (["--protocol=TCP"], {"protocol": 6}),
    (["--protocol=udp"], {"protocol": 17}),
    (["--protocol=Sctp"], {"protocol": 132}),
    (["--protocol=icmp"], {"protocol": 1}),
    (["--protocol=ICMPV6"], {"protocol": 58}),
    (["--protocol=0"], {"protocol": 0}),
    (["--protocol=255"], {"protocol": 255}),
    (["--sport=1"], {"sport": ((1, 1),)}),
    (["--dport=65535"], {"dport": ((65535, 65535),)}),
    (["--port=80"], {"port": ((80, 80),)}),
    (["--sport_range=80-100"], {"sport": ((80, 100),)}),
    (["--sport-range=80-80"], {"sport": ((80, 80),)}),
    (["--dport_range=1-65535"], {"dport": ((1, 65535),)}),
    (["--port-range=30000-32767"], {"port": ((30000, 32767),)}),
    (["--sports=80,443"], {"sport": ((80, 80), (443, 443))}),
    (["--dports=53,5353"], {"dport": ((53, 53), (5353, 5353))}),
    (["--ports=443,6443"], {"port": ((443, 443), (6443, 6443))}),
    (["--sport=1234", "--dport_range=80-90"], {"sport": ((1234, 1234),), "dport": ((80, 90),)}),
    (["--icmp_type=8"], {"icmp_type": 8}),
    (["--icmp-type=0", "--icmp-code=255"], {"icmp_type": 0, "icmp_code": 255}),
    (["--protocol=icmpv6", "--icmp_type=128"], {"protocol": 58, "icmp_type": 128}),
    (["--peer_ip=10.129.0.48"], {"peer_cidr": "10.129.0.48/32"}),
    (["--peer-ip=fd00::30"], {"peer_cidr": "fd00::30/128"}),
    (["--peer_cidr=10.129.0.0/16"], {"peer_cidr": "10.129.0.0/16"}),
    (["--cidr=10.0.0.0/8", "--peer_cidr=10.1.0.0/16"],
     {"cidr": "10.0.0.0/8", "peer_cidr": "10.1.0.0/16"}),
    (["--action=Accept"], {"action": "Accept"}),
    (["--action=reject"], {"action": "Reject"}),
    (["--tcp_flags=syn"], {"tcp_flags": "SYN"}),
    (["--tcp-flags=Fin-Ack"], {"tcp_flags": "FIN-ACK"}),
    (["--drops=true"], {"drops": True}),
    (["--drops"], {"drops": True}),
    (["--drops=false", "--port=80"], {"drops": False, "port": ((80, 80),)}),
]


@pytest.mark.parametrize(("args", "fields"), PARSES, ids=[" ".join(a) for a, _ in PARSES])
def test_every_flag_parses(args: list[str], fields: dict[str, object]) -> None:
    parsed = rule(*args)
    for name, value in fields.items():
        assert getattr(parsed, name) == value, name
    untouched = {k: v for k, v in FilterRule().to_dict().items() if k not in fields}
    assert {k: getattr(parsed, k) for k in untouched} == untouched


@pytest.mark.parametrize("name", sorted(TCP_FLAGS))
def test_every_tcp_flag_name_parses(name: str) -> None:
    assert rule(f"--tcp_flags={name.lower()}").tcp_flags == name


def test_options_may_be_given_with_a_space_or_an_equals_sign() -> None:
    spaced = FilterSet.parse(["--enable_filter", "true", "--protocol", "udp", "--dport", "53"])
    joined = FilterSet.parse(["--enable_filter=true", "--protocol=udp", "--dport=53"])
    assert spaced == joined


def test_enable_filter_alone_records_everything() -> None:
    filters, rest = FilterSet.parse(["--enable_filter=true"])
    assert (filters.enabled, filters.rules, rest) == (True, (), [])
    assert filter_rules.defines(filters) == {"ENABLE_FILTER": None, "FILTER_RULES": 0,
                                 "FILTER_MAX_RULES": MAX_RULES}
    assert pack_rules(filters) == []


def test_no_filter_flags_means_no_filter() -> None:
    filters, rest = FilterSet.parse(["--max-time=30s"])
    assert filters == FilterSet() and rest == ["--max-time=30s"]
    assert filter_rules.defines(filters) == {} and not filters.needs_drops
    assert FilterSet.parse(["--enable_filter=false"])[0] == FilterSet()


@pytest.mark.parametrize(
    ("args", "sampling", "defines"),
    [
        (["--sampling=0"], 0, {}),
        (["--sampling", "1"], 1, {}),
        (["--sampling=50"], 50, {"SAMPLING": 50}),
        ([ON, "--port=80", "--sampling=10"], 10,
         {"ENABLE_FILTER": None, "FILTER_RULES": 1, "FILTER_MAX_RULES": MAX_RULES,
          "SAMPLING": 10}),
    ],
)
def test_sampling_needs_no_filter(
    args: list[str], sampling: int, defines: dict[str, object]
) -> None:
    filters, _ = FilterSet.parse(args)
    assert filters.sampling == sampling
    assert filter_rules.defines(filters) == defines


# -- every bad value is refused, naming the flag as typed ------------------------------

REFUSALS = [
    # (arguments after --enable_filter=true, words the message must contain)
    (["--port=70000"], ["--port:", "'70000'", "1 to 65535"]),
    (["--port=0"], ["--port:", "1 to 65535"]),
    (["--sport=http"], ["--sport:", "'http'", "1 to 65535"]),
    (["--dport=-1"], ["--dport:", "1 to 65535"]),
    (["--dport=8 0"], ["--dport:", "1 to 65535"]),
    (["--sport_range=100-80"], ["--sport_range:", "A-B with A <= B"]),
    (["--sport-range=100-80"], ["--sport-range:", "A-B"]),
    (["--dport_range=80"], ["--dport_range:", "'80'", "A-B"]),
    (["--port_range=80-70000"], ["--port_range:", "A-B"]),
    (["--port_range=a-b"], ["--port_range:", "A-B"]),
    (["--sports=80,443,8080"], ["--sports:", "exactly two ports"]),
    (["--dports=80"], ["--dports:", "exactly two ports"]),
    (["--ports=80,"], ["--ports:", "exactly two ports"]),
    (["--ports=80,99999"], ["--ports:", "exactly two ports"]),
    (["--protocol=foo"], ["--protocol:", "'foo'", "TCP, UDP, SCTP, ICMP, ICMPv6", "0 to 255"]),
    (["--protocol=256"], ["--protocol:", "0 to 255"]),
    (["--direction=inbound"], ["--direction:", "Ingress or Egress"]),
    (["--action=Drop"], ["--action:", "Accept or Reject"]),
    (["--cidr=10.0.0.300/8"], ["--cidr:", "'10.0.0.300/8'", "prefix length"]),
    (["--cidr=10.0.0.0/33"], ["--cidr:", "prefix length"]),
    (["--cidr=fd00::/129"], ["--cidr:", "prefix length"]),
    (["--cidr=example.com"], ["--cidr:", "prefix length"]),
    (["--peer_cidr=10/8x"], ["--peer_cidr:", "prefix length"]),
    (["--peer_ip=10.0.0.0/8"], ["--peer_ip:", "one IPv4 or IPv6 address", "--peer_cidr"]),
    (["--peer-ip=fe80::1%eth0"], ["--peer-ip:", "one IPv4 or IPv6 address"]),
    (["--icmp_type=256"], ["--icmp_type:", "0 to 255"]),
    (["--icmp_code=x"], ["--icmp_code:", "0 to 255"]),
    (["--tcp_flags=SYNACK"], ["--tcp_flags:", "SYN, SYN-ACK, ACK, FIN, FIN-ACK, RST"]),
    (["--drops=maybe"], ["--drops:", "true or false"]),
    (["--port=80", "--port=443"], ["--port is given 2 times", "--ports=P1,P2", "`or`"]),
    (["--port=80", "--port_range=80-90"], ["--port and --port_range", "same rule"]),
    (["--sport=1", "--sports=1,2"], ["--sport and --sports", "same rule"]),
    (["--port=80", "--dport=443"], ["--port and --dport", "same rule"]),
    (["--ports=80,443", "--sport_range=1-2"], ["--ports and --sport_range", "same rule"]),
    (["--peer_ip=10.0.0.1", "--peer_cidr=10.0.0.0/8"], ["--peer_ip and --peer_cidr"]),
    (["--cidr=10.0.0.0/8", "--peer_ip=fd00::1"], ["--peer_ip:", "IPv6", "IPv4"]),
    (["--protocol=icmp", "--port=80"], ["--port:", "protocol ICMP has no ports"]),
    (["--protocol=udp", "--tcp_flags=SYN"], ["--tcp_flags:", "protocol UDP has no TCP flags"]),
    (["--protocol=tcp", "--icmp_type=8"], ["--icmp_type:", "protocol TCP has no ICMP"]),
    (["--icmp_type=8", "--dport=80"], ["--icmp_type and --dport", "same rule"]),
    (["--port"], ["--port", "expected one argument"]),
    (["--sampling=-3"], ["--sampling:", "'-3'", "whole number"]),
    (["--sampling=2.5"], ["--sampling:", "whole number"]),
    (["--sampling=1", "or", "--port=80", "--sampling=2"], ["--sampling is given 2 times"]),
]


@pytest.mark.parametrize(("args", "words"), REFUSALS, ids=[" ".join(a) for a, _ in REFUSALS])
def test_bad_values_are_refused_naming_the_flag(args: list[str], words: list[str]) -> None:
    with pytest.raises(UsageError) as caught:
        FilterSet.parse([ON, *args])
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize(
    "argv",
    [
        ["--port=80"],
        ["--protocol=tcp", "--max-time=5s"],
        ["--enable_filter=false", "--cidr=10.0.0.0/8"],
        ["--drops=true"],
    ],
)
def test_filter_options_need_enable_filter(argv: list[str]) -> None:
    with pytest.raises(UsageError, match="--enable_filter=true"):
        FilterSet.parse(argv)


def test_enable_filter_takes_a_boolean() -> None:
    with pytest.raises(UsageError, match="--enable-filter: 'perhaps' is not a boolean"):
        FilterSet.parse(["--enable-filter=perhaps"])


def test_at_most_max_rules() -> None:
    argv = [ON]
    for port in range(1, MAX_RULES + 2):
        argv += ["--port", str(port), "or"]
    with pytest.raises(UsageError, match=f"at most {MAX_RULES}"):
        FilterSet.parse(argv[:-1])
    filters, _ = FilterSet.parse(argv[: -4])  # MAX_RULES rules fit
    assert len(filters.rules) == MAX_RULES


# -- `or` ------------------------------------------------------------------------------

def test_split_rules() -> None:
    assert split_rules([]) == [[]]
    assert split_rules(["a", "b"]) == [["a", "b"]]
    assert split_rules(["a", "or", "b", "c", "or", "d"]) == [["a"], ["b", "c"], ["d"]]
    assert split_rules(["--cidr=or"]) == [["--cidr=or"]]  # only a whole argument separates


@pytest.mark.parametrize(
    "argv",
    [["or", "--port=80"], ["--port=80", "or"], ["--port=80", "or", "or", "--port=53"]],
)
def test_or_must_stand_between_two_rules(argv: list[str]) -> None:
    with pytest.raises(UsageError, match="`or` must stand between two rules"):
        split_rules(argv)
    with pytest.raises(UsageError):
        FilterSet.parse([*argv, ON])


def test_or_separates_rules_in_order() -> None:
    filters, rest = FilterSet.parse(
        ["--enable_filter=true", "--protocol=tcp", "--port=80", "or", "--protocol=udp",
         "--port=53", "or", "--action=Reject", "--cidr=10.0.0.0/8"]
    )
    assert rest == []
    assert filters.rules == (
        FilterRule(protocol=6, port=((80, 80),)),
        FilterRule(protocol=17, port=((53, 53),)),
        FilterRule(action="Reject", cidr="10.0.0.0/8"),
    )


def test_other_options_pass_through_in_order_from_any_rule() -> None:
    filters, rest = FilterSet.parse(
        ["--local", "--max-time", "30s", "--enable_filter=true", "--protocol=tcp",
         "--interfaces=eth0", "or", "--port=53", "--no-tui", "--output", "out"]
    )
    assert rest == ["--local", "--max-time", "30s", "--interfaces=eth0", "--no-tui",
                    "--output", "out"]
    assert [r.protocol for r in filters.rules] == [6, None]


def test_a_rule_after_or_needs_a_filter_option() -> None:
    with pytest.raises(UsageError, match="after `or` needs at least one filter option"):
        FilterSet.parse([ON, "--port=80", "or", "--max-time=3s"])


def test_or_without_enable_filter_is_refused() -> None:
    with pytest.raises(UsageError, match="--enable_filter=true"):
        FilterSet.parse(["--max-time=3s", "or", "--no-tui"])


def test_enable_filter_may_come_in_any_rule_once() -> None:
    late = FilterSet.parse(["--port=80", "or", "--port=53", ON])[0]
    assert late.enabled and len(late.rules) == 2
    with pytest.raises(UsageError, match="given 2 times"):
        FilterSet.parse([ON, "--port=80", "or", ON, "--port=53"])


def test_from_argv_takes_groups_of_filter_options_only() -> None:
    filters = FilterSet.from_argv(split_rules([ON, "--port=80", "or", "--port=53"]))
    assert [r.port for r in filters.rules] == [((80, 80),), ((53, 53),)]
    with pytest.raises(UsageError, match="'--max-time=3s' is not a filter option"):
        FilterSet.from_argv([[ON, "--max-time=3s"]])


# -- argparse integration --------------------------------------------------------------

def test_add_filter_arguments_registers_both_spellings_with_help() -> None:
    parser = argparse.ArgumentParser(prog="flows")
    add_filter_arguments(parser.add_argument_group("filters"))
    text = parser.format_help()
    for name in ("--enable_filter", "--direction", "--cidr", "--protocol", "--sport", "--dport",
                 "--port", "--sport_range", "--dport_range", "--port_range", "--sports",
                 "--dports", "--ports", "--icmp_type", "--icmp_code", "--peer_ip",
                 "--peer_cidr", "--action", "--tcp_flags", "--drops", "--sampling"):
        assert name in text
        assert name.replace("_", "-") in text
    namespace = parser.parse_args(["--enable-filter=true", "--sport-range=1-9", "--drops"])
    assert FilterSet.from_namespace(namespace).rules == (
        FilterRule(sport=((1, 9),), drops=True),
    )


def test_model_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, netobserv_tui.model.filters\n"
        "heavy = [m for m in ('bcc', 'textual', 'pyroute2', 'kubernetes_asyncio', "
        "'netobserv_tui.agent', 'netobserv_tui.tui') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- JSON and canonical flags ----------------------------------------------------------

EXAMPLE = [
    ON, "--sampling=5", "--direction=egress", "--cidr=10.128.0.0/14", "--peer_ip=10.129.0.48",
    "--protocol=tcp", "--ports=443,6443", "--tcp_flags=SYN", "or", "--action=Reject",
    "--cidr=fd00::/8", "--protocol=icmpv6", "--icmp_type=128", "--icmp_code=0", "or",
    "--drops", "--sport_range=1-1023", "--dports=53,5353",
]


def test_json_round_trip() -> None:
    filters, _ = FilterSet.parse(EXAMPLE)
    text = filters.to_json()
    assert FilterSet.from_json(text) == filters
    assert filters.needs_drops
    assert FilterSet.from_json(FilterSet().to_json()) == FilterSet()


def test_canonical_flags_parse_back() -> None:
    filters, _ = FilterSet.parse(EXAMPLE)
    assert FilterSet.parse(filters.argv())[0] == filters
    assert filters.argv()[:4] == ["--enable_filter=true", "--direction=Egress",
                                  "--cidr=10.128.0.0/14", "--protocol=TCP"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("not json", ["invalid filter JSON"]),
        ('{"version": 99, "enabled": true, "sampling": 0, "rules": []}',
         ["version 99", "same version"]),
        ('{"version": 1, "enabled": true, "sampling": 0, "rules": [{"port": [[0, 5]]}]}',
         ["port"]),
        ('{"version": 1, "enabled": true, "sampling": 0, "rules": [{"colour": "red"}]}',
         ["colour"]),
        ('{"version": 1, "enabled": false, "sampling": 0, "rules": [{}]}',
         ["--enable_filter=true"]),
    ],
)
def test_bad_json_is_refused(text: str, words: list[str]) -> None:
    with pytest.raises(UsageError) as caught:
        FilterSet.from_json(text)
    for word in words:
        assert word in str(caught.value)


ports = st.integers(1, 65535)
port_ranges = st.one_of(
    ports.map(lambda p: ((p, p),)),
    st.tuples(ports, ports).map(lambda ab: ((min(ab), max(ab)),)),
    st.tuples(ports, ports).map(lambda ab: ((ab[0], ab[0]), (ab[1], ab[1]))),
)
v4_nets = st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)).map(
    lambda t: str(ipaddress.IPv4Network(t, strict=False)))
v6_nets = st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 128)).map(
    lambda t: str(ipaddress.IPv6Network(t, strict=False)))


@st.composite
def rules(draw: st.DrawFn) -> FilterRule:
    nets = draw(st.sampled_from([v4_nets, v6_nets]))
    kind = draw(st.sampled_from(["ports", "icmp", "tcp", "none"]))
    values: dict[str, object] = {
        "action": draw(st.sampled_from(["Accept", "Reject"])),
        "direction": draw(st.sampled_from([None, "Ingress", "Egress"])),
        "cidr": draw(st.none() | nets),
        "peer_cidr": draw(st.none() | nets),
        "drops": draw(st.booleans()),
    }
    if kind == "ports":
        side = draw(st.sampled_from([("port",), ("sport",), ("dport",), ("sport", "dport")]))
        for name in side:
            values[name] = draw(port_ranges)
        values["protocol"] = draw(st.sampled_from([None, 6, 17, 132]))
    elif kind == "icmp":
        values["protocol"] = draw(st.sampled_from([None, 1, 58]))
        values["icmp_type"] = draw(st.none() | st.integers(0, 255))
        values["icmp_code"] = draw(st.none() | st.integers(0, 255))
    elif kind == "tcp":
        values["protocol"] = draw(st.sampled_from([None, 6]))
        values["tcp_flags"] = draw(st.sampled_from(sorted(TCP_FLAGS)))
    else:
        values["protocol"] = draw(st.none() | st.integers(0, 255))
    return FilterRule(**values)  # type: ignore[arg-type]


@given(st.lists(rules(), max_size=MAX_RULES), st.integers(0, 1000))
def test_any_rule_set_survives_json_and_flags(found: list[FilterRule], sampling: int) -> None:
    filters = FilterSet(tuple(found), sampling, enabled=True)
    assert FilterSet.from_json(filters.to_json()) == filters
    assert FilterSet.parse(filters.argv())[0] == filters
    assert len(pack_rules(filters)) == len(found)
    assert all(len(raw) == RULE.size for raw in pack_rules(filters))


@pytest.mark.parametrize(
    ("name", "matching", "other"),
    [
        ("SYN", [SYN, SYN | PSH], [SYN | ACK, ACK, 0]),
        ("SYN-ACK", [SYN | ACK], [SYN, ACK]),
        ("ACK", [ACK, ACK | PSH], [SYN | ACK, FIN | ACK, RST | ACK, PSH]),
        ("FIN", [FIN, FIN | PSH], [FIN | ACK]),
        ("FIN-ACK", [FIN | ACK, FIN | ACK | PSH], [FIN, ACK]),
        ("RST", [RST], [RST | ACK]),
        ("RST-ACK", [RST | ACK], [RST, ACK]),
        ("PSH", [PSH, PSH | ACK], [ACK]),
        ("URG", [0x20, 0x30], [ACK]),
        ("ECE", [0x40, 0x42], [ACK]),
        ("CWR", [0x80, 0x90], [ACK]),
    ],
)
def test_tcp_flag_names(name: str, matching: list[int], other: list[int]) -> None:
    mask, value = TCP_FLAGS[name]
    assert all(flags & mask == value for flags in matching)
    assert not any(flags & mask == value for flags in other)
