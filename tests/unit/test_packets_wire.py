"""PACKETS batches: the binary codec, and the aggregator taking, refusing and writing them."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from agg_helpers import DNS_COLUMNS, TOKEN, AggregatorFactory, Peer, sample_rows

from netobserv_tui.agent.exporter import Exporter
from netobserv_tui.aggregator.packets import PacketSink
from netobserv_tui.model.packets import (
    BATCH_HEAD,
    NAME_HEAD,
    RECORD_HEAD,
    Captured,
    Packet,
    PacketsError,
    pack_chunk,
    pack_packets,
    read_batch,
    ring_record,
    unpack_packets,
)
from netobserv_tui.model.protocol import FrameType, encode_raw

FRAME = bytes(range(60))


def packet(i: int, size: int = 60, name: str = "eth0") -> Packet:
    data = (FRAME * (size // 60 + 1))[:size]
    return Packet(1_795_633_800_000_000_000 + i, 3, name, i % 2, size + i % 3, data)


def test_a_batch_goes_round_trip_exactly() -> None:
    packets = [packet(i, 60 + 37 * i, name=f"veth{i % 7}") for i in range(40)]
    packets = [p._replace(ifindex=10 + i % 7) for i, p in enumerate(packets)]
    body = pack_packets(77, packets)
    names = sum(5 + len(f"veth{i}") for i in range(7))
    # Each record: the ring's 8-byte header, 24 bytes of meta, the frame, padding to 8.
    assert len(body) == BATCH_HEAD.size + names + sum(
        (32 + len(p.data) + 7) // 8 * 8 for p in packets)
    assert unpack_packets(body) == (77, packets)
    assert unpack_packets(pack_packets(1, [])) == (1, [])


def test_the_agent_forwards_kernel_records_and_the_clock_applies_to_each() -> None:
    """The records go as the kernel's ring holds them (its padding is not looked at); the
    batch's clock turns their timestamps into wall-clock time on the aggregator's side;
    a record the kernel discarded is skipped."""
    raw = [RECORD_HEAD.pack(84, 4096 * i, 1000 + i, 4, 60, 60, i % 2, b"\0\0\0") + FRAME
           + b"\xee\xee\xee\xee" for i in range(3)]
    discarded = RECORD_HEAD.pack(84 | 1 << 30, 0, 7, 99, 60, 60, 7, b"xyz") + FRAME + b"pad!"
    chunks = [(b"".join(raw[:2]), 2), (raw[2] + discarded, 2)]
    body = pack_chunk(9, Captured(chunks, 1_795_633_800_000_000_000, {4: "eth1"}))
    assert body.endswith(b"".join(raw[:2]))
    seq, got = unpack_packets(body)
    assert seq == 9 and [p.ts_ns for p in got] == [1_795_633_800_000_001_000 + i
                                                    for i in range(2)]
    assert {p.ifname for p in got} == {"eth1"} and [p.direction for p in got] == [0, 1]
    assert {p.data for p in got} == {FRAME}
    # The second chunk, as the exporter sends it: its own batch.
    assert [p.ts_ns % 10_000 for p in unpack_packets(
        pack_chunk(10, Captured(chunks, 0, {4: "eth1"}), 1))[1]] == [1002]


def _head(count: int, names: bytes = b"", nnames: int = 1) -> bytes:
    return BATCH_HEAD.pack(1, count, 0, nnames) + (names or NAME_HEAD.pack(3, 4) + b"eth0")


def _record(caplen: int = 4, orig: int = 4, direction: int = 0, ifindex: int = 3,
            reserved: bytes = b"\0\0\0", length: int | None = None) -> bytes:
    """A record's 32-byte head (its frame and padding are the caller's)."""
    length = 24 + caplen if length is None else length
    return RECORD_HEAD.pack(length, 0, 1, ifindex, orig, caplen, direction, reserved)


MALFORMED = [
        (b"\x00\x00\x00\x01", "less than its 18-byte header"),
        (_head(1)[:-2], "name 0 of 1 ends past the end"),
        (_head(1, nnames=2), "name 1 of 2 starts past the end"),
        (_head(0, NAME_HEAD.pack(3, 0)), "a name of 0 bytes"),
        (_head(0, NAME_HEAD.pack(3, 16) + b"x" * 16), "a name of 16 bytes"),
        (_head(0, NAME_HEAD.pack(3, 2) + b"\xff\xfe"), "not UTF-8"),
        (_head(0, (NAME_HEAD.pack(3, 1) + b"a") * 2, 2), "interface 3 is named twice"),
        (_head(2) + _record() + b"abcd" + b"pad!", "record 1 of 2 starts past the end"),
        (_head(2) + _record() + b"abcdpad!" + b"\0" * 20, "record 1 of 2 starts past"),
        (_head(1) + _record() + b"ab", "record 0 of 1 ends past the end"),
        (_head(1) + _record() + b"abcdpad!EXTRA", "5 bytes follow the last"),
        (_head(1) + _record(direction=2) + b"abcdpad!", "direction 2"),
        (_head(1) + _record(caplen=5, orig=4) + b"abcdepad", "5 bytes captured"),
        (_head(1) + _record(caplen=70000, orig=70000), "at most 65535"),
        (_head(1) + _record(ifindex=4) + b"abcdpad!", "interface 4 has no name"),
        (_head(1) + _record(reserved=b"\0\1\0") + b"abcdpad!", "reserved bytes"),
        (_head(1) + _record(length=24 + 4 | 1 << 31) + b"abcdpad!", "not finished"),
        (_head(1) + _record(length=24 + 12) + b"abcdpad!" + bytes(8), "36 bytes long, but 4"),
]


@pytest.mark.parametrize(("body", "reason"), MALFORMED)
def test_a_malformed_batch_says_where(body: bytes, reason: str) -> None:
    with pytest.raises(PacketsError, match=reason):
        unpack_packets(body)


@pytest.mark.parametrize(("body", "reason"), [
    (body, reason) for body, reason in MALFORMED if b"name" not in reason.encode()
    and "header" not in reason])
def test_the_packet_file_refuses_what_the_codec_refuses(
    tmp_path: Path, body: bytes, reason: str
) -> None:
    """The aggregator's writer checks records in its own loop: it refuses the same batches
    with the same reasons, and writes none of their packets."""
    sink = PacketSink(tmp_path / "x.pcapng")
    with pytest.raises(PacketsError, match=reason):
        sink.write("n1", read_batch(body))
    sink.close()
    read = subprocess.run(["tshark", "-r", str(tmp_path / "x.pcapng")], capture_output=True,
                          text=True, timeout=60)
    assert read.returncode == 0 and read.stdout == "" and sink.packets == 0, read


def test_the_packet_file_skips_records_the_kernel_discarded(tmp_path: Path) -> None:
    good = [packet(i, 61 + i) for i in range(3)]
    records = [ring_record(p.ts_ns, p.ifindex, p.orig_len, p.direction, p.data) for p in good]
    discarded = bytearray(records[1])
    discarded[3] |= 0x40  # bit 30 of the length: discarded
    chunk = records[0] + bytes(discarded) + records[2]
    body = pack_chunk(1, Captured([(chunk, 3)], 0, {3: "eth0"}))
    sink = PacketSink(tmp_path / "x.pcapng")
    assert sink.write("n1", read_batch(body)) == (2, good[0].orig_len + good[2].orig_len)
    sink.close()
    read = subprocess.run(["tshark", "-r", str(tmp_path / "x.pcapng"), "-T", "fields", "-e",
                           "frame.len"], capture_output=True, text=True, timeout=60)
    assert read.stdout.split() == [str(good[0].orig_len), str(good[2].orig_len)]


async def _packets_frame(peer: Peer, seq: int, body: bytes) -> dict[str, Any]:
    await peer.send_raw(encode_raw(FrameType.PACKETS, body))
    frame = await peer.recv()
    assert frame is not None
    return {"kind": frame[0], **frame[1], "seq_sent": seq}


async def test_the_aggregator_writes_good_batches_and_nacks_bad_ones(
    make_aggregator: AggregatorFactory, tmp_path: Path
) -> None:
    agg = await make_aggregator(packets=True)
    pcap = Path(agg.files["pcapng"])
    assert pcap.parent == tmp_path / "output" / "pcap" and pcap.stat().st_mode & 0o777 == 0o600
    peer = await Peer.connect(agg.port)
    await peer.hello("node-7")
    good = [packet(i, 60 + i) for i in range(30)]
    ack = await _packets_frame(peer, 5, pack_packets(5, good))
    assert (ack["kind"], ack["seq"]) == (FrameType.ACK, 5)
    broken = pack_packets(6, good[:3])[:-1]  # one byte short
    nack = await _packets_frame(peer, 6, broken)
    assert (nack["kind"], nack["seq"]) == (FrameType.NACK, 6)
    assert "ends past the end" in nack["reason"]
    # The session goes on after a NACK; flows still go to the flow files.
    await peer.flows(7, DNS_COLUMNS, sample_rows(4))
    assert (await peer.expect(FrameType.ACK))["seq"] == 7
    await peer.close()
    summary = await agg.stop(grace=1)
    assert summary["captured_packets"] == 30
    assert summary["captured_bytes"] == sum(p.orig_len for p in good)
    assert summary["batches_rejected"] == 1 and summary["flows"] == 4
    assert summary["files"]["pcapng"] == str(pcap)
    read = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "frame.len",
                           "-e", "frame.cap_len", "-e", "frame.interface_description"],
                          capture_output=True, text=True, timeout=60)
    assert read.returncode == 0, read.stderr
    assert read.stdout.splitlines() == [
        f"{p.orig_len}\t{len(p.data)}\teth0 on node-7" for p in good]


async def test_a_flows_capture_refuses_packets(make_aggregator: AggregatorFactory) -> None:
    agg = await make_aggregator()
    assert "pcapng" not in agg.files
    peer = await Peer.connect(agg.port)
    await peer.hello()
    nack = await _packets_frame(peer, 3, pack_packets(3, [packet(1)]))
    assert (nack["kind"], nack["seq"]) == (FrameType.NACK, 3)
    assert nack["reason"] == "this capture records flows, not packets"
    await peer.close()


def test_the_exporter_sends_a_batch_per_chunk_and_counts_what_it_drops() -> None:
    exporter = Exporter("127.0.0.1", 9, TOKEN, {}, max_pending_packet_bytes=50_000)
    exporter.submit_packets(Captured.of([packet(i, 1000) for i in range(100)],
                                        chunk_bytes=10_000))
    # ~1 KiB each in chunks of ~10 KB; over 50 KB pending, the oldest unsent batches go.
    kept = sum(b.packets for b in exporter._pending)
    assert exporter.lost_packets == 100 - kept and 40 <= kept <= 50
    frames = [b.frame for b in exporter._pending]
    seqs = [struct.unpack_from("<I", f, 8)[0] for f in frames]
    assert seqs == sorted(seqs) and seqs[-1] == 10
    assert all(unpack_packets(f[8:])[0] == s for f, s in zip(frames, seqs, strict=True))
