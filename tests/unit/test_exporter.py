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

import pytest
from agg_helpers import DNS_COLUMNS, TOKEN, AggregatorFactory, sample_rows, sqlite_json

from netobserv_tui.agent.exporter import Exporter
from netobserv_tui.agent.main import service_address
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


def _closed_port() -> int:
    """A local TCP port with nothing listening (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_service_address_comes_from_the_kubelet_variables() -> None:
    env = {"NETOBSERV_AGGREGATOR_SERVICE_HOST": "10.96.7.9",
           "NETOBSERV_AGGREGATOR_SERVICE_PORT": "9990"}
    name = "netobserv-aggregator.netobserv-cli.svc"
    assert service_address(name, 9990, env) == ("10.96.7.9", 9990)
    assert service_address(name + ".cluster.local", 9990, env) == ("10.96.7.9", 9990)
    v6 = {"NETOBSERV_AGGREGATOR_SERVICE_HOST": "fd00:10:96::7"}
    assert service_address(name, 9991, v6) == ("fd00:10:96::7", 9991)  # port: the name's
    assert service_address(name, 9990, {}) is None  # not in a pod, or made before it
    assert service_address("127.0.0.1", 9990, env) is None  # not a Service name
    assert service_address("aggregator.example.com", 9990, env) is None


async def test_the_agent_tries_each_address_and_says_why_none_answered(
    make_aggregator: AggregatorFactory, caplog: Any,
) -> None:
    """The Service's ClusterIP first, the DNS name next: the one that answers is used; when
    none does, the error names each address with its own reason, and the warning about it
    is logged once however often the agent retries within WARN_EVERY seconds."""
    aggregator = await make_aggregator()
    dead = _closed_port()
    exporter = Exporter("127.0.0.1", dead, TOKEN, {"hostname": "n1"},
                        fallbacks=[("127.0.0.1", aggregator.port)])
    await asyncio.to_thread(exporter.connect)
    assert exporter.address == ("127.0.0.1", aggregator.port)
    exporter.submit(DNS_COLUMNS, sample_rows(10))
    assert await asyncio.to_thread(exporter.finish, 10.0)
    assert aggregator.stats()["flows"] == 10

    lost = Exporter("127.0.0.1", dead, TOKEN, {"hostname": "n1"},
                    fallbacks=[("netobserv-aggregator.nowhere.invalid", 9990)])
    with pytest.raises(OSError) as failed:
        await asyncio.to_thread(lost.connect)
    assert str(failed.value).startswith(f"127.0.0.1:{dead}: Connection refused; "
                                        "netobserv-aggregator.nowhere.invalid:9990: ")
    caplog.set_level("WARNING")
    for _ in range(3):
        lost.pump(0.0)
        lost._next_attempt = 0.0  # retry at once
    warnings = [r.getMessage() for r in caplog.records if "Cannot reach" in r.getMessage()]
    assert len(warnings) == 1 and f"127.0.0.1:{dead}: Connection refused" in warnings[0]
    assert lost.reconnects == 3
