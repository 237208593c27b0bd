"""A capture's file, read and searched: what ``netobserv open FILE`` shows, and what the live
filter searches during a local capture (the whole capture, not only the rows the TUI holds).

The aggregator writes each capture twice (see :mod:`netobserv_tui.aggregator.writers`):
``<ts>.db``, SQLite, table ``flow`` with one column per field (NULL when absent, list fields
as JSON text), and ``<ts>.json``, an array of objects holding only the present fields, whose
closing ``]`` is missing while the capture runs or after a crash.  :func:`open_store` picks
the reader by content (the SQLite header), not by suffix.  Both give the same records: a
dict of the non-NULL fields, lists decoded, like the JSON objects.

Filtering semantics are not here: a search takes the live filter's predicate
(:meth:`~netobserv_tui.tui.filtering.FilterChips.matches`) and applies it in Python to every
record, newest first, keeping the first ``limit`` matches and counting all of them.

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

:class:`JsonStore` loads the whole array once (a snapshot: rows written later are not seen);
its row ids are the 1-based positions in the array.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Final, Protocol, TypeAlias

from netobserv_tui.model.errors import UsageError
from netobserv_tui.model.fields import BY_NAME

try:
    import orjson

    _loads: Callable[[bytes | str], Any] = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency; json is the fallback
    _loads = json.loads

#: A flow record: field name -> value, only the non-NULL fields; list fields as lists.
Record: TypeAlias = dict[str, Any]
#: The live filter's test of one record.
Match: TypeAlias = Callable[[Mapping[str, Any]], bool]

#: The first 16 bytes of every SQLite 3 database file.
SQLITE_MAGIC: Final = b"SQLite format 3\x00"
TABLE: Final = "flow"
#: Rows fetched per ``fetchmany``: measured flat from 128 to 1000, slower above.
CHUNK_ROWS: Final = 256
#: How long a read waits for a lock the writer holds (taking a checkpoint, leaving WAL).
BUSY_TIMEOUT_S: Final = 5.0
#: Distinct list texts decoded per search before the cache starts over.
LIST_CACHE_SIZE: Final = 4096
#: Where captures are, for error messages.
CAPTURES_HINT: Final = "captures are written as <output>/flow/<timestamp>.db and .json"
#: A capture's SQLite file name (``writers.TIMESTAMP_FORMAT``, maybe with a ``-N`` suffix).
_CAPTURE_NAME: Final = re.compile(r"\d{4}_\d\d_\d\dT\d\d_\d\d_\d\dZ(-\d+)?\.db")


class StoreError(UsageError):
    """A capture file cannot be opened or read: missing, unreadable, not a capture."""


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One search: a page of records and the counts behind it."""

    #: The first ``limit`` matches, newest first (highest row id first).
    records: list[Record]
    #: Every match among the rows scanned, not capped by ``limit``.
    matched: int
    #: Rows examined by ``match``: those with ``after < row id <= last_id`` that passed
    #: the narrowing (all of them when there is none).
    scanned: int
    #: Highest row id when the search ran: ``after=last_id`` later gives only newer rows.
    last_id: int


@dataclass(frozen=True, slots=True)
class Totals:
    """Sums over the whole capture, for the header: rows, bytes, packets, time span."""

    flows: int
    bytes: int
    packets: int
    #: Smallest ``TimeFlowStartMs``; None without flows.
    first_ms: int | None
    #: Largest ``TimeFlowEndMs``; None without flows.
    last_ms: int | None


@dataclass(frozen=True, slots=True)
class Narrowing:
    """Conditions a store may check in SQL before ``match`` runs, to skip rows cheaply.

    They are implied by ``match`` (a row they exclude is one ``match`` rejects), so a store
    may ignore them: the result is the same, only slower.  Built from the view (its fields:
    at least one not NULL) and the integer ``Field=value`` chips (exact equality).
    """

    #: At least one of these fields is not NULL (empty: no condition).
    any_present: tuple[str, ...] = ()
    #: Each of these integer fields equals the value.
    equals: tuple[tuple[str, int], ...] = ()
    #: The conditions are all of ``match`` (only a view and integer chips): a store may
    #: count and page in SQL without running ``match`` at all.
    complete: bool = False

    def __bool__(self) -> bool:
        return bool(self.any_present or self.equals)


class FlowStore(Protocol):
    """A capture file opened for reading; one call at a time (not thread-safe)."""

    path: Path
    #: ``"sqlite"`` or ``"json"``.
    kind: str
    #: A JSON file without its closing bracket: the capture still runs, or crashed.
    incomplete: bool

    def search(self, match: Match | None, limit: int, *, after: int = 0,
               narrow: Narrowing | None = None, query: Query | None = None) -> SearchResult:
        """Records with a row id above ``after`` for which ``match`` is true (all when None).

        ``match`` sees shared objects and must not modify them; the records returned are
        the caller's.  ``narrow`` (implied by ``match``) lets the store skip rows early.
        ``query`` describes ``match`` as data, for a store that searches elsewhere.
        """
        ...

    def totals(self) -> Totals:
        """Counts and time span of the whole capture."""
        ...

    def close(self) -> None:
        """Release the file; idempotent.  Other calls fail afterwards."""
        ...


def open_store(path: str | Path) -> FlowStore:
    """Open a capture file as SQLite when it starts with the SQLite header, else as JSON."""
    path = Path(path)
    if _read(path, len(SQLITE_MAGIC)) == SQLITE_MAGIC:
        return SqliteStore(path)
    return JsonStore(path)


# ----------------------------------------------------------------- SQLite


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


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SqliteStore:
    """The ``flow`` table of a capture's SQLite file, opened read-only; see the module."""

    kind: str = "sqlite"
    incomplete: bool = False

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._closed = False
        head = _read(self.path, len(SQLITE_MAGIC))
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
            if condition is None:  # a field the file does not have: nothing can match
                return SearchResult([], 0, 0, last_id)
            if narrow is not None and narrow.complete:
                return self._page(conn, condition, params, after, last_id, limit)
            plan = self._plan(conn, last_id, condition)
            cursor = conn.execute(plan.sql, (after, last_id, *params))
            return self._scan(cursor, plan, match, limit, last_id)

    def _page(self, conn: sqlite3.Connection, condition: str, params: list[Any], after: int,
              last_id: int, limit: int) -> SearchResult:
        """A complete narrowing: SQL counts the matches and fetches only ``limit`` of them
        (20 ms instead of 0.3 s for 60,000 matches of 100,000 rows)."""
        bounds = f"FROM {TABLE} WHERE rowid > ? AND rowid <= ?{condition}"
        (count,) = conn.execute(f"SELECT count(*) {bounds}",
                                (after, last_id, *params)).fetchone()
        rows = conn.execute(
            f"SELECT {', '.join(map(_quote, self._columns))} {bounds} "
            "ORDER BY rowid DESC LIMIT ?", (after, last_id, *params, limit)).fetchall()
        return SearchResult(list(map(self._record, rows)), count, count, last_id)

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


# ----------------------------------------------------------------- JSON


class JsonStore:
    """A capture's JSON array, loaded once; row id = 1-based position in the array."""

    kind: str = "json"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._closed = False
        items, self.incomplete = _parse_array(self.path, _read(self.path))
        for i, item in enumerate(items):
            if type(item) is not dict:
                raise StoreError(f"{self.path}: item {i + 1} of the array is "
                                 f"{_json_type(item)}, not a flow object: not a netobserv "
                                 f"capture; {CAPTURES_HINT}")
            if None in item.values():  # the writer omits them; another tool may not
                items[i] = {k: v for k, v in item.items() if v is not None}
        self._records: list[Record] = items
        self._totals: Totals | None = None

    def search(self, match: Match | None, limit: int, *, after: int = 0,
               narrow: Narrowing | None = None, query: Query | None = None) -> SearchResult:
        # ``narrow`` is implied by ``match``, which runs in C through filter() here anyway.
        self._check_open()
        limit, after = max(limit, 0), max(after, 0)
        records = self._records
        last_id = len(records)
        if after >= last_id:
            return SearchResult([], 0, 0, last_id)
        scanned = last_id - after
        newest_first = islice(reversed(records), scanned)
        if match is None:
            kept, matched = list(islice(newest_first, limit)), scanned
        else:
            hits = filter(match, newest_first)  # the loop stays in C
            kept = list(islice(hits, limit))
            matched = len(kept) + len(list(hits))
        return SearchResult([_copy(r) for r in kept], matched, scanned, last_id)

    def totals(self) -> Totals:
        self._check_open()
        if self._totals is None:
            records = self._records

            def ints(name: str) -> list[int]:
                return [v for r in records if type(v := r.get(name)) is int]

            starts, ends = ints("TimeFlowStartMs"), ints("TimeFlowEndMs")
            self._totals = Totals(len(records), sum(ints("Bytes")), sum(ints("Packets")),
                                  min(starts, default=None), max(ends, default=None))
        return self._totals

    def close(self) -> None:
        self._closed = True
        self._records = []

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self.path.name}: the store is closed")


def _copy(record: Record) -> Record:
    return {k: v.copy() if type(v) is list else v for k, v in record.items()}


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _parse_array(path: Path, data: bytes) -> tuple[list[Any], bool]:
    """The JSON array in ``data`` and whether its closing bracket was missing.

    Like :func:`~netobserv_tui.aggregator.writers.recover`: without the closing ``]`` (and
    with a trailing ``,`` and whitespace) the array is closed here; if the last line was cut
    by a write in progress or a crash, it is dropped.  Anything else is an error that gives
    the line and column of the first fault.
    """
    body = data.rstrip()
    if not body:
        raise StoreError(f"{path}: empty file: not a netobserv capture; {CAPTURES_HINT}")
    if not body.lstrip().startswith(b"["):
        try:
            value = _loads(body)
        except ValueError:
            raise StoreError(f"{path}: neither an SQLite database nor a JSON array: not a "
                             f"netobserv capture; {CAPTURES_HINT}") from None
        raise StoreError(f"{path}: holds {_json_type(value)}, not an array of flow objects: "
                         f"not a netobserv capture; {CAPTURES_HINT}")
    error: ValueError | None = None
    if body.endswith(b"]"):
        try:
            return _loads(body), False
        except ValueError as exc:  # maybe a cut line that ends with a list's ']'
            error = exc
    cut = body.rstrip(b",").rstrip()
    try:
        return _loads(cut + b"\n]"), True
    except ValueError as exc:
        error = error or exc
    head, newline, _ = cut.rpartition(b"\n")
    if newline:
        try:
            return _loads(head.rstrip().rstrip(b",").rstrip() + b"\n]"), True
        except ValueError:
            pass
    raise _json_error(path, data, error)


def _json_error(path: Path, data: bytes, exc: ValueError) -> StoreError:
    """The first fault's line and column (orjson reports invalid UTF-8 at 1:1: located here)."""
    if isinstance(exc, json.JSONDecodeError) and "UTF-8" not in exc.msg:
        line, column, reason = exc.lineno, exc.colno, exc.msg
    else:
        try:
            data.decode()
            pos, reason = 0, str(exc)
        except UnicodeDecodeError as bad:
            pos, reason = bad.start, "invalid UTF-8"
        line = data.count(b"\n", 0, pos) + 1
        column = pos - (data.rfind(b"\n", 0, pos) + 1) + 1
    return StoreError(f"{path}: invalid JSON at line {line}, column {column}: {reason}; damaged "
                      "beyond a missing closing bracket: open the capture's .db file instead")


# ----------------------------------------------------------------- files


def _read(path: Path, size: int = -1) -> bytes:
    """The first ``size`` bytes (all with -1); a missing or unreadable file as StoreError."""
    if path.is_dir():
        raise StoreError(f"{path} is a directory: give a capture file{_example(path)}")
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except FileNotFoundError:
        raise StoreError(f"{path}: no such file: check the path; {CAPTURES_HINT}") from None
    except PermissionError:
        raise StoreError(f"{path}: permission denied: run with sudo, or make it readable "
                         f"(sudo chmod a+r {path})") from None
    except OSError as exc:
        raise StoreError(f"{path}: cannot read it: {exc.strerror or exc}") from None


def _example(directory: Path) -> str:
    """``, such as <newest capture .db>`` when the directory (or its ``flow/``) holds one."""
    try:
        found = sorted(p for pattern in ("*.db", "flow/*.db") for p in directory.glob(pattern)
                       if _CAPTURE_NAME.fullmatch(p.name))
    except OSError:
        found = []
    if found:  # timestamp names: the last is the newest
        return f", such as {found[-1]}"
    return f"; {CAPTURES_HINT}"


# -- a search described as data: the same on both ends of the wire ------------------------


@dataclass(frozen=True, slots=True)
class Query:
    """A live filter as data: the chips as typed and the view's fields (a record must carry
    one of them).  :meth:`compile` gives the predicate and the narrowing, so the TUI and an
    aggregator searching for it apply exactly the same rules."""

    chips: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()

    def compile(self) -> tuple[Match | None, Narrowing]:
        """``(predicate or None when everything matches, narrowing)``; ValueError names
        a chip that does not parse."""
        from .filtering import FilterChips

        chips = FilterChips()
        for text in self.chips:
            chips, error = chips.add(text)
            if error is not None:
                raise ValueError(error)
        fields = self.fields
        narrowing = Narrowing(fields, chips.equalities(), complete=chips.only_equalities())

        def has_data(record: Mapping[str, Any]) -> bool:
            return any(record.get(name) is not None for name in fields)

        if not fields:
            return (chips.matches if chips else None), narrowing
        if not chips:
            return has_data, narrowing
        matches = chips.matches
        return (lambda record: has_data(record) and matches(record)), narrowing

    def to_json(self) -> dict[str, Any]:
        return {"chips": list(self.chips), "fields": list(self.fields)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Query:
        chips, fields = data.get("chips", []), data.get("fields", [])
        if not (isinstance(chips, list) and all(isinstance(c, str) for c in chips)
                and isinstance(fields, list) and all(isinstance(f, str) for f in fields)):
            raise ValueError("a query is {\"chips\": [str], \"fields\": [str]}")
        return cls(tuple(chips), tuple(fields))


class RemoteStore:
    """The capture file of an aggregator that is not on this host (a cluster capture, through
    its port-forward), searched by the aggregator itself: SEARCH frames on one connection.

    Blocking, like the other stores (searches run in a worker thread).  It needs the
    :class:`Query`; the predicate given to :meth:`search` is not sent (it is code).
    """

    kind: str = "remote"
    incomplete: bool = True

    def __init__(self, host: str, port: int, token: str, *, timeout: float = 30.0) -> None:
        self.path = Path(f"{host}:{port}")
        self._address = (host, port)
        self._token = token
        self._timeout = timeout
        self._sock: Any = None
        self._reader: Any = None

    def _connect(self) -> None:
        import socket

        from netobserv_tui.model.protocol import FrameType, encode

        sock = socket.create_connection(self._address, timeout=self._timeout)
        self._sock, self._reader = sock, sock.makefile("rb")
        sock.sendall(encode(FrameType.SEARCH, {"token": self._token}))
        self._expect(FrameType.WELCOME)

    def _expect(self, kind: Any) -> dict[str, Any]:
        from netobserv_tui.model.protocol import FrameType, read_frame_sync

        frame = read_frame_sync(self._reader)
        if frame is None:
            raise StoreError(f"the aggregator at {self.path} closed the search connection")
        got, payload = frame
        if got is FrameType.ERROR:
            raise StoreError(f"the aggregator at {self.path} refused the search: "
                             f"{payload.get('reason', 'no reason given')}")
        if got is not kind:
            raise StoreError(f"the aggregator at {self.path} answered {got.name} to a search")
        return payload

    def search(self, match: Match | None, limit: int, *, after: int = 0,
               narrow: Narrowing | None = None, query: Query | None = None) -> SearchResult:
        from netobserv_tui.model.protocol import FrameType, encode

        request = {**(query or Query()).to_json(), "limit": max(limit, 0), "after": after}
        for attempt in (1, 2):  # one reconnect: a port-forward tunnel may have been cut
            try:
                if self._sock is None:
                    self._connect()
                self._sock.sendall(encode(FrameType.SEARCH, request))
                payload = self._expect(FrameType.RESULT)
                break
            except (OSError, StoreError):
                self.close()
                if attempt == 2:
                    raise
        records = payload.get("records")
        if not isinstance(records, list):
            raise StoreError(f"the aggregator at {self.path} sent a malformed search result")
        return SearchResult(records, int(payload.get("matched", 0)),
                            int(payload.get("scanned", 0)), int(payload.get("last_id", 0)))

    def totals(self) -> Totals:
        return Totals(0, 0, 0, None, None)  # the header has the live totals

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
