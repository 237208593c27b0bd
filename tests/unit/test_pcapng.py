"""pcapng files: written by the aggregator's writer, read by the real tshark and capinfos
and by the TUI's reader (``netobserv_tui.store.pcap``).  No mocks."""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import NamedTuple

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netobserv_tui.aggregator.pcapng import PcapngError, PcapngWriter, with_secrets_first
from netobserv_tui.store.base import StoreError
from netobserv_tui.store.pcap import (
    Conversation,
    PacketFile,
    PacketSummary,
    decode_layers,
    hexdump,
)

REPO = Path(__file__).resolve().parents[2]
TSHARK = shutil.which("tshark")
CAPINFOS = shutil.which("capinfos")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed "
                                                         "(scripts/bootstrap installs it)")
APP = "netobserv-tui test"
#: What tshark and capinfos print on stderr whenever they run as root, whatever the options
#: (print_current_user() in Wireshark: not a log message, so -Q and --log-level keep it).
ROOT_BANNER = re.compile(r'Running as user "[^"\n]*" and group "[^"\n]*"\. '
                         r"This could be dangerous\.\n")

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
V4_A = bytes([10, 1, 0, 5])
V4_B = bytes([10, 96, 0, 10])
V4_C = bytes([10, 1, 0, 9])
V4_GW = bytes([10, 1, 0, 1])
V6_A = bytes.fromhex("fd000000000000000000000000000001")
V6_B = bytes.fromhex("fd000000000000000000000000000002")
DNS_QUERY = (bytes.fromhex("123401000001000000000000")
             + b"\x03www\x07example\x03com\x00" + bytes.fromhex("00010001"))


def ether(kind: int, payload: dpkt.Packet, src: bytes = MAC_A, dst: bytes = MAC_B) -> bytes:
    return bytes(dpkt.ethernet.Ethernet(src=src, dst=dst, type=kind, data=payload))


def udp4() -> bytes:
    udp = dpkt.udp.UDP(sport=40000, dport=53, ulen=8 + len(DNS_QUERY), data=DNS_QUERY)
    return ether(0x0800, dpkt.ip.IP(src=V4_A, dst=V4_B, p=17, ttl=64, id=0x1234, df=1,
                                    data=udp))


def tcp6_syn() -> bytes:
    tcp = dpkt.tcp.TCP(sport=51234, dport=443, seq=1000, flags=dpkt.tcp.TH_SYN, win=64240)
    return ether(0x86DD, dpkt.ip6.IP6(src=V6_A, dst=V6_B, nxt=6, hlim=64, plen=len(tcp),
                                      data=tcp))


def icmp4() -> bytes:
    echo = dpkt.icmp.ICMP.Echo(id=7, seq=1, data=b"ping" * 8)
    icmp = dpkt.icmp.ICMP(type=8, code=0, data=echo)
    return ether(0x0800, dpkt.ip.IP(src=V4_A, dst=V4_C, p=1, ttl=63, data=icmp))


def tcp4_full() -> bytes:
    """A 1514-byte frame: 1460 bytes of TCP payload (its first 54 bytes are captured)."""
    tcp = dpkt.tcp.TCP(sport=8080, dport=40001, seq=5000, ack=7000,
                       flags=dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK, win=502, data=b"z" * 1460)
    return ether(0x0800, dpkt.ip.IP(src=V4_C, dst=V4_A, p=6, ttl=64, data=tcp), MAC_B, MAC_A)


def icmp6_echo() -> bytes:
    echo = dpkt.icmp6.ICMP6.Echo(id=9, seq=2, data=b"hi")
    icmp = dpkt.icmp6.ICMP6(type=128, code=0, data=echo)
    return ether(0x86DD, dpkt.ip6.IP6(src=V6_B, dst=V6_A, nxt=58, hlim=255, plen=len(icmp),
                                      data=icmp))


def arp_request() -> bytes:
    arp = dpkt.arp.ARP(op=dpkt.arp.ARP_OP_REQUEST, sha=MAC_A, spa=V4_A, tha=b"\x00" * 6,
                       tpa=V4_GW)
    return ether(0x0806, arp, MAC_A, b"\xff" * 6)


def vlan_udp4() -> bytes:
    inner = udp4()
    return inner[:12] + bytes.fromhex("8100 a064") + inner[12:]  # priority 5, VLAN 100


class Sample(NamedTuple):
    ts_ns: int
    node: str
    ifname: str
    frame: bytes
    orig_len: int
    direction: int | None
    comment: str | None


TRUNCATED = tcp4_full()[:54]
SAMPLES = [
    Sample(1_700_000_000_123_456_789, "node-a", "eth0", udp4(), 75, 0,
           "Host=node-a; Interface=eth0; Direction=ingress; SrcK8S_Name=café-7d9f"),
    Sample(1_700_000_000_123_456_790, "node-b", "veth1a2b", tcp6_syn(), 74, 1,
           "réseau → 東京 ✓"),
    Sample(1_700_000_001_000_000_001, "node-a", "eth0", icmp4(), 74, 0, None),
    Sample(1_700_000_002_999_999_999, "node-b", "veth1a2b", TRUNCATED, 1514, 1, "tronqué"),
    Sample(1_700_000_003_000_000_000, "node-a", "eth0", arp_request(), 42, None, None),
    Sample(1_700_000_004_000_000_007, "node-a", "eth0", udp4(), 75, 0, "second query"),
]


def write_samples(writer: PcapngWriter, samples: list[Sample]) -> None:
    for s in samples:
        iface = writer.interface(s.node, s.ifname)
        writer.packet(iface, s.ts_ns, s.frame, s.orig_len, direction=s.direction,
                      comment=s.comment)


def write_file(path: Path, samples: list[Sample] = SAMPLES) -> PcapngWriter:
    writer = PcapngWriter.create(path, application=APP)
    write_samples(writer, samples)
    writer.close()
    return writer


def tool_env(home: Path) -> dict[str, str]:
    """A clean environment for the Wireshark tools: no user preferences, UTF-8 output."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"), "LC_ALL": "C.UTF-8"}


def without_root_banner(stderr: str) -> str:
    return ROOT_BANNER.sub("", stderr, count=1) if os.geteuid() == 0 else stderr


def run_tool(argv: list[str], home: Path, stdin: bytes | None = None) -> str:
    """A Wireshark tool's stdout; fails on any stderr output but the root banner."""
    done = subprocess.run(argv, input=stdin, capture_output=True, env=tool_env(home),
                          timeout=30, check=False)
    assert (done.returncode, without_root_banner(done.stderr.decode())) == (0, ""), argv
    return done.stdout.decode()


FIELDS = ["frame.time_epoch", "frame.len", "frame.cap_len", "frame.interface_name",
          "frame.interface_description", "frame.comment", "frame.packet_flags_direction"]


def tshark_rows(source: str, home: Path, stdin: bytes | None = None) -> list[list[str]]:
    assert TSHARK is not None
    fields = [arg for name in FIELDS for arg in ("-e", name)]
    out = run_tool([TSHARK, "-n", "-r", source, "-T", "fields", *fields], home, stdin)
    return [line.split("\t") for line in out.splitlines()]


def expected_rows(samples: list[Sample]) -> list[list[str]]:
    return [[f"{s.ts_ns // 10**9}.{s.ts_ns % 10**9:09d}", str(s.orig_len), str(len(s.frame)),
             s.ifname, f"{s.ifname} on {s.node}", s.comment or "",
             "" if s.direction is None else f"0x{s.direction + 1:08x}"]
            for s in samples]


def block_types(data: bytes) -> list[int]:
    kinds, off = [], 0
    while off < len(data):
        kind, total = struct.unpack_from("<II", data, off)
        kinds.append(kind)
        off += total
    assert off == len(data)
    return kinds


def capinfos(path: Path, home: Path) -> dict[str, str]:
    """capinfos' ``Key: value`` lines, and ``Key #n`` for the ``Key = value`` lines of each
    interface (n from 0)."""
    assert CAPINFOS is not None
    info: dict[str, str] = {}
    for line in run_tool([CAPINFOS, str(path)], home).splitlines():
        key, equals, value = line.partition(" = ")
        if equals:
            n = sum(k.startswith(f"{key.strip()} #") for k in info)
            info[f"{key.strip()} #{n}"] = value.strip()
        else:
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
    return info


SHB, IDB, EPB, DSB = 0x0A0D0D0A, 1, 6, 0x0A
KEYLOG = (b"CLIENT_RANDOM " + b"a1" * 32 + b" " + b"b2" * 48 + b"\n"
          + b"CLIENT_HANDSHAKE_TRAFFIC_SECRET " + b"c3" * 32 + b" " + b"d4" * 32 + b"\n")


# ------------------------------------------------------------------------ the writer


def test_frames_are_the_sizes_the_samples_say() -> None:
    assert [len(s.frame) for s in SAMPLES] == [75, 74, 74, 54, 42, 75]
    assert len(tcp4_full()) == 1514


@needs_tshark
def test_tshark_reads_every_field(tmp_path: Path) -> None:
    path = tmp_path / "output" / "pcap" / "2026_01_02T03_04_05Z.pcapng"
    writer = write_file(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    assert (writer.packets, writer.bytes_written) == (6, path.stat().st_size)
    assert block_types(path.read_bytes()) == [SHB, IDB, EPB, IDB, EPB, EPB, EPB, EPB, EPB]
    rows = tshark_rows(str(path), tmp_path)
    assert len(rows) == 6
    assert rows == expected_rows(SAMPLES)
    assert rows[0][0] == "1700000000.123456789"
    assert rows[3][1:3] == ["1514", "54"]


@pytest.mark.skipif(CAPINFOS is None, reason="capinfos is not installed")
def test_capinfos_sees_the_section_and_interfaces(tmp_path: Path) -> None:
    path = tmp_path / "c.pcapng"
    write_file(path)
    info = capinfos(path, tmp_path)
    assert info["Number of packets"] == "6"
    assert info["Capture application"] == APP
    assert info["Number of interfaces in file"] == "2"
    assert info["File timestamp precision"] == "nanoseconds (9)"
    assert [info["Name #0"], info["Description #0"], info["Time precision #0"]] == [
        "eth0", "eth0 on node-a", "nanoseconds (9)"]
    assert [info["Name #1"], info["Description #1"], info["Capture length #1"]] == [
        "veth1a2b", "veth1a2b on node-b", "65535"]
    assert [info["Number of packets #0"], info["Number of packets #1"]] == ["4", "2"]
    assert info["Strict time order"] == "True"


def test_create_refuses_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "x.pcapng"
    write_file(path, [])
    size = path.stat().st_size
    with pytest.raises(FileExistsError):
        PcapngWriter.create(path, application=APP)
    assert path.stat().st_size == size


def test_packet_refuses_what_would_make_a_bad_file() -> None:
    writer = PcapngWriter(io.BytesIO(), application=APP)
    with pytest.raises(ValueError, match="interface id 0 was not returned"):
        writer.packet(0, 1, b"x" * 20, 20)
    iface = writer.interface("n", "eth0")
    assert writer.interface("n", "eth0") == iface == 0
    assert writer.interface("m", "eth0") == 1
    with pytest.raises(ValueError, match="21 bytes captured of a 20-byte frame"):
        writer.packet(iface, 1, b"x" * 21, 20)
    assert writer.packets == 0


def test_epb_layout_by_hand() -> None:
    out = io.BytesIO()
    writer = PcapngWriter(out, application=APP)
    iface = writer.interface("n", "eth0")
    start = len(out.getvalue())
    writer.packet(iface, 0x1_2345_6789, b"abcde", 60, direction=1, comment="é")
    block = out.getvalue()[start:]
    assert len(block) == writer.bytes_written - start == 60
    assert struct.unpack_from("<7I", block) == (6, 60, 0, 1, 0x2345_6789, 5, 60)
    assert block[28:36] == b"abcde\x00\x00\x00"
    assert block[36:44] == struct.pack("<HH", 1, 2) + "é".encode() + b"\x00\x00"
    assert block[44:52] == struct.pack("<HHI", 2, 4, 2)
    assert block[52:] == struct.pack("<HHI", 0, 0, 60)
    start = len(out.getvalue())
    writer.packet(iface, 5, b"abcd", 4)  # no options: no opt_endofopt either
    assert out.getvalue()[start:] == (struct.pack("<7I", 6, 36, 0, 0, 5, 4, 4) + b"abcd"
                                      + struct.pack("<I", 36))


@needs_tshark
def test_tshark_follows_a_stream_with_interfaces_mid_stream(tmp_path: Path) -> None:
    """`tshark -l -r -` on a pipe prints each packet as its block arrives, IDBs included."""
    assert TSHARK is not None
    out = io.BytesIO()
    writer = PcapngWriter(out, application=APP)
    fields = [arg for name in FIELDS for arg in ("-e", name)]
    proc = subprocess.Popen([TSHARK, "-l", "-n", "-r", "-", "-T", "fields", *fields],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=tool_env(tmp_path))
    killer = threading.Timer(20, proc.kill)
    killer.start()
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        sent = 0
        for part in (SAMPLES[:1], SAMPLES[1:2], SAMPLES[2:4], SAMPLES[4:]):
            write_samples(writer, part)
            writer.flush()
            data = out.getvalue()
            proc.stdin.write(data[sent:])
            proc.stdin.flush()
            sent = len(data)
            # Each packet is printed before the next bytes are sent: tshark follows the pipe.
            lines = [proc.stdout.readline().decode().rstrip("\n").split("\t") for _ in part]
            assert lines == expected_rows(part)
        proc.stdin.close()
        assert proc.stdout.read() == b""
        stderr = proc.stderr.read().decode()
        assert proc.wait() == 0
    finally:
        killer.cancel()
        proc.kill()
        proc.wait()
    assert without_root_banner(stderr) == ""
    assert block_types(out.getvalue()) == [SHB, IDB, EPB, IDB, EPB, EPB, EPB, EPB, EPB]


def parse_dsb(block: bytes) -> tuple[int, bytes]:
    kind, total, secrets_type, length = struct.unpack_from("<IIII", block)
    assert (kind, total % 4) == (DSB, 0)
    assert struct.unpack_from("<I", block, total - 4)[0] == total
    assert block[16 + length:total - 4] == b"\x00" * (total - 20 - length)
    return secrets_type, block[16:16 + length]


def blocks(data: bytes) -> list[bytes]:
    found, off = [], 0
    while off < len(data):
        total = struct.unpack_from("<I", data, off + 4)[0]
        found.append(data[off:off + total])
        off += total
    return found


@needs_tshark
def test_secrets_block_in_the_stream(tmp_path: Path) -> None:
    path = tmp_path / "s.pcapng"
    writer = PcapngWriter.create(path, application=APP)
    write_samples(writer, SAMPLES[:2])
    writer.secrets(KEYLOG)
    write_samples(writer, SAMPLES[2:])
    writer.close()

    data = path.read_bytes()
    assert block_types(data) == [SHB, IDB, EPB, IDB, EPB, DSB, EPB, EPB, EPB, EPB]
    dsb = blocks(data)[5]
    assert len(KEYLOG) == 338 and len(dsb) == 20 + 340
    assert parse_dsb(dsb) == (0x544C534B, KEYLOG)
    assert tshark_rows(str(path), tmp_path) == expected_rows(SAMPLES)
    if CAPINFOS:
        assert capinfos(path, tmp_path)["Number of decryption secrets in file"] == "1"


@needs_tshark
def test_with_secrets_first(tmp_path: Path) -> None:
    path = tmp_path / "w.pcapng"
    writer = PcapngWriter.create(path, application=APP)
    write_samples(writer, SAMPLES[:3])
    writer.secrets(b"CLIENT_RANDOM old\n")
    write_samples(writer, SAMPLES[3:])
    writer.close()
    before = blocks(path.read_bytes())

    with_secrets_first(path, KEYLOG)

    after = blocks(path.read_bytes())
    assert block_types(b"".join(after)) == [SHB, DSB, IDB, EPB, IDB, EPB, EPB, DSB, EPB, EPB,
                                            EPB]
    assert after[0] == before[0]
    assert parse_dsb(after[1]) == (0x544C534B, KEYLOG)
    assert after[2:] == before[1:]  # the old DSB stays where it was
    assert parse_dsb(after[7]) == (0x544C534B, b"CLIENT_RANDOM old\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pcapng"]  # no temporary left
    assert tshark_rows(str(path), tmp_path) == expected_rows(SAMPLES)
    if CAPINFOS:
        assert capinfos(path, tmp_path)["Number of decryption secrets in file"] == "2"
    assert PacketFile(path).secrets_blocks == 2


@pytest.mark.parametrize(("content", "message"), [
    (b"", "is empty, not a pcapng file"),
    (b"GET / HTTP/1.1\r\n" + b"x" * 40, "is not a pcapng file"),
    (struct.pack(">IIIHHq", SHB, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack(">I", 28),
     "is a big-endian pcapng file"),
    (b"cut", "is not a pcapng file"),
])
def test_with_secrets_first_refuses_other_files(tmp_path: Path, content: bytes,
                                                message: str) -> None:
    path = tmp_path / "bad.pcapng"
    path.write_bytes(content)
    with pytest.raises(PcapngError, match=message):
        with_secrets_first(path, KEYLOG)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pcapng"]


def test_with_secrets_first_refuses_a_cut_or_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.pcapng"
    write_file(path)
    whole = path.read_bytes()
    path.write_bytes(whole[:-10])
    with pytest.raises(PcapngError, match=r"ends in a partial block at byte \d+ \(was the "):
        with_secrets_first(path, KEYLOG)
    damaged = bytearray(whole)
    damaged[len(blocks(whole)[0]) + 4] = 13  # the first IDB's length
    path.write_bytes(damaged)
    with pytest.raises(PcapngError, match="damaged or unexpected block"):
        with_secrets_first(path, KEYLOG)
    path.write_bytes(whole + whole)  # two sections
    with pytest.raises(PcapngError, match=f"unexpected block .type 0xa0d0d0a.*at byte "
                                          f"{len(whole)}"):
        with_secrets_first(path, KEYLOG)


# ------------------------------------------------------------------------ the reader


def expected_summaries() -> list[PacketSummary]:
    names = [("node-a", "eth0")] * 6
    names[1] = names[3] = ("node-b", "veth1a2b")
    rows = [
        ("10.1.0.5", "10.96.0.10", "UDP", 40000, 53, "len=33"),
        ("fd00::1", "fd00::2", "TCP", 51234, 443, "SYN seq=1000 win=64240 len=0"),
        ("10.1.0.5", "10.1.0.9", "ICMP", None, None, "echo request"),
        ("10.1.0.9", "10.1.0.5", "TCP", 8080, 40001, "PSH ACK seq=5000 ack=7000 win=502 "
                                                     "len=1460"),
        ("10.1.0.5", "10.1.0.1", "ARP", None, None, "who-has 10.1.0.1 tell 10.1.0.5"),
        ("10.1.0.5", "10.96.0.10", "UDP", 40000, 53, "len=33"),
    ]
    directions = ["ingress", "egress", "ingress", "egress", "", "ingress"]
    return [PacketSummary(i, s.ts_ns, names[i][1], names[i][0], directions[i], s.orig_len,
                          len(s.frame), *rows[i], s.comment or "")
            for i, s in enumerate(SAMPLES)]


def test_reader_reads_back_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "r.pcapng"
    write_file(path)
    capture = PacketFile(path)
    assert capture.packets == expected_summaries()
    assert capture.interfaces == [("eth0", "eth0 on node-a"), ("veth1a2b", "veth1a2b on node-b")]
    assert (capture.secrets_blocks, capture.partial) == (0, 0)
    assert [capture.raw(i) for i in range(6)] == [s.frame for s in SAMPLES]
    assert capture.conversations() == [
        Conversation("TCP", "10.1.0.9", 8080, "10.1.0.5", 40001, 1, 1514,
                     1_700_000_002_999_999_999, 1_700_000_002_999_999_999),
        Conversation("UDP", "10.1.0.5", 40000, "10.96.0.10", 53, 2, 150,
                     1_700_000_000_123_456_789, 1_700_000_004_000_000_007),
        Conversation("TCP", "fd00::1", 51234, "fd00::2", 443, 1, 74,
                     1_700_000_000_123_456_790, 1_700_000_000_123_456_790),
        Conversation("ICMP", "10.1.0.5", None, "10.1.0.9", None, 1, 74,
                     1_700_000_001_000_000_001, 1_700_000_001_000_000_001),
        Conversation("ARP", "10.1.0.5", None, "10.1.0.1", None, 1, 42,
                     1_700_000_003_000_000_000, 1_700_000_003_000_000_000),
    ]
    assert capture.refresh() == 0
    capture.close()
    capture.close()


def test_reader_follows_a_growing_file(tmp_path: Path) -> None:
    path = tmp_path / "g.pcapng"
    writer = PcapngWriter.create(path, application=APP)
    capture = PacketFile(path)  # the SHB alone: flushed at once
    assert (capture.packets, capture.interfaces) == ([], [])
    write_samples(writer, SAMPLES[:1])
    writer.flush()
    assert capture.refresh() == 1
    assert capture.interfaces == [("eth0", "eth0 on node-a")]
    write_samples(writer, SAMPLES[1:4])
    writer.secrets(KEYLOG)
    writer.flush()
    assert capture.refresh() == 3
    assert (len(capture.interfaces), capture.secrets_blocks) == (2, 1)
    write_samples(writer, SAMPLES[4:])
    writer.close()
    assert capture.refresh() == 2
    assert capture.refresh() == 0
    assert capture.packets == expected_summaries()
    assert capture.raw(5) == SAMPLES[5].frame


def test_reader_waits_for_a_partial_last_block(tmp_path: Path) -> None:
    whole_path = tmp_path / "whole.pcapng"
    write_file(whole_path)
    whole = whole_path.read_bytes()
    last = len(blocks(whole)[-1])
    path = tmp_path / "growing.pcapng"
    path.write_bytes(whole[:-10])
    capture = PacketFile(path)
    assert (len(capture.packets), capture.partial) == (5, last - 10)
    with path.open("ab") as f:
        f.write(whole[-10:-4])
    assert (capture.refresh(), capture.partial) == (0, last - 4)
    with path.open("ab") as f:
        f.write(whole[-4:])
    assert (capture.refresh(), capture.partial) == (1, 0)
    assert capture.packets == expected_summaries()
    path.write_bytes(whole[:len(blocks(whole)[0]) + 6])  # a block head cut short
    assert (PacketFile(path).packets, PacketFile(path).partial) == ([], 6)


def test_reader_microsecond_interfaces(tmp_path: Path) -> None:
    """An IDB without if_tsresol counts microseconds (dpkt's Writer writes such files)."""
    path = tmp_path / "us.pcapng"
    with path.open("wb") as f:
        writer = dpkt.pcapng.Writer(f, snaplen=1500)
        writer.writepkt(udp4(), ts=1_700_000_000.25)
    capture = PacketFile(path)
    assert [(p.ts_ns, p.interface, p.node, p.direction, p.proto) for p in capture.packets] == [
        (1_700_000_000_250_000_000, "if0", "", "", "UDP")]


def test_reader_damaged_block_mid_file(tmp_path: Path) -> None:
    path = tmp_path / "d.pcapng"
    write_file(path)
    data = bytearray(path.read_bytes())
    at = sum(len(b) for b in blocks(bytes(data))[:4])
    data[at + 4:at + 8] = struct.pack("<I", 30)
    path.write_bytes(data)
    with pytest.raises(StoreError, match=f"is damaged at byte {at}: a block of type 0x6 "
                                         "claims 30 bytes; Wireshark may read"):
        PacketFile(path)
    data[at + 4:at + 8] = struct.pack("<I", 1 << 30)  # a length past the end: waits for it
    path.write_bytes(data)
    assert len(PacketFile(path).packets) == 1


@pytest.mark.parametrize(("content", "fragments"), [
    (b"", ("is empty, not a pcapng file",)),
    (bytes.fromhex("d4c3b2a1") + b"\x00" * 20, ("classic pcap file", "editcap -F pcapng")),
    (b"SQLite format 3\x00" + b"\x00" * 80, ("flow capture (SQLite or JSON)",
                                           "<output>/pcap/<time>.pcapng")),
    (b'[\n{"Bytes": 1}', ("flow capture",)),
    (b"\x00" * 64, ("is not a pcapng file (it does not start with a section header",)),
    (struct.pack(">IIIHHq", SHB, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack(">I", 28),
     ("big-endian pcapng", "editcap -F pcapng")),
    (struct.pack("<IIIHHq", SHB, 28, 0x12345678, 1, 0, -1) + struct.pack("<I", 28),
     ("no byte-order magic",)),
])
def test_reader_refuses_other_files(tmp_path: Path, content: bytes,
                                    fragments: tuple[str, ...]) -> None:
    path = tmp_path / "f.pcapng"
    path.write_bytes(content)
    with pytest.raises(StoreError) as err:
        PacketFile(path)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_reader_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"nope.pcapng: no such file: check the path; "
                                         r"packet captures are written as"):
        PacketFile(tmp_path / "nope.pcapng")
    with pytest.raises(StoreError, match="is a directory: give a .pcapng file"):
        PacketFile(tmp_path)


def test_reader_permission_denied() -> None:
    """A root-only capture file opened by another user: the message says to use sudo."""
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        path = Path(folder) / "root-only.pcapng"
        write_file(path)
        if os.geteuid() != 0:
            path.chmod(0)
            with pytest.raises(StoreError) as err:
                PacketFile(path)
            message = str(err.value)
        else:  # root reads anything: open it as nobody
            code = ("import sys; from pathlib import Path\n"
                    "from netobserv_tui.store.pcap import PacketFile, StoreError\n"
                    "try:\n    PacketFile(Path(sys.argv[1]))\n"
                    "except StoreError as exc:\n    print(exc)\n")
            done = subprocess.run([sys.executable, "-c", code, str(path)], user=65534,
                                  group=65534, extra_groups=[], cwd=REPO,
                                  env={"PYTHONPATH": str(REPO)}, capture_output=True,
                                  text=True, timeout=30, check=True)
            message = done.stdout.strip()
    assert message == (f"{path}: permission denied (capture files are readable by root "
                       f"only): run with sudo, or make it readable (sudo chmod a+r {path})")


def test_reader_summarizes_odd_frames(tmp_path: Path) -> None:
    """Frames that are cut, garbage, fragments or not IP are rows too, never errors."""
    ipv4 = udp4()
    fragment = bytearray(ipv4)
    fragment[20:22] = struct.pack("!H", 185)  # offset 1480 bytes, no flags
    frames = [b"", b"\xff" * 5, ipv4[:20], ipv4[:38], bytes(fragment), vlan_udp4(),
              MAC_B + MAC_A + b"\x88\xcc\x02\x07\x04", tcp6_syn()[:60],
              ipv4[:23] + b"\x63" + ipv4[24:], icmp6_echo()]
    path = tmp_path / "odd.pcapng"
    write_file(path, [Sample(i, "n", "eth0", f, max(len(f), 60), None, None)
                      for i, f in enumerate(frames)])
    rows = [(p.src, p.dst, p.proto, p.sport, p.dport, p.info) for p in PacketFile(path).packets]
    mac_a, mac_b = "02:00:00:00:00:01", "02:00:00:00:00:02"
    assert rows == [
        ("", "", "Ethernet", None, None, "truncated Ethernet header"),
        ("", "", "Ethernet", None, None, "truncated Ethernet header"),
        (mac_a, mac_b, "IPv4", None, None, "truncated or invalid IPv4 header"),
        ("10.1.0.5", "10.96.0.10", "UDP", None, None, "truncated UDP header"),
        ("10.1.0.5", "10.96.0.10", "UDP", None, None, "fragment offset=1480"),
        ("10.1.0.5", "10.96.0.10", "UDP", 40000, 53, "len=33"),
        (mac_a, mac_b, "LLDP", None, None, ""),
        ("fd00::1", "fd00::2", "TCP", None, None, "truncated TCP header"),
        ("10.1.0.5", "10.96.0.10", "99", None, None, "len=41"),
        ("fd00::2", "fd00::1", "ICMPv6", None, None, "echo request"),
    ]


# ------------------------------------------------------------------ one packet in detail


def test_decode_udp4() -> None:
    assert decode_layers(udp4()) == [
        ("Ethernet", [("Source", "02:00:00:00:00:01"), ("Destination", "02:00:00:00:00:02"),
                      ("Type", "0x0800 (IPv4)")]),
        ("IPv4", [("Source", "10.1.0.5"), ("Destination", "10.96.0.10"), ("TTL", "64"),
                  ("Protocol", "17 (UDP)"), ("Total length", "61"), ("Header length", "20"),
                  ("ID", "0x1234 (4660)"), ("Flags", "DF"), ("Fragment offset", "0"),
                  ("Checksum", f"0x{dpkt.ethernet.Ethernet(udp4()).data.sum:04x}")]),
        ("UDP", [("Source port", "40000"), ("Destination port", "53"), ("Length", "41"),
                 ("Checksum", f"0x{dpkt.ethernet.Ethernet(udp4()).data.data.sum:04x}")]),
        ("Payload", [("Length", "33 bytes")]),
    ]


def fields(layers: list[tuple[str, list[tuple[str, str]]]]) -> dict[str, dict[str, str]]:
    return {name: dict(values) for name, values in layers}


def test_decode_tcp6_syn() -> None:
    layers = decode_layers(tcp6_syn())
    assert [name for name, _ in layers] == ["Ethernet", "IPv6", "TCP", "Payload"]
    got = fields(layers)
    assert got["Ethernet"]["Type"] == "0x86dd (IPv6)"
    assert got["IPv6"] == {"Source": "fd00::1", "Destination": "fd00::2", "Hop limit": "64",
                           "Next header": "6 (TCP)", "Protocol": "6 (TCP)",
                           "Payload length": "20", "Traffic class": "0x00",
                           "Flow label": "0x00000"}
    assert {k: got["TCP"][k] for k in ("Source port", "Destination port", "Sequence",
                                       "Acknowledgment", "Flags", "Window",
                                       "Header length")} == {
        "Source port": "51234", "Destination port": "443", "Sequence": "1000",
        "Acknowledgment": "0", "Flags": "SYN", "Window": "64240", "Header length": "20"}
    assert got["Payload"] == {"Length": "0 bytes"}


def test_decode_icmp_icmp6_arp_vlan_and_truncated_tcp() -> None:
    icmp = fields(decode_layers(icmp4()))
    assert list(icmp) == ["Ethernet", "IPv4", "ICMP", "Payload"]
    assert {k: icmp["ICMP"][k] for k in ("Type", "Code", "Identifier", "Sequence")} == {
        "Type": "8 (echo request)", "Code": "0", "Identifier": "7", "Sequence": "1"}
    assert icmp["Payload"] == {"Length": "32 bytes"}

    icmp6 = fields(decode_layers(icmp6_echo()))
    assert list(icmp6) == ["Ethernet", "IPv6", "ICMPv6", "Payload"]
    assert {k: icmp6["ICMPv6"][k] for k in ("Type", "Code", "Identifier", "Sequence")} == {
        "Type": "128 (echo request)", "Code": "0", "Identifier": "9", "Sequence": "2"}
    assert icmp6["Payload"] == {"Length": "2 bytes"}

    arp = fields(decode_layers(arp_request()))
    assert list(arp) == ["Ethernet", "ARP", "Payload"]
    assert arp["ARP"] == {"Operation": "1 (request)", "Sender MAC": "02:00:00:00:00:01",
                          "Sender IP": "10.1.0.5", "Target MAC": "00:00:00:00:00:00",
                          "Target IP": "10.1.0.1"}
    assert arp["Payload"] == {"Length": "0 bytes"}

    vlan = decode_layers(vlan_udp4())
    assert [name for name, _ in vlan] == ["Ethernet", "802.1Q", "IPv4", "UDP", "Payload"]
    assert vlan[1] == ("802.1Q", [("VLAN", "100"), ("Priority", "5"),
                                  ("Type", "0x0800 (IPv4)")])

    cut = fields(decode_layers(TRUNCATED))
    assert list(cut) == ["Ethernet", "IPv4", "TCP", "Payload"]
    assert (cut["IPv4"]["Total length"], cut["TCP"]["Flags"]) == ("1500", "PSH ACK")
    assert cut["Payload"] == {"Length": "0 bytes"}


def test_decode_malformed() -> None:
    assert decode_layers(b"") == [("Malformed", [("Reason",
                                                  "Ethernet: got 0, 14 needed at least")])]
    layers = decode_layers(udp4()[:30])
    assert [name for name, _ in layers] == ["Ethernet", "Malformed"]
    assert layers[-1] == ("Malformed", [("Reason", "IPv4: got 16, 20 needed at least")])
    layers = decode_layers(udp4()[:38])
    assert [name for name, _ in layers] == ["Ethernet", "IPv4", "Malformed"]
    assert layers[-1] == ("Malformed", [("Reason", "UDP: got 4, 8 needed at least")])


def test_decode_every_prefix_and_byte_flip() -> None:
    for frame in (udp4(), tcp6_syn(), icmp4(), icmp6_echo(), TRUNCATED, arp_request(),
                  vlan_udp4()):
        for end in range(len(frame) + 1):
            layers = decode_layers(frame[:end])
            assert layers and layers[-1][0] in ("Payload", "Malformed")
        for at in range(len(frame)):
            for value in (0x00, 0xFF, frame[at] ^ 0x40):
                mutated = frame[:at] + bytes([value]) + frame[at + 1:]
                assert decode_layers(mutated)[-1][0] in ("Payload", "Malformed")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_decode_garbage_never_raises(data: bytes) -> None:
    layers = decode_layers(data)
    assert layers and layers[-1][0] in ("Payload", "Malformed")


def test_hexdump() -> None:
    data = b"E\x00\x00T" + bytes(range(0x41, 0x4D)) + b"\x7f\x80 ~"
    assert hexdump(data) == [
        "0000  45 00 00 54 41 42 43 44 45 46 47 48 49 4a 4b 4c  E..TABCDEFGHIJKL",
        "0010  7f 80 20 7e                                      .. ~",
    ]
    assert hexdump(data, width=8) == ["0000  45 00 00 54 41 42 43 44  E..TABCD",
                                      "0008  45 46 47 48 49 4a 4b 4c  EFGHIJKL",
                                      "0010  7f 80 20 7e              .. ~"]
    assert hexdump(b"") == []
    assert hexdump(bytes(0x10001))[-1].startswith("10000  00 ")
