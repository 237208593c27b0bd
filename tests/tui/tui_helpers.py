"""A real TCP live-stream server speaking protocol v1, and a helper to wait on the app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot

from netobserv_tui.aggregator.connection import AuthError, TokenCheck
from netobserv_tui.model.protocol import FrameType, encode, read_frame

TOKEN = "s3cret"
CAPTURE = "capture-test"


class FakeAggregator:
    """Accepts SUBSCRIBE, checks the token, answers WELCOME or ERROR, then sends what the
    test asks for to every subscriber."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.port = 0
        self.subscribed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._subscribers: list[asyncio.StreamWriter] = []
        self._seq = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frame = await read_frame(reader)
        if frame is None or frame[0] is not FrameType.SUBSCRIBE:
            writer.close()
            return
        try:
            TokenCheck(self.token)(frame[1], FrameType.SUBSCRIBE)
            accepted = True
        except AuthError:
            accepted = False
        if not accepted:
            writer.write(encode(FrameType.ERROR, {"reason": "invalid token"}))
            await writer.drain()
            writer.close()
            return
        writer.write(encode(FrameType.WELCOME, {"capture": CAPTURE}))
        await writer.drain()
        self._subscribers.append(writer)
        self.subscribed.set()

    async def _send(self, ftype: FrameType, payload: dict[str, Any]) -> None:
        frame = encode(ftype, payload)
        for writer in self._subscribers:
            writer.write(frame)
            await writer.drain()

    async def send_flows(self, records: list[dict[str, Any]]) -> None:
        columns = list(records[0])
        self._seq += 1
        rows = [[record[c] for c in columns] for record in records]
        await self._send(FrameType.FLOWS, {"seq": self._seq, "columns": columns, "rows": rows})

    async def send_stats(self, **counters: int) -> None:
        await self._send(FrameType.STATS, counters)

    async def drop(self) -> None:
        """Close every subscriber's connection: the stream is lost."""
        for writer in self._subscribers:
            writer.close()
        self._subscribers.clear()

    async def close(self) -> None:
        await self.drop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def wait_until(
    pilot: Pilot[Any], condition: Callable[[], bool], what: str, timeout: float = 5.0
) -> None:
    """Let the app run until ``condition()`` holds; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.02)
