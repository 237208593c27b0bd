"""FlowWriter and batch validation: files read back with the sqlite3 CLI and json.load."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pytest
from agg_helpers import DNS_COLUMNS, as_objects, load_json, sample_rows, sqlite_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netobserv_tui.aggregator import writers
from netobserv_tui.aggregator.batch import Batch, BatchError, parse_flows
from netobserv_tui.aggregator.writers import TIMESTAMP_FORMAT, FlowWriter, recover
from netobserv_tui.model.fields import BY_NAME, FIELD_NAMES, FIELDS, INDEXED

ARTICLE_QUERY = (
    "SELECT DnsLatencyMs, DnsFlagsResponseCode, DnsId, DstAddr, DstPort, Interface, Proto, "
    "SrcAddr, SrcPort, Bytes, Packets FROM flow WHERE DnsLatencyMs >10 LIMIT 10;"
)


def db_rows(db: str | Path, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    cols = ", ".join(columns)
    return sqlite_json(db, f"SELECT {cols} FROM flow ORDER BY rowid")


def expected_db(columns: tuple[str, ...], rows: list[list[Any]]) -> list[dict[str, Any]]:
    """sqlite3 -json output for rows: lists come back as their JSON text."""
    def text(v: Any) -> Any:
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False) \
            if isinstance(v, list) else v

    return [{c: text(v) for c, v in zip(columns, row, strict=True)} for row in rows]


def test_file_names_follow_the_utc_timestamp(tmp_path: Path) -> None:
    started = datetime(2026, 11, 25, 19, 4, 18, tzinfo=UTC)
    first = FlowWriter(tmp_path, started)
    second = FlowWriter(tmp_path, started)
    assert started.strftime(TIMESTAMP_FORMAT) == "2026_11_25T19_04_18Z"
    assert first.json_path == tmp_path / "flow" / "2026_11_25T19_04_18Z.json"
    assert first.db_path == tmp_path / "flow" / "2026_11_25T19_04_18Z.db"
    assert second.json_path.name == "2026_11_25T19_04_18Z-1.json"
    first.close()
    second.close()


def test_round_trip_exact_values(tmp_path: Path) -> None:
    writer = FlowWriter(tmp_path)
    rows_a, rows_b = sample_rows(300, seed=1), sample_rows(200, seed=2)
    assert writer.write_batch(DNS_COLUMNS, rows_a) == 300
    assert writer.write_batch(DNS_COLUMNS, rows_b) == 200
    summary = writer.close()
    assert summary["flows"] == 500 and summary["batches"] == 2
    assert load_json(summary["json"]) == as_objects(DNS_COLUMNS, rows_a + rows_b)
    assert db_rows(summary["db"], DNS_COLUMNS) == expected_db(DNS_COLUMNS, rows_a + rows_b)


def test_schema_has_every_field_in_order_and_the_indexes(tmp_path: Path) -> None:
    summary = FlowWriter(tmp_path).close()
    info = sqlite_json(summary["db"], "SELECT name, type FROM pragma_table_info('flow')")
    assert [(c["name"], c["type"]) for c in info] == [(f.name, f.sql) for f in FIELDS]
    indexes = sqlite_json(summary["db"], "SELECT name FROM pragma_index_list('flow')")
    indexed = {
        tuple(c["name"] for c in sqlite_json(
            summary["db"], f"SELECT name FROM pragma_index_info('{ix['name']}')"))
        for ix in indexes
    }
    assert indexed == set(INDEXED)
    assert load_json(summary["json"]) == []


def test_columns_in_any_order_and_subsets(tmp_path: Path) -> None:
    writer = FlowWriter(tmp_path)
    writer.write_batch(["Bytes", "SrcAddr"], [[10, "198.18.0.1"], [None, "198.18.0.2"]])
    writer.write_batch(["DnsName", "Packets"], [["example.test", 3]])
    summary = writer.close()
    assert load_json(summary["json"]) == [
        {"Bytes": 10, "SrcAddr": "198.18.0.1"}, {"SrcAddr": "198.18.0.2"},
        {"DnsName": "example.test", "Packets": 3}]
    assert sqlite_json(summary["db"], "SELECT SrcAddr, Bytes, DnsName, Packets FROM flow") == [
        {"SrcAddr": "198.18.0.1", "Bytes": 10, "DnsName": None, "Packets": None},
        {"SrcAddr": "198.18.0.2", "Bytes": None, "DnsName": None, "Packets": None},
        {"SrcAddr": None, "Bytes": None, "DnsName": "example.test", "Packets": 3}]


TRICKY = [
    '","DnsId":null', '{"DnsId":null,', "quote \" backslash \\ end\\", "new\nline\ttab",
    "é ü ß 名前 🙂", "%s %d %%", ":None", ',"X":None', "",
]


def test_tricky_strings_and_nulls_survive(tmp_path: Path) -> None:
    columns = ("DnsName", "SrcAddr", "DnsId", "Interfaces", "IfDirections")
    rows: list[list[Any]] = [
        [text, None, None if i % 2 else i, None if i % 3 == 0 else [text, "eth0"], [0, 1]]
        for i, text in enumerate(TRICKY)
    ]
    rows.append([None, None, None, None, None])
    writer = FlowWriter(tmp_path)
    writer.write_batch(columns, rows)
    summary = writer.close()
    assert load_json(summary["json"]) == as_objects(columns, rows)
    assert db_rows(summary["db"], columns) == expected_db(columns, rows)


def test_nul_characters_are_stored_whole(tmp_path: Path) -> None:
    # The sqlite3 CLI prints text as C strings (cut at NUL), so compare lengths and hex.
    writer = FlowWriter(tmp_path)
    writer.write_batch(["DnsName"], [["nul\x00byte"]])
    summary = writer.close()
    assert load_json(summary["json"]) == [{"DnsName": "nul\x00byte"}]
    assert sqlite_json(summary["db"], "SELECT length(CAST(DnsName AS BLOB)) AS n, "
                                      "hex(DnsName) AS h FROM flow") == [
        {"n": 8, "h": b"nul\x00byte".hex().upper()}]


def test_article_query_runs_with_the_sqlite3_cli(tmp_path: Path) -> None:
    writer = FlowWriter(tmp_path)
    writer.write_batch(DNS_COLUMNS, sample_rows(90, seed=7))
    db = writer.close()["db"]
    out = subprocess.run(["sqlite3", db, ARTICLE_QUERY], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    expected = []
    for row in as_objects(DNS_COLUMNS, sample_rows(90, seed=7)):
        if row.get("DnsLatencyMs", 0) > 10:
            expected.append("|".join(str(row.get(c, "")) for c in (
                "DnsLatencyMs", "DnsFlagsResponseCode", "DnsId", "DstAddr", "DstPort",
                "Interface", "Proto", "SrcAddr", "SrcPort", "Bytes", "Packets")))
    assert len(expected) >= 10
    assert out == expected[:10]


def test_json_is_a_valid_prefix_while_open_and_recover_finishes_it(tmp_path: Path) -> None:
    writer = FlowWriter(tmp_path)
    rows = sample_rows(50)
    writer.write_batch(DNS_COLUMNS, rows[:20])
    writer.write_batch(DNS_COLUMNS, rows[20:])
    # As a crash would leave them: everything flushed, no closing bracket, no indexes.
    text = writer.json_path.read_text()
    assert json.loads(text + "]") == as_objects(DNS_COLUMNS, rows)
    assert sqlite_json(writer.db_path, "SELECT count(*) AS n FROM flow") == [{"n": 50}]
    recover(writer.json_path, writer.db_path)
    assert load_json(writer.json_path) == as_objects(DNS_COLUMNS, rows)
    assert len(sqlite_json(writer.db_path, "SELECT name FROM pragma_index_list('flow')")) == 7


def test_recover_drops_a_torn_last_line(tmp_path: Path) -> None:
    writer = FlowWriter(tmp_path)
    rows = sample_rows(10)
    writer.write_batch(DNS_COLUMNS, rows)
    with open(writer.json_path, "ab") as fh:
        fh.write(b',\n{"SrcAddr":"198.18.0.1","DnsName":"cut')
    recover(writer.json_path, writer.db_path)
    assert load_json(writer.json_path) == as_objects(DNS_COLUMNS, rows)
    recover(writer.json_path, writer.db_path)  # idempotent
    assert load_json(writer.json_path) == as_objects(DNS_COLUMNS, rows)


def test_a_failed_json_write_rolls_the_batch_back(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    writer = FlowWriter(tmp_path)
    rows = sample_rows(30)
    writer.write_batch(DNS_COLUMNS, rows[:10])

    def disk_full(data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "_append_json", disk_full)
    with pytest.raises(OSError, match="No space"):
        writer.write_batch(DNS_COLUMNS, rows[10:])
    monkeypatch.undo()
    summary = writer.close()
    assert summary["flows"] == 10
    assert load_json(summary["json"]) == as_objects(DNS_COLUMNS, rows[:10])
    assert sqlite_json(summary["db"], "SELECT count(*) AS n FROM flow") == [{"n": 10}]


def test_close_is_idempotent_and_writes_after_close_fail(tmp_path: Path) -> None:
    writer = FlowWriter(tmp_path)
    writer.write_batch(DNS_COLUMNS, sample_rows(3))
    first = writer.close()
    assert writer.close() == first
    with pytest.raises(ValueError, match="closed"):
        writer.write_batch(DNS_COLUMNS, sample_rows(1))
    assert len(load_json(first["json"])) == 3


def test_unwritable_output_leaves_no_files(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError):
        FlowWriter(blocker / "out")


# ----------------------------------------------------------------- WAL while writing


def side_files(db: str | Path) -> list[str]:
    """The ``-wal``/``-shm``/``-journal`` files next to ``db``."""
    db = Path(db)
    return sorted(p.name[len(db.name):] for p in db.parent.iterdir()
                  if p.name.startswith(db.name + "-"))


def read_only(db: str | Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{Path(db).resolve().as_uri()}?mode=ro", uri=True,
                           check_same_thread=False)


def test_close_leaves_one_self_contained_file(tmp_path: Path) -> None:
    writer = FlowWriter(tmp_path)
    rows = sample_rows(200)
    writer.write_batch(DNS_COLUMNS, rows)
    assert sqlite_json(writer.db_path, "PRAGMA journal_mode") == [{"journal_mode": "wal"}]
    assert side_files(writer.db_path) == ["-shm", "-wal"]
    summary = writer.close()
    assert side_files(summary["db"]) == []
    assert sqlite_json(summary["db"], "PRAGMA journal_mode") == [{"journal_mode": "delete"}]
    # The .db alone holds everything: rows and indexes.
    alone = tmp_path / "alone" / "copy.db"
    alone.parent.mkdir()
    shutil.copy(summary["db"], alone)
    assert db_rows(alone, DNS_COLUMNS) == expected_db(DNS_COLUMNS, rows)
    assert len(sqlite_json(alone, "SELECT name FROM pragma_index_list('flow')")) == 7


def test_a_reader_does_not_block_the_writer(tmp_path: Path) -> None:
    writer = FlowWriter(tmp_path)
    rows = sample_rows(300)
    src_port = DNS_COLUMNS.index("SrcPort")
    writer.write_batch(DNS_COLUMNS, rows[:100])
    writer._conn.execute("PRAGMA busy_timeout=0")  # a lock conflict raises SQLITE_BUSY at once
    reader = read_only(writer.db_path)
    try:
        cursor = reader.execute("SELECT SrcPort FROM flow ORDER BY rowid")
        first = cursor.fetchmany(10)  # the read transaction stays open until the last row
        assert writer.write_batch(DNS_COLUMNS, rows[100:200]) == 100
        assert writer.write_batch(DNS_COLUMNS, rows[200:]) == 100
        rest = cursor.fetchall()
        # The reader sees the rows committed when its read began, whole and only those.
        assert [r[0] for r in first + rest] == [row[src_port] for row in rows[:100]]
        assert reader.execute("SELECT count(*) FROM flow").fetchone() == (300,)
        assert [r[0] for r in reader.execute("SELECT SrcPort FROM flow ORDER BY rowid")] == [
            row[src_port] for row in rows]
    finally:
        reader.close()
    summary = writer.close()
    assert side_files(summary["db"]) == []
    assert db_rows(summary["db"], DNS_COLUMNS) == expected_db(DNS_COLUMNS, rows)


def test_close_waits_for_a_reader_to_leave(tmp_path: Path) -> None:
    writer = FlowWriter(tmp_path)
    writer.write_batch(DNS_COLUMNS, sample_rows(50))
    reader = read_only(writer.db_path)
    assert reader.execute("SELECT count(*) FROM flow").fetchone() == (50,)
    timer = threading.Timer(0.3, reader.close)
    started = time.monotonic()
    timer.start()
    try:
        summary = writer.close()
    finally:
        timer.join()
    assert time.monotonic() - started >= 0.3
    assert side_files(summary["db"]) == []
    assert sqlite_json(summary["db"], "PRAGMA journal_mode") == [{"journal_mode": "delete"}]


def test_a_reader_that_stays_leaves_the_file_in_wal_mode(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(writers, "WAL_EXIT_SECONDS", 0.1)
    writer = FlowWriter(tmp_path)
    rows = sample_rows(50)
    writer.write_batch(DNS_COLUMNS, rows)
    reader = read_only(writer.db_path)
    try:
        reader.execute("SELECT count(*) FROM flow").fetchone()
        with caplog.at_level(logging.WARNING, logger=writers.__name__):
            summary = writer.close()
        assert "left in WAL mode" in caplog.text
        assert reader.execute("SELECT count(*) FROM flow").fetchone() == (50,)
    finally:
        reader.close()
    # Complete and indexed all the same; recover() then makes it one file.
    assert db_rows(summary["db"], DNS_COLUMNS) == expected_db(DNS_COLUMNS, rows)
    assert sqlite_json(summary["db"], "PRAGMA journal_mode") == [{"journal_mode": "wal"}]
    recover(summary["json"], summary["db"])
    assert side_files(summary["db"]) == []
    assert sqlite_json(summary["db"], "PRAGMA journal_mode") == [{"journal_mode": "delete"}]
    assert db_rows(summary["db"], DNS_COLUMNS) == expected_db(DNS_COLUMNS, rows)


CRASHING_WRITER = textwrap.dedent("""
    import os, sys
    from agg_helpers import DNS_COLUMNS, sample_rows
    from netobserv_tui.aggregator.writers import FlowWriter
    writer = FlowWriter(sys.argv[1])
    rows = sample_rows(500)
    for i in range(0, 500, 100):
        writer.write_batch(DNS_COLUMNS, rows[i:i + 100])
    print(writer.db_path, writer.json_path, flush=True)
    os._exit(0)  # no close, no atexit: as a killed aggregator
""")


def test_recover_after_a_crash_folds_the_wal_in(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", CRASHING_WRITER, str(tmp_path)], env=env,
                         capture_output=True, text=True, check=True, timeout=60).stdout
    db, json_path = out.split()
    rows = sample_rows(500)
    assert side_files(db) == ["-shm", "-wal"]
    assert Path(db + "-wal").stat().st_size > 0
    recover(json_path, db)
    assert side_files(db) == []
    assert sqlite_json(db, "PRAGMA journal_mode") == [{"journal_mode": "delete"}]
    assert db_rows(db, DNS_COLUMNS) == expected_db(DNS_COLUMNS, rows)
    assert len(sqlite_json(db, "SELECT name FROM pragma_index_list('flow')")) == 7
    assert load_json(json_path) == as_objects(DNS_COLUMNS, rows)


# ----------------------------------------------------------------- validation rules

GOOD = {"seq": 1, "columns": ["SrcAddr", "Bytes", "Interfaces"],
        "rows": [["198.18.0.1", 10, ["eth0"]], [None, None, None]]}

INVALID = [
    ({"columns": GOOD["columns"], "rows": GOOD["rows"]}, "seq must be an integer"),
    ({**GOOD, "seq": "1"}, "seq must be an integer"),
    ({**GOOD, "seq": True}, "seq must be an integer"),
    ({**GOOD, "columns": []}, "columns must be a non-empty"),
    ({**GOOD, "columns": "SrcAddr"}, "columns must be a non-empty"),
    ({**GOOD, "columns": ["SrcAddr", 3, "Interfaces"]}, "every column name must be a string"),
    ({**GOOD, "columns": ["SrcAddr", "Nope", "Interfaces"]}, "unknown column 'Nope'"),
    ({**GOOD, "columns": ["SrcAddr", "Bytes", "SrcAddr"]}, "column 'SrcAddr' appears twice"),
    ({**GOOD, "rows": {"a": 1}}, "rows must be a JSON array"),
    ({**GOOD, "rows": [["198.18.0.1", 10, []], "row"]}, "every row must be a JSON array"),
    ({**GOOD, "rows": [["198.18.0.1", 10]]}, "a row has 2 values for 3 columns"),
    ({**GOOD, "rows": [["198.18.0.1", 10, [], 4]]}, "a row has 4 values for 3 columns"),
    ({**GOOD, "rows": [[1, 10, []]]}, "column 'SrcAddr': a value is an integer"),
    ({**GOOD, "rows": [["a", "10", []]]}, "column 'Bytes': a value is a string"),
    ({**GOOD, "rows": [["a", True, []]]}, "column 'Bytes': a value is a boolean"),
    ({**GOOD, "rows": [["a", 1.5, []]]}, "column 'Bytes': a value is a number with a fraction"),
    ({**GOOD, "rows": [["a", 2**63, []]]}, "column 'Bytes': a value does not fit in 64 bits"),
    ({**GOOD, "rows": [["a", -(2**63) - 1, []]]},
     "column 'Bytes': a value does not fit in 64 bits"),
    ({**GOOD, "rows": [["a", 1, "eth0"]]}, "column 'Interfaces': a value is a string"),
    ({**GOOD, "rows": [["a", 1, [1.5]]]}, "list elements must be strings or integers"),
    ({**GOOD, "rows": [["a", 1, [True]]]}, "list elements must be strings or integers"),
    ({**GOOD, "rows": [["a", 1, [["x"]]]]}, "list elements must be strings or integers"),
    ({**GOOD, "rows": [[{"x": 1}, 1, []]]}, "column 'SrcAddr': a value is an object"),
]


@pytest.mark.parametrize(("payload", "reason"), INVALID, ids=[r for _, r in INVALID])
def test_each_validation_rule(payload: dict[str, Any], reason: str) -> None:
    with pytest.raises(BatchError, match=re.escape(reason)):
        parse_flows(payload)
    if "boolean" not in reason and "True" not in repr(payload):
        with pytest.raises(BatchError, match=re.escape(reason)):
            parse_flows(payload, no_bools=True)


_CELL = (st.none() | st.integers(-(2**64), 2**64) | st.text(max_size=4)
         | st.lists(st.integers(0, 3) | st.text(max_size=2) | st.none(), max_size=2)
         | st.floats(allow_nan=False) | st.dictionaries(st.text(max_size=2), st.integers(),
                                                        max_size=1))


@settings(max_examples=300, deadline=None)
@given(columns=st.lists(st.sampled_from(FIELD_NAMES), min_size=1, max_size=5, unique=True),
       data=st.data())
def test_fast_checks_give_the_reference_verdict(columns: list[str], data: st.DataObject) -> None:
    """Without booleans, the one-call column checks agree with the reference rules."""
    rows = data.draw(st.lists(st.lists(_CELL, min_size=len(columns), max_size=len(columns)),
                              max_size=4))
    payload = {"seq": 1, "columns": columns, "rows": rows}
    try:
        expected: Any = parse_flows(payload)[1]
    except BatchError as exc:
        expected = str(exc)
    try:
        got: Any = parse_flows(payload, no_bools=True)[1]
    except BatchError as exc:
        got = str(exc)
    if isinstance(expected, Batch):
        assert isinstance(got, Batch)
        assert (got.columns, got.values, got.nullable) == (
            expected.columns, expected.values, expected.nullable)
    else:
        assert got == expected


def test_valid_batch_is_column_major() -> None:
    seq, batch = parse_flows(GOOD)
    assert seq == 1 and batch.nrows == 2
    assert batch.values == [("198.18.0.1", None), (10, None), (["eth0"], None)]
    assert batch.nullable == frozenset({0, 1, 2})
    assert batch.total("Bytes") == 10 and batch.total("Packets") == 0
    stamped = batch.with_column("TimeReceived", 5)
    assert stamped.rows() == [("198.18.0.1", 10, ["eth0"], 5), (None, None, None, 5)]
    assert stamped.rows(last=1) == [(None, None, None, 5)]
    assert parse_flows({**GOOD, "rows": []})[1].nrows == 0


# ----------------------------------------------------------------- property-based

#: Text without surrogates (the server rejects them as they cannot be stored as UTF-8).
_NO_SURROGATES: Final = st.characters(exclude_categories=["Cs"])


def _value(kind: type) -> st.SearchStrategy[Any]:
    if kind is int:
        return st.integers(-(2**63), 2**63 - 1)
    if kind is str:
        # No surrogates (the server rejects them) and no NUL (the sqlite3 CLI cuts there).
        return st.text(_NO_SURROGATES.filter(lambda c: c != "\x00"), max_size=12)
    return st.lists(st.one_of(st.integers(-5, 5), st.text(_NO_SURROGATES, max_size=4)),
                    max_size=3)


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[str], list[list[Any]]]:
    columns = draw(st.lists(st.sampled_from(FIELD_NAMES), min_size=1, max_size=8, unique=True))
    row = st.tuples(*(st.one_of(st.none(), _value(BY_NAME[c].kind)) for c in columns))
    rows = draw(st.lists(row.map(list), min_size=1, max_size=6))
    return columns, rows


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.lists(batches(), min_size=1, max_size=3))
def test_any_valid_batch_round_trips(tmp_path_factory: pytest.TempPathFactory,
                                     data: list[tuple[list[str], list[list[Any]]]]) -> None:
    writer = FlowWriter(tmp_path_factory.mktemp("prop"))
    expected_json: list[dict[str, Any]] = []
    for columns, rows in data:
        Batch.from_rows(columns, rows)  # valid by construction
        writer.write_batch(columns, rows)
        expected_json += as_objects(columns, rows)
    summary = writer.close()
    assert load_json(summary["json"]) == expected_json
    everything = sqlite_json(summary["db"], f"SELECT {', '.join(FIELD_NAMES)} FROM flow")
    expected_db_rows = []
    for columns, rows in data:
        for row in rows:
            full: dict[str, Any] = dict.fromkeys(FIELD_NAMES)
            for c, v in zip(columns, row, strict=True):
                full[c] = json.dumps(v, separators=(",", ":"), ensure_ascii=False) \
                    if isinstance(v, list) else v
            expected_db_rows.append(full)
    assert everything == expected_db_rows


def test_the_journal_is_wal_with_synchronous_normal(tmp_path: Path) -> None:
    """WAL with synchronous=NORMAL: commits never wait for an fsync, and a power loss can
    lose the last batches but not corrupt the file (synchronous=OFF could)."""
    writer = FlowWriter(tmp_path)
    try:
        conn = writer._conn
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA synchronous").fetchone() == (1,)  # 1 = NORMAL
    finally:
        writer.close()


def test_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    """Flows and DNS names are private: 0700 folders, 0600 files, also with umask 022."""
    previous = os.umask(0o022)
    try:
        writer = FlowWriter(tmp_path / "out")
        writer.write_batch(list(DNS_COLUMNS), sample_rows(3))
        modes = {p.name[-7:]: stat_mode(p) for p in writer.flow_dir.iterdir()}
        writer.close()
    finally:
        os.umask(previous)
    assert stat_mode(tmp_path / "out") == stat_mode(tmp_path / "out" / "flow") == 0o700
    assert sorted(modes.values()) == [0o600] * 4 and len(modes) == 4  # .db, -wal, -shm, .json
    assert {stat_mode(p) for p in (tmp_path / "out" / "flow").iterdir()} == {0o600}


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777
