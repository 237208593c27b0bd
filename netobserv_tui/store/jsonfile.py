"""A capture's JSON file (``<ts>.json``, an array of flow objects holding only the present
fields), read and searched.  Serves ``netobserv open`` when the SQLite file is damaged or
when a JSON file is what the user has.

:class:`JsonStore` loads the whole array once (a snapshot: rows written later are not seen);
its row ids are the 1-based positions in the array.  The closing ``]`` is missing while the
capture runs or after a crash; the array is closed here, as the writer's recovery does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import (
    CAPTURES_HINT,
    Match,
    Narrowing,
    Record,
    SearchResult,
    StoreError,
    Totals,
    read_head,
)

if TYPE_CHECKING:
    from .query import Query

try:
    import orjson

    _loads: Callable[[bytes | str], Any] = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency; json is the fallback
    _loads = json.loads



class JsonStore:
    """A capture's JSON array, loaded once; row id = 1-based position in the array."""

    kind: str = "json"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._closed = False
        items, self.incomplete = _parse_array(self.path, read_head(self.path))
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

    def prepare_search(self) -> None:
        """Nothing to read ahead: the records are in memory."""

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
