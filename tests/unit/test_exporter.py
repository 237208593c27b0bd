"""The agent's exporter against a real aggregator: exactly once, and never blocking.

* A batch whose ACK was lost with its connection is sent again after the reconnection (the
  agent cannot know it was written) and written once: the aggregator knows the agent run
  (HELLO's instance) and the batches it wrote.
* A stalled aggregator (it accepted the connection, then stopped reading) never blocks
  ``pump()``: the agent's loop keeps draining the kernel while batches wait in the buffer.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

from agg_helpers import DNS_COLUMNS, TOKEN, AggregatorFactory, sample_rows, sqlite_json

from netobserv_tui.agent.exporter import Exporter
from netobserv_tui.model.protocol import FrameType, encode, read_frame_sync


async def test_a_batch_whose_ack_was_lost_is_written_once(
    make_aggregator: AggregatorFactory,
) -> None:
    aggregator = await make_aggregator()
    exporter = Exporter("127.0.0.1", aggregator.port, TOKEN, {"hostname": "n1"},
                        batch_rows=100)
    await asyncio.to_thread(exporter.connect)
    rows = sample_rows(500, seed=11)
    exporter.submit(DNS_COLUMNS, rows)
    await asyncio.to_thread(exporter.pump, 0.0)  # all five batches out, no ACK read
    deadline = time.monotonic() + 10
    while aggregator.stats()["flows"] < 500:
        assert time.monotonic() < deadline, aggregator.stats()
        await asyncio.sleep(0.01)
    exporter._drop_connection()  # the connection dies with the five ACKs unread
    assert exporter.pending_rows == 500  # as far as the agent knows, nothing arrived
    assert await asyncio.to_thread(exporter.finish, 10.0)  # reconnect, send all again
    stats = aggregator.stats()
    assert (stats["flows"], stats["duplicate_batches"], stats["batches"]) == (500, 5, 5)
    assert (exporter.acked_rows, exporter.lost_rows, exporter.reconnects) == (500, 0, 0)
    await aggregator.stop()
    assert sqlite_json(aggregator.files["db"], "SELECT count(*) AS n FROM flow") == [{"n": 500}]

    # Another agent run (a restarted agent) is another instance: its batch 1 is its own.
    again = await make_aggregator()
    first = Exporter("127.0.0.1", again.port, TOKEN, {"hostname": "n1"}, batch_rows=100)
    second = Exporter("127.0.0.1", again.port, TOKEN, {"hostname": "n1"}, batch_rows=100)
    assert first.agent["instance"] != second.agent["instance"]
    for exp in (first, second):
        await asyncio.to_thread(exp.connect)
        exp.submit(DNS_COLUMNS, rows[:100])
        assert await asyncio.to_thread(exp.finish, 10.0)
    assert (again.stats()["flows"], again.stats()["duplicate_batches"]) == (200, 0)


class StalledAggregator:
    """Says WELCOME, then reads nothing until :meth:`resume`; then ACKs every batch."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.go = threading.Event()
        self.rows = 0
        self.batches = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        with conn, conn.makefile("rb") as rfile:
            hello = read_frame_sync(rfile)
            assert hello is not None and hello[0] is FrameType.HELLO
            conn.sendall(encode(FrameType.WELCOME, {"capture": "stalled"}))
            self.go.wait()
            while (frame := read_frame_sync(rfile)) is not None:
                kind, payload = frame
                if kind is FrameType.FLOWS:
                    self.rows += len(payload["rows"])
                    self.batches += 1
                    conn.sendall(encode(FrameType.ACK, {"seq": payload["seq"]}))
                elif kind is FrameType.BYE:
                    return

    def resume(self) -> None:
        self.go.set()

    def close(self) -> None:
        self.server.close()


def test_pump_never_waits_for_a_stalled_aggregator() -> None:
    stalled = StalledAggregator()
    try:
        exporter = Exporter("127.0.0.1", stalled.port, TOKEN, {"hostname": "n1"},
                            batch_rows=1000)
        exporter.connect()
        rows: list[list[Any]] = sample_rows(1000, seed=12) * 60  # ~20 MB of frames
        exporter.submit(DNS_COLUMNS, rows)
        calls = []
        for _ in range(50):  # what the agent's loop does while the aggregator is stopped
            began = time.monotonic()
            exporter.pump(0.0)
            calls.append(time.monotonic() - began)
            exporter.send_stats({"evictions": len(calls)})
        # The socket took what fits; the rest waits, and no call waited for room.
        assert 0 < exporter.sent_rows < len(rows)
        assert max(calls) < 1.0, calls  # a blocking send would sit here until resumed
        assert exporter.wants_write
        stalled.resume()
        assert exporter.finish(30.0)
        stalled.thread.join(10)
        # Every frame arrived whole, in order, once: frames cut by the socket resume where
        # they stopped (the STATS frames between batches did not break them).
        assert (stalled.rows, stalled.batches) == (len(rows), 60)
        assert (exporter.acked_rows, exporter.lost_rows) == (len(rows), 0)
    finally:
        stalled.close()
