"""Pilot tests of the header alone, with a clock that only moves when the test says so."""

from __future__ import annotations

from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.geometry import Region
from textual.pilot import Pilot

from netobserv_tui.tui.widgets import CaptureHeader

INFO = {
    "target": "local host + lab",
    "capture": "flows on eth0",
    "output": "output/flow",
    "max_time": "300",
    "max_bytes": "50000000",
}
STATS = {"flows": 12345, "bytes": 9876543, "packets": 4321, "agents": 3}
NO_RATES = "– flows/s – B/s"


class FakeClock:
    """Monotonic seconds that move only with ``advance``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class HeaderApp(App[None]):
    # As in the flows app's app.tcss (not loaded here, so that these tests only depend on the
    # widget): docked at the top, one cell of padding on each side.
    CSS = """
    CaptureHeader {
        dock: top;
        padding: 0 1;
    }
    """

    def __init__(self, header: CaptureHeader) -> None:
        super().__init__()
        self.header = header

    def compose(self) -> ComposeResult:
        yield self.header


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock: FakeClock, info: dict[str, str] | None = None) -> tuple[HeaderApp, CaptureHeader]:
    header = CaptureHeader(INFO if info is None else info, id="header", clock=clock)
    return HeaderApp(header), header


def lines(header: CaptureHeader) -> list[str]:
    """The content's lines, as render() gives them."""
    return header.render().plain.split("\n")


def screen_lines(header: CaptureHeader) -> list[str]:
    """What the terminal shows of the header, padding included, trailing blanks removed."""
    width, height = header.outer_size
    strips = header.render_lines(Region(0, 0, width, height))
    return [strip.text.rstrip() for strip in strips]


async def live(pilot: Pilot[Any], header: CaptureHeader) -> None:
    header.show_connecting("127.0.0.1:4242")
    header.show_live("capture-test")
    await pilot.pause()


# -- line one ----------------------------------------------------------------------------


async def test_line_one_says_what_where_and_extras(clock: FakeClock) -> None:
    info = {**INFO, "rtt off": "tracepoint tcp:tcp_probe not available", "x": "[bold]y[/]"}
    app, header = make(clock, info)
    async with app.run_test(size=(200, 10)) as pilot:
        await pilot.pause()
        assert lines(header)[0] == (
            "netobserv  flows on eth0 on local host + lab  → output/flow"
            "  rtt off: tracepoint tcp:tcp_probe not available  x: [bold]y[/]"
        )
        await live(pilot, header)
        assert lines(header)[0].startswith("netobserv  capture-test  flows on eth0 on ")


# -- line two ----------------------------------------------------------------------------


async def test_before_any_stats_everything_is_unknown(clock: FakeClock) -> None:
    app, header = make(clock)
    async with app.run_test(size=(120, 10)) as pilot:
        header.show_connecting("127.0.0.1:4242")
        await pilot.pause()
        assert lines(header)[1] == (
            "0:00:00 / 0:05:00 0%  flows –  bytes – / 50.0 MB  packets –  "
            f"{NO_RATES}  agents –  connecting to 127.0.0.1:4242…"
        )


async def test_elapsed_and_limits_as_progress(clock: FakeClock) -> None:
    app, header = make(clock)
    async with app.run_test(size=(120, 10)) as pilot:
        await live(pilot, header)
        clock.advance(60.9)
        header.show_stats({**STATS, "bytes": 12_500_000})
        assert lines(header)[1] == (
            "0:01:00 / 0:05:00 20%  flows 12,345  12.5 MB / 50.0 MB 25%  packets 4,321  "
            f"{NO_RATES}  agents 3  ● live"
        )
        # Past the limits (the capture stops a little later): capped at 100%.
        clock.advance(400)
        header.show_stats({**STATS, "bytes": 60_000_000})
        assert lines(header)[1].startswith(
            "0:07:40 / 0:05:00 100%  flows 12,345  60.0 MB / 50.0 MB 100%  "
        )


async def test_elapsed_follows_the_clock_between_updates(clock: FakeClock) -> None:
    app, header = make(clock, {"target": "local host", "capture": "flows", "output": "o"})
    async with app.run_test(size=(120, 10)) as pilot:
        await live(pilot, header)
        assert lines(header)[1].startswith("elapsed 0:00:00  flows –  bytes –  ")
        clock.advance(3725)
        assert lines(header)[1].startswith("elapsed 1:02:05  flows –  bytes –  ")


async def test_wide_terminal_gets_labels(clock: FakeClock) -> None:
    app, header = make(clock)
    async with app.run_test(size=(200, 10)) as pilot:
        await live(pilot, header)
        clock.advance(60)
        header.show_stats(STATS)
        assert lines(header)[1] == (
            "elapsed 0:01:00 / 0:05:00 20%  flows 12,345  bytes 9.9 MB / 50.0 MB 19%  "
            f"packets 4,321  {NO_RATES}  agents 3  ● live"
        )


async def test_limits_that_are_not_numbers_are_shown_as_given(clock: FakeClock) -> None:
    app, header = make(clock, {**INFO, "max_time": "soon", "max_bytes": "0"})
    async with app.run_test(size=(120, 10)) as pilot:
        await live(pilot, header)
        assert lines(header)[1].startswith(
            "elapsed 0:00:00 / soon  flows –  bytes –  packets –  "
        )


# -- rates -------------------------------------------------------------------------------


def stats(flows: int) -> dict[str, int]:
    """1,000 bytes and 2 packets a flow."""
    return {"flows": flows, "bytes": flows * 1000, "packets": flows * 2, "agents": 2}


def rates(header: CaptureHeader) -> str:
    line = lines(header)[1]
    return line.split("  ")[4]


async def test_rates_need_two_updates(clock: FakeClock) -> None:
    app, header = make(clock)
    async with app.run_test(size=(120, 10)) as pilot:
        await live(pilot, header)
        header.show_stats(stats(0))
        assert rates(header) == NO_RATES
        clock.advance(2)
        header.show_stats(stats(1000))
        assert rates(header) == "500 flows/s 500.0 kB/s"
        assert lines(header)[1] == (
            "0:00:02 / 0:05:00 0%  flows 1,000  1.0 MB / 50.0 MB 2%  packets 2,000  "
            "500 flows/s 500.0 kB/s  agents 2  ● live"
        )
        clock.advance(1)
        header.show_stats(stats(1003))  # 1003 flows in 3 s
        assert rates(header) == "334 flows/s 334.3 kB/s"


async def test_rates_slide_over_about_five_seconds(clock: FakeClock) -> None:
    app, header = make(clock)
    async with app.run_test(size=(120, 10)) as pilot:
        await live(pilot, header)
        for flows in (0, 1000, 2000):  # t = 0, 2, 4
            header.show_stats(stats(flows))
            clock.advance(2)
        header.show_stats(stats(5000))  # t = 6: the window starts at t = 1; t = 0 is kept
        assert rates(header) == "833 flows/s 833.3 kB/s"  # 5000 / 6
        clock.advance(2)
        header.show_stats(stats(13000))  # t = 8: t = 0 is dropped, t = 2 starts the window
        assert rates(header) == "2,000 flows/s 2.0 MB/s"  # (13000 - 1000) / 6
        clock.advance(22)
        header.show_stats(stats(13011))  # t = 30: only the previous update is left
        assert rates(header) == "0.5 flows/s 500 B/s"  # 11 / 22


async def test_counters_going_back_restart_the_rates(clock: FakeClock) -> None:
    app, header = make(clock)
    async with app.run_test(size=(120, 10)) as pilot:
        await live(pilot, header)
        header.show_stats(stats(5000))
        clock.advance(1)
        header.show_stats(stats(10))
        assert rates(header) == NO_RATES
        clock.advance(1)
        header.show_stats(stats(10))
        assert rates(header) == "0 flows/s 0 B/s"


# -- stream state ------------------------------------------------------------------------


async def test_paused_and_resumed(clock: FakeClock) -> None:
    app, header = make(clock)
    async with app.run_test(size=(120, 10)) as pilot:
        header.show_connecting("127.0.0.1:4242")
        header.show_paused(True)
        assert lines(header)[1].endswith("  agents –  paused")
        header.show_paused(False)
        assert lines(header)[1].endswith("  agents –  connecting to 127.0.0.1:4242…")
        await live(pilot, header)
        header.show_paused(True)
        await pilot.pause()
        assert header.has_class("-paused")
        assert lines(header)[1].endswith("  agents –  paused")
        clock.advance(5)
        # The capture goes on.
        assert lines(header)[1].startswith("elapsed 0:00:05 / 0:05:00 1%  ")
        header.show_paused(False)
        await pilot.pause()
        assert not header.has_class("-paused")
        assert lines(header)[1].endswith("  agents –  ● live")


async def test_lost_shows_the_reason_on_its_own_line(clock: FakeClock) -> None:
    app, header = make(clock)
    async with app.run_test(size=(120, 10)) as pilot:
        await live(pilot, header)
        header.show_stats(stats(0))
        clock.advance(2)
        header.show_stats(stats(1000))
        await pilot.pause()
        assert header.size.height == 2
        header.show_lost("the aggregator at 127.0.0.1:4242 closed the stream")
        await pilot.pause()
        assert header.has_class("-lost")
        assert lines(header)[1:] == [
            "0:00:02 / 0:05:00 0%  flows 1,000  1.0 MB / 50.0 MB 2%  packets 2,000  "
            f"{NO_RATES}  agents 2  ✖ stream lost",
            "the aggregator at 127.0.0.1:4242 closed the stream",
        ]
        assert header.size.height == 3  # the header grew for the reason
        header.show_paused(True)
        assert lines(header)[1:] == [  # a longer state: it goes to a line of its own
            "0:00:02 / 0:05:00 0%  flows 1,000  1.0 MB / 50.0 MB 2%  packets 2,000  "
            f"{NO_RATES}  agents 2",
            "✖ stream lost (paused)",
            "the aggregator at 127.0.0.1:4242 closed the stream",
        ]
        await pilot.pause()
        assert header.size.height == 4


# -- file mode ---------------------------------------------------------------------------


async def test_saved_capture(clock: FakeClock, utc: None) -> None:
    header = CaptureHeader({}, id="header", clock=clock)
    totals = {**STATS, "first_ms": 1709741962000, "last_ms": 1709742262500}
    header.show_file(totals, "output/flow/capture-test.json")  # before mount, as `open` does
    app = HeaderApp(header)
    async with app.run_test(size=(120, 10)) as pilot:
        await pilot.pause()
        expected = [
            "netobserv  saved capture output/flow/capture-test.json",
            "flows 12,345  bytes 9.9 MB  packets 4,321  span 0:05:00 from 2024-03-06 16:19:22",
        ]
        assert lines(header) == expected
        assert header._timer is None  # no clock runs
        clock.advance(3600)
        assert lines(header) == expected


async def test_saved_capture_after_mount_stops_the_clock(clock: FakeClock, utc: None) -> None:
    app, header = make(clock, {"capture": "flows on eth0", "target": "local host", "k": "v"})
    async with app.run_test(size=(80, 10)) as pilot:
        await pilot.pause()
        assert header._timer is not None
        header.show_file({"flows": 1, "bytes": 10, "packets": 2}, "a.json")
        await pilot.pause()
        assert header._timer is None
        assert lines(header) == [
            "netobserv  saved capture a.json  flows on eth0 on local host  k: v",
            "flows 1  bytes 10 B  packets 2  span –",
        ]


# -- width -------------------------------------------------------------------------------


async def test_120_columns_keep_the_progress_on_one_line(clock: FakeClock) -> None:
    app, header = make(clock)
    async with app.run_test(size=(120, 10)) as pilot:
        await live(pilot, header)
        header.show_stats(stats(8_000))
        clock.advance(62)
        header.show_stats(stats(12_345))
        await pilot.pause()
        assert screen_lines(header) == [
            " netobserv  capture-test  flows on eth0 on local host + lab  → output/flow",
            " 0:01:02 / 0:05:00 20%  flows 12,345  12.3 MB / 50.0 MB 24%  packets 24,690  "
            "70 flows/s 70.1 kB/s  agents 2  ● live",
        ]


async def test_80_columns_wrap_and_cut_nothing(clock: FakeClock) -> None:
    app, header = make(clock, {**INFO, "rtt off": "tracepoint tcp:tcp_probe not available"})
    async with app.run_test(size=(80, 24)) as pilot:
        await live(pilot, header)
        header.show_stats(stats(1_000_000))
        clock.advance(125)
        header.show_stats(stats(1_250_000))
        header.show_lost("the aggregator at 127.0.0.1:4242 closed the stream")
        await pilot.pause()
        shown = screen_lines(header)
        assert shown == [
            " netobserv  capture-test  flows on eth0 on local host + lab  → output/flow",
            " rtt off: tracepoint tcp:tcp_probe not available",
            " 0:02:05 / 0:05:00 41%  flows 1,250,000  1.2 GB / 50.0 MB 100%",
            " packets 2,500,000  – flows/s – B/s  agents 2  ✖ stream lost",
            " the aggregator at 127.0.0.1:4242 closed the stream",
        ]
        assert header.size.height == len(shown)
        assert max(len(line) for line in shown) <= 79  # within the padding

        await pilot.resize_terminal(40, 24)
        await pilot.pause()
        narrow = screen_lines(header)
        assert all(len(line) <= 39 for line in narrow)
        for item in ("0:02:05 / 0:05:00 41%", "flows 1,250,000", "1.2 GB / 50.0 MB 100%",
                     "packets 2,500,000", "agents 2", "✖ stream lost", "→ output/flow"):
            assert any(item in line for line in narrow), item
        assert header.size.height == len(narrow)
