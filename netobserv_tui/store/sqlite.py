"""A capture's SQLite file (``<ts>.db``, table ``flow``), read and searched while the
aggregator writes it or after.  Serves ``netobserv open``, the TUI's live filters during a
local capture, and the aggregator's SEARCH sessions during a cluster capture.

:class:`SqliteStore` reads the file while the aggregator writes it (WAL mode: neither waits
for the other).  It opens a read-only connection per call and closes it before returning:
an idle open connection would stop the writer from leaving WAL mode at close
(:func:`~netobserv_tui.aggregator.writers.leave_wal`).  Building a dict per row is the cost,
so a search first counts, once per file and then for new rows only, the non-NULL values of
each column (one ``count()`` scan: 0.1 s per 100,000 rows): columns that are NULL in every
row are not selected, a row is turned into a dict by ``dict(zip(...))`` in C, and only the
columns that hold NULLs somewhere are checked, only in rows that hold one.  List texts are
decoded once per distinct text per search.  Measured on 100,000 rows (26 of 57 columns
present, ``tests/bench/bench_store.py``): a predicate that matches nothing costs 0.36 s
(0.49 s for the first search, which counts the columns) against 0.51 s for a bare
``SELECT * ... ORDER BY rowid DESC`` fetchall of the same rows; most of it is the sqlite3
module making the Python values.  A keyword chip adds its own 0.28 s (the record's text).
``match=None`` needs no scan: SQL counts the rows and fetches only ``limit`` of them.

Given the query ``match`` was compiled from (the TUI and the aggregator's SEARCH sessions
pass it), the chips are answered without building a record per row (:mod:`.textsearch`:
distinct values and their row ids, kept per column, or SQL conditions): the matches are
known by their row ids, and only the ``limit`` newest are fetched and built; a regex that
may match across two fields runs in Python on the rows holding its literals only.  Tens
of milliseconds per search at 100,000 rows instead of 0.5-1 s (the first text search of a
store reads the columns' distinct values, about as long as one search of before):
``tests/bench/bench_filter.py``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from netobserv_tui.model.fields import BY_NAME

from .base import (
    CAPTURES_HINT,
    SQLITE_MAGIC,
    Match,
    Narrowing,
    Record,
    SearchResult,
    StoreError,
    Totals,
    read_head,
)
from .textsearch import TextIndex

if TYPE_CHECKING:
    from .query import Query

try:
    import orjson

    _loads: Callable[[bytes | str], Any] = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency; json is the fallback
    _loads = json.loads

TABLE: Final = "flow"
#: Rows fetched per ``fetchmany``: measured flat from 128 to 1000, slower above.
CHUNK_ROWS: Final = 256
#: How long a read waits for a lock the writer holds (taking a checkpoint, leaving WAL).
BUSY_TIMEOUT_S: Final = 5.0
#: Distinct list texts decoded per search before the cache starts over.
LIST_CACHE_SIZE: Final = 4096



def _decode_list(text: Any) -> Any:
    """A list column's JSON text decoded; a value that is not JSON text is kept as stored."""
    try:
        return _loads(text)
    except (ValueError, TypeError):
        return text


class _ListCache(dict[Any, Any]):
    """Decoded list texts; a hit stays in C (``dict.__getitem__``).  Values are shared."""

    def __missing__(self, text: Any) -> Any:
        if len(self) >= LIST_CACHE_SIZE:
            self.clear()
        value = self[text] = _decode_list(text)
        return value


@dataclass(slots=True)
class _Counts:
    """Non-NULL values per column over the rows with ``rowid <= upto``."""

    upto: int = 0
    rows: int = 0
    per_column: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a search selects and how it builds a record from a row."""

    #: ``SELECT`` of the columns that hold a value somewhere, newest first, rowid range.
    sql: str
    names: tuple[str, ...]
    #: ``(index, name)`` of the selected columns that are NULL in some rows.
    nullable: tuple[tuple[int, str], ...]
    #: ``(index, name)`` of the selected list columns (JSON text to decode).
    lists: tuple[tuple[int, str], ...]


def _everything(record: Mapping[str, Any]) -> bool:
    return True


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SqliteStore:
    """The ``flow`` table of a capture's SQLite file, opened read-only; see the module."""

    kind: str = "sqlite"
    incomplete: bool = False

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._closed = False
        head = read_head(self.path, len(SQLITE_MAGIC))
        if head != SQLITE_MAGIC:
            raise StoreError(f"{self.path}: not an SQLite database: not a netobserv capture; "
                             f"{CAPTURES_HINT}")
        self._uri = self.path.resolve().as_uri() + "?mode=ro"
        with self._connect() as conn:
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({TABLE})")]
        if not columns:
            raise StoreError(f"{self.path}: SQLite database without a '{TABLE}' table: not a "
                             f"netobserv capture; {CAPTURES_HINT}")
        self._columns: tuple[str, ...] = tuple(columns)
        self._list_columns = frozenset(
            c for c in columns if c in BY_NAME and BY_NAME[c].kind is list)
        self._all_sql = (f"SELECT {', '.join(map(_quote, columns))} FROM {TABLE} "
                         "WHERE rowid > ? AND rowid <= ? ORDER BY rowid DESC LIMIT ?")
        self._counts = _Counts(per_column=[0] * len(columns))
        self._text = TextIndex(self._columns, self._list_columns, _decode_list)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection for one call, closed after it; sqlite3 errors as StoreError."""
        if self._closed:
            raise ValueError(f"{self.path.name}: the store is closed")
        try:
            conn = sqlite3.connect(self._uri, uri=True, timeout=BUSY_TIMEOUT_S,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise _sqlite_error(self.path, exc) from exc
        try:
            yield conn
        except sqlite3.Error as exc:
            raise _sqlite_error(self.path, exc) from exc
        finally:
            conn.close()

    def search(self, match: Match | None, limit: int, *, after: int = 0,
               narrow: Narrowing | None = None, query: Query | None = None) -> SearchResult:
        """See :meth:`FlowStore.search`.  Given ``query`` (what ``match`` was compiled
        from), the chips are answered in SQL (:mod:`.textsearch`): only a regex chip's
        candidates go through ``match``."""
        limit = max(limit, 0)
        condition, params = self._condition(narrow) if match is not None else ("", [])
        with self._connect() as conn:
            (last_id,) = conn.execute(f"SELECT coalesce(max(rowid), 0) FROM {TABLE}").fetchone()
            if after >= last_id:
                return SearchResult([], 0, 0, last_id)
            if match is None:
                (count,) = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE rowid > ? "
                                        "AND rowid <= ?", (after, last_id)).fetchone()
                rows = conn.execute(self._all_sql, (after, last_id, limit)).fetchall()
                return SearchResult(list(map(self._record, rows)), count, count, last_id)
            sql = (self._text.compile(conn, query, after, last_id,
                                      self._plan(conn, last_id).names)
                   if query is not None else None)
            if sql is not None:
                if sql.never:
                    return SearchResult([], 0, 0, last_id)
                try:
                    if sql.rows is not None and sql.exact:
                        return self._ids(conn, sql.rows(after), after, last_id, limit)
                    if sql.rows is not None:  # the rows the regex may match, by id
                        ids = sorted(sql.rows(after), reverse=True)
                        plan = self._plan(conn, last_id)
                        return self._scan(self._by_ids(conn, plan, ids), plan, match, limit,
                                          last_id)
                    if sql.exact:
                        return self._page(conn, sql.condition, list(sql.params), after,
                                          last_id, limit)
                    plan = self._plan(conn, last_id, sql.condition)
                    cursor = conn.execute(plan.sql, (after, last_id, *sql.params))
                    return self._scan(cursor, plan, match, limit, last_id)
                except sqlite3.OperationalError:
                    sql.raise_failure()  # a regex out of time, in a function SQL called
                    raise
            if condition is None:  # a field the file does not have: nothing can match
                return SearchResult([], 0, 0, last_id)
            if narrow is not None and narrow.complete:
                return self._page(conn, condition, params, after, last_id, limit)
            plan = self._plan(conn, last_id, condition)
            cursor = conn.execute(plan.sql, (after, last_id, *params))
            return self._scan(cursor, plan, match, limit, last_id)

    def prepare_search(self) -> None:
        """Read now what the first text search reads (the text columns' distinct values
        and their rows, the texts of wide integer columns: ~2 s per 100,000 rows here),
        up to the last row; later, only the rows written since.  The TUI calls it while
        nobody waits: once a file is open, and while a filter is being typed."""
        with self._connect() as conn:
            (last_id,) = conn.execute(f"SELECT coalesce(max(rowid), 0) FROM {TABLE}").fetchone()
            if last_id:
                self._text.prepare(conn, last_id, self._plan(conn, last_id).names)

    def _page(self, conn: sqlite3.Connection, condition: str, params: list[Any], after: int,
              last_id: int, limit: int) -> SearchResult:
        """A condition that is the whole filter: SQL finds the ``limit`` newest matches,
        counts the older ones (one pass over the rows in all), and the records are built
        from the page's rows only (20 ms instead of 0.3 s for 60,000 matches of 100,000
        rows)."""
        where = f"FROM {TABLE} WHERE rowid > ? AND rowid <= ?{condition}"
        ids = [rowid for (rowid,) in conn.execute(
            f"SELECT rowid {where} ORDER BY rowid DESC LIMIT ?", (after, last_id, *params, limit))]
        count = len(ids)
        if count == limit:  # there may be older ones
            older = ids[-1] - 1 if ids else last_id
            count += conn.execute(f"SELECT count(*) {where}",
                                  (after, older, *params)).fetchone()[0]
        return SearchResult(self._fetch(conn, ids, last_id), count, count, last_id)

    def _ids(self, conn: sqlite3.Connection, ids: set[int], after: int, last_id: int,
             limit: int) -> SearchResult:
        """The matches known by their row ids (:attr:`.textsearch.SqlFilter.rows`): the
        newest ``limit`` of them fetched."""
        count = len(ids)
        if count <= limit:
            page = sorted(ids, reverse=True)
        else:  # the newest first, down from the last row: few steps unless they are rare
            page = []
            for rowid in range(last_id, after, -1):
                if rowid in ids:
                    page.append(rowid)
                    if len(page) == limit:
                        break
        return SearchResult(self._fetch(conn, page, last_id), count, count, last_id)

    def _fetch(self, conn: sqlite3.Connection, ids: list[int], last_id: int) -> list[Record]:
        """The records of rows ``ids`` (newest first), built as a search builds them."""
        if not ids:
            return []
        plan = self._plan(conn, last_id)
        return self._scan(self._by_ids(conn, plan, ids), plan, _everything, len(ids),
                          last_id).records

    @staticmethod
    def _by_ids(conn: sqlite3.Connection, plan: _Plan, ids: list[int]) -> sqlite3.Cursor:
        """The planned columns of rows ``ids``, newest first."""
        names = ", ".join(_quote(name) if name else "NULL" for name in plan.names)
        return conn.execute(f"SELECT {names} FROM {TABLE} WHERE rowid IN "
                            "(SELECT value FROM json_each(?)) ORDER BY rowid DESC",
                            (json.dumps(ids),))

    def _condition(self, narrow: Narrowing | None) -> tuple[str | None, list[Any]]:
        """SQL for ``narrow`` over this file's columns: ``(" AND ...", params)``, ``("", [])``
        for no condition, ``(None, [])`` when no row can satisfy it.

        Equality runs in SQLite on the raw column; the Python ``match`` still runs on what
        is left, so the semantics stay those of the chips.  Scanning 100,000 rows in C costs
        a few milliseconds against ~3 us per row to build a record in Python.
        """
        if not narrow:
            return "", []
        parts: list[str] = []
        params: list[Any] = []
        if narrow.any_present:
            present = [name for name in narrow.any_present if name in self._columns]
            if not present:
                return None, []
            parts.append("(" + " OR ".join(f"{_quote(n)} IS NOT NULL" for n in present) + ")")
        for name, value in narrow.equals:
            if name not in self._columns:
                return None, []
            parts.append(f"{_quote(name)} = ?")
            params.append(value)
        return "".join(f" AND {part}" for part in parts), params

    def _scan(self, cursor: sqlite3.Cursor, plan: _Plan, match: Match, limit: int,
              last_id: int) -> SearchResult:
        """The hot loop: per row a C-built dict, NULL members cut, lists decoded, ``match``."""
        names, nullable, lists = plan.names, plan.nullable, plan.lists
        decoded = _ListCache()
        records: list[Record] = []
        matched = scanned = 0
        while rows := cursor.fetchmany(CHUNK_ROWS):
            scanned += len(rows)
            for row in rows:
                record = dict(zip(names, row, strict=True))
                if None in row:
                    for i, name in nullable:
                        if row[i] is None:
                            del record[name]
                for i, name in lists:
                    text = row[i]
                    if text is not None:
                        record[name] = decoded[text]
                if match(record):
                    matched += 1
                    if len(records) < limit:
                        records.append(record)
        for record in records:  # the lists the cache shares: the caller gets its own
            for _, name in lists:
                value = record.get(name)
                if type(value) is list:
                    record[name] = value.copy()
        return SearchResult(records, matched, scanned, last_id)

    def _plan(self, conn: sqlite3.Connection, last_id: int, condition: str = "") -> _Plan:
        """Bring the per-column counts up to ``last_id`` (new rows only) and plan from them."""
        counts = self._counts
        if counts.upto < last_id:
            sql = (f"SELECT count(*), {', '.join(f'count({_quote(c)})' for c in self._columns)}"
                   f" FROM {TABLE} WHERE rowid > ? AND rowid <= ?")
            rows, *per_column = conn.execute(sql, (counts.upto, last_id)).fetchone()
            counts.rows += rows
            counts.per_column = [a + b for a, b in zip(counts.per_column, per_column,
                                                       strict=True)]
            counts.upto = last_id
        present = [(name, n) for name, n in zip(self._columns, counts.per_column, strict=True)
                   if n]
        where = f"FROM {TABLE} WHERE rowid > ? AND rowid <= ?{condition} ORDER BY rowid DESC"
        if not present:  # only rows without any value: every record is empty
            return _Plan(f"SELECT NULL {where}", ("",), ((0, ""),), ())
        names = tuple(name for name, _ in present)
        return _Plan(
            sql=f"SELECT {', '.join(map(_quote, names))} {where}",
            names=names,
            nullable=tuple((i, name) for i, (name, n) in enumerate(present) if n < counts.rows),
            lists=tuple((i, name) for i, name in enumerate(names) if name in self._list_columns),
        )

    def _record(self, row: tuple[Any, ...]) -> Record:
        """A record from a full row (few rows: the ``match=None`` page)."""
        record = {name: value for name, value in zip(self._columns, row, strict=True)
                  if value is not None}
        for name in self._list_columns:
            text = record.get(name)
            if text is not None:
                record[name] = _decode_list(text)
        return record

    def totals(self) -> Totals:
        def column(name: str, default: str) -> str:
            return _quote(name) if name in self._columns else default

        sql = (f"SELECT count(*), coalesce(sum({column('Bytes', '0')}), 0), "
               f"coalesce(sum({column('Packets', '0')}), 0), "
               f"min({column('TimeFlowStartMs', 'NULL')}), "
               f"max({column('TimeFlowEndMs', 'NULL')}) FROM {TABLE}")
        with self._connect() as conn:
            flows, nbytes, packets, first, last = conn.execute(sql).fetchone()
        return Totals(flows, nbytes, packets, first, last)

    def close(self) -> None:
        self._closed = True


def _sqlite_error(path: Path, exc: sqlite3.Error) -> StoreError:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return StoreError(f"{path}: damaged SQLite file ({text}): not readable as a capture; "
                          "open its .json file instead")
    if "unable to open" in text:
        return StoreError(f"{path}: SQLite cannot open it read-only ({text}); a capture that "
                          "is still running needs its directory writable for the -shm file: "
                          "run with sudo")
    return StoreError(f"{path}: SQLite error: {text}")
