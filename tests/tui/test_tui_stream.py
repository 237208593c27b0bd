"""The live-stream client against a real TCP server, and the no-Textual rule."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tui_helpers import CAPTURE, TOKEN, FakeAggregator

from netobserv_tui.model.protocol import FrameType
from netobserv_tui.model.stream import (
    FlowBatch,
    LiveStream,
    StatsUpdate,
    StreamError,
    StreamRefused,
)


async def test_frames_are_decoded_until_the_stream_ends(aggregator: FakeAggregator) -> None:
    async with LiveStream("127.0.0.1", aggregator.port, TOKEN) as stream:
        assert stream.capture == CAPTURE
        await aggregator.send_flows([{"SrcAddr": "10.0.0.1", "Bytes": 561}])
        await aggregator.send_stats(flows=1, bytes=561, packets=1, agents=1)
        await aggregator.drop()
        frames = [frame async for frame in stream]
    assert frames == [
        FlowBatch(1, ["SrcAddr", "Bytes"], [["10.0.0.1", 561]]),
        StatsUpdate({"flows": 1, "bytes": 561, "packets": 1, "agents": 1}),
    ]


async def test_wrong_token_is_refused_with_the_reason(aggregator: FakeAggregator) -> None:
    with pytest.raises(StreamRefused, match="refused the live stream: invalid token"):
        async with LiveStream("127.0.0.1", aggregator.port, "wrong"):
            pass


async def test_error_frame_ends_the_stream(aggregator: FakeAggregator) -> None:
    async with LiveStream("127.0.0.1", aggregator.port, TOKEN) as stream:
        await aggregator._send(FrameType.ERROR, {"reason": "capture stopped"})
        with pytest.raises(StreamError, match="ended the live stream: capture stopped"):
            async for _ in stream:
                pass


async def test_malformed_flows_frame_is_an_error(aggregator: FakeAggregator) -> None:
    async with LiveStream("127.0.0.1", aggregator.port, TOKEN) as stream:
        await aggregator._send(FrameType.FLOWS, {"seq": 1, "rows": []})
        with pytest.raises(StreamError, match="without 'columns' and 'rows'"):
            async for _ in stream:
                pass


async def test_nothing_listening_is_a_clear_error() -> None:
    server = FakeAggregator()
    await server.start()
    await server.close()
    with pytest.raises(StreamError, match="cannot reach the live stream at 127.0.0.1:"):
        await LiveStream("127.0.0.1", server.port, TOKEN).open()


def test_stream_and_columns_do_not_import_textual() -> None:
    code = (
        "import sys, netobserv_tui.model.stream, netobserv_tui.tui.columns\n"
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
        "print(' '.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"Textual imported: {result.stdout}"
