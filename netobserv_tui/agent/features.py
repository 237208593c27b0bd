"""Optional features: which kernel hooks they need, their fields, and joining them to flows.

Features are compiled in with ``-D`` switches only when enabled, so they cost nothing when
off. Each has hooks that may be missing on the running kernel; a feature whose hook is
missing or refuses to load is switched off with a reason (shown by the TUI and the log),
and the capture goes on with everything else.

Tracepoint data is keyed by ``struct flow_5tuple`` (the first 39 bytes of ``flow_id``), so
joining is a dictionary lookup per flow record.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from .bpf import drain_pairs
from .records import ip_text

log = logging.getLogger(__name__)

#: Where tracepoints are described; NETOBSERV_TRACEFS overrides it (to test degradation).
TRACEFS: Final = Path(os.environ.get("NETOBSERV_TRACEFS", "/sys/kernel/tracing"))
FIVE_TUPLE: Final = struct.Struct("<16s16sHHHBx")
PREFIX: Final = 39  # bytes of flow_id that form the 5-tuple

DROP_RECORD: Final = struct.Struct("<QQIBB2xII")
#: Where a drop happened, kept with its fields under these keys (not columns): the device's
#: ifindex and the inode number of its network namespace.
DROP_IFINDEX: Final = "_ifindex"
DROP_NETNS: Final = "_netns"
#: The Interface of a record made from a kernel event whose packet had no device.
NO_DEVICE: Final = "-"
TCP_RECORD: Final = struct.Struct("<QQQQ")

PKTDROP: Final = "pktdrop"
DNS: Final = "dns"
RTT: Final = "rtt"
ALL_FEATURES: Final = (PKTDROP, DNS, RTT)

#: Tracepoints each feature needs (category, name).
HOOKS: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    PKTDROP: (("skb", "kfree_skb"),),
    DNS: (),
    RTT: (
        ("tcp", "tcp_probe"),
        ("tcp", "tcp_retransmit_skb"),
        ("tcp", "tcp_send_reset"),
        ("tcp", "tcp_receive_reset"),
    ),
}

DROP_COLUMNS: Final = (
    "PktDropBytes",
    "PktDropPackets",
    "PktDropLatestState",
    "PktDropLatestDropCause",
    "PktDropLatestFlags",
)
DNS_COLUMNS: Final = (
    "DnsId",
    "DnsFlags",
    "DnsFlagsResponseCode",
    "DnsLatencyMs",
    "DnsErrno",
    "DnsName",
)
RTT_COLUMNS: Final = ("TimeFlowRttNs", "TcpRetransmits", "TcpResetsSent", "TcpResetsReceived")
COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    PKTDROP: DROP_COLUMNS,
    DNS: DNS_COLUMNS,
    RTT: RTT_COLUMNS,
}

#: Used only when the running kernel does not describe its TCP states (it always should).
_TCP_STATES_FALLBACK: Final = {
    1: "TCP_ESTABLISHED", 2: "TCP_SYN_SENT", 3: "TCP_SYN_RECV", 4: "TCP_FIN_WAIT1",
    5: "TCP_FIN_WAIT2", 6: "TCP_TIME_WAIT", 7: "TCP_CLOSE", 8: "TCP_CLOSE_WAIT",
    9: "TCP_LAST_ACK", 10: "TCP_LISTEN", 11: "TCP_CLOSING", 12: "TCP_NEW_SYN_RECV",
}  # fmt: skip

_SYMBOL = re.compile(r"\{\s*(\d+)\s*,\s*\"([A-Za-z0-9_]+)\"\s*\}")


def tracepoint_exists(category: str, name: str) -> bool:
    return (TRACEFS / "events" / category / name / "format").is_file()


def _symbols(category: str, name: str, field_name: str) -> dict[int, str]:
    """Values and names of ``__print_symbolic(REC->field_name, ...)`` in a format file."""
    try:
        text = (TRACEFS / "events" / category / name / "format").read_text()
    except OSError:
        return {}
    start = text.find(f"__print_symbolic(REC->{field_name}")
    if start < 0:
        return {}
    end = text.find(")", start)
    return {int(v): n for v, n in _SYMBOL.findall(text[start:end])}


@lru_cache(maxsize=1)
def drop_reasons() -> dict[int, str]:
    """SKB_DROP_REASON_* names of the running kernel, from the kfree_skb format."""
    return {v: f"SKB_DROP_REASON_{n}" for v, n in _symbols("skb", "kfree_skb", "reason").items()}


@lru_cache(maxsize=1)
def tcp_states() -> dict[int, str]:
    """TCP state names of the running kernel, from sock:inet_sock_set_state."""
    return _symbols("sock", "inet_sock_set_state", "newstate") or dict(_TCP_STATES_FALLBACK)


@dataclass
class FeatureSet:
    """Requested features and, after start-up, which are on and why others are off."""

    requested: tuple[str, ...] = ()
    dns_port: int = 53
    only_drops: bool = False
    off: dict[str, str] = field(default_factory=dict)

    @property
    def on(self) -> tuple[str, ...]:
        return tuple(f for f in self.requested if f not in self.off)

    def detect(self) -> None:
        """Switch off features whose hooks the running kernel does not have."""
        for feature in self.requested:
            missing = [f"{c}:{n}" for c, n in HOOKS[feature] if not tracepoint_exists(c, n)]
            if missing:
                self.off[feature] = f"tracepoint {', '.join(missing)} not available"

    def defines(self, features: Iterable[str] | None = None) -> dict[str, int | str | None]:
        from .btf import drop_hook_defines

        selected = self.on if features is None else tuple(features)
        out: dict[str, int | str | None] = {}
        if PKTDROP in selected:
            out["ENABLE_PKTDROP"] = None
            out.update(drop_hook_defines())
        if DNS in selected:
            out["ENABLE_DNS"] = None
            out["DNS_PORT"] = self.dns_port
        if RTT in selected:
            out["ENABLE_RTT"] = None
            out["ENABLE_TCP_EVENTS"] = None
        return out

    def columns(self) -> tuple[str, ...]:
        return tuple(c for f in ALL_FEATURES if f in self.on for c in COLUMNS[f])

    def status(self) -> dict[str, str]:
        return {f: ("on" if f not in self.off else f"off: {self.off[f]}") for f in self.requested}


def drain_map(bpf: Any, name: str, key_size: int, value_size: int, max_entries: int) -> list[
    tuple[bytes, bytes]
]:
    """Every (key, value) of the hash map ``name``, deleted from the kernel."""
    return drain_pairs(bpf[name.encode()].map_fd, key_size, value_size, max_entries)


def drop_fields(value: bytes) -> dict[str, Any]:
    packets, nbytes, reason, state, flags, ifindex, netns = DROP_RECORD.unpack(value)
    return {
        "PktDropBytes": nbytes,
        "PktDropPackets": packets,
        "PktDropLatestState": tcp_states().get(state, str(state)) if state else None,
        "PktDropLatestDropCause": drop_reasons().get(reason, f"SKB_DROP_REASON_{reason}"),
        "PktDropLatestFlags": flags,
        DROP_IFINDEX: ifindex,
        DROP_NETNS: netns,
    }


def own_netns() -> int:
    """The inode number of this process's network namespace (where its interfaces are)."""
    try:
        return os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return 0


def tcp_fields(value: bytes) -> dict[str, Any]:
    srtt, retrans, rst_sent, rst_received = TCP_RECORD.unpack(value)
    return {
        "TimeFlowRttNs": srtt or None,
        "TcpRetransmits": retrans,
        "TcpResetsSent": rst_sent,
        "TcpResetsReceived": rst_received,
    }


@dataclass
class Joiner:
    """Adds feature fields to flow rows; makes rows of drops no TC hook saw.

    Nothing drained is thrown away. A DNS or RTT entry whose flow has no row in this
    eviction (its packet was counted just before the previous drain) is kept for the next
    one; if no row takes it then either, it becomes a row of its own, like a drop no TC
    hook saw. Such rows carry the eviction window as TimeFlowStartMs/TimeFlowEndMs and,
    as Interface, the device the kernel named (a drop), or :data:`NO_DEVICE`; a drop on an
    interface the capture excludes (``lo`` by default) is left out like its flows.

    The agent's own connection to the aggregator (:attr:`own`: its address and port as
    the agent reached it) is not reported either: the kernel's events of the capture's own
    sockets (its RTT, a closing socket's queue purged) made rows of their own, which in a
    local capture the Findings view listed as the slowest RTT of the host.  The agent, the
    TUI and the controller all connect to that address, so none of their connections are.
    Counted in :attr:`excluded_own`.
    """

    base_columns: tuple[str, ...]
    features: FeatureSet
    agent_ip: str
    columns: tuple[str, ...] = ()
    #: ifindex -> name in this namespace (the agent's link watcher).
    ifname: Callable[[int], str] | None = None
    #: Whether the capture takes an interface (``--interfaces``/``--exclude_interfaces``).
    wants: Callable[[str], bool] | None = None
    #: Inode of the namespace ``ifname`` knows (a drop elsewhere has another).
    netns: int = field(default_factory=own_netns)
    #: (address text, port) of the aggregator as the agent reached it: events of
    #: connections with that end are the capture's own.
    own: frozenset[tuple[str, int]] = frozenset()

    def __post_init__(self) -> None:
        self.columns = self.base_columns + self.features.columns()
        self._index = {c: i for i, c in enumerate(self.columns)}
        #: DNS/RTT entries no row took, by feature: kept for one more eviction.
        self._carried: dict[str, dict[bytes, dict[str, Any]]] = {}
        #: Drops on excluded interfaces left out (the ``lo`` traffic of the host).
        self.excluded_drops = 0
        #: Kernel events of the capture's own connections left out (see :attr:`own`).
        self.excluded_own = 0

    def join(
        self,
        keys: bytes | memoryview,
        key_size: int,
        rows: list[list[Any]],
        tables: dict[str, dict[bytes, dict[str, Any]]],
        window: tuple[int, int] | None = None,
    ) -> list[list[Any]]:
        """``tables`` maps a feature to {39-byte 5-tuple: fields}. Drops are additive, so
        they go to one record per 5-tuple (the first); the others go to every record.
        ``window`` is the eviction's (start, end) in epoch ms, for rows of their own."""
        extra = len(self.columns) - len(self.base_columns)
        drops = tables.get(PKTDROP, {})
        shared: dict[str, dict[bytes, dict[str, Any]]] = {}
        for feature in {*tables, *self._carried} - {PKTDROP}:
            # This eviction's entries win over the ones carried from the previous one.
            merged = {**self._carried.get(feature, {}), **tables.get(feature, {})}
            if merged:
                shared[feature] = merged
        carried_before = self._carried
        used: set[bytes] = set()
        used_drops: set[bytes] = set()
        out: list[list[Any]] = []
        view = memoryview(keys)
        index = self._index
        for i, row in enumerate(rows):
            row.extend([None] * extra)
            prefix = view[i * key_size : i * key_size + PREFIX].tobytes()
            for table in shared.values():
                fields = table.get(prefix)
                if fields:
                    used.add(prefix)
                    for name, value in fields.items():
                        row[index[name]] = value
            fields = drops.get(prefix)
            if fields is not None and prefix not in used_drops:
                used_drops.add(prefix)
                for name, value in fields.items():
                    if name in index:
                        row[index[name]] = value
            if self.features.only_drops and fields is None:
                continue
            out.append(row)
        for prefix, fields in drops.items():
            if prefix not in used_drops:
                own = self._own_row(prefix, fields, window, drop=True)
                if own is not None:
                    out.append(own)
        # Entries no row took: once more at the next eviction, then rows of their own.
        self._carried = {}
        for feature, table in shared.items():
            for prefix, fields in table.items():
                if prefix in used:
                    continue
                if prefix in carried_before.get(feature, {}) and prefix not in tables.get(
                        feature, {}):
                    if not self.features.only_drops:
                        own = self._own_row(prefix, fields, window, drop=False)
                        if own is not None:
                            out.append(own)
                else:
                    self._carried.setdefault(feature, {})[prefix] = fields
        return out

    def flush(self, window: tuple[int, int] | None = None) -> list[list[Any]]:
        """The entries still carried, as rows of their own (the agent's last eviction)."""
        carried, self._carried = self._carried, {}
        out: list[list[Any]] = []
        if self.features.only_drops:
            return out
        for table in carried.values():
            for prefix, fields in table.items():
                own = self._own_row(prefix, fields, window, drop=False)
                if own is not None:
                    out.append(own)
        return out

    def _own_row(self, prefix: bytes, fields: dict[str, Any], window: tuple[int, int] | None,
                 *, drop: bool) -> list[Any] | None:
        """A flow record for a kernel event of a flow no TC hook recorded in the window;
        None for a drop on an interface the capture excludes, or an event of the capture's
        own connections."""
        interface = NO_DEVICE
        if drop and fields.get(DROP_IFINDEX):
            ifindex, netns = fields[DROP_IFINDEX], fields.get(DROP_NETNS, 0)
            if netns and netns != self.netns:
                interface = f"if{ifindex}@netns:{netns}"
            else:
                interface = (self.ifname(ifindex) if self.ifname else "") or f"if{ifindex}"
                if self.wants is not None and not self.wants(interface):
                    self.excluded_drops += 1
                    return None
        src, dst, sport, dport, etype, proto = FIVE_TUPLE.unpack(prefix + b"\0")
        src_text, dst_text = ip_text(src, etype), ip_text(dst, etype)
        if self.own and ((src_text, sport) in self.own or (dst_text, dport) in self.own):
            self.excluded_own += 1
            return None
        row: list[Any] = [None] * len(self.columns)
        start, end = window if window is not None else (None, None)
        values = {
            "SrcAddr": src_text, "DstAddr": dst_text,
            "SrcPort": sport, "DstPort": dport, "Proto": proto, "Etype": etype,
            "Bytes": 0, "Packets": 0, "AgentIP": self.agent_ip,
            "TimeFlowStartMs": start, "TimeFlowEndMs": end, "Interface": interface,
            "Interfaces": [interface], **fields,
        }  # fmt: skip
        for name, value in values.items():
            if name in self._index:
                row[self._index[name]] = value
        return row


def collect_tables(
    bpf: Any, features: FeatureSet, max_entries: int,
    dns_drain: Callable[[Any], dict[bytes, dict[str, Any]]] | None = None,
) -> dict[str, dict[bytes, dict[str, Any]]]:  # fmt: skip
    """Drain every enabled feature map into {feature: {5-tuple prefix: fields}}."""
    tables: dict[str, dict[bytes, dict[str, Any]]] = {}
    if PKTDROP in features.on:
        tables[PKTDROP] = {
            k[:PREFIX]: drop_fields(v)
            for k, v in drain_map(bpf, "drops", FIVE_TUPLE.size, DROP_RECORD.size, max_entries)
        }
    if RTT in features.on:
        tables[RTT] = {
            k[:PREFIX]: tcp_fields(v)
            for k, v in drain_map(bpf, "tcp_stats", FIVE_TUPLE.size, TCP_RECORD.size, max_entries)
        }
    if DNS in features.on and dns_drain is not None:
        tables[DNS] = {k[:PREFIX]: v for k, v in dns_drain(bpf).items()}
    return tables
