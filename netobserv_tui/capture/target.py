"""Capture targets: where agents and the aggregator run. The lifecycle does not care.

A target starts the aggregator and agents, tells where the live stream is, and on stop
ends the agents first (so their last partial interval is delivered), then the aggregator
(so files are complete), and brings the files home. The Kubernetes target will implement
the same interface.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..agent.tc import cleanup_leftovers
from .owner import aggregator_user
from .procs import Child

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamEndpoint:
    host: str
    port: int
    token: str
    #: The capture's SQLite file when the front end can read it (same host), else None.
    db: str | None = None
    #: The packet capture's pcapng file, likewise.
    pcapng: str | None = None


@dataclass
class CaptureOptions:
    output: Path
    interfaces: list[str] = field(default_factory=list)
    exclude_interfaces: list[str] = field(default_factory=list)
    cache_max_flows: int = 100_000
    cache_active_timeout: str = "1s"
    log_level: str = "info"
    features: list[str] = field(default_factory=list)
    dns_port: int = 53
    filters_json: str | None = None
    #: A packet capture: agents copy the matching packets, the aggregator writes pcapng.
    packets: bool = False
    snaplen: int = 65535


@dataclass
class CaptureResult:
    files: dict[str, str]
    flows: int = 0
    bytes: int = 0
    packets: int = 0
    #: Packet capture: packets and bytes written to the pcapng file.
    captured_packets: int = 0
    captured_bytes: int = 0
    #: Something failed: the exit status is non-zero.
    problems: list[str] = field(default_factory=list)
    #: Worth knowing, but the files are complete.
    warnings: list[str] = field(default_factory=list)
    #: Peak resident memory of each process, KiB.
    peak_rss_kib: dict[str, int] = field(default_factory=dict)


class Target(Protocol):
    description: str

    async def start(self) -> StreamEndpoint: ...

    async def stop(self, say: Callable[[str], None] = ...) -> CaptureResult:
        """Stop everything and complete the files; ``say`` reports each step as it starts."""
        ...


class LocalTarget:
    """Agent and aggregator as child processes of this one, on this host."""

    description = "local host"

    def __init__(self, options: CaptureOptions) -> None:
        self.options = options
        self.token = secrets.token_urlsafe(24)
        env = {"NETOBSERV_TOKEN": self.token}
        #: Who the aggregator runs as once its files are open: not root (see owner.py).
        self.aggregator_user = aggregator_user() if os.geteuid() == 0 else None
        user = self.aggregator_user
        self.aggregator = Child(
            "aggregator",
            "netobserv_tui.aggregator",
            ["--listen", "127.0.0.1:0", "--output", str(options.output),
             *(["--packets", "--snaplen", str(options.snaplen)] if options.packets else []),
             *(["--user", f"{user[0]}:{user[1]}"] if user is not None else [])],
            env,
        )
        self.agent: Child | None = None
        self._env = env
        self.ready: dict[str, Any] = {}
        self.interfaces: list[str] = []
        self.features: dict[str, str] = {}

    async def start(self) -> StreamEndpoint:
        try:
            await self.aggregator.start()
            self.ready = await self.aggregator.wait_event("ready", timeout=30)
            host, port = self.ready["host"], int(self.ready["port"])
            args = ["--aggregator", f"{host}:{port}", "--log-level", self.options.log_level,
                    "--cache-max-flows", str(self.options.cache_max_flows),
                    "--cache-active-timeout", self.options.cache_active_timeout]
            if self.options.features:
                args += ["--features", ",".join(self.options.features),
                         "--dns-port", str(self.options.dns_port)]
            if self.options.filters_json:
                args += ["--filters", self.options.filters_json]
            if self.options.packets:
                args += ["--packets", "--snaplen", str(self.options.snaplen)]
            for item in self.options.interfaces:
                args += ["--interfaces", item]
            for item in self.options.exclude_interfaces:
                args += ["--exclude_interfaces", item]
            self.agent = Child("agent", "netobserv_tui.agent", args, self._env)
            await self.agent.start()
            ready = await self.agent.wait_event("ready", timeout=120)
            self.interfaces = list(ready.get("interfaces", []))
            self.features = dict(ready.get("features", {}))
            for feature, state in self.features.items():
                if state != "on":
                    log.warning("Feature %s is %s.", feature, state)
            if not self.interfaces:
                log.warning("No interface matched the selection: nothing will be captured.")
        except BaseException:
            await self.stop()
            raise
        files = self.ready.get("files") or {}
        return StreamEndpoint(host, port, self.token, db=files.get("db"),
                              pcapng=files.get("pcapng"))

    async def stop(self, say: Callable[[str], None] = lambda _step: None) -> CaptureResult:
        problems: list[str] = []
        peak: dict[str, int] = {}
        if self.agent is not None:
            if self.agent.running:
                say("Stopping the agent: last flows out of the kernel, programs detached...")
            was_running = self.agent.running
            status = await self.agent.stop(timeout=60)
            done = _last_event(self.agent, "done")
            if "max_rss_kib" in done:
                peak["agent"] = int(done["max_rss_kib"])
            if status not in (0, None) and was_running:
                problems.append(f"the agent exited with status {status}: {self.agent.why()}")
            if status not in (0, None):
                # A killed or failed agent may have left classifiers behind. pyroute2's
                # synchronous API cannot run inside this event loop: use a thread.
                try:
                    leftovers = await asyncio.to_thread(cleanup_leftovers)
                except Exception as exc:  # keep going: the aggregator must still close
                    problems.append(
                        f"could not remove the agent's leftovers ({exc}); run `netobserv cleanup`"
                    )
                else:
                    if leftovers:
                        problems.append("removed leftovers: " + ", ".join(leftovers))
        closed: dict[str, Any] = {}
        if self.aggregator.proc is not None:
            say("Completing the files: last batches written, SQLite indexes built...")
            status = await self.aggregator.stop(timeout=60)
            closed = _last_event(self.aggregator, "closed")
            if "max_rss_kib" in closed:
                peak["aggregator"] = int(closed["max_rss_kib"])
            if status not in (0, None):
                problems.append(
                    f"the aggregator exited with status {status}: {self.aggregator.why()}"
                )
        db = (closed.get("files") or self.ready.get("files") or {}).get("db")
        if db and self.aggregator_user is not None:
            # The aggregator ran unprivileged and left its database in WAL mode.
            from ..aggregator.writers import settle_wal

            try:
                await asyncio.to_thread(settle_wal, db)
            except sqlite3.Error as exc:
                problems.append(f"could not complete {db}: {exc}; sqlite3 still reads it "
                                "with its -wal file")
        agent_stats = closed.get("agent_stats") or {}
        warnings = []
        if agent_stats.get("map_full_packets"):
            warnings.append(
                f"the kernel flow map was full: {agent_stats['map_full_packets']} packets "
                f"went through the overflow ring buffer, "
                f"{agent_stats.get('overflow_lost_packets', 0)} lost; raise --cache-max-flows "
                "or shorten --cache-active-timeout"
            )
        if agent_stats.get("export_lost_flows"):
            warnings.append(
                f"{agent_stats['export_lost_flows']} flows could not be delivered by the agents"
            )
        if agent_stats.get("dns_map_full"):
            warnings.append(
                f"the kernel DNS map was full: {agent_stats['dns_map_full']} DNS records were "
                "lost; shorten --cache-active-timeout so it is drained more often"
            )
        if agent_stats.get("event_map_full"):
            warnings.append(
                f"the kernel drop/TCP event map was full: {agent_stats['event_map_full']} "
                "events were lost; shorten --cache-active-timeout"
            )
        warnings += packet_loss_warnings(agent_stats)
        files = closed.get("files") or self.ready.get("files") or {}
        result = CaptureResult(
            files={k: str(v) for k, v in files.items()},
            flows=int(closed.get("flows", 0)),
            bytes=int(closed.get("bytes", 0)),
            packets=int(closed.get("packets", 0)),
            captured_packets=int(closed.get("captured_packets", 0)),
            captured_bytes=int(closed.get("captured_bytes", 0)),
            problems=problems,
            warnings=warnings,
            peak_rss_kib=peak,
        )
        if problems:
            log.error("Capture ended with problems: %s.", "; ".join(problems))
        return result


def packet_loss_warnings(agent_stats: dict[str, Any]) -> list[str]:
    """What a packet capture lost, from the agents' summed counters: never silent."""
    warnings = []
    if agent_stats.get("packets_lost"):
        warnings.append(
            f"{agent_stats['packets_lost']} packets did not fit in the kernel's packet ring "
            "buffer and are not in the file; capture fewer packets (a narrower filter, "
            "--sampling, a smaller --snaplen)")
    if agent_stats.get("export_lost_packets"):
        warnings.append(f"{agent_stats['export_lost_packets']} packets could not be delivered "
                        "by the agents")
    return warnings


def _last_event(child: Child, kind: str) -> dict[str, Any]:
    """The latest ``{"event": kind}`` a stopped child printed, or {}."""
    found: dict[str, Any] = {}
    while not child.events.empty():
        event = child.events.get_nowait()
        if event.get("event") == kind:
            found = event
    return found
