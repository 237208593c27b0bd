"""Helpers of the aggregator tests: peers speaking the protocol, sample rows, file readers."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from netobserv_tui.aggregator.server import Aggregator
from netobserv_tui.model.fields import BASE_COLUMNS
from netobserv_tui.model.protocol import (
    HEADER_SIZE,
    FrameType,
    decode_header,
    decode_payload,
    encode,
)

TOKEN = "t0ken-for-tests"
#: Columns of the sample rows: a base capture plus DNS tracking.
DNS_COLUMNS = (*BASE_COLUMNS, "DnsId", "DnsFlagsResponseCode", "DnsLatencyMs")


def sample_rows(n: int, seed: int = 1, columns: tuple[str, ...] = DNS_COLUMNS) -> list[list[Any]]:
    """Deterministic realistic rows for ``columns`` (DNS fields set on UDP/53 rows only)."""
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        dns = i % 3 == 0
        values: dict[str, Any] = {
            "SrcAddr": f"198.18.0.{rnd.randrange(1, 255)}",
            "DstAddr": f"198.18.1.{rnd.randrange(1, 255)}",
            "SrcPort": rnd.randrange(1024, 65535), "DstPort": 53 if dns else 80,
            "Proto": 17 if dns else 6, "SrcMac": "0A:58:0A:80:00:01",
            "DstMac": "0A:58:0A:80:00:02", "Etype": 2048, "Dscp": 0, "IcmpType": 0,
            "IcmpCode": 0, "Flags": 0 if dns else 16, "Bytes": rnd.randrange(60, 9000),
            "Packets": rnd.randrange(1, 10), "Sampling": 0,
            "TimeFlowStartMs": 1_764_097_458_000 + i, "TimeFlowEndMs": 1_764_097_458_500 + i,
            "AgentIP": "198.18.0.254", "Interface": "eth0", "IfDirection": i % 2,
            "Interfaces": ["eth0"], "IfDirections": [i % 2], "FlowDirection": i % 2,
            "DnsId": rnd.randrange(65536) if dns else None,
            "DnsFlagsResponseCode": "NoError" if dns else None,
            "DnsLatencyMs": rnd.randrange(0, 40) if dns else None,
        }
        rows.append([values[c] for c in columns])
    return rows


def as_objects(columns: tuple[str, ...] | list[str], rows: list[list[Any]]) -> list[dict[str, Any]]:
    """What the JSON file must hold for these rows: present fields only."""
    return [{c: v for c, v in zip(columns, row, strict=True) if v is not None} for row in rows]


def sqlite_json(db: str | Path, sql: str) -> list[dict[str, Any]]:
    """Run ``sql`` with the sqlite3 command-line tool and return its ``-json`` rows."""
    out = subprocess.run(["sqlite3", "-json", str(db), sql], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return json.loads(out) if out.strip() else []


def load_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0,
                     what: str = "condition") -> None:
    """Poll ``predicate`` until true or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


class Peer:
    """A test client speaking protocol v1 over a real TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, **kwargs: Any) -> Peer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, **kwargs)
        return cls(reader, writer)

    async def send(self, kind: FrameType, payload: dict[str, Any]) -> None:
        self.writer.write(encode(kind, payload))
        await self.writer.drain()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self, timeout: float = 5.0) -> tuple[FrameType, dict[str, Any]] | None:
        """The next frame, or None when the aggregator closed the connection."""
        async with asyncio.timeout(timeout):
            try:
                header = await self.reader.readexactly(HEADER_SIZE)
            except (asyncio.IncompleteReadError, ConnectionError):
                return None
            kind, length = decode_header(header)
            return kind, decode_payload(await self.reader.readexactly(length))

    async def expect(self, kind: FrameType, timeout: float = 5.0) -> dict[str, Any]:
        frame = await self.recv(timeout)
        assert frame is not None, f"connection closed while waiting for {kind.name}"
        assert frame[0] is kind, f"expected {kind.name}, got {frame}"
        return frame[1]

    async def expect_closed(self, timeout: float = 5.0) -> None:
        frame = await self.recv(timeout)
        assert frame is None, f"expected the connection to close, got {frame}"

    async def hello(self, name: str = "node-1", token: str = TOKEN) -> dict[str, Any]:
        await self.send(FrameType.HELLO, {"token": token, "agent": {
            "ip": "198.18.0.254", "hostname": name, "version": "test"}})
        return await self.expect(FrameType.WELCOME)

    async def flows(self, seq: int, columns: tuple[str, ...] | list[str],
                    rows: list[list[Any]]) -> None:
        await self.send(FrameType.FLOWS, {"seq": seq, "columns": list(columns), "rows": rows})

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


AggregatorFactory = Callable[..., Awaitable[Aggregator]]
