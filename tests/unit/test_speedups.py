"""The packet capture's per-packet loops: the C speedups give the Python twins' results,
byte for byte, on good and on damaged input; and the install built them."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netobserv_tui.model import speedups
from netobserv_tui.model.packets import (
    RING_BUSY,
    RING_DISCARD,
    Captured,
    Packet,
    pack_chunk,
    read_batch,
    ring_record,
)

native = speedups.native
MODEL = Path(speedups.__file__).parent


def test_the_install_built_the_c_speedups_from_the_current_source() -> None:
    """scripts/bootstrap (pip install -e) compiles them; without a compiler every packet
    would cost about ten times the CPU, so the test environment must have them."""
    assert native is not None, "run scripts/bootstrap: it compiles netobserv_tui/model/_speedups.c"
    built = MODEL / ("_speedups" + sysconfig.get_config_var("EXT_SUFFIX"))
    assert built.stat().st_mtime >= (MODEL / "_speedups.c").stat().st_mtime, (
        "_speedups.c is newer than its build: run scripts/bootstrap")
    assert speedups.epb_blocks is native.epb_blocks
    assert speedups.ring_walk is native.ring_walk


def test_no_speedups_in_the_environment_selects_the_python_loops() -> None:
    code = ("from netobserv_tui.model import speedups as s; "
            "print(s.native, s.epb_blocks.__name__, s.describe())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "NETOBSERV_NO_SPEEDUPS": "1"}, check=True)
    assert done.stdout.split(" ", 2) == ["None", "epb_blocks_py",
                                         "Python loops (C speedups not built)\n"]


# -- EPBs from PACKETS batches ------------------------------------------------------------

def frame(src: int, dst: int, size: int, v6: bool, vlan: bool) -> bytes:
    eth = bytes(12) + (b"\x81\x00\x00\x05" if vlan else b"")
    if v6:
        ip = bytes(8) + bytes([0xFD] + [src] * 15) + bytes([0xFD] + [dst] * 15)
        head = eth + b"\x86\xdd" + ip
    else:
        head = eth + b"\x08\x00" + bytes(12) + bytes([198, 18, 0, src, 198, 18, 0, dst])
    return (head + bytes(range(256)) * 4)[:size]


packets_st = st.lists(
    st.builds(
        lambda i, ifindex, direction, src, dst, size, v6, vlan, cut: Packet(
            1_800_000_000_000_000_000 + i * 977, ifindex, f"if{ifindex}", direction,
            size, frame(src, dst, size, v6, vlan)[:max(0, size - cut)]),
        st.integers(0, 10**6), st.sampled_from([3, 7, 9]), st.integers(0, 1),
        st.integers(1, 4), st.integers(1, 4), st.integers(0, 140), st.booleans(),
        st.booleans(), st.integers(0, 20)),
    max_size=40)


def both(body: bytes, clock: int = 0, addresses: bool = True, start: int | None = None,
         count: int | None = None) -> tuple[object, object, list[tuple[int, int, bytes]]]:
    """What the C and the Python loops make of ``body``, and the keys each asked about."""
    assert native is not None
    batch = read_batch(body)
    results = []
    asked: list[list[tuple[int, int, bytes]]] = []
    for run in (native.epb_blocks, speedups.epb_blocks_py):
        calls: list[tuple[int, int, bytes]] = []

        def options_of(ifindex: int, direction: int, ends: bytes,
                       calls: list[tuple[int, int, bytes]] = calls) -> tuple[int, bytes]:
            calls.append((ifindex, direction, ends))
            return ifindex % 5, b"opt:" + ends + bytes([direction]) * (ifindex % 4)

        out = bytearray(b"\xee" * 7)
        done = run(body, batch.start if start is None else start,
                   batch.count if count is None else count, clock, batch.names, addresses,
                   options_of, out)
        results.append(None if done is None else (bytes(out[:done[0]]), *done[1:]))
        asked.append(sorted(set(calls)))
    assert asked[0] == asked[1]
    return results[0], results[1], asked[0]


@pytest.mark.skipif(native is None, reason="the C speedups are not built")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packets_st, st.integers(-(10**12), 10**12), st.booleans())
def test_blocks_are_the_same_from_c_and_python(packets: list[Packet], clock: int,
                                               addresses: bool) -> None:
    body = pack_chunk(1, Captured(Captured.of(packets).chunks, clock,
                                  {p.ifindex: p.ifname for p in packets}))
    c, py, asked = both(body, clock, addresses)
    assert c == py
    assert c is not None
    blocks, count, wire = c  # type: ignore[misc]
    assert count == len(packets)
    assert wire == sum(p.orig_len for p in packets)
    if not addresses:
        assert all(ends == b"" for _, _, ends in asked)
    # The blocks parse back: each EPB's frame and times are the packet's.
    off = 0
    for p in packets:
        kind, total, iface, high, low, caplen, orig = (
            int.from_bytes(blocks[off + 4 * i:off + 4 * i + 4], "little") for i in range(7))
        assert (kind, caplen, orig, iface) == (6, len(p.data), p.orig_len, p.ifindex % 5)
        assert (high << 32 | low) == p.ts_ns + clock
        assert blocks[off + 28:off + 28 + caplen] == p.data
        assert int.from_bytes(blocks[off + total - 4:off + total], "little") == total
        off += total
    assert off == len(blocks)


@pytest.mark.skipif(native is None, reason="the C speedups are not built")
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packets_st.filter(bool), st.data())
def test_damaged_batches_fail_alike(packets: list[Packet], data: st.DataObject) -> None:
    """A flipped byte, a cut, a busy or discarded record, a missing name: C and Python
    agree on None or on the same blocks."""
    body = bytearray(pack_chunk(1, Captured.of(packets)))
    start = read_batch(bytes(body)).start
    how = data.draw(st.sampled_from(["flip", "cut", "busy", "discard", "extra", "count"]))
    count = None
    if how == "flip":
        at = data.draw(st.integers(start, len(body) - 1))
        body[at] ^= data.draw(st.integers(1, 255))
    elif how == "cut":
        del body[data.draw(st.integers(start, len(body) - 1)):]
    elif how in ("busy", "discard"):
        body[start + 3] |= (RING_BUSY if how == "busy" else RING_DISCARD) >> 24
    elif how == "extra":
        body += bytes(data.draw(st.integers(1, 40)))
    else:
        count = len(packets) + data.draw(st.sampled_from([-1, 1]))
    c, py, _ = both(bytes(body), count=count)
    assert c == py
    if how in ("cut", "busy", "extra", "count"):
        assert c is None


def test_a_discarded_record_is_skipped_even_as_the_last_and_short() -> None:
    """The kernel's discarded record is skipped, whatever its length (here 4 bytes, shorter
    than a record head), by both loops."""
    kept = ring_record(5, 3, 60, 0, bytes(60))
    discarded = (RING_DISCARD | 4).to_bytes(4, "little") + bytes(4) + bytes(8)
    body = pack_chunk(1, Captured([(kept + discarded, 2)], 0, {3: "eth0"}))
    c, py, _ = both(body)
    assert c == py
    assert c is not None and c[1:] == (1, 60)  # type: ignore[index]


# -- the ring walk ------------------------------------------------------------------------

RING = 1 << 12


def ring_of(records: list[tuple[int, int]], cons: int) -> tuple[bytes, int]:
    """A ring's data area (mapped twice) with records of (payload length, flags) written
    from position ``cons``; and the producer position after them."""
    area = bytearray(RING)
    pos = cons
    for length, flags in records:
        head = (length | flags).to_bytes(4, "little") + bytes(4)
        body = bytes(8) + (100 + length).to_bytes(4, "little")  # ifindex at +16
        rec = (head + body + bytes(max(0, length - 12)))[:8 + length]
        rec += bytes(-len(rec) % 8)
        for i, b in enumerate(rec):
            area[(pos + i) % RING] = b
        pos += 8 + (length + 7 & ~7)
    return bytes(area) * 2, pos


@pytest.mark.skipif(native is None, reason="the C speedups are not built")
@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(12, 300),
                          st.sampled_from([0, 0, 0, RING_DISCARD, RING_BUSY])), max_size=12),
       st.integers(0, RING - 1).map(lambda c: c & ~7 | RING * 3),
       st.integers(1, 700), st.integers(-1, 14))
def test_the_ring_walk_is_the_same_from_c_and_python(
        records: list[tuple[int, int]], cons: int, chunk_bytes: int, left: int) -> None:
    assert native is not None
    data, prod = ring_of(records, cons)
    c = native.ring_walk(data, cons, prod, RING - 1, chunk_bytes, left)
    py = speedups.ring_walk_py(data, cons, prod, RING - 1, chunk_bytes, left)
    assert c == py
    cuts, ifindexes = c
    committed = []
    for length, flags in records:
        if flags == RING_BUSY:
            break
        committed.append((length, flags))
    if left >= 0:
        committed = committed[:left]
    assert sum(n for _, n in cuts) == len(committed)
    assert ifindexes == {100 + length for length, flags in committed if not flags}


def test_the_ring_walk_refuses_a_data_area_smaller_than_two_rings() -> None:
    if native is None:
        pytest.skip("the C speedups are not built")
    with pytest.raises(ValueError, match="twice the ring"):
        native.ring_walk(bytes(RING), 0, 8, RING - 1, 100, -1)
