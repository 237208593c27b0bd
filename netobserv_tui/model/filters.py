"""Flow filters: the ``--enable_filter`` rules, parsed and checked.

The command line speaks netobserv's spellings (``--enable_filter=true --protocol=tcp
--port=80``); the literal argument ``or`` separates rules. Everything is checked here, in the
controller, so that a bad value is refused before anything is deployed, with a message that
names the flag as the user typed it and the forms it accepts.

A :class:`FilterSet` travels to the agent as JSON (:meth:`FilterSet.to_json`); the agent
turns it into ``-D`` switches and ``struct filter_rule`` entries for ``ebpf/flows.c``
(:mod:`netobserv_tui.agent.filter_rules`, next to the code that loads them).

This module is part of ``model``: standard library only, importable by every package.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, NoReturn

from .errors import UsageError

#: Rules the kernel holds (the size of the filter_rules map). netobserv caps rules at 16 too.
MAX_RULES: Final = 16
#: Version of the JSON form; bump it when a field changes meaning.
JSON_VERSION: Final = 1
#: The argument that separates rules on the command line.
OR: Final = "or"

ACCEPT: Final = "Accept"
REJECT: Final = "Reject"
INGRESS: Final = "Ingress"
EGRESS: Final = "Egress"

#: Protocol names the flags accept (case-insensitive), as netobserv spells them.
PROTOCOLS: Final[Mapping[str, int]] = {"TCP": 6, "UDP": 17, "SCTP": 132, "ICMP": 1, "ICMPv6": 58}
_PROTOCOL_NAMES: Final = {number: name for name, number in PROTOCOLS.items()}
_PORT_PROTOCOLS: Final = frozenset({6, 17, 132})
_ICMP_PROTOCOLS: Final = frozenset({1, 58})

FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20
ECE: Final = 0x40
CWR: Final = 0x80

#: ``--tcp_flags`` names -> (mask, value): a packet matches when ``flags & mask == value``.
#: SYN, FIN and RST split on ACK, so that the opening SYN, the SYN-ACK reply, a bare FIN and
#: a FIN-ACK are told apart (as netobserv does); ACK alone means an ACK that opens, closes or
#: resets nothing (data and pure acknowledgements); PSH, URG, ECE and CWR test one bit.
TCP_FLAGS: Final[Mapping[str, tuple[int, int]]] = {
    "SYN": (SYN | ACK, SYN),
    "SYN-ACK": (SYN | ACK, SYN | ACK),
    "ACK": (SYN | ACK | FIN | RST, ACK),
    "FIN": (FIN | ACK, FIN),
    "FIN-ACK": (FIN | ACK, FIN | ACK),
    "RST": (RST | ACK, RST),
    "RST-ACK": (RST | ACK, RST | ACK),
    "PSH": (PSH, PSH),
    "URG": (URG, URG),
    "ECE": (ECE, ECE),
    "CWR": (CWR, CWR),
}

_ANY_CIDR: Final = "0.0.0.0/0"
_MAX_SAMPLING: Final = 0xFFFF_FFFF  # the kernel draws a u32 at random

#: Inclusive port ranges, one or two of them: ``80`` is ((80, 80),), ``80-90`` is
#: ((80, 90),) and ``80,443`` is ((80, 80), (443, 443)).
PortRanges = tuple[tuple[int, int], ...]


# -- flags ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Flag:
    name: str  # article spelling, with underscores
    metavar: str
    help: str
    optional_value: bool = False  # ``--drops`` alone means ``--drops=true``

    @property
    def dest(self) -> str:
        return self.name.removeprefix("--")


_GLOBAL_FLAGS: Final = (
    _Flag("--enable_filter", "BOOL", "turn the flow filter on: true or false (default false); "
          "the other filter options need it", optional_value=True),
    _Flag("--sampling", "N", "record about 1 packet in N (default 0: every packet; 1 is the "
          "same)"),
)
_RULE_FLAGS: Final = (
    _Flag("--direction", "DIR", "match the hook direction at the interface: Ingress or Egress"),
    _Flag("--cidr", "CIDR", "match when the source or the destination address is in this IPv4 "
          "or IPv6 CIDR (default 0.0.0.0/0: any address)"),
    _Flag("--protocol", "PROTO", "match this protocol: TCP, UDP, SCTP, ICMP, ICMPv6 or a "
          "number from 0 to 255"),
    _Flag("--sport", "PORT", "match this source port (1-65535)"),
    _Flag("--dport", "PORT", "match this destination port (1-65535)"),
    _Flag("--port", "PORT", "match this port as source or destination (1-65535)"),
    _Flag("--sport_range", "A-B", "match a source port from A to B, e.g. 80-100"),
    _Flag("--dport_range", "A-B", "match a destination port from A to B"),
    _Flag("--port_range", "A-B", "match a source or destination port from A to B"),
    _Flag("--sports", "P1,P2", "match either of two source ports, e.g. 80,443"),
    _Flag("--dports", "P1,P2", "match either of two destination ports"),
    _Flag("--ports", "P1,P2", "match either of two ports, as source or destination"),
    _Flag("--icmp_type", "TYPE", "match this ICMP or ICMPv6 type (0-255)"),
    _Flag("--icmp_code", "CODE", "match this ICMP or ICMPv6 code (0-255)"),
    _Flag("--peer_ip", "IP", "match when the other side of --cidr is this address"),
    _Flag("--peer_cidr", "CIDR", "match when the other side of --cidr is in this CIDR"),
    _Flag("--action", "ACTION", "what a matching rule does: Accept (record, the default) or "
          "Reject (skip)"),
    _Flag("--tcp_flags", "FLAGS", "match TCP packets by flags: " + ", ".join(TCP_FLAGS)
          + " (see docs/filters.md)"),
    _Flag("--drops", "BOOL", "match only flows with dropped packets: true or false",
          optional_value=True),
)
_FLAGS: Final = {f.dest: f for f in (*_GLOBAL_FLAGS, *_RULE_FLAGS)}
_RULE_DESTS: Final = frozenset(f.dest for f in _RULE_FLAGS)


class _Collect(argparse.Action):
    """Appends ``(spelling, value)``: repeats are caught later, and messages name the flag the
    way the user typed it (``--sport_range`` or ``--sport-range``)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        seen = list(getattr(namespace, self.dest, None) or [])
        seen.append((option_string or self.option_strings[0], values))
        setattr(namespace, self.dest, seen)


def add_filter_arguments(container: argparse._ActionsContainer) -> None:
    """Register every filter flag (article spelling plus dashed alias) on a parser or group.

    Values are kept as typed and checked by :class:`FilterSet`, so that every refusal is a
    :class:`UsageError` with the accepted forms, rather than argparse's generic message.
    """
    for flag in (*_GLOBAL_FLAGS, *_RULE_FLAGS):
        names = [flag.name]
        dashed = flag.name.replace("_", "-")
        if dashed != flag.name:
            names.append(dashed)
        kwargs: dict[str, Any] = {}
        if flag.optional_value:
            kwargs = {"nargs": "?", "const": "true"}
        container.add_argument(
            *names, dest=flag.dest, action=_Collect, default=None, metavar=flag.metavar,
            help=flag.help, **kwargs,
        )


class _FilterParser(argparse.ArgumentParser):
    """argparse for the filter flags only, raising UsageError instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; see `netobserv flows --help` and docs/filters.md")


def _filter_parser() -> _FilterParser:
    parser = _FilterParser(prog="netobserv flows", add_help=False, allow_abbrev=False)
    add_filter_arguments(parser)
    return parser


def split_rules(argv: Sequence[str]) -> list[list[str]]:
    """Split arguments at each literal ``or``: ``a or b c`` -> ``[[a], [b, c]]``.

    An ``or`` at either end, or two in a row, leaves an empty rule and is refused.
    """
    groups: list[list[str]] = [[]]
    for arg in argv:
        if arg == OR:
            groups.append([])
        else:
            groups[-1].append(arg)
    if len(groups) > 1 and any(not g for g in groups):
        raise UsageError(
            "`or` must stand between two rules, as in `--enable_filter=true --protocol=tcp "
            "--port=80 or --protocol=udp --port=53`"
        )
    return groups


# -- value parsers ----------------------------------------------------------------------

def _refuse(flag: str, value: str, what: str, forms: str) -> NoReturn:
    raise UsageError(f"{flag}: {value!r} is not {what}; {forms}")


def _bool(flag: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    _refuse(flag, text, "a boolean", "use true or false")


def _number(flag: str, text: str, low: int, high: int, what: str) -> int:
    value = text.strip()
    if value.isascii() and value.isdigit() and low <= int(value) <= high:
        return int(value)
    _refuse(flag, text, what, f"use a number from {low} to {high}")


def _port(flag: str, text: str) -> int:
    return _number(flag, text, 1, 65535, "a port")


def _port_range(flag: str, text: str) -> PortRanges:
    forms = "use two ports from 1 to 65535 as A-B with A <= B, e.g. 80-100"
    low, sep, high = text.partition("-")
    if not sep:
        _refuse(flag, text, "a port range", forms)
    try:
        a, b = _port(flag, low), _port(flag, high)
    except UsageError:
        _refuse(flag, text, "a port range", forms)
    if a > b:
        _refuse(flag, text, "a port range", f"the first port must not exceed the second; {forms}")
    return ((a, b),)


def _port_pair(flag: str, text: str) -> PortRanges:
    forms = "use exactly two ports from 1 to 65535 separated by a comma, e.g. 80,443"
    parts = text.split(",")
    if len(parts) != 2:
        _refuse(flag, text, "a pair of ports", forms)
    try:
        a, b = (_port(flag, p) for p in parts)
    except UsageError:
        _refuse(flag, text, "a pair of ports", forms)
    return ((a, a), (b, b))


def _protocol(flag: str, text: str) -> int:
    for name, number in PROTOCOLS.items():
        if text.strip().lower() == name.lower():
            return number
    value = text.strip()
    if value.isascii() and value.isdigit() and int(value) <= 255:
        return int(value)
    _refuse(flag, text, "a protocol", "use TCP, UDP, SCTP, ICMP, ICMPv6 or a number from 0 to 255")


def _choice(flag: str, text: str, choices: Sequence[str], what: str) -> str:
    for choice in choices:
        if text.strip().lower() == choice.lower():
            return choice
    _refuse(flag, text, what, "use " + " or ".join(choices) + " (any case)")


def _tcp_flags(flag: str, text: str) -> str:
    for name in TCP_FLAGS:
        if text.strip().upper() == name:
            return name
    _refuse(flag, text, "a TCP flag name", "use one of " + ", ".join(TCP_FLAGS))


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _network(flag: str, text: str) -> Network:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        _refuse(flag, text, "a CIDR", "use an address and a prefix length, e.g. 10.128.0.0/14 "
                "or fd00::/64")


def _address(flag: str, text: str) -> Network:
    try:
        if "%" in text:  # a scoped IPv6 address: packets carry no zone, so it cannot match
            raise ValueError(text)
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        _refuse(flag, text, "an IP address", "use one IPv4 or IPv6 address, e.g. 10.129.0.48 "
                "or fd00::1 (for a network, use --peer_cidr)")
    return ipaddress.ip_network(ip)


# -- rules -----------------------------------------------------------------------------

@dataclass(frozen=True)
class FilterRule:
    """One rule: every condition it sets must match. ``None`` means "not set".

    Addresses are kept as normalized text (``10.128.0.0/14``) so that the JSON form is
    readable; ``cidr`` is None for the default, 0.0.0.0/0, which matches any address of either
    family. ``peer_cidr`` holds ``--peer_ip`` too, as a /32 or /128.
    """

    action: str = ACCEPT
    direction: str | None = None
    cidr: str | None = None
    peer_cidr: str | None = None
    protocol: int | None = None
    sport: PortRanges | None = None
    dport: PortRanges | None = None
    port: PortRanges | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    tcp_flags: str | None = None
    drops: bool = False

    def __post_init__(self) -> None:
        """A safety net for rules built from JSON: the CLI path has checked all this already,
        with friendlier messages naming the flags."""
        problems = []
        if self.action not in (ACCEPT, REJECT):
            problems.append(f"action {self.action!r}")
        if self.direction not in (None, INGRESS, EGRESS):
            problems.append(f"direction {self.direction!r}")
        if self.protocol is not None and not 0 <= self.protocol <= 255:
            problems.append(f"protocol {self.protocol!r}")
        for name in ("icmp_type", "icmp_code"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 255:
                problems.append(f"{name} {value!r}")
        for name in ("sport", "dport", "port"):
            ranges = getattr(self, name)
            if ranges is not None and not (
                1 <= len(ranges) <= 2 and all(1 <= a <= b <= 65535 for a, b in ranges)
            ):
                problems.append(f"{name} {ranges!r}")
        if self.tcp_flags is not None and self.tcp_flags not in TCP_FLAGS:
            problems.append(f"tcp_flags {self.tcp_flags!r}")
        families = set()
        for name in ("cidr", "peer_cidr"):
            text = getattr(self, name)
            if text is not None:
                try:
                    net = ipaddress.ip_network(text, strict=False)
                except (ValueError, TypeError):
                    problems.append(f"{name} {text!r}")
                    continue
                # One spelling per network, and 0.0.0.0/0 is "any" (None) however it came.
                object.__setattr__(self, name, None if str(net) == _ANY_CIDR else str(net))
                families.add(net.version)
        if len(families) > 1:
            problems.append("cidr and peer_cidr of different families")
        if problems:
            raise UsageError(f"invalid filter rule: {', '.join(problems)}")

    @property
    def family(self) -> int | None:
        """4 or 6 when an address condition fixes the IP version, else None."""
        for text in (self.cidr, self.peer_cidr):
            if text is not None:
                return ipaddress.ip_network(text).version
        return None

    def argv(self) -> list[str]:
        """The rule as canonical flags: ``FilterSet.parse`` of these gives this rule back."""
        out = []
        if self.direction:
            out.append(f"--direction={self.direction}")
        if self.cidr:
            out.append(f"--cidr={self.cidr}")
        if self.protocol is not None:
            out.append(f"--protocol={_PROTOCOL_NAMES.get(self.protocol, self.protocol)}")
        for name, ranges in (("sport", self.sport), ("dport", self.dport), ("port", self.port)):
            if ranges is None:
                continue
            if len(ranges) == 2:
                out.append(f"--{name}s={ranges[0][0]},{ranges[1][0]}")
            elif ranges[0][0] == ranges[0][1]:
                out.append(f"--{name}={ranges[0][0]}")
            else:
                out.append(f"--{name}_range={ranges[0][0]}-{ranges[0][1]}")
        if self.icmp_type is not None:
            out.append(f"--icmp_type={self.icmp_type}")
        if self.icmp_code is not None:
            out.append(f"--icmp_code={self.icmp_code}")
        if self.peer_cidr:
            out.append(f"--peer_cidr={self.peer_cidr}")
        if self.tcp_flags:
            out.append(f"--tcp_flags={self.tcp_flags}")
        if self.drops:
            out.append("--drops=true")
        if self.action != ACCEPT or not out:
            out.append(f"--action={self.action}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FilterRule:
        values = dict(data)
        for name in ("sport", "dport", "port"):
            if values.get(name) is not None:
                values[name] = tuple((int(a), int(b)) for a, b in values[name])
        try:
            return cls(**values)
        except TypeError as exc:
            raise UsageError(f"invalid filter rule {dict(data)!r}: {exc}") from None


# One rule from one group of parsed flags -------------------------------------------------

_PORT_FLAGS: Final = {
    "sport": ("sport", "sport_range", "sports"),
    "dport": ("dport", "dport_range", "dports"),
    "port": ("port", "port_range", "ports"),
}

_Seen = dict[str, tuple[str, str]]  # dest -> (spelling, value), each at most once per rule


def _rule(seen: _Seen) -> FilterRule:
    """One rule from the flags of one group, each checked with a message naming it."""
    get = seen.get
    values: dict[str, Any] = {}
    if (item := get("action")) is not None:
        values["action"] = _choice(*item, (ACCEPT, REJECT), "an action")
    if (item := get("direction")) is not None:
        values["direction"] = _choice(*item, (INGRESS, EGRESS), "a direction")
    if (item := get("protocol")) is not None:
        values["protocol"] = _protocol(*item)
    cidr = _network(*item) if (item := get("cidr")) is not None else None
    if cidr is not None and str(cidr) != _ANY_CIDR:
        values["cidr"] = str(cidr)
    peer_ip, peer_net = get("peer_ip"), get("peer_cidr")
    if peer_ip is not None and peer_net is not None:
        raise UsageError(
            f"{peer_ip[0]} and {peer_net[0]} cannot be used in the same rule; use one of them "
            "(an address is a /32 or /128 CIDR), or write two rules joined by `or`"
        )
    peer = _address(*peer_ip) if peer_ip else _network(*peer_net) if peer_net else None
    if peer is not None and str(peer) != _ANY_CIDR:
        values["peer_cidr"] = str(peer)
        if cidr is not None and str(cidr) != _ANY_CIDR and cidr.version != peer.version:
            spelling, typed = peer_ip or peer_net or ("", "")
            raise UsageError(
                f"{spelling}: {typed!r} is IPv{peer.version} but --cidr {str(cidr)!r} is "
                f"IPv{cidr.version}; a rule matches one IP version, so use the same for both"
            )

    used_kinds: list[str] = []
    for kind, dests in _PORT_FLAGS.items():
        given = [d for d in dests if d in seen]
        if len(given) > 1:
            names = " and ".join(seen[d][0] for d in given)
            raise UsageError(
                f"{names} cannot be used in the same rule; use one of them, or write two rules "
                "joined by `or`"
            )
        if not given:
            continue
        spelling, text = seen[given[0]]
        if given[0] == kind:
            number = _port(spelling, text)
            values[kind] = ((number, number),)
        elif given[0].endswith("_range"):
            values[kind] = _port_range(spelling, text)
        else:
            values[kind] = _port_pair(spelling, text)
        used_kinds.append(spelling)
    if "port" in values and ("sport" in values or "dport" in values):
        raise UsageError(
            f"{used_kinds[-1]} and {used_kinds[0]} cannot be used in the same rule: --port, "
            "--port_range and --ports match either side already; use --sport*/--dport* for one "
            "side, or write two rules joined by `or`"
        )

    if (item := get("icmp_type")) is not None:
        values["icmp_type"] = _number(*item, 0, 255, "an ICMP type")
    if (item := get("icmp_code")) is not None:
        values["icmp_code"] = _number(*item, 0, 255, "an ICMP code")
    if (item := get("tcp_flags")) is not None:
        values["tcp_flags"] = _tcp_flags(*item)
    if (item := get("drops")) is not None:
        values["drops"] = _bool(*item)
    _check_protocol(seen, values)
    return FilterRule(**values)


def _check_protocol(seen: _Seen, values: Mapping[str, Any]) -> None:
    """Refuse rules that can never match, such as ports on ICMP: a silent empty capture is a
    worse answer than an error that says why."""
    protocol = values.get("protocol")
    name = _PROTOCOL_NAMES.get(protocol, str(protocol)) if protocol is not None else None
    port_flags = [seen[d][0] for dests in _PORT_FLAGS.values() for d in dests if d in seen]
    icmp_flags = [seen[d][0] for d in ("icmp_type", "icmp_code") if d in seen]
    tcp_flag = [seen["tcp_flags"][0]] if "tcp_flags" in seen else []
    if port_flags and protocol is not None and protocol not in _PORT_PROTOCOLS:
        raise UsageError(f"{port_flags[0]}: protocol {name} has no ports; ports match TCP, UDP "
                         "and SCTP only (leave --protocol out to match any of them)")
    if icmp_flags and protocol is not None and protocol not in _ICMP_PROTOCOLS:
        raise UsageError(f"{icmp_flags[0]}: protocol {name} has no ICMP type or code; use "
                         "--protocol=ICMP or ICMPv6, or leave it out to match both")
    if tcp_flag and protocol is not None and protocol != 6:
        raise UsageError(f"{tcp_flag[0]}: protocol {name} has no TCP flags; use --protocol=TCP "
                         "or leave it out")
    if icmp_flags and (port_flags or tcp_flag):
        other = (port_flags or tcp_flag)[0]
        raise UsageError(f"{icmp_flags[0]} and {other} cannot be used in the same rule: ICMP "
                         "packets have no ports or TCP flags; write two rules joined by `or`")


def _single(dest: str, items: Sequence[tuple[str, str]]) -> tuple[str, str]:
    if len(items) > 1:
        spelling = items[0][0]
        listed = " and ".join(repr(v) for _, v in items)
        if dest not in _RULE_DESTS:
            raise UsageError(f"{spelling} is given {len(items)} times ({listed}); give it once")
        hint = ""
        if dest in ("sport", "dport", "port"):
            hint = f" (use --{dest}s=P1,P2 for two ports)"
        raise UsageError(
            f"{spelling} is given {len(items)} times in one rule ({listed}); give it once"
            f"{hint}, or write one rule per value joined by `or`"
        )
    return items[0][0], "" if items[0][1] is None else str(items[0][1])


# -- the set ---------------------------------------------------------------------------

@dataclass(frozen=True)
class FilterSet:
    """Every rule of a capture, plus the sampling rate that applies after them.

    ``enabled`` is ``--enable_filter``; with it off there are no rules. With it on and no
    rules, everything is recorded (the default 0.0.0.0/0 Accept).
    """

    rules: tuple[FilterRule, ...] = ()
    sampling: int = 0
    enabled: bool = False

    def __post_init__(self) -> None:
        if len(self.rules) > MAX_RULES:
            raise UsageError(
                f"{len(self.rules)} filter rules were given; at most {MAX_RULES} fit in the "
                "kernel: merge rules (ranges, CIDRs) or drop some"
            )
        if self.rules and not self.enabled:
            raise UsageError("filter rules need --enable_filter=true")
        if not 0 <= self.sampling <= _MAX_SAMPLING:
            raise UsageError(f"invalid sampling {self.sampling!r}")

    # Building -------------------------------------------------------------------------

    @classmethod
    def parse(cls, argv: Sequence[str]) -> tuple[FilterSet, list[str]]:
        """Take the filter flags out of ``argv`` (the arguments after ``flows``).

        Returns the filter set and the arguments that are not filter flags, in order, for the
        command's own parser. Raises UsageError for any bad filter value.
        """
        parser = _filter_parser()
        groups: list[argparse.Namespace] = []
        rest: list[str] = []
        for group in split_rules(argv):
            namespace, unknown = parser.parse_known_args(group)
            groups.append(namespace)
            rest.extend(unknown)
        return cls.from_namespaces(groups), rest

    @classmethod
    def from_argv(cls, groups: Iterable[Sequence[str]]) -> FilterSet:
        """From groups of filter flags only (e.g. ``split_rules``'s output); anything else in
        them is refused."""
        parser = _filter_parser()
        namespaces = []
        for group in groups:
            namespace, unknown = parser.parse_known_args(list(group))
            if unknown:
                raise UsageError(f"{unknown[0]!r} is not a filter option; see docs/filters.md")
            namespaces.append(namespace)
        return cls.from_namespaces(namespaces)

    @classmethod
    def from_namespace(cls, namespace: argparse.Namespace) -> FilterSet:
        """From a parser that :func:`add_filter_arguments` set up (a single rule: a parser
        cannot see ``or``; use :meth:`parse` for several)."""
        return cls.from_namespaces([namespace])

    @classmethod
    def from_namespaces(cls, namespaces: Sequence[argparse.Namespace]) -> FilterSet:
        """One namespace per rule group; ``--enable_filter`` and ``--sampling`` may be in any
        group, once."""
        enabled, sampling = False, 0
        per_group: list[_Seen] = []
        globals_seen: dict[str, list[tuple[str, str]]] = {}
        for namespace in namespaces:
            seen: _Seen = {}
            for dest in _FLAGS:
                items = getattr(namespace, dest, None)
                if not items:
                    continue
                if dest in _RULE_DESTS:
                    seen[dest] = _single(dest, items)
                else:
                    globals_seen.setdefault(dest, []).extend(items)
            per_group.append(seen)
        if "enable_filter" in globals_seen:
            enabled = _bool(*_single("enable_filter", globals_seen["enable_filter"]))
        if "sampling" in globals_seen:
            spelling, text = _single("sampling", globals_seen["sampling"])
            value = text.strip()
            if not (value.isascii() and value.isdigit() and int(value) <= _MAX_SAMPLING):
                _refuse(spelling, text, "a sampling rate", "use a whole number N to record about "
                        "1 packet in N (0 or 1 records every packet)")
            sampling = int(value)
        if len(per_group) > 1 and not enabled:
            raise UsageError("`or` separates filter rules, and filtering is off; add "
                             "--enable_filter=true before the first rule")
        rules = []
        for index, seen in enumerate(per_group):
            if not seen:
                if index > 0:
                    raise UsageError(
                        "every rule after `or` needs at least one filter option, such as "
                        "--protocol=udp --port=53"
                    )
                continue
            if not enabled:
                first = next(iter(seen.values()))[0]
                raise UsageError(
                    f"{first} is a filter option, and filtering is off; add "
                    "--enable_filter=true before the first rule"
                )
            rules.append(_rule(seen))
        return cls(tuple(rules), sampling, enabled)

    # Using ----------------------------------------------------------------------------

    @property
    def needs_drops(self) -> bool:
        """Whether a rule asks for flows with drops, so the drop hook must be loaded."""
        return any(rule.drops for rule in self.rules)

    def argv(self) -> list[str]:
        """Canonical flags that parse back to this set (for logs and the capture header)."""
        out: list[str] = []
        if self.enabled:
            out.append("--enable_filter=true")
        for index, rule in enumerate(self.rules):
            if index:
                out.append(OR)
            out.extend(rule.argv())
        if self.sampling:
            out.append(f"--sampling={self.sampling}")
        return out

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": JSON_VERSION,
                "enabled": self.enabled,
                "sampling": self.sampling,
                "rules": [rule.to_dict() for rule in self.rules],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> FilterSet:
        try:
            data = json.loads(text)
            version = data["version"]
            if version != JSON_VERSION:
                raise UsageError(
                    f"filter JSON version {version!r} is not {JSON_VERSION}: the controller and "
                    "the agent come from different releases; use the same version for both"
                )
            rules = tuple(FilterRule.from_dict(r) for r in data["rules"])
            return cls(rules, int(data["sampling"]), bool(data["enabled"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"invalid filter JSON: {exc}") from None
