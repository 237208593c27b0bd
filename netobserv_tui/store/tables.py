"""The ``flow`` table that whole-capture summaries (:mod:`.findings`, :mod:`.talkers`) run
their SQL on: a capture's SQLite file opened read-only, or records put in a table in memory
(a JSON file, the latest flows of a cluster capture).  Plain :mod:`sqlite3`."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from netobserv_tui.model.fields import FIELD_NAMES, FIELDS


@contextmanager
def read_only(source: sqlite3.Connection | str | Path) -> Iterator[sqlite3.Connection]:
    """``source`` itself when it is a connection (left open), else its file opened
    read-only (the aggregator may be writing it, in WAL mode) and closed after."""
    if isinstance(source, sqlite3.Connection):
        yield source
        return
    conn = sqlite3.connect(f"{Path(source).resolve().as_uri()}?mode=ro", uri=True,
                           timeout=5.0)
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def records_table(records: Iterable[Mapping[str, Any]]) -> Iterator[sqlite3.Connection]:
    """A connection to a table ``flow`` in memory holding ``records`` (dicts of fields, as
    the stores and the live stream give them), with the columns and types of the files."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute(f"CREATE TABLE flow ({', '.join(f'{f.name} {f.sql}' for f in FIELDS)})")
        marks = ", ".join("?" * len(FIELD_NAMES))
        conn.executemany(
            f"INSERT INTO flow VALUES ({marks})",
            ([_cell(record.get(name)) for name in FIELD_NAMES] for record in records))
        yield conn
    finally:
        conn.close()


def _cell(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return json.dumps(list(value))
    return value
