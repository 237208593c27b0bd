"""Aggregator ingest benchmark: flows/s written, against raw sqlite3 on the same rows.

Run: ``python tests/bench/bench_ingest.py [--flows N] [--agents K]``

* The aggregator runs as a subprocess (``python -m netobserv_tui.aggregator``) pinned to one
  core; the simulated agents run in this process on the other cores, from pre-encoded
  batches (sizes 1000-5000, like kernel map evictions), so they are not the bottleneck.
* Rate = flows / (first send -> last ACK): every ACKed row is in both files.
* Raw rate = the same rows (list fields already JSON text, TimeReceived set) inserted with
  ``executemany``, one transaction per batch, same pragmas, by a child process pinned to
  the same core: into the table as the aggregator fills it (indexes built at the end), and
  into a table whose indexes are maintained during the inserts (the naive layout).
* The aggregator's RSS is sampled throughout; the report gives it at 10%, 50% and 100%.
The last line printed is a JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from netobserv_tui.aggregator.writers import (  # noqa: E402
    CACHE_KIB,
    create_indexes,
    create_schema,
)
from netobserv_tui.model.fields import BASE_COLUMNS  # noqa: E402
from netobserv_tui.model.protocol import (  # noqa: E402
    HEADER,
    MAGIC,
    VERSION,
    FrameType,
    encode,
    read_frame_sync,
)

TOKEN = "bench-token"
POOL_BATCHES = 24
SEED = 20261125


def make_batches(agent: int, seed: int = SEED) -> list[list[list[Any]]]:
    """Distinct realistic batches for one agent: lab addresses, common ports, MACs, ..."""
    rnd = random.Random(seed + agent)
    batches = []
    t0 = 1_764_097_458_000
    for _ in range(POOL_BATCHES):
        rows = []
        for i in range(rnd.randint(1000, 5000)):
            proto = rnd.choice((6, 6, 6, 17, 17, 1))
            l4 = proto != 1
            rows.append([
                f"198.18.{rnd.randrange(256)}.{rnd.randrange(1, 255)}",
                f"198.19.{rnd.randrange(256)}.{rnd.randrange(1, 255)}",
                rnd.randrange(1024, 65535) if l4 else 0,
                rnd.choice((80, 443, 53, 8080, rnd.randrange(1, 65535))) if l4 else 0,
                proto,
                f"0A:58:0A:80:{rnd.randrange(256):02X}:{rnd.randrange(256):02X}",
                f"0A:58:0A:80:{rnd.randrange(256):02X}:{rnd.randrange(256):02X}",
                2048, rnd.choice((0, 0, 0, 10, 46)), 0 if l4 else 8, 0,
                rnd.choice((16, 18, 24, 17, 2, 20)) if proto == 6 else 0,
                rnd.randrange(60, 2_000_000), rnd.randrange(1, 1500), 0,
                t0 + i, t0 + i + rnd.randrange(0, 5000), f"198.18.0.{agent + 1}",
                rnd.choice(("eth0", "veth1a2b3c", "cni0")), rnd.randrange(2),
                rnd.choice((["eth0"], ["veth1a2b3c", "cni0"])), rnd.choice(([0], [1], [0, 1])),
                rnd.randrange(2),
            ])
        batches.append(rows)
    return batches


class Agent(threading.Thread):
    """A simulated agent: sends pre-encoded batches with a window of unacknowledged ones."""

    def __init__(self, index: int, port: int, flows: int, window: int,
                 start: threading.Barrier) -> None:
        super().__init__(name=f"agent-{index}", daemon=True)
        self.index, self.port, self.flows, self.window = index, port, flows, window
        self.start_barrier = start
        self.acked = 0
        self.sent_rows = 0
        self.last_ack = 0.0
        self.error: BaseException | None = None
        self.bodies = self._encode_pool()

    def _encode_pool(self) -> list[tuple[bytes, int]]:
        self.pool_rows = make_batches(self.index)
        return [(self._body(rows), len(rows)) for rows in self.pool_rows]

    @staticmethod
    def _body(rows: list[list[Any]]) -> bytes:
        """A FLOWS payload without its leading ``{"seq":N``, which is prepended per send."""
        columns = json.dumps(list(BASE_COLUMNS), separators=(",", ":"))
        rows_text = json.dumps(rows, separators=(",", ":"))
        return f',"columns":{columns},"rows":{rows_text}}}'.encode()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _run(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rfile = sock.makefile("rb")
        sock.sendall(encode(FrameType.HELLO, {"token": TOKEN, "agent": {
            "ip": f"198.18.0.{self.index + 1}", "hostname": f"bench-{self.index}",
            "version": "bench"}}))
        frame = read_frame_sync(rfile)
        assert frame and frame[0] is FrameType.WELCOME, frame
        slots = threading.Semaphore(self.window)
        sizes: dict[int, int] = {}
        acks = threading.Thread(target=self._read_acks, args=(rfile, slots, sizes), daemon=True)
        acks.start()
        self.start_barrier.wait()
        seq = 0
        while self.sent_rows < self.flows:
            body, n = self.bodies[seq % len(self.bodies)]
            n = min(n, self.flows - self.sent_rows)
            if n < self.bodies[seq % len(self.bodies)][1]:
                body = self._body(self.pool_rows[seq % len(self.bodies)][:n])
            head = b'{"seq":%d' % seq
            slots.acquire()
            sizes[seq] = n
            sock.sendall(HEADER.pack(MAGIC, VERSION, FrameType.FLOWS, len(head) + len(body))
                         + head + body)
            self.sent_rows += n
            seq += 1
        acks.join()
        sock.sendall(encode(FrameType.BYE, {}))
        sock.close()

    def _read_acks(self, rfile: Any, slots: threading.Semaphore, sizes: dict[int, int]) -> None:
        while self.acked < self.flows:
            frame = read_frame_sync(rfile)
            if frame is None:
                raise RuntimeError(f"agent {self.index}: aggregator closed the connection")
            kind, payload = frame
            if kind is not FrameType.ACK:
                raise RuntimeError(f"agent {self.index}: unexpected {kind.name} {payload}")
            self.acked += sizes.pop(payload["seq"])
            self.last_ack = time.perf_counter()
            slots.release()


def sample_rss(pid: int, agents: list[Agent], total: int, stop: threading.Event,
               samples: list[tuple[float, int]]) -> None:
    proc = psutil.Process(pid)
    while not stop.is_set():
        try:
            rss = proc.memory_info().rss
        except psutil.Error:
            return
        samples.append((sum(a.acked for a in agents) / total, rss))
        stop.wait(0.05)


def rss_at(samples: list[tuple[float, int]], fraction: float) -> int:
    return next((rss for frac, rss in samples if frac >= fraction), samples[-1][1])


def run_aggregator(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    env = {**os.environ, "NETOBSERV_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
    core = args.core
    proc = subprocess.Popen(
        [sys.executable, *os.environ.get("BENCH_PYTHON_ARGS", "").split(),
         "-m", "netobserv_tui.aggregator", "--listen", "127.0.0.1:0",
         "--output", str(out), "--log-level", "WARNING"],
        stdout=subprocess.PIPE, env=env, text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    per_agent = [args.flows // args.agents + (i < args.flows % args.agents)
                 for i in range(args.agents)]
    barrier = threading.Barrier(args.agents + 1)
    agents = [Agent(i, ready["port"], n, args.window, barrier) for i, n in enumerate(per_agent)]
    for agent in agents:
        agent.start()
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    monitor = threading.Thread(target=sample_rss, args=(proc.pid, agents, args.flows, stop,
                                                        samples), daemon=True)
    barrier.wait()
    started = time.perf_counter()
    monitor.start()
    for agent in agents:
        agent.join()
        if agent.error:
            proc.kill()
            raise agent.error
    ingest = max(a.last_ack for a in agents) - started
    stop.set()
    monitor.join()
    proc.send_signal(signal.SIGTERM)
    t = time.perf_counter()
    closed = json.loads(proc.stdout.readline())
    proc.wait()
    close_s = time.perf_counter() - t
    assert closed["flows"] == args.flows, closed
    rows = subprocess.run(["sqlite3", closed["files"]["db"], "SELECT count(*) FROM flow"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert int(rows) == args.flows, rows
    with open(closed["files"]["json"], "rb") as fh:
        fh.seek(-3, os.SEEK_END)
        assert fh.read() == b"\n]\n"
    return {
        "flows": args.flows, "agents": args.agents, "seconds": round(ingest, 3),
        "flows_per_s": round(args.flows / ingest),
        "close_seconds": round(close_s, 3), "index_seconds": closed["index_seconds"],
        "rss_mb": {"10%": rss_at(samples, 0.1) >> 20, "50%": rss_at(samples, 0.5) >> 20,
                   "100%": rss_at(samples, 1.0) >> 20,
                   "peak": max(r for _, r in samples) >> 20},
        "db_mb": os.path.getsize(closed["files"]["db"]) >> 20,
        "json_mb": os.path.getsize(closed["files"]["json"]) >> 20,
    }


def raw_child(flows: int, agents: int, indexed: bool, path: str) -> None:
    """Insert the same rows with bare sqlite3 and print the rate (runs pinned to one core)."""
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    received = int(time.time())
    pools = []
    for agent in range(agents):
        pools.append([[(*[dumps(v) if isinstance(v, list) else v for v in row], received)
                       for row in rows] for rows in make_batches(agent)])
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    import sqlite_utils
    db = sqlite_utils.Database(conn)
    create_schema(db)
    if indexed:
        create_indexes(db)
    columns = (*BASE_COLUMNS, "TimeReceived")
    sql = (f"INSERT INTO flow ({', '.join(columns)}) "
           f"VALUES ({', '.join('?' * len(columns))})")
    done, seq = 0, 0
    started = time.perf_counter()
    while done < flows:
        rows = pools[seq % agents][(seq // agents) % POOL_BATCHES][:flows - done]
        conn.execute("BEGIN")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
        done += len(rows)
        seq += 1
    insert = time.perf_counter() - started
    started = time.perf_counter()
    if not indexed:
        create_indexes(db)
    index = time.perf_counter() - started
    conn.close()
    print(json.dumps({"insert_seconds": insert, "index_seconds": index}))


def run_raw(args: argparse.Namespace, out: Path, indexed: bool) -> dict[str, Any]:
    path = out / ("raw-indexed.db" if indexed else "raw.db")
    core = args.core
    res = subprocess.run(
        [sys.executable, __file__, "--raw-child", str(path), "--flows", str(args.flows),
         "--agents", str(args.agents)] + (["--indexed"] if indexed else []),
        capture_output=True, text=True, check=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    timing = json.loads(res.stdout)
    path.unlink()
    return {"flows_per_s": round(args.flows / timing["insert_seconds"]),
            "index_seconds": round(timing["index_seconds"], 3),
            "with_index_flows_per_s": round(
                args.flows / (timing["insert_seconds"] + timing["index_seconds"]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flows", type=int, default=2_000_000)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--window", type=int, default=4, help="unacknowledged batches per agent")
    parser.add_argument("--core", type=int, default=0, help="core the aggregator is pinned to")
    parser.add_argument("--skip-indexed-raw", action="store_true",
                        help="skip the raw run with indexes maintained during inserts (slow)")
    parser.add_argument("--raw-child", metavar="DB", help=argparse.SUPPRESS)
    parser.add_argument("--indexed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_child:
        raw_child(args.flows, args.agents, args.indexed, args.raw_child)
        return
    others = set(range(os.cpu_count() or 1)) - {args.core}
    if others:
        os.sched_setaffinity(0, others)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        out = Path(tmp)
        agg = run_aggregator(args, out)
        print(f"aggregator: {agg['flows']:,} flows from {agg['agents']} agents in "
              f"{agg['seconds']:.2f} s = {agg['flows_per_s']:,} flows/s "
              f"(close {agg['close_seconds']:.2f} s, of which index {agg['index_seconds']:.2f} s)")
        print(f"aggregator RSS MiB: {agg['rss_mb']}  files: db {agg['db_mb']} MiB, "
              f"json {agg['json_mb']} MiB")
        raw = run_raw(args, out, indexed=False)
        print(f"raw sqlite3 executemany, same table (indexes at end): {raw['flows_per_s']:,} "
              f"rows/s; +index build {raw['index_seconds']:.2f} s -> "
              f"{raw['with_index_flows_per_s']:,} rows/s")
        result: dict[str, Any] = {"aggregator": agg, "raw": raw,
                                  "ratio": round(agg["flows_per_s"] / raw["flows_per_s"], 3)}
        end_to_end = agg["flows"] / (agg["seconds"] + agg["index_seconds"])
        result["ratio_with_index_build"] = round(
            end_to_end / raw["with_index_flows_per_s"], 3)
        if not args.skip_indexed_raw:
            raw_ix = run_raw(args, out, indexed=True)
            result["raw_indexes_maintained"] = raw_ix
            result["ratio_vs_indexes_maintained"] = round(
                agg["flows_per_s"] / raw_ix["flows_per_s"], 3)
            print(f"raw sqlite3 executemany, indexes maintained during inserts: "
                  f"{raw_ix['flows_per_s']:,} rows/s")
        print(f"ratio aggregator/raw: {result['ratio']} "
              f"(with index build: {result['ratio_with_index_build']})")
        print(json.dumps(result))


if __name__ == "__main__":
    main()
