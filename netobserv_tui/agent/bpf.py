"""Loading ebpf/flows.c with BCC and draining its maps.

``FlowProgram`` is a context manager: leaving it closes the BPF object (BCC detaches every
probe it attached). TC attachment is separate (see ``tc.py``) because BCC does not own it.
"""

from __future__ import annotations

import ctypes as ct
import errno
import ipaddress
import logging
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

from ..model import speedups
from ..model.errors import KernelError
from ..model.packets import Packet
from .packets import (
    DEFAULT_RING_PAGES,
    MAX_KERNEL_SNAPLEN,
    PacketRing,
    possible_cpus,
    tai_clock_available,
)
from .records import (
    COUNTER_EVENTS_FULL,
    COUNTER_MAP_FULL,
    COUNTER_PACKETS_LOST,
    COUNTER_RINGBUF_LOST,
    FLOW_ID,
    FLOW_METRICS,
)

log = logging.getLogger(__name__)

PROGRAMS = ("nobs_tc_ingress", "nobs_tc_egress", "nobs_tc_ingress_l3", "nobs_tc_egress_l3")

#: Entries of the workload_ips map (ebpf/workload.h): addresses a capture can be narrowed to.
WORKLOAD_MAX_IPS: Final = 8192
_V4_MAPPED: Final = bytes(10) + b"\xff\xff"


def ebpf_dir() -> Path:
    """The C sources: inside the installed wheel, or ``ebpf/`` of a source checkout."""
    packaged = Path(str(resources.files("netobserv_tui"))) / "_ebpf"
    if (packaged / "flows.c").is_file():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "ebpf"
    if (checkout / "flows.c").is_file():
        return checkout
    raise KernelError("the eBPF sources (flows.c) are missing from this installation; reinstall")


_LOCAL_INCLUDE = re.compile(r'^#include "([A-Za-z0-9_.]+)"[^\n]*$', re.MULTILINE)


def _inline_includes(path: Path, seen: set[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in seen:
            return f"/* {name} already included */"
        seen.add(name)
        return f"/* --- {name} --- */\n" + _inline_includes(path.parent / name, seen)

    return _LOCAL_INCLUDE.sub(replace, path.read_text())


@dataclass(frozen=True)
class Drained:
    """One eviction: flat key and value buffers holding ``count`` records."""

    keys: memoryview
    values: memoryview
    count: int
    seconds: float


class FlowProgram:
    def __init__(
        self,
        max_flows: int = 100_000,
        overflow_pages: int = 256,
        defines: dict[str, int | str | None] | None = None,
        workload: bool = False,
        workload_max_ips: int = WORKLOAD_MAX_IPS,
        packets: bool = False,
        snaplen: int = 65535,
        packet_ring_pages: int | None = None,
        packet_clock: Literal["auto", "tai", "monotonic"] = "auto",
        packet_reader: str = "auto",
    ) -> None:
        """``defines`` become ``-DNAME[=value]``: feature switches such as ENABLE_DNS.

        ``workload`` compiles the workload filter in (ebpf/workload.h): only packets with an
        end in the set given to :meth:`set_workload` are counted, and the set starts empty.

        ``packets`` compiles packet capture in (ebpf/packets.h): every packet counted is also
        copied, its first ``snaplen`` bytes (1 to 65535), into a ring buffer of
        ``packet_ring_pages`` pages (a power of two; 2048 = 8 MiB by default), which
        :attr:`packet_ring` reads once loaded. ``packet_clock`` "auto" stamps packets with
        the TAI clock where the kernel has bpf_ktime_get_tai_ns() (6.1+), else with the
        monotonic clock; ``packet_reader`` chooses how the ring is read ("auto", "mmap" or
        "libbpf"; see packets.py).
        """
        if max_flows < 1:
            raise ValueError("max_flows must be positive")
        if workload and workload_max_ips < 1:
            raise ValueError("workload_max_ips must be positive")
        pages = DEFAULT_RING_PAGES if packet_ring_pages is None else packet_ring_pages
        if packets:
            if not 1 <= snaplen <= MAX_KERNEL_SNAPLEN:
                raise ValueError(f"snaplen must be between 1 and {MAX_KERNEL_SNAPLEN}")
            if pages < 1 or pages & (pages - 1):
                raise ValueError("packet_ring_pages must be a power of two")
            if packet_clock not in ("auto", "tai", "monotonic"):
                raise ValueError("packet_clock must be auto, tai or monotonic")
        self.max_flows = max_flows
        self.workload = workload
        self.workload_max_ips = workload_max_ips
        self.cflags = [
            f"-I{ebpf_dir()}",
            f"-DMAX_FLOWS={max_flows}",
            f"-DOVERFLOW_PAGES={overflow_pages}",
        ]
        if workload:
            self.cflags += ["-DENABLE_WORKLOAD", f"-DWORKLOAD_MAX_IPS={workload_max_ips}"]
        self.packets = packets
        self.snaplen = snaplen
        self.packet_ring_pages = pages
        self.packet_clock = packet_clock
        self.packet_reader = packet_reader
        #: Whether packets are stamped with the TAI clock (decided at load()).
        self.packet_tai = False
        #: The captured packets, once loaded with ``packets=True``.
        self.packet_ring: PacketRing | None = None
        #: The two flow maps once loaded; the programs count in ``_flow_fds[_counting]``.
        self._flow_fds = (-1, -1)
        self._counting = 0
        for name, value in (defines or {}).items():
            self.cflags.append(f"-D{name}" if value is None else f"-D{name}={value}")
        self.bpf: Any = None
        self.fds: dict[str, int] = {}
        self._overflow: list[bytes] = []
        #: What workload_ips holds: only set_workload() writes the map, so this mirror is exact.
        self._workload: set[bytes] = set()
        keys_size = FLOW_ID.size * max_flows
        values_size = FLOW_METRICS.size * max_flows
        self._keys = ct.create_string_buffer(keys_size)
        self._values = ct.create_string_buffer(values_size)

    def source(self) -> str:
        """flows.c with our own ``#include "x.h"`` lines inlined.

        BCC generates the argument structs of TRACEPOINT_PROBE only for probes in the main
        text, so headers holding probes must be part of it. #ifdef guards still apply.
        """
        return _inline_includes(ebpf_dir() / "flows.c", set())

    def load(self) -> FlowProgram:
        from bcc import BPF

        cflags = self.cflags + (self._packet_cflags() if self.packets else [])
        try:
            self.bpf = BPF(text=self.source().encode(), cflags=cflags)
            for name in PROGRAMS:
                self.fds[name] = self.bpf.load_func(name.encode(), BPF.SCHED_CLS).fd
        except Exception as exc:
            self.close()
            raise KernelError(
                f"the flow program could not be compiled or loaded: {exc}; run with "
                "--log-level=debug to see BCC's output, and check that kernel headers are "
                "installed (see docs/troubleshooting.md)"
            ) from exc
        self._flow_fds = (int(self.bpf[b"flows"].map_fd), int(self.bpf[b"flows_spare"].map_fd))
        self._use_flow_map(0)
        self.bpf[b"overflow"].open_ring_buffer(self._on_overflow)
        if self.packets:
            try:
                ring = self.bpf[b"packets"]
                self.packet_ring = PacketRing(
                    ring.map_fd, ring.max_entries, tai=self.packet_tai,
                    lost=self._packets_lost, reader=self.packet_reader,
                )
                log.info("Packet ring: %d MiB, %s reader, %s.", ring.max_entries >> 20,
                         self.packet_ring.reader, speedups.describe())
            except Exception as exc:
                self.close()
                raise KernelError(f"the packets ring buffer could not be opened: {exc}") from exc
        return self

    def _packet_cflags(self) -> list[str]:
        """The -D switches of packet capture, deciding the clock (probed once per process)."""
        if self.packet_clock == "auto":
            self.packet_tai = tai_clock_available()
        else:
            self.packet_tai = self.packet_clock == "tai"
        flags = [
            "-DENABLE_PACKETS",
            f"-DSNAPLEN={self.snaplen}",
            f"-DPACKET_RING_PAGES={self.packet_ring_pages}",
            f"-DPACKET_CPUS={possible_cpus()}",
        ]
        if self.packet_tai:
            flags.append("-DPACKET_CLOCK_TAI")
        return flags

    def _packets_lost(self) -> int:
        return int(sum(self.bpf[b"counters"][ct.c_int(COUNTER_PACKETS_LOST)]))

    def take_packets(self, max_packets: int | None = None) -> list[Packet]:
        """The packets captured since the last call (see :class:`PacketRing`)."""
        if self.packet_ring is None:
            raise RuntimeError("the program was not loaded with packet capture")
        return self.packet_ring.take(max_packets)

    def _on_overflow(self, _ctx: Any, data: Any, size: int) -> int:
        self._overflow.append(ct.string_at(data, size))
        return 0

    def poll_overflow(self, timeout_ms: int) -> list[bytes]:
        """Wait up to ``timeout_ms`` for overflow records; returns and clears them."""
        self.bpf.ring_buffer_poll(timeout_ms)
        return self.take_overflow()

    def overflow_fileno(self) -> int:
        """An epoll descriptor that turns readable when the overflow ring has records (for
        ``select``), -1 when the program has no ring manager."""
        manager = getattr(self.bpf, "_ringbuf_manager", None)
        if not manager:
            return -1
        from bcc.libbcc import lib

        fd: int = lib.ring_buffer__epoll_fd(ct.c_void_p(manager))
        return fd

    def take_overflow(self) -> list[bytes]:
        self.bpf.ring_buffer_consume()
        records, self._overflow = self._overflow, []
        return records

    def counters(self) -> dict[str, int]:
        table = self.bpf[b"counters"]
        total = {"map_full": 0, "overflow_lost": 0, "events_full": 0, "packets_lost": 0}
        names = (
            (COUNTER_MAP_FULL, "map_full"),
            (COUNTER_RINGBUF_LOST, "overflow_lost"),
            (COUNTER_EVENTS_FULL, "events_full"),
            (COUNTER_PACKETS_LOST, "packets_lost"),
        )
        for index, name in names:
            total[name] = sum(table[ct.c_int(index)])
        return total

    @property
    def workload_ips(self) -> int:
        """How many addresses the workload filter holds (0 without it)."""
        return len(self._workload)

    def set_workload(self, ips: Iterable[str]) -> tuple[int, int]:
        """Make workload_ips hold exactly ``ips``: returns (added, removed).

        Only the difference is written, in place, while the classifiers run: an address in
        both the old and the new set is never absent. Gone addresses are deleted first, so
        the map never needs more than its size. An address that is not valid is logged and
        skipped; addresses beyond the map's size are logged and not captured.
        """
        if not self.workload:
            raise RuntimeError("the program was loaded without the workload filter")
        if self.bpf is None:
            raise RuntimeError("the program is not loaded")
        wanted: set[bytes] = set()
        skipped: list[str] = []
        for text in ips:
            key = workload_key(text)
            if key is None:
                skipped.append(text)
            else:
                wanted.add(key)
        if skipped:
            log.error(
                "The workload set holds %d invalid address(es), ignored: %s.",
                len(skipped), ", ".join(repr(t) for t in skipped[:5]),
            )
        if len(wanted) > self.workload_max_ips:
            # Keep what is already in the kernel, then the rest in a stable order.
            kept = sorted(wanted & self._workload) + sorted(wanted - self._workload)
            log.error(
                "The workload has %d addresses, more than the %d the kernel map holds: "
                "flows of %d of them are not captured.",
                len(wanted), self.workload_max_ips, len(wanted) - self.workload_max_ips,
            )
            wanted = set(kept[: self.workload_max_ips])
        table = self.bpf[b"workload_ips"]
        gone = self._workload - wanted
        new = wanted - self._workload
        for key in gone:
            try:
                del table[table.Key.from_buffer_copy(key)]
            except KeyError:
                pass  # not there: nothing to remove
            self._workload.discard(key)
        one = table.Leaf(1)
        for key in new:
            table[table.Key.from_buffer_copy(key)] = one
            self._workload.add(key)
        return len(new), len(gone)

    @property
    def flow_map_fd(self) -> int:
        """The flow map the programs count in now (the next :meth:`drain` takes it)."""
        return self._flow_fds[self._counting]

    def _use_flow_map(self, index: int) -> None:
        """Make the programs count in flow map ``index``: returns once no program can still
        be using the other one (the kernel waits for them on an array-of-maps update)."""
        assert self.bpf is not None
        slot = self.bpf[b"flows_current"]
        slot[slot.Key(0)] = slot.Leaf(self._flow_fds[index])
        self._counting = index

    def drain(self) -> Drained:
        """Every flow counted since the last drain: the programs move to the other flow
        map, and the one they left is looked up and deleted in batches
        (BPF_MAP_LOOKUP_AND_DELETE_BATCH) with no program writing to it. The buffers hold
        ``max_flows`` entries, as many as the map, and nothing is added while it is
        drained, so the drain takes every entry (ENOSPC, a bucket that does not fit, cannot
        happen; were it to, the entries left would come out when this map is drained
        next, never lost). The last drain, after the programs are detached, therefore
        leaves both maps empty."""
        started = time.perf_counter()
        left = self._flow_fds[self._counting]
        self._use_flow_map(1 - self._counting)
        keys, values, total = lookup_and_delete_all(
            left, FLOW_ID.size, FLOW_METRICS.size, self.max_flows, self._keys, self._values)
        return Drained(keys, values, total, time.perf_counter() - started)

    def close(self) -> None:
        if self.packet_ring is not None:
            self.packet_ring.close()
        if self.bpf is not None:
            try:
                self.bpf.cleanup()
            finally:
                self.bpf = None

    def __enter__(self) -> FlowProgram:
        return self if self.bpf is not None else self.load()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def workload_key(text: str) -> bytes | None:
    """An address as workload_ips keys it (flow_id's layout: IPv4 as ::ffff:a.b.c.d), or
    None when ``text`` is not an address, or is the unspecified address (which is what
    the key of a frame without addresses holds)."""
    if not isinstance(text, str):
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if address.is_unspecified and address.version == 6:
        return None
    if address.version == 4:
        return _V4_MAPPED + address.packed
    return address.packed


def lookup_and_delete_all(
    fd: int,
    key_size: int,
    value_size: int,
    capacity: int,
    keys: ct.Array[ct.c_char] | None = None,
    values: ct.Array[ct.c_char] | None = None,
) -> tuple[memoryview, memoryview, int]:
    """Empty a hash map with BPF_MAP_LOOKUP_AND_DELETE_BATCH into flat buffers.

    The buffers hold ``capacity`` entries (the map's size). Entries added while the drain
    runs can still leave less room than the next bucket holds: the kernel then answers
    ENOSPC, and the drain stops there, keeping what it took; the entries left in the map
    are drained at the next call (the next interval), never lost, and never an error.
    Returns views of the keys and values drained and their count; pass buffers to reuse
    them between calls.
    """
    from bcc.libbcc import lib

    keys = keys if keys is not None else ct.create_string_buffer(key_size * capacity)
    values = values if values is not None else ct.create_string_buffer(value_size * capacity)
    in_batch, out_batch, count = ct.c_uint32(0), ct.c_uint32(0), ct.c_uint32(0)
    keys_addr, values_addr = ct.addressof(keys), ct.addressof(values)
    total, first = 0, True
    while total < capacity:
        count.value = capacity - total
        res = lib.bpf_lookup_and_delete_batch(
            fd,
            None if first else ct.byref(in_batch),
            ct.byref(out_batch),
            ct.c_void_p(keys_addr + key_size * total),
            ct.c_void_p(values_addr + value_size * total),
            ct.byref(count),
        )
        err = ct.get_errno() if res != 0 else 0
        total += count.value
        if res != 0:
            if err in (errno.ENOENT, 0) or -res == errno.ENOENT:
                break
            if err == errno.ENOSPC or -res == errno.ENOSPC:
                break  # the next bucket does not fit: it stays for the next drain
            raise KernelError(f"draining a kernel map failed: {os.strerror(err or -res)}")
        if count.value == 0:
            break
        in_batch.value = out_batch.value
        first = False
    return (
        memoryview(keys).cast("B")[: key_size * total],
        memoryview(values).cast("B")[: value_size * total],
        total,
    )


def drain_pairs(fd: int, key_size: int, value_size: int, capacity: int) -> list[
    tuple[bytes, bytes]
]:
    """:func:`lookup_and_delete_all` as (key bytes, value bytes) pairs, for small maps."""
    keys, values, total = lookup_and_delete_all(fd, key_size, value_size, capacity)
    raw_k, raw_v = keys.tobytes(), values.tobytes()
    return [
        (raw_k[i * key_size : (i + 1) * key_size], raw_v[i * value_size : (i + 1) * value_size])
        for i in range(total)
    ]
