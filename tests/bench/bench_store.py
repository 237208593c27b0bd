"""Capture store benchmark: searching 100,000 flows of a capture file, newest first, against
a bare ``SELECT * FROM flow ORDER BY rowid DESC`` fetchall of the same rows (what any Python
reader of the file pays before looking at a single record).

    python tests/bench/bench_store.py

The rows are written by the real FlowWriter (sample rows of the unit tests: a base capture
plus DNS fields on one row in three).  Each figure is the median of several runs on a store
already used once (its per-column counts made); the first search of a new SqliteStore is
given apart, as "cold".  Then the Findings view's computation (``store.findings``) over the
same file and over 100,000 flows full of problems (unanswered SYNs, drops, NXDOMAIN,
retransmissions, an RTT on every TCP record).  The last line printed is a JSON object with
every number.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from agg_helpers import DNS_COLUMNS, sample_rows  # noqa: E402

from netobserv_tui.aggregator.writers import FlowWriter  # noqa: E402
from netobserv_tui.store import FlowStore, JsonStore, SqliteStore  # noqa: E402
from netobserv_tui.store.chips import FilterChips  # noqa: E402
from netobserv_tui.store.findings import findings  # noqa: E402

N = 100_000
BATCH = 2000
LIMIT = 1000


def timed(fn: Any, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def chips(text: str) -> FilterChips:
    result, error = FilterChips().add(text)
    assert error is None, error
    return result


def write(out: Path) -> FlowWriter:
    writer = FlowWriter(out)
    rows = sample_rows(N)
    for i in range(0, N, BATCH):
        writer.write_batch(DNS_COLUMNS, rows[i:i + BATCH])
    writer.close()
    return writer


PROBLEM_COLUMNS = [
    "SrcAddr", "DstAddr", "SrcPort", "DstPort", "Proto", "Flags", "Bytes", "Packets",
    "TimeFlowStartMs", "TimeFlowEndMs", "Interface", "TimeFlowRttNs", "TcpRetransmits",
    "PktDropPackets", "PktDropLatestDropCause", "DnsId", "DnsFlags", "DnsFlagsResponseCode",
    "DnsLatencyMs", "DnsName",
]


def problem_rows(n: int) -> list[list[Any]]:
    """A quarter DNS answers (one in nine NXDOMAIN), the rest TCP records of unique
    4-tuples: one in six a lone SYN, SYN+ACK, ACK, PSH+ACK, FIN+ACK or RST+ACK; an RTT on
    each, retransmissions on one in 17, a netfilter drop on one in 23."""
    rows: list[list[Any]] = []
    for i in range(n):
        client, server = f"10.0.{i % 50}.{i % 200}", f"10.1.{i % 30}.{i % 7}"
        sport, dport = 10000 + i % 50000, (80, 443, 53, 8081)[i % 4]
        if dport == 53:
            nx = i % 9 == 0
            rows.append([server, client, 53, sport, 17, 0, 100, 1, i, i, "eth0", None, None,
                         None, None, i % 65536, 0x8183 if nx else 0x8180,
                         "NXDomain" if nx else "NoError", i % 300, f"n{i % 40}.example."])
            continue
        drop = i % 23 == 0
        rows.append([client, server, sport, dport, 6, (2, 0x12, 0x10, 0x18, 0x11, 0x14)[i % 6],
                     1000, 3, i, i, "eth0", (i % 1000) * 1000, 3 if i % 17 == 0 else 0,
                     1 if drop else None, "SKB_DROP_REASON_NETFILTER_DROP" if drop else None,
                     None, None, None, None, None])
    return rows


def bench_findings(sample_db: Path, tmp: Path) -> dict[str, Any]:
    writer = FlowWriter(tmp / "problems")
    rows = problem_rows(N)
    for i in range(0, N, BATCH):
        writer.write_batch(PROBLEM_COLUMNS, rows[i:i + BATCH])
    writer.close()
    out: dict[str, Any] = {}
    for name, db in (("sample capture", sample_db), ("problem capture", writer.db_path)):
        seconds = timed(lambda db=db: findings(db))
        found = findings(db)
        out[f"findings {name}"] = {"seconds": round(seconds, 4), "findings": len(found)}
        print(f"findings on the {name:<15}: {seconds * 1000:7.1f} ms for {N} records, "
              f"{len(found)} findings")
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        writer = write(Path(tmp))

        def raw() -> None:
            conn = sqlite3.connect(f"{writer.db_path.as_uri()}?mode=ro", uri=True)
            try:
                conn.execute("SELECT * FROM flow ORDER BY rowid DESC").fetchall()
            finally:
                conn.close()

        baseline = timed(raw)
        print(f"baseline: SELECT * ... ORDER BY rowid DESC, fetchall of {N} rows: "
              f"{baseline * 1000:.1f} ms")
        cases: dict[str, Any] = {
            "all (match=None)": None,
            "match nothing": lambda record: False,
            "chip DstPort=53": chips("DstPort=53").matches,
            "chip keyword noerror": chips("noerror").matches,
        }
        out: dict[str, Any] = {"baseline_seconds": round(baseline, 4)}
        started = time.perf_counter()
        json_store = JsonStore(writer.json_path)
        out["json_open_seconds"] = round(time.perf_counter() - started, 4)
        print(f"json  open (load the array): {out['json_open_seconds'] * 1000:7.1f} ms")
        cold_store = SqliteStore(writer.db_path)
        started = time.perf_counter()
        cold_store.search(cases["match nothing"], LIMIT)
        cold = time.perf_counter() - started
        out["sqlite_cold_match_nothing_seconds"] = round(cold, 4)
        print(f"sqlite match nothing, cold (counts columns first): {cold * 1000:7.1f} ms "
              f"(x{cold / baseline:.2f})")
        stores: dict[str, FlowStore] = {"sqlite": SqliteStore(writer.db_path),
                                        "json": json_store}
        for kind, store in stores.items():
            store.search(None, LIMIT)  # warm: the per-column counts of SqliteStore
            store.search(lambda record: False, LIMIT)
            for name, match in cases.items():
                seconds = timed(lambda store=store, match=match: store.search(match, LIMIT))
                result = store.search(match, LIMIT)
                ratio = seconds / baseline
                out[f"{kind} {name}"] = {"seconds": round(seconds, 4),
                                         "ratio_vs_fetchall": round(ratio, 2),
                                         "matched": result.matched}
                print(f"{kind:>6} {name:<21}: {seconds * 1000:7.1f} ms for {N} records, "
                      f"{result.matched:>6} matched (fetchall {baseline * 1000:.1f} ms, "
                      f"x{ratio:.2f})")
        out.update(bench_findings(writer.db_path, Path(tmp)))
    print(json.dumps({"bench": "store", "records": N, "limit": LIMIT, "results": out}))


if __name__ == "__main__":
    main()
