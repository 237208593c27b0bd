"""Live subscribers: SUBSCRIBE sessions, the publish loop, and their last STATS and BYE.

Serves the TUI of a running capture (its live stream,
:class:`~netobserv_tui.model.stream.LiveStream`) for the :class:`~.server.Aggregator`, which
hands each SUBSCRIBE connection to :meth:`Subscribers.session`.  Every ``live_interval`` the
publish loop pushes the most recent rows written (:class:`~.live.RecentRows`) and, every
``stats_interval``, the aggregator's stats, to each :class:`~.live.Subscriber`'s bounded
queue: a slow subscriber loses frames (counted), it never holds up ingest (see
:mod:`.live`).  When the capture stops, :meth:`Subscribers.close` sends each one the last
rows, a last STATS and BYE.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, Final

from ..model.protocol import FrameType, ProtocolError, encode
from .batch import Batch
from .connection import Frame, read_frame
from .live import RecentRows, Subscriber

log = logging.getLogger(__name__)

#: Kernel send buffer of a subscriber socket: bounds what a stalled TUI pins in the kernel.
SUBSCRIBER_SNDBUF: Final = 256 * 1024
#: Name prefix of the tasks serving subscribers (see :meth:`Subscribers.tasks`).
TASK_PREFIX: Final = "subscriber"


class Subscribers:
    """The live stream of one capture: the subscribers and the rows written since the last push.

    ``counts`` is the :class:`~.server.Aggregator`'s counters dict, shared: a leaving
    subscriber's dropped rows go to ``live_rows_dropped``.  ``stats`` gives the STATS
    payload; ``check_token`` checks a SUBSCRIBE's token; ``sessions`` is the aggregator's
    set of connection tasks (read only), among which :meth:`tasks` finds the subscribers'.
    """

    def __init__(
        self,
        counts: dict[str, int],
        stats: Callable[[], dict[str, Any]],
        check_token: Callable[[dict[str, Any], FrameType], None],
        sessions: set[asyncio.Task[None]],
        *,
        live_rows: int,
        live_interval: float,
        stats_interval: float,
        subscriber_frames: int,
    ) -> None:
        self._counts = counts
        self._stats = stats
        self._check_token = check_token
        self._sessions = sessions
        self.live_interval = live_interval
        self.stats_interval = stats_interval
        self.subscriber_frames = subscriber_frames
        self.recent = RecentRows(live_rows)
        self.subscribers: set[Subscriber] = set()
        #: The capture name in WELCOME: set by the aggregator once the files exist.
        self.capture = ""

    def written(self, batch: Batch) -> None:
        """A batch was written: keep it for the next push, if anybody is subscribed."""
        if self.subscribers:
            self.recent.add(batch)

    def rows_dropped(self) -> int:
        """Rows the connected subscribers lost so far (those who left are in ``counts``)."""
        return sum(s.rows_dropped for s in self.subscribers)

    def tasks(self) -> set[asyncio.Task[None]]:
        """The tasks serving SUBSCRIBE connections (named by :meth:`session`)."""
        return {t for t in self._sessions if t.get_name().startswith(TASK_PREFIX)}

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      peer: str, first: Frame, task: asyncio.Task[None]) -> None:
        """Serve a connection that began with SUBSCRIBE, as ``task``, until it ends."""
        task.set_name(f"{TASK_PREFIX} {peer}")
        self._check_token(first.payload, FrameType.SUBSCRIBE)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SUBSCRIBER_SNDBUF)
        writer.write(encode(FrameType.WELCOME, {"capture": self.capture}))
        sub = Subscriber(writer, self.subscriber_frames, peer)
        self.subscribers.add(sub)
        sub.offer(encode(FrameType.STATS, self._stats()))
        log.info("Live subscriber connected from %s", peer)
        try:
            frame = await read_frame(reader)
            if frame is not None and frame.kind is not FrameType.BYE:
                raise ProtocolError(f"{frame.kind.name} is not allowed from a subscriber")
        finally:
            self.subscribers.discard(sub)
            self._counts["live_rows_dropped"] += sub.rows_dropped
            await sub.cancel()
            log.info("Live subscriber %s left (%d rows dropped for it)", peer, sub.rows_dropped)

    async def publish_loop(self) -> None:
        """Every ``live_interval``: recent rows; every ``stats_interval``: stats."""
        next_stats = time.monotonic()
        while True:
            await asyncio.sleep(self.live_interval)
            if not self.subscribers:
                self.recent.clear()
                continue
            frames, skipped = self.recent.take()
            for sub in self.subscribers:
                sub.count_skipped(skipped)
                for frame, rows in frames:
                    sub.offer(frame, rows)
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + self.stats_interval
                stats = encode(FrameType.STATS, self._stats())
                for sub in self.subscribers:
                    sub.offer(stats)

    async def close(self) -> None:
        """Send every subscriber the last rows, a last STATS and BYE; end their sessions."""
        frames, skipped = self.recent.take()
        last = [*(f for f, _ in frames)]
        for sub in self.subscribers:
            sub.count_skipped(skipped)
        final = [*last, encode(FrameType.STATS, self._stats()), encode(FrameType.BYE, {})]
        await asyncio.gather(*(s.finish(final, 1.0) for s in list(self.subscribers)))
        subs = self.tasks()
        for task in subs:
            task.cancel()
        await asyncio.gather(*subs, return_exceptions=True)
