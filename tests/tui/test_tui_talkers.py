"""The Top talkers view: what it lists for a saved lab capture, Enter filters the flows to
exactly a talker's, live from the latest flows when the app has no file (a cluster
capture's stream); the header's bytes/s sparkline; a snapshot of the view."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fixture_capture import fixture_capture, fixture_records
from live_helpers import TOKEN, base_record, live_capture
from textual.pilot import Pilot
from tui_helpers import FakeAggregator, wait_until

from netobserv_tui.store import RemoteStore, open_store
from netobserv_tui.tui.app import FlowsApp
from netobserv_tui.tui.talkers import TalkersList
from netobserv_tui.tui.widgets import CaptureHeader, FlowTable
from netobserv_tui.tui.widgets.filter_bar import FilterBar

SIZE = (160, 40)

LAB_ROWS = [
    ["1", "fd00:198:18::10", "7.6 kB", "53.6%", "70", "13",
     "fd00:198:18::11 5.1 kB, fd00:198:18::12 2.4 kB", "/^fd00:198:18::10$/"],
    ["2", "198.18.0.10", "6.5 kB", "46.4%", "75", "18",
     "198.18.0.11 5.9 kB, 198.18.0.12 624 B", r"/^198\.18\.0\.10$/"],
    ["3", "198.18.0.11", "5.9 kB", "42.0%", "67", "13", "198.18.0.10 5.9 kB",
     r"/^198\.18\.0\.11$/"],
    ["4", "fd00:198:18::11", "5.1 kB", "36.3%", "48", "8", "fd00:198:18::10 5.1 kB",
     "/^fd00:198:18::11$/"],
    ["5", "fd00:198:18::12", "2.4 kB", "17.3%", "22", "5", "fd00:198:18::10 2.4 kB",
     "/^fd00:198:18::12$/"],
    ["6", "198.18.0.12", "624 B", "4.4%", "8", "5", "198.18.0.10 624 B",
     r"/^198\.18\.0\.12$/"],
]


def rows(app: FlowsApp) -> list[list[str]]:
    shown = app.query_one(TalkersList)
    return [[cell.plain for cell in shown.get_row_at(row)] for row in range(shown.row_count)]


async def open_talkers(pilot: Pilot[str], app: FlowsApp) -> None:
    await pilot.press("left", "left", "left")  # Overview -> Findings -> Raw -> Top talkers
    assert app.view_state.title() == "Top talkers"
    await wait_until(pilot, lambda: app.talkers_runs > 0, "the talkers")


def saved_app(tmp_path: Path, json_file: bool = False) -> FlowsApp:
    writer = fixture_capture(tmp_path)
    path = writer.json_path if json_file else writer.db_path
    return FlowsApp(None, {"output": "lab.db"}, store=open_store(path), refresh_interval=0.05)


async def test_saved_capture_lists_its_talkers(tmp_path: Path) -> None:
    app = saved_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await open_talkers(pilot, app)
        assert rows(app) == LAB_ROWS
        talkers_list = app.query_one(TalkersList)
        assert talkers_list.display and talkers_list.has_focus
        assert not app.query_one(FlowTable).display
        assert app.status_text() == (
            "Top talkers · top 6 by address in the whole capture; Enter filters the flows "
            "to the one selected")
        await pilot.press("right")
        assert app.view_state.title() == "Raw"
        assert app.query_one(FlowTable).display and not talkers_list.display


async def test_json_capture_has_the_same_talkers(tmp_path: Path) -> None:
    app = saved_app(tmp_path, json_file=True)
    async with app.run_test(size=SIZE) as pilot:
        await open_talkers(pilot, app)
        assert rows(app) == LAB_ROWS


async def test_enter_filters_the_table_to_exactly_the_talker(tmp_path: Path) -> None:
    records = fixture_records()
    app = saved_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await open_talkers(pilot, app)
        await pilot.press("down", "enter")  # 198.18.0.10
        assert app.chips.texts == (r"/^198\.18\.0\.10$/",)
        assert app.view_state.title() == "Overview · IP & port"
        table = app.query_one(FlowTable)
        mine = [r for r in records if "198.18.0.10" in (r["SrcAddr"], r["DstAddr"])]
        assert len(mine) == 70
        await wait_until(pilot, lambda: table.matched == 70 and len(table.latest()) == 70,
                         "the talker's flows")
        key = ("SrcAddr", "SrcPort", "DstAddr", "DstPort", "Proto", "Interface",
               "TimeFlowStartMs", "TimeFlowEndMs", "Bytes")
        held = sorted(tuple(r[k] for k in key) for r in table.latest())
        assert held == sorted(tuple(r[k] for k in key) for r in mine)
        # Back in the view, the empty filter line's Enter chooses too.
        await pilot.press("left", "left", "left")
        app.query_one(TalkersList).move_cursor(row=5)
        app.query_one("#filter-input").focus()
        await pilot.press("enter")
        assert app.chips.texts == (r"/^198\.18\.0\.12$/",)
        await wait_until(pilot, lambda: table.matched == 16, "198.18.0.12's flows")


async def test_without_a_file_talkers_come_from_the_latest_flows() -> None:
    aggregator = FakeAggregator()
    await aggregator.start()
    try:
        app = FlowsApp(("127.0.0.1", aggregator.port, "s3cret"), {"target": "cluster"},
                       refresh_interval=0.05, talkers_interval=0.1)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.connected, "the live stream")
            await aggregator.send_flows([base_record(0), base_record(1)])
            await wait_until(pilot, lambda: len(app.query_one(FlowTable).ring()) == 2,
                             "the flows")
            await open_talkers(pilot, app)
            await wait_until(pilot, lambda: len(rows(app)) == 3, "the talkers")
            assert [row[1:6] for row in rows(app)] == [
                ["198.18.0.20", "2.0 kB", "100.0%", "3", "2"],
                ["198.18.0.11", "1.0 kB", "50.0%", "2", "1"],
                ["198.18.0.10", "1.0 kB", "50.0%", "1", "1"],
            ]
            assert app.status_text() == (
                "Top talkers · top 3 by address in the latest 2 flows held here (the whole "
                "capture's come with its SQLite file: netobserv open); Enter filters the "
                "flows to the one selected")
            # Live: a new flow is counted at the next computation.
            await aggregator.send_flows([base_record(2, Bytes=5000)])
            await wait_until(pilot, lambda: rows(app)[0][1:3] == ["198.18.0.20", "7.0 kB"],
                             "the new flow")
            assert rows(app)[1][1:3] == ["198.18.0.12", "5.0 kB"]
    finally:
        await aggregator.close()


async def test_a_cluster_capture_gets_the_whole_captures_talkers_from_its_aggregator(
    tmp_path: Path,
) -> None:
    """The table holds the latest 3 flows; the talkers are the aggregator's, over its file:
    every one of the 8 flows counted."""
    async with live_capture(tmp_path) as capture:
        store = RemoteStore("127.0.0.1", capture.aggregator.port, TOKEN)
        app = capture.app(store=store, max_rows=3, refresh_interval=0.05,
                          talkers_interval=0.1)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.connected, "the live stream")
            await capture.send([base_record(i, DstPort=9000 + i) for i in range(8)])
            await wait_until(pilot, lambda: len(app.query_one(FlowTable).ring()) == 3,
                             "the latest flows")
            await open_talkers(pilot, app)
            await wait_until(pilot, lambda: rows(app) and rows(app)[0][5] == "8",
                             "the whole capture's talkers")
            # base_record(i): 1000 + i bytes, 1 + i % 7 packets, from 198.18.0.(10 + i % 4).
            assert [row[1:6] for row in rows(app)] == [
                ["198.18.0.20", "8.0 kB", "100.0%", "29", "8"],
                ["198.18.0.13", "2.0 kB", "25.0%", "5", "2"],
                ["198.18.0.12", "2.0 kB", "25.0%", "10", "2"],
                ["198.18.0.11", "2.0 kB", "25.0%", "8", "2"],
                ["198.18.0.10", "2.0 kB", "25.0%", "6", "2"],
            ]
            assert app.status_text() == (
                "Top talkers · top 5 by address in the whole capture; Enter filters the flows "
                "to the one selected")
        store.close()


# -- the header's sparkline --------------------------------------------------------------


class FakeClock:
    """Monotonic seconds that move only with ``advance``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def header_lines(app: FlowsApp) -> list[str]:
    return app.query_one(CaptureHeader).render().plain.split("\n")


async def test_header_sparkline_of_the_last_minute_never_wraps_at_120_columns() -> None:
    clock = FakeClock()
    aggregator = FakeAggregator()
    await aggregator.start()
    try:
        app = FlowsApp(("127.0.0.1", aggregator.port, "s3cret"),
                       {"target": "local host", "capture": "flows", "output": "out/flow"},
                       refresh_interval=0.05, clock=clock)
        async with app.run_test(size=(120, 30)) as pilot:
            await wait_until(pilot, lambda: app.connected, "the live stream")
            total = 0
            # 70 s of counters, twice a second: 1 kB/s, then 50 kB/s for the last 10 s.
            for step in range(141):
                total += 500 if step <= 120 else 25_000
                await aggregator.send_stats(flows=step, bytes=total, packets=step, agents=1)
                await wait_until(pilot, lambda t=total: app._header._bytes == t, "the stats")
                clock.advance(0.5)
            header = header_lines(app)
            assert len(header) == 2
            # The labels give way to the sparkline: 20 cells of 3 s, the last 10 s at
            # 50 kB/s (the current second is still being counted).
            assert header[1] == (
                "0:01:10  flows 140  560.5 kB  packets 140  2.0 flows/s 50.0 kB/s  "
                "▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▃███ max 50.0 kB/s  agents 1  ● live")
            assert len(header[1]) <= 118
            # With limits the line is longer: the sparkline narrows, or goes; it never
            # takes another line.
            app._header.set_info({"target": "local host", "capture": "flows",
                                  "output": "out/flow", "max_time": "300",
                                  "max_bytes": "50000000"})
            await pilot.pause()
            header = header_lines(app)
            assert len(header) == 2 and len(header[1]) <= 118
            await aggregator.drop()  # the stream is lost: no rate
            await wait_until(pilot, lambda: "stream lost" in header_lines(app)[1], "the loss")
            assert "max" not in header_lines(app)[1]
    finally:
        await aggregator.close()


# -- snapshot ----------------------------------------------------------------------------

Compare = Callable[..., bool]


def test_talkers_view_snapshot(snap_compare: Compare, tmp_path: Path, utc: None) -> None:
    app = saved_app(tmp_path)

    async def run_before(pilot: Pilot[Any]) -> None:
        assert isinstance(pilot.app, FlowsApp)
        app = pilot.app
        app.query_one(FilterBar).input.cursor_blink = False
        await wait_until(pilot, lambda: app.findings_runs > 0, "the findings")
        await open_talkers(pilot, app)
        await wait_until(pilot, lambda: app.query_one(TalkersList).row_count == 6, "the rows")
        await pilot.pause(0.1)
        await pilot.wait_for_scheduled_animations()
        svg = app.export_screenshot()
        shown = html.unescape("".join(re.findall(r">([^<>]*)</text>", svg)))
        assert "fd00:198:18::10" in shown.replace("\xa0", " ")

    assert snap_compare(app, terminal_size=(140, 36), run_before=run_before)
