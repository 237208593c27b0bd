"""``netobserv flows`` and ``packets``: glue between the command line, a target, the
lifecycle, the UI and, for packets, the pcapng stream on stdout and the TLS secrets."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..agent.kernel import check_privileges
from ..model.errors import CaptureError, UsageError
from .owner import OURS, hand_over, invoking_user, private_files
from .pcap_stream import PcapngFollower, stdout_binary
from .session import Limits, Notice, Progress, headless, run_capture
from .target import CaptureOptions, CaptureResult, LocalTarget, StreamEndpoint

if TYPE_CHECKING:
    from ..store import FlowStore
    from .cluster import ClusterOptions, KubernetesTarget

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PacketOptions:
    """What ``netobserv packets`` adds to a capture."""

    snaplen: int = 65535
    #: ``-w -``: the pcapng stream on stdout while capturing.
    stdout: bool = False
    #: An NSS key log file whose secrets go into the pcapng (``--tls-keylog``).
    tls_keylog: Path | None = None


@dataclass
class FlowsRequest:
    """What `netobserv flows` was asked: the capture itself, and how to run it here."""

    capture: CaptureOptions
    limits: Limits = field(default_factory=Limits)
    tui: bool = True
    lab: bool = False
    #: Capture on a Kubernetes cluster instead of this host.
    cluster: ClusterOptions | None = None
    #: A packet capture (``netobserv packets``).
    packets: PacketOptions | None = None
    #: Messages name commands as ``netobserv cleanup``; this spells them as the user runs
    #: the program (``kubectl netobserv cleanup`` as a kubectl plugin; see cli.py).
    spell: Callable[[str], str] = str


@contextlib.contextmanager
def _maybe_lab(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    from ..lab.demo import LabDemo
    from ..lab.topology import Lab

    with Lab() as lab, LabDemo(lab):
        yield


def _interfaces_text(names: list[str], shown: int = 3) -> str:
    """``eth0, eth1`` or, past ``shown`` names, ``12 interfaces (eth0, eth1, eth2, ...)``:
    the header's first line stays one line on a node with many (the full list is in the
    log and in the --no-tui line)."""
    if not names:
        return "every interface"
    if len(names) <= shown:
        return ", ".join(names)
    return f"{len(names)} interfaces ({', '.join(names[:shown])}, ...)"


def _features_text(features: dict[str, str]) -> str:
    """`` with pktdrop, dns (rtt off: tracepoint tcp:tcp_probe not available)``."""
    if not features:
        return ""
    on = [name for name, state in features.items() if state == "on"]
    off = [f"{name} {state}" for name, state in features.items() if state != "on"]
    text = " with " + (", ".join(on) or "no feature")
    return text + (f" ({'; '.join(off)})" if off else "")


@contextlib.contextmanager
def _logs_to_file(path: Path, *, terminal: bool = False) -> Iterator[None]:
    """Log records of INFO and above go to ``path`` while the capture runs (the details
    of what went wrong, which the terminal gets in short).  The TUI draws on the
    terminal: with it, they go only there; without it (``terminal``), the terminal keeps
    getting what ``--log-level`` says."""
    root = logging.getLogger()
    saved, saved_level = root.handlers[:], root.level
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    with contextlib.suppress(OSError):
        path.chmod(0o600)  # it quotes addresses and names; older versions made it 0644
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    levels = {h: h.level for h in saved}
    if terminal:
        for kept in saved:
            kept.setLevel(max(kept.level, saved_level))
        root.handlers = [*saved, handler]
    else:
        root.handlers = [handler]
    root.setLevel(min(saved_level, logging.INFO))
    try:
        yield
    finally:
        root.handlers = saved
        root.setLevel(saved_level)
        for kept, level in levels.items():
            kept.setLevel(level)
        handler.close()


def _report(result: CaptureResult, reason: str, packets: PacketOptions | None = None,
            spell: Callable[[str], str] = str) -> None:
    print(f"Capture ended: {reason}.", file=sys.stderr)
    for problem in result.problems:
        print(f"error: {spell(problem)}", file=sys.stderr)
    for warning in result.warnings:
        print(f"warning: {spell(warning)}", file=sys.stderr)
    print(f"{result.flows} flows, {result.bytes} bytes, {result.packets} packets.", file=sys.stderr)
    if packets is not None:
        print(f"{result.captured_packets} packets ({result.captured_bytes} bytes) written to "
              "the packet file.", file=sys.stderr)
    if result.peak_rss_kib:
        peaks = ", ".join(f"{k} {v / 1024:.0f} MiB" for k, v in sorted(result.peak_rss_kib.items()))
        print(f"Peak memory: {peaks}.", file=sys.stderr)
    # The files' paths, one per line, on stdout, unless stdout carries the pcapng stream.
    out = sys.stderr if packets is not None and packets.stdout else sys.stdout
    for kind in ("pcapng", "json", "db"):
        if kind in result.files:
            print(result.files[kind], file=out)


def _add_secrets(result: CaptureResult, keylog: Path) -> None:
    """Put the key log's secrets at the front of the saved pcapng (a warning if it cannot)."""
    from ..aggregator.pcapng import with_secrets_first

    path = result.files.get("pcapng")
    if path is None:
        return
    try:
        secrets = keylog.read_bytes()
    except OSError as exc:
        result.warnings.append(f"--tls-keylog {keylog}: {exc.strerror or exc}; the packet "
                               "file has no TLS secrets")
        return
    if not secrets.strip():
        result.warnings.append(f"--tls-keylog {keylog} is empty: no TLS secrets were logged "
                               "(is SSLKEYLOGFILE set for the application?)")
        return
    try:
        with_secrets_first(Path(path), secrets)
    except (OSError, ValueError) as exc:
        result.warnings.append(f"could not add the TLS secrets to {path}: {exc}")


async def run_flows(request: FlowsRequest) -> int:
    """Run a capture to its end; its files are private to whoever ran it (see owner.py)."""
    options = dataclasses.replace(request.capture, output=request.capture.output.resolve())
    request = dataclasses.replace(request, capture=options)
    if request.cluster is None:
        check_privileges()  # first: without root, say so before touching any folder
    user = invoking_user()
    started = time.time()
    with private_files(options.output) as created:
        try:
            return await _run_flows(request)
        finally:
            hand_over([*created, *_written_since(options.output, started)], user)


def _written_since(output: Path, started: float) -> list[Path]:
    """Our folders and log under ``output``, and the files in them changed since
    ``started``: what a capture that started then may have written."""
    found: list[Path] = []
    for name in OURS:
        path = output / name
        if not path.exists():
            continue
        found.append(path)
        if path.is_dir():
            for item in path.iterdir():
                with contextlib.suppress(OSError):
                    if item.stat().st_mtime >= started - 1:
                        found.append(item)
    return found


async def _run_flows(request: FlowsRequest) -> int:
    options = request.capture
    limits = request.limits
    if request.cluster is None:
        check_privileges()
    packets = request.packets
    stream: BinaryIO | None = None
    if packets is not None and packets.stdout:
        if request.cluster is not None:
            raise UsageError("-w - streams the packets of a capture on this host (--local or "
                             "--lab); a cluster capture's pcapng is copied at the end: open "
                             "it then with wireshark or `netobserv open`")
        try:
            stream = stdout_binary()
        except OSError as exc:
            raise UsageError(f"-w -: {exc}") from None
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

            follower: PcapngFollower | None = None

            async def foreground(
                endpoint: StreamEndpoint, stop: asyncio.Event, progress: Progress
            ) -> str:
                nonlocal follower
                what = "packets" if packets is not None else "flows"
                # A cluster's agents do not report their interfaces: they take those asked.
                where = ", ".join(target.interfaces) or (
                    (", ".join(options.interfaces) or "every interface")
                    if request.cluster is not None else "no interface")
                print(
                    f"Capturing {what} on {where}"
                    f"{_features_text(target.features)}; press Ctrl+C to stop.",
                    file=sys.stderr,
                    flush=True,
                )
                if stream is not None and endpoint.pcapng:
                    assert packets is not None
                    follower = PcapngFollower(Path(endpoint.pcapng), stream, packets.tls_keylog)
                    follower.start()
                return await headless(endpoint, stop, progress)

            try:
                with _logs_to_file(options.output / "netobserv.log", terminal=True):
                    result, reason = await run_capture(target, limits, foreground)
            finally:
                if follower is not None:
                    await asyncio.to_thread(follower.finish)
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
    if packets is not None and packets.tls_keylog is not None:
        _add_secrets(result, packets.tls_keylog)
    _report(result, reason, packets, request.spell)
    if request.cluster is not None and not request.cluster.copy:
        return 1 if result.problems else 0  # the user declined the files
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
    from ..tui.collector import quiet_collector
    from ..tui.packets import PacketsApp
    from ..tui.terminal import sized_from_terminal

    # The TUI opens at once and shows the start's progress (a cluster rollout takes a
    # while); it follows the stream once the target has started.  A packet capture on this
    # host shows its packets (read from the growing pcapng); on a cluster, whose pcapng
    # comes home at the end, its flows: the per 5-tuple packet and byte counts.
    what = "packets" if request.packets is not None else "flows"
    first = {"target": target.description, "capture": what,
             "output": str(request.capture.output)}
    app: FlowsApp | PacketsApp
    if request.packets is not None and request.cluster is None:
        app = PacketsApp(None, first, starting=True)
    else:
        app = FlowsApp(None, first, starting=True, names_first=request.cluster is not None)
    if hasattr(target, "say"):
        target.say = app.show_progress

    async def run_app() -> str | None:
        with sized_from_terminal(), quiet_collector():
            return await app.run_async()

    app_task = asyncio.create_task(run_app())

    async def foreground(endpoint: StreamEndpoint, stop: asyncio.Event, _p: Progress) -> str:
        header = {
            "target": target.description + (" + lab" if request.lab else ""),
            "capture": f"{what} on " + _interfaces_text(target.interfaces)
            + _features_text(target.features),
            "output": str(request.capture.output),
        }
        if limits.max_time is not None:
            header["max_time"] = str(limits.max_time)
        if limits.max_bytes is not None:
            header["max_bytes"] = str(limits.max_bytes)
        stream = (endpoint.host, endpoint.port, endpoint.token)
        if isinstance(app, PacketsApp):
            app.attach(stream, endpoint.pcapng or "", header)
            return str(await asyncio.shield(app_task) or "stopped")
        store = _live_store(endpoint)
        try:
            app.attach(stream, store, header)
            outcome = await asyncio.shield(app_task)
        finally:
            store.close()
        return str(outcome or "stopped")

    def on_stop(why: str) -> None:
        if app.is_running:
            app.request_stop(why)

    def on_notice(notice: Notice) -> None:
        if isinstance(app, FlowsApp):  # the cluster's app (a local capture has no notice)
            app.show_warning("" if notice.cleared else notice.brief)

    print(f"Starting the capture on the {target.description}...", file=sys.stderr)
    with _logs_to_file(request.capture.output / "netobserv.log"):
        try:
            return await run_capture(target, limits, foreground, on_stop, abort=app_task,
                                     on_notice=on_notice)
        finally:
            if not app_task.done():
                app.request_stop("stopped")
            with contextlib.suppress(Exception):
                await app_task
