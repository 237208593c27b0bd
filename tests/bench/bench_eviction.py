"""Eviction benchmark: time to drain the kernel flow map and turn it into wire rows.

The map is filled from user space (BPF_MAP_UPDATE_BATCH) with 10k / 50k / 100k distinct
flows, then drained exactly as the agent does every interval (lookup-and-delete batch,
then RowBuilder). Baseline in the same run: a plain BPF_MAP_LOOKUP_BATCH of the same map
(the kernel's own copy cost), so the ratio shows our overhead. Target: 100k in < 1 s.

Run as root: python tests/bench/bench_eviction.py
"""

from __future__ import annotations

import ctypes as ct
import json
import socket
import time

from netobserv_tui.agent import kernel
from netobserv_tui.agent.bpf import FlowProgram
from netobserv_tui.agent.records import FLOW_ID, FLOW_METRICS, RowBuilder

SIZES = (10_000, 50_000, 100_000)


def fill(prog: FlowProgram, n: int) -> None:
    from bcc.libbcc import lib  # type: ignore[import-not-found]

    keys = bytearray()
    values = bytearray()
    now = time.monotonic_ns()
    for i in range(n):
        src = b"\x00" * 10 + b"\xff\xff" + socket.inet_aton(f"198.18.{(i >> 8) & 0xFF}.{i & 0xFF}")
        dst = b"\x00" * 10 + b"\xff\xff" + socket.inet_aton("198.19.0.1")
        keys += FLOW_ID.pack(src, dst, 1024 + (i % 60000), 443, 0x0800, 6, i & 1, 2, 0, 0)
        values += FLOW_METRICS.pack(10, 15000, now, now + 1000, 0x18, b"\x02" * 6, b"\x04" * 6, 0)
    count = ct.c_uint32(n)
    kbuf = ct.create_string_buffer(bytes(keys), len(keys))
    vbuf = ct.create_string_buffer(bytes(values), len(values))
    res = lib.bpf_update_batch(prog.flow_map_fd, kbuf, vbuf, ct.byref(count))
    if res != 0 or count.value != n:
        raise SystemExit(f"filling the map failed: res={res} count={count.value}/{n}")


def lookup_only(prog: FlowProgram, n: int) -> float:
    from bcc.libbcc import lib  # type: ignore[import-not-found]

    keys = ct.create_string_buffer(FLOW_ID.size * n)
    values = ct.create_string_buffer(FLOW_METRICS.size * n)
    out = ct.c_uint32(0)
    count = ct.c_uint32(n)
    started = time.perf_counter()
    lib.bpf_lookup_batch(prog.flow_map_fd, None, ct.byref(out), keys, values, ct.byref(count))
    return time.perf_counter() - started


def main() -> None:
    kernel.check_privileges()
    kernel.prepare_bcc()
    results = []
    with FlowProgram(max_flows=max(SIZES)) as prog:
        builder = RowBuilder("198.18.0.1", lambda i: f"if{i}", lambda a: False)
        for n in SIZES:
            fill(prog, n)
            baseline = lookup_only(prog, n)
            started = time.perf_counter()
            drained = prog.drain()
            offset = time.time_ns() - time.monotonic_ns()
            rows = list(builder.rows(drained.keys, drained.values, offset))
            total = time.perf_counter() - started
            assert len(rows) == n == drained.count, (len(rows), n, drained.count)
            again = prog.drain()
            assert again.count == 0, "the map was not empty after draining"
            results.append(
                {
                    "flows": n,
                    "drain_s": round(drained.seconds, 4),
                    "drain_and_rows_s": round(total, 4),
                    "kernel_lookup_batch_s": round(baseline, 4),
                    "ratio_vs_lookup": round(total / baseline, 2) if baseline else None,
                    "target_met": n != 100_000 or total < 1.0,
                }
            )
            print(
                f"eviction {n:>7} flows: drain {drained.seconds * 1000:7.1f} ms, drain+rows "
                f"{total * 1000:7.1f} ms (kernel lookup-batch baseline {baseline * 1000:6.1f} ms, "
                f"x{total / baseline:.1f})"
            )
    print(json.dumps({"bench": "eviction", "results": results}))


if __name__ == "__main__":
    main()
