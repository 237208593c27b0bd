"""Pilot tests of FlowsApp against a real TCP live stream."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from tui_helpers import CAPTURE, TOKEN, FakeAggregator, wait_until

from netobserv_tui.tui.app import FlowsApp
from netobserv_tui.tui.widgets import CaptureHeader, FlowTable

SIZE = (120, 40)
HEADER = {
    "target": "local host",
    "capture": "flows",
    "output": "output/flow",
    "max_time": "300",
    "max_bytes": "50000000",
}


def flow(i: int, **overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "SrcAddr": "10.0.0.1",
        "DstAddr": "10.0.0.2",
        "SrcPort": 40000 + i % 20000,
        "DstPort": 443,
        "Proto": 6,
        "Flags": 18,
        "Bytes": 100 + i,
        "Packets": 1 + i,
        "TimeFlowStartMs": 1709741962000 + i,
        "TimeFlowEndMs": 1709741962111 + i,
        "Interface": "eth0",
        "IfDirection": 1,
    }
    record.update(overrides)
    return record


def make_app(aggregator: FakeAggregator, token: str = TOKEN, **kwargs: Any) -> FlowsApp:
    return FlowsApp(("127.0.0.1", aggregator.port, token), HEADER, **kwargs)


def header_text(app: FlowsApp) -> str:
    return app.query_one(CaptureHeader).render().plain


def row_text(table: FlowTable, index: int) -> list[str]:
    return [str(cell) for cell in table.get_row_at(index)]


def cells(table: FlowTable, index: int) -> str:
    """The cells of a row joined by single spaces (an empty cell leaves a trailing space)."""
    return " ".join(row_text(table, index))


def clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%H:%M:%S.%f")[:-3]


async def test_rows_show_the_values_sent_newest_first(aggregator: FakeAggregator) -> None:
    app = make_app(aggregator)
    async with app.run_test(size=SIZE) as pilot:
        await asyncio.wait_for(aggregator.subscribed.wait(), 5)
        await aggregator.send_flows([flow(1), flow(2)])
        udp6 = flow(3, SrcAddr="fd00::1", DstAddr="fd00::2", Proto=17, DstPort=53, Flags=0)
        udp6.update(Interface="ens5", IfDirection=0)
        await aggregator.send_flows([udp6, flow(4, Proto=1, SrcPort=0, DstPort=0, Flags=0)])
        table = app.query_one(FlowTable)
        await wait_until(pilot, lambda: table.row_count == 4, "4 rows in the table")

        assert cells(table, 0) == (
            f"{clock(1709741962115)} eth0 egress ICMP 10.0.0.1 10.0.0.2 104 5 "
        )
        assert cells(table, 1) == (
            f"{clock(1709741962114)} ens5 ingress UDP [fd00::1]:40003 [fd00::2]:53 103 4 "
        )
        assert cells(table, 3) == (
            f"{clock(1709741962112)} eth0 egress TCP 10.0.0.1:40001 10.0.0.2:443 101 2 SYN,ACK"
        )
        assert [r["Bytes"] for r in table.latest()] == [104, 103, 102, 101]
        assert CAPTURE in header_text(app)


async def test_markup_in_data_is_shown_as_text(aggregator: FakeAggregator) -> None:
    app = make_app(aggregator)
    async with app.run_test(size=SIZE) as pilot:
        await asyncio.wait_for(aggregator.subscribed.wait(), 5)
        await aggregator.send_flows([flow(1, Interface="[bold]veth[/]")])
        table = app.query_one(FlowTable)
        await wait_until(pilot, lambda: table.row_count == 1, "1 row in the table")
        assert row_text(table, 0)[1] == "[bold]veth[/]"


async def test_header_shows_exact_stats(aggregator: FakeAggregator) -> None:
    app = make_app(aggregator)
    async with app.run_test(size=SIZE) as pilot:
        await asyncio.wait_for(aggregator.subscribed.wait(), 5)
        await aggregator.send_stats(flows=12345, bytes=9876543, packets=4321, agents=3)
        await wait_until(pilot, lambda: "12,345" in header_text(app), "stats in the header")
        text = header_text(app)
        assert "flows 12,345" in text
        assert "9.9 MB / 50.0 MB 19%" in text
        assert "packets 4,321" in text
        assert "agents 3" in text
        assert "local host" in text and "output/flow" in text
        assert "/ 0:05:00" in text  # max_time of 300 s


async def test_ctrl_c_stops(aggregator: FakeAggregator) -> None:
    app = make_app(aggregator)
    async with app.run_test(size=SIZE) as pilot:
        await asyncio.wait_for(aggregator.subscribed.wait(), 5)
        await pilot.press("ctrl+c")
        await wait_until(pilot, lambda: app.return_value is not None, "the app to exit")
    assert app.return_value == "stopped"


async def test_ctrl_q_stops(aggregator: FakeAggregator) -> None:
    app = make_app(aggregator)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: app.return_value is not None, "the app to exit")
    assert app.return_value == "stopped"


async def test_ctrl_c_stops_while_the_table_has_focus(aggregator: FakeAggregator) -> None:
    app = make_app(aggregator)
    async with app.run_test(size=SIZE) as pilot:
        app.query_one(FlowTable).focus()
        await pilot.pause()
        await pilot.press("ctrl+c")
        await wait_until(pilot, lambda: app.return_value is not None, "the app to exit")
    assert app.return_value == "stopped"


async def test_wrong_token_is_shown_and_app_stays_up(aggregator: FakeAggregator) -> None:
    app = make_app(aggregator, token="wrong")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "stream lost" in header_text(app), "the error")
        text = header_text(app)
        assert "refused the live stream: invalid token" in text
        assert app.query_one(CaptureHeader).has_class("-lost")
        assert app.is_running and app.return_value is None
        await pilot.press("ctrl+c")
        await wait_until(pilot, lambda: app.return_value is not None, "the app to exit")
    assert app.return_value == "stopped"


async def test_unreachable_stream_is_shown() -> None:
    server = FakeAggregator()
    await server.start()
    await server.close()  # nothing listens on this port any more
    app = make_app(server)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "stream lost" in header_text(app), "the error")
        assert "cannot reach the live stream at 127.0.0.1:" in header_text(app)
        assert app.is_running


async def test_stream_lost_is_shown_and_app_stays_up(aggregator: FakeAggregator) -> None:
    app = make_app(aggregator)
    async with app.run_test(size=SIZE) as pilot:
        await asyncio.wait_for(aggregator.subscribed.wait(), 5)
        await aggregator.send_flows([flow(1)])
        table = app.query_one(FlowTable)
        await wait_until(pilot, lambda: table.row_count == 1, "1 row in the table")
        await aggregator.drop()
        await wait_until(pilot, lambda: "stream lost" in header_text(app), "stream lost")
        assert "closed the stream" in header_text(app)
        assert app.is_running and app.return_value is None
        assert table.row_count == 1  # what was received stays on screen
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: app.return_value is not None, "the app to exit")
    assert app.return_value == "stopped"


async def test_request_stop_from_the_loop(aggregator: FakeAggregator) -> None:
    app = make_app(aggregator)
    async with app.run_test(size=SIZE) as pilot:
        app.request_stop("max-bytes reached")
        await wait_until(pilot, lambda: app.return_value is not None, "the app to exit")
    assert app.return_value == "max-bytes reached"


async def test_request_stop_from_another_thread(aggregator: FakeAggregator) -> None:
    app = make_app(aggregator)
    async with app.run_test(size=SIZE) as pilot:
        await asyncio.to_thread(app.request_stop, "max-time reached")
        await wait_until(pilot, lambda: app.return_value is not None, "the app to exit")
    assert app.return_value == "max-time reached"


async def test_burst_is_batched_and_capped(aggregator: FakeAggregator) -> None:
    frames, per_frame = 100, 100
    app = make_app(aggregator)
    async with app.run_test(size=SIZE) as pilot:
        await asyncio.wait_for(aggregator.subscribed.wait(), 5)
        table = app.query_one(FlowTable)
        # Rebuilds of the burst only: mounting and the first layout rebuild the empty table.
        await pilot.pause(0.1)
        before = table.rebuilds
        started = time.monotonic()
        for f in range(frames):
            await aggregator.send_flows([flow(f * per_frame + i) for i in range(per_frame)])
        last = frames * per_frame - 1
        await wait_until(
            pilot,
            # The rows on screen, not only the ring: the table rebuilds on its timer.
            lambda: table.row_count > 0 and row_text(table, 0)[6] == str(100 + last),
            "the newest row on top",
            timeout=20,
        )
        elapsed = time.monotonic() - started

        assert table.received == frames * per_frame
        # The ring keeps max_rows; the table builds only the rows that fit on screen.
        assert len(table.latest()) == table.max_rows == 1000
        assert table.latest()[999]["Bytes"] == 100 + last - 999
        fit = table.size.height - 1
        assert table.row_count == fit == 34  # 40 lines: header, filter, status, footer
        assert row_text(table, 0)[6] == str(100 + last)
        assert row_text(table, fit - 1)[6] == str(100 + last - fit + 1)
        # Never a repaint per frame: a handful of rebuilds, at most one per interval (and
        # one for the interval the burst began in).
        rebuilds = table.rebuilds - before
        assert 1 <= rebuilds <= elapsed / table.refresh_interval + 2
        assert rebuilds <= 10, f"{rebuilds} rebuilds in {elapsed:.2f}s"


async def test_header_says_which_feature_is_off_and_why(aggregator: FakeAggregator) -> None:
    from netobserv_tui.capture.run import _features_text

    capture = "flows" + _features_text(
        {"pktdrop": "on", "rtt": "off: tracepoint tcp:tcp_probe not available"}
    )
    app = FlowsApp(("127.0.0.1", aggregator.port, TOKEN), {**HEADER, "capture": capture})
    async with app.run_test(size=(200, 40)) as pilot:
        await wait_until(pilot, lambda: "rtt off" in header_text(app), "the feature state")
        text = header_text(app)
        assert "with pktdrop" in text
        assert "rtt off: tracepoint tcp:tcp_probe not available" in text


async def test_newest_first_is_by_time_and_rows_without_a_time_come_last(
    aggregator: FakeAggregator,
) -> None:
    """Agents deliver intervals at their own pace: an older interval may arrive after a newer
    one. The table still shows the latest times on top; a record without a time (a drop
    seen outside the TC hooks) comes after every record with one, however late it came."""
    app = make_app(aggregator, refresh_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await asyncio.wait_for(aggregator.subscribed.wait(), 5)
        untimed = flow(9, Bytes=999, TimeFlowStartMs=None, TimeFlowEndMs=None)
        await aggregator.send_flows([flow(5), flow(7)])
        await aggregator.send_flows([flow(2), flow(6), untimed])  # an agent's late interval
        await aggregator.send_flows([flow(3)])
        table = app.query_one(FlowTable)
        await wait_until(pilot, lambda: table.row_count == 6, "6 rows")
        assert [r["Bytes"] for r in table.shown_records()] == [107, 106, 105, 103, 102, 999]
        assert table.latest() == table.shown_records()


async def test_a_cluster_capture_starts_with_names_and_ip_port_one_page_down(
    aggregator: FakeAggregator,
) -> None:
    app = make_app(aggregator, refresh_interval=0.05, names_first=True)
    async with app.run_test(size=SIZE) as pilot:
        await asyncio.wait_for(aggregator.subscribed.wait(), 5)
        await aggregator.send_flows([flow(1, SrcK8S_Name="web-1", SrcK8S_Namespace="shop",
                                          DstK8S_Name="node-a")])
        table = app.query_one(FlowTable)
        await wait_until(pilot, lambda: table.row_count == 1, "the row")
        assert app.view_state.title() == "Overview · Names"
        assert row_text(table, 0)[4:6] == ["shop/web-1", "node-a"]
        await pilot.press("pagedown")
        assert app.view_state.title() == "Overview · IP & port"
        await wait_until(pilot, lambda: row_text(table, 0)[4:6] == [
            "10.0.0.1:40001", "10.0.0.2:443"], "the addresses")
    local = make_app(aggregator)
    assert local.view_state.title() == "Overview · IP & port"


async def test_the_first_header_line_stays_one_line_with_every_feature_and_many_interfaces(
    aggregator: FakeAggregator,
) -> None:
    """The lab with every feature at 160 columns: the interfaces are counted, not listed,
    and what is captured, where and with what fits the first line."""
    from netobserv_tui.capture.run import _features_text, _interfaces_text

    names = [f"nobs-pod-{c}" for c in "abcdefgh"]
    assert _interfaces_text(names[:3]) == "nobs-pod-a, nobs-pod-b, nobs-pod-c"
    assert _interfaces_text([]) == "every interface"
    where = _interfaces_text(names)
    assert where == "8 interfaces (nobs-pod-a, nobs-pod-b, nobs-pod-c, ...)"
    capture = f"flows on {where}" + _features_text({"pktdrop": "on", "dns": "on", "rtt": "on"})
    app = FlowsApp(("127.0.0.1", aggregator.port, TOKEN),
                   {**HEADER, "target": "local host + lab", "capture": capture})
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_until(pilot, lambda: "with pktdrop, dns, rtt" in header_text(app), "header")
        first = header_text(app).splitlines()[0]
        assert capture in first and "output/flow" in first, header_text(app)
