"""Captured packets from the kernel: the ``packets`` ring buffer of ebpf/packets.h.

With packet capture on (``FlowProgram(packets=True)``) the TC classifiers copy every packet
they count into the ``packets`` BPF ring buffer, as a 24-byte ``struct packet_meta``
followed by the frame's first ``caplen`` bytes (``PACKET_META`` below mirrors it). A
:class:`PacketRing` turns those records into :class:`~netobserv_tui.model.packets.Packet`.

Its own ring manager
    BCC's ``ring_buffer_poll``/``ring_buffer_consume`` serve every ring buffer opened on a
    ``BPF`` object at once, through one libbpf ``ring_buffer``. Packets have their own
    instead (``bpf_new_ringbuf`` on the map's fd): taking packets never runs the overflow
    ring's callback and taking overflow records never reads the packets ring, so neither
    path can stall or lose the other's records, and the memory bound below can stop reading
    packets without stopping overflow records.

Fast path
    The callback gets the record as a ``char *`` and keeps it whole, as one bytes object
    (one slice, one append). :meth:`take_captured` hands the records on untouched, with the
    clock offset and the names of the interfaces they use: the PACKETS payload is those
    records back to back (:mod:`netobserv_tui.model.packets`), so the agent never parses a
    packet. :meth:`take` decodes them into :class:`Packet` tuples (tests, tools). The
    cyclic garbage collector is paused while the ring is read: the objects made hold no
    cycles, and with a large batch pending its collections were half of the cost.
    ``test_user_space_rate`` in tests/kernel/test_packet_program.py prints the rate.

Memory bound
    Records read but not yet taken are kept in memory up to ``max_pending_bytes`` (64 MiB;
    each record counts its size plus ``RECORD_OVERHEAD`` for Python's objects). Past it the
    callback tells libbpf to stop (a negative return), and :meth:`take`/:meth:`poll` do not
    read the ring until the caller has taken records: the kernel ring then fills up, and
    what does not fit in it is counted by the kernel (``COUNTER_PACKETS_LOST``), so
    :meth:`lost` accounts for every packet that was counted but never reached user space.
    Nothing is dropped in user space.

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
import os
import platform
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from ..model.packets import LITTLE_ENDIAN_HOST, Captured, Packet

#: struct packet_meta of ebpf/packets.h: ts_ns, ifindex, len, caplen, direction.
PACKET_META: Final = struct.Struct("<QIIIB3x")
#: Ring buffer size in pages (8 MiB with 4 KiB pages); a power of two.
DEFAULT_RING_PAGES: Final = 2048
#: Records read from the ring but not taken yet, in bytes, before reading stops.
DEFAULT_MAX_PENDING: Final = 64 << 20
#: What one pending record costs beyond its size: its bytes object's header and list slot
#: (CPython 64-bit: 33 + 8).
RECORD_OVERHEAD: Final = 41
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


class PacketRing:
    """The ``packets`` ring buffer of a loaded flow program, as :class:`Packet` tuples.

    ``ifname`` maps an ifindex to its name (the agent passes ``LinkWatcher.name``; it may be
    set later through the attribute); a missing or empty name becomes ``if<index>``.
    ``tai`` says which clock the program was compiled with (``-DPACKET_CLOCK_TAI``);
    ``lost`` returns the kernel's lost-packets counter. Not thread-safe: one thread takes.
    """

    def __init__(
        self,
        map_fd: int,
        *,
        tai: bool,
        ifname: Callable[[int], str] | None = None,
        lost: Callable[[], int] | None = None,
        max_pending_bytes: int = DEFAULT_MAX_PENDING,
    ) -> None:
        from bcc.libbcc import _RINGBUF_CB_TYPE, lib

        if max_pending_bytes < 1:
            raise ValueError("max_pending_bytes must be positive")
        if not LITTLE_ENDIAN_HOST:
            raise ValueError("packet capture needs a little-endian host: the kernel's records "
                             "are sent as they are, and PACKETS is little-endian")
        self.ifname = ifname
        self.tai = tai
        self.max_pending_bytes = max_pending_bytes
        self._lost = lost
        self._lib = lib
        #: Every pending record as the kernel wrote it: struct packet_meta, then the frame.
        self._records: list[bytes] = []
        self._pending_bytes = 0
        # Kept alive as long as the ring; BCC declares the argument with its own type.
        self._callback = _RECORD_CB(self._record_callback())
        self._rb: int | None = lib.bpf_new_ringbuf(
            map_fd, ct.cast(self._callback, _RINGBUF_CB_TYPE), None
        )
        if not self._rb:
            raise OSError(ct.get_errno(), "could not open the packets ring buffer")

    def _record_callback(self) -> Callable[[Any, Any, int], int]:
        append = self._records.append
        cost = RECORD_OVERHEAD

        def on_record(_ctx: Any, data: Any, size: int) -> int:
            append(data[:size])
            self._pending_bytes += size + cost
            # A negative value stops libbpf here; this record is ours already (consumed).
            return -1 if self._pending_bytes >= self.max_pending_bytes else 0

        return on_record

    def fileno(self) -> int:
        """An epoll descriptor that turns readable when the kernel ring has records (for
        ``select``): the kernel wakes it when a record lands in a ring read to its end."""
        if self._rb is None:
            raise ValueError("the packet ring is closed")
        fd: int = self._lib.ring_buffer__epoll_fd(ct.c_void_p(self._rb))
        return fd

    @property
    def pending(self) -> int:
        """Records read from the kernel and not taken yet."""
        return len(self._records)

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    @property
    def full(self) -> bool:
        """Whether the memory bound stops reading the kernel ring until records are taken."""
        return self._pending_bytes >= self.max_pending_bytes

    def consume(self) -> None:
        """Read what the kernel ring holds, without waiting (up to the memory bound)."""
        if self._rb is not None and not self.full:
            with _gc_paused():
                self._lib.bpf_consume_ringbuf(self._rb)

    def poll(self, timeout_ms: int, max_packets: int | None = None) -> list[Packet]:
        """Wait up to ``timeout_ms`` for packets, then :meth:`take` them. Returns at once when
        records are pending already (so also when the memory bound is reached)."""
        if self._rb is not None and not self._records:
            with _gc_paused():
                self._lib.bpf_poll_ringbuf(self._rb, timeout_ms)
        return self.take(max_packets)

    def take_captured(self, max_packets: int | None = None) -> Captured:
        """The records read so far, oldest first (at most ``max_packets``), untouched, with
        the clock offset and interface names that go with them (what PACKETS carries)."""
        self.consume()
        count = len(self._records)
        if max_packets is not None and max_packets < count:
            count = max(0, max_packets)
        taken = self._records[:count]
        del self._records[:count]  # in place: the callback holds this list
        if self._records:
            self._pending_bytes -= sum(map(len, taken)) + RECORD_OVERHEAD * count
        else:
            self._pending_bytes = 0
        names = _Names(self.ifname)
        with _gc_paused():
            indexes = {record[8:12] for record in taken}
        return Captured(taken, realtime_offset_ns(self.tai),
                        {i: names[i] for i in map(_le_u32, indexes)})

    def take(self, max_packets: int | None = None) -> list[Packet]:
        """The packets captured so far, oldest first (at most ``max_packets``)."""
        captured = self.take_captured(max_packets)
        clock, names = captured.clock_ns, captured.names
        head = PACKET_META.unpack_from
        packets = []
        for record in captured.records:
            ts, ifindex, length, caplen, direction = head(record)
            packets.append(Packet(ts + clock, ifindex, names[ifindex], direction, length,
                                  record[PACKET_META.size:]))
        return packets

    def lost(self) -> int:
        """Packets the kernel counted but could not hand over (its ring was full)."""
        return self._lost() if self._lost is not None else 0

    def close(self) -> None:
        """Free the ring manager; packets already read can still be taken."""
        if self._rb is not None:
            self._lib.bpf_free_ringbuf(self._rb)
            self._rb = None
