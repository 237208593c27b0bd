"""Captured packets on the wire: the binary payload of a PACKETS frame, shared by both ends.

An agent in packet mode sends the packets its TC program copied as PACKETS frames on its
authenticated session, next to its FLOWS frames and in the same sequence space (one ACK
or NACK per batch). The payload is raw bytes, not JSON, so a packet costs its size plus 24
bytes of header and its interface name::

    offset  size  field (integers big-endian)
    0       4     seq: the batch's sequence number
    4       4     count: the number of records that follow
    then ``count`` records, each:
    0       8     timestamp, nanoseconds since the Unix epoch (UTC)
    8       4     ifindex on the agent's node
    12      4     original length of the frame on the wire
    16      4     captured length n (at most the original length and MAX_SNAPLEN)
    20      1     direction: 0 ingress, 1 egress
    21      1     length m of the interface name (1 to 15 bytes of UTF-8)
    22      2     reserved, zero
    24      m     interface name
    24+m    n     the frame's first n bytes, from its Ethernet header on

A payload that does not parse exactly (a count that does not match, a record past the end,
bytes left over, a captured length above the original, an unknown direction, a name that
is not UTF-8) raises :class:`PacketsError`; the aggregator NACKs the batch and writes none
of it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Final, NamedTuple

#: Largest frame the kernel program copies (the IPv4 total length limit; also pcapng's
#: usual snapshot length).
MAX_SNAPLEN: Final = 65535
#: Longest interface name Linux allows (IFNAMSIZ - 1).
MAX_IFNAME: Final = 15

BATCH_HEAD: Final = struct.Struct("!II")
RECORD_HEAD: Final = struct.Struct("!QIIIBBH")

INGRESS: Final = 0
EGRESS: Final = 1


class PacketsError(ValueError):
    """A PACKETS payload that does not parse; the reason says where."""


class Packet(NamedTuple):
    """One captured frame, as an agent saw it."""

    ts_ns: int
    ifindex: int
    ifname: str
    direction: int
    orig_len: int
    data: bytes


def pack_packets(seq: int, packets: Iterable[Packet]) -> bytes:
    """The PACKETS payload of ``packets`` as batch ``seq``."""
    parts = [b""]
    count = 0
    head = RECORD_HEAD.pack
    for p in packets:
        name = p.ifname.encode()
        parts.append(head(p.ts_ns, p.ifindex, p.orig_len, len(p.data), p.direction, len(name), 0))
        parts.append(name)
        parts.append(p.data)
        count += 1
    parts[0] = BATCH_HEAD.pack(seq, count)
    return b"".join(parts)


def packets_seq(body: bytes) -> int | None:
    """The sequence number of a payload, if it has one (to NACK a bad batch by number)."""
    return BATCH_HEAD.unpack_from(body)[0] if len(body) >= BATCH_HEAD.size else None


def unpack_packets(body: bytes) -> tuple[int, list[Packet]]:
    """``(seq, packets)`` of a PACKETS payload; :class:`PacketsError` if it is malformed."""
    if len(body) < BATCH_HEAD.size:
        raise PacketsError(f"the payload has {len(body)} bytes, less than its 8-byte header")
    seq, count = BATCH_HEAD.unpack_from(body)
    return seq, list(_records(body, count))


def _records(body: bytes, count: int) -> Iterator[Packet]:
    view = memoryview(body)
    end = len(body)
    off = BATCH_HEAD.size
    size = RECORD_HEAD.size
    unpack = RECORD_HEAD.unpack_from
    for index in range(count):
        if off + size > end:
            raise PacketsError(f"record {index} of {count} starts past the end of the payload")
        ts, ifindex, orig_len, caplen, direction, name_len, reserved = unpack(body, off)
        if direction not in (INGRESS, EGRESS):
            raise PacketsError(f"record {index}: direction {direction} is neither 0 nor 1")
        if not 0 < name_len <= MAX_IFNAME:
            raise PacketsError(f"record {index}: an interface name of {name_len} bytes")
        if reserved:
            raise PacketsError(f"record {index}: the reserved field is not zero")
        if caplen > orig_len or caplen > MAX_SNAPLEN:
            raise PacketsError(f"record {index}: {caplen} bytes captured of a "
                               f"{orig_len}-byte frame (at most {MAX_SNAPLEN})")
        start = off + size
        data_at = start + name_len
        off = data_at + caplen
        if off > end:
            raise PacketsError(f"record {index} of {count} ends past the end of the payload")
        try:
            name = str(view[start:data_at], "utf-8")
        except UnicodeDecodeError:
            raise PacketsError(f"record {index}: the interface name is not UTF-8") from None
        yield Packet(ts, ifindex, name, direction, orig_len, bytes(view[data_at:off]))
    if off != end:
        raise PacketsError(f"{end - off} bytes follow the last of {count} records")
