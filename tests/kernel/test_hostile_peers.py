"""A hostile network next to a real capture: 20,000 random and mutated frames sent to the
aggregator of `netobserv flows --local` while its real agent sends the lab's flows.

The aggregator must stay up, its memory bounded, and the agent's flows complete: the
datagrams the generator sent are in the file exactly, once per captured interface.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from capture_helpers import Capture, sql_totals

from netobserv_tui.lab import Lab
from netobserv_tui.lab.traffic import udp_send
from netobserv_tui.model.protocol import HEADER, MAGIC, VERSION, FrameType, encode, token_proof

pytestmark = pytest.mark.kernel

FRAMES = 20_000


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("flow capture needs root (eBPF, TC): run the tests as root")


def templates() -> list[bytes]:
    """Valid-looking frames of every kind a stranger could start with (no token)."""
    rows = [["198.18.0.10", "198.18.0.11", 1, 2, 17, 100, 1]]
    return [
        encode(FrameType.HELLO, {**token_proof("guess", FrameType.HELLO), "agent": {}}),
        encode(FrameType.HELLO, {"token": "guess", "agent": {"hostname": "x" * 300}}),
        encode(FrameType.SUBSCRIBE, token_proof("guess", FrameType.SUBSCRIBE)),
        encode(FrameType.SEARCH, {"token": "", "chips": ["/(a|a)+$/"]}),
        encode(FrameType.FINISH, {"auth": {"nonce": "0" * 32, "mac": "f" * 64}}),
        encode(FrameType.FLOWS, {"seq": 1, "columns": ["SrcAddr", "DstAddr", "SrcPort",
                                                       "DstPort", "Proto", "Bytes",
                                                       "Packets"], "rows": rows}),
        encode(FrameType.STATS, {"evictions": 1}),
        HEADER.pack(MAGIC, VERSION, FrameType.HELLO, 1 << 24),  # announces 16 MiB
        HEADER.pack(MAGIC, VERSION, FrameType.PACKETS, 4096) + os.urandom(64),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ]


def mutate(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        how = rng.randrange(5)
        if how == 0 and data:  # flip bytes
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif how == 1:  # truncate
            del data[rng.randrange(len(data) + 1):]
        elif how == 2:  # append junk
            data += rng.randbytes(rng.randint(1, 64))
        elif how == 3 and len(data) >= 8:  # another length in the header
            data[4:8] = rng.randrange(1 << 32).to_bytes(4, "big")
        else:  # another frame type
            if len(data) >= 4:
                data[3] = rng.randrange(256)
    return bytes(data)


def fuzz(port: int, count: int, seed: int, done: list[int]) -> None:
    rng = random.Random(seed)
    kinds = templates()
    sent = 0
    while sent < count:
        with socket.socket() as sock:
            sock.settimeout(2.0)
            try:
                sock.connect(("127.0.0.1", port))
            except OSError:
                time.sleep(0.01)  # refused for now (too many handshakes): try again
                continue
            # A few frames per connection: the aggregator closes at the first bad one.
            for _ in range(rng.randint(1, 5)):
                if rng.random() < 0.2:
                    payload = rng.randbytes(rng.randint(0, 512))
                else:
                    payload = mutate(rng, rng.choice(kinds))
                try:
                    sock.sendall(payload)
                except OSError:
                    break
                sent += 1
            try:
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):
                    pass
            except OSError:
                pass
    done.append(sent)


def test_hostile_frames_do_not_hurt_a_real_capture(lab: Lab, tmp_path: Path) -> None:
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    with Capture(tmp_path) as cap:
        assert cap.proc is not None
        aggregator = next(child for child in psutil.Process(cap.proc.pid).children(True)
                          if "netobserv_tui.aggregator" in " ".join(child.cmdline()))
        (port,) = {c.laddr.port for c in aggregator.net_connections("tcp")
                   if c.status == psutil.CONN_LISTEN}
        rss_before = aggregator.memory_info().rss
        done: list[int] = []
        fuzzers = [threading.Thread(target=fuzz, args=(port, FRAMES // 4, seed, done))
                   for seed in range(4)]
        peak = rss_before
        for fuzzer in fuzzers:
            fuzzer.start()
        sent: list[Any] = []
        while any(f.is_alive() for f in fuzzers) or len(sent) < 5:
            sent.append(udp_send(lab, a, b, 50, 300, dst_port=7401, src_port=42401 + len(sent)))
            peak = max(peak, aggregator.memory_info().rss)
            time.sleep(0.2)
        for fuzzer in fuzzers:
            fuzzer.join()
        assert aggregator.is_running()
        assert cap.stop() == 0, cap.stderr_lines
    print(f"{sum(done)} hostile frames; aggregator RSS {rss_before >> 20} MiB before, peak "
          f"{peak >> 20} MiB; {len(sent)} lab flows of 50 datagrams meanwhile")
    assert sum(done) >= FRAMES
    # Bounded: a stranger never made the aggregator hold more than first frames.
    assert peak - rss_before < 64 << 20, (rss_before, peak)
    frame = sent[0].frame_bytes
    db = cap.files()["db"]
    for i, result in enumerate(sent):
        assert result.sent == result.received == 50
        assert sql_totals(db, SrcPort=42401 + i, DstPort=7401, Proto=17) == {
            (a.host_ifname, 0): (50, 50 * frame),
            (b.host_ifname, 1): (50, 50 * frame),
        }
