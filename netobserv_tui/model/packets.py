"""Captured packets on the wire: the binary payload of a PACKETS frame, shared by both ends.

An agent in packet mode sends the packets its TC program copied as PACKETS frames on its
authenticated session, next to its FLOWS frames and in the same sequence space (one ACK
or NACK per batch). The payload is raw bytes, not JSON, and its records are a stretch of
the kernel's BPF ring buffer as it lies in memory (each record's 8-byte ring header,
``struct packet_meta`` of ebpf/packets.h, the frame, padding to a multiple of 8): the agent
copies what the kernel wrote in one piece, without looking at the packets, and the
aggregator turns each record into a pcapng block in one pass. All integers are
little-endian::

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
    0       4     length L of the record after these 8 bytes (24 + n); bit 30 set: a
                  record the kernel discarded, skipped (bit 31, "busy", is never set)
    4       4     ignored (the kernel's page offset)
    8       8     timestamp, nanoseconds of the kernel's clock
    16      4     ifindex (one of the names above)
    20      4     original length of the frame on the wire
    24      4     captured length n (at most the original length and MAX_SNAPLEN)
    28      1     direction: 0 ingress, 1 egress
    29      3     zero
    32      n     the frame's first n bytes, from its Ethernet header on
    32+n    p     0 to 7 bytes, ignored, so that the record's size 8 + L + p is a multiple
                  of 8

A payload that does not parse exactly (a count that does not match, a record past the end,
bytes left over, a length that disagrees with the captured length, a busy record, a
captured length above the original, an unknown direction, an interface with no name, a
name that is not UTF-8) raises :class:`PacketsError`; the aggregator NACKs the batch and
writes none of it.
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
#: A record's header: the ring's 8-byte header (length and flags, page offset), then struct
#: packet_meta as the kernel writes it on a little-endian host.
RECORD_HEAD: Final = struct.Struct("<IIQIIIB3s")
#: The ring header's flags (include/uapi/linux/bpf.h BPF_RINGBUF_BUSY_BIT, _DISCARD_BIT).
RING_BUSY: Final = 1 << 31
RING_DISCARD: Final = 1 << 30
#: Bytes of struct packet_meta, and of the ring's header before it.
META_SIZE: Final = 24
RING_HEAD_SIZE: Final = 8

#: The kernel writes records in the host's byte order; this format is little-endian.
LITTLE_ENDIAN_HOST: Final = sys.byteorder == "little"

INGRESS: Final = 0
EGRESS: Final = 1
ZERO3: Final = b"\0\0\0"

assert RECORD_HEAD.size == RING_HEAD_SIZE + META_SIZE == 32


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


def ring_record(ts_ns: int, ifindex: int, orig_len: int, direction: int,
                data: bytes) -> bytes:
    """One record as the kernel's ring holds it (zero padding)."""
    length = META_SIZE + len(data)
    return (RECORD_HEAD.pack(length, 0, ts_ns, ifindex, orig_len, len(data), direction,
                             ZERO3) + data + bytes(-length % 8))


@dataclass(frozen=True, slots=True)
class Captured:
    """Packets as the agent's ring holds them: kernel records, their clock and names.

    ``chunks`` are stretches of ring records, each with the number of records in it (one
    PACKETS batch each); ``clock_ns`` turns their timestamps into time since the Unix
    epoch; ``names`` names every ifindex they use.
    """

    chunks: Sequence[tuple[bytes, int]]
    clock_ns: int
    names: Mapping[int, str]

    @property
    def count(self) -> int:
        """How many records the chunks hold."""
        return sum(count for _, count in self.chunks)

    @classmethod
    def of(cls, packets: Iterable[Packet], chunk_bytes: int | None = None) -> Captured:
        """The records of ``packets``, in chunks of about ``chunk_bytes`` (one chunk if
        None) as a ring reader cuts them; clock 0: their timestamps are wall-clock
        already."""
        names: dict[int, str] = {}
        chunks: list[tuple[bytes, int]] = []
        records: list[bytes] = []
        size = 0
        for p in packets:
            names.setdefault(p.ifindex, p.ifname)
            records.append(ring_record(p.ts_ns, p.ifindex, p.orig_len, p.direction, p.data))
            size += len(records[-1])
            if chunk_bytes is not None and size >= chunk_bytes:
                chunks.append((b"".join(records), len(records)))
                records, size = [], 0
        if records or not chunks:
            chunks.append((b"".join(records), len(records)))
        return cls(chunks, 0, names)


def pack_chunk(seq: int, captured: Captured, index: int = 0) -> bytes:
    """The PACKETS payload of chunk ``index`` of ``captured`` as batch ``seq``."""
    data, count = captured.chunks[index]
    parts = [BATCH_HEAD.pack(seq, count, captured.clock_ns, len(captured.names))]
    for ifindex, name in captured.names.items():
        raw = name.encode()
        parts.append(NAME_HEAD.pack(ifindex, len(raw)) + raw)
    parts.append(data)
    return b"".join(parts)


def pack_packets(seq: int, packets: Iterable[Packet]) -> bytes:
    """The PACKETS payload of ``packets`` as batch ``seq``."""
    return pack_chunk(seq, Captured.of(packets))


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
    ``ts_ns`` since the Unix epoch, the frame is ``batch.body[start:end]``; records the
    kernel discarded are skipped. Raises :class:`PacketsError` at the first record that
    does not parse, and after the last one when bytes are left over."""
    body, count, clock, names = batch.body, batch.count, batch.clock_ns, batch.names
    size = len(body)
    off = batch.start
    unpack = RECORD_HEAD.unpack_from
    for index in range(count):
        if off + 8 > size:
            raise PacketsError(f"record {index} of {count} starts past the end of the payload")
        length = int.from_bytes(body[off:off + 4], "little")
        if length & RING_BUSY:
            raise PacketsError(f"record {index}: the kernel had not finished writing it")
        if length & RING_DISCARD:
            off += RING_HEAD_SIZE + ((length & ~RING_DISCARD) + 7 & ~7)
            continue
        if off + 32 > size:
            raise PacketsError(f"record {index} of {count} starts past the end of the payload")
        _, _, ts, ifindex, orig_len, caplen, direction, zero = unpack(body, off)
        start = off + 32
        end = start + caplen
        off += RING_HEAD_SIZE + (length + 7 & ~7)
        if length != META_SIZE + caplen:
            raise PacketsError(f"record {index}: {length} bytes long, but {caplen} bytes "
                               "captured")
        if caplen > orig_len or caplen > MAX_SNAPLEN:
            raise PacketsError(f"record {index}: {caplen} bytes captured of a "
                               f"{orig_len}-byte frame (at most {MAX_SNAPLEN})")
        if off > size:
            raise PacketsError(f"record {index} of {count} ends past the end of the payload")
        if direction > EGRESS:
            raise PacketsError(f"record {index}: direction {direction} is neither 0 nor 1")
        if zero != ZERO3:
            raise PacketsError(f"record {index}: the reserved bytes are not zero")
        if ifindex not in names:
            raise PacketsError(f"record {index}: interface {ifindex} has no name in the batch")
        yield ts + clock, ifindex, direction, orig_len, start, end
    if off != size:
        raise PacketsError(f"{size - off} bytes follow the last of {count} records")


def unpack_packets(body: bytes) -> tuple[int, list[Packet]]:
    """``(seq, packets)`` of a PACKETS payload; :class:`PacketsError` if it is malformed."""
    batch = read_batch(body)
    names = batch.names
    return batch.seq, [Packet(ts, ifindex, names[ifindex], direction, orig_len, body[a:b])
                       for ts, ifindex, direction, orig_len, a, b in records(batch)]

