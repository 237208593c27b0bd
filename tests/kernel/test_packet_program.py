"""Packet capture in the real kernel: ebpf/flows.c with packets.h, and PacketRing.

Two network namespaces made here, joined by one veth pair (``pkt-a`` in the first, index
4101; ``pkt-b`` in the second, index 4102; MTU 9216), with addresses from 198.18.0.0/15 and
fd00:198:18::/48 only and permanent neighbour entries (no ARP or ND in the way). The flow
program is attached to both ends; datagrams go from A to B on sockets opened inside the
namespaces, and the test knows every byte of every frame it sent. Both namespaces (and with
them the veths, qdiscs and filters) are removed afterwards, whatever happens.

The per-packet cost in user space (``test_user_space_rate``) uses BPF_PROG_TEST_RUN instead:
the classifier runs N times on one frame, filling the ring without any traffic.
"""

from __future__ import annotations

import ctypes as ct
import os
import platform
import select
import shutil
import socket
import struct
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from test_filter_program import load_rules, prog_test_run, verified_insns

from netobserv_tui.agent.bpf import FlowProgram
from netobserv_tui.agent.filter_rules import defines as filter_defines
from netobserv_tui.agent.packets import (
    MMAP_MACHINES,
    PACKET_META,
    tai_clock_available,
)
from netobserv_tui.agent.tc import HOOKS, PRIORITY
from netobserv_tui.model.filters import FilterSet
from netobserv_tui.model.packets import EGRESS, INGRESS, Packet, pack_chunk, unpack_packets

pytestmark = pytest.mark.kernel

NS_A, NS_B = f"nobs-pkt{os.getpid()}-a", f"nobs-pkt{os.getpid()}-b"
IF_A, IF_B = "pkt-a", "pkt-b"
IDX_A, IDX_B = 4101, 4102
MAC_A, MAC_B = "02:00:c6:12:00:01", "02:00:c6:12:00:02"
A4, B4 = "198.18.0.1", "198.18.0.2"
A6, B6 = "fd00:198:18::1", "fd00:198:18::2"
MTU = 9216
PORT, OTHER_PORT = 7000, 7001
NAMES = {IDX_A: IF_A, IDX_B: IF_B}
CLONE_NEWNET = 0x40000000
#: Both ways of reading the ring (the mmap one only where its memory ordering holds).
READERS = [pytest.param("mmap", marks=pytest.mark.skipif(
    platform.machine() not in MMAP_MACHINES, reason="the mmap reader is for x86-64")), "libbpf"]


def ifname(index: int) -> str:
    return NAMES.get(index, "")

_libc = ct.CDLL(None, use_errno=True)


@contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the block with this thread in network namespace ``name`` (sockets and netlink
    sockets made inside stay there)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ct.get_errno(), f"setns to {name}")
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                raise RuntimeError("could not return to the test's own network namespace")
    finally:
        os.close(own)
        os.close(target)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Pair:
    """The two namespaces, with sender sockets in A and receiver sockets in B."""

    send4: socket.socket = field(init=False)
    send6: socket.socket = field(init=False)
    receivers: dict[tuple[int, int], socket.socket] = field(default_factory=dict)

    def open_sockets(self) -> None:
        with in_netns(NS_A):
            self.send4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.send6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        # IP_MTU_DISCOVER (10) and IPV6_MTU_DISCOVER (23) = *_PMTUDISC_DO: never fragment.
        self.send4.setsockopt(socket.IPPROTO_IP, 10, 2)
        self.send6.setsockopt(socket.IPPROTO_IPV6, 23, 2)
        with in_netns(NS_B):
            for family, addr in ((socket.AF_INET, B4), (socket.AF_INET6, B6)):
                for port in (PORT, OTHER_PORT):
                    r = socket.socket(family, socket.SOCK_DGRAM)
                    r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
                    r.bind((addr, port))
                    r.setblocking(False)
                    self.receivers[(family, port)] = r

    def close(self) -> None:
        for s in (getattr(self, "send4", None), getattr(self, "send6", None),
                  *self.receivers.values()):
            if s is not None:
                s.close()

    def send(self, family: int, port: int, payloads: list[bytes]) -> None:
        sock, dst = (self.send4, B4) if family == 4 else (self.send6, B6)
        for payload in payloads:
            assert sock.sendto(payload, (dst, port)) == len(payload)

    def received(self, family: int, port: int, count: int, timeout: float = 5.0) -> list[bytes]:
        """Wait until ``count`` datagrams arrived on B's socket; returns them."""
        sock = self.receivers[(socket.AF_INET if family == 4 else socket.AF_INET6, port)]
        got: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            try:
                got.append(sock.recv(65536))
            except BlockingIOError:
                time.sleep(0.001)
        return got


@pytest.fixture(scope="module")
def pair(bcc_ready: None) -> Iterator[Pair]:
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2's ip")
    made: list[str] = []
    the_pair = Pair()
    try:
        for ns in (NS_A, NS_B):
            ip("netns", "add", ns)
            made.append(ns)
        ip("-n", NS_A, "link", "add", IF_A, "index", str(IDX_A), "address", MAC_A,
           "mtu", str(MTU), "type", "veth", "peer", "name", IF_B, "netns", NS_B,
           "index", str(IDX_B), "address", MAC_B, "mtu", str(MTU))
        for ns, dev, v4, v6, peer4, peer6, peer_mac in (
            (NS_A, IF_A, A4, A6, B4, B6, MAC_B), (NS_B, IF_B, B4, B6, A4, A6, MAC_A),
        ):
            ip("-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
            ip("-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            ip("-n", ns, "link", "set", dev, "up")
            for peer in (peer4, peer6):
                ip("-n", ns, "neigh", "replace", peer, "lladdr", peer_mac, "dev", dev,
                   "nud", "permanent")
        the_pair.open_sockets()
        yield the_pair
    finally:
        the_pair.close()
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert NS_A not in left and NS_B not in left, f"namespaces left behind: {left}"


@contextmanager
def attached(prog: FlowProgram) -> Iterator[None]:
    """The program on clsact ingress and egress of both ends; taken off again afterwards
    (the qdiscs are ours: the namespaces are fresh)."""
    from pyroute2 import IPRoute

    done: list[tuple[IPRoute, int]] = []
    try:
        for ns, index in ((NS_A, IDX_A), (NS_B, IDX_B)):
            with in_netns(ns):
                ipr = IPRoute()
            done.append((ipr, index))
            ipr.tc("add", "clsact", index)
            for parent, name in HOOKS:
                ipr.tc("add-filter", "bpf", index, ":1", fd=prog.fds[name], name=name,
                       parent=parent, prio=PRIORITY, classid=1, direct_action=True)
        yield
    finally:
        for ipr, index in done:
            try:
                ipr.tc("del", "clsact", index)
            finally:
                ipr.close()


def udp_filter(*extra: str) -> FilterSet:
    filters, rest = FilterSet.parse(["--enable_filter=true", "--protocol=udp",
                                     f"--dport={PORT}", *extra])
    assert rest == []
    return filters


@contextmanager
def capture(filters: FilterSet, **kwargs: object) -> Iterator[FlowProgram]:
    prog = FlowProgram(max_flows=1024, defines=filter_defines(filters), packets=True,
                       **kwargs).load()  # type: ignore[arg-type]
    try:
        assert prog.packet_ring is not None
        prog.packet_ring.ifname = ifname
        load_rules(prog, filters)
        with attached(prog):
            yield prog
    finally:
        prog.close()


def take_all(prog: FlowProgram, expected: int, timeout: float = 5.0) -> list[Packet]:
    """Take packets until ``expected`` arrived (or the timeout), then once more for extras."""
    got: list[Packet] = []
    deadline = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        got += prog.take_packets()
        if len(got) < expected:
            time.sleep(0.005)
    time.sleep(0.05)
    return got + prog.take_packets()


def payloads(sizes: list[int], copies: int, tag: int) -> list[bytes]:
    """Distinct payloads: a 4-byte sequence number and tag, then a size-dependent pattern."""
    out = []
    for seq in range(copies * len(sizes)):
        size = sizes[seq % len(sizes)]
        head = struct.pack("!HH", tag, seq)
        out.append((head + bytes((seq + i) & 0xFF for i in range(size)))[:size])
    return out


def flow_packets(prog: FlowProgram) -> int:
    """Packets the flow map counted (and clears it)."""
    drained = prog.drain()
    values = drained.values.tobytes()
    return sum(struct.unpack_from("<Q", values, i * 56)[0] for i in range(drained.count))


def check_frames(packets: list[Packet], sent: list[bytes], family: int, snaplen: int,
                 window: tuple[int, int]) -> None:
    """Each datagram once on A's egress and once on B's ingress, in order, byte for byte."""
    ip_len = 20 if family == 4 else 40
    ethertype = b"\x08\x00" if family == 4 else b"\x86\xdd"
    by_hook: dict[tuple[int, int], list[Packet]] = {}
    for p in packets:
        by_hook.setdefault((p.ifindex, p.direction), []).append(p)
    assert set(by_hook) == {(IDX_A, EGRESS), (IDX_B, INGRESS)}, Counter(
        (p.ifname, p.ifindex, p.direction) for p in packets)
    for (index, _), seen in by_hook.items():
        assert len(seen) == len(sent), (index, len(seen), len(sent))
        assert {p.ifname for p in seen} == {NAMES[index]}
        stamps = [p.ts_ns for p in seen]
        assert stamps == sorted(stamps), "timestamps go back on one interface"
        assert window[0] <= stamps[0] and stamps[-1] <= window[1], (window, stamps[0],
                                                                    stamps[-1])
        for p, payload in zip(seen, sent, strict=True):
            frame_len = 14 + ip_len + 8 + len(payload)
            assert p.orig_len == frame_len
            assert len(p.data) == min(frame_len, snaplen)
            full = (bytes.fromhex(MAC_B.replace(":", "")) + bytes.fromhex(
                MAC_A.replace(":", "")) + ethertype)
            assert p.data[:14] == full[:snaplen][:14]
            if snaplen >= frame_len:
                assert p.data[14 + ip_len + 8:] == payload
                assert struct.unpack_from("!HH", p.data, 14 + ip_len + 2) == (
                    PORT, 8 + len(payload))
            else:
                want = payload[: max(0, snaplen - (14 + ip_len + 8))]
                assert p.data[14 + ip_len + 8:] == want


SIZES4 = [1, 64, 1000, 1472, 9000]
SIZES6 = [1, 64, 1000, 1452, 9000]


@pytest.mark.parametrize(("clock", "reader"), [("auto", "auto"), ("monotonic", "auto"),
                                               ("auto", "libbpf")])
def test_matching_ipv4_frames_are_copied_exactly(pair: Pair, clock: str, reader: str) -> None:
    filters = udp_filter()
    with capture(filters, packet_clock=clock, packet_reader=reader) as prog:
        if clock == "auto":
            assert prog.packet_tai == tai_clock_available()
        assert prog.take_packets() == []
        flow_packets(prog)
        sent = payloads(SIZES4, 4, tag=4)
        start = time.time_ns()
        pair.send(4, PORT, sent[:10])
        pair.send(4, OTHER_PORT, payloads([100, 1400], 5, tag=99))  # filtered out
        pair.send(4, PORT, sent[10:])
        got_matching = pair.received(4, PORT, len(sent))
        got_other = pair.received(4, OTHER_PORT, 10)
        end = time.time_ns()
        assert got_matching == sent and len(got_other) == 10  # the traffic really flowed
        packets = take_all(prog, 2 * len(sent))
        check_frames(packets, sent, 4, 65535, (start, end))
        # Exactly the packets counted in flows, and nothing lost.
        assert flow_packets(prog) == len(packets) == 2 * len(sent)
        assert prog.counters()["packets_lost"] == 0
        assert prog.packet_ring is not None and prog.packet_ring.lost() == 0


def test_matching_ipv6_frames_are_copied_exactly(pair: Pair) -> None:
    with capture(udp_filter()) as prog:
        sent = payloads(SIZES6, 3, tag=6)
        start = time.time_ns()
        pair.send(6, OTHER_PORT, payloads([200], 4, tag=98))
        pair.send(6, PORT, sent)
        pair.send(4, PORT, payloads([10], 1, tag=97))  # matches too, but IPv4: taken apart
        assert pair.received(6, PORT, len(sent)) == sent
        assert len(pair.received(4, PORT, 1)) == 1
        end = time.time_ns()
        packets = take_all(prog, 2 * len(sent) + 2)
        v6 = [p for p in packets if p.data[12:14] == b"\x86\xdd"]
        assert len(packets) - len(v6) == 2
        check_frames(v6, sent, 6, 65535, (start, end))
        assert flow_packets(prog) == len(packets)


def test_snaplen_truncates_and_keeps_the_length(pair: Pair) -> None:
    with capture(udp_filter(), snaplen=128) as prog:
        sent = payloads([1, 64, 86, 87, 1000, 9000], 2, tag=128)  # 86: frame of exactly 128
        start = time.time_ns()
        pair.send(4, PORT, sent)
        assert pair.received(4, PORT, len(sent)) == sent
        end = time.time_ns()
        packets = take_all(prog, 2 * len(sent))
        check_frames(packets, sent, 4, 128, (start, end))
        assert {len(p.data) for p in packets} == {43, 106, 128}
        assert max(p.orig_len for p in packets) == 14 + 20 + 8 + 9000


def test_the_ring_wakes_a_select_when_packets_arrive(pair: Pair) -> None:
    """The agent's loop sleeps in select() on the ring: it must turn readable when a packet
    lands and stay quiet once everything was taken."""
    with capture(udp_filter()) as prog:
        ring = prog.packet_ring
        assert ring is not None
        assert select.select([ring], [], [], 0.2)[0] == []
        sent = payloads([100], 3, tag=77)
        pair.send(4, PORT, sent)
        assert pair.received(4, PORT, len(sent)) == sent
        assert select.select([ring], [], [], 2.0)[0] == [ring]
        assert len(take_all(prog, 2 * len(sent))) == 2 * len(sent)
        assert select.select([ring], [], [], 0.2)[0] == []
        pair.send(4, OTHER_PORT, payloads([100], 2, tag=78))  # outside the filter
        assert select.select([ring], [], [], 0.3)[0] == []


def test_sampling_copies_exactly_the_sampled_packets(pair: Pair) -> None:
    filters = udp_filter("--sampling=4")
    assert filter_defines(filters)["SAMPLING"] == 4
    with capture(filters) as prog:
        sent = payloads([32], 400, tag=44)
        pair.send(4, PORT, sent)
        assert len(pair.received(4, PORT, len(sent))) == len(sent)
        packets = take_all(prog, 800, timeout=0.5)
        # About 1 in 4 of the 800 copies (binomial: mean 200, sd 12); the flows saw the
        # same packets, since both come after the one random draw.
        assert 120 <= len(packets) <= 280, len(packets)
        assert flow_packets(prog) == len(packets)
        assert prog.counters()["packets_lost"] == 0


def test_a_full_ring_counts_every_lost_packet(pair: Pair) -> None:
    # One page (4096 bytes) holds two records of a 1442-byte frame (8 + 24 + 1442 each).
    with capture(udp_filter(), packet_ring_pages=1) as prog:
        sent = payloads([1400], 50, tag=1)
        pair.send(4, PORT, sent)
        assert len(pair.received(4, PORT, len(sent))) == len(sent)
        time.sleep(0.05)
        taken = prog.take_packets()  # the first read: nothing was consumed during the burst
        lost = prog.counters()["packets_lost"]
        assert prog.packet_ring is not None and prog.packet_ring.lost() == lost
        assert 0 < len(taken) <= 2 and lost > 0
        assert len(taken) + lost == 2 * len(sent)
        assert flow_packets(prog) == 2 * len(sent)  # flows are still counted in full


@pytest.mark.parametrize("reader", READERS)
def test_a_small_ring_wraps_around_again_and_again_and_loses_nothing(
    pair: Pair, reader: str
) -> None:
    """A one-page ring (4096 bytes) taken after each datagram of 333 to 1000 bytes: 600
    records (about 750 KB) go through it, so they wrap around its end at ever different
    offsets (the mmap reader reads such a record whole through the kernel's second mapping
    of the ring). Every frame is exact, in order, and nothing is lost."""
    with capture(udp_filter(), packet_ring_pages=1, packet_reader=reader) as prog:
        sent = payloads([1000, 701, 333], 100, tag=3)
        got: list[Packet] = []
        for payload in sent:
            pair.send(4, PORT, [payload])
            assert pair.received(4, PORT, 1) == [payload]
            # Both records were committed before the datagram reached B's socket.
            taken = prog.take_packets()
            assert len(taken) == 2, len(taken)
            got += taken
        assert prog.counters()["packets_lost"] == 0
        check_frames(got, sent, 4, 65535, (0, time.time_ns()))


@pytest.mark.parametrize("reader", READERS)
def test_takes_of_a_few_packets_and_chunks_leave_the_rest_in_the_ring(
    pair: Pair, reader: str
) -> None:
    """``take(max_packets=3)`` takes at most 3 and leaves the others in the kernel ring
    for the next take; ``take_captured`` cuts chunks of about ``chunk_bytes``."""
    with capture(udp_filter(), packet_reader=reader) as prog:
        ring = prog.packet_ring
        assert ring is not None and ring.reader == reader
        sent = payloads([1000], 40, tag=2)
        pair.send(4, PORT, sent)
        assert len(pair.received(4, PORT, len(sent))) == len(sent)
        got: list[Packet] = []
        for _ in range(10):
            taken = ring.take(max_packets=3)
            assert len(taken) == 3
            got += taken
        record = 8 + PACKET_META.size + 14 + 20 + 8 + 1000  # 1074: a multiple of 8 + 2
        ring.chunk_bytes = 5 * record
        captured = ring.take_captured()
        assert [count for _, count in captured.chunks] == [5] * 10
        assert {len(data) for data, _ in captured.chunks} == {5 * (record + 6)}
        for index in range(len(captured.chunks)):
            got += unpack_packets(pack_chunk(index, captured, index))[1]
        assert ring.take() == [] and prog.counters()["packets_lost"] == 0
        check_frames(got, sent, 4, 65535, (0, time.time_ns()))


def test_without_packet_capture_nothing_changes(bcc_ready: None) -> None:
    prog = FlowProgram(max_flows=64).load()
    try:
        assert prog.packet_ring is None
        assert prog.counters()["packets_lost"] == 0
        with pytest.raises(KeyError):
            prog.bpf[b"packets"]
        with pytest.raises(RuntimeError):
            prog.take_packets()
    finally:
        prog.close()


def test_bad_settings_are_refused() -> None:
    for kwargs in ({"snaplen": 0}, {"snaplen": 65536}, {"packet_ring_pages": 3},
                   {"packet_ring_pages": 0}, {"packet_clock": "utc"}):
        with pytest.raises(ValueError):
            FlowProgram(packets=True, **kwargs)  # type: ignore[arg-type]


# -- cost --------------------------------------------------------------------------------

def _frame(size: int, sport: int = 40000) -> bytes:
    """An IPv4/UDP Ethernet frame of ``size`` bytes."""
    payload = bytes(size - 42)
    udp = struct.pack("!HHHH", sport, PORT, 8 + len(payload), 0) + payload
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0x4000, 64, 17, 0,
                      socket.inet_aton(A4), socket.inet_aton(B4))
    return bytes.fromhex("0200c6120002" "0200c6120001" "0800") + iph + udp


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("size", [64, 1500])
def test_user_space_rate(bcc_ready: None, size: int, reader: str,
                         capsys: pytest.CaptureFixture[str]) -> None:
    """Packets per second PacketRing takes and hands over as the agent sends them (one
    read for the whole ring here), with each reader, and the kernel's cost per packet
    with and without the copy (BPF_PROG_TEST_RUN)."""
    count = 200_000 if size == 64 else 40_000
    pages = 1 << ((count * (size + 32 + 8)) // 4096).bit_length()  # room for all of them
    frame = _frame(size)
    plain = FlowProgram(max_flows=64).load()
    try:
        _, plain_ns = prog_test_run(plain.fds["nobs_tc_ingress"], frame, repeat=count)
        plain_insns = verified_insns(plain.fds["nobs_tc_ingress"])
    finally:
        plain.close()
    prog = FlowProgram(max_flows=64, packets=True, packet_ring_pages=pages,
                       packet_reader=reader).load()
    try:
        ring = prog.packet_ring
        assert ring is not None
        ring.ifname = ifname
        ring.chunk_bytes = 1 << 30
        _, copy_ns = prog_test_run(prog.fds["nobs_tc_ingress"], frame, repeat=count)
        insns = {name: verified_insns(fd) for name, fd in prog.fds.items()}
        started = time.perf_counter()
        captured = ring.take_captured()
        done = time.perf_counter()
        assert prog.counters()["packets_lost"] == 0
        ((data, taken),) = captured.chunks
        record = (32 + size + 7) // 8 * 8
        assert taken == count and len(data) == count * record
        assert data[-record + 32:][:size] == frame
        (index,) = captured.names  # one interface: every record's, named once
        assert {int.from_bytes(data[at + 16:at + 20], "little")
                for at in range(0, len(data), record)} == {index}
        rate = count / (done - started)
        with capsys.disabled():
            print(f"\n{reader} reader, {size}-byte frames: {rate:,.0f} packets/s in user "
                  f"space ({(done - started) / count * 1e9:.0f} ns per packet); kernel "
                  f"{plain_ns} ns per packet without the copy, {copy_ns} ns with it; "
                  f"verified insns {plain_insns} without, {insns} with")
        assert rate > 50_000
    finally:
        prog.close()


def test_ring_reads_do_not_take_overflow_records(bcc_ready: None) -> None:
    """The packets ring has its own manager: taking packets leaves overflow records alone
    and the other way round (a one-entry flow map sends the second flow to overflow)."""
    prog = FlowProgram(max_flows=1, packets=True).load()
    try:
        assert prog.packet_ring is not None
        for port in (1, 2, 3):
            frame = _frame(100)[:36] + struct.pack("!H", port) + _frame(100)[38:]
            prog_test_run(prog.fds["nobs_tc_ingress"], frame)
        taken = prog.take_packets()
        assert len(taken) == 3
        # No name source: the interface of BPF_PROG_TEST_RUN (lo, index 1) gets a made-up one.
        assert {(p.ifindex, p.ifname, p.direction) for p in taken} == {(1, "if1", INGRESS)}
        assert len(prog.take_overflow()) == 2
        prog_test_run(prog.fds["nobs_tc_ingress"], _frame(80))
        assert len(prog.take_overflow()) == 1  # the map is still full
        assert len(prog.take_packets()) == 1
    finally:
        prog.close()
