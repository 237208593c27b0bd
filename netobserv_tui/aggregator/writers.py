"""Flow files: ``<output>/flow/<ts>.db`` (SQLite) and ``<output>/flow/<ts>.json`` (JSON array).

The writer is the aggregator's hot path, so it works on whole column-major batches
(:class:`~.batch.Batch`) and keeps the per-record work inside C code (``zip``, ``map``,
``str.__mod__``, the C string encoder, sqlite3's ``executemany``) instead of Python loops:

* SQLite: the schema is created through ``sqlite_utils`` (one column per field, canonical
  order, SQL types from the model), but rows go through one prepared ``INSERT`` per
  distinct column tuple with ``executemany``, in one transaction per batch.  The ``INDEXED``
  indexes are built when the file is closed: maintaining seven B-trees on random keys while
  inserting costs several times the insert itself (measured on one core: ~50k rows/s with
  live indexes against ~450k rows/s without; building them at the end takes ~3 s per
  million rows).  A file left by a crash is complete (with its ``-wal`` file, see below) but
  unindexed; :func:`recover` indexes it.  The file is marked as holding validated values
  only (``PRAGMA application_id``, :data:`~netobserv_tui.store.base.TYPED_APPLICATION_ID`):
  the readers' live filters then need not check each value's type.
* JSON: ``[`` at open, each batch appended as objects separated by ``",\\n"`` and flushed,
  ``]`` at close, so a crash leaves at most the closing bracket missing (:func:`recover`
  appends it).  Rows are formatted with a ``%`` template per column tuple; integers format
  as they are, strings that need no escaping (most: addresses, MACs, interface names; the
  validator flags them, :attr:`~.batch.Batch.plain`) are copied between quotes written in
  the template, other strings go through the C encoder, lists through a small cache since
  interface lists repeat.  The ``"Name":null`` members of absent values are cut from the
  batch text by two regular-expression passes.  This is ~3x cheaper than ``json.dumps`` of
  a filtered dict per row, and cheaper than ``orjson.dumps`` of a dict per row, whose cost
  is building the dicts.

SQLite journal and durability: ``journal_mode=WAL`` with ``synchronous=NORMAL`` while the
capture runs, so that readers (the TUI searches the file being written) never block a batch's
COMMIT and a COMMIT never waits for a reader.  A COMMIT writes to the ``-wal`` file without an
fsync, so every committed batch is in the operating system's page cache: a crash of the
aggregator (even SIGKILL) loses nothing that was acknowledged.  The ``-wal`` file is synced
before each checkpoint copies it into the database, so a power loss can lose the last
batches but never corrupts the file (with ``synchronous=OFF`` it could).  :meth:`FlowWriter.close`
builds the indexes, then switches back to ``journal_mode=DELETE``, which folds the ``-wal``
file into the database: the kept ``.db`` is one self-contained file.  Leaving WAL needs the
file to itself, so close retries while a reader has it open (a search takes well under a
second) and, past :data:`WAL_EXIT_SECONDS`, logs a warning and leaves the file in WAL mode.
A crash leaves ``<ts>.db-wal`` (and ``-shm``) next to the ``.db``: the committed rows not
yet checkpointed are in the ``-wal`` file only, so the two must stay together (copying the
``.db`` alone loses them).  Any sqlite3 that opens the ``.db`` replays the ``-wal``;
:func:`recover` does so, adds the indexes and switches to ``DELETE``.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, Final

import sqlite_utils

from ..model.fields import BY_NAME, FIELD_NAMES, FIELDS, INDEXED
from ..model.private import create_private, make_private_dirs
from ..store.base import TYPED_APPLICATION_ID
from .batch import Batch

log = logging.getLogger(__name__)

#: File name stem of a capture: the UTC start time, e.g. ``2026_11_25T19_04_18Z``.
TIMESTAMP_FORMAT: Final = "%Y_%m_%dT%H_%M_%SZ"
TABLE: Final = "flow"
#: Page cache of the SQLite connection in KiB: bounded; inserts without indexes need little.
CACHE_KIB: Final = 16 * 1024
#: Distinct lists kept by the list encoder cache before it starts over.
LIST_CACHE_SIZE: Final = 4096
#: Row templates kept (one per column tuple and set of plain string columns).
PLAN_CACHE_SIZE: Final = 64
#: How long :meth:`FlowWriter.close` retries leaving WAL mode while readers hold the file.
WAL_EXIT_SECONDS: Final = 5.0
#: The same for :func:`recover`: one attempt, as it expects no other user of the file.
RECOVER_WAL_EXIT_SECONDS: Final = 0.0

_ENCODE: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
# Removing null members from encoded objects.  A JSON string can never contain an unescaped
# '"', so ',"Name":null' and '{"Name":null' can only be members, never string contents; list
# fields hold only str/int, so these patterns cannot match inside a list either.  The first
# pass removes every null member that follows another member, the second a leading one.
_NULL_MEMBER: Final = re.compile(r',"[A-Za-z0-9_]+":None')
_LEADING_NULL: Final = re.compile(r'\{"[A-Za-z0-9_]+":None,?')


def index_name(columns: Sequence[str]) -> str:
    """Stable index names so that :func:`recover` can add missing ones idempotently."""
    return "idx_flow_" + "_".join(columns)


def create_schema(db: sqlite_utils.Database) -> None:
    """Create the ``flow`` table (every field, canonical order, SQL types from the model)."""
    db.table(TABLE).create({f.name: f.sql for f in FIELDS}, column_order=list(FIELD_NAMES))


def create_indexes(db: sqlite_utils.Database) -> None:
    """Create the ``INDEXED`` indexes (idempotent)."""
    table = db.table(TABLE)
    for columns in INDEXED:
        table.create_index(list(columns), index_name=index_name(columns), if_not_exists=True)


class _ListCache(dict[tuple[Any, ...], str]):
    """JSON text of list values keyed by their tuple; hits stay in C (``dict.__getitem__``)."""

    def __missing__(self, key: tuple[Any, ...]) -> str:
        if len(self) >= LIST_CACHE_SIZE:
            self.clear()
        text = self[key] = _ENCODE(list(key))
        return text


class _Plan:
    """What a column tuple (and its plain string columns) needs, computed once."""

    __slots__ = ("sql", "template", "list_idx", "text_idx")

    def __init__(self, columns: tuple[str, ...], plain: frozenset[int]) -> None:
        quoted = ", ".join(f'"{c}"' for c in columns)
        marks = ", ".join("?" * len(columns))
        self.sql = f"INSERT INTO {TABLE} ({quoted}) VALUES ({marks})"
        # Field names are plain identifiers: no '%' or '"' to escape in the template.
        self.template = "{" + ",".join(
            f'"{c}":"%s"' if i in plain else f'"{c}":%s' for i, c in enumerate(columns)) + "}"
        self.list_idx = frozenset(i for i, c in enumerate(columns) if BY_NAME[c].kind is list)
        #: Columns that need encoding for JSON (strings that are not plain, lists); integers
        #: and plain strings format as they are.
        self.text_idx = tuple(i for i, c in enumerate(columns)
                              if BY_NAME[c].kind is not int and i not in plain)


class FlowWriter:
    """Owns one capture's SQLite and JSON files; not thread-safe, use from one thread at a time.

    Batches must already be validated (:class:`~.batch.Batch` does it): a batch is then
    either written whole or, on an I/O error, rolled back in SQLite and cut from the JSON file.
    """

    def __init__(self, output: Path | str, started: datetime | None = None, *,
                 keep_wal: bool = False) -> None:
        self.flow_dir = Path(output) / "flow"
        #: Close in WAL mode (``-wal`` emptied, not deleted): for a process that may not
        #: delete files where it writes (see ``privileges.py``); :func:`settle_wal` ends it.
        self.keep_wal = keep_wal
        make_private_dirs(self.flow_dir)
        stem = _unique_stem(self.flow_dir, started or datetime.now(UTC))
        self.db_path = (self.flow_dir / f"{stem}.db").resolve()
        self.json_path = (self.flow_dir / f"{stem}.json").resolve()
        self.flows = 0
        self.batches = 0
        self._plans: dict[tuple[tuple[str, ...], frozenset[int]], _Plan] = {}
        self._lists = _ListCache()
        self._closed = False
        self._first = True
        self._summary: dict[str, Any] = {}
        # The JSON file first: creating it fails on an unwritable directory before an
        # empty database is left behind. Both files 0600 (SQLite gives its -wal and -shm
        # files the database file's mode).
        self._json = create_private(self.json_path)
        try:
            self._json.write(b"[\n")
            self._json.flush()
            create_private(self.db_path).close()
            self._conn = sqlite3.connect(
                self.db_path, isolation_level=None, check_same_thread=False
            )
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":  # e.g. a file system without shared memory for the -shm file
                log.warning("%s: journal_mode=WAL refused (%s): readers of the file may "
                            "delay batch commits", self.db_path.name, mode)
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            create_schema(sqlite_utils.Database(self._conn))
            # Batches are validated: readers need not check each value's type.
            self._conn.execute(f"PRAGMA application_id={TYPED_APPLICATION_ID}")
        except BaseException:
            self._json.close()
            raise

    @property
    def paths(self) -> dict[str, str]:
        return {"json": str(self.json_path), "db": str(self.db_path)}

    def write_batch(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        """Validate and write rows given row-wise; returns the number of rows written."""
        return self.write(Batch.from_rows(list(columns), [list(r) for r in rows]))

    def write(self, batch: Batch) -> int:
        """Write one validated batch to both files; returns the number of rows written.

        SQLite first inside a transaction, then the JSON text, then COMMIT: if either write
        fails the transaction is rolled back and the JSON file is cut back to where it was.
        """
        if self._closed:
            raise ValueError(f"{self.db_path.name}: the writer is closed")
        if not batch.nrows:
            return 0
        plan = self._plan(batch.columns, batch.plain)
        text_cols, sql_cols = self._encode_columns(batch, plan)
        data = _objects(plan.template, text_cols, bool(batch.nullable)).encode()
        conn = self._conn
        conn.execute("BEGIN")
        try:
            conn.executemany(plan.sql, zip(*sql_cols, strict=True))
            self._append_json(data)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        self.flows += batch.nrows
        self.batches += 1
        return batch.nrows

    def _plan(self, columns: tuple[str, ...], plain: frozenset[int]) -> _Plan:
        plan = self._plans.get((columns, plain))
        if plan is None:
            if len(self._plans) >= PLAN_CACHE_SIZE:
                self._plans.clear()
            plan = self._plans[columns, plain] = _Plan(columns, plain)
        return plan

    def _encode_columns(self, batch: Batch, plan: _Plan) -> tuple[list[Any], list[Any]]:
        """Per column: what the JSON template formats, and the SQLite values.

        Integer and plain string columns go to the template as they are: ``%s`` renders an
        int exactly as JSON does and a None as ``None``, which :func:`_objects` removes like
        a null (a plain column holds no None, and its quotes are in the template).
        """
        text_cols: list[Any] = list(batch.values)
        sql_cols: list[Any] = list(batch.values)
        lists = self._lists
        for i in plan.text_idx:
            col = batch.values[i]
            is_list = i in plan.list_idx
            texts: list[str | None]
            if i in batch.nullable:
                texts = [v if v is None else lists[tuple(v)] if is_list else encode_basestring(v)
                         for v in col]
            elif is_list:
                texts = list(map(lists.__getitem__, map(tuple, col)))
            else:
                texts = list(map(encode_basestring, col))
            text_cols[i] = texts
            if is_list:
                sql_cols[i] = texts
        return text_cols, sql_cols

    def _append_json(self, data: bytes) -> None:
        """Append a batch's objects and flush, so the file on disk is always one ']' short."""
        pos = self._json.tell()
        try:
            if not self._first:
                self._json.write(b",\n")
            self._json.write(data)
            self._json.flush()
        except BaseException:
            # Cut a partial write so the file stays a valid prefix of the array.
            self._json.seek(pos)
            self._json.truncate()
            raise
        self._first = False

    def close(self) -> dict[str, Any]:
        """Close the JSON array, index the database, leave WAL mode, close it; idempotent.

        Returns ``{"json": path, "db": path, "flows": n, "batches": n, "index_seconds": s}``.
        """
        if self._closed:
            return dict(self._summary)
        self._closed = True
        try:
            self._json.write(b"\n]\n")
        finally:
            self._json.close()
        started = time.monotonic()
        try:
            create_indexes(sqlite_utils.Database(self._conn))
            index_seconds = time.monotonic() - started
            if self.keep_wal:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            else:
                leave_wal(self._conn, self.db_path, WAL_EXIT_SECONDS)
        finally:
            self._conn.close()
        self._summary = {
            **self.paths,
            "flows": self.flows,
            "batches": self.batches,
            "index_seconds": round(index_seconds, 3),
        }
        return dict(self._summary)


def _objects(template: str, text_cols: list[Any], nulls: bool = True) -> str:
    """Format rows from encoded columns and drop null members (see the module docstring)."""
    text = ",\n".join(map(template.__mod__, zip(*text_cols, strict=True)))
    if nulls and ":None" in text:
        text = _LEADING_NULL.sub("{", _NULL_MEMBER.sub("", text))
    return text


def _unique_stem(flow_dir: Path, started: datetime) -> str:
    """The timestamp stem, with a ``-N`` suffix if a capture of the same second exists."""
    stem = started.astimezone(UTC).strftime(TIMESTAMP_FORMAT)
    candidate, n = stem, 1
    while (flow_dir / f"{candidate}.db").exists() or (flow_dir / f"{candidate}.json").exists():
        candidate, n = f"{stem}-{n}", n + 1
    return candidate


def leave_wal(conn: sqlite3.Connection, path: Path | str, timeout: float) -> bool:
    """Switch ``conn``'s database to ``journal_mode=DELETE``; True when it is done.

    The switch checkpoints the ``-wal`` file into the database and deletes it.  It needs
    the file to itself and SQLite does not call the busy handler for it, so it is retried
    until ``timeout`` while another connection (a reader) has the file open; then a warning
    is logged and the file stays in WAL mode: still complete, with its ``-wal`` file.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            mode = "wal"
        if mode != "wal":
            return True
        if time.monotonic() >= deadline:
            log.warning("%s: still open by another process after %.1f s, left in WAL mode: "
                        "keep its -wal file next to it; sqlite3 reads both", Path(path).name,
                        timeout)
            return False
        time.sleep(0.02)


def settle_wal(db_path: Path | str) -> bool:
    """Take a database closed with ``keep_wal`` out of WAL mode (its ``-wal`` and ``-shm``
    files go); True when done, or when there was nothing to do."""
    if not Path(f"{db_path}-wal").exists():
        return True
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        return leave_wal(conn, db_path, WAL_EXIT_SECONDS)
    finally:
        conn.close()


def recover(json_path: Path | str, db_path: Path | str) -> None:
    """Finish files left by an aggregator that died: close the JSON array, fold the SQLite
    ``-wal`` file into the database, add the indexes.

    Every newline in the JSON file is structural (the encoder escapes newlines inside
    strings) and each object sits on its own line, so a write cut by a crash can only have
    damaged the last line: it is dropped if it does not parse.  Rows of that last batch that
    did reach the JSON file may be missing from SQLite, whose transaction was rolled back.
    Opening the database replays its ``-wal`` file (the batches committed since the last
    checkpoint); the indexes are built, then ``journal_mode=DELETE`` checkpoints and deletes
    it (see :func:`leave_wal`: if another process still has the file open, it stays in WAL
    mode and a warning says so).  Safe on files that were closed properly: it changes
    nothing then.
    """
    jpath = Path(json_path)
    data = jpath.read_bytes()
    if not data.endswith(b"\n]\n"):
        head, _, last = data.rpartition(b"\n")
        try:
            complete = isinstance(json.loads(last), dict)
        except ValueError:
            complete = False
        kept = data if complete else head.rstrip(b",")
        with open(jpath, "rb+") as fh:
            fh.seek(len(kept))
            fh.truncate()
            fh.write(b"\n]\n")
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        create_indexes(sqlite_utils.Database(conn))
        leave_wal(conn, db_path, RECOVER_WAL_EXIT_SECONDS)
    finally:
        conn.close()
