"""The packet capture's per-packet loops: in C when they were built, else in Python.

Two loops set the packet capture's loss-free rate (tests/bench/bench_packets.py), so they
have a C version, ``_speedups.c``, compiled by the install (hatch_build.py):

:func:`ring_walk`
    the agent's walk over the record headers of its ring (``_MmapReader.take`` in
    :mod:`netobserv_tui.agent.packets`);
:func:`epb_blocks`
    the aggregator's PACKETS batch -> pcapng Enhanced Packet Blocks (``PacketSink.write``
    in :mod:`netobserv_tui.aggregator.packets`).

``native`` is the compiled module, or None where it could not be built or with
``NETOBSERV_NO_SPEEDUPS=1``; the Python twins below then run, with the same results at
about ten times the CPU per packet. tests/unit/test_speedups.py holds the two to the same
output, byte for byte.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from types import ModuleType
from typing import Final

from .packets import MAX_SNAPLEN, RECORD_HEAD, RING_BUSY, RING_DISCARD, RING_HEAD_SIZE, ZERO3

Buffer = bytes | bytearray | memoryview
#: ``options_of(ifindex, direction, addresses) -> (interface id, EPB options)``.
OptionsOf = Callable[[int, int, bytes], tuple[int, bytes]]

_EPB_HEAD: Final = struct.Struct("<7I")
_U32: Final = struct.Struct("<I")
_PAD: Final = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")
_EPB_TYPE: Final = 6
_VLAN_TYPES: Final = (0x8100, 0x88A8)


def _load() -> ModuleType | None:
    if os.environ.get("NETOBSERV_NO_SPEEDUPS", "") not in ("", "0"):
        return None
    try:
        from . import _speedups
    except ImportError:
        return None
    return _speedups


native: ModuleType | None = _load()


def describe() -> str:
    """What runs the per-packet loops, for the logs."""
    return "C speedups" if native is not None else "Python loops (C speedups not built)"


def ring_walk_py(data: Buffer, cons: int, prod: int, mask: int, chunk_bytes: int,
                 left: int) -> tuple[list[tuple[int, int]], set[int]]:
    """Where the committed records of a BPF ring end, in chunks, and their interfaces.

    ``data`` is the ring's data area mapped twice in a row (``2 * (mask + 1)`` bytes);
    ``cons``/``prod`` the consumer and producer positions; at most ``left`` records (-1:
    no limit). Stops at ``prod`` or at the first record the kernel has not committed (busy
    bit). Returns ``([(end position, records), ...], ifindexes)``: one cut per chunk of
    about ``chunk_bytes``, and the interfaces of the records not discarded.
    """
    words = memoryview(data).cast("I")
    cuts: list[tuple[int, int]] = []
    ifindexes: set[int] = set()
    add = ifindexes.add
    begin = cons
    count = 0
    while cons < prod and left:
        word = (cons & mask) >> 2
        length = words[word]
        if length & RING_BUSY:
            break
        if not length & RING_DISCARD:
            add(words[word + 4])
        cons += RING_HEAD_SIZE + ((length & 0x3FFFFFFF) + 7 & ~7)
        count += 1
        left -= 1
        if cons - begin >= chunk_bytes:
            cuts.append((cons, count))
            begin, count = cons, 0
    if count:
        cuts.append((cons, count))
    return cuts, ifindexes


def address_bytes(body: Buffer, start: int, end: int) -> bytes:
    """The IP source and destination addresses, back to back, of the Ethernet frame
    ``body[start:end]`` (one VLAN tag skipped): 8 bytes (IPv4), 32 (IPv6) or none."""
    if end - start < 14:
        return b""
    ethertype = int.from_bytes(body[start + 12:start + 14])
    off = start + 14
    if ethertype in _VLAN_TYPES and end - start >= 18:
        ethertype = int.from_bytes(body[start + 16:start + 18])
        off = start + 18
    if ethertype == 0x0800 and end >= off + 20:
        return bytes(body[off + 12:off + 20])
    if ethertype == 0x86DD and end >= off + 40:
        return bytes(body[off + 8:off + 40])
    return b""


def epb_blocks_py(body: Buffer, start: int, count: int, clock: int, names: dict[int, str],
                  addresses: bool, options_of: OptionsOf, out: bytearray
                  ) -> tuple[int, int, int] | None:
    """The ``count`` ring records of a PACKETS payload, from ``body[start:]``, as pcapng
    Enhanced Packet Blocks back to back in ``out[:length]``: ``(length, packets, bytes on
    the wire)``. ``out`` grows when it is too small and never shrinks (the caller keeps it
    from batch to batch: its memory is then not faulted in again for each batch).

    ``clock`` is added to every timestamp. ``options_of(ifindex, direction, addresses)``
    gives a block's interface id and options; it is asked once per distinct key of the
    batch, ``addresses`` being the frame's IP addresses (:func:`address_bytes`) when
    ``addresses`` is true and empty bytes otherwise. None when a record does not parse,
    uses an interface ``names`` lacks, or bytes follow the last record:
    :func:`~netobserv_tui.model.packets.records` names the fault.
    """
    shared: dict[tuple[int, int, bytes], tuple[int, bytes]] = {}
    #: (ifindex, direction, captured length, addresses) -> (interface id, total length,
    #: what follows the frame).
    tails: dict[tuple[int, int, int, bytes], tuple[int, int, bytes]] = {}
    parts: list[bytes | Buffer] = []
    append = parts.append
    head = _EPB_HEAD.pack
    unpack = RECORD_HEAD.unpack_from
    size = len(body)
    off = start
    packets = wire = 0
    for _ in range(count):
        if off + 32 <= size:
            length, _, ts, ifindex, orig_len, caplen, direction, zero = unpack(body, off)
        elif off + 8 <= size:  # only a discarded record may be this short
            length = _U32.unpack_from(body, off)[0]
            if length & RING_BUSY or not length & RING_DISCARD:
                return None
        else:
            return None
        if length & (RING_BUSY | RING_DISCARD):
            if length & RING_BUSY:
                return None
            off += RING_HEAD_SIZE + ((length & ~RING_DISCARD) + 7 & ~7)
            continue
        frame = off + 32
        off += RING_HEAD_SIZE + (length + 7 & ~7)
        if (length != 24 + caplen or caplen > orig_len or off > size or direction > 1
                or zero != ZERO3 or caplen > MAX_SNAPLEN):
            return None
        end = frame + caplen
        key = (ifindex, direction, caplen, address_bytes(body, frame, end) if addresses else b"")
        found = tails.get(key)
        if found is None:
            if ifindex not in names:
                return None
            ends = (ifindex, direction, key[3])
            iface_options = shared.get(ends)
            if iface_options is None:
                iface_options = shared[ends] = options_of(*ends)
            iface, options = iface_options
            pad = _PAD[caplen & 3]
            total = 32 + caplen + len(pad) + len(options)
            found = tails[key] = (iface, total, pad + options + _U32.pack(total))
        iface, total, tail = found
        ts = ts + clock & 0xFFFFFFFFFFFFFFFF
        append(head(_EPB_TYPE, total, iface, ts >> 32, ts & 0xFFFFFFFF, caplen, orig_len))
        append(body[frame:end])
        append(tail)
        packets += 1
        wire += orig_len
    if off != size:
        return None
    blocks = b"".join(parts)
    out[:len(blocks)] = blocks
    return len(blocks), packets, wire


if native is not None:
    ring_walk: Callable[[Buffer, int, int, int, int, int],
                        tuple[list[tuple[int, int]], set[int]]] = native.ring_walk
    epb_blocks: Callable[[Buffer, int, int, int, dict[int, str], bool, OptionsOf, bytearray],
                         tuple[int, int, int] | None] = native.epb_blocks
else:
    ring_walk = ring_walk_py
    epb_blocks = epb_blocks_py
