"""Client for the aggregator's live stream: SUBSCRIBE, WELCOME, then FLOWS and STATS frames.

The stream is best effort: under load the aggregator may skip FLOWS batches, so the TUI shows
"latest flows", while totals come from STATS.  No Textual import here: the client is plain
asyncio and can be reused by any front end.

Usage::

    async with LiveStream(host, port, token) as stream:
        print(stream.capture)            # name sent in WELCOME
        async for frame in stream:       # FlowBatch or StatsUpdate, until the stream ends
            ...
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeAlias

from netobserv_tui.model.errors import CaptureError
from netobserv_tui.model.protocol import (
    FrameType,
    ProtocolError,
    encode,
    host_port,
    read_frame,
    token_proof,
)

log = logging.getLogger(__name__)


class StreamError(CaptureError):
    """The live stream could not be opened, or broke while it was followed."""


class StreamRefused(StreamError):
    """The aggregator answered SUBSCRIBE with ERROR (for example a wrong token)."""


@dataclass(frozen=True, slots=True)
class FlowBatch:
    """One FLOWS frame: positional ``rows`` in the order of ``columns``."""

    seq: int
    columns: list[str]
    rows: list[list[Any]]


@dataclass(frozen=True, slots=True)
class StatsUpdate:
    """One STATS frame: cumulative counters (flows, bytes, packets, agents, ...)."""

    counters: dict[str, Any]


Frame: TypeAlias = FlowBatch | StatsUpdate


class LiveStream:
    """One subscription to the live stream of an aggregator."""

    def __init__(self, host: str, port: int, token: str, *, timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self._token = token
        self._timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        #: Capture name announced in WELCOME; empty until ``open`` returns.
        self.capture = ""

    @property
    def address(self) -> str:
        return host_port(self.host, self.port)

    async def open(self) -> str:
        """Connect, subscribe and wait for WELCOME; return the capture name."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self._timeout
            )
        except TimeoutError:
            raise StreamError(
                f"cannot reach the live stream at {self.address}: no answer within "
                f"{self._timeout:g}s; check that the aggregator is running"
            ) from None
        except OSError as exc:
            raise StreamError(
                f"cannot reach the live stream at {self.address}: {exc.strerror or exc}; "
                "check that the aggregator is running and its stream port is reachable"
            ) from None
        self._reader, self._writer = reader, writer
        writer.write(encode(FrameType.SUBSCRIBE, token_proof(self._token, FrameType.SUBSCRIBE)))
        try:
            await writer.drain()
            frame = await asyncio.wait_for(read_frame(reader), self._timeout)
        except TimeoutError:
            raise StreamError(
                f"the live stream at {self.address} did not answer SUBSCRIBE within "
                f"{self._timeout:g}s"
            ) from None
        except (OSError, ProtocolError) as exc:
            raise StreamError(f"the live stream at {self.address} failed: {exc}") from None
        if frame is None:
            raise StreamError(f"the live stream at {self.address} closed before WELCOME")
        kind, payload = frame
        if kind is FrameType.ERROR:
            raise StreamRefused(
                f"the aggregator at {self.address} refused the live stream: "
                f"{payload.get('reason', 'no reason given')}"
            )
        if kind is not FrameType.WELCOME:
            raise StreamError(
                f"the live stream at {self.address} answered {kind.name} instead of WELCOME"
            )
        self.capture = str(payload.get("capture", ""))
        return self.capture

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is None:
            return
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass

    async def __aenter__(self) -> LiveStream:
        try:
            await self.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[Frame]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[Frame]:
        """Decoded frames until the aggregator closes the stream cleanly."""
        if self._reader is None:
            raise StreamError("the live stream is not open; call open() first")
        while True:
            try:
                frame = await read_frame(self._reader)
            except (OSError, ProtocolError) as exc:
                raise StreamError(f"the live stream at {self.address} broke: {exc}") from None
            if frame is None:
                return
            kind, payload = frame
            if kind is FrameType.FLOWS:
                yield self._flow_batch(payload)
            elif kind is FrameType.STATS:
                yield StatsUpdate(payload)
            elif kind is FrameType.ERROR:
                raise StreamError(
                    f"the aggregator at {self.address} ended the live stream: "
                    f"{payload.get('reason', 'no reason given')}"
                )
            else:
                log.debug(
                    "Live stream at %s sent an unexpected %s frame; ignored.",
                    self.address,
                    kind.name,
                )

    def _flow_batch(self, payload: dict[str, Any]) -> FlowBatch:
        columns, rows = payload.get("columns"), payload.get("rows")
        if not isinstance(columns, list) or not isinstance(rows, list):
            raise StreamError(
                f"the live stream at {self.address} sent a FLOWS frame without "
                "'columns' and 'rows' lists"
            )
        return FlowBatch(int(payload.get("seq", 0)), columns, rows)
