"""``netobserv open``: the app on a saved capture, SQLite or JSON, with no stream and no agent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from live_helpers import base_record
from textual.pilot import Pilot
from tui_helpers import wait_until

from netobserv_tui.aggregator.writers import FlowWriter
from netobserv_tui.model.fields import BASE_COLUMNS
from netobserv_tui.store import open_store
from netobserv_tui.tui.app import FlowsApp
from netobserv_tui.tui.screens import DetailsScreen
from netobserv_tui.tui.widgets import CaptureHeader, FlowTable
from netobserv_tui.tui.widgets.filter_bar import FilterBar
from netobserv_tui.tui.widgets.flow_table import FETCH_AT_LEAST

SIZE = (160, 40)
DNS_COLUMNS = (*BASE_COLUMNS, "DnsId", "DnsFlagsResponseCode", "DnsLatencyMs", "DnsName")


def write_capture(directory: Path, count: int) -> FlowWriter:
    """``count`` base records, then two DNS records (ids count and count + 1), closed."""
    writer = FlowWriter(directory)
    records = [base_record(i) for i in range(count)]
    writer.write_batch(BASE_COLUMNS, [[r[c] for c in BASE_COLUMNS] for r in records])
    dns = [base_record(i, Proto=17, DstPort=53, DnsId=i, DnsLatencyMs=3,
                       DnsFlagsResponseCode="NXDomain" if i % 2 else "NoError",
                       DnsName=f"svc{i}.lab.") for i in (count, count + 1)]
    writer.write_batch(DNS_COLUMNS, [[r.get(c) for c in DNS_COLUMNS] for r in dns])
    writer.close()
    return writer


def ports(app: FlowsApp) -> list[int]:
    """SrcPort of every record kept (rows on screen and below), newest first."""
    return [record["SrcPort"] for record in app.query_one(FlowTable).latest()]


async def loaded(pilot: Pilot[Any], app: FlowsApp, count: int) -> None:
    await wait_until(pilot, lambda: len(ports(app)) == count, f"{count} records from the file")


@pytest.mark.parametrize("kind", ["db", "json"])
async def test_open_shows_the_newest_records_filters_views_and_details(
    tmp_path: Path, kind: str
) -> None:
    writer = write_capture(tmp_path, 300)
    path = writer.db_path if kind == "db" else writer.json_path
    store = open_store(path)
    app = FlowsApp(None, {"target": "saved capture", "output": str(path)}, store=store,
                   max_rows=100, refresh_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, app, 100)
        assert ports(app)[:3] == [40301, 40300, 40299]
        fit = app.query_one(FlowTable).size.height - 1
        await wait_until(pilot, lambda: f"newest {fit} of 302 flows shown" in app.status_text(),
                         "a screenful of rows")
        header = app.query_one(CaptureHeader).render().plain
        assert "302" in header and path.name in header

        # A chip searches the whole file, beyond the 100 rows kept on screen.
        await pilot.press(*"SrcPort=40007", "enter")
        await wait_until(pilot, lambda: ports(app) == [40007], "the oldest records searched")
        assert "1 flows match in the file" in app.status_text()
        await pilot.press("escape")
        await wait_until(pilot, lambda: len(ports(app)) == 100, "every record again")

        await pilot.press("right", "right")  # the DNS view: only records with DNS data
        await wait_until(pilot, lambda: ports(app) == [40301, 40300], "the DNS records")
        await pilot.press(*"nxdomain", "enter")
        await wait_until(pilot, lambda: ports(app) == [40301], "the NXDomain record")

        await pilot.press("tab", "enter")
        await pilot.pause()
        assert isinstance(app.screen, DetailsScreen)
        fields = {row[0]: row[1] for row in app.screen.rows}
        assert fields["DnsName"] == "svc301.lab." and fields["DnsFlagsResponseCode"] == "NXDomain"
        await pilot.press("escape")
        await pilot.press("ctrl+q")
    assert app.return_value == "stopped"


async def test_open_an_empty_capture(tmp_path: Path) -> None:
    writer = FlowWriter(tmp_path)
    writer.close()
    app = FlowsApp(None, {"output": str(writer.db_path)}, store=open_store(writer.db_path))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "newest 0 of 0 flows shown" in app.status_text(),
                         "the empty file read")
        await pilot.press(*"tcp", "enter")
        await wait_until(pilot, lambda: "0 flows match in the file" in app.status_text(),
                         "an empty search")


async def test_a_saved_capture_offers_no_pause(tmp_path: Path) -> None:
    """A file does not change: the footer offers no Pause, and Ctrl+P changes nothing."""
    writer = write_capture(tmp_path, 5)
    app = FlowsApp(None, {"output": str(writer.db_path)}, store=open_store(writer.db_path),
                   refresh_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, app, 7)
        shown = {binding.action for (_, binding, enabled, _) in app.active_bindings.values()
                 if enabled and binding.show}
        assert "toggle_pause" not in shown and "close_file" in shown
        await pilot.press("ctrl+p")
        assert app.query_one(FlowTable).paused is False


async def test_a_burst_of_keys_is_applied_in_order(tmp_path: Path) -> None:
    """Keys that arrive together (a fast typist, tmux send-keys, a busy app) keep their order:
    Enter makes a chip of what was typed before it, Backspace deletes the character before it."""
    from textual import events

    writer = write_capture(tmp_path, 10)
    app = FlowsApp(None, {"output": "x"}, store=open_store(writer.db_path), refresh_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, app, 12)
        burst = ["right", "right", *"DstPort=53", "enter", *"nxdomainx", "backspace", "enter",
                 *"ab", "backspace", "c"]
        for key in burst:
            character = {"enter": "\r", "backspace": "\x7f"}.get(
                key, key if len(key) == 1 else None)
            app.post_message(events.Key(key, character))
        await wait_until(pilot, lambda: app.query_one(FilterBar).input.value == "ac", "the keys")
        assert app.chips.texts == ("DstPort=53", "nxdomain")
        await wait_until(pilot, lambda: ports(app) == [40011], "the NXDomain record")

        # A refused chip goes back before what was typed after it.
        for key in ["backspace", "backspace", *"Dst=1", "enter", *"xy"]:
            character = {"enter": "\r", "backspace": "\x7f"}.get(key, key)
            app.post_message(events.Key(key, character))
        field = app.query_one(FilterBar).input
        await wait_until(pilot, lambda: field.value == "Dst=1xy", "the refused text back")
        assert field.cursor_position == len("Dst=1")
        assert app.chips.texts == ("DstPort=53", "nxdomain")


async def test_a_filter_reads_a_screenful_and_more_when_more_is_shown(tmp_path: Path) -> None:
    """A search reads the matches the table shows (at least FETCH_AT_LEAST), not max_rows;
    raising the limit past what is held searches again for that many."""
    writer = write_capture(tmp_path, 600)
    store = open_store(writer.db_path)
    limits: list[int] = []
    search = store.search

    def recording(match: Any, limit: int, **kwargs: Any) -> Any:
        limits.append(limit)
        return search(match, limit, **kwargs)

    store.search = recording  # type: ignore[method-assign]
    app = FlowsApp(None, {"target": "saved capture", "output": str(writer.db_path)},
                   store=store, max_rows=1000, refresh_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(FlowTable)
        await loaded(pilot, app, 602)
        assert limits == [1000]  # the file's newest rows fill the ring: max_rows
        await pilot.press(*"Proto=tcp", "enter")  # the 600 base records match
        await wait_until(pilot, lambda: table.matched == 600 and table.kept == FETCH_AT_LEAST,
                         "the first matches")
        assert limits[1:] == [FETCH_AT_LEAST]
        assert ports(app) == list(range(40599, 40599 - FETCH_AT_LEAST, -1))
        assert table.row_count == table.fit_rows() < FETCH_AT_LEAST

        table.set_limit(250)  # more than held: the next search reads 250
        await wait_until(pilot, lambda: table.kept == 250 and table.row_count == 250,
                         "250 matches")
        assert limits[2:] == [250]
        assert ports(app) == list(range(40599, 40599 - 250, -1))
        assert [r["SrcPort"] for r in table.shown_records()] == ports(app)
        assert "600 flows match in the file; newest 250 shown (limit 250" in app.status_text()

        table.set_limit(40)  # fewer: nothing to read
        await pilot.pause()
        assert limits[3:] == [] and table.row_count == 40


async def test_the_store_reads_ahead_once_open_and_while_a_filter_is_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the first text search reads (1.6-1.8 s per 100,000 rows) is read once the file
    is open, before a key is pressed, and again while a filter is typed (a live capture's
    new rows), at most once per PREPARE_EVERY, never under a running read ahead."""
    from netobserv_tui.tui import app as app_module

    writer = write_capture(tmp_path, 300)
    store = open_store(writer.db_path)
    calls: list[str] = []
    prepare = store.prepare_search

    def recording() -> None:
        calls.append("prepare")
        prepare()

    store.prepare_search = recording  # type: ignore[method-assign]
    monkeypatch.setattr(app_module, "PREPARE_EVERY", 3600.0)
    app = FlowsApp(None, {"target": "saved capture", "output": str(writer.db_path)},
                   store=store)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, app, 302)
        await wait_until(pilot, lambda: app.searches_prepared == 1, "the read ahead")
        assert calls == ["prepare"]
        await pilot.press(*"pay")  # within PREPARE_EVERY of the first: nothing more
        await pilot.pause()
        assert calls == ["prepare"]
        monkeypatch.setattr(app_module, "PREPARE_EVERY", 0.0)
        await pilot.press("m")
        await wait_until(pilot, lambda: app.searches_prepared == 2, "a read ahead while typing")
        assert calls == ["prepare", "prepare"]
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.searches == 1, "the search")
        assert app.chips.texts == ("paym",)
