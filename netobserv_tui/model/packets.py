"""Captured packets on the wire: the binary payload of a PACKETS frame, shared by both ends.

An agent in packet mode sends the packets its TC program copied as PACKETS frames on its
authenticated session, next to its FLOWS frames and in the same sequence space (one ACK
or NACK per batch). The payload is raw bytes, not JSON, and its records are exactly what
the kernel wrote into its ring buffer (``struct packet_meta`` of ebpf/packets.h, then the
frame): the agent forwards them without looking at each one, and the aggregator turns each
into a pcapng block in one pass. All integers are little-endian::

    offset  size  field
    0       4     seq: the batch's sequence number
    4       4     count: the number of records
    8       8     clock: nanoseconds (signed) to add to a record's timestamp for the time
                  since the Unix epoch, UTC (the agent's REALTIME - kernel clock offset)
    16      2     k: the number of interface names that follow
    then k names, each:
    0       4     ifindex on the agent's node
    4       1     length m of the name (1 to 15 bytes of UTF-8)
    5       m     the name
    then ``count`` records, each:
    0       8     timestamp, nanoseconds of the kernel's clock
    8       4     ifindex (one of the names above)
    12      4     original length of the frame on the wire
    16      4     captured length n (at most the original length and MAX_SNAPLEN)
    20      1     direction: 0 ingress, 1 egress
    21      3     zero
    24      n     the frame's first n bytes, from its Ethernet header on

A payload that does not parse exactly (a count that does not match, a record past the end,
bytes left over, a captured length above the original, an unknown direction, an interface
with no name, a name that is not UTF-8) raises :class:`PacketsError`; the aggregator NACKs
the batch and writes none of it.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

#: Largest frame the kernel program copies (the IPv4 total length limit; also pcapng's
#: usual snapshot length).
MAX_SNAPLEN: Final = 65535
#: Longest interface name Linux allows (IFNAMSIZ - 1).
MAX_IFNAME: Final = 15

BATCH_HEAD: Final = struct.Struct("<IIqH")
NAME_HEAD: Final = struct.Struct("<IB")
#: A record's header: struct packet_meta as the kernel writes it on a little-endian host.
RECORD_HEAD: Final = struct.Struct("<QIIIB3s")

#: The kernel writes records in the host's byte order; this format is little-endian.
LITTLE_ENDIAN_HOST: Final = sys.byteorder == "little"

INGRESS: Final = 0
EGRESS: Final = 1
_ZERO3: Final = b"\0\0\0"

assert RECORD_HEAD.size == 24


class PacketsError(ValueError):
    """A PACKETS payload that does not parse; the reason says where."""


class Packet(NamedTuple):
    """One captured frame, as an agent saw it (``ts_ns`` since the Unix epoch)."""

    ts_ns: int
    ifindex: int
    ifname: str
    direction: int
    orig_len: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Captured:
    """Packets as the agent's ring holds them: kernel records, their clock and names.

    ``records`` are whole ring records (a :data:`RECORD_HEAD` and the frame), ``clock_ns``
    turns their timestamps into time since the Unix epoch, ``names`` names every ifindex
    they use.
    """

    records: Sequence[bytes]
    clock_ns: int
    names: Mapping[int, str]

    @classmethod
    def of(cls, packets: Iterable[Packet]) -> Captured:
        """The records of ``packets`` (clock 0: their timestamps are wall-clock already)."""
        names: dict[int, str] = {}
        records = []
        for p in packets:
            names.setdefault(p.ifindex, p.ifname)
            records.append(RECORD_HEAD.pack(p.ts_ns, p.ifindex, p.orig_len, len(p.data),
                                            p.direction, _ZERO3) + p.data)
        return cls(records, 0, names)


def pack_records(seq: int, captured: Captured, start: int = 0, end: int | None = None) -> bytes:
    """The PACKETS payload of ``captured.records[start:end]`` as batch ``seq``."""
    records = captured.records[start:end]
    names = [b""]
    for ifindex, name in captured.names.items():
        raw = name.encode()
        names.append(NAME_HEAD.pack(ifindex, len(raw)) + raw)
    names[0] = BATCH_HEAD.pack(seq, len(records), captured.clock_ns, len(names) - 1)
    return b"".join(names) + b"".join(records)


def pack_packets(seq: int, packets: Iterable[Packet]) -> bytes:
    """The PACKETS payload of ``packets`` as batch ``seq``."""
    return pack_records(seq, Captured.of(packets))


def packets_seq(body: bytes) -> int | None:
    """The sequence number of a payload, if it has one (to NACK a bad batch by number)."""
    return int.from_bytes(body[:4], "little") if len(body) >= 4 else None


@dataclass(frozen=True, slots=True)
class PacketBatch:
    """A PACKETS payload whose header and names were read; its records are checked as
    :func:`records` walks them."""

    seq: int
    count: int
    clock_ns: int
    names: dict[int, str]
    body: bytes
    #: Offset of the first record in ``body``.
    start: int


def read_batch(body: bytes) -> PacketBatch:
    """The header and interface names of a PACKETS payload; :class:`PacketsError` if they
    are malformed (the records are checked by :func:`records`)."""
    if len(body) < BATCH_HEAD.size:
        raise PacketsError(f"the payload has {len(body)} bytes, less than its "
                           f"{BATCH_HEAD.size}-byte header")
    seq, count, clock_ns, nnames = BATCH_HEAD.unpack_from(body)
    off = BATCH_HEAD.size
    names: dict[int, str] = {}
    for index in range(nnames):
        if off + NAME_HEAD.size > len(body):
            raise PacketsError(f"interface name {index} of {nnames} starts past the end of "
                               "the payload")
        ifindex, length = NAME_HEAD.unpack_from(body, off)
        off += NAME_HEAD.size
        if not 0 < length <= MAX_IFNAME:
            raise PacketsError(f"interface {ifindex}: a name of {length} bytes")
        if off + length > len(body):
            raise PacketsError(f"interface name {index} of {nnames} ends past the end of the "
                               "payload")
        try:
            name = body[off:off + length].decode()
        except UnicodeDecodeError:
            raise PacketsError(f"interface {ifindex}: the name is not UTF-8") from None
        if ifindex in names:
            raise PacketsError(f"interface {ifindex} is named twice")
        names[ifindex] = name
        off += length
    return PacketBatch(seq, count, clock_ns, names, body, off)


def records(batch: PacketBatch) -> Iterator[tuple[int, int, int, int, int, int]]:
    """``(ts_ns, ifindex, direction, orig_len, start, end)`` of each record, in order:
    ``ts_ns`` since the Unix epoch, the frame is ``batch.body[start:end]``. Raises
    :class:`PacketsError` at the first record that does not parse, and after the last one
    when bytes are left over."""
    body, count, clock, names = batch.body, batch.count, batch.clock_ns, batch.names
    size = len(body)
    off = batch.start
    unpack = RECORD_HEAD.unpack_from
    for index in range(count):
        if off + 24 > size:
            raise PacketsError(f"record {index} of {count} starts past the end of the payload")
        ts, ifindex, orig_len, caplen, direction, zero = unpack(body, off)
        start = off + 24
        off = start + caplen
        if caplen > orig_len or caplen > MAX_SNAPLEN:
            raise PacketsError(f"record {index}: {caplen} bytes captured of a "
                               f"{orig_len}-byte frame (at most {MAX_SNAPLEN})")
        if off > size:
            raise PacketsError(f"record {index} of {count} ends past the end of the payload")
        if direction > EGRESS:
            raise PacketsError(f"record {index}: direction {direction} is neither 0 nor 1")
        if zero != _ZERO3:
            raise PacketsError(f"record {index}: the reserved bytes are not zero")
        if ifindex not in names:
            raise PacketsError(f"record {index}: interface {ifindex} has no name in the batch")
        yield ts + clock, ifindex, direction, orig_len, start, off
    if off != size:
        raise PacketsError(f"{size - off} bytes follow the last of {count} records")


def unpack_packets(body: bytes) -> tuple[int, list[Packet]]:
    """``(seq, packets)`` of a PACKETS payload; :class:`PacketsError` if it is malformed."""
    batch = read_batch(body)
    names = batch.names
    return batch.seq, [Packet(ts, ifindex, names[ifindex], direction, orig_len, body[a:b])
                       for ts, ifindex, direction, orig_len, a, b in records(batch)]

