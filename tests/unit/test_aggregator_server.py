"""The ingest server over real sockets on 127.0.0.1, files read back with sqlite3 and json."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from agg_helpers import (
    DNS_COLUMNS,
    TOKEN,
    AggregatorFactory,
    Peer,
    as_objects,
    load_json,
    sample_rows,
    sqlite_json,
    wait_until,
)

from netobserv_tui.aggregator.server import Aggregator
from netobserv_tui.model.protocol import HEADER, MAGIC, MAX_PAYLOAD, VERSION, FrameType, encode


def frame(kind: int, body: bytes, magic: bytes = MAGIC, version: int = VERSION) -> bytes:
    return HEADER.pack(magic, version, kind, len(body)) + body


def stamped(rows: list[list[Any]], received: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Expected JSON objects: the rows plus the TimeReceived the aggregator set."""
    return [{**obj, "TimeReceived": got["TimeReceived"]}
            for obj, got in zip(as_objects(DNS_COLUMNS, rows), received, strict=True)]


async def test_round_trip_acks_and_exact_files(aggregator: Aggregator) -> None:
    before = int(time.time())
    agent = await Peer.connect(aggregator.port)
    welcome = await agent.hello()
    assert welcome == {"capture": aggregator.capture}
    rows = [sample_rows(1000, seed=s) for s in range(3)]
    for seq, batch in enumerate(rows):
        await agent.flows(seq, DNS_COLUMNS, batch)
    assert [await agent.expect(FrameType.ACK) for _ in rows] == [{"seq": 0}, {"seq": 1},
                                                                 {"seq": 2}]
    await agent.send(FrameType.BYE, {})
    await agent.expect_closed()
    summary = await aggregator.stop(grace=1)
    after = int(time.time())
    everything = [r for batch in rows for r in batch]
    assert summary["flows"] == 3000 and summary["batches"] == 3
    assert summary["bytes"] == sum(r[DNS_COLUMNS.index("Bytes")] for r in everything)
    assert summary["packets"] == sum(r[DNS_COLUMNS.index("Packets")] for r in everything)
    assert summary["agents_seen"] == 1 and summary["batches_rejected"] == 0
    written = load_json(summary["files"]["json"])
    assert all(before <= obj["TimeReceived"] <= after for obj in written)
    assert written == stamped(everything, written)
    db = summary["files"]["db"]
    assert sqlite_json(db, "SELECT count(*) AS n, sum(Bytes) AS b FROM flow") == [
        {"n": 3000, "b": summary["bytes"]}]
    assert sqlite_json(db, "SELECT SrcAddr, DnsId, Interfaces, TimeReceived FROM flow "
                           "ORDER BY rowid LIMIT 2") == [
        {"SrcAddr": obj["SrcAddr"], "DnsId": obj.get("DnsId"), "Interfaces": '["eth0"]',
         "TimeReceived": obj["TimeReceived"]} for obj in written[:2]]


async def test_agent_supplied_time_received_is_overwritten(aggregator: Aggregator) -> None:
    agent = await Peer.connect(aggregator.port)
    await agent.hello()
    await agent.flows(1, ["SrcAddr", "TimeReceived"], [["198.18.0.1", 1], ["198.18.0.2", None]])
    await agent.expect(FrameType.ACK)
    summary = await aggregator.stop(grace=0)
    stamps = {o["TimeReceived"] for o in load_json(summary["files"]["json"])}
    assert len(stamps) == 1 and stamps.pop() > 1_700_000_000


async def test_wrong_token_rejected_while_good_agent_keeps_going(
        aggregator: Aggregator, caplog: pytest.LogCaptureFixture) -> None:
    good = await Peer.connect(aggregator.port)
    await good.hello("good")
    batches = [sample_rows(200, seed=s) for s in range(20)]

    async def feed() -> None:
        for seq, rows in enumerate(batches):
            await good.flows(seq, DNS_COLUMNS, rows)
            assert await good.expect(FrameType.ACK) == {"seq": seq}

    async def intruder(i: int) -> None:
        bad = await Peer.connect(aggregator.port)
        token = "" if i == 0 else TOKEN + "x" if i == 1 else "wrong"
        if i == 3:
            await bad.send(FrameType.SUBSCRIBE, {"token": "nope"})
        elif i == 4:
            await bad.send(FrameType.HELLO, {"agent": {}})
        else:
            await bad.send(FrameType.HELLO, {"token": token})
        # Pipelined data after a bad HELLO must not cost the peer its ERROR frame.
        await bad.flows(0, DNS_COLUMNS, sample_rows(50))
        error = await bad.expect(FrameType.ERROR)
        assert error["reason"] in ("wrong capture token", "the token is missing")
        await bad.expect_closed()

    await asyncio.gather(feed(), *(intruder(i) for i in range(5)))
    summary = await aggregator.stop(grace=0)
    assert summary["connections_rejected"] == 5
    assert summary["flows"] == 4000
    written = load_json(summary["files"]["json"])
    assert written == stamped([r for b in batches for r in b], written)
    assert sqlite_json(summary["files"]["db"], "SELECT count(*) AS n FROM flow") == [{"n": 4000}]
    assert sum("wrong capture token" in r.getMessage() for r in caplog.records) == 4


# (name, payload) pairs: each breaks one validation rule and must be NACKed.
MALFORMED: list[tuple[str, dict[str, Any]]] = [
    ("seq missing", {"columns": ["SrcAddr"], "rows": [["a"]]}),
    ("seq not int", {"seq": "7", "columns": ["SrcAddr"], "rows": [["a"]]}),
    ("unknown column", {"seq": 7, "columns": ["SrcAddr", "Bogus"], "rows": [["a", 1]]}),
    ("duplicate column", {"seq": 7, "columns": ["Bytes", "Bytes"], "rows": [[1, 1]]}),
    ("row not a list", {"seq": 7, "columns": ["Bytes"], "rows": [[1], {"Bytes": 1}]}),
    ("short row", {"seq": 7, "columns": ["Bytes", "Packets"], "rows": [[1, 1], [1]]}),
    ("long row", {"seq": 7, "columns": ["Bytes"], "rows": [[1], [1, 2]]}),
    ("bool for int", {"seq": 7, "columns": ["Bytes"], "rows": [[1], [False]]}),
    ("str for int", {"seq": 7, "columns": ["Bytes"], "rows": [["1"]]}),
    ("float for int", {"seq": 7, "columns": ["Bytes"], "rows": [[1.0]]}),
    ("int for str", {"seq": 7, "columns": ["SrcAddr"], "rows": [[1]]}),
    ("too big", {"seq": 7, "columns": ["Bytes"], "rows": [[2**64]]}),
    ("bad list", {"seq": 7, "columns": ["Interfaces"], "rows": [[["eth0", None]]]}),
    ("str for list", {"seq": 7, "columns": ["Interfaces"], "rows": [["eth0"]]}),
    ("rows not list", {"seq": 7, "columns": ["Bytes"], "rows": None}),
]


async def test_malformed_batches_are_nacked_and_nothing_is_written(
        aggregator: Aggregator) -> None:
    agent = await Peer.connect(aggregator.port)
    await agent.hello()
    good = sample_rows(10)
    await agent.flows(1, DNS_COLUMNS, good)
    await agent.expect(FrameType.ACK)
    for name, payload in MALFORMED:
        # A good row first in every bad batch: it must not be written either.
        await agent.send(FrameType.FLOWS, payload)
        nack = await agent.expect(FrameType.NACK)
        expected_seq = payload["seq"] if isinstance(payload.get("seq"), int) else None
        assert nack["seq"] == expected_seq, name
        assert nack["reason"], name
    # A lone surrogate cannot be stored as UTF-8: NACKed as well.
    body = (b'{"seq":8,"columns":["SrcAddr","DnsName"],'
            b'"rows":[["198.18.0.1","ok"],["198.18.0.2","\\ud800"]]}')
    await agent.send_raw(frame(FrameType.FLOWS, body))
    assert (await agent.expect(FrameType.NACK))["seq"] == 8
    # A valid surrogate pair is fine.
    body = b'{"seq":9,"columns":["DnsName"],"rows":[["\\ud83d\\ude42"]]}'
    await agent.send_raw(frame(FrameType.FLOWS, body))
    assert await agent.expect(FrameType.ACK) == {"seq": 9}
    stats = aggregator.stats()
    assert stats["batches_rejected"] == len(MALFORMED) + 1
    assert stats["per_agent"]["node-1/198.18.0.254"]["rejected"] == len(MALFORMED) + 1
    summary = await aggregator.stop(grace=0)
    assert summary["flows"] == 11
    written = load_json(summary["files"]["json"])
    assert written[:10] == stamped(good, written[:10])
    assert {k: v for k, v in written[10].items() if k != "TimeReceived"} == {"DnsName": "🙂"}
    assert sqlite_json(summary["files"]["db"], "SELECT count(*) AS n FROM flow") == [{"n": 11}]


#: FLOWS payloads that orjson reads differently from the ``json`` module: the verdict (and
#: the NACK reason) must be the reference one all the same.
REFERENCE_VERDICTS: list[tuple[str, bytes, FrameType, str]] = [
    ("int beyond 64 bits", b'{"seq":1,"columns":["Bytes"],"rows":[[18446744073709551616]]}',
     FrameType.NACK, "does not fit in 64 bits"),
    ("int in the unsigned range", b'{"seq":2,"columns":["Bytes"],"rows":[[9223372036854775808]]}',
     FrameType.NACK, "does not fit in 64 bits"),
    ("NaN", b'{"seq":3,"columns":["Bytes"],"rows":[[NaN]]}', FrameType.NACK,
     "a number with a fraction"),
    ("boolean", b'{"seq":4,"columns":["Bytes"],"rows":[[true]]}', FrameType.NACK,
     "a boolean"),
    ("surrogate bytes", b'{"seq":5,"columns":["DnsName"],"rows":[["\xed\xa0\x80"]]}',
     FrameType.NACK, "unpaired UTF-16 surrogate"),
    ("seq beyond 64 bits", b'{"seq":36893488147419103232,"columns":["Bytes"],"rows":[[1]]}',
     FrameType.ACK, ""),
    ("smallest int64", b'{"seq":6,"columns":["Bytes"],"rows":[[-9223372036854775808]]}',
     FrameType.ACK, ""),
    ("nesting json refuses, in rows",
     b'{"seq":7,"columns":["Interfaces"],"rows":[[' + b"[" * 1000 + b"]" * 1000 + b']]}',
     FrameType.ERROR, "nested too deeply"),
    ("nesting json refuses, in another key",
     b'{"seq":8,"columns":["Bytes"],"rows":[[1]],"x":' + b"[" * 1000 + b"]" * 1000 + b'}',
     FrameType.ERROR, "nested too deeply"),
]


@pytest.mark.parametrize(("name", "body", "kind", "reason"), REFERENCE_VERDICTS,
                         ids=[n for n, *_ in REFERENCE_VERDICTS])
async def test_verdicts_are_those_of_the_json_module(
        aggregator: Aggregator, name: str, body: bytes, kind: FrameType, reason: str) -> None:
    agent = await Peer.connect(aggregator.port)
    await agent.hello()
    await agent.send_raw(frame(FrameType.FLOWS, body))
    reply = await agent.expect(kind)
    if kind is FrameType.ACK:
        assert reply["seq"] == json.loads(body)["seq"]
        await agent.close()
        summary = await aggregator.stop(grace=0)
        assert summary["flows"] == 1 and summary["write_errors"] == 0
    else:
        assert reason in reply["reason"]
        assert aggregator.stats()["flows"] == 0


GARBAGE: list[tuple[str, bytes]] = [
    ("bad magic", frame(FrameType.HELLO, b"{}", magic=b"XX")),
    ("bad version", frame(FrameType.HELLO, b"{}", version=2)),
    ("unknown type", frame(99, b"{}")),
    ("too long", HEADER.pack(MAGIC, VERSION, FrameType.FLOWS, MAX_PAYLOAD + 1)),
    ("not json", frame(FrameType.FLOWS, b"{not json")),
    ("not an object", frame(FrameType.FLOWS, b"[1, 2]")),
    ("not utf-8", frame(FrameType.FLOWS, b'{"seq": "\xff"}')),
    ("nested too deep", frame(FrameType.FLOWS, b"[" * 100_000 + b"]" * 100_000)),
    ("ack from agent", encode(FrameType.ACK, {"seq": 1})),
    ("second hello", encode(FrameType.HELLO, {"token": TOKEN})),
    ("subscribe from agent", encode(FrameType.SUBSCRIBE, {"token": TOKEN})),
    ("welcome from agent", encode(FrameType.WELCOME, {})),
    ("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
]


@pytest.mark.parametrize(("name", "data"), GARBAGE, ids=[n for n, _ in GARBAGE])
async def test_framing_garbage_closes_that_connection_only(
        aggregator: Aggregator, name: str, data: bytes) -> None:
    bystander = await Peer.connect(aggregator.port)
    await bystander.hello("bystander")
    offender = await Peer.connect(aggregator.port)
    if name != "http":
        await offender.hello("offender")
    await offender.send_raw(data)
    error = await offender.expect(FrameType.ERROR)
    assert error["reason"]
    await offender.expect_closed()
    await bystander.flows(5, DNS_COLUMNS, sample_rows(20))
    assert await bystander.expect(FrameType.ACK) == {"seq": 5}
    assert aggregator.stats()["protocol_errors"] == 1
    fresh = await Peer.connect(aggregator.port)
    await fresh.hello("fresh")


@pytest.mark.parametrize("first", [FrameType.FLOWS, FrameType.STATS, FrameType.BYE,
                                   FrameType.ACK, FrameType.FETCH, FrameType.FILE])
async def test_first_frame_must_be_hello_subscribe_or_finish(aggregator: Aggregator,
                                                             first: FrameType) -> None:
    peer = await Peer.connect(aggregator.port)
    await peer.send(first, {"seq": 1, "columns": ["Bytes"], "rows": [[1]]})
    assert "HELLO, SUBSCRIBE, SEARCH or FINISH" in (
        await peer.expect(FrameType.ERROR))["reason"]
    await peer.expect_closed()
    assert aggregator.stats()["flows"] == 0


async def test_truncated_frames_and_silent_peers(make_aggregator: AggregatorFactory) -> None:
    agg = await make_aggregator(handshake_timeout=0.2)
    silent = await Peer.connect(agg.port)
    assert "within" in (await silent.expect(FrameType.ERROR))["reason"]
    await silent.expect_closed()
    cut = await Peer.connect(agg.port)
    await cut.hello()
    await cut.send_raw(frame(FrameType.FLOWS, b'{"seq":1,"columns":["Bytes"],"rows":[[1]]}')[:20])
    cut.writer.write_eof()
    assert "inside a frame" in (await cut.expect(FrameType.ERROR))["reason"]
    assert agg.stats()["protocol_errors"] == 2
    assert agg.stats()["flows"] == 0


async def test_a_stranger_cannot_make_the_aggregator_hold_a_large_first_frame(
        make_aggregator: AggregatorFactory) -> None:
    """Before its token is checked a peer may send 16 KiB, not 32 MiB: a first frame
    announcing more is refused from its header, with none of its payload read, and
    only 64 connections may be in their handshake at once."""
    agg = await make_aggregator(handshake_timeout=2.0)
    big = await Peer.connect(agg.port)
    await big.send_raw(HEADER.pack(MAGIC, VERSION, FrameType.HELLO, 16 * 1024 + 1))
    reason = (await big.expect(FrameType.ERROR))["reason"]
    assert "HELLO frame of 16385 bytes is over the 16384 bytes allowed here" in reason
    await big.expect_closed()
    # A HELLO of exactly the limit is read (and judged on its token).
    payload = json.dumps({"token": "x" * (16 * 1024 - 13)}).encode()
    assert len(payload) == 16 * 1024
    exact = await Peer.connect(agg.port)
    await exact.send_raw(frame(FrameType.HELLO, payload))
    assert "wrong capture token" in (await exact.expect(FrameType.ERROR))["reason"]
    # 64 silent peers hold every handshake slot: the 65th is refused at once, and a
    # real agent gets in as soon as the slots free up (the silent ones time out).
    silent = [await Peer.connect(agg.port) for _ in range(64)]
    await asyncio.sleep(0.2)
    extra = await Peer.connect(agg.port)
    assert "already being authenticated" in (await extra.expect(FrameType.ERROR))["reason"]
    for peer in silent:
        assert "within" in (await peer.expect(FrameType.ERROR))["reason"]
    agent = await Peer.connect(agg.port)
    await agent.hello("late")
    await agent.flows(1, DNS_COLUMNS, sample_rows(3))
    assert await agent.expect(FrameType.ACK) == {"seq": 1}


async def test_agent_stats_are_kept_per_agent_and_summed(aggregator: Aggregator) -> None:
    a, b = await Peer.connect(aggregator.port), await Peer.connect(aggregator.port)
    await a.hello("node-a")
    await b.hello("node-b")
    await a.send(FrameType.STATS, {"evicted": 10, "map_full": 1, "note": "ignored"})
    await a.send(FrameType.STATS, {"evicted": 25, "map_full": 2})
    await b.send(FrameType.STATS, {"evicted": 5, "ringbuf_lost": 3})
    await wait_until(lambda: aggregator.stats()["agent_stats"] == {
        "evicted": 30, "map_full": 2, "ringbuf_lost": 3}, what="agent stats")
    stats = aggregator.stats()
    assert stats["per_agent"]["node-a/198.18.0.254"]["stats"] == {"evicted": 25, "map_full": 2}
    assert stats["per_agent"]["node-b/198.18.0.254"]["stats"] == {"evicted": 5, "ringbuf_lost": 3}
    assert stats["agents"] == 2 and stats["agents_seen"] == 2
    await a.send(FrameType.BYE, {})
    await a.expect_closed()
    await wait_until(lambda: aggregator.stats()["agents"] == 1, what="agent a to leave")
    assert aggregator.stats()["agents_seen"] == 2


async def test_bye_closes_after_the_last_ack(aggregator: Aggregator) -> None:
    agent = await Peer.connect(aggregator.port)
    await agent.hello()
    for seq in range(5):
        await agent.flows(seq, DNS_COLUMNS, sample_rows(500, seed=seq))
    await agent.send(FrameType.BYE, {})
    assert [(await agent.expect(FrameType.ACK))["seq"] for _ in range(5)] == list(range(5))
    await agent.expect_closed()
    assert aggregator.stats()["flows"] == 2500


async def test_live_stream_receives_rows_and_stats(aggregator: Aggregator) -> None:
    sub = await Peer.connect(aggregator.port)
    await sub.send(FrameType.SUBSCRIBE, {"token": TOKEN})
    assert await sub.expect(FrameType.WELCOME) == {"capture": aggregator.capture}
    first = await sub.expect(FrameType.STATS)
    assert first["flows"] == 0 and first["subscribers"] == 1
    await wait_until(lambda: aggregator.stats()["subscribers"] == 1, what="subscription")
    agent = await Peer.connect(aggregator.port)
    await agent.hello()
    rows = sample_rows(300)
    await agent.flows(1, DNS_COLUMNS, rows)
    await agent.expect(FrameType.ACK)
    await agent.send(FrameType.STATS, {"evicted": 7})
    received: list[dict[str, Any]] = []
    last_stats: dict[str, Any] = {}
    deadline = time.monotonic() + 5
    while len(received) < 300 or last_stats.get("agent_stats") != {"evicted": 7}:
        assert time.monotonic() < deadline, "live stream incomplete"
        got = await sub.recv()
        assert got is not None
        kind, payload = got
        if kind is FrameType.FLOWS:
            assert payload["columns"] == [*DNS_COLUMNS, "TimeReceived"]
            received += [dict(zip(payload["columns"], r, strict=True)) for r in payload["rows"]]
        else:
            assert kind is FrameType.STATS
            last_stats = payload
    assert [{k: v for k, v in r.items() if v is not None} for r in received] == stamped(
        rows, received)
    assert last_stats["flows"] == 300 and last_stats["agents"] == 1
    assert last_stats["bytes"] == sum(r[DNS_COLUMNS.index("Bytes")] for r in rows)
    assert last_stats["live_rows_dropped"] == 0 and last_stats["batches_rejected"] == 0
    assert set(last_stats) >= {"packets", "agents_seen", "connections_rejected", "elapsed",
                               "per_agent"}
    await aggregator.stop(grace=0)
    # The subscriber gets a last STATS and BYE before the close.
    tail = []
    while (got := await sub.recv()) is not None:
        tail.append(got[0])
    assert tail[-2:] == [FrameType.STATS, FrameType.BYE]


async def test_live_push_is_capped_to_the_most_recent_rows(
        make_aggregator: AggregatorFactory) -> None:
    agg = await make_aggregator(live_rows=100, live_interval=30)
    sub = await Peer.connect(agg.port)
    await sub.send(FrameType.SUBSCRIBE, {"token": TOKEN})
    await sub.expect(FrameType.WELCOME)
    await sub.expect(FrameType.STATS)
    await wait_until(lambda: agg.stats()["subscribers"] == 1, what="subscription")
    agent = await Peer.connect(agg.port)
    await agent.hello()
    for seq in range(3):
        await agent.flows(seq, ["Bytes"], [[seq * 1000 + i] for i in range(80)])
        await agent.expect(FrameType.ACK)
    frames, skipped = agg._live.recent.take()  # the push the 30 s timer would do
    assert skipped == 140 and [n for _, n in frames] == [100]


async def test_slow_subscriber_never_blocks_ingest(make_aggregator: AggregatorFactory) -> None:
    agg = await make_aggregator(live_rows=2000, live_interval=0.005, subscriber_frames=2)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", agg.port))
    sock.sendall(encode(FrameType.SUBSCRIBE, {"token": TOKEN}))
    await wait_until(lambda: agg.stats()["subscribers"] == 1, what="subscription")
    # The subscriber never reads; the agent sends 30k rows.
    agent = await Peer.connect(agg.port)
    await agent.hello()
    for seq in range(30):
        await agent.flows(seq, DNS_COLUMNS, sample_rows(1000, seed=seq))
        assert await agent.expect(FrameType.ACK, timeout=10) == {"seq": seq}
    stats = agg.stats()
    assert stats["flows"] == 30_000
    assert 0 < stats["live_rows_dropped"] <= 30_000
    summary = await agg.stop(grace=0)
    sock.close()
    assert summary["flows"] == 30_000
    assert sqlite_json(summary["files"]["db"], "SELECT count(*) AS n FROM flow") == [
        {"n": 30_000}]


async def test_full_queue_stops_reading_from_agents(make_aggregator: AggregatorFactory) -> None:
    agg = await make_aggregator(queue_rows=300, write_in_thread=True)
    gate = threading.Event()
    assert agg._writer is not None
    real_write = agg._writer.write

    def slow_write(batch: Any) -> int:
        gate.wait(10)
        return real_write(batch)

    agg._writer.write = slow_write  # type: ignore[method-assign]
    agent = await Peer.connect(agg.port)
    await agent.hello()
    # 100 rows of 2.5 kB per frame: 200 frames are 50 MB, more than loopback TCP buffers hold.
    rows = [["198.18.0.1", "x" * 2500]] * 100
    payload = encode(FrameType.FLOWS, {"seq": 0, "columns": ["SrcAddr", "DnsName"],
                                       "rows": rows})
    sent = 0

    async def pump() -> None:
        nonlocal sent
        for _ in range(200):
            agent.writer.write(payload)
            await agent.writer.drain()
            sent += 1

    pumping = asyncio.create_task(pump())
    # The writer holds one batch, the queue two more: reading stops, TCP fills up, drain blocks.
    await wait_until(lambda: agg.queue.rows == 300, what="a full queue")
    await asyncio.sleep(0.3)
    assert not pumping.done() and sent < 200
    assert agg.queue.peak_rows == 300
    gate.set()
    await asyncio.wait_for(pumping, 30)
    await wait_until(lambda: agg.stats()["flows"] == 20_000, timeout=30, what="all rows")
    assert agg.queue.peak_rows == 300


async def test_graceful_stop_waits_for_agents_then_closes_them(
        make_aggregator: AggregatorFactory) -> None:
    agg = await make_aggregator()
    finishing, lingering = await Peer.connect(agg.port), await Peer.connect(agg.port)
    await finishing.hello("finishing")
    await lingering.hello("lingering")
    await lingering.flows(1, DNS_COLUMNS, sample_rows(100, seed=1))
    await lingering.expect(FrameType.ACK)
    stopping = asyncio.create_task(agg.stop(grace=0.3))
    await asyncio.sleep(0.05)
    # Within the grace period an agent can still deliver, then say BYE.
    await finishing.flows(1, DNS_COLUMNS, sample_rows(50, seed=2))
    await finishing.send(FrameType.BYE, {})
    assert await finishing.expect(FrameType.ACK) == {"seq": 1}
    await finishing.expect_closed()
    summary = await stopping
    await lingering.expect_closed()
    assert summary["flows"] == 150
    assert len(load_json(summary["files"]["json"])) == 150
    assert sqlite_json(summary["files"]["db"], "SELECT count(*) AS n FROM flow") == [{"n": 150}]
    assert await agg.stop() == summary
    with pytest.raises(OSError):
        await Peer.connect(agg.port)


async def test_bind_failure_is_reported_and_leaves_no_files(tmp_path: Path) -> None:
    from netobserv_tui.model.errors import CaptureError

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    agg = Aggregator(tmp_path / "out", TOKEN, port=busy.getsockname()[1])
    # SO_REUSEADDR does not let a second socket listen on the same port on Linux.
    with pytest.raises(CaptureError, match="cannot listen"):
        await agg.start()
    busy.close()
    assert not (tmp_path / "out").exists()


def test_empty_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="token"):
        Aggregator(tmp_path, "")


def test_frame_helper_matches_the_protocol() -> None:
    assert frame(FrameType.BYE, b"{}") == encode(FrameType.BYE, {})
    assert struct.unpack("!2sBBI", frame(1, b"")) == (MAGIC, VERSION, 1, 0)


async def test_any_address_takes_agents_over_ipv6_and_ipv4(
    make_aggregator: AggregatorFactory,
) -> None:
    """``*`` (the pod's --listen): one socket answers on every address of both families, so
    the aggregator works on IPv6-only, IPv4-only and dual-stack pod networks."""
    aggregator = await make_aggregator(host="*")
    assert aggregator.host == "::"
    for host in ("::1", "127.0.0.1"):
        reader, writer = await asyncio.open_connection(host, aggregator.port)
        agent = Peer(reader, writer)
        assert await agent.hello(name=f"via-{host}") == {"capture": aggregator.capture}
        await agent.flows(0, DNS_COLUMNS, sample_rows(10, seed=len(host)))
        assert await agent.expect(FrameType.ACK) == {"seq": 0}
        await agent.send(FrameType.BYE, {})
        await agent.expect_closed()
    summary = await aggregator.stop(grace=1)
    assert summary["flows"] == 20 and summary["agents_seen"] == 2


async def test_any_address_falls_back_to_ipv4_without_ipv6(
    make_aggregator: AggregatorFactory, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from netobserv_tui.aggregator import connection

    def no_ipv6(port: int) -> socket.socket:  # what socket(AF_INET6) says with ipv6.disable=1
        raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")

    monkeypatch.setattr(connection, "_dual_stack_socket", no_ipv6)
    with caplog.at_level(logging.INFO, logger="netobserv_tui.aggregator"):
        aggregator = await make_aggregator(host="*")
    assert aggregator.host == "0.0.0.0"
    assert "No IPv6 here (Address family not supported by protocol)" in caplog.text
    agent = await Peer.connect(aggregator.port)
    assert await agent.hello() == {"capture": aggregator.capture}


def test_any_address_socket_reports_a_busy_port() -> None:
    from netobserv_tui.aggregator.connection import any_address_socket

    first = any_address_socket(0)
    first.listen()
    try:
        with pytest.raises(OSError) as err:
            any_address_socket(first.getsockname()[1]).listen()
        assert err.value.errno == errno.EADDRINUSE
    finally:
        first.close()
