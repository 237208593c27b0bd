"""Capture stores: files written by the real FlowWriter, read back and searched."""

from __future__ import annotations

import builtins
import json
import os
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from agg_helpers import DNS_COLUMNS, as_objects, sample_rows, sqlite_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netobserv_tui.aggregator.writers import FlowWriter
from netobserv_tui.model.errors import UsageError
from netobserv_tui.model.fields import BY_NAME, FIELD_NAMES
from netobserv_tui.store import (
    FlowStore,
    JsonStore,
    Narrowing,
    SearchResult,
    SqliteStore,
    StoreError,
    Totals,
    open_store,
)
from netobserv_tui.store import base as store_module
from netobserv_tui.store.chips import FilterChips

Rows = list[list[Any]]


def write_capture(out: Path, *batches: Rows, close: bool = True) -> FlowWriter:
    """A capture of DNS_COLUMNS batches written by the real writer (closed unless asked)."""
    writer = FlowWriter(out)
    for rows in batches:
        writer.write_batch(DNS_COLUMNS, rows)
    if close:
        writer.close()
    return writer


def newest_first(rows: Rows) -> list[dict[str, Any]]:
    return as_objects(DNS_COLUMNS, rows)[::-1]


def chips(*texts: str) -> FilterChips:
    result = FilterChips()
    for text in texts:
        result, error = result.add(text)
        assert error is None, error
    return result


def dns(record: Any) -> bool:
    return bool(record.get("DstPort") == 53)


def both(writer: FlowWriter) -> list[FlowStore]:
    return [SqliteStore(writer.db_path), JsonStore(writer.json_path)]


# ----------------------------------------------------------------- records and searches


@pytest.mark.parametrize("kind", ["sqlite", "json"])
def test_records_are_what_was_written_newest_first(tmp_path: Path, kind: str) -> None:
    rows = sample_rows(500)
    writer = write_capture(tmp_path, rows[:300], rows[300:])
    store = open_store(writer.db_path if kind == "sqlite" else writer.json_path)
    assert (store.kind, store.incomplete) == (kind, False)
    everything = store.search(None, 10_000)
    assert everything == SearchResult(newest_first(rows), 500, 500, 500)
    # Through the predicate path too (another code path in SqliteStore).
    assert store.search(lambda r: True, 10_000) == everything
    # sample_rows' start times grow with the row: newest first is descending time.
    assert [r["TimeFlowStartMs"] for r in everything.records] == sorted(
        (r[DNS_COLUMNS.index("TimeFlowStartMs")] for r in rows), reverse=True)


@pytest.mark.parametrize("kind", ["sqlite", "json"])
def test_limit_caps_the_records_not_the_count(tmp_path: Path, kind: str) -> None:
    rows = sample_rows(120)
    writer = write_capture(tmp_path, rows)
    store = open_store(writer.db_path if kind == "sqlite" else writer.json_path)
    expected = newest_first(rows)
    assert store.search(None, 7) == SearchResult(expected[:7], 120, 120, 120)
    assert store.search(None, 0) == SearchResult([], 120, 120, 120)
    dns_rows = [r for r in expected if dns(r)]
    assert len(dns_rows) == 40
    assert store.search(dns, 5) == SearchResult(dns_rows[:5], 40, 120, 120)
    assert store.search(dns, 0) == SearchResult([], 40, 120, 120)
    assert store.search(dns, 1000) == SearchResult(dns_rows, 40, 120, 120)


@pytest.mark.parametrize("kind", ["sqlite", "json"])
@pytest.mark.parametrize("texts", [
    ("DstPort=53",), ("udp",), ("nxdomain",), ("198.18.1.7",), ("/^198\\.18\\.0\\.1\\d$/",),
    ("tcp", "IfDirection=1"), ("Interfaces=eth0", "DnsFlagsResponseCode=noerror"),
])
def test_filter_chips_match_counts(tmp_path: Path, kind: str, texts: tuple[str, ...]) -> None:
    rows = sample_rows(400, seed=3)
    writer = write_capture(tmp_path, rows)
    store = open_store(writer.db_path if kind == "sqlite" else writer.json_path)
    filters = chips(*texts)
    expected = [r for r in newest_first(rows) if filters.matches(r)]
    result = store.search(filters.matches, 25)
    assert result == SearchResult(expected[:25], len(expected), 400, 400)


def test_after_returns_only_rows_written_since(tmp_path: Path) -> None:
    """A live capture: the store follows a writer that keeps appending, column sets change."""
    writer = FlowWriter(tmp_path)
    first, second = sample_rows(100, seed=1), sample_rows(60, seed=2)
    writer.write_batch(DNS_COLUMNS, first)
    store = SqliteStore(writer.db_path)
    start = store.search(dns, 1000)
    assert start == SearchResult([r for r in newest_first(first) if dns(r)], 34, 100, 100)

    writer.write_batch(DNS_COLUMNS, second)
    # New columns later in the capture (DnsName) and a column that gets NULLs (Bytes).
    third = [["example.test", None, 53], [None, 7, 53], ["other.test", 9, 80]]
    writer.write_batch(["DnsName", "Bytes", "DstPort"], third)
    newer = newest_first(first + second)[:60]
    expected_new = [{"DnsName": "other.test", "Bytes": 9, "DstPort": 80},
                    {"Bytes": 7, "DstPort": 53}, {"DnsName": "example.test", "DstPort": 53},
                    *newer]
    assert store.search(None, 1000, after=start.last_id) == SearchResult(
        expected_new, 63, 63, 163)
    got = store.search(dns, 1000, after=start.last_id)
    assert got == SearchResult([r for r in expected_new if dns(r)], 22, 63, 163)
    assert store.search(dns, 1000, after=got.last_id) == SearchResult([], 0, 0, 163)
    # A full search covers everything the capture has seen.
    full = store.search(dns, 1000)
    assert full.records == [r for r in expected_new + newest_first(first) if dns(r)]
    assert (full.matched, full.scanned, full.last_id) == (56, 163, 163)
    assert store.search(lambda r: "DnsName" in r, 10) == SearchResult(
        [expected_new[0], expected_new[2]], 2, 163, 163)
    writer.close()
    assert store.search(None, 1, after=162) == SearchResult([expected_new[0]], 1, 1, 163)


def test_json_after_uses_positions(tmp_path: Path) -> None:
    rows = sample_rows(50)
    writer = write_capture(tmp_path, rows)
    store = JsonStore(writer.json_path)
    expected = newest_first(rows)
    assert store.search(None, 100, after=45) == SearchResult(expected[:5], 5, 5, 50)
    assert store.search(dns, 100, after=45) == SearchResult(
        [r for r in expected[:5] if dns(r)], 2, 5, 50)
    assert store.search(None, 100, after=50) == SearchResult([], 0, 0, 50)
    assert store.search(None, 100, after=99) == SearchResult([], 0, 0, 50)


def test_the_sqlite_and_json_stores_agree(tmp_path: Path) -> None:
    rows = sample_rows(250, seed=5)
    writer = write_capture(tmp_path, rows[:100], rows[100:])
    sqlite_store, json_store = both(writer)
    for match in (None, dns, chips("udp").matches, chips("/^eth0$/").matches):
        for limit, after in ((1000, 0), (10, 0), (10, 240), (0, 100)):
            assert sqlite_store.search(match, limit, after=after) == \
                json_store.search(match, limit, after=after)
    assert sqlite_store.totals() == json_store.totals()


def test_totals(tmp_path: Path) -> None:
    rows = sample_rows(300)
    writer = write_capture(tmp_path, rows)
    col = DNS_COLUMNS.index
    expected = Totals(
        flows=300,
        bytes=sum(r[col("Bytes")] for r in rows),
        packets=sum(r[col("Packets")] for r in rows),
        first_ms=min(r[col("TimeFlowStartMs")] for r in rows),
        last_ms=max(r[col("TimeFlowEndMs")] for r in rows),
    )
    for store in both(writer):
        assert store.totals() == expected
    # Rows without the counters count as flows and add nothing.
    other = FlowWriter(tmp_path / "other")
    other.write_batch(["SrcAddr", "Bytes"], [["198.18.0.1", 5], ["198.18.0.2", None]])
    other.close()
    for store in both(other):
        assert store.totals() == Totals(2, 5, 0, None, None)


def test_an_empty_capture(tmp_path: Path) -> None:
    writer = write_capture(tmp_path)
    for store in both(writer):
        assert store.search(None, 100) == SearchResult([], 0, 0, 0)
        assert store.search(dns, 100) == SearchResult([], 0, 0, 0)
        assert store.totals() == Totals(0, 0, 0, None, None)
        assert store.incomplete is False


def test_sparse_and_tricky_values(tmp_path: Path) -> None:
    writer = FlowWriter(tmp_path)
    batches: list[tuple[list[str], Rows]] = [
        (["Bytes", "SrcAddr"], [[10, "198.18.0.1"], [None, "198.18.0.2"]]),
        (["DnsName", "Packets", "Interfaces", "IfDirections"],
         [["quote \" \\ new\nline é 名前 🙂", 3, ["eth0", "veth 1"], [0, 1]],
          ["nul\x00byte", None, None, []]]),
        (["DnsName"], [[None]]),  # a row without any value
    ]
    expected: list[dict[str, Any]] = []
    for columns, rows in batches:
        writer.write_batch(columns, rows)
        expected += as_objects(columns, rows)
    writer.close()
    expected.reverse()
    assert expected[0] == {}
    for store in both(writer):
        assert store.search(None, 100).records == expected
        assert store.search(lambda r: True, 100).records == expected
        assert store.search(lambda r: r == {}, 100) == SearchResult([{}], 1, 5, 5)
        assert store.search(chips("Interfaces=veth 1").matches, 100).records == [expected[2]]


def test_a_capture_of_rows_without_values(tmp_path: Path) -> None:
    writer = FlowWriter(tmp_path)
    writer.write_batch(["DnsName", "Bytes"], [[None, None], [None, None]])
    writer.close()
    for store in both(writer):
        assert store.search(lambda r: True, 10) == SearchResult([{}, {}], 2, 2, 2)


def test_records_returned_belong_to_the_caller(tmp_path: Path) -> None:
    rows = sample_rows(10)
    writer = write_capture(tmp_path, rows)
    for store in both(writer):
        for match in (None, dns):
            result = store.search(match, 10)
            result.records[0]["Interfaces"].append("mutated")
            result.records[0]["Bytes"] = -1
            again = store.search(match, 10)
            assert again.records == [r for r in newest_first(rows) if match is None or dns(r)]


def test_writer_closes_cleanly_after_live_searches(tmp_path: Path) -> None:
    """The store holds no connection between calls, so the writer can leave WAL mode."""
    writer = write_capture(tmp_path, sample_rows(100), close=False)
    store = SqliteStore(writer.db_path)
    store.search(dns, 10)
    store.totals()
    writer.close()
    assert sorted(p.name for p in writer.db_path.parent.iterdir()) == [
        writer.db_path.name, writer.json_path.name]
    assert sqlite_json(writer.db_path, "PRAGMA journal_mode") == [{"journal_mode": "delete"}]
    assert store.search(None, 1).matched == 100


def test_close(tmp_path: Path) -> None:
    writer = write_capture(tmp_path, sample_rows(5))
    for store in both(writer):
        store.close()
        store.close()
        with pytest.raises(ValueError, match="closed"):
            store.search(None, 1)
        with pytest.raises(ValueError, match="closed"):
            store.totals()


# ----------------------------------------------------------------- incomplete JSON


def test_json_of_a_running_capture_is_read_as_incomplete(tmp_path: Path) -> None:
    rows = sample_rows(80)
    writer = write_capture(tmp_path, rows[:30], rows[30:], close=False)
    store = open_store(writer.json_path)
    assert (store.kind, store.incomplete) == ("json", True)
    assert store.search(None, 1000) == SearchResult(newest_first(rows), 80, 80, 80)
    assert store.totals().flows == 80
    writer.close()
    assert open_store(writer.json_path).incomplete is False


@pytest.mark.parametrize("tail", [
    b"", b",", b",\n", b",\n  \n", b'\n,{"SrcAddr":"198.18.0.1","DnsName":"cut',
    b',\n{"SrcAddr":"198.18.0.1","Interfaces":["eth0"]', b",\n{",
])
def test_incomplete_json_tails(tmp_path: Path, tail: bytes) -> None:
    rows = sample_rows(20)
    writer = write_capture(tmp_path, rows, close=False)
    with open(writer.json_path, "ab") as fh:
        fh.write(tail)
    store = JsonStore(writer.json_path)
    assert store.incomplete is True
    assert store.search(None, 100).records == newest_first(rows)


def test_an_incomplete_json_without_objects(tmp_path: Path) -> None:
    writer = write_capture(tmp_path, close=False)
    store = open_store(writer.json_path)
    assert (store.kind, store.incomplete) == ("json", True)
    assert store.search(None, 10) == SearchResult([], 0, 0, 0)


def test_json_from_another_tool(tmp_path: Path) -> None:
    path = tmp_path / "flows.json"
    path.write_text('[{"SrcAddr": "198.18.0.1", "DnsName": null, "Bytes": 3},\n'
                    ' {"Bytes": null}]')
    store = JsonStore(path)
    assert store.incomplete is False
    assert store.search(None, 10).records == [{}, {"SrcAddr": "198.18.0.1", "Bytes": 3}]


# ----------------------------------------------------------------- sniffing and errors


def test_open_store_sniffs_the_content_not_the_suffix(tmp_path: Path) -> None:
    rows = sample_rows(30)
    writer = write_capture(tmp_path, rows)
    db_as_json = writer.db_path.rename(tmp_path / "capture.json")
    json_as_db = writer.json_path.rename(tmp_path / "capture.db")
    no_suffix = tmp_path / "capture"
    no_suffix.write_bytes(db_as_json.read_bytes())
    for path, kind in ((db_as_json, "sqlite"), (json_as_db, "json"), (no_suffix, "sqlite")):
        store = open_store(path)
        assert isinstance(store, SqliteStore if kind == "sqlite" else JsonStore)
        assert (store.kind, store.path) == (kind, path)
        assert store.search(None, 100).records == newest_first(rows)
    assert open_store(str(no_suffix)).path == no_suffix


def test_store_error_is_a_usage_error() -> None:
    assert issubclass(StoreError, UsageError)
    assert StoreError("x").exit_code == 2


def expect_error(path: Path, *fragments: str) -> str:
    with pytest.raises(StoreError) as info:
        open_store(path)
    message = str(info.value)
    assert message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_error_missing_file(tmp_path: Path) -> None:
    expect_error(tmp_path / "nope.db", "no such file", "check the path",
                 "<output>/flow/<timestamp>.db")
    with pytest.raises(StoreError, match="no such file"):
        SqliteStore(tmp_path / "nope.db")
    with pytest.raises(StoreError, match="no such file"):
        JsonStore(tmp_path / "nope.json")


def test_error_directory(tmp_path: Path) -> None:
    expect_error(tmp_path, "is a directory", "give a capture file", "<output>/flow/")
    writer = write_capture(tmp_path / "out", sample_rows(3))
    expect_error(tmp_path / "out", "is a directory", f"such as {writer.db_path}")
    expect_error(writer.db_path.parent, f"such as {writer.db_path}")


def test_error_permission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = write_capture(tmp_path, sample_rows(3))
    if os.geteuid() == 0:  # root reads anything: deny it the way the kernel would
        real_open = builtins.open

        def denied(file: Any, *args: Any, **kwargs: Any) -> Any:
            if Path(file) in (writer.db_path, writer.json_path):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(store_module, "open", denied, raising=False)
    else:
        writer.db_path.chmod(0)
        writer.json_path.chmod(0)
    for path in (writer.db_path, writer.json_path):
        expect_error(path, "permission denied", "sudo", f"chmod a+r {path}")


def test_error_sqlite_without_flow_table(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE something (x)")
    conn.commit()
    conn.close()
    expect_error(path, "without a 'flow' table", "not a netobserv capture")


def test_error_damaged_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    expect_error(path, "damaged SQLite file", "open its .json file instead")


@pytest.mark.parametrize(("content", "fragments"), [
    (b"", ("empty file", "not a netobserv capture")),
    (b"  \n", ("empty file",)),
    (b'{"SrcAddr": "198.18.0.1"}', ("holds an object, not an array of flow objects",)),
    (b"42\n", ("holds a number, not an array",)),
    (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00pcapng", ("neither an SQLite database nor a JSON array",)),
    (b'[{"Bytes": 1}, 3]', ("item 2 of the array is a number, not a flow object",)),
    (b'[\n{"Bytes": 1},\n["x"]\n]', ("item 2 of the array is an array",)),
    (b'[\n{"Bytes": 1},\n{"Bytes": }\n]\n', ("invalid JSON at line 3, column 11",
                                             "beyond a missing closing bracket", ".db")),
    (b'[\n{"Bytes": 1},\n{"Bytes" 2},\n{"Bytes": 3},\n', ("invalid JSON at line 3, column 10",)),
    (b'[\n{"Bytes": 1},\n{"DnsName": "a\xffb"}\n]\n', ("invalid JSON at line 3, column 15",
                                                      "invalid UTF-8")),
])
def test_error_not_a_json_capture(tmp_path: Path, content: bytes,
                                  fragments: tuple[str, ...]) -> None:
    path = tmp_path / "capture.json"
    path.write_bytes(content)
    expect_error(path, *fragments)


# ----------------------------------------------------------------- property-based

_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=6)


def _value(kind: type) -> st.SearchStrategy[Any]:
    if kind is int:
        return st.integers(-(2**63), 2**63 - 1)
    if kind is str:
        return _TEXT
    return st.lists(st.one_of(st.integers(-5, 5), _TEXT), max_size=3)


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[str], Rows]:
    columns = draw(st.lists(st.sampled_from(FIELD_NAMES), min_size=1, max_size=6, unique=True))
    row = st.tuples(*(st.one_of(st.none(), _value(BY_NAME[c].kind)) for c in columns))
    return columns, draw(st.lists(row.map(list), min_size=1, max_size=5))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.lists(batches(), min_size=1, max_size=4), limit=st.integers(0, 6),
       after=st.integers(0, 8))
def test_any_capture_reads_back_the_same_from_both_files(
        tmp_path_factory: pytest.TempPathFactory, data: list[tuple[list[str], Rows]],
        limit: int, after: int) -> None:
    writer = FlowWriter(tmp_path_factory.mktemp("prop"))
    expected: list[dict[str, Any]] = []
    for columns, rows in data:
        writer.write_batch(columns, rows)
        expected += as_objects(columns, rows)
    writer.close()
    window = expected[after:][::-1]

    def odd(record: Any) -> bool:
        return len(json.dumps(record, sort_keys=True)) % 2 == 1

    for store in both(writer):
        assert store.search(None, limit, after=after) == SearchResult(
            window[:limit], len(window), len(window), len(expected))
        hits = [r for r in window if odd(r)]
        assert store.search(odd, limit, after=after) == SearchResult(
            hits[:limit], len(hits), len(window), len(expected))


def test_the_messages_name_no_internal_types(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(b"[1]")
    message = expect_error(path)
    assert not re.search(r"\b(int|dict|list|NoneType)\b", message), message


@pytest.mark.parametrize(
    ("texts", "fields"),
    [
        (("DstPort=53",), ()),
        (("Proto=udp", "DstPort=53"), ()),
        (("DstPort=80", "noerror"), ()),
        ((), ("DnsId", "DnsLatencyMs")),
        (("DstPort=53",), ("DnsId",)),
        (("SrcPort=1",), ()),  # no row: empty in SQL already
    ],
)
def test_narrowing_in_sql_changes_nothing_but_the_rows_scanned(
    tmp_path: Path, texts: tuple[str, ...], fields: tuple[str, ...]
) -> None:
    rows = sample_rows(600, seed=7)
    store = SqliteStore(write_capture(tmp_path, rows[:300], rows[300:]).db_path)
    filter_chips = chips(*texts)

    def match(record: Any) -> bool:
        has_data = not fields or any(record.get(f) is not None for f in fields)
        return has_data and filter_chips.matches(record)

    narrow = Narrowing(fields, filter_chips.equalities())
    plain = store.search(match, 50)
    narrowed = store.search(match, 50, narrow=narrow)
    assert narrowed.records == plain.records
    assert narrowed.matched == plain.matched == sum(map(match, as_objects(DNS_COLUMNS, rows)))
    assert plain.scanned == 600
    assert narrowed.scanned < 600  # every case excludes rows in SQL
    later = store.search(match, 50, after=450, narrow=narrow)
    assert later.records == [r for r in plain.records if r["TimeFlowStartMs"] >= 1_764_097_458_450]


def test_narrowing_on_a_field_the_file_lacks_matches_nothing(tmp_path: Path) -> None:
    store = SqliteStore(write_capture(tmp_path, sample_rows(20)).db_path)
    for narrow in (Narrowing(("TimeFlowRttNs",)), Narrowing(equals=(("TcpRetransmits", 0),))):
        result = store.search(lambda record: True, 10, narrow=narrow)
        assert (result.records, result.matched, result.scanned) == ([], 0, 0)
    # The JSON store may ignore the narrowing: match decides alone, with the same result.
    json_store = JsonStore(write_capture(tmp_path / "j", sample_rows(20)).json_path)
    result = json_store.search(lambda r: "TimeFlowRttNs" in r, 10,
                               narrow=Narrowing(("TimeFlowRttNs",)))
    assert result.matched == 0


@pytest.mark.parametrize(
    ("texts", "fields"),
    [(("DstPort=53",), ()), (("Proto=tcp", "IfDirection=1"), ()), ((), ("DnsId",)),
     (("DstPort=53",), ("DnsLatencyMs",)), (("SrcPort=1",), ())],
)
def test_a_complete_narrowing_pages_in_sql_with_the_same_result(
    tmp_path: Path, texts: tuple[str, ...], fields: tuple[str, ...]
) -> None:
    rows = sample_rows(500, seed=11)
    store = SqliteStore(write_capture(tmp_path, rows).db_path)
    filter_chips = chips(*texts)
    assert filter_chips.only_equalities()

    def match(record: Any) -> bool:
        has_data = not fields or any(record.get(f) is not None for f in fields)
        return has_data and filter_chips.matches(record)

    expected = store.search(match, 40)
    paged = store.search(lambda record: False, 40,  # must not even be called
                         narrow=Narrowing(fields, filter_chips.equalities(), complete=True))
    assert paged.records == expected.records
    assert paged.matched == expected.matched == sum(map(match, as_objects(DNS_COLUMNS, rows)))
    newer = store.search(match, 40, after=400,
                         narrow=Narrowing(fields, filter_chips.equalities(), complete=True))
    assert newer.records == store.search(match, 40, after=400).records


def test_only_equalities() -> None:
    assert chips().only_equalities() and chips("DstPort=53", "Proto=udp").only_equalities()
    assert not chips("DstPort=53", "tcp").only_equalities()
    assert not chips("Interface=eth0").only_equalities()  # text: compared in Python
