"""SEARCH sessions: the aggregator runs the TUI's live filters over its own file."""

from __future__ import annotations

import asyncio
import time
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


#: A text on which /(a|a)+$/ backtracks for hours (2^32 ways to split the a's).
EVIL = "a" * 32 + "!"


def evil_rows() -> list[list[Any]]:
    """Rows whose interface name is :data:`EVIL` (any text field would do)."""
    rows = sample_rows(30, seed=5)
    name = DNS_COLUMNS.index("Interface")
    for row in rows:
        row[name] = EVIL
    return rows


async def test_a_runaway_regex_is_stopped_and_never_holds_up_ingest(
    make_aggregator: AggregatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/(a|a)+$/`` on 'aaaa...!' backtracks for hours; under ``re`` it held the GIL, so
    the aggregator's ingest and FINISH stopped. Now the match lets go of the GIL and is
    stopped after its budget (4 s here): an agent's batch sent 0.5 s into the search is
    acknowledged long before the search ends (held, it would wait >= 3.5 s), and the
    search's answer says what happened."""
    from netobserv_tui.store import chips

    budget = 4.0
    monkeypatch.setattr(chips, "REGEX_TIMEOUT", budget)
    aggregator = await filled(make_aggregator, evil_rows())
    remote = RemoteStore("127.0.0.1", aggregator.port, TOKEN)
    agent = await Peer.connect(aggregator.port)
    await agent.hello("busy-node")

    def search() -> str:
        try:
            remote.search(None, 5, query=Query(("/(a|a)+$/",)))
        except chips.RegexTimeout as exc:
            return str(exc)
        return "not stopped"

    began = time.monotonic()
    searching = asyncio.ensure_future(asyncio.to_thread(search))
    await asyncio.sleep(0.5)  # the search is in its first record's match (if the match
    # held the GIL, this very sleep would last until the search ended)
    await agent.flows(2, DNS_COLUMNS, sample_rows(50, seed=6))
    assert (await agent.expect(FrameType.ACK))["seq"] == 2
    acked = time.monotonic() - began
    reason = await searching
    took = time.monotonic() - began
    remote.close()
    assert "/(a|a)+$/ ran over 4 s on one flow and was stopped" in reason
    assert 0.9 * budget <= took < 2 * budget  # stopped once (its own clock), not asked twice
    assert acked < budget / 2, f"the batch was acknowledged {acked:.2f} s into the search"
    assert aggregator.stats()["flows"] == 80


def test_runaway_regexes_are_stopped_or_never_run_away() -> None:
    from netobserv_tui.store.chips import FilterChips, RegexTimeout

    # The example: exponential under `re`, answered at once by the regex engine.
    nested, error = FilterChips().add("/(a+)+$/")
    assert error is None and nested.matches({"DnsName": "aaaa"})
    assert not nested.matches({"DnsName": EVIL})
    # A pattern that does run away is stopped after its budget, with the reason.
    chips, error = FilterChips().add("/(a|a)+$/")
    assert error is None
    assert chips.matches({"DnsName": "aaaa"})  # a sane text matches at once
    with pytest.raises(RegexTimeout, match=r"ran over 0.2 s on one flow"):
        chips.matches({"DnsName": EVIL})
