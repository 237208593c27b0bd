"""Left/Right cycle the views, Page Up/Down the enrichment columns; rows follow at once."""

from __future__ import annotations

import asyncio

from tui_helpers import TOKEN, FakeAggregator, wait_until

from netobserv_tui.tui.app import FlowsApp

SIZE = (160, 40)
HEADER = {"target": "local host", "capture": "flows", "output": "output/flow"}

DROP = {
    "SrcAddr": "198.18.0.10", "DstAddr": "198.18.0.11", "SrcPort": 45000, "DstPort": 8081,
    "Proto": 6, "Bytes": 74, "Packets": 1, "Flags": 2, "Interface": "nobs-pod-a",
    "IfDirection": 0, "TimeFlowEndMs": 1795633802760, "PktDropPackets": 3,
    "PktDropBytes": 180, "PktDropLatestDropCause": "SKB_DROP_REASON_NETFILTER_DROP",
    "SrcK8S_HostName": "node-1", "DstK8S_HostName": "node-2",
}  # fmt: skip


def labels(app: FlowsApp) -> list[str]:
    return [str(column.label) for column in app.query_one("#flows").columns.values()]  # type: ignore[attr-defined]


def first_row(app: FlowsApp) -> list[str]:
    table = app.query_one("#flows")
    return [cell.plain for cell in table.get_row_at(0)]  # type: ignore[attr-defined]


async def test_views_cycle_both_ways_and_show_their_columns(aggregator: FakeAggregator) -> None:
    app = FlowsApp(("127.0.0.1", aggregator.port, TOKEN), HEADER)
    async with app.run_test(size=SIZE) as pilot:
        await asyncio.wait_for(aggregator.subscribed.wait(), 5)
        await aggregator.send_flows([DROP])
        await wait_until(pilot, lambda: app.query_one("#flows").row_count == 1, "the row")  # type: ignore[attr-defined]
        assert "Drop cause" not in labels(app)
        await pilot.press("right")
        await pilot.pause()
        assert app.view_state.title() == "Packet drops · IP & port"
        assert "Drop cause" in labels(app)
        row = first_row(app)
        assert "SKB_DROP_REASON_NETFILTER_DROP" in row and "3" in row and "180" in row
        await pilot.press("left", "left")
        await pilot.pause()
        assert app.view_state.title() == "Raw"
        assert "PktDropLatestDropCause" in labels(app)
        await pilot.press("right")
        await pilot.pause()
        assert app.view_state.title() == "Overview · IP & port"


async def test_page_keys_cycle_the_enrichment_columns(aggregator: FakeAggregator) -> None:
    app = FlowsApp(("127.0.0.1", aggregator.port, TOKEN), HEADER)
    async with app.run_test(size=SIZE) as pilot:
        await asyncio.wait_for(aggregator.subscribed.wait(), 5)
        await aggregator.send_flows([DROP])
        await wait_until(pilot, lambda: app.query_one("#flows").row_count == 1, "the row")  # type: ignore[attr-defined]
        await pilot.press("pagedown")
        await pilot.pause()
        assert app.view_state.enrichment.name == "Node"
        row = first_row(app)
        assert "node-1" in row and "node-2" in row
        await pilot.press("pageup", "pageup")
        await pilot.pause()
        assert app.view_state.enrichment.name == "None"
        await pilot.press("pageup")
        await pilot.pause()
        assert app.view_state.enrichment.name == "All"
