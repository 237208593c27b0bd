"""Python mirror of ebpf/flow_record.h and conversion of kernel records to wire rows.

Eviction hands us two flat byte buffers (keys, values); ``struct.iter_unpack`` walks them
without creating a ctypes object per field, which is what keeps draining 100k flows well
under a second.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterable, Iterator
from itertools import groupby
from typing import Any, Final

from ..model.fields import BASE_COLUMNS

FLOW_ID: Final = struct.Struct("<16s16sHHHBBIBB2x")
FLOW_METRICS: Final = struct.Struct("<QQQQQ6s6sB3x")
COUNTER_MAP_FULL: Final = 0
COUNTER_RINGBUF_LOST: Final = 1
COUNTER_EVENTS_FULL: Final = 2
COUNTER_PACKETS_LOST: Final = 3

_V4_MAPPED: Final = b"\x00" * 10 + b"\xff\xff"
ETH_P_IP: Final = 0x0800
ETH_P_IPV6: Final = 0x86DD
CACHE_LIMIT: Final = 1 << 18

#: Columns of the rows this module produces, in order: the fields of a basic flow capture.
ROW_COLUMNS: Final[tuple[str, ...]] = BASE_COLUMNS

assert FLOW_ID.size == 48 and FLOW_METRICS.size == 56


def ip_text(raw: bytes, etype: int) -> str:
    if raw.startswith(_V4_MAPPED) and etype != ETH_P_IPV6:
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    if etype == ETH_P_IP or etype == ETH_P_IPV6 or any(raw):
        return socket.inet_ntop(socket.AF_INET6, raw)
    return ""


def mac_text(raw: bytes) -> str:
    return raw.hex(":").upper()


class RowBuilder:
    """Turns (key bytes, value bytes) pairs into rows in ``ROW_COLUMNS`` order.

    ``ifname`` maps an ifindex to its name; ``is_local`` tells whether an address belongs
    to this node, which decides FlowDirection (0 ingress to the node, 1 egress from it,
    otherwise the direction at the interface).
    """

    def __init__(
        self,
        agent_ip: str,
        ifname: Callable[[int], str],
        is_local: Callable[[str], bool],
        sampling: int = 0,
    ) -> None:
        self.agent_ip = agent_ip
        self.ifname = ifname
        self.is_local = is_local
        self.sampling = sampling
        # Text forms of addresses and MACs, cached: a node sees far fewer distinct
        # endpoints than flows. Bounded; cleared when full (cheap to rebuild).
        self._ip6: dict[bytes, str] = {}
        self._ip_other: dict[bytes, str] = {}
        self._mac_cache: dict[bytes, str] = {}

    def _ip(self, raw: bytes, etype: int) -> str:
        cache = self._ip6 if etype == ETH_P_IPV6 else self._ip_other
        text = cache.get(raw)
        if text is None:
            if len(cache) >= CACHE_LIMIT:
                cache.clear()
            text = cache[raw] = ip_text(raw, etype)
        return text

    def _mac(self, raw: bytes) -> str:
        text = self._mac_cache.get(raw)
        if text is None:
            if len(self._mac_cache) >= CACHE_LIMIT:
                self._mac_cache.clear()
            text = self._mac_cache[raw] = mac_text(raw)
        return text

    def rows(
        self, keys: bytes | memoryview, values: bytes | memoryview, mono_to_wall_ns: int
    ) -> Iterator[list[Any]]:
        pairs = zip(FLOW_ID.iter_unpack(keys), FLOW_METRICS.iter_unpack(values), strict=True)
        for key, value in pairs:
            yield self.row(key, value, mono_to_wall_ns)

    def row(
        self, key: tuple[Any, ...], value: tuple[Any, ...], mono_to_wall_ns: int
    ) -> list[Any]:
        src, dst, sport, dport, etype, proto, direction, ifindex, icmp_type, icmp_code = key
        packets, nbytes, start, end, flags, src_mac, dst_mac, dscp = value
        src_text = self._ip(src, etype)
        dst_text = self._ip(dst, etype)
        if self.is_local(src_text):
            flow_direction = 1
        elif self.is_local(dst_text):
            flow_direction = 0
        else:
            flow_direction = direction
        name = self.ifname(ifindex)
        return [
            src_text,
            dst_text,
            sport,
            dport,
            proto,
            self._mac(src_mac),
            self._mac(dst_mac),
            etype,
            dscp,
            icmp_type,
            icmp_code,
            flags,
            nbytes,
            packets,
            self.sampling,
            (start + mono_to_wall_ns) // 1_000_000,
            (end + mono_to_wall_ns) // 1_000_000,
            self.agent_ip,
            name,
            direction,
            [name],
            [direction],
            flow_direction,
        ]


_COL = {name: i for i, name in enumerate(ROW_COLUMNS)}
_START, _END = _COL["TimeFlowStartMs"], _COL["TimeFlowEndMs"]
_IFACE, _IFDIR = _COL["Interface"], _COL["IfDirection"]
_IFACES, _IFDIRS = _COL["Interfaces"], _COL["IfDirections"]
#: The flow of a FLOW_ID key, without where it was seen: the 39-byte 5-tuple and the ICMP
#: type and code (direction and ifindex skipped).
_FLOW_OF_KEY: Final = struct.Struct("<39s5x2s2x")
assert _FLOW_OF_KEY.size == FLOW_ID.size


class InterfaceLinker:
    """Links the rows of one flow seen on several interfaces, eviction after eviction.

    Rows of one eviction that are the same flow (5-tuple, ICMP type and code) seen on
    several interfaces each get, in ``Interfaces`` and ``IfDirections``, every interface
    and direction of that flow, the first seen first, as netobserv's records list them.
    Each row keeps its own Interface, counts and times.

    A packet that crosses two captured interfaces is in two rows; totals count it once by
    taking only the row of the first interface (``Interfaces[0] == Interface``, see
    ``Batch.total_once`` in the aggregator). "First" is decided once per flow, by the
    earliest TimeFlowStartMs when the flow is first linked, and kept while the flow lives
    (it is forgotten after :attr:`keep` evictions without it): a drain deletes a flow's
    entries one after the other, so in the next interval the entries may start in another
    order, and a choice made again each interval would count the packets in flight at the
    boundary twice, or not at all.

    The flows are compared on the kernel's key bytes (unpacked in C): a capture where no
    flow crosses two interfaces pays about 0.1 us per row.
    """

    def __init__(self, keep: int = 3) -> None:
        self.keep = keep
        self._eviction = 0
        #: flow -> (interface, direction) counted first, and the eviction it was last seen.
        self._first: dict[tuple[bytes, bytes], tuple[str, int, int]] = {}

    def link(self, rows: list[list[Any]], keys: bytes | memoryview) -> None:
        """Link ``rows`` (``ROW_COLUMNS`` order) whose FLOW_ID keys are ``keys``, back to
        back in the same order."""
        self._eviction += 1
        flows = list(_FLOW_OF_KEY.iter_unpack(keys))
        if len(set(flows)) != len(flows):
            # Rows of one flow next to each other (a sort in C), then each run of them.
            # One pass over each run's iterator: its first two rows, then the rest (B031
            # warns of reusing a groupby iterator after the next group began: never here).
            order = sorted(range(len(flows)), key=flows.__getitem__)
            for flow, run in groupby(order, key=flows.__getitem__):
                first = next(run)
                second = next(run, None)  # noqa: B031
                if second is not None:
                    group = [rows[first], rows[second], *(rows[i] for i in run)]  # noqa: B031
                    self._link(flow, group)
        if self._first and self._eviction % self.keep == 0:
            oldest = self._eviction - self.keep
            self._first = {k: v for k, v in self._first.items() if v[2] > oldest}

    def _link(self, flow: tuple[bytes, bytes], group: list[list[Any]]) -> None:
        group.sort(key=_seen_first)
        known = self._first.get(flow)
        if known is not None:
            for index, row in enumerate(group):
                if row[_IFACE] == known[0] and row[_IFDIR] == known[1]:
                    if index:
                        group.insert(0, group.pop(index))
                    break
        head = group[0]
        self._first[flow] = (head[_IFACE], head[_IFDIR], self._eviction)
        names = [r[_IFACE] for r in group]
        directions = [r[_IFDIR] for r in group]
        for row in group:
            row[_IFACES] = names
            row[_IFDIRS] = directions


def _seen_first(row: list[Any]) -> tuple[Any, ...]:
    return row[_START], row[_END], row[_IFACE], row[_IFDIR]


def merge_overflow(
    pending: dict[bytes, list[int]], records: Iterable[bytes]
) -> None:
    """Fold one-packet overflow records (struct flow_overflow) into ``pending``.

    ``pending`` maps key bytes to [packets, bytes, start, end, flags] plus the raw value
    of the first record, so that a flow that overflowed many times is still one row.
    """
    size = FLOW_ID.size
    for rec in records:
        key = bytes(rec[:size])
        value = FLOW_METRICS.unpack_from(rec, size)
        acc = pending.get(key)
        if acc is None:
            pending[key] = list(value)
        else:
            acc[0] += value[0]
            acc[1] += value[1]
            acc[2] = min(acc[2], value[2])
            acc[3] = max(acc[3], value[3])
            acc[4] |= value[4]
