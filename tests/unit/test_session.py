"""The capture lifecycle's start can be cancelled: a stop request or the TUI quitting."""

from __future__ import annotations

import asyncio
import io
import os
import signal
from collections.abc import Callable

from netobserv_tui.capture.session import Limits, Notice, Progress, headless, run_capture
from netobserv_tui.capture.target import CaptureResult, StreamEndpoint


class SlowTarget:
    """A target whose start never ends by itself (a rollout that hangs)."""

    description = "slow"

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.start_cancelled = False
        self.stopped = 0

    async def start(self) -> StreamEndpoint:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.start_cancelled = True
            raise
        raise AssertionError("unreachable")

    async def stop(self, say: Callable[[str], None] = lambda _s: None) -> CaptureResult:
        self.stopped += 1
        return CaptureResult(files={}, problems=[])


async def never(*_args: object) -> str:
    raise AssertionError("the foreground must not run before the start completed")


async def test_the_tui_quitting_cancels_a_start_and_the_target_cleans_up() -> None:
    target = SlowTarget()
    quit_tui: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    run = asyncio.create_task(run_capture(target, Limits(), never, abort=quit_tui))
    await asyncio.wait_for(target.started.wait(), 5)
    quit_tui.set_result("stopped")
    result, reason = await asyncio.wait_for(run, 5)
    assert target.start_cancelled and target.stopped == 1
    assert reason == "stopped before the capture started" and result.files == {}
    assert quit_tui.result() == "stopped"  # not cancelled by the lifecycle


async def test_ctrl_c_during_the_start_cancels_it() -> None:
    target = SlowTarget()
    run = asyncio.create_task(run_capture(target, Limits(), never))
    await asyncio.wait_for(target.started.wait(), 5)
    os.kill(os.getpid(), signal.SIGINT)  # what a terminal's Ctrl+C sends
    result, reason = await asyncio.wait_for(run, 5)
    assert reason == "received SIGINT"
    assert target.start_cancelled and target.stopped == 1 and result.files == {}


class WatchedTarget:
    """A target that starts at once and, while the capture runs, warns, then (once told
    to go on) says that the warning is over."""

    description = "watched"

    def __init__(self, warn: Notice, over: Notice) -> None:
        self.warn, self.over = warn, over
        self.go = asyncio.Event()
        self.stats_seen: list[dict[str, object]] = []

    async def start(self) -> StreamEndpoint:
        return StreamEndpoint("127.0.0.1", 9, "token")  # no aggregator: STATS never come

    async def watch(self, stats: Callable[[], dict[str, object]],
                    notify: Callable[[Notice], None]) -> None:
        self.stats_seen.append(stats())
        notify(self.warn)
        await self.go.wait()
        notify(self.over)
        await asyncio.Event().wait()

    async def stop(self, say: Callable[[str], None] = lambda _s: None) -> CaptureResult:
        return CaptureResult(files={})


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)


async def test_a_targets_notices_reach_the_foreground_and_stderr_once_each() -> None:
    """What the target says goes to progress.notice, to on_notice, and (headless) to
    stderr once, between the progress lines; and so does its end."""
    warn = Notice("⚠ brief", "1 of 2 agents not connected\n  pod on node-b")
    over = Notice("All 2 agents are connected now.", "All 2 agents are connected now.",
                  cleared=True)
    target = WatchedTarget(warn, over)
    seen: list[Notice] = []
    out = io.StringIO()

    async def foreground(endpoint: StreamEndpoint, stop: asyncio.Event,
                         progress: Progress) -> str:
        async def drive() -> None:
            await until(lambda: "node-b" in out.getvalue())
            assert progress.notice is warn
            target.go.set()
            await until(lambda: "connected now" in out.getvalue())
            assert progress.notice is over
            stop.set()

        driving = asyncio.create_task(drive())
        reason = await headless(endpoint, stop, progress, out, interval=0.01)
        await driving
        return reason

    await run_capture(target, Limits(), foreground, on_notice=seen.append)
    assert seen == [warn, over] and target.stats_seen == [{}]
    printed = [line for line in out.getvalue().splitlines() if "flows " not in line]
    assert printed == ["warning: 1 of 2 agents not connected", "  pod on node-b",
                       "All 2 agents are connected now."]
