"""The capture lifecycle's start can be cancelled: a stop request or the TUI quitting."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

from netobserv_tui.capture.session import Limits, run_capture
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
