"""Left/Right cycle the views, Page Up/Down the enrichment columns; rows follow at once.

Against the real aggregator: the record goes through the agents' Exporter, the aggregator's
files and its live stream.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from live_helpers import base_record, live_capture
from tui_helpers import wait_until

from netobserv_tui.model.fields import BASE_COLUMNS
from netobserv_tui.tui.app import FlowsApp
from netobserv_tui.tui.widgets import FlowTable

SIZE = (200, 40)

DROP = base_record(
    0, DstPort=8081, Bytes=74, Packets=1, Flags=2, PktDropPackets=3, PktDropBytes=180,
    PktDropLatestDropCause="SKB_DROP_REASON_NETFILTER_DROP", SrcK8S_HostName="node-1",
    DstK8S_HostName="node-2",
)
COLUMNS = (*BASE_COLUMNS, "PktDropPackets", "PktDropBytes", "PktDropLatestDropCause",
           "SrcK8S_HostName", "DstK8S_HostName")


def labels(app: FlowsApp) -> list[str]:
    return [str(column.label) for column in app.query_one(FlowTable).columns.values()]


def first_row(app: FlowsApp) -> list[str]:
    return [cell.plain for cell in app.query_one(FlowTable).get_row_at(0)]


async def test_views_cycle_both_ways_and_show_their_columns(tmp_path: Path) -> None:
    async with live_capture(tmp_path) as capture:
        app = capture.app(refresh_interval=0.05)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.connected, "the live stream")
            await capture.send([DROP], COLUMNS)
            await wait_until(pilot, lambda: app.query_one(FlowTable).row_count == 1, "the row")
            assert "Drop cause" not in labels(app)
            await pilot.press("right")
            assert app.view_state.title() == "Packet drops · IP & port"
            assert "Drop cause" in labels(app)
            await wait_until(pilot, lambda: app.query_one(FlowTable).row_count == 1, "the drop")
            row = first_row(app)
            assert "NETFILTER_DROP" in row and "3" in row and "180" in row
            await pilot.press("left", "left")
            assert app.view_state.title() == "Findings"
            await pilot.press("left")
            assert app.view_state.title() == "Raw"
            assert "PktDropLatestDropCause" in labels(app)
            await pilot.press("right", "right")
            assert app.view_state.title() == "Overview · IP & port"


async def test_page_keys_cycle_the_enrichment_columns(tmp_path: Path) -> None:
    async with live_capture(tmp_path) as capture:
        app = capture.app(refresh_interval=0.05)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.connected, "the live stream")
            await capture.send([DROP], COLUMNS)
            await wait_until(pilot, lambda: app.query_one(FlowTable).row_count == 1, "the row")
            await pilot.press("pagedown")
            assert app.view_state.enrichment.name == "Node"
            row = first_row(app)
            assert "node-1" in row and "node-2" in row
            await pilot.press("pageup", "pageup")
            assert app.view_state.enrichment.name == "Names"
            await pilot.press("pageup")
            assert app.view_state.enrichment.name == "All"
            assert "Src zone" in labels(app) and "Dst owner type" in labels(app)


@pytest.mark.parametrize("key", ["ctrl+c", "ctrl+q"])
async def test_ctrl_c_and_ctrl_q_stop_a_live_capture(tmp_path: Path, key: str) -> None:
    async with live_capture(tmp_path) as capture:
        app = capture.app(refresh_interval=0.05)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.connected, "the live stream")
            footer = " ".join(b.binding.description for b in app.active_bindings.values()
                              if b.binding.show)
            assert "Stop capture" in footer and "Quit" not in footer
            await pilot.press(key)
            await wait_until(pilot, lambda: app.return_value is not None, "the exit")
        assert app.return_value == "stopped"
