"""Reports: the aggregator computes whole-capture summaries (the findings) over its own
file, asked through a SEARCH session, exactly as the TUI would compute them locally."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from agg_helpers import TOKEN, AggregatorFactory, Peer
from test_findings import LAB, LAB_FINDINGS

from netobserv_tui.model.protocol import FrameType, encode, read_frame, token_proof
from netobserv_tui.store import Finding, Query, RemoteStore
from netobserv_tui.store.findings import findings
from netobserv_tui.store.remote import ReportRefused
from netobserv_tui.store.reports import REPORTS, UnknownReport, report
from netobserv_tui.store.talkers import Talker, talkers


async def lab_aggregator(make_aggregator: AggregatorFactory) -> Any:
    """An aggregator fed the lab capture (every feature on, known problems), one batch per
    run of records with the same fields."""
    records: list[dict[str, Any]] = json.loads(LAB.read_text())
    aggregator = await make_aggregator()
    agent = await Peer.connect(aggregator.port)
    await agent.hello()
    batches: list[list[dict[str, Any]]] = []
    for record in records:
        if batches and batches[-1][0].keys() == record.keys():
            batches[-1].append(record)
        else:
            batches.append([record])
    for seq, batch in enumerate(batches, 1):
        columns = [c for c in batch[0] if c != "TimeReceived"]
        await agent.flows(seq, columns, [[r[c] for c in columns] for r in batch])
    for seq in range(1, len(batches) + 1):
        assert (await agent.expect(FrameType.ACK))["seq"] == seq
    await agent.close()
    assert aggregator.stats()["flows"] == len(records) == 130
    return aggregator


async def test_the_findings_report_equals_the_findings_computed_locally(
    make_aggregator: AggregatorFactory,
) -> None:
    aggregator = await lab_aggregator(make_aggregator)
    db = Path(aggregator.files["db"])
    remote = RemoteStore("127.0.0.1", aggregator.port, TOKEN)
    try:
        items = await asyncio.to_thread(remote.report, "findings")
        local = findings(db)
        assert items == [finding.to_json() for finding in local]
        assert [Finding.from_json(item) for item in items] == local == LAB_FINDINGS
        # The same connection goes on serving searches, and reports.
        result = await asyncio.to_thread(remote.search, None, 3, query=Query(("Proto=1",)))
        assert result.matched == 32  # the lab's IPv4 pings
        assert await asyncio.to_thread(remote.report, "findings") == items
    finally:
        remote.close()


async def test_the_talkers_report_equals_the_talkers_computed_locally(
    make_aggregator: AggregatorFactory,
) -> None:
    aggregator = await lab_aggregator(make_aggregator)
    remote = RemoteStore("127.0.0.1", aggregator.port, TOKEN)
    try:
        items = await asyncio.to_thread(remote.report, "talkers")
    finally:
        remote.close()
    local = talkers(Path(aggregator.files["db"]))
    assert [Talker.from_json(item) for item in items] == local
    assert [(t.name, t.bytes) for t in local][:2] == [("fd00:198:18::10", 7557),
                                                       ("198.18.0.10", 6541)]


async def test_an_unknown_report_is_refused_and_the_session_goes_on(
    make_aggregator: AggregatorFactory,
) -> None:
    aggregator = await lab_aggregator(make_aggregator)
    remote = RemoteStore("127.0.0.1", aggregator.port, TOKEN)
    try:
        with pytest.raises(ReportRefused, match=(
                r"refused the report: unknown report 'top_talkers' \(this aggregator "
                r"computes: findings, talkers\)")):
            await asyncio.to_thread(remote.report, "top_talkers")
        assert len(await asyncio.to_thread(remote.report, "findings")) == len(LAB_FINDINGS)
    finally:
        remote.close()
    # A name that is not a string: ERROR, and the session goes on.
    peer = await Peer.connect(aggregator.port)
    await peer.send(FrameType.SEARCH, token_proof(TOKEN, FrameType.SEARCH))
    await peer.expect(FrameType.WELCOME)
    await peer.send(FrameType.SEARCH, {"report": 7})
    assert (await peer.expect(FrameType.ERROR)) == {
        "reason": "a report is asked for by its name, a string"}
    await peer.send(FrameType.SEARCH, {"report": "findings"})
    answer = await peer.expect(FrameType.RESULT)
    assert answer["report"] == "findings" and len(answer["items"]) == len(LAB_FINDINGS)
    await peer.close()


async def test_an_aggregator_older_than_reports_is_told_apart() -> None:
    """An older aggregator reads the report request as a search (``limit`` 0, ``after``
    beyond any row) and answers an empty RESULT without ``report``."""
    asked: list[dict[str, Any]] = []

    async def older(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)  # the first SEARCH, its proof of the token
        writer.write(encode(FrameType.WELCOME, {"capture": "old"}))
        while (frame := await read_frame(reader)) is not None:
            asked.append(frame[1])
            writer.write(encode(FrameType.RESULT, {"records": [], "matched": 0,
                                                   "scanned": 0, "last_id": 40}))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(older, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    remote = RemoteStore("127.0.0.1", port, TOKEN, timeout=5.0)
    try:
        with pytest.raises(ReportRefused, match=r"does not compute reports \(an older "
                                                r"version\)"):
            await asyncio.to_thread(remote.report, "findings")
        assert asked == [{"report": "findings", "limit": 0, "after": 1 << 62}]  # asked once
    finally:
        remote.close()
        server.close()
        await server.wait_closed()


def test_the_registry_computes_from_the_file(tmp_path: Path) -> None:
    from test_findings import lab_records, write

    db = write(tmp_path, lab_records())
    assert list(REPORTS) == ["findings", "talkers"]
    assert report("findings", db) == [finding.to_json() for finding in LAB_FINDINGS]
    with pytest.raises(UnknownReport, match="unknown report 'nope'"):
        report("nope", db)
