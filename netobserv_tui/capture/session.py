"""The target-agnostic capture lifecycle: start, watch limits, stop on any exit path.

``run_capture`` owns the order of things. Whatever ends the capture (Ctrl+C in the TUI,
SIGINT/SIGTERM, SIGHUP when the terminal goes away, ``--max-time``, ``--max-bytes``, an
error) goes through the same ``target.stop()``, which delivers the last partial interval
and completes the files.

A target may also watch the capture while it runs (``target.watch(stats, notify)``: the
cluster target checks that every agent connected); what it says is a :class:`Notice`,
shown by the foreground (the TUI's header, or stderr without it) and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..model.stream import LiveStream, StatsUpdate
from .target import CaptureResult, StreamEndpoint, Target

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_time: float | None = None
    max_bytes: int | None = None


@dataclass(frozen=True)
class Notice:
    """Something the user must know while the capture runs (such as agents that did not
    connect): ``brief`` for the TUI's header (a few lines), ``full`` for stderr and the log.
    ``cleared`` says that an earlier notice is over."""

    brief: str
    full: str
    cleared: bool = False


#: A target's watch: it reads the latest STATS with the first argument, and says what the
#: user must know (and when that is over) with the second.
Notify = Callable[[Notice], None]


@dataclass
class Progress:
    started: float
    flows: int = 0
    bytes: int = 0
    packets: int = 0
    agents: int = 0
    #: The latest STATS payload ({} until the first one).
    stats: dict[str, Any] = field(default_factory=dict)
    #: The target's latest notice (None: none so far).
    notice: Notice | None = None

    def line(self) -> str:
        return (
            f"{time.monotonic() - self.started:6.1f}s  flows {self.flows}  bytes {self.bytes}  "
            f"packets {self.packets}  agents {self.agents}"
        )


async def watch_stats(
    endpoint: StreamEndpoint, on_stats: Callable[[dict[str, Any]], None]
) -> None:
    """Follow the aggregator's live stream and hand every STATS payload to ``on_stats``."""
    async with LiveStream(endpoint.host, endpoint.port, endpoint.token) as stream:
        async for frame in stream:
            if isinstance(frame, StatsUpdate):
                on_stats(frame.counters)


#: Runs the foreground part of a capture (TUI or headless) until it returns a reason.
Foreground = Callable[[StreamEndpoint, asyncio.Event, Progress], Coroutine[Any, Any, str]]


async def headless(
    endpoint: StreamEndpoint, stop: asyncio.Event, progress: Progress,
    out: TextIO | None = None, *, interval: float = 1.0,
) -> str:
    """No TUI: print progress on ``out`` (stderr) every ``interval`` seconds, and each
    notice of the target once, until asked to stop."""
    out = out or sys.stderr  # the stderr of now, not of when this module was imported
    last = ""
    said: Notice | None = None
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
        if progress.notice is not said:
            said = progress.notice
            if said is not None:
                # On a terminal, the notice replaces the progress line, which follows it.
                out.write(("\r\x1b[K" if out.isatty() else "")
                          + ("" if said.cleared else "warning: ") + said.full + "\n")
        line = progress.line()
        if out.isatty():
            out.write("\r" + line)
        elif line != last:
            out.write(line + "\n")
        out.flush()
        last = line
    if out.isatty():
        out.write("\n")
    return "stopped"


async def run_capture(
    target: Target,
    limits: Limits,
    foreground: Foreground = headless,
    on_stop_requested: Callable[[str], None] | None = None,
    out: TextIO | None = None,
    abort: Awaitable[Any] | None = None,
    on_notice: Notify | None = None,
) -> tuple[CaptureResult, str]:
    """Start, run the foreground until a stop reason, stop. Returns (result, reason).

    While stopping, each step is said on ``out`` (the TUI has exited by then), so a long
    index build or file transfer never looks like a hang.  ``abort`` (the TUI ending while
    it shows the start's progress) cancels a start still running, like a stop request.
    A target's notices go to ``progress.notice`` (which ``headless`` prints), to the log
    and to ``on_notice`` (the TUI).
    """
    loop = asyncio.get_running_loop()
    told = out or sys.stderr

    def say(step: str) -> None:
        print(step, file=told, flush=True)

    stop = asyncio.Event()
    reason = "stopped"
    progress = Progress(started=time.monotonic())

    def request_stop(why: str) -> None:
        nonlocal reason
        if not stop.is_set():
            reason = why
            stop.set()
            if on_stop_requested is not None:
                on_stop_requested(why)

    # Signals reach only the main thread; driven from another one (tests, an embedding
    # program), stopping is the caller's business.  SIGHUP: the terminal went away (a
    # closed window, a dropped ssh session); its default would end the process before the
    # target is cleaned up.
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if (
        threading.current_thread() is threading.main_thread()) else ()

    def hang_up() -> None:
        _off_the_terminal()
        log.warning("Received SIGHUP (the terminal went away): stopping the capture")
        request_stop("received SIGHUP (the terminal went away)")

    for sig in signals:
        if sig == signal.SIGHUP:
            loop.add_signal_handler(sig, hang_up)
        else:
            loop.add_signal_handler(sig, request_stop, f"received {signal.Signals(sig).name}")
    tasks: list[asyncio.Task[Any]] = []
    try:
        # Starting can take minutes (a cluster rollout): a stop request (signal, or the TUI
        # quit while it showed the progress) cancels it, and the target cleans up.
        starting = asyncio.create_task(target.start())
        stopped = asyncio.create_task(stop.wait())
        waiters: set[asyncio.Future[Any]] = {starting, stopped}
        if abort is not None:
            waiters.add(asyncio.ensure_future(abort))  # not ours to cancel
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            if not stop.is_set():
                reason = "stopped before the capture started"
            raise _Cancelled
        endpoint = starting.result()
        progress.started = time.monotonic()

        def on_stats(stats: dict[str, Any]) -> None:
            progress.flows = int(stats.get("flows", 0))
            progress.bytes = int(stats.get("bytes", 0))
            progress.packets = int(stats.get("packets", 0))
            progress.agents = int(stats.get("agents", 0))
            progress.stats = stats
            if limits.max_bytes is not None and progress.bytes >= limits.max_bytes:
                request_stop(f"max-bytes reached ({progress.bytes} >= {limits.max_bytes})")

        def notify(notice: Notice) -> None:
            log.info("%s", notice.full)
            progress.notice = notice
            if on_notice is not None:
                on_notice(notice)

        tasks.append(asyncio.create_task(watch_stats(endpoint, on_stats)))
        watch: Callable[[Callable[[], dict[str, Any]], Notify], Coroutine[Any, Any, None]] \
            | None = getattr(target, "watch", None)
        if watch is not None:
            tasks.append(asyncio.create_task(watch(lambda: progress.stats, notify)))
        if limits.max_time is not None:
            tasks.append(
                asyncio.create_task(_after(limits.max_time, request_stop, "max-time reached"))
            )
        fg = asyncio.create_task(foreground(endpoint, stop, progress))
        tasks.append(fg)
        done, _ = await asyncio.wait(
            {fg, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
        )
        if fg in done:
            request_stop(fg.result())
        else:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(fg), timeout=5)
    except _Cancelled:
        pass  # the target undid its start; stop() below reports what is left
    finally:
        for task in tasks:
            task.cancel()
        # Never let a task that ignores cancellation keep the files from being completed.
        await asyncio.wait(tasks, timeout=5) if tasks else None
        # Ignore a second Ctrl+C while files are being completed; SIGTERM still waits too.
        for sig in signals:
            loop.add_signal_handler(sig, log.warning, "Still stopping: completing the files.")
        try:
            result = await target.stop(say)
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
    return result, reason


def _off_the_terminal() -> None:
    """The terminal hung up: stdin, stdout and stderr that were on it now read and write
    /dev/null.  Writing to a hung-up terminal fails (EIO), and the first message of the stop
    (or the TUI's next frame) would end the process before the files are complete and the
    host is cleaned up; the file paths still reach a stdout that is a file or a pipe."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        devnull = os.fstat(null).st_rdev
        for fd in (0, 1, 2):
            with contextlib.suppress(OSError):
                info = os.fstat(fd)
                if stat.S_ISCHR(info.st_mode) and info.st_rdev != devnull:
                    os.dup2(null, fd)
    finally:
        os.close(null)


class _Cancelled(Exception):
    """The start was cancelled by a stop request or ``abort``."""


async def _after(seconds: float, fn: Callable[[str], None], why: str) -> None:
    await asyncio.sleep(seconds)
    fn(why)
