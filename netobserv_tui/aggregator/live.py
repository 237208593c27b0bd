"""Live stream: the most recent rows and periodic stats, pushed to subscribers (the TUI).

The live stream must never slow ingest nor grow memory, whatever a subscriber does:

* :class:`RecentRows` keeps only the batches that hold the last ``cap`` rows written since the
  previous push (references to batches the writer already has, no copy); each push sends
  at most ``cap`` rows and counts the others as dropped.
* Each :class:`Subscriber` has a small queue of encoded frames.  A push that finds it full is
  dropped for that subscriber and its rows counted; the sending task waits on ``drain()``,
  so at most one frame sits in the transport beyond the kernel's socket buffer.
* A frame is encoded once and the same bytes go to every subscriber.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from ..model.protocol import FrameType, encode
from .batch import Batch

log = logging.getLogger(__name__)

class RecentRows:
    """Batches written since the last push, trimmed to the ``cap`` most recent rows."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._batches: deque[Batch] = deque()
        self._kept = 0
        self._new = 0
        self._seq = 0

    def add(self, batch: Batch) -> None:
        """Remember a written batch; forget older batches no longer among the last ``cap``."""
        if not batch.nrows:
            return
        self._batches.append(batch)
        self._kept += batch.nrows
        self._new += batch.nrows
        while self._kept - self._batches[0].nrows >= self.cap:
            self._kept -= self._batches.popleft().nrows

    def clear(self) -> None:
        """Forget everything (nobody is subscribed any more)."""
        self._batches.clear()
        self._kept = self._new = 0

    def take(self) -> tuple[list[tuple[bytes, int]], int]:
        """Encoded FLOWS frames with the most recent rows, and how many rows were skipped.

        One frame per run of batches that share a column tuple (usually one frame).
        """
        if not self._new:
            return [], 0
        frames: list[tuple[bytes, int]] = []
        budget = self.cap
        groups: list[tuple[tuple[str, ...], list[Any]]] = []
        for batch in reversed(self._batches):
            if budget <= 0:
                break
            rows = batch.rows(last=min(budget, batch.nrows))
            budget -= len(rows)
            if groups and groups[-1][0] == batch.columns:
                groups[-1][1][:0] = rows
            else:
                groups.append((batch.columns, rows))
        sent = 0
        for columns, rows in reversed(groups):
            self._seq += 1
            payload = {"seq": self._seq, "columns": list(columns), "rows": rows}
            frames.append((encode(FrameType.FLOWS, payload), len(rows)))
            sent += len(rows)
        skipped = self._new - sent
        self.clear()
        return frames, skipped


class Subscriber:
    """One live-stream connection: a bounded queue of frames and the task that sends them."""

    def __init__(self, writer: asyncio.StreamWriter, buffer_frames: int, peer: str) -> None:
        self.writer = writer
        self.peer = peer
        self.rows_dropped = 0
        self.frames_dropped = 0
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=buffer_frames)
        self._task = asyncio.create_task(self._send_loop(), name=f"live-send {peer}")

    def offer(self, frame: bytes, rows: int = 0) -> bool:
        """Queue a frame without waiting; a full queue drops it (and counts its rows)."""
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.frames_dropped += 1
            self.rows_dropped += rows
            return False
        return True

    def count_skipped(self, rows: int) -> None:
        """Rows this subscriber will never see because a push was capped."""
        self.rows_dropped += rows

    async def _send_loop(self) -> None:
        try:
            while True:
                frame = await self._queue.get()
                # write() takes the whole frame, and cancellation can only land in drain(),
                # so a cancelled sender never leaves half a frame on the wire.
                self.writer.write(frame)
                await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            log.info("Live subscriber %s went away: %s", self.peer, exc)

    async def finish(self, last: list[bytes], timeout: float) -> None:
        """Stop the queue, send ``last`` (final stats, BYE) and wait up to ``timeout`` for it."""
        await self.cancel()
        if self.writer.is_closing():
            return
        for frame in last:
            self.writer.write(frame)
        try:
            await asyncio.wait_for(self.writer.drain(), timeout)
        except (TimeoutError, ConnectionError, OSError):
            log.info("Live subscriber %s did not take the final frames", self.peer)

    async def cancel(self) -> None:
        """Stop the sending task."""
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
