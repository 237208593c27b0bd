"""FINISH and FETCH: the files of a capture leave its aggregator over the protocol, complete."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any, Self

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
)
from test_aggregator_main import ready_line, send_batches, start

from netobserv_tui.model.fetch import FetchError, finish_and_fetch
from netobserv_tui.model.protocol import FrameType, encode, read_frame


def without_time_received(path: str | Path) -> list[dict[str, Any]]:
    """The JSON file's objects without the TimeReceived the aggregator adds."""
    return [{k: v for k, v in o.items() if k != "TimeReceived"} for o in load_json(path)]


async def test_files_arrive_identical_and_complete(
    make_aggregator: AggregatorFactory, tmp_path: Path
) -> None:
    aggregator = await make_aggregator()
    rows = sample_rows(2500, seed=5)
    peer = await Peer.connect(aggregator.port)
    await peer.hello()
    await peer.flows(1, DNS_COLUMNS, rows[:1200])
    await peer.flows(2, DNS_COLUMNS, rows[1200:])
    assert (await peer.expect(FrameType.ACK))["seq"] == 1
    assert (await peer.expect(FrameType.ACK))["seq"] == 2
    await peer.close()
    said: list[str] = []

    summary = await finish_and_fetch("127.0.0.1", aggregator.port, TOKEN, tmp_path / "here",
                                     progress=said.append)

    assert summary["flows"] == 2500
    local = {kind: Path(path) for kind, path in summary["local_files"].items()}
    remote = {kind: Path(path) for kind, path in summary["files"].items()}
    assert local["json"] == tmp_path / "here" / "flow" / remote["json"].name
    for kind in ("json", "db"):
        assert local[kind].read_bytes() == remote[kind].read_bytes()
    assert without_time_received(local["json"]) == as_objects(DNS_COLUMNS, rows)
    assert sqlite_json(local["db"], "SELECT count(*) AS n FROM flow") == [{"n": 2500}]
    assert not list((tmp_path / "here" / "flow").glob("*.part"))
    assert said[0].startswith("Completing the files") and "Copying" in said[1]
    await asyncio.wait_for(aggregator.finished.wait(), 5)  # after our BYE
    # The capture is closed: no agent gets in any more.
    with pytest.raises(OSError):
        await Peer.connect(aggregator.port)


async def test_a_wrong_token_changes_nothing(
    make_aggregator: AggregatorFactory, tmp_path: Path
) -> None:
    aggregator = await make_aggregator()
    with pytest.raises(FetchError, match="refused: wrong capture token"):
        await finish_and_fetch("127.0.0.1", aggregator.port, "nope", tmp_path)
    peer = await Peer.connect(aggregator.port)  # still taking agents
    await peer.hello()
    await peer.flows(1, DNS_COLUMNS, sample_rows(3))
    assert (await peer.expect(FrameType.ACK))["seq"] == 1
    await peer.close()
    assert not (tmp_path / "flow").exists()
    # A refused FINISH is not the end of the capture: the aggregator process stays.
    assert not aggregator.finished.is_set()


async def test_an_unknown_file_is_refused_by_name(
    make_aggregator: AggregatorFactory, tmp_path: Path
) -> None:
    aggregator = await make_aggregator()
    with pytest.raises(FetchError, match=r"no file 'pcap': ask for one of \['db', 'json'\]"):
        await finish_and_fetch("127.0.0.1", aggregator.port, TOKEN, tmp_path, files=["pcap"])


async def test_an_existing_file_is_not_overwritten(
    make_aggregator: AggregatorFactory, tmp_path: Path
) -> None:
    aggregator = await make_aggregator()
    name = Path(aggregator.files["json"]).name
    (tmp_path / "flow").mkdir()
    (tmp_path / "flow" / name).write_text("mine")
    summary = await finish_and_fetch("127.0.0.1", aggregator.port, TOKEN, tmp_path)
    assert (tmp_path / "flow" / name).read_text() == "mine"
    assert Path(summary["local_files"]["json"]).name == name.replace(".json", "-1.json")


class LocalServer:
    """A TCP server on 127.0.0.1 for one test, serving each connection with ``_serve``."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class BadAggregator(LocalServer):
    """Answers FINISH, then sends a FILE whose bytes are cut short or do not match."""

    def __init__(self, *, send: bytes, size: int, sha256: str | None) -> None:
        super().__init__()
        self.send, self.size, self.sha256 = send, size, sha256

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        summary: dict[str, Any] = {"files": {"json": "/out/flow/x.json"}, "flows": 1}
        writer.write(encode(FrameType.FINISHED, summary))
        await read_frame(reader)
        writer.write(encode(FrameType.FILE, {"file": "json", "name": "x.json",
                                             "size": self.size}))
        writer.write(self.send)
        if self.sha256 is not None:
            writer.write(encode(FrameType.FILE_END, {"sha256": self.sha256}))
        await writer.drain()
        writer.close()


@pytest.mark.parametrize(
    ("send", "size", "sha256", "message"),
    [
        (b"[1,2", 100, None, r"x.json: the connection to .* closed after 4 of 100 bytes"),
        (b"[1,2]", 5, "0" * 64, r"x.json: the copy does not match the aggregator's file"),
    ],
)
async def test_a_broken_transfer_leaves_no_file(
    tmp_path: Path, send: bytes, size: int, sha256: str | None, message: str
) -> None:
    async with BadAggregator(send=send, size=size, sha256=sha256) as bad:
        said: list[str] = []
        with pytest.raises(FetchError, match=message):
            await finish_and_fetch("127.0.0.1", bad.port, TOKEN, tmp_path, files=["json"],
                                   retry_delay=0, progress=said.append)
    assert list((tmp_path / "flow").iterdir()) == []
    # Damage on the way is worth another try; this aggregator damages every one.
    assert [line.endswith(f"trying again ({n} of 4)...") for n, line in
            enumerate([x for x in said if "trying again" in x], start=2)] == [True] * 3


async def test_a_file_name_that_climbs_out_is_refused(tmp_path: Path) -> None:
    class Climber(BadAggregator):
        async def _serve(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
            await read_frame(reader)
            writer.write(encode(FrameType.FINISHED, {"files": {}}))
            await read_frame(reader)
            writer.write(encode(FrameType.FILE, {"name": "../../etc/x", "size": 1}))
            await writer.drain()

    async with Climber(send=b"", size=0, sha256=None) as bad:
        with pytest.raises(FetchError, match="bad FILE header"):
            await finish_and_fetch("127.0.0.1", bad.port, TOKEN, tmp_path, files=["json"])


async def test_the_aggregator_process_exits_once_its_files_are_taken(tmp_path: Path) -> None:
    proc = start(tmp_path / "pod")
    try:
        ready = ready_line(proc)
        rows = sample_rows(300)
        await asyncio.to_thread(send_batches, ready["port"], [rows])
        summary = await finish_and_fetch("127.0.0.1", ready["port"], TOKEN, tmp_path / "here")
        out, err = await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    closed = json.loads(out.splitlines()[-1])
    assert closed["event"] == "closed" and closed["flows"] == 300 == summary["flows"]
    local = summary["local_files"]
    assert without_time_received(local["json"]) == as_objects(DNS_COLUMNS, rows)
    out = subprocess.run(["sqlite3", local["db"], "PRAGMA integrity_check; "
                          "SELECT count(*) FROM flow"], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["ok", "300"]


class CuttingProxy(LocalServer):
    """A TCP proxy to ``port`` that cuts its first connection once ``cut_after`` bytes went
    from the server to the client: a port-forward that drops in the middle of a file."""

    def __init__(self, port: int, cut_after: int) -> None:
        super().__init__()
        self.target, self.cut_after = port, cut_after
        self.connections = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        limit = self.cut_after if self.connections == 1 else None
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                       limit: int | None) -> None:
            sent = 0
            while data := await src.read(65536):
                if limit is not None and sent + len(data) >= limit:
                    dst.write(data[: limit - sent])
                    await dst.drain()
                    raise ConnectionResetError("cut")
                sent += len(data)
                dst.write(data)
                await dst.drain()
            dst.close()

        tasks = [asyncio.create_task(pipe(reader, up_writer, None)),
                 asyncio.create_task(pipe(up_reader, writer, limit))]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            task.cancel()
        for w in (writer, up_writer):
            w.transport.abort()


async def test_a_dropped_connection_mid_file_is_tried_again_and_the_files_are_whole(
    make_aggregator: AggregatorFactory, tmp_path: Path
) -> None:
    aggregator = await make_aggregator(files_wait=30)
    rows = sample_rows(3000, seed=9)
    peer = await Peer.connect(aggregator.port)
    await peer.hello()
    await peer.flows(1, DNS_COLUMNS, rows)
    assert (await peer.expect(FrameType.ACK))["seq"] == 1
    await peer.close()
    said: list[str] = []
    # Cut 200 kB into the first session: inside the JSON file (about 1.2 MB).
    async with CuttingProxy(aggregator.port, cut_after=200_000) as proxy:
        summary = await finish_and_fetch("127.0.0.1", proxy.port, TOKEN, tmp_path,
                                         retry_delay=0, progress=said.append)
    assert proxy.connections == 2
    retries = [line for line in said if "trying again" in line]
    assert len(retries) == 1 and "(2 of 4)" in retries[0]
    assert "closed after" in retries[0]
    remote = {kind: Path(path) for kind, path in summary["files"].items()}
    assert remote["json"].stat().st_size > 200_000
    for kind in ("json", "db"):
        local = Path(summary["local_files"][kind])
        assert local.read_bytes() == remote[kind].read_bytes()
    # One copy of each, nothing half-written.
    assert sorted(p.name for p in (tmp_path / "flow").iterdir()) == sorted(
        p.name for p in remote.values())
    assert sqlite_json(summary["local_files"]["db"], "SELECT count(*) AS n FROM flow") == [
        {"n": 3000}]
    await asyncio.wait_for(aggregator.finished.wait(), 5)  # after the second session's BYE


async def test_files_stay_on_offer_for_a_while_after_a_broken_session(
    make_aggregator: AggregatorFactory,
) -> None:
    aggregator = await make_aggregator(files_wait=0.5)
    peer = await Peer.connect(aggregator.port)
    await peer.send(FrameType.FINISH, {"token": TOKEN, "grace": 0})
    assert (await peer.expect(FrameType.FINISHED))["flows"] == 0
    await peer.close()  # gone without BYE
    await asyncio.sleep(0.2)
    assert not aggregator.finished.is_set()  # still offering the files
    # Nobody comes back: the aggregator may exit after files_wait.
    await asyncio.wait_for(aggregator.finished.wait(), 5)
