"""The capture token never crosses the wire: every client proves it (nonce + HMAC), the
aggregator refuses a proof made with another token, and a recorded handshake replayed."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from pathlib import Path

import pytest
from agg_helpers import TOKEN, AggregatorFactory, Peer

from netobserv_tui.agent.exporter import Exporter, TokenRejected
from netobserv_tui.model.fetch import finish_and_fetch
from netobserv_tui.model.protocol import (
    HEADER_SIZE,
    FrameType,
    decode_header,
    decode_payload,
    encode,
    token_proof,
)
from netobserv_tui.model.stream import LiveStream
from netobserv_tui.store import RemoteStore


class Recorder:
    """Takes one connection, keeps its first frame, closes."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.frame = b""
        self.thread = threading.Thread(target=self._take, daemon=True)
        self.thread.start()

    def _take(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            data = b""
            while len(data) < HEADER_SIZE or len(data) < HEADER_SIZE + decode_header(
                    data[:HEADER_SIZE])[1]:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            self.frame = data

    def first_frame(self) -> tuple[FrameType, dict[str, object], bytes]:
        self.thread.join(10)
        self.server.close()
        kind, length = decode_header(self.frame[:HEADER_SIZE])
        body = self.frame[HEADER_SIZE:HEADER_SIZE + length]
        return kind, decode_payload(body), self.frame


async def recorded(kind: FrameType, dest: Path | None = None
                   ) -> tuple[FrameType, dict[str, object], bytes]:
    """What the client of ``kind`` sends first, as the wire sees it."""
    rec = Recorder()
    with contextlib.suppress(Exception):
        if kind is FrameType.HELLO:
            await asyncio.to_thread(Exporter("127.0.0.1", rec.port, TOKEN, {}).connect, 2.0)
        elif kind is FrameType.SUBSCRIBE:
            await LiveStream("127.0.0.1", rec.port, TOKEN, timeout=2.0).open()
        elif kind is FrameType.SEARCH:
            store = RemoteStore("127.0.0.1", rec.port, TOKEN, timeout=2.0)
            await asyncio.to_thread(store.search, None, 1)
        else:
            assert dest is not None
            await finish_and_fetch("127.0.0.1", rec.port, TOKEN, dest, connect_timeout=2.0,
                                   attempts=1)
    return await asyncio.to_thread(rec.first_frame)


@pytest.mark.parametrize("kind", [FrameType.HELLO, FrameType.SUBSCRIBE, FrameType.SEARCH,
                                  FrameType.FINISH])
async def test_no_client_sends_the_token(kind: FrameType, tmp_path: Path) -> None:
    got, payload, raw = await recorded(kind, tmp_path)
    assert got is kind
    assert TOKEN.encode() not in raw and "token" not in payload
    auth = payload["auth"]
    assert isinstance(auth, dict) and len(auth["nonce"]) == 32 and len(auth["mac"]) == 64


async def test_a_recorded_handshake_cannot_be_replayed(
    make_aggregator: AggregatorFactory,
) -> None:
    aggregator = await make_aggregator()
    _, _, hello = await recorded(FrameType.HELLO)
    first = await Peer.connect(aggregator.port)
    await first.send_raw(hello)
    assert (await first.expect(FrameType.WELCOME))["capture"]
    replay = await Peer.connect(aggregator.port)
    await replay.send_raw(hello)
    assert "used already" in (await replay.expect(FrameType.ERROR))["reason"]
    await replay.expect_closed()
    # A fresh proof works; one made with another token does not, nor one for another frame.
    fresh = await Peer.connect(aggregator.port)
    await fresh.send_raw(encode(FrameType.HELLO, {**token_proof(TOKEN, FrameType.HELLO),
                                                  "agent": {}}))
    await fresh.expect(FrameType.WELCOME)
    for proof in (token_proof("not-the-token", FrameType.HELLO),
                  token_proof(TOKEN, FrameType.SUBSCRIBE)):
        wrong = await Peer.connect(aggregator.port)
        await wrong.send_raw(encode(FrameType.HELLO, {**proof, "agent": {}}))
        assert "wrong capture token" in (await wrong.expect(FrameType.ERROR))["reason"]
    assert aggregator.stats()["connections_rejected"] == 3


async def test_an_agent_with_the_wrong_token_is_told_so(
    make_aggregator: AggregatorFactory,
) -> None:
    aggregator = await make_aggregator()
    exporter = Exporter("127.0.0.1", aggregator.port, "wrong", {"hostname": "n1"})
    with pytest.raises(TokenRejected, match="wrong capture token"):
        await asyncio.to_thread(exporter.connect)
