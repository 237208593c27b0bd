"""Live-filter benchmark, in three parts; each figure against a baseline measured in the
same run.

    python tests/bench/bench_filter.py [--flows N] [--rounds R] [--skip-ingest]

About two minutes with the defaults on two cores.

1. In memory: chips over 100,000 held records (``FilterChips.filter``: the TUI's ring, the
   JSON store), against a plain Python loop that tests the same conditions by hand (the
   floor for any matcher written in Python).
2. Keystroke to result: the store search the TUI makes when a chip is entered (the
   predicate, the view's narrowing and the query, limit 1,000: one page of rows) on a
   capture file of ``--flows`` realistic flows written by the real FlowWriter (TCP 60 %,
   DNS 20 %, other UDP 10 %, ICMP 10 %; one flow in ten over IPv6; Kubernetes names).  Each
   chip ``--rounds`` times on a store already used once; p50/p95 (nearest rank) per kind of
   chip over all its chips and rounds.  Baseline: the same search without the query, as
   before the chips were answered in SQL (every row built and tested in Python), median
   of two.  Twice: on the file while it is written (WAL, no index yet: a live capture) and
   once closed (indexed: ``netobserv open``).  ``cold`` is a store's first text search
   (it reads the columns' distinct values).
3. Ingest: the writer's rows/s alone (baseline), then while a live filter searches the
   same file from another thread of the process, as the aggregator's SEARCH sessions do (a
   new chip every second, the rows added since every half second): with the chips in SQL,
   and with the Python scan of before.  And the writer with a column holding each row's
   displayed text (lower-cased, built by SQLite from the inserted values): the write-side
   index not taken.  Best of two, interleaved.

The last line printed is a JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from netobserv_tui.aggregator import writers
from netobserv_tui.aggregator.batch import Batch
from netobserv_tui.aggregator.writers import FlowWriter
from netobserv_tui.model.fields import BASE_COLUMNS, BY_NAME
from netobserv_tui.store import Query, SqliteStore
from netobserv_tui.store.chips import FilterChips

N = 100_000
LIMIT = 1000
BATCH = 2000

# -- part 1 --------------------------------------------------------------------------------


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


def in_memory() -> dict[str, Any]:
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
    return out


# -- part 2 --------------------------------------------------------------------------------

COLUMNS = (*BASE_COLUMNS, "DnsId", "DnsFlagsResponseCode", "DnsLatencyMs", "DnsName",
           "SrcK8S_Name", "SrcK8S_Namespace", "DstK8S_Name", "DstK8S_Namespace")
NAMESPACES = ("payments", "frontend", "checkout", "monitoring", "openshift-dns", "default")
DNS_NAMES = ("api.example.com.", "db.payments.svc.cluster.local.", "registry.local.",
             "kubernetes.default.svc.cluster.local.", "mirror.example.org.")
#: Kind of chip -> chips typed.  A keyword of digits only may be in any integer's text
#: (timestamps, byte counts: too many values to list, tested row by row); the regex with
#: ``\s`` may match across two fields (it runs in Python on the rows that hold its
#: literals); ``:53$`` may end in any endpoint's port (the client ports: too many values).
CHIPS: dict[str, tuple[str, ...]] = {
    "field": ("SrcPort=40007", "Proto=tcp", "DnsFlagsResponseCode=nxdomain", "Interfaces=cni0"),
    "keyword": ("payments", "nxdomain", "10.129.3.17", "10.129.3.17:443", "[fd00::3:17]:443",
                "veth1a2b3c"),
    "keyword, digits only": ("443", "40007"),
    "regex": (r"/^10\.128\.1\d\./", r"/payments-0\d-/", r"/^fd00::3:/",
              r"/nxdomain\s+\d/"),
    "regex, on ports": (r"/:53$/",),
}


def mac_of(addr: str) -> str:
    """The MAC OVN-Kubernetes gives the pod of ``addr``: 0A:58 and the address's last four
    bytes (one per pod, not one per flow)."""
    if ":" in addr:
        a, b = (int(group or "0", 16) for group in addr.split(":")[-2:])
        tail = [a >> 8, a & 0xFF, b >> 8, b & 0xFF]
    else:
        tail = [int(octet) for octet in addr.split(".")]
    return "0A:58:" + ":".join(f"{byte:02X}" for byte in tail)


def make_rows(n: int, seed: int = 7) -> list[list[Any]]:
    """Rows of ``COLUMNS``, as in tests/bench/bench_tui.py, one in ten over IPv6, with the
    MACs of the pods (tests/bench/bench_tui.py draws one per flow)."""
    rnd = random.Random(seed)
    rows = []
    t0 = 1_764_097_458_000
    for i in range(n):
        kind = i % 10
        proto = 6 if kind < 6 else 17 if kind < 9 else 1
        dns, l4, v6 = kind in (6, 7), proto != 1, i % 10 == 3
        src_ns, dst_ns = rnd.choice(NAMESPACES), rnd.choice(NAMESPACES)
        a, b = rnd.randrange(16), rnd.randrange(1, 255)
        values: dict[str, Any] = {
            "SrcAddr": f"fd00::{rnd.randrange(16)}:{rnd.randrange(1, 255)}" if v6
            else f"10.128.{rnd.randrange(16)}.{rnd.randrange(1, 255)}",
            "DstAddr": f"fd00::{a}:{b}" if v6 else "172.30.0.10" if dns else f"10.129.{a}.{b}",
            "SrcPort": rnd.randrange(32768, 61000) if l4 else 0,
            "DstPort": 53 if dns else rnd.choice((443, 80, 8080, 5432, 6443)) if proto == 6
            else rnd.choice((4789, 123, 514)) if l4 else 0,
            "Proto": proto,
            "SrcMac": "", "DstMac": "",
            "Etype": 34525 if v6 else 2048, "Dscp": rnd.choice((0, 0, 0, 10, 46)),
            "IcmpType": 0 if l4 else 8, "IcmpCode": 0,
            "Flags": rnd.choice((16, 18, 24, 17, 2, 20)) if proto == 6 else 0,
            "Bytes": rnd.randrange(60, 200_000), "Packets": rnd.randrange(1, 150), "Sampling": 0,
            "TimeFlowStartMs": t0 + i * 3, "TimeFlowEndMs": t0 + i * 3 + rnd.randrange(5000),
            "AgentIP": "198.18.0.254", "Interface": rnd.choice(("eth0", "veth1a2b3c", "cni0")),
            "IfDirection": i % 2, "Interfaces": rnd.choice((["eth0"], ["veth1a2b3c", "cni0"])),
            "IfDirections": rnd.choice(([0], [1], [0, 1])), "FlowDirection": i % 2,
            "DnsId": rnd.randrange(65536) if dns else None,
            "DnsFlagsResponseCode": rnd.choice(("NoError",) * 8 + ("NXDomain", "ServFail"))
            if dns else None,
            "DnsLatencyMs": rnd.randrange(0, 40) if dns else None,
            "DnsName": rnd.choice(DNS_NAMES) if dns else None,
            "SrcK8S_Name": f"{src_ns}-{rnd.randrange(40):02d}-7d9f",
            "SrcK8S_Namespace": src_ns,
            "DstK8S_Name": f"{dst_ns}-{rnd.randrange(40):02d}-5c8b",
            "DstK8S_Namespace": dst_ns,
        }  # fmt: skip
        values["SrcMac"], values["DstMac"] = mac_of(values["SrcAddr"]), mac_of(values["DstAddr"])
        rows.append([values[c] for c in COLUMNS])
    return rows


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def keystroke(store: SqliteStore, text: str, use_query: bool = True) -> tuple[float, int]:
    """The TUI's search for ``text`` entered on the Overview: seconds, matches."""
    query = Query((text,))
    match, narrow = query.compile()
    started = time.perf_counter()
    result = store.search(match, LIMIT, narrow=narrow, query=query if use_query else None)
    return time.perf_counter() - started, result.matched


def keystrokes(path: Path, mode: str, rounds: int) -> dict[str, Any]:
    store = SqliteStore(path)
    store.search(lambda record: False, LIMIT)  # warm: the per-column counts, as before
    cold, _ = keystroke(store, "payments")  # the first text search reads distinct values
    baseline_store = SqliteStore(path)
    baseline_store.search(lambda record: False, LIMIT)
    out: dict[str, Any] = {"cold_ms": round(cold * 1000, 1)}
    print(f"  {mode}: first text search of a store (reads the distinct values): "
          f"{cold * 1000:.1f} ms")
    print(f"  {'chip':<34} {'p50 ms':>8} {'p95 ms':>8} {'before ms':>10} {'x before':>9} "
          f"{'matched':>8}")
    for kind, texts in CHIPS.items():
        samples: list[float] = []
        befores: list[float] = []
        for text in texts:
            seconds, matched = [], 0
            for _ in range(rounds):
                took, matched = keystroke(store, text)
                seconds.append(took)
            before = [keystroke(baseline_store, text, use_query=False) for _ in range(2)]
            assert all(m == matched for _, m in before), (text, before, matched)
            old = statistics.median(t for t, _ in before)
            samples += seconds
            befores.append(old)
            p50 = statistics.median(seconds)
            print(f"  {text:<34} {p50 * 1000:8.1f} {pct(seconds, 95) * 1000:8.1f} "
                  f"{old * 1000:10.1f} {p50 / old:9.3f} {matched:>8}")
            out[text] = {"p50_ms": round(p50 * 1000, 1),
                         "p95_ms": round(pct(seconds, 95) * 1000, 1),
                         "before_ms": round(old * 1000, 1), "matched": matched}
        p95 = pct(samples, 95)
        out[kind] = {"p50_ms": round(statistics.median(samples) * 1000, 1),
                     "p95_ms": round(p95 * 1000, 1),
                     "before_p50_ms": round(statistics.median(befores) * 1000, 1)}
        print(f"  {kind.upper() + ' chips':<34} {statistics.median(samples) * 1000:8.1f} "
              f"{p95 * 1000:8.1f} {statistics.median(befores) * 1000:10.1f} "
              f"{statistics.median(samples) / statistics.median(befores):9.3f}")
    store.close()
    baseline_store.close()
    return out


# -- part 3 --------------------------------------------------------------------------------


class TextColumnWriter(FlowWriter):
    """The write-side index not taken: each row also gets its displayed text, lower-cased,
    built by SQLite from the inserted values (no Python per row)."""

    def __init__(self, output: Path) -> None:
        super().__init__(output)
        self._conn.execute(f"ALTER TABLE {writers.TABLE} ADD COLUMN search_text TEXT")

    def _plan(self, columns: tuple[str, ...], plain: frozenset[int]) -> Any:
        plan = super()._plan(columns, plain)
        if "search_text" not in plan.sql:
            lines = []
            for i, name in enumerate(columns, 1):
                value = (f"replace(substr(?{i}, 2, length(?{i}) - 2), '\"', '')"
                         if BY_NAME[name].kind is list else f"?{i}")
                lines.append(f"ifnull({value} || char(10), '')")
            quoted = ", ".join(f'"{c}"' for c in columns)
            marks = ", ".join(f"?{i}" for i in range(1, len(columns) + 1))
            plan.sql = (f"INSERT INTO {writers.TABLE} ({quoted}, search_text) VALUES "
                        f"({marks}, lower({' || '.join(lines)}))")
        return plan


def ingest_rate(out: Path, batches: list[Batch], writer_class: type[FlowWriter] = FlowWriter,
                search: Callable[[Path, threading.Event], None] | None = None) -> float:
    writer = writer_class(out)
    stop = threading.Event()
    searcher = None
    if search is not None:
        searcher = threading.Thread(target=search, args=(writer.db_path, stop))
        searcher.start()
        time.sleep(0.05)
    started = time.perf_counter()
    for batch in batches:
        writer.write(batch)
    seconds = time.perf_counter() - started
    stop.set()
    if searcher is not None:
        searcher.join()
    writer.close()
    return sum(b.nrows for b in batches) / seconds


def searching(use_query: bool) -> Callable[[Path, threading.Event], None]:
    """A fast typist's live filter on the file being written, in a thread of the writer's
    process (as the aggregator's SEARCH sessions run): a new chip every second (a search
    of the whole file) and, every half second, its search of the rows added since (the
    TUI's refresh)."""
    texts = [t for kind in ("keyword", "regex") for t in CHIPS[kind]]

    def run(path: Path, stop: threading.Event) -> None:
        while not path.exists():
            time.sleep(0.01)
        store = SqliteStore(path)
        tick = 0
        last_id = 0
        while not stop.wait(0.5):
            query = Query((texts[tick // 2 % len(texts)],))
            match, narrow = query.compile()
            after = last_id if tick % 2 else 0
            result = store.search(match, LIMIT, after=after, narrow=narrow,
                                  query=query if use_query else None)
            last_id = result.last_id
            tick += 1
        store.close()

    return run


def ingest(rows: list[list[Any]], tmp: Path) -> dict[str, Any]:
    batches = [Batch.from_rows(list(COLUMNS), [list(r) for r in rows[i:i + BATCH]])
               for i in range(0, len(rows), BATCH)]
    cases: dict[str, tuple[type[FlowWriter], Callable[[Path, threading.Event], None] | None]] = {
        "writer alone": (FlowWriter, None),
        "+ live filter, chips in SQL": (FlowWriter, searching(True)),
        "+ live filter, chips in Python (before)": (FlowWriter, searching(False)),
        "writer + text column (not taken)": (TextColumnWriter, None),
    }
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(2):  # interleaved, best of two: the machine is shared
        for name, (cls, search) in cases.items():
            rates[name].append(ingest_rate(tmp / f"{round_}-{len(rates[name])}-{cls.__name__}"
                                           f"-{search is not None}", batches, cls, search))
    base = max(rates["writer alone"])
    out: dict[str, Any] = {}
    print(f"  {'writer':<36} {'rows/s':>10} {'x alone':>8}")
    for name, values in rates.items():
        rate = max(values)
        out[name] = {"rows_per_s": round(rate), "ratio": round(rate / base, 3)}
        print(f"  {name:<36} {rate:10,.0f} {rate / base:8.3f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flows", type=int, default=N)
    parser.add_argument("--rounds", type=int, default=7, help="searches per chip")
    parser.add_argument("--skip-ingest", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {"in_memory": in_memory()}
    rows = make_rows(args.flows)
    with tempfile.TemporaryDirectory(prefix="bench-filter-") as name:
        tmp = Path(name)
        writer = FlowWriter(tmp / "capture")
        for i in range(0, len(rows), BATCH):
            writer.write_batch(COLUMNS, rows[i:i + BATCH])
        print(f"keystroke -> result, {args.flows:,} flows, limit {LIMIT}, "
              f"{args.rounds} rounds per chip:")
        result["live"] = keystrokes(writer.db_path, "live file (WAL, no index yet)", args.rounds)
        writer.close()
        result["closed"] = keystrokes(writer.db_path, "closed file (indexed)", args.rounds)
        if not args.skip_ingest:
            print(f"ingest, {len(rows):,} rows in batches of {BATCH}:")
            result["ingest"] = ingest(rows, tmp)
    print(json.dumps({"bench": "filter", "flows": args.flows, "results": result}))


if __name__ == "__main__":
    main()
