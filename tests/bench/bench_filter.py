"""Live-filter benchmark: chips over 100,000 held records, against a plain Python loop that
tests the same conditions by hand (the floor for any matcher written in Python).

    python tests/bench/bench_filter.py
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from netobserv_tui.store.chips import FilterChips

N = 100_000


def records() -> list[dict[str, Any]]:
    base = {
        "AgentIP": "10.0.1.76", "Bytes": 561, "Etype": 2048, "Flags": 16, "Interface": "ens5",
        "Packets": 1, "SrcAddr": "10.129.0.48", "SrcPort": 46934, "SrcMac": "0A:58:0A:80:00:01",
        "TimeFlowEndMs": 1709741962111, "TimeFlowStartMs": 1709741962111,
        "SrcK8S_Name": "nodejs-basic-7d9f", "SrcK8S_Namespace": "connectivity-scenario",
    }  # fmt: skip
    return [
        {**base, "DstAddr": f"10.128.{i % 250}.{i % 7}", "DstPort": 53 if i % 2 else 9999,
         "Proto": 17 if i % 3 == 0 else 6}
        for i in range(N)
    ]  # fmt: skip


def timed(fn: Any, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    recs = records()
    cases = {"field": ["DstPort=53"], "keyword": ["nodejs"], "regex": ["/^10\\.128\\.1\\d\\./"],
             "mixed": ["nodejs", "DstPort=53", "udp"]}
    baseline = timed(lambda: [r for r in recs if r["DstPort"] == 53])
    out = {}
    for name, texts in cases.items():
        chips = FilterChips()
        for text in texts:
            chips, error = chips.add(text)
            assert error is None, error
        seconds = timed(lambda chips=chips: chips.filter(recs))
        ratio = round(seconds / baseline, 1)
        out[name] = {"seconds": round(seconds, 4), "ratio_vs_hand_loop": ratio}
        print(f"filter {name:>8}: {seconds * 1000:7.1f} ms for {N} records "
              f"(hand-written loop {baseline * 1000:.1f} ms, x{seconds / baseline:.1f})")
    print(json.dumps({"bench": "filter", "records": N, "results": out}))


if __name__ == "__main__":
    main()
