"""Captured packets from the kernel: the ``packets`` ring buffer of ebpf/packets.h.

With packet capture on (``FlowProgram(packets=True)``) the TC classifiers copy every packet
they count into the ``packets`` BPF ring buffer, as a 24-byte ``struct packet_meta``
followed by the frame's first ``caplen`` bytes (``PACKET_META`` below mirrors it). A
:class:`PacketRing` hands them on.

Reading the ring where it lies
    On x86-64 the ring's pages are mapped into this process (:class:`_MmapReader`) and a
    take copies the records the kernel has committed as they lie, ring headers and padding
    included, in one piece per chunk (about ``chunk_bytes``): per packet, user space only
    reads its 4-byte header (to find the next one) and its ifindex (to name the
    interfaces), in C where it was built (:func:`~netobserv_tui.model.speedups.ring_walk`).
    Those chunks are the PACKETS payload (:mod:`netobserv_tui.model.packets`), so the agent
    never parses or copies a packet on its own; their room in the ring is free again as
    soon as the take returns. Elsewhere libbpf's ring manager reads the ring, one
    callback per record (:class:`_LibbpfReader`), and the same layout is rebuilt.
    ``test_user_space_rate`` in tests/kernel/test_packet_program.py prints the rates.

    The ring has its own reader: taking packets never runs the overflow ring's callback and
    taking overflow records never reads the packets ring, so neither path can stall or lose
    the other's records.

Memory bound
    Nothing is kept between takes: what the agent has not taken stays in the kernel ring,
    and what does not fit there is counted by the kernel (``COUNTER_PACKETS_LOST``), so
    :meth:`lost` accounts for every packet that was counted but never reached user space.
    A take holds at most the ring's size; the exporter bounds what waits to be sent.

Timestamps
    With the TAI clock (``bpf_ktime_get_tai_ns``, Linux 6.1, probed once by
    :func:`tai_clock_available`) a record's time becomes wall-clock time by adding
    (REALTIME - TAI), a whole number of seconds (the leap seconds the kernel knows of, often
    0) that both clocks keep through steps of the system clock: a packet converts to what
    the wall clock read when it was captured. Without it the kernel stamps CLOCK_MONOTONIC
    and the offset (REALTIME - MONOTONIC) is read at every :meth:`take`; a step of the
    system clock between capture and take then shifts the packets of that batch.
"""

from __future__ import annotations

import ctypes as ct
import functools
import gc
import mmap
import os
import platform
import select
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from ..model.packets import (
    LITTLE_ENDIAN_HOST,
    Captured,
    Packet,
    pack_chunk,
    unpack_packets,
)
from ..model.speedups import ring_walk

#: struct packet_meta of ebpf/packets.h: ts_ns, ifindex, len, caplen, direction.
PACKET_META: Final = struct.Struct("<QIIIB3x")
#: Ring buffer size in pages (8 MiB with 4 KiB pages); a power of two.
DEFAULT_RING_PAGES: Final = 2048
#: Bytes of records per chunk; the exporter sends each chunk as one PACKETS batch.
DEFAULT_CHUNK_BYTES: Final = 4 << 20
#: Largest snapshot length: the kernel's scratch slot holds 64 KiB.
MAX_KERNEL_SNAPLEN: Final = 65535

assert PACKET_META.size == 24


def _le_u32(raw: bytes) -> int:
    return int.from_bytes(raw, "little")

#: The ring callback's C type with the record as ``char *``: slicing such a pointer makes
#: bytes in C, about twice as fast as ctypes.string_at() on a void * (a foreign call).
_RECORD_CB = ct.CFUNCTYPE(ct.c_int, ct.c_void_p, ct.POINTER(ct.c_char), ct.c_int)

# -- probes ------------------------------------------------------------------------------

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351,
            "armv7l": 386}
_BPF_PROG_LOAD = 5
_BPF_PROG_TYPE_SCHED_CLS = 3
_BPF_FUNC_KTIME_GET_TAI_NS = 208


def _insn(code: int, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, 0, 0, imm)


@functools.cache
def tai_clock_available() -> bool:
    """Whether a TC classifier may call bpf_ktime_get_tai_ns() on this kernel (6.1+).

    Loads a three-instruction SCHED_CLS program (call the helper; r0 = 0; exit) with the
    bpf() syscall; needs the same privileges as loading the flow program. False where the
    syscall number of this architecture is unknown here: the monotonic clock then serves.
    """
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        return False
    insns = _insn(0x85, _BPF_FUNC_KTIME_GET_TAI_NS) + _insn(0xB7) + _insn(0x95)
    code = ct.create_string_buffer(insns, len(insns))
    license_ = ct.create_string_buffer(b"GPL")
    attr = ct.create_string_buffer(128)
    struct.pack_into("<IIQQ", attr, 0, _BPF_PROG_TYPE_SCHED_CLS, len(insns) // 8,
                     ct.addressof(code), ct.addressof(license_))
    libc = ct.CDLL(None, use_errno=True)
    fd = libc.syscall(ct.c_long(number), ct.c_int(_BPF_PROG_LOAD), attr, ct.c_uint(len(attr)))
    if fd < 0:
        return False
    os.close(fd)
    return True


def possible_cpus(path: Path = Path("/sys/devices/system/cpu/possible")) -> int:
    """How many CPU numbers bpf_get_smp_processor_id() can return: the highest possible
    CPU + 1 (``0-3`` -> 4, ``0,2-5`` -> 6)."""
    try:
        text = path.read_text().strip()
        return max(int(part.split("-")[-1]) for part in text.split(",") if part) + 1
    except (OSError, ValueError):
        return os.cpu_count() or 1


def realtime_offset_ns(tai: bool) -> int:
    """What to add to a kernel timestamp to get nanoseconds since the Unix epoch."""
    if tai:
        # REALTIME - TAI is a whole number of seconds: round away the time between reads.
        diff = time.time_ns() - time.clock_gettime_ns(time.CLOCK_TAI)
        return round(diff / 1e9) * 1_000_000_000
    before = time.time_ns()
    mono = time.monotonic_ns()
    after = time.time_ns()
    return (before + after) // 2 - mono


# -- the ring ----------------------------------------------------------------------------

class _Names(dict[int, str]):
    """ifindex -> name for one batch; asks ``lookup`` once per interface."""

    def __init__(self, lookup: Callable[[int], str] | None) -> None:
        super().__init__()
        self.lookup = lookup

    def __missing__(self, ifindex: int) -> str:
        name = ""
        if self.lookup is not None:
            try:
                name = self.lookup(ifindex) or ""
            except Exception:  # a name source that fails must not lose the packets
                name = ""
        name = self[ifindex] = name or f"if{ifindex}"
        return name


@contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _MmapReader:
    """Reads the ring where the kernel writes it: its pages mapped into this process.

    The kernel's layout (kernel/bpf/ringbuf.c): the consumer position on the first page
    (ours to write), the producer position on the second, then the data area, mapped twice
    in a row so that a record that wraps around is contiguous. A read walks the record
    headers from the consumer position to the producer position and stops at the first
    record the kernel has not committed (busy bit); the headers it walked are then copied
    in one piece per chunk, and the consumer position moves past them, which frees their
    space for the kernel.

    This relies on x86-64's ordering of memory accesses (a load is never reordered with an
    earlier load, nor a store with an earlier load): once a committed header was read, the
    copy after it sees the record's bytes, and the consumer position is written after the
    copy. Other architectures use :class:`_LibbpfReader`.
    """

    def __init__(self, map_fd: int, size: int) -> None:
        page = mmap.PAGESIZE
        if size <= 0 or size & (size - 1) or size % page:
            raise ValueError(f"a ring of {size} bytes: expected a power of two of pages")
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        try:
            self._producer = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED,
                                       mmap.PROT_READ, offset=page)
        except BaseException:
            self._consumer.close()
            raise
        self._mask = size - 1
        self._page = page
        # Native 8-byte and 4-byte loads and stores (one instruction each, aligned).
        self._cons = memoryview(self._consumer).cast("Q")
        self._prod = memoryview(self._producer).cast("Q")
        data = memoryview(self._producer)[page:]
        self._data = data
        self.fd = map_fd

    def take(self, max_packets: int | None, chunk_bytes: int
             ) -> tuple[list[tuple[bytes, int]], set[int]]:
        cons = self._cons[0]
        cuts, ifindexes = ring_walk(self._data, cons, self._prod[0], self._mask, chunk_bytes,
                                    -1 if max_packets is None else max_packets)
        chunks: list[tuple[bytes, int]] = []
        for end, count in cuts:
            chunks.append((self._copy(cons, end), count))
            cons = end
        if chunks:
            self._cons[0] = cons
        return chunks, ifindexes

    def _copy(self, begin: int, end: int) -> bytes:
        at = begin & self._mask
        return self._data[at:at + end - begin].tobytes()

    def wait(self, timeout_ms: int) -> None:
        if self._cons[0] == self._prod[0]:
            select.select([self.fd], [], [], max(0, timeout_ms) / 1000)

    def close(self) -> None:
        for view in (self._data, self._cons, self._prod):
            view.release()
        self._consumer.close()
        self._producer.close()


class _LibbpfReader:
    """Reads the ring through libbpf's ring buffer manager, one callback per record: for
    CPUs whose memory ordering :class:`_MmapReader` cannot rely on (libbpf puts the
    barriers in). The callback puts the ring header and padding back, so that both
    readers hand over the same bytes."""

    def __init__(self, map_fd: int) -> None:
        from bcc.libbcc import _RINGBUF_CB_TYPE, lib

        self._lib = lib
        self._records: list[bytes] = []
        self._limit = 0
        self._callback = _RECORD_CB(self._record_callback())
        self._rb: int | None = lib.bpf_new_ringbuf(
            map_fd, ct.cast(self._callback, _RINGBUF_CB_TYPE), None)
        if not self._rb:
            raise OSError(ct.get_errno(), "could not open the packets ring buffer")
        self.fd: int = lib.ring_buffer__epoll_fd(ct.c_void_p(self._rb))

    def _record_callback(self) -> Callable[[Any, Any, int], int]:
        append = self._records.append
        pads = [bytes(n) for n in range(8)]

        def on_record(_ctx: Any, data: Any, size: int) -> int:
            append(size.to_bytes(4, "little") + b"\0\0\0\0" + data[:size] + pads[-size % 8])
            # A negative value stops libbpf here; this record is ours already (consumed).
            return -1 if len(self._records) >= self._limit else 0

        return on_record

    def take(self, max_packets: int | None, chunk_bytes: int
             ) -> tuple[list[tuple[bytes, int]], set[int]]:
        if self._rb is None:
            return [], set()
        self._limit = (1 << 62) if max_packets is None else max_packets
        if self._limit > 0:
            self._lib.bpf_consume_ringbuf(self._rb)
        records, self._records[:] = self._records[:], []
        chunks: list[tuple[bytes, int]] = []
        first = size = 0
        for index, record in enumerate(records):
            size += len(record)
            if size >= chunk_bytes:
                chunks.append((b"".join(records[first:index + 1]), index + 1 - first))
                first, size = index + 1, 0
        if first < len(records):
            chunks.append((b"".join(records[first:]), len(records) - first))
        return chunks, {_le_u32(record[16:20]) for record in records}

    def wait(self, timeout_ms: int) -> None:
        if self._rb is not None:
            select.select([self.fd], [], [], max(0, timeout_ms) / 1000)

    def close(self) -> None:
        if self._rb is not None:
            self._lib.bpf_free_ringbuf(self._rb)
            self._rb = None


#: Where :class:`_MmapReader` is right (see its docstring).
MMAP_MACHINES: Final = ("x86_64", "AMD64", "amd64")


class PacketRing:
    """The ``packets`` ring buffer of a loaded flow program.

    ``size`` is the ring's data size in bytes (the map's max_entries). ``ifname`` maps an
    ifindex to its name (the agent passes ``LinkWatcher.name``; it may be set later
    through the attribute); a missing or empty name becomes ``if<index>``. ``tai`` says
    which clock the program was compiled with (``-DPACKET_CLOCK_TAI``); ``lost`` returns
    the kernel's lost-packets counter. ``reader`` is "mmap" (x86-64), "libbpf" or "auto".
    Not thread-safe: one thread takes.
    """

    def __init__(
        self,
        map_fd: int,
        size: int,
        *,
        tai: bool,
        ifname: Callable[[int], str] | None = None,
        lost: Callable[[], int] | None = None,
        reader: str = "auto",
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        if not LITTLE_ENDIAN_HOST:
            raise ValueError("packet capture needs a little-endian host: the kernel's records "
                             "are sent as they are, and PACKETS is little-endian")
        if chunk_bytes < 1:
            raise ValueError("chunk_bytes must be positive")
        if reader == "auto":
            reader = "mmap" if platform.machine() in MMAP_MACHINES else "libbpf"
        if reader not in ("mmap", "libbpf"):
            raise ValueError(f"reader {reader!r}: expected mmap, libbpf or auto")
        self.ifname = ifname
        self.tai = tai
        self.reader = reader
        self.chunk_bytes = chunk_bytes
        self._lost = lost
        self._reader: _MmapReader | _LibbpfReader | None = (
            _MmapReader(map_fd, size) if reader == "mmap" else _LibbpfReader(map_fd))

    def fileno(self) -> int:
        """A descriptor that turns readable when the kernel ring has records (for
        ``select``)."""
        if self._reader is None:
            raise ValueError("the packet ring is closed")
        return self._reader.fd

    def take_captured(self, max_packets: int | None = None) -> Captured:
        """The records in the ring, oldest first (at most ``max_packets``), as the kernel
        wrote them, in chunks of about ``chunk_bytes``, with the clock offset and interface
        names that go with them (what PACKETS carries). Their room in the ring is free
        again once this returns."""
        if self._reader is None:
            return Captured([], realtime_offset_ns(self.tai), {})
        with _gc_paused():
            chunks, ifindexes = self._reader.take(max_packets, self.chunk_bytes)
        names = _Names(self.ifname)
        return Captured(chunks, realtime_offset_ns(self.tai), {i: names[i] for i in ifindexes})

    def take(self, max_packets: int | None = None) -> list[Packet]:
        """The packets captured so far, oldest first (at most ``max_packets``)."""
        captured = self.take_captured(max_packets)
        packets: list[Packet] = []
        for index in range(len(captured.chunks)):
            packets += unpack_packets(pack_chunk(0, captured, index))[1]
        return packets

    def poll(self, timeout_ms: int, max_packets: int | None = None) -> list[Packet]:
        """Wait up to ``timeout_ms`` for packets, then :meth:`take` them."""
        if self._reader is not None:
            self._reader.wait(timeout_ms)
        return self.take(max_packets)

    def lost(self) -> int:
        """Packets the kernel counted but could not hand over (its ring was full)."""
        return self._lost() if self._lost is not None else 0

    def close(self) -> None:
        """Let go of the ring (what it still holds is not read)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
