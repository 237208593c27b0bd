"""Chips answered in SQL (store/textsearch.py): the same rows as the Python test of every
record, the endpoint text the table shows, and no Python test per row."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import regex
from agg_helpers import DNS_COLUMNS, TOKEN, AggregatorFactory, Peer, as_objects, sample_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netobserv_tui.aggregator.writers import FlowWriter
from netobserv_tui.model.fields import FIELD_NAMES
from netobserv_tui.model.protocol import FrameType
from netobserv_tui.store import (
    JsonStore,
    Query,
    RemoteStore,
    SearchResult,
    SqliteStore,
    textsearch,
)
from netobserv_tui.store.chips import FilterChips, RegexTimeout, endpoint, record_text
from netobserv_tui.store.textsearch import RegexShape, analyze, required_literals
from netobserv_tui.tui import columns

Rows = list[list[Any]]

ENDPOINT_COLUMNS = ("SrcAddr", "DstAddr", "SrcPort", "DstPort", "Proto", "DnsName")
ENDPOINT_ROWS: Rows = [
    ["198.18.0.12", "198.18.0.1", 53, 40000, 17, "lab.example."],
    ["10.0.0.7", "198.18.0.12", 41000, 53, 17, None],
    ["fd00:198:18::12", "fd00:198:18::1", 53, 40001, 17, None],
    ["198.18.0.12", "198.18.0.9", 0, 0, 1, None],
    ["10.0.0.8", "10.0.0.9", 5353, 80, 6, None],
]


def chips(*texts: str) -> FilterChips:
    result = FilterChips()
    for text in texts:
        result, error = result.add(text)
        assert error is None, error
    return result


class Counted:
    """A query's predicate that counts its calls: the rows tested in Python."""

    def __init__(self, query: Query) -> None:
        match, self.narrow = query.compile()
        assert match is not None
        self.match = match
        self.calls = 0

    def __call__(self, record: Any) -> bool:
        self.calls += 1
        return self.match(record)


def search(store: SqliteStore, query: Query, limit: int = 1000,
           after: int = 0) -> tuple[SearchResult, int]:
    """The search the TUI makes for ``query``, and how many rows went through Python."""
    match = Counted(query)
    result = store.search(match, limit, after=after, narrow=match.narrow, query=query)
    return result, match.calls


def python(records: list[dict[str, Any]], query: Query) -> list[dict[str, Any]]:
    """What the chips' Python test keeps, newest first."""
    match, _ = query.compile()
    assert match is not None
    return [record for record in records[::-1] if match(record)]


def untyped(path: Path) -> None:
    """Make ``path`` look like a capture of an older version (or another tool)."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id=0")
    conn.commit()
    conn.close()


def write(out: Path, columns: tuple[str, ...] | list[str], rows: Rows,
          close: bool = True) -> FlowWriter:
    writer = FlowWriter(out)
    writer.write_batch(list(columns), rows)
    if close:
        writer.close()
    return writer


# -- the endpoint text ------------------------------------------------------------------


def test_a_keyword_matches_the_endpoint_as_the_table_shows_it() -> None:
    v4, v4_server, v6, no_port, _ = as_objects(ENDPOINT_COLUMNS, ENDPOINT_ROWS)
    assert record_text(v6).splitlines()[-2:] == ["[fd00:198:18::12]:53", "[fd00:198:18::1]:40001"]
    assert record_text(no_port).splitlines() == ["198.18.0.12", "198.18.0.9", "0", "0", "1",
                                                 "ICMP"]
    assert chips("198.18.0.12:53").filter([v4, v4_server, v6, no_port]) == [v4, v4_server]
    assert chips("[FD00:198:18::12]:53").filter([v4, v6]) == [v6]
    assert chips("8::12]:5").filter([v4, v6]) == [v6]
    assert chips(".12:5").filter([v4, v4_server, v6, no_port]) == [v4, v4_server]
    assert chips("198.18.0.12:0").filter([no_port]) == []
    assert chips(r"/^\[fd00:.*\]:53$/").filter([v4, v6]) == [v6]


@pytest.mark.parametrize(("addr", "port"), [
    ("198.18.0.12", 53), ("fd00:198:18::12", 53), ("10.0.0.1", 0), ("10.0.0.1", None),
    (None, 80), ("", 80), ("::1", 65535)])
def test_the_table_and_the_chips_show_an_endpoint_alike(addr: str | None,
                                                        port: int | None) -> None:
    assert endpoint(addr, port) == columns.endpoint(addr, port)


@pytest.mark.parametrize("kind", ["sqlite", "json"])
@pytest.mark.parametrize(("text", "expected"), [
    ("198.18.0.12:53", [1, 0]),  # newest first: the rows are 0..4
    ("[fd00:198:18::12]:53", [2]),
    ("[fd00:198:18::1]:4", [2]),
    (".12:5", [1, 0]),
    ("12]:", [2]),
    ("0:53", []),
    ("198.18.0.12:0", []),
    ("5:53", []),
    (r"/^198\.18\.0\.12:\d+$/", [1, 0]),
    (r"/\]:5/", [2]),
])
def test_stores_find_the_endpoint_text(tmp_path: Path, kind: str, text: str,
                                       expected: list[int]) -> None:
    writer = write(tmp_path, ENDPOINT_COLUMNS, ENDPOINT_ROWS)
    store = SqliteStore(writer.db_path) if kind == "sqlite" else JsonStore(writer.json_path)
    objects = as_objects(ENDPOINT_COLUMNS, ENDPOINT_ROWS)
    query = Query((text,))
    match, narrow = query.compile()
    result = store.search(match, 10, narrow=narrow, query=query)
    assert result.records == [objects[i] for i in expected]
    assert result.matched == len(expected)


# -- answered in SQL --------------------------------------------------------------------


@pytest.mark.parametrize(("texts", "fields"), [
    (("noerror",), ()),
    (("NoError", "198.18.1.7"), ()),
    (("198.18.1.7:53",), ()),
    (("udp",), ("DnsId",)),
    (("8:5",), ()),
    (("53",), ()),
    (("DnsFlagsResponseCode=NOERROR",), ()),
    (("Interfaces=eth0", "IfDirection=1"), ()),
    (("DstPort=53", "eth0"), ("DnsLatencyMs",)),
    ((r"/^198\.18\.0\.1\d$/",), ()),
    ((r"/:53$/",), ()),
    (("/noerror|tcp/",), ()),
    (("nothing-like-this",), ()),
])
def test_keyword_field_and_line_regex_chips_run_no_python_per_row(
        tmp_path: Path, texts: tuple[str, ...], fields: tuple[str, ...]) -> None:
    rows = sample_rows(3000, seed=5)
    store = SqliteStore(write(tmp_path, DNS_COLUMNS, rows).db_path)
    query = Query(texts, fields)
    expected = python(as_objects(DNS_COLUMNS, rows), query)
    result, calls = search(store, query, limit=100)
    assert calls == 0
    assert (result.records, result.matched) == (expected[:100], len(expected))
    newer, calls = search(store, query, limit=100, after=2500)
    assert calls == 0
    assert newer.records == [r for r in expected
                             if r["TimeFlowStartMs"] >= 1_764_097_458_000 + 2500][:100]


def test_a_regex_that_may_span_lines_runs_on_the_rows_holding_its_literals(
        tmp_path: Path) -> None:
    rows = sample_rows(3000, seed=5)
    store = SqliteStore(write(tmp_path, DNS_COLUMNS, rows).db_path)
    objects = as_objects(DNS_COLUMNS, rows)
    query = Query((r"/0\s+noerror/",))  # \s matches the newline between two fields
    expected = python(objects, query)
    assert expected  # DnsId's text then DnsFlagsResponseCode's, when DnsId ends in 0
    result, calls = search(store, query, limit=50)
    assert (result.records, result.matched) == (expected[:50], len(expected))
    assert calls == sum(1 for r in objects if "noerror" in record_text(r).lower()) == 1000
    # Without a literal, every row is tested.
    result, calls = search(store, Query((r"/\d\s\d/",)), limit=50)
    assert calls == 3000 and result.matched == len(python(objects, Query((r"/\d\s\d/",))))


def test_a_live_file_is_indexed_as_it_grows(tmp_path: Path) -> None:
    writer = FlowWriter(tmp_path)
    first = sample_rows(400, seed=1)
    writer.write_batch(DNS_COLUMNS, first)
    store = SqliteStore(writer.db_path)
    later = [[*row] for row in sample_rows(100, seed=2)]
    later[50][DNS_COLUMNS.index("DstAddr")] = "fd00::77"
    later[60][DNS_COLUMNS.index("Interface")] = "ens9ſ"
    queries = [Query((text,)) for text in ("fd00::77", "[fd00::77]:80", "ENS9S", "/ens9s/",
                                           "Interface=ens9ſ", "198.18.1.7")]
    for query in queries:
        result, calls = search(store, query)
        assert calls == 0 and result.records == python(as_objects(DNS_COLUMNS, first), query)
    writer.write_batch(DNS_COLUMNS, later)
    everything = as_objects(DNS_COLUMNS, first + later)
    found = []
    for query in queries:
        result, calls = search(store, query)
        assert calls == 0 and result.records == python(everything, query)
        newer, calls = search(store, query, after=400)
        assert calls == 0 and newer.records == python(everything[400:], query)
        found.append(result.matched)
    assert found[:5] == [1, 1, 0, 1, 1]  # "ENS9S": 'ſ' lowers to itself; the regex folds it
    writer.close()


def test_the_index_leaves_the_garbage_collector_nothing_per_value(tmp_path: Path) -> None:
    """The index's distinct values and the rows of each are objects the cyclic garbage
    collector does not track: a full collection does not walk 100,000 of them (it took
    ~40 ms in the TUI when each value was a NamedTuple with an array)."""
    writer = FlowWriter(tmp_path)
    rows = [[*row] for row in sample_rows(20_000, seed=3)]
    for i, row in enumerate(rows):  # 20,000 distinct interfaces and addresses
        row[DNS_COLUMNS.index("Interface")] = f"veth-{i}-lab"
        row[DNS_COLUMNS.index("SrcAddr")] = f"fd00:198:18::{i:x}"
    writer.write_batch(DNS_COLUMNS, rows)
    store = SqliteStore(writer.db_path)
    gc.collect()
    before = len(gc.get_objects())
    result, calls = search(store, Query(("veth-19999-lab",)), limit=10)
    assert calls == 0 and result.matched == 1
    index = store._text
    columns = {column.name: column for column in index.columns}
    assert len(columns["Interface"].values or ()) == 20_000
    assert len(columns["Interface"].postings or ()) == 20_000  # the rows were read
    del result
    gc.collect()
    assert len(gc.get_objects()) - before < 2_000
    writer.close()


def traced_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL statements of every connection opened from now on, as they run."""
    statements: list[str] = []
    real_connect = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = real_connect(*args, **kwargs)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    return statements


def test_a_views_first_search_reads_no_row_after_the_stores_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's first search reads the rows of every listed value, integer columns
    included: the DNS view's first search (its fields present, DnsFlagsResponseCode and
    DnsLatencyMs listed) then scans no row; it read their rows itself before (~100 ms per
    100,000 rows, on the way from Right to the repaint)."""
    writer = FlowWriter(tmp_path)
    rows = sample_rows(3000, seed=4)
    writer.write_batch(DNS_COLUMNS, rows)
    store = SqliteStore(writer.db_path)
    statements = traced_statements(monkeypatch)
    search(store, Query(("SrcPort=40007",)))  # the first: reads what the index keeps
    statements.clear()
    dns = Query(("NoError",), ("DnsId", "DnsLatencyMs", "DnsFlagsResponseCode"))
    result, calls = search(store, dns)
    everything = as_objects(DNS_COLUMNS, rows)
    assert calls == 0 and result.records == python(everything, dns)[:1000]
    assert result.matched == 1000  # every third row is DNS
    scans = [sql for sql in statements if sql.lstrip().startswith("SELECT rowid,")]
    assert not scans, scans
    writer.close()


def test_a_store_read_ahead_leaves_the_first_keyword_search_nothing_to_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """prepare_search reads what the first text search reads (the distinct values and
    their rows, the digit texts): the first keyword search after it reads none of that,
    and finds what it finds without it; new rows are read by the next read ahead."""
    writer = FlowWriter(tmp_path)
    rows = sample_rows(3000, seed=5)
    writer.write_batch(DNS_COLUMNS, rows)
    store = SqliteStore(writer.db_path)
    statements = traced_statements(monkeypatch)
    store.prepare_search()
    reads = [sql for sql in statements if "DISTINCT" in sql]
    assert reads  # it read the columns' values
    statements.clear()
    queries = [Query(("payments",)), Query(("443",)), Query(("nxdomain",))]
    everything = as_objects(DNS_COLUMNS, rows)
    for query in queries:
        result, calls = search(store, query)
        assert calls == 0 and result.records == python(everything, query)[:1000]
    assert not [sql for sql in statements if "DISTINCT" in sql], statements
    later = sample_rows(200, seed=6)
    writer.write_batch(DNS_COLUMNS, later)
    statements.clear()
    store.prepare_search()
    assert [sql for sql in statements if "DISTINCT" in sql]  # the new rows' values
    statements.clear()
    everything = as_objects(DNS_COLUMNS, rows + later)
    result, _ = search(store, queries[0])
    assert result.records == python(everything, queries[0])[:1000]
    assert not [sql for sql in statements if "DISTINCT" in sql], statements
    writer.close()


def test_a_keyword_of_digits_is_found_in_the_texts_of_integer_columns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Integer columns with too many values to list (here: all of them) keep their values'
    texts side by side: a keyword of digits is found there, with no SQL scan (the query is
    answered from the row ids) and no Python per row, as the file grows, when a longer value
    comes (the texts are built again, wider) and past the rows kept (SQL's instr)."""
    monkeypatch.setattr(textsearch, "INT_VALUES_CAP", 1)
    writer = FlowWriter(tmp_path)
    first = sample_rows(400, seed=1)
    writer.write_batch(DNS_COLUMNS, first)
    store = SqliteStore(writer.db_path)
    bytes_at = DNS_COLUMNS.index("Bytes")
    later = [[*row] for row in sample_rows(100, seed=2)]
    later[30][bytes_at] = 12_345_678_901_234_567  # wider than every value before
    queries = [Query((text,)) for text in ("40", "443", "1764097458", "345678901234", "-1")]
    statements = traced_statements(monkeypatch)
    everything = as_objects(DNS_COLUMNS, first)
    for rows in (None, later):
        if rows is not None:
            writer.write_batch(DNS_COLUMNS, rows)
            everything = as_objects(DNS_COLUMNS, first + later)
        for query in queries:
            result, calls = search(store, query)
            assert calls == 0
            assert (result.records, result.matched) == (
                python(everything, query)[:1000], len(python(everything, query))), query
            newer, _ = search(store, query, after=450)
            assert newer.records == python(everything[450:], query)
    assert statements and not [sql for sql in statements if "instr(" in sql]
    index = store._text  # noqa: SLF001 - the texts kept
    assert index is not None
    assert index.digits.widths["Bytes"] == 17 + 1 + 17 // 4  # again, for the 17 digits
    assert len(python(everything, Query(("345678901234",)))) == 1
    # Past the rows kept, SQL answers with instr, the same rows.
    monkeypatch.setattr(textsearch, "DIGITS_MAX_ROWS", 100)
    statements.clear()
    result, calls = search(store, Query(("443",)))
    assert calls == 0 and result.records == python(everything, Query(("443",)))[:1000]
    assert [sql for sql in statements if "instr(" in sql]
    assert not index.digits.widths  # the memory let go
    writer.close()


@pytest.mark.parametrize("text", [":53", "/:53$/", ":80", "]:53", "/]:53$/", ":530"])
def test_a_port_after_a_colon_is_found_in_every_endpoint(tmp_path: Path, text: str) -> None:
    """':' and digits: in an endpoint's text with a port starting with the digits, or in an
    IPv6 address holding them itself (found for every address at once)."""
    rows = [[*row] for row in sample_rows(300, seed=3)]
    src, dst = DNS_COLUMNS.index("SrcAddr"), DNS_COLUMNS.index("DstAddr")
    sport, dport = DNS_COLUMNS.index("SrcPort"), DNS_COLUMNS.index("DstPort")
    for i, (addr, port) in enumerate([("fd00::53:1", 80), ("fd00::5", 53), ("198.18.0.53", 0),
                                      ("fd00::530", 0), ("198.18.0.5", 5300),
                                      ("fd00::1", 530)]):
        rows[10 * i][dst], rows[10 * i][dport] = addr, port
        rows[10 * i + 5][src], rows[10 * i + 5][sport] = addr, port
    store = SqliteStore(write(tmp_path, DNS_COLUMNS, rows).db_path)
    query = Query((text,))
    expected = python(as_objects(DNS_COLUMNS, rows), query)
    result, calls = search(store, query)
    assert (result.records, result.matched) == (expected, len(expected))
    assert calls == 0
    assert expected


def test_the_writer_marks_its_files_as_checked(tmp_path: Path) -> None:
    """Its values are validated: a reader need not look at each value's type."""
    writer = write(tmp_path, DNS_COLUMNS, sample_rows(3))
    conn = sqlite3.connect(writer.db_path)
    assert conn.execute("PRAGMA application_id").fetchone() == (0x6E6F6273,)
    conn.close()


def test_a_file_from_elsewhere_with_odd_values(tmp_path: Path) -> None:
    """Values the aggregator never writes: SQL answers them as the Python test does."""
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE flow (SrcAddr TEXT, SrcPort INTEGER, Proto INTEGER, "
                 "Bytes INTEGER, Interfaces TEXT, DnsName TEXT, Note)")
    odd_rows = [
        ("10.0.0.1", "http", 6, 1.5, '["eth0", 7]', "a.example", b"\x00\xff"),
        ("10.0.0.2", 443, 6.0, 10**15, "not json", b"blob", 2.5),
        ("10.0.0.3", 80, "udp", -7, '{"a": 1}', "ſ.example", None),
        (7, 0, None, None, "[]", "KELVIN", "10.0.0.1:http"),
    ]
    conn.executemany("INSERT INTO flow VALUES (?, ?, ?, ?, ?, ?, ?)", odd_rows)
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    records = store.search(None, 10).records[::-1]
    assert records[1]["Interfaces"] == "not json" and records[0]["Interfaces"] == ["eth0", 7]
    for text in ("http", "10.0.0.1:http", "1.5", "7", "-7", "1000", "udp", "tcp", "eth0,7",
                 "not json", "'a'", "b'blob'", "s.example", "kelvin", "2.5", "10.0.0.2:443",
                 "Interfaces=7", "Interfaces=not json", "Bytes=-7", "DnsName=KELVIN",
                 "SrcPort=443", r"/^1\d+$/", r"/^10\.0\.0\.\d:\d+$/", "/b'/", "/s\\.ex/"):
        query = Query((text,))
        result, calls = search(store, query)
        assert result.records == python(records, query), text
        assert calls == 0, text


async def test_the_aggregator_answers_chips_without_a_python_test_per_row(
        make_aggregator: AggregatorFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cluster capture's TUI: the SEARCH session passes the query to its store."""
    rows = sample_rows(900, seed=3)
    row = rows[600]  # a DNS flow: DstPort 53
    query = Query(("noerror", f"{row[DNS_COLUMNS.index('DstAddr')]}:53"))
    expected = python(as_objects(DNS_COLUMNS, rows), query)
    assert expected
    aggregator = await make_aggregator()
    peer = await Peer.connect(aggregator.port)
    await peer.hello()
    await peer.flows(1, DNS_COLUMNS, rows)
    assert (await peer.expect(FrameType.ACK))["seq"] == 1
    await peer.close()
    calls = 0
    matches = FilterChips.matches

    def counted(self: FilterChips, record: Any) -> bool:
        nonlocal calls
        calls += 1
        return matches(self, record)

    monkeypatch.setattr(FilterChips, "matches", counted)
    remote = RemoteStore("127.0.0.1", aggregator.port, TOKEN)
    try:
        got = await asyncio.to_thread(remote.search, None, 50, query=query)
    finally:
        remote.close()
    received = [{k: v for k, v in r.items() if k != "TimeReceived"} for r in got.records]
    assert (received, got.matched) == (expected, len(expected))  # the aggregator stamps rows
    assert calls == 0


def test_rows_without_values(tmp_path: Path) -> None:
    writer = write(tmp_path, ["DnsName", "Interface"], [[None, None], [None, "eth0"], [None, None]])
    store = SqliteStore(writer.db_path)
    cases = {((), ("DnsName",)): 0, (("eth",), ()): 1, (("Interface=ETH0",), ()): 1,
             (("/^$/",), ()): 2, (("/^eth0$/",), ("Interface",)): 1}
    records: list[dict[str, Any]] = [{}, {"Interface": "eth0"}, {}]
    for (texts, fields), matched in cases.items():
        result, _ = search(store, Query(texts, fields))
        assert result.matched == matched
        assert result.records == python(records, Query(texts, fields))


@pytest.mark.parametrize("small", [False, True])
def test_a_regex_out_of_time_is_reported_as_before(tmp_path: Path, small: bool,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    if small:  # the column is tested per row, by a function SQLite calls
        monkeypatch.setattr(textsearch, "TEXT_VALUES_CAP", 0)
    rows = sample_rows(20)
    rows[5][DNS_COLUMNS.index("Interface")] = "x" + "a" * 40 + "!"
    store = SqliteStore(write(tmp_path, DNS_COLUMNS, rows).db_path)
    assert analyze("x(a|aa)+$").line_local
    with pytest.raises(RegexTimeout, match=r"ran over 0\.2 s"):
        search(store, Query(("/x(a|aa)+$/",)))
    result, _ = search(store, Query(("eth0",)))  # the store still works
    assert result.matched == 20


# -- what a regex requires ----------------------------------------------------------------


@pytest.mark.parametrize(("source", "shape"), [
    (r"^10\.128\.1\d\.", RegexShape((("10.128.1", "."),), True, False)),
    (r":53$", RegexShape(((":53",),), True, True)),
    ("nodejs-[a-z]+-[0-9a-f]{4}", RegexShape((("nodejs-", "-"),), True, False)),
    ("a|b", RegexShape((("a",), ("b",)), True, False)),
    ("colou?r", RegexShape((("colo", "r"),), True, False)),
    ("ab+c", RegexShape((("ab", "c"),), True, False)),
    ("x{2,}y{0,3}z", RegexShape((("x", "z"),), True, False)),
    ("a.b", RegexShape((("a", "b"),), True, True)),
    ("[[:alpha:]]+:", RegexShape(((":",),), True, True)),
    (r"a\sb", RegexShape((("a", "b"),), False, False)),
    ("a[^x]b", RegexShape((("a", "b"),), False, True)),
    ("(?=x)abc", RegexShape((("abc",),), False, False)),
    (r"\Aabc", RegexShape((("abc",),), False, False)),
    (r"\d+", RegexShape(None, False, False)),
    ("a|\\d", RegexShape(None, False, False)),
    ("(?:abc){e<=1}", textsearch.UNSURE),
    ("(?i)abc", textsearch.UNSURE),
    (r"\x41bc", textsearch.UNSURE),
    (r"(a)\1", textsearch.UNSURE),
    (r"\p{L}x", textsearch.UNSURE),
    ("a{,}b", textsearch.UNSURE),
])
def test_analyze(source: str, shape: RegexShape) -> None:
    regex.compile(source, regex.IGNORECASE | regex.MULTILINE | regex.VERSION0)  # valid
    assert analyze(source) == shape
    assert required_literals(source) == shape.literals


# -- the same rows as Python, for any records and chips -----------------------------------

_CHARS = "aAsSſkKKİiıIΣσςßÉé:[]-.,0123 \n_"
_TEXT = st.text(st.sampled_from(_CHARS), max_size=5)
_ADDRS = st.sampled_from(["198.18.0.12", "10.0.0.1", "fd00:198:18::12", "::1", "Kſ:1", "", "ß"])
_PORTS = st.sampled_from([0, 53, 443, 5353, 65535, -1, 2**40])
_COLUMNS: dict[str, st.SearchStrategy[Any]] = {
    "SrcAddr": _ADDRS, "DstAddr": _ADDRS, "SrcPort": _PORTS, "DstPort": _PORTS,
    "Proto": st.sampled_from([1, 6, 17, 58, 132, 99]),
    "Bytes": st.integers(-(2**63), 2**63 - 1) | st.sampled_from([0, 53, 1000]),
    "Interface": _TEXT, "DnsName": _TEXT, "DnsFlagsResponseCode": _TEXT,
    "Interfaces": st.lists(_TEXT | st.integers(-3, 60), max_size=3),
    "IfDirections": st.lists(st.integers(0, 1), max_size=2),
}
_KEYWORDS = ["s", "ſ", "k", "K", "i", "İ", "σ", "ß", ":5", ":53", "]:", "[fd", "0:5", "tcp", "icmp",
             "12:", "-1", "53", ",", "é"]
_REGEXES = [r"^fd00:", r"\]:53$", "s", "ſ", "k", r"^\d+$", r"[sk]:", r"a.s", "ß|é", r"3\s0",
            r":\d+", r"(?:ab)+", "Σ$", r"^.$", "1,", "^$", r":53$"]
_FIELDS = ["Interfaces={}", "DnsFlagsResponseCode={}", "Interface={}", "SrcAddr={}"]


@st.composite
def captures(draw: st.DrawFn) -> tuple[list[str], Rows]:
    names = draw(st.lists(st.sampled_from(sorted(_COLUMNS)), min_size=1, unique=True))
    row = st.tuples(*(st.none() | _COLUMNS[name] for name in names)).map(list)
    return names, draw(st.lists(row, min_size=1, max_size=12))


@st.composite
def queries(draw: st.DrawFn, records: list[dict[str, Any]]) -> Query:
    texts: list[str] = []
    for _ in range(draw(st.integers(1, 2))):
        kind = draw(st.sampled_from(["piece", "keyword", "regex", "piece-regex", "field"]))
        lines = [line for r in records for line in record_text(r).split("\n") if line]
        if kind in ("piece", "piece-regex", "field") and lines:
            line = draw(st.sampled_from(lines))
            start = draw(st.integers(0, len(line) - 1))
            piece = line[start:start + draw(st.integers(1, 6))]
            if kind == "piece":
                text = piece
            elif kind == "field":
                text = draw(st.sampled_from(_FIELDS)).format(piece)
            else:
                anchor = draw(st.sampled_from(["", "^", "$"]))
                escaped = regex.escape(piece)
                text = f"/{anchor}{escaped}/" if anchor == "^" else f"/{escaped}{anchor}/"
        elif kind == "regex":
            text = "/" + draw(st.sampled_from(_REGEXES)) + "/"
        else:
            text = draw(st.sampled_from(_KEYWORDS))
        texts.append(text)
    fields = draw(st.sampled_from([(), ("DnsName",), ("Bytes", "Interfaces")]))
    return Query(tuple(texts), fields)


@contextmanager
def caps(mode: str) -> Iterator[None]:
    """``small``: every column is tested row by row (LIKE, functions, ``instr``, port
    ranges); ``rows``: regexes on endpoints run on rows read by id, never on pairs."""
    with pytest.MonkeyPatch.context() as patch:
        if mode == "small":
            patch.setattr(textsearch, "TEXT_VALUES_CAP", 1)
            patch.setattr(textsearch, "INT_VALUES_CAP", 1)
        if mode != "normal":
            patch.setattr(textsearch, "ENDPOINT_PAIRS", 0)
        yield


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), capture=captures(), mode=st.sampled_from(["normal", "small", "rows"]),
       typed=st.booleans(), after=st.integers(0, 3))
def test_sql_finds_the_rows_python_finds(tmp_path_factory: pytest.TempPathFactory,
                                          data: st.DataObject, capture: tuple[list[str], Rows],
                                          mode: str, typed: bool, after: int) -> None:
    names, rows = capture
    writer = write(tmp_path_factory.mktemp("text"), names, rows)
    if not typed:  # as an older capture: each value's type is checked
        untyped(writer.db_path)
    # In the file's column order: a regex that spans lines sees the fields in that order.
    records = [{name: r[name] for name in FIELD_NAMES if name in r}
               for r in as_objects(names, rows)]
    with caps(mode):
        store = SqliteStore(writer.db_path)
        for _ in range(3):
            query = data.draw(queries(records))
            try:
                query.parse()
            except ValueError:  # a piece that is not a chip (blank, a bad regex)
                continue
            expected = python(records[after:], query)
            try:
                result, _ = search(store, query, limit=4, after=after)
            except RegexTimeout:  # pragma: no cover - the patterns here are simple
                continue
            assert (result.records, result.matched) == (expected[:4], len(expected)), query
