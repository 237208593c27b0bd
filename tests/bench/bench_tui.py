"""TUI benchmark: keystroke-to-repaint latency of the live filter with 100,000 flows held, and
the TUI's CPU while 10,000 flows/s arrive, each against a baseline measured in the same run.

    python tests/bench/bench_tui.py [--rounds R] [--flows N] [--rate F] [--feed-seconds S]

About two minutes with the defaults on two cores (``--rounds 15``: about four).

Part 1, latency.  100,000 realistic records (TCP 60 %, DNS over UDP/53 20 %, other UDP 10 %,
ICMP 10 %; random addresses and source ports, Kubernetes names) are held twice:

* file mode: written by the real FlowWriter, opened with SqliteStore, the app in file mode
  (``netobserv open``);
* live mode: a real aggregator (``python -m netobserv_tui.aggregator``, as a local capture
  runs it) receives 99 % of them from the agents' real Exporter before the app starts; the
  app subscribes to its live stream with ``store=SqliteStore(<its db>)``, then the last 1 %
  is sent so that the live ring (1,000 rows) is full.

The app (``FlowsApp`` with defaults: 1,000 rows kept) runs headless (``run_test``,
160x48), with the garbage collector settings that ``netobserv`` gives it
(:func:`netobserv_tui.tui.collector.quiet_collector`; ``--default-collector``: Python's).
Each kind of key is pressed ``--rounds`` times, from the unfiltered Overview, after one
warm-up search (a store's first search also counts its columns):

* ``Enter <chip>``: the chip text is typed (its key events posted, then the screen let
  settle), then the clock starts and Enter is pressed (``pilot.press``);
* ``Right Right``: two Right presses posted back to back (a quick double press) go from the
  Overview to the DNS view through "Packet drops", whose search starts too;
* ``Escape``: clearing the chip of the previous round (the ring is shown again, no search);
* ``PageDown``: the next enrichment column set (the table is rebuilt, no search).

"Repainted" is the first screen update made once (a) the table was rebuilt with the new
result (``app.searches`` counted the search; for the keys that do not search,
``FlowTable.rebuilds`` moved) and (b) the DataTable measured its new rows (it does so when
idle, after the rows were added): the compositor rendered the update, and the benchmark
encodes it into terminal escape sequences as a real terminal would get them (headless
Textual skips that step; the bytes are dropped).  Columns: ``p50``/``p95`` (nearest rank:
with fewer than 20 rounds p95 is the slowest) of key -> repainted; ``search``, p50 of key ->
the search result handed to the UI thread; ``paint``, p50 of that -> repainted.  Baseline,
``bare``: the app's store call for the key (same predicate, limit 1000 and arguments,
recorded during the rounds) replayed on a warm ``SqliteStore`` with no UI, median of
``--baseline-repeats``; ``x bare`` = p50 / bare.  ``matched`` is the table's count of
matches, checked equal to the bare search's.  The time the cyclic garbage collector spent
in full collections during the rounds is given under each table.

Part 2, CPU.  A fresh aggregator subprocess per run; a feeder thread in this process sends
``--rate`` flows/s through the real Exporter (batches of rate/10 rows every 0.1 s, paced by
a monotonic clock) for ``--feed-seconds``.  The subscriber is another process:

* baseline: the plain ``LiveStream`` client consuming the frames, nothing else;
* ``FlowsApp`` subscribed to the aggregator with ``store=SqliteStore`` of its db, default
  ``refresh_interval`` and ``max_rows``, ``app.run(headless=True, size=(160, 48))``;
* the same with a field chip (``DstPort=53``) added once connected: every refresh interval
  the store's new rows are searched (``after=last_id``).

``CPU %`` = utime + stime of the subscriber process (psutil) over the steady window, / the
window's wall time, in % of one core; the window starts ``--warmup`` s after the first batch
and ends with the last one (``agg CPU %``: the aggregator's, same window).  ``RSS MiB``: the
subscriber's peak RSS (VmHWM) after the feed.  ``sent``: rows the aggregator acknowledged;
``got``: rows the subscriber received; ``dropped``: the aggregator's count of rows not sent
to it (the live stream is best effort: it pushes at most 2,000 rows per 0.25 s, and a slow
subscriber loses whole frames).  ``shown``: table rows at the end; ``rebuilds``: table
rebuilds over the run; ``searches``: store searches completed.
The last line printed is a JSON object with every number.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
# First, as in `netobserv`: the TUI package sets Textual's frame rate before Textual loads.
from netobserv_tui.tui import FPS  # noqa: E402, I001

from textual import constants, events  # noqa: E402
from textual.keys import _character_to_key  # noqa: E402
from textual.pilot import Pilot  # noqa: E402

from netobserv_tui.agent.exporter import Exporter  # noqa: E402
from netobserv_tui.aggregator.writers import FlowWriter  # noqa: E402
from netobserv_tui.model.fields import BASE_COLUMNS  # noqa: E402
from netobserv_tui.store import SearchResult, SqliteStore  # noqa: E402
from netobserv_tui.store.chips import FilterChips  # noqa: E402
from netobserv_tui.tui import app as app_module  # noqa: E402
from netobserv_tui.tui.app import FlowsApp  # noqa: E402
from netobserv_tui.tui.collector import quiet_collector  # noqa: E402
from netobserv_tui.tui.views import DNS, VIEWS  # noqa: E402
from netobserv_tui.tui.widgets import FlowTable  # noqa: E402

TOKEN = "bench-tui-token"
HEADER = {"target": "local host", "capture": "flows", "output": "bench/flow"}
SIZE = (160, 48)
LIMIT = 1000
COLUMNS = (*BASE_COLUMNS, "DnsId", "DnsFlagsResponseCode", "DnsLatencyMs", "DnsName",
           "SrcK8S_Name", "SrcK8S_Namespace", "DstK8S_Name", "DstK8S_Namespace")
#: Chip kinds of part 1: label, text typed.
CHIPS = (
    ("field, few rows", "SrcPort=40007"),
    ("field, many rows", "Proto=tcp"),
    ("keyword", "payments"),
    ("regex", r"/^10\.128\.1\d\./"),
)
LIVE_CHIP = "DstPort=53"
NAMESPACES = ("payments", "frontend", "checkout", "monitoring", "openshift-dns", "default")
DNS_NAMES = ("api.example.com.", "db.payments.svc.cluster.local.", "registry.local.",
             "kubernetes.default.svc.cluster.local.", "mirror.example.org.")
T0_MS = 1_764_097_458_000
TIMEOUT = 60.0


# ----------------------------------------------------------------- records


def make_rows(n: int, seed: int = 7, first: int = 0) -> list[list[Any]]:
    """Rows of ``COLUMNS``: 60 % TCP, 20 % DNS (UDP/53 with DNS fields), 10 % other UDP,
    10 % ICMP; random addresses (10.128.0-15.x -> 10.129.0-15.x) and source ports."""
    rnd = random.Random(seed)
    rows = []
    for i in range(first, first + n):
        kind = i % 10
        proto = 6 if kind < 6 else 17 if kind < 9 else 1
        dns = kind in (6, 7)
        l4 = proto != 1
        src_ns, dst_ns = rnd.choice(NAMESPACES), rnd.choice(NAMESPACES)
        start = T0_MS + i * 3
        values: dict[str, Any] = {
            "SrcAddr": f"10.128.{rnd.randrange(16)}.{rnd.randrange(1, 255)}",
            "DstAddr": "172.30.0.10" if dns
            else f"10.129.{rnd.randrange(16)}.{rnd.randrange(1, 255)}",
            "SrcPort": rnd.randrange(32768, 61000) if l4 else 0,
            "DstPort": 53 if dns else rnd.choice((443, 80, 8080, 5432, 6443)) if proto == 6
            else rnd.choice((4789, 123, 514)) if l4 else 0,
            "Proto": proto,
            "SrcMac": f"0A:58:0A:80:{rnd.randrange(256):02X}:{rnd.randrange(256):02X}",
            "DstMac": f"0A:58:0A:81:{rnd.randrange(256):02X}:{rnd.randrange(256):02X}",
            "Etype": 2048, "Dscp": rnd.choice((0, 0, 0, 10, 46)),
            "IcmpType": 0 if l4 else 8, "IcmpCode": 0,
            "Flags": rnd.choice((16, 18, 24, 17, 2, 20)) if proto == 6 else 0,
            "Bytes": rnd.randrange(60, 200_000), "Packets": rnd.randrange(1, 150), "Sampling": 0,
            "TimeFlowStartMs": start, "TimeFlowEndMs": start + rnd.randrange(0, 5000),
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
        rows.append([values[c] for c in COLUMNS])
    return rows


def predicate_of(text: str) -> Callable[[Any], bool]:
    chips, error = FilterChips().add(text)
    assert error is None, error
    return chips.matches


# ----------------------------------------------------------------- figures


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


class GcWatch:
    """Full (generation 2) collections of the cyclic garbage collector: count and time."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.longest = 0.0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
            return
        spent = time.perf_counter() - self._started
        self.count += 1
        self.seconds += spent
        self.longest = max(self.longest, spent)

    def __enter__(self) -> GcWatch:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def as_dict(self) -> dict[str, Any]:
        return {"gen2_collections": self.count, "gen2_seconds": round(self.seconds, 3),
                "gen2_longest_ms": round(self.longest * 1000, 1)}


@contextmanager
def collector(default: bool) -> Iterator[None]:
    """The collector settings of the app as ``netobserv`` runs it (or Python's defaults)."""
    if default:
        yield
        return
    with quiet_collector():
        yield


# ----------------------------------------------------------------- the instrumented app


class RecordingStore(SqliteStore):
    """The app's store, remembering each search call (to replay it as the baseline)."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(path)
        self.calls: list[tuple[Any, int, dict[str, Any]]] = []

    def search(self, match: Any, limit: int, **kwargs: Any) -> SearchResult:
        result = super().search(match, limit, **kwargs)
        self.calls.append((match, limit, kwargs))
        return result

    def full_search_since(self, start: int) -> tuple[Any, int, dict[str, Any]]:
        """The last search of the whole store (``after`` 0) made since call ``start``."""
        full = [c for c in self.calls[start:] if c[0] is not None and not c[2].get("after")]
        assert full, "the app made no search"
        return full[-1]


def settled(table: FlowTable) -> bool:
    """The DataTable measured the rows it was given (it does so when its queue is idle)."""
    return not table._require_update_dimensions


class BenchApp(FlowsApp):
    """FlowsApp plus timestamps: when a search result reaches the table, and the screen
    updates, which are also encoded as a terminal would receive them (headless skips it)."""

    #: Relative paths are taken from the subclass's module: this one is elsewhere.
    CSS_PATH = str(Path(app_module.__file__).with_name(FlowsApp.CSS_PATH))

    def __init__(self, *args: Any, on_connected: Callable[[BenchApp], None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.paints = 0
        self.encoded_bytes = 0
        self.result_at = 0.0
        self.painted_at = 0.0
        self._until: Callable[[], bool] | None = None
        self._painted = asyncio.Event()
        self._on_connected = on_connected

    @property
    def table(self) -> FlowTable:
        return self._table  # also after the app exited (no DOM query)

    def expect_paint(self, until: Callable[[], bool]) -> asyncio.Event:
        """The event set at the first screen update made while ``until()`` holds."""
        self._painted = asyncio.Event()
        self._until = until
        return self._painted

    def _display(self, screen: Any, renderable: Any) -> None:
        super()._display(screen, renderable)
        if renderable is None or self._batch_count:
            return
        render = getattr(renderable, "render_segments", None)
        if render is not None:
            self.encoded_bytes += len(render(self.console))
        self.paints += 1
        if self._until is not None and self._until():
            self.painted_at = time.perf_counter()
            self._until = None
            self._painted.set()

    def _search_done(self, generation: int, after: int, result: SearchResult) -> None:
        before = self.searches
        arrived = time.perf_counter()
        super()._search_done(generation, after, result)
        if self.searches != before and after == 0:  # not the live filter's timer
            self.result_at = arrived

    def on_stream_connected(self, message: Any) -> None:
        super().on_stream_connected(message)
        if self._on_connected is not None:
            self._on_connected(self)

    def searching(self) -> bool:
        return any(w.group == "search" and not w.is_finished for w in self.workers)


def post_keys(app: FlowsApp, *keys: str) -> None:
    """Key events as the terminal driver posts them, without the pilot's wait after each."""
    for key in keys:
        if len(key) == 1:
            event = events.Key(key if key.isalnum() else _character_to_key(key), key)
        else:
            event = events.Key(key, None)
        event.set_sender(app)
        app.post_message(event)


async def wait_for(what: str, condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.005)


async def painted(app: BenchApp, event: asyncio.Event, what: str) -> float:
    try:
        await asyncio.wait_for(event.wait(), TIMEOUT)
    except TimeoutError:
        raise TimeoutError(f"no repaint within {TIMEOUT:g} s after {what}: "
                           f"{app.status_text()}") from None
    return app.painted_at


async def quiet(app: BenchApp, pilot: Pilot[Any]) -> None:
    """No search running (a superseded one finishes its scan) and the screen idle."""
    await wait_for("searches to end", lambda: not app.searching())
    await pilot.pause()


# ----------------------------------------------------------------- part 1


async def type_text(app: BenchApp, pilot: Pilot[Any], text: str) -> None:
    post_keys(app, *text)
    await pilot.pause()
    field = app._filter_bar.input
    await wait_for(f"{text!r} typed", lambda: field.value == text)


async def reset(app: BenchApp, pilot: Pilot[Any], samples: list[float]) -> None:
    """Escape (or back to the Overview) and wait until the ring is painted again."""
    table = app.table
    if app.view_state.view is not VIEWS[0]:
        event = app.expect_paint(lambda: app.view_state.view is VIEWS[0] and settled(table))
        post_keys(app, *["left"] * app.view_state.view_index)
        await painted(app, event, "Left")
    else:
        target = table.rebuilds + 1
        event = app.expect_paint(
            lambda: not table.filtered and table.rebuilds >= target and settled(table))
        started = time.perf_counter()
        await pilot.press("escape")
        samples.append(await painted(app, event, "Escape") - started)
    await quiet(app, pilot)


Round = tuple[float, float, int, tuple[Any, int, dict[str, Any]]]


def store_of(app: BenchApp) -> RecordingStore:
    store = app._store
    assert isinstance(store, RecordingStore)
    return store


async def chip_round(app: BenchApp, pilot: Pilot[Any], text: str) -> Round:
    await type_text(app, pilot, text)
    table = app.table
    calls = len(store_of(app).calls)
    target = app.searches + 1
    event = app.expect_paint(lambda: app.searches >= target and settled(table))
    started = time.perf_counter()
    await pilot.press("enter")
    done = await painted(app, event, f"Enter {text}")
    assert app.chips.texts == (text,), app.chips.texts
    call = store_of(app).full_search_since(calls)
    return done - started, app.result_at - started, table.matched or 0, call


async def view_round(app: BenchApp, pilot: Pilot[Any]) -> Round:
    table = app.table
    calls = len(store_of(app).calls)
    target = app.searches + 1
    event = app.expect_paint(
        lambda: app.searches >= target and app.view_state.view is DNS and settled(table))
    started = time.perf_counter()
    post_keys(app, "right", "right")
    done = await painted(app, event, "Right Right")
    call = store_of(app).full_search_since(calls)
    return done - started, app.result_at - started, table.matched or 0, call


async def page_round(app: BenchApp, pilot: Pilot[Any]) -> float:
    table = app.table
    target = table.rebuilds + 1
    wanted = app.view_state.next_enrichment()
    event = app.expect_paint(
        lambda: app.view_state == wanted and table.rebuilds >= target and settled(table))
    started = time.perf_counter()
    await pilot.press("pagedown")
    return await painted(app, event, "PageDown") - started


async def measure_keys(app: BenchApp, pilot: Pilot[Any], rounds: int) -> dict[str, Any]:
    """Every kind of key, ``rounds`` times each, from the unfiltered Overview."""
    out: dict[str, Any] = {}
    escapes: list[float] = []
    await chip_round(app, pilot, CHIPS[0][1])  # warm-up: the store counts its columns
    await reset(app, pilot, [])
    with GcWatch() as watch:
        started = time.perf_counter()
        await measure_rounds(app, pilot, rounds, out, escapes)
        wall = time.perf_counter() - started
    out["gc"] = {**watch.as_dict(), "wall_seconds": round(wall, 1)}
    return out


async def measure_rounds(app: BenchApp, pilot: Pilot[Any], rounds: int, out: dict[str, Any],
                         escapes: list[float]) -> None:
    cases: list[tuple[str, str | None]] = [(f"Enter {t}", t) for _, t in CHIPS]
    cases.append(("Right Right -> DNS view", None))
    for name, text in cases:
        totals, searches, matched = [], [], set()
        for _ in range(rounds):
            if text is None:
                total, search, count, call = await view_round(app, pilot)
            else:
                total, search, count, call = await chip_round(app, pilot, text)
            totals.append(total)
            searches.append(search)
            matched.add(count)
            await reset(app, pilot, escapes)
        assert len(matched) == 1, f"{name}: the match count changed between rounds: {matched}"
        out[name] = {"text": text, "latency": totals, "search": searches,
                     "paint": [t - s for t, s in zip(totals, searches, strict=True)],
                     "matched": matched.pop(), "call": call}
    out["Escape (clear chip)"] = {"latency": escapes}
    pages = [await page_round(app, pilot) for _ in range(rounds)]
    out["PageDown (no search)"] = {"latency": pages}


def bare_searches(path: Path | str, keys: dict[str, Any],
                  repeats: int) -> dict[str, dict[str, Any]]:
    """The store calls the app made for each key (same predicate, limit and arguments),
    replayed on a warm SqliteStore alone."""
    store = SqliteStore(path)
    store.search(lambda record: False, LIMIT)  # warm: the per-column counts
    out = {}
    for name, data in keys.items():
        if "call" not in data:  # keys that do not search; the GC figures
            continue
        match, limit, kwargs = data["call"]
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            result = store.search(match, limit, **kwargs)
            times.append(time.perf_counter() - started)
        out[name] = {"seconds": statistics.median(times), "matched": result.matched}
    store.close()
    return out


def report_keys(mode: str, flows: int, keys: dict[str, Any],
                bare: dict[str, dict[str, Any]]) -> dict[str, Any]:
    print(f"\n{mode}: key -> repainted, {flows:,} flows held")
    head = (f"{'key':<26} {'matched':>8} {'n':>3} {'p50 ms':>8} {'p95 ms':>8} {'search':>8} "
            f"{'paint':>7} {'bare ms':>8} {'x bare':>7}")
    print(head)
    print("-" * len(head))
    out: dict[str, Any] = {}
    for name, data in keys.items():
        if name == "gc":
            continue
        lat = data["latency"]
        p50, p95 = pct(lat, 50), pct(lat, 95)
        base = bare.get(name)
        search = pct(data["search"], 50) if "search" in data else None
        paint = pct(data["paint"], 50) if "paint" in data else None
        if base is not None:
            assert base["matched"] == data["matched"], (name, base, data["matched"])
        ratio = p50 / base["seconds"] if base else None
        matched = f"{data['matched']:,}" if "matched" in data else "-"
        print(f"{name:<26} {matched:>8} {len(lat):>3} {ms(p50):>8} {ms(p95):>8} "
              f"{ms(search):>8} {ms(paint):>7} {ms(base['seconds'] if base else None):>8} "
              f"{'-' if ratio is None else f'x{ratio:.2f}':>7}")
        out[name] = {"p50_ms": round(p50 * 1000, 1), "p95_ms": round(p95 * 1000, 1),
                     "search_p50_ms": None if search is None else round(search * 1000, 1),
                     "paint_p50_ms": None if paint is None else round(paint * 1000, 1),
                     "bare_search_ms": None if base is None else round(base["seconds"] * 1000, 1),
                     "ratio_vs_bare": None if ratio is None else round(ratio, 2),
                     "matched": data.get("matched"), "rounds": len(lat)}
    gcs = keys["gc"]
    print(f"cyclic GC in this process over the {gcs['wall_seconds']:g} s of rounds: "
          f"{gcs['gen2_collections']} full collections, {gcs['gen2_seconds']:.2f} s in all, "
          f"longest {gcs['gen2_longest_ms']:.0f} ms")
    out["gc"] = gcs
    return out


async def file_mode(rows: list[list[Any]], tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    writer = FlowWriter(tmp / "file")
    for i in range(0, len(rows), 5000):
        writer.write_batch(COLUMNS, rows[i:i + 5000])
    writer.close()
    store = RecordingStore(writer.db_path)
    app = BenchApp(None, {"target": "file", "output": str(writer.db_path)}, store=store)
    with collector(args.default_collector):
        async with app.run_test(size=SIZE) as pilot:
            table = app.table
            await wait_for("the file's latest rows", lambda: table.received == len(rows)
                           and len(table.latest()) == LIMIT and table.row_count > 0
                           and settled(table))
            await quiet(app, pilot)
            keys = await measure_keys(app, pilot, args.rounds)
            app.exit("done")
    store.close()
    bare = bare_searches(writer.db_path, keys, args.baseline_repeats)
    return report_keys("Part 1, file mode (netobserv open)", len(rows), keys, bare)


async def live_mode(rows: list[list[Any]], tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    ring = min(LIMIT, len(rows))
    with aggregator(tmp / "live") as agg:
        exporter = Exporter("127.0.0.1", agg["port"], TOKEN, AGENT)
        await asyncio.to_thread(exporter.connect)
        try:
            await asyncio.to_thread(send_all, exporter, rows[:-ring])
            db = agg["files"]["db"]
            store = RecordingStore(db)
            app = BenchApp(("127.0.0.1", agg["port"], TOKEN), HEADER, store=store)
            with collector(args.default_collector):
                async with app.run_test(size=SIZE) as pilot:
                    table = app.table
                    await wait_for("the live stream", lambda: app.connected)
                    await asyncio.to_thread(send_all, exporter, rows[-ring:])
                    await wait_for("the last rows, live", lambda: table.received >= ring
                                   and len(table.latest()) == ring and table.row_count > 0
                                   and settled(table))
                    await quiet(app, pilot)
                    keys = await measure_keys(app, pilot, args.rounds)
                    app.exit("done")
            store.close()
            bare = bare_searches(db, keys, args.baseline_repeats)
        finally:
            await asyncio.to_thread(exporter.finish, 10.0)
    return report_keys("Part 1, live mode (local capture: aggregator + live stream + its db)",
                       len(rows), keys, bare)


# ----------------------------------------------------------------- processes

AGENT = {"ip": "198.18.0.254", "hostname": "bench-node", "version": "bench"}


class Lines:
    """A child's stdout, line by line, read by a thread (for timeouts)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            for line in stdout:
                self._lines.put(line)
            self._lines.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def json(self, what: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no {what} line within {timeout:g} s") from None
        if line is None:
            raise RuntimeError(f"the process ended before its {what} line")
        return dict(json.loads(line))


def stop_process(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def aggregator(out: Path) -> Iterator[dict[str, Any]]:
    """The aggregator as a local capture runs it; yields its ready line, then (after the
    block) its closed summary under ``"closed"``."""
    env = {**os.environ, "NETOBSERV_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "netobserv_tui.aggregator", "--listen", "127.0.0.1:0",
         "--output", str(out), "--log-level", "WARNING", "--grace", "2"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env, text=True)
    lines = Lines(proc)
    try:
        ready = lines.json("aggregator ready")
        ready["pid"] = proc.pid
        yield ready
        proc.send_signal(signal.SIGTERM)
        ready["closed"] = lines.json("aggregator closed")
        proc.wait(15)
    finally:
        stop_process(proc, signal.SIGKILL)


def send_all(exporter: Exporter, rows: list[list[Any]]) -> None:
    exporter.submit(COLUMNS, rows)
    deadline = time.monotonic() + TIMEOUT
    while exporter.pending_rows:
        if time.monotonic() > deadline:
            raise TimeoutError("the aggregator did not acknowledge the rows")
        exporter.pump(wait=0.05)


class Feeder(threading.Thread):
    """``rate`` flows/s through the real Exporter: a batch every 0.1 s on a monotonic clock."""

    TICK = 0.1

    def __init__(self, port: int, rate: int, seconds: float, pool: list[list[list[Any]]]) -> None:
        super().__init__(name="feeder", daemon=True)
        self.exporter = Exporter("127.0.0.1", port, TOKEN, AGENT)
        self.exporter.connect()
        self.ticks = round(seconds / self.TICK)
        self.pool = pool
        self.started_at = 0.0
        self.ended_at = 0.0
        self.late = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            exporter = self.exporter
            self.started_at = time.monotonic()
            for tick in range(self.ticks):
                due = self.started_at + tick * self.TICK
                while (left := due - time.monotonic()) > 0:
                    exporter.pump(wait=left)
                self.late = max(self.late, -left)
                exporter.submit(COLUMNS, self.pool[tick % len(self.pool)])
                exporter.pump()
            self.ended_at = time.monotonic()
            if not exporter.finish(TIMEOUT):
                raise RuntimeError("the aggregator did not acknowledge every batch")
        except BaseException as exc:  # reported by the main thread
            self.error = exc


def peak_rss_kib(pid: int) -> int:
    """VmHWM: the peak RSS of the process's own address space (``ru_maxrss`` would be
    inherited across fork and exec from a larger parent)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def run_feed(kind: str, args: argparse.Namespace, tmp: Path,
             pool: list[list[list[Any]]]) -> dict[str, Any]:
    """One aggregator, one subscriber process (``kind``), one feed; the CPU of both."""
    with aggregator(tmp / f"feed-{kind}") as agg:
        if kind == "stream":
            command = [sys.executable, "-c", STREAM_CHILD, str(agg["port"]), TOKEN]
        else:
            command = [sys.executable, __file__, "--child", kind, "--port", str(agg["port"]),
                       "--db", agg["files"]["db"]]
            if args.default_collector:
                command.append("--default-collector")
        child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        lines = Lines(child)
        try:
            lines.json(f"{kind} ready")
            time.sleep(0.5)
            feeder = Feeder(agg["port"], args.rate, args.feed_seconds, pool)
            me, agg_proc = psutil.Process(child.pid), psutil.Process(agg["pid"])
            feeder.start()
            time.sleep(max(0.0, feeder.started_at + args.warmup - time.monotonic()))
            cpu0, agg0, wall0 = cpu_seconds(me), cpu_seconds(agg_proc), time.monotonic()
            while feeder.is_alive() and not feeder.ended_at:
                time.sleep(0.01)
            cpu1, agg1, wall1 = cpu_seconds(me), cpu_seconds(agg_proc), time.monotonic()
            feeder.join(TIMEOUT)
            if feeder.error is not None:
                raise feeder.error
            time.sleep(1.0)  # the last pushes of the live stream
            peak_kib = peak_rss_kib(child.pid)
            agg_peak_kib = peak_rss_kib(agg["pid"])
            assert child.stdin is not None
            child.stdin.write("stop\n")
            child.stdin.flush()
            result = lines.json(f"{kind} result")
            child.wait(15)
        finally:
            stop_process(child)
    wall = wall1 - wall0
    closed = agg["closed"]
    return {**result, "kind": kind, "window_s": round(wall, 2), "peak_rss_kib": peak_kib,
            "cpu_s": round(cpu1 - cpu0, 3), "cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1),
            "aggregator_cpu_pct": round(100 * (agg1 - agg0) / wall, 1),
            "aggregator_peak_rss_kib": agg_peak_kib,
            "aggregator_reported_max_rss_kib": closed.get("max_rss_kib"),
            "sent": feeder.exporter.acked_rows, "written": closed["flows"],
            "dropped": closed["live_rows_dropped"],
            "feed_s": round(feeder.ended_at - feeder.started_at, 2),
            "late_ms": round(feeder.late * 1000, 1)}


def part2(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    per_batch = max(1, round(args.rate * Feeder.TICK))
    pool = [make_rows(per_batch, seed=100 + k, first=k * per_batch) for k in range(20)]
    runs = [run_feed(kind, args, tmp, pool) for kind in ("stream", "tui", "tui-chip")]
    base = runs[0]["cpu_pct"]
    print(f"\nPart 2: subscriber CPU while {args.rate:,} flows/s arrive for "
          f"{args.feed_seconds:g} s (window: {runs[0]['window_s']:g} s after a "
          f"{args.warmup:g} s warm-up)")
    head = (f"{'subscriber':<28} {'CPU %':>6} {'x base':>7} {'RSS MiB':>8} {'sent':>8} "
            f"{'got':>8} {'dropped':>8} {'shown':>6} {'rebuilds':>8} {'searches':>8} "
            f"{'agg CPU %':>9}")
    print(head)
    print("-" * len(head))
    names = {"stream": "LiveStream client (base)", "tui": "FlowsApp",
             "tui-chip": f"FlowsApp + chip {LIVE_CHIP}"}
    for run in runs:
        ratio = run["cpu_pct"] / base if base else float("nan")
        run["ratio_vs_stream"] = round(ratio, 2)
        print(f"{names[run['kind']]:<28} {run['cpu_pct']:>6.1f} {f'x{ratio:.2f}':>7} "
              f"{run['peak_rss_kib'] / 1024:>8.0f} {run['sent']:>8,} {run['received']:>8,} "
              f"{run['dropped']:>8,} {run.get('shown', '-'):>6} {run.get('rebuilds', '-'):>8} "
              f"{run.get('searches', '-'):>8} {run['aggregator_cpu_pct']:>9.1f}")
    for run in runs:
        if run["kind"] == "stream":
            continue
        print(f"{names[run['kind']]}: status line: {run['status']}")
        if run["kind"] == "tui-chip":
            print(f"  {run['matched']:,} matches counted by the TUI, "
                  f"{run['stored_matches']:,} in the file")
        print(f"  cyclic GC over the whole run: {run['gen2_collections']} full collections, "
              f"{run['gen2_seconds']:.2f} s, longest {run['gen2_longest_ms']:.0f} ms")
    late = max(run["late_ms"] for run in runs)
    print(f"feeder: batches of {per_batch:,} rows every {Feeder.TICK:g} s, at most "
          f"{late:.1f} ms late")
    return {run["kind"]: run for run in runs}


# ----------------------------------------------------------------- children


def emit(out: Any, **fields: Any) -> None:
    out.write(json.dumps(fields) + "\n")
    out.flush()


def on_stdin_line(callback: Callable[[], None]) -> None:
    def wait() -> None:
        sys.stdin.readline()
        callback()

    threading.Thread(target=wait, daemon=True).start()


def tui_child(port: int, db: str, chip: str | None, default: bool) -> None:
    out = os.fdopen(os.dup(1), "w")  # Textual redirects sys.stdout while it runs

    def connected(app: BenchApp) -> None:
        if chip is not None:
            assert app.add_filter(chip) is None
        emit(out, event="ready")

    store = SqliteStore(db)
    app = BenchApp(("127.0.0.1", port, TOKEN), HEADER, store=store, on_connected=connected)
    on_stdin_line(lambda: app.request_stop("bench"))
    with GcWatch() as watch, collector(default):
        app.run(headless=True, size=SIZE)
    table = app.table
    matches = SqliteStore(db).search(predicate_of(chip), 0).matched if chip else None
    emit(out, received=table.received, shown=table.row_count, rebuilds=table.rebuilds,
         searches=app.searches, matched=table.matched, stored_matches=matches,
         paints=app.paints, status=app.status_text(), **watch.as_dict())
    store.close()


#: The baseline subscriber, run with ``python -c`` so that it imports only the stream client
#: (its RSS is then that of a plain client, not of this benchmark's imports).
STREAM_CHILD = """
import asyncio, json, sys, threading
from netobserv_tui.model.stream import FlowBatch, LiveStream

async def main(port, token):
    received = frames = 0
    loop = asyncio.get_running_loop()
    async with LiveStream("127.0.0.1", port, token) as stream:
        task = asyncio.current_task()
        def stop():
            sys.stdin.readline()
            loop.call_soon_threadsafe(task.cancel)
        threading.Thread(target=stop, daemon=True).start()
        print(json.dumps({"event": "ready"}), flush=True)
        try:
            async for frame in stream:
                if isinstance(frame, FlowBatch):
                    received += len(frame.rows)
                    frames += 1
        except asyncio.CancelledError:
            pass
    print(json.dumps({"received": received, "frames": frames}), flush=True)

asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
"""


def child(args: argparse.Namespace) -> None:
    tui_child(args.port, args.db, LIVE_CHIP if args.child == "tui-chip" else None,
              args.default_collector)


# ----------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flows", type=int, default=100_000, help="flows held in part 1")
    parser.add_argument("--rounds", type=int, default=6, help="presses per kind of key")
    parser.add_argument("--baseline-repeats", type=int, default=3)
    parser.add_argument("--rate", type=int, default=10_000, help="flows/s fed in part 2")
    parser.add_argument("--feed-seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds of feed before the CPU window starts")
    parser.add_argument("--skip-keys", action="store_true", help="skip part 1")
    parser.add_argument("--default-collector", action="store_true",
                        help="run the app with Python's default garbage collector settings "
                             "instead of the TUI's (netobserv's quiet_collector)")
    parser.add_argument("--skip-live-keys", action="store_true",
                        help="part 1 in file mode only")
    parser.add_argument("--skip-cpu", action="store_true", help="skip part 2")
    parser.add_argument("--child", choices=("tui", "tui-chip"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    result: dict[str, Any] = {"bench": "tui", "flows": args.flows, "rounds": args.rounds,
                              "fps": constants.MAX_FPS}
    print(f"Textual's screen updates: at most {constants.MAX_FPS}/s (netobserv's: {FPS})")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-tui-") as tmp:
        rows = make_rows(args.flows) if not args.skip_keys else []
        # The generated rows are the benchmark's, not the app's (netobserv open holds none
        # of them): out of the cyclic collector's walks, so that a full collection costs
        # what it costs the app.
        gc.freeze()
        if not args.skip_keys:
            result["file"] = asyncio.run(file_mode(rows, Path(tmp), args))
        if not args.skip_keys and not args.skip_live_keys:
            result["live"] = asyncio.run(live_mode(rows, Path(tmp), args))
        if not args.skip_cpu:
            result["cpu"] = part2(args, Path(tmp))
    print(f"\n(total {time.monotonic() - started:.0f} s)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
