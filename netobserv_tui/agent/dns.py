"""Python mirror of the DNS tracking maps of ebpf/dns.h, and their netobserv fields.

``dns_flows`` holds one ``struct dns_record`` per 5-tuple (packet orientation) with the
latest DNS message seen on it: for a query's 5-tuple the query (id, flags, name), for the
response's 5-tuple the response (id, flags with the rcode, latency, name). The agent drains
it at each eviction with :func:`drain_dns` and joins it to flow records by the first
:data:`JOIN_PREFIX` (39) bytes of the keys: ``struct flow_5tuple`` is the first 39 bytes of
``struct flow_id`` plus a pad byte. See docs/dns.md.
"""

from __future__ import annotations

import ctypes as ct
import socket
import struct
from dataclasses import dataclass
from typing import Any, Final

from ..model.errors import KernelError
from .bpf import drain_pairs

#: ``DNS_NAME_MAX`` of ebpf/dns.h: bytes of the name buffer (the C default).
DNS_NAME_MAX: Final = 64
#: ``struct dns_record``: id, flags, errno, 3 pad bytes, latency_ns, name.
DNS_RECORD_HEAD: Final = struct.Struct("<HHB3xQ")
DNS_RECORD: Final = struct.Struct(f"<HHB3xQ{DNS_NAME_MAX}s")
#: ``struct flow_5tuple``: addresses (IPv4-mapped for IPv4), ports, ethertype, protocol, pad.
FLOW_5TUPLE: Final = struct.Struct("<16s16sHHHBx")
#: Bytes of a dns_flows key that equal the start of a ``struct flow_id`` key.
JOIN_PREFIX: Final = 39

DNS_FLAG_QR: Final = 0x8000

#: DnsErrno values (DNS_ERR_* in ebpf/dns.h).
DNS_ERR_NONE: Final = 0
DNS_ERR_TRUNCATED: Final = 1
DNS_ERR_NAME_TOO_LONG: Final = 2
DNS_ERR_BAD_NAME: Final = 3
DNS_ERR_NO_QUERY: Final = 4
DNS_ERR_QUERY_NOT_STORED: Final = 5
DNS_ERRORS: Final[dict[int, str]] = {
    DNS_ERR_NONE: "ok",
    DNS_ERR_TRUNCATED: "the packet ended inside the question name",
    DNS_ERR_NAME_TOO_LONG: f"the name is longer than {DNS_NAME_MAX} bytes (kept its start)",
    DNS_ERR_BAD_NAME: "a label length over 63 in the question (compression pointer or garbage)",
    DNS_ERR_NO_QUERY: "response whose query was not seen: latency unknown",
    DNS_ERR_QUERY_NOT_STORED: "the query's timestamp could not be stored",
}

#: Response codes of the 4-bit RCODE header field (IANA DNS parameters, RFC 1035/2136/8490),
#: spelled as netobserv spells them.
RCODE_NAMES: Final[dict[int, str]] = {
    0: "NoError",
    1: "FormErr",
    2: "ServFail",
    3: "NXDomain",
    4: "NotImp",
    5: "Refused",
    6: "YXDomain",
    7: "YXRRSet",
    8: "NXRRSet",
    9: "NotAuth",
    10: "NotZone",
    11: "DSOTYPENI",
    12: "RCode12",
    13: "RCode13",
    14: "RCode14",
    15: "RCode15",
}

_V4_MAPPED: Final = b"\x00" * 10 + b"\xff\xff"
_ETH_P_IP: Final = 0x0800
_ETH_P_IPV6: Final = 0x86DD


@dataclass(frozen=True)
class DnsRecord:
    """One ``struct dns_record``, decoded."""

    id: int
    flags: int
    dns_errno: int
    latency_ns: int
    name: str

    @property
    def is_response(self) -> bool:
        return bool(self.flags & DNS_FLAG_QR)

    @property
    def rcode(self) -> int:
        return self.flags & 0xF

    @property
    def rcode_name(self) -> str:
        return RCODE_NAMES[self.rcode]

    @property
    def latency_ms(self) -> int:
        return latency_ms(self.latency_ns)


def latency_ms(latency_ns: int) -> int:
    """Whole milliseconds, rounded *up*: 0 only when no latency was measured.

    Truncating would show every sub-millisecond lookup (most lookups on a node) as 0, the
    value that means "not measured". Rounding up keeps them apart and never reports less than
    the kernel measured.
    """
    return -(-latency_ns // 1_000_000) if latency_ns > 0 else 0


def parse_dns_record(raw: bytes | memoryview) -> DnsRecord:
    """Decode a dns_flows value; the name buffer may have any length (DNS_NAME_MAX)."""
    ident, flags, err, latency = DNS_RECORD_HEAD.unpack_from(raw)
    name = bytes(raw[DNS_RECORD_HEAD.size :]).split(b"\0", 1)[0]
    return DnsRecord(ident, flags, err, latency, name.decode("ascii", "backslashreplace"))


def dns_fields(raw: bytes | memoryview) -> dict[str, Any]:
    """The netobserv DNS fields of one dns_flows value."""
    rec = parse_dns_record(raw)
    return {
        "DnsId": rec.id,
        "DnsFlags": rec.flags,
        "DnsFlagsResponseCode": rec.rcode_name,
        "DnsLatencyMs": rec.latency_ms,
        "DnsErrno": rec.dns_errno,
        "DnsName": rec.name,
    }


def flow_5tuple(src: str, dst: str, src_port: int, dst_port: int, proto: int) -> bytes:
    """The 40-byte dns_flows key of a packet from ``src:src_port`` to ``dst:dst_port``."""
    if ":" in src:
        etype = _ETH_P_IPV6
        src_raw = socket.inet_pton(socket.AF_INET6, src)
        dst_raw = socket.inet_pton(socket.AF_INET6, dst)
    else:
        etype = _ETH_P_IP
        src_raw = _V4_MAPPED + socket.inet_pton(socket.AF_INET, src)
        dst_raw = _V4_MAPPED + socket.inet_pton(socket.AF_INET, dst)
    return FLOW_5TUPLE.pack(src_raw, dst_raw, src_port, dst_port, etype, proto)


def drain_raw_dns(bpf: Any) -> list[tuple[bytes, bytes]]:
    """Look up and delete every dns_flows entry: (40-byte 5-tuple key, raw record) pairs."""
    table = bpf[b"dns_flows"]
    key_size, value_size = ct.sizeof(table.Key), ct.sizeof(table.Leaf)
    if key_size != FLOW_5TUPLE.size or value_size < DNS_RECORD_HEAD.size:
        raise KernelError(
            f"dns_flows has {key_size}-byte keys and {value_size}-byte values, which "
            "netobserv_tui/agent/dns.py does not understand: ebpf/dns.h and its Python mirror "
            "are out of step; reinstall"
        )
    return drain_pairs(table.map_fd, key_size, value_size, int(table.max_entries))


def drain_dns(bpf: Any) -> dict[bytes, dict[str, Any]]:
    """Empty dns_flows: {40-byte flow_5tuple key: netobserv DNS fields}.

    Join to flow records with ``flow_id_key[:JOIN_PREFIX] == key[:JOIN_PREFIX]``.
    """
    return {key: dns_fields(value) for key, value in drain_raw_dns(bpf)}


def dns_counters(bpf: Any) -> dict[str, int]:
    """Totals of the dns_counters per-CPU array: records lost because dns_flows was full."""
    table = bpf[b"dns_counters"]
    return {"dns_flows_full": int(sum(table[ct.c_int(0)]))}
