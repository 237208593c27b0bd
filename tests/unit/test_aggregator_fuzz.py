"""Property-based fuzzing of a running aggregator with random bytes and random frames.

One aggregator runs in a background thread for the whole module.  Every example opens a
connection, sends its bytes, half-closes and reads until the aggregator closes: each
connection ends on EOF whatever was sent, so no example waits on a timer.  The rows of
every ACKed batch are counted; at the end the files must hold exactly those rows.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from agg_helpers import TOKEN, load_json, sample_rows, sqlite_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netobserv_tui.aggregator.server import Aggregator
from netobserv_tui.model.fields import BASE_COLUMNS, FIELD_NAMES
from netobserv_tui.model.protocol import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    VERSION,
    FrameType,
    decode_header,
    decode_payload,
    encode,
)


@dataclass
class Running:
    aggregator: Aggregator
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    acked_rows: int = 0
    seq: int = 0
    sizes: dict[int, int] = field(default_factory=dict)

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    out = tmp_path_factory.mktemp("fuzz")
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def serve() -> None:
        loop = asyncio.new_event_loop()
        agg = Aggregator(out, TOKEN, handshake_timeout=5)
        loop.run_until_complete(agg.start())
        holder.update(agg=agg, loop=loop)
        ready.set()
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    run = Running(holder["agg"], holder["loop"], thread)
    yield run
    if not run.aggregator._stopping:
        run.call(run.aggregator.stop(grace=0))
    run.loop.call_soon_threadsafe(run.loop.stop)
    thread.join(10)


def exchange(port: int, data: bytes) -> list[tuple[FrameType, dict[str, Any]]]:
    """Send ``data``, half-close, read everything until the aggregator closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    frames = []
    while len(received) >= HEADER_SIZE:
        kind, length = decode_header(received[:HEADER_SIZE])
        frames.append((kind, decode_payload(received[HEADER_SIZE:HEADER_SIZE + length])))
        received = received[HEADER_SIZE + length:]
    assert received == b"", "the aggregator sent a partial frame"
    return frames


HELLO = encode(FrameType.HELLO, {"token": TOKEN, "agent": {"hostname": "fuzz"}})

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=12,
)
cell = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=6) \
    | st.lists(st.integers(0, 3) | st.text(max_size=3), max_size=2) | st.floats(allow_nan=False)
column_names = st.lists(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), min_size=0,
                        max_size=5)


@st.composite
def flows_payloads(draw: st.DrawFn) -> dict[str, Any]:
    columns = draw(column_names)
    width = draw(st.sampled_from([len(columns), len(columns), len(columns) + 1]))
    rows = draw(st.lists(st.lists(cell, min_size=width, max_size=width), max_size=4))
    payload: dict[str, Any] = {"seq": draw(st.integers(0, 10) | st.text(max_size=2)),
                               "columns": columns, "rows": rows}
    if draw(st.booleans()):
        payload[draw(st.text(max_size=4))] = draw(json_values)
    return payload


VALID = {"columns": list(BASE_COLUMNS), "rows": sample_rows(3, columns=BASE_COLUMNS)}

#: Parts of an agent session: raw bytes, or FLOWS payloads (dicts) that the test numbers.
frames_after_hello = st.lists(
    st.one_of(
        flows_payloads(),
        st.just(VALID),
        st.dictionaries(st.text(max_size=6), json_values, max_size=4).map(
            lambda p: encode(FrameType.STATS, p)),
        st.tuples(st.integers(0, 255), st.binary(max_size=40)).map(
            lambda t: HEADER.pack(MAGIC, VERSION, t[0], len(t[1])) + t[1]),
        st.binary(max_size=30),
    ),
    max_size=6,
)


def numbered(run: Running, part: bytes | dict[str, Any]) -> bytes:
    """Encode a FLOWS payload with a unique integer seq (kept invalid if it was not an int)."""
    if isinstance(part, bytes):
        return part
    payload = dict(part)
    if isinstance(payload.get("seq", 0), int):
        run.seq += 1
        payload["seq"] = run.seq
        rows = payload["rows"]
        run.sizes[run.seq] = len(rows) if isinstance(rows, list) else 0
    return encode(FrameType.FLOWS, payload)


def count_acks(run: Running, frames: list[tuple[FrameType, dict[str, Any]]]) -> None:
    """Add the rows of every ACKed batch (each seq was used once)."""
    for kind, payload in frames:
        if kind is FrameType.ACK:
            run.acked_rows += run.sizes.pop(payload["seq"])


FUZZ = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes(running: Running, data: bytes) -> None:
    frames = exchange(running.aggregator.port, data)
    assert [k for k, _ in frames] in ([], [FrameType.ERROR])


@FUZZ
@given(data=st.binary(max_size=200), kind=st.integers(0, 255))
def test_random_first_frames(running: Running, data: bytes, kind: int) -> None:
    frames = exchange(running.aggregator.port,
                      HEADER.pack(MAGIC, VERSION, kind, len(data)) + data)
    assert [k for k, _ in frames] in ([FrameType.ERROR], [FrameType.WELCOME],
                                      [FrameType.WELCOME, FrameType.STATS],
                                      [FrameType.WELCOME, FrameType.STATS, FrameType.STATS])


@FUZZ
@given(parts=frames_after_hello)
def test_random_frames_in_an_agent_session(running: Running,
                                           parts: list[bytes | dict[str, Any]]) -> None:
    data = HELLO + b"".join(numbered(running, p) for p in parts)
    frames = exchange(running.aggregator.port, data)
    kinds = [k for k, _ in frames]
    assert kinds[0] is FrameType.WELCOME
    assert set(kinds[1:]) <= {FrameType.ACK, FrameType.NACK, FrameType.ERROR}
    assert FrameType.ERROR not in kinds[:-1], "ERROR must be the last frame"
    count_acks(running, frames)


def test_zz_server_still_serves_and_files_hold_exactly_the_acked_rows(
        running: Running, tmp_path: Path) -> None:
    frames = exchange(running.aggregator.port, HELLO + numbered(running, VALID))
    count_acks(running, frames)
    assert [k for k, _ in frames] == [FrameType.WELCOME, FrameType.ACK]
    summary = running.call(running.aggregator.stop(grace=1))
    assert summary["flows"] == running.acked_rows
    assert len(load_json(summary["files"]["json"])) == running.acked_rows
    assert sqlite_json(summary["files"]["db"], "SELECT count(*) AS n FROM flow") == [
        {"n": running.acked_rows}]
    assert sqlite_json(summary["files"]["db"], "PRAGMA integrity_check") == [
        {"integrity_check": "ok"}]
