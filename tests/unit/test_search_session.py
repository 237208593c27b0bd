"""SEARCH sessions: the aggregator runs the TUI's live filters over its own file."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from agg_helpers import DNS_COLUMNS, TOKEN, AggregatorFactory, Peer, sample_rows

from netobserv_tui.model.protocol import FrameType
from netobserv_tui.store import Query, RemoteStore, SqliteStore, StoreError


async def filled(make_aggregator: AggregatorFactory, rows: list[list[Any]]) -> Any:
    aggregator = await make_aggregator()
    peer = await Peer.connect(aggregator.port)
    await peer.hello()
    await peer.flows(1, DNS_COLUMNS, rows)
    assert (await peer.expect(FrameType.ACK))["seq"] == 1
    await peer.close()
    return aggregator


@pytest.mark.parametrize(
    "query",
    [Query(), Query(("DstPort=53",)), Query(("noerror",), ("DnsId",)), Query((), ("DnsId",)),
     Query(("/^198\\.18\\.0\\.1\\d$/", "Proto=tcp"))],
)
async def test_remote_results_equal_a_local_search_of_the_same_file(
    make_aggregator: AggregatorFactory, query: Query
) -> None:
    aggregator = await filled(make_aggregator, sample_rows(900, seed=3))
    match, narrow = query.compile()
    local = SqliteStore(aggregator.files["db"]).search(match, 50, narrow=narrow)
    remote = RemoteStore("127.0.0.1", aggregator.port, TOKEN)
    try:
        got = await asyncio.to_thread(remote.search, None, 50, query=query)
        assert got.records == local.records and got.matched == local.matched
        assert got.last_id == local.last_id == 900
        # The same connection serves the next search; after= gives only newer rows.
        later = await asyncio.to_thread(remote.search, None, 50, after=900, query=query)
        assert (later.records, later.matched) == ([], 0)
    finally:
        remote.close()


async def test_an_invalid_chip_and_a_wrong_token_are_explained(
    make_aggregator: AggregatorFactory,
) -> None:
    aggregator = await filled(make_aggregator, sample_rows(10))
    remote = RemoteStore("127.0.0.1", aggregator.port, TOKEN)
    with pytest.raises(StoreError, match="unknown field 'DstPrt'"):
        await asyncio.to_thread(remote.search, None, 5, query=Query(("DstPrt=53",)))
    remote.close()
    intruder = RemoteStore("127.0.0.1", aggregator.port, "wrong")
    with pytest.raises(StoreError, match="refused the search: wrong capture token"):
        await asyncio.to_thread(intruder.search, None, 5, query=Query())
