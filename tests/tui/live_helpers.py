"""A real capture backend for TUI tests: the real Aggregator, fed by the agents' real Exporter.

Records go through the same code as in a capture: the agent's Exporter frames and sends
FLOWS, the aggregator validates, writes SQLite and JSON and publishes its live stream; the
app subscribes with the real LiveStream client and searches the real SQLite file.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netobserv_tui.agent.exporter import Exporter
from netobserv_tui.aggregator.server import Aggregator
from netobserv_tui.model.fields import BASE_COLUMNS
from netobserv_tui.store import SqliteStore
from netobserv_tui.tui.app import FlowsApp

TOKEN = "live-t0ken"
HEADER = {"target": "local host", "capture": "flows", "output": "out/flow"}
START_MS = 1_795_633_800_000


def base_record(i: int, **overrides: Any) -> dict[str, Any]:
    """A complete base record (every BASE_COLUMNS field), distinct per ``i``."""
    record: dict[str, Any] = {
        "SrcAddr": f"198.18.0.{10 + i % 4}", "DstAddr": "198.18.0.20",
        "SrcPort": 40000 + i, "DstPort": 8080, "Proto": 6,
        "SrcMac": "0A:58:C6:12:00:0A", "DstMac": "0A:58:C6:12:00:14", "Etype": 2048,
        "Dscp": 0, "IcmpType": 0, "IcmpCode": 0, "Flags": 16, "Bytes": 1000 + i,
        "Packets": 1 + i % 7, "Sampling": 0,
        "TimeFlowStartMs": START_MS + 1000 * i, "TimeFlowEndMs": START_MS + 1000 * i + 400,
        "AgentIP": "198.18.0.254", "Interface": "nobs-pod-a", "IfDirection": i % 2,
        "Interfaces": ["nobs-pod-a"], "IfDirections": [i % 2], "FlowDirection": i % 2,
    }  # fmt: skip
    record.update(overrides)
    return record


@dataclass
class LiveCapture:
    aggregator: Aggregator
    exporter: Exporter

    @property
    def db(self) -> Path:
        return Path(self.aggregator.files["db"])

    def app(self, **kwargs: Any) -> FlowsApp:
        """The app as a local capture runs it: live stream plus the SQLite file."""
        store = kwargs.pop("store", SqliteStore(self.db))
        return FlowsApp(("127.0.0.1", self.aggregator.port, TOKEN), HEADER, store=store,
                        **kwargs)

    async def send(self, records: list[dict[str, Any]], columns: tuple[str, ...] = ()) -> None:
        """Send ``records`` as one agent does and wait until the aggregator acknowledged them
        (they are then committed to SQLite)."""
        cols = list(columns or dict.fromkeys(k for r in records for k in r))
        rows = [[record.get(c) for c in cols] for record in records]

        def push() -> None:
            self.exporter.submit(cols, rows)
            deadline = time.monotonic() + 10
            while self.exporter.pending_rows:
                if time.monotonic() > deadline:
                    raise AssertionError("the aggregator did not acknowledge the batch")
                self.exporter.pump(wait=0.05)

        await asyncio.to_thread(push)


@asynccontextmanager
async def live_capture(tmp_path: Path) -> AsyncIterator[LiveCapture]:
    aggregator = Aggregator(tmp_path / "output", TOKEN, live_interval=0.05, stats_interval=0.1)
    await aggregator.start()
    exporter = Exporter("127.0.0.1", aggregator.port, TOKEN,
                        {"ip": "198.18.0.254", "hostname": "test-node", "version": "test"})
    await asyncio.to_thread(exporter.connect)
    try:
        yield LiveCapture(aggregator, exporter)
    finally:
        await asyncio.to_thread(exporter.finish, 5.0)
        await aggregator.stop()


__all__ = ["BASE_COLUMNS", "HEADER", "TOKEN", "LiveCapture", "base_record", "live_capture"]
