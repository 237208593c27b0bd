"""Every key of the flows app, Pilot-driven, against a real aggregator and its SQLite file.

Records are sent by the agents' Exporter to the real Aggregator; the app follows the real
live stream and searches the real capture file, as in ``netobserv flows --local``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from live_helpers import base_record, live_capture
from textual.pilot import Pilot
from textual.widgets import DataTable
from tui_helpers import wait_until

from netobserv_tui.model.fields import BASE_COLUMNS
from netobserv_tui.tui.app import FlowsApp
from netobserv_tui.tui.screens import DetailsScreen, HelpScreen
from netobserv_tui.tui.widgets import FlowTable
from netobserv_tui.tui.widgets.filter_bar import FilterBar

SIZE = (160, 40)
DNS_COLUMNS = (*BASE_COLUMNS, "DnsId", "DnsFlagsResponseCode", "DnsLatencyMs", "DnsName")


def table(app: FlowsApp) -> FlowTable:
    return app.query_one(FlowTable)


def ports(app: FlowsApp) -> list[int]:
    """SrcPort of each row on screen, top to bottom."""
    return [record["SrcPort"] for record in table(app).shown_records()]


async def typed(pilot: Pilot[Any], text: str) -> None:
    await pilot.press(*text)


async def connected(pilot: Pilot[Any], app: FlowsApp) -> None:
    """Records sent before the app subscribed never reach its stream (only its searches)."""
    await wait_until(pilot, lambda: app.connected, "the live stream")


async def received(pilot: Pilot[Any], app: FlowsApp, count: int) -> None:
    await wait_until(pilot, lambda: table(app).received >= count, f"{count} records received")
    await wait_until(pilot, lambda: len(table(app).shown_records()) == min(
        count, table(app).max_rows) or table(app).filtered or table(app).paused, "a refresh")


async def test_a_chip_searches_everything_the_capture_has_seen(tmp_path: Path) -> None:
    async with live_capture(tmp_path) as capture:
        app = capture.app(max_rows=5, refresh_interval=0.05)
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot, app)
            await capture.send([base_record(i) for i in range(20)])
            await received(pilot, app, 20)
            assert ports(app) == [40019, 40018, 40017, 40016, 40015]  # the ring holds 5

            await typed(pilot, "SrcPort=40001")
            await pilot.press("enter")
            await wait_until(pilot, lambda: ports(app) == [40001], "the old record found")
            bar = app.query_one(FilterBar)
            assert bar.chips_text() == "filter:  SrcPort=40001 "
            assert bar.input.value == ""
            assert "1 flows match seen by this capture" in app.status_text()

            # A second chip narrows (AND); every record of 198.18.0.11 has i % 4 == 1.
            await pilot.press("escape")
            await wait_until(pilot, lambda: not table(app).filtered, "no filter")
            await typed(pilot, "198.18.0.11")
            await pilot.press("enter")
            fives = [40017, 40013, 40009, 40005, 40001]
            await wait_until(pilot, lambda: ports(app) == fives, "5 matches of 20")
            assert table(app).matched == 5
            await typed(pilot, "/^4000[0-9]$/")
            await pilot.press("enter")
            await wait_until(pilot, lambda: ports(app) == [40009, 40005, 40001], "3 matches")
            assert table(app).matched == 3

            # Backspace on an empty line removes the last chip only.
            await pilot.press("backspace")
            await wait_until(pilot, lambda: ports(app) == fives, "back to 5")
            assert bar.chips_text() == "filter:  198.18.0.11 "

            # New matching records show up while the filter stays on.
            await connected(pilot, app)
            await capture.send([base_record(i) for i in range(20, 30)])
            newest = [40029, 40025, 40021, 40017, 40013]
            await wait_until(pilot, lambda: ports(app) == newest, "3 new matches on top")
            assert table(app).matched == 8

            # Escape clears every chip: the live ring again.
            await pilot.press("escape")
            await wait_until(pilot, lambda: not table(app).filtered, "no filter")
            assert bar.chips_text() == "filter:"
            assert ports(app) == [40029, 40028, 40027, 40026, 40025]


async def test_an_invalid_chip_is_explained_and_kept_for_editing(tmp_path: Path) -> None:
    async with live_capture(tmp_path) as capture:
        app = capture.app(refresh_interval=0.05)
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot, app)
            await capture.send([base_record(i) for i in range(3)])
            await received(pilot, app, 3)
            await typed(pilot, "DstPrt=53")
            await pilot.press("enter")
            await pilot.pause()
            bar = app.query_one(FilterBar)
            assert bar.input.value == "DstPrt=53"
            assert bar.chips_text() == "filter:"
            assert not table(app).filtered
            messages = [n.message for n in app._notifications]
            assert any("unknown field 'DstPrt'; did you mean DstPort" in m for m in messages)


async def test_views_show_only_records_with_their_data(tmp_path: Path) -> None:
    async with live_capture(tmp_path) as capture:
        app = capture.app(refresh_interval=0.05)
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot, app)
            await capture.send([base_record(i) for i in range(4)])
            await received(pilot, app, 4)
            await pilot.press("right", "right")  # Overview -> Packet drops -> DNS
            assert app.view_state.view.name == "DNS"
            await wait_until(pilot, lambda: table(app).matched == 0, "the DNS search")
            assert "No DNS data: start the capture with --enable_dns=true" in app.status_text()
            assert table(app).row_count == 0

            dns = [base_record(i, Proto=17, DstPort=53, DnsId=4660 + i,
                               DnsFlagsResponseCode="NXDomain" if i == 5 else "NoError",
                               DnsLatencyMs=i, DnsName=f"name{i}.lab.")
                   for i in (4, 5)]
            await connected(pilot, app)
            await capture.send(dns, DNS_COLUMNS)
            await wait_until(pilot, lambda: ports(app) == [40005, 40004], "the DNS records")
            assert table(app).matched == 2
            row = [cell.plain for cell in table(app).get_row_at(0)]
            assert "4665" in row and "NXDomain" in row and "name5.lab." in row

            # A chip narrows the view; the view narrows the chip.
            await typed(pilot, "DnsFlagsResponseCode=nxdomain")
            await pilot.press("enter")
            await wait_until(pilot, lambda: ports(app) == [40005], "1 NXDomain")
            assert table(app).matched == 1
            await pilot.press("left", "left")  # back to the Overview: the chip alone
            assert app.view_state.view.name == "Overview"
            await wait_until(pilot, lambda: ports(app) == [40005], "the chip alone")


async def test_up_down_change_the_rows_shown_and_move_the_cursor_in_the_table(
    tmp_path: Path,
) -> None:
    async with live_capture(tmp_path) as capture:
        app = capture.app(refresh_interval=0.05)
        async with app.run_test(size=(120, 30)) as pilot:
            await connected(pilot, app)
            await capture.send([base_record(i) for i in range(60)])
            await wait_until(pilot, lambda: table(app).received == 60, "60 records")
            flows = table(app)
            fit = flows.size.height - 1
            # By default as many rows as fit; the ring keeps all 60.
            await wait_until(pilot, lambda: flows.row_count == fit == 24, "a screenful")
            assert flows.limit is None and len(flows.latest()) == 60

            await pilot.press("down")  # on the filter line: one row fewer
            assert flows.limit == fit - 1 and flows.row_count == fit - 1
            await pilot.press("down", "down")
            assert flows.row_count == fit - 3
            await pilot.press("up")
            assert flows.row_count == fit - 2
            assert f"(limit {fit - 2}, Up/Down)" in app.status_text()

            await pilot.press("tab")  # the table: Up/Down move the cursor
            assert app.focused is flows
            await pilot.press("down", "down", "down")
            assert flows.cursor_row == 3 and flows.row_count == fit - 2
            await pilot.press("up")
            assert flows.cursor_row == 2

            await pilot.press("escape")  # back to the filter line
            assert app.focused is app.query_one(FilterBar).input
            await pilot.press(*["up"] * 40)  # more rows than fit: the table scrolls
            assert flows.limit == fit + 38 and flows.row_count == 60
            assert ports(app)[-1] == 40000


async def test_enter_shows_every_field_of_the_selected_row(tmp_path: Path) -> None:
    async with live_capture(tmp_path) as capture:
        app = capture.app(refresh_interval=0.05)
        async with app.run_test(size=SIZE) as pilot:
            sent = [base_record(i) for i in range(3)]
            await connected(pilot, app)
            await capture.send(sent)
            await received(pilot, app, 3)

            await pilot.press("enter")  # empty filter line: the row under the cursor
            await pilot.pause()
            assert isinstance(app.screen, DetailsScreen)
            assert app.screen.record["SrcPort"] == 40002
            shown = {row[0]: row[1] for row in app.screen.rows}
            assert set(shown) == set(BASE_COLUMNS) | {"TimeReceived"} - {
                k for k, v in sent[2].items() if v is None}
            assert shown["Interfaces"] == '["nobs-pod-a"]' and shown["Proto"] == "6"
            readable = {row[0]: row[2] for row in app.screen.rows}
            assert readable["Proto"] == "TCP" and readable["Flags"] == "ACK"
            assert readable["IfDirection"] == "ingress"
            details = app.screen.query_one("#details", DataTable)
            assert details.row_count == len(app.screen.rows)
            await pilot.press("escape")
            await pilot.pause()
            assert not isinstance(app.screen, DetailsScreen)

            await pilot.press("tab", "down", "enter")  # in the table: the selected row
            await pilot.pause()
            assert isinstance(app.screen, DetailsScreen)
            assert app.screen.record["SrcPort"] == 40001
            await pilot.press("q")
            await pilot.pause()
            assert not isinstance(app.screen, DetailsScreen)


async def test_help_on_question_mark_f1_and_not_inside_a_filter(tmp_path: Path) -> None:
    async with live_capture(tmp_path) as capture:
        app = capture.app(refresh_interval=0.05)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("question_mark")
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            keys = app.screen.query_one("#help-keys", DataTable)
            first_column = [str(keys.get_row_at(i)[0]) for i in range(keys.row_count)]
            assert "Ctrl+C, Ctrl+Q" in first_column and "Ctrl+P" in first_column
            await pilot.press("escape")
            await pilot.pause()
            assert not isinstance(app.screen, HelpScreen)

            await typed(pilot, "/ab?c/")  # inside a filter, ? is a character
            assert not isinstance(app.screen, HelpScreen)
            assert app.query_one(FilterBar).input.value == "/ab?c/"
            await pilot.press("f1")
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            await pilot.press("f1")
            await pilot.pause()
            assert not isinstance(app.screen, HelpScreen)


async def test_typing_in_the_table_goes_to_the_filter_line(tmp_path: Path) -> None:
    async with live_capture(tmp_path) as capture:
        app = capture.app(refresh_interval=0.05)
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot, app)
            await capture.send([base_record(i) for i in range(3)])
            await received(pilot, app, 3)
            await pilot.press("tab")
            assert app.focused is table(app)
            await typed(pilot, "udp")
            bar = app.query_one(FilterBar)
            assert app.focused is bar.input and bar.input.value == "udp"


async def test_ctrl_p_pauses_the_table_not_the_capture(tmp_path: Path) -> None:
    async with live_capture(tmp_path) as capture:
        app = capture.app(refresh_interval=0.05)
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot, app)
            await capture.send([base_record(i) for i in range(3)])
            await received(pilot, app, 3)
            await pilot.press("ctrl+p")
            assert table(app).paused and "PAUSED (Ctrl+P resumes)" in app.status_text()
            await connected(pilot, app)
            await capture.send([base_record(i) for i in range(3, 6)])
            await wait_until(pilot, lambda: table(app).received == 6, "records while paused")
            rebuilds = table(app).rebuilds
            table(app).flush()  # what the refresh timer does: nothing while paused
            assert table(app).rebuilds == rebuilds
            assert ports(app) == [40002, 40001, 40000]
            await pilot.press("ctrl+p")
            await wait_until(pilot, lambda: ports(app)[0] == 40005, "the rows on resume")
            assert "PAUSED" not in app.status_text()


async def test_keeping_a_live_filter_current_does_not_say_searching(tmp_path: Path) -> None:
    async with live_capture(tmp_path) as capture:
        app = capture.app(refresh_interval=0.05)
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot, app)
            await capture.send([base_record(i) for i in range(3)])
            await received(pilot, app, 3)
            await pilot.press(*"SrcPort=40001")
            with app._store_lock:  # holds the search in its worker thread
                await pilot.press("enter")
                assert "searching…" in app.status_text()  # the first search of a filter
            await wait_until(pilot, lambda: ports(app) == [40001], "the match")
            assert "searching" not in app.status_text()
            app._search_newer()  # what the timer does, twice a second
            assert app._searching and "searching" not in app.status_text()


async def test_a_chip_searches_a_remote_capture_through_its_aggregator(tmp_path: Path) -> None:
    """A cluster capture's file is in the aggregator pod: the chips go to the aggregator."""
    from live_helpers import TOKEN

    from netobserv_tui.store import RemoteStore

    async with live_capture(tmp_path) as capture:
        store = RemoteStore("127.0.0.1", capture.aggregator.port, TOKEN)
        app = capture.app(max_rows=5, refresh_interval=0.05, store=store)
        async with app.run_test(size=SIZE) as pilot:
            await connected(pilot, app)
            await capture.send([base_record(i) for i in range(20)])
            await received(pilot, app, 20)
            await typed(pilot, "SrcPort=40001")
            await pilot.press("enter")
            await wait_until(pilot, lambda: ports(app) == [40001], "the old record found")
            await pilot.press("right", "right")  # the DNS view: no DNS data
            await wait_until(pilot, lambda: table(app).matched == 0, "the DNS search")
            await capture.send([base_record(30, SrcPort=40001, DnsId=7, DstPort=53)],
                               (*BASE_COLUMNS, "DnsId"))
            await wait_until(pilot, lambda: ports(app) == [40001], "the new DNS record")
        store.close()


async def test_the_start_progress_shows_then_the_capture_attaches(tmp_path: Path) -> None:
    """A cluster rollout takes a while: the TUI shows its progress, then the live flows."""
    from live_helpers import HEADER, TOKEN

    from netobserv_tui.store import SqliteStore

    async with live_capture(tmp_path) as capture:
        app = FlowsApp(None, {"target": "cluster double", "output": "out"}, starting=True,
                       refresh_interval=0.05)
        async with app.run_test(size=SIZE) as pilot:
            app.show_progress("Creating the capture c1 in namespace netobserv-cli...")
            app.show_progress("  agents 1/2 ready, aggregator Ready")
            await pilot.pause()
            progress = str(app.query_one("#progress").render())
            assert "agents 1/2 ready, aggregator Ready" in progress
            assert app.status_text().startswith("Starting the capture")
            footer = [b.binding.description for b in app.active_bindings.values()
                      if b.binding.show]
            assert "Stop capture" in footer and "Quit" not in footer

            app.attach(("127.0.0.1", capture.aggregator.port, TOKEN),
                       SqliteStore(capture.db), HEADER)
            await connected(pilot, app)
            assert not app.query_one("#progress").display
            await capture.send([base_record(i) for i in range(3)])
            await received(pilot, app, 3)
            assert ports(app) == [40002, 40001, 40000]


async def test_ctrl_c_while_starting_stops(tmp_path: Path) -> None:
    app = FlowsApp(None, {"target": "cluster double"}, starting=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+c")
        await wait_until(pilot, lambda: app.return_value is not None, "the exit")
    assert app.return_value == "stopped"


async def test_attach_from_the_capture_task_leaves_no_background_error(
    tmp_path: Path,
) -> None:
    """`netobserv flows` calls attach() from its own task, where Textual's active app is
    not set: a timer made there raised LookupError at its first tick ("Task exception was
    never retrieved" in output/netobserv.log). Attach from a bare context, let the live
    search timer tick, and check that no task failed."""
    import asyncio
    import contextvars
    import gc

    from live_helpers import HEADER, TOKEN

    from netobserv_tui.store import SqliteStore

    failures: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: failures.append(context))
    try:
        async with live_capture(tmp_path) as capture:
            app = FlowsApp(None, {"target": "local host", "output": "out"}, starting=True,
                           refresh_interval=0.05)
            async with app.run_test(size=SIZE) as pilot:
                contextvars.Context().run(  # a context with no active app

                    loop.call_soon, app.attach,
                    ("127.0.0.1", capture.aggregator.port, TOKEN), SqliteStore(capture.db),
                    HEADER)
                await connected(pilot, app)
                await capture.send([base_record(i) for i in range(3)])
                await received(pilot, app, 3)
                await typed(pilot, "SrcPort=40001")
                await pilot.press("enter")
                for _ in range(10):  # the live search timer ticks every 0.05 s
                    await pilot.pause(0.05)
                assert ports(app) == [40001]
        gc.collect()  # a failed task is reported when it is collected
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert [str(f.get("exception") or f.get("message")) for f in failures] == []
