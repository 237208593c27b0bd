"""``netobserv flows``: glue between the command line, a target, the lifecycle and the UI."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..agent.kernel import check_privileges
from ..model.errors import CaptureError
from .session import Limits, Progress, headless, run_capture
from .target import CaptureOptions, CaptureResult, LocalTarget, StreamEndpoint

if TYPE_CHECKING:
    from ..store import FlowStore
    from .cluster import ClusterOptions, KubernetesTarget

log = logging.getLogger(__name__)


@dataclass
class FlowsRequest:
    """What `netobserv flows` was asked: the capture itself, and how to run it here."""

    capture: CaptureOptions
    limits: Limits = field(default_factory=Limits)
    tui: bool = True
    lab: bool = False
    #: Capture on a Kubernetes cluster instead of this host.
    cluster: ClusterOptions | None = None


@contextlib.contextmanager
def _maybe_lab(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    from ..lab.demo import LabDemo
    from ..lab.topology import Lab

    with Lab() as lab, LabDemo(lab):
        yield


def _features_text(features: dict[str, str]) -> str:
    """`` with pktdrop, dns (rtt off: tracepoint tcp:tcp_probe not available)``."""
    if not features:
        return ""
    on = [name for name, state in features.items() if state == "on"]
    off = [f"{name} {state}" for name, state in features.items() if state != "on"]
    text = " with " + (", ".join(on) or "no feature")
    return text + (f" ({'; '.join(off)})" if off else "")


@contextlib.contextmanager
def _logs_to_file(path: Path) -> Iterator[None]:
    """The TUI draws on the terminal: while it runs, log records go to a file instead."""
    root = logging.getLogger()
    saved = root.handlers[:]
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.handlers = [handler]
    try:
        yield
    finally:
        root.handlers = saved
        handler.close()


def _report(result: CaptureResult, reason: str) -> None:
    print(f"Capture ended: {reason}.", file=sys.stderr)
    for problem in result.problems:
        print(f"error: {problem}", file=sys.stderr)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{result.flows} flows, {result.bytes} bytes, {result.packets} packets.", file=sys.stderr)
    if result.peak_rss_kib:
        peaks = ", ".join(f"{k} {v / 1024:.0f} MiB" for k, v in sorted(result.peak_rss_kib.items()))
        print(f"Peak memory: {peaks}.", file=sys.stderr)
    for kind in ("json", "db"):
        if kind in result.files:
            print(result.files[kind])


async def run_flows(request: FlowsRequest) -> int:
    options = dataclasses.replace(request.capture, output=request.capture.output.resolve())
    request = dataclasses.replace(request, capture=options)
    limits = request.limits
    if request.cluster is None:
        check_privileges()
    with _maybe_lab(request.lab):
        target: LocalTarget | KubernetesTarget
        if request.cluster is not None:
            from .cluster import KubernetesTarget  # kubernetes-asyncio only when needed

            target = KubernetesTarget(options, request.cluster, say=_say)
        else:
            target = LocalTarget(options)
        if request.tui:
            result, reason = await _with_tui(target, limits, request)
        else:
            print(f"Starting the capture on the {target.description}...", file=sys.stderr)

            async def foreground(
                endpoint: StreamEndpoint, stop: asyncio.Event, progress: Progress
            ) -> str:
                print(
                    f"Capturing flows on {', '.join(target.interfaces) or 'no interface'}"
                    f"{_features_text(target.features)}; press Ctrl+C to stop.",
                    file=sys.stderr,
                    flush=True,
                )
                return await headless(endpoint, stop, progress)

            result, reason = await run_capture(target, limits, foreground)
    _report(result, reason)
    if request.cluster is not None and not request.cluster.copy and not result.problems:
        return 0  # the user declined the files
    if not result.files:
        raise CaptureError("no file was written; see the messages above")
    return 1 if result.problems else 0


def _live_store(endpoint: StreamEndpoint) -> FlowStore:
    """Where live filters search everything the capture has seen: its SQLite file opened
    read-only when it is on this host, else the aggregator itself (SEARCH frames, through
    the port-forward of a cluster capture)."""
    from ..store import open_live

    return open_live(endpoint.db, endpoint.host, endpoint.port, endpoint.token)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _with_tui(
    target: LocalTarget | KubernetesTarget, limits: Limits, request: FlowsRequest
) -> tuple[CaptureResult, str]:
    from ..tui.app import FlowsApp
    from ..tui.terminal import sized_from_terminal

    # The TUI opens at once and shows the start's progress (a cluster rollout takes a
    # while); it follows the stream once the target has started.
    app = FlowsApp(None, {"target": target.description, "capture": "flows",
                          "output": str(request.capture.output)}, starting=True)
    if hasattr(target, "say"):
        target.say = app.show_progress

    async def run_app() -> str | None:
        with sized_from_terminal():
            return await app.run_async()

    app_task = asyncio.create_task(run_app())

    async def foreground(endpoint: StreamEndpoint, stop: asyncio.Event, _p: Progress) -> str:
        header = {
            "target": target.description + (" + lab" if request.lab else ""),
            "capture": "flows on " + (", ".join(target.interfaces) or "every interface")
            + _features_text(target.features),
            "output": str(request.capture.output),
        }
        if limits.max_time is not None:
            header["max_time"] = str(limits.max_time)
        if limits.max_bytes is not None:
            header["max_bytes"] = str(limits.max_bytes)
        store = _live_store(endpoint)
        try:
            app.attach((endpoint.host, endpoint.port, endpoint.token), store, header)
            outcome = await asyncio.shield(app_task)
        finally:
            store.close()
        return str(outcome or "stopped")

    def on_stop(why: str) -> None:
        if app.is_running:
            app.request_stop(why)

    print(f"Starting the capture on the {target.description}...", file=sys.stderr)
    with _logs_to_file(request.capture.output / "netobserv.log"):
        try:
            return await run_capture(target, limits, foreground, on_stop, abort=app_task)
        finally:
            if not app_task.done():
                app.request_stop("stopped")
            with contextlib.suppress(Exception):
                await app_task
