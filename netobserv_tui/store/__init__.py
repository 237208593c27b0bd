"""Captures, read and searched: what ``netobserv open FILE`` shows, what the TUI's live
filters search (the whole capture, not only the rows the TUI holds), and what the
aggregator's SEARCH sessions run for the TUI of a cluster capture.

No Textual here, and nothing of the aggregator, the agent or the TUI: the aggregator (in a
pod with no terminal) and the TUI both import this package, never the other way round.

The aggregator writes each capture twice (see :mod:`netobserv_tui.aggregator.writers`):
``<ts>.db``, SQLite, table ``flow`` with one column per field (NULL when absent, list fields
as JSON text), and ``<ts>.json``, an array of objects holding only the present fields, whose
closing ``]`` is missing while the capture runs or after a crash.  :func:`open_store` picks
the reader by content (the SQLite header), not by suffix.  Both give the same records: a
dict of the non-NULL fields, lists decoded, like the JSON objects.

Modules:

- :mod:`.base`: the record and result types, :class:`FlowStore`, :class:`StoreError`.
- :mod:`.chips`: the live filter's chip language (keyword, ``Field=value``, ``/regex/``).
- :mod:`.query`: a filter as data (:class:`Query`), compiled to a predicate and a narrowing.
- :mod:`.sqlite`, :mod:`.jsonfile`: the two file readers.
- :mod:`.textsearch`: the chips answered without a Python test per row, over a SQLite file.
- :mod:`.remote`: a capture searched by the aggregator that holds it (SEARCH frames).
- :mod:`.findings`: what a capture shows is wrong (NXDOMAIN, unanswered SYNs, drops...),
  computed in SQL, with the chips that filter to it (the TUI's Findings view).
- :mod:`.talkers`: the ends that carried the most bytes (the TUI's Top talkers view).
- :mod:`.reports`: whole-capture summaries by name (findings, talkers), which the
  aggregator computes for the TUI of a cluster capture.
- :mod:`.tables`: the ``flow`` table those summaries run on (a file read-only, or records
  in memory).

A search takes the live filter's predicate (:meth:`.chips.FilterChips.matches`) and applies
it in Python to every record, newest first, keeping the first ``limit`` matches and
counting all of them; a store may first narrow the rows in SQL (:class:`Narrowing`), and a
SQLite store given the query answers it from its own index (:mod:`.textsearch`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from netobserv_tui.model.errors import NetobservError

from .base import (
    CAPTURES_HINT,
    SQLITE_MAGIC,
    FlowStore,
    Match,
    Narrowing,
    Record,
    SearchResult,
    StoreError,
    Totals,
    read_head,
)
from .findings import Finding
from .jsonfile import JsonStore
from .query import Query
from .remote import RemoteStore
from .sqlite import SqliteStore

__all__ = [
    "CAPTURES_HINT",
    "Finding",
    "FlowStore",
    "JsonStore",
    "Match",
    "Narrowing",
    "Query",
    "Record",
    "RemoteStore",
    "SearchResult",
    "SqliteStore",
    "StoreError",
    "Totals",
    "open_live",
    "open_store",
]

log = logging.getLogger(__name__)


def open_store(path: str | Path) -> FlowStore:
    """Open a capture file as SQLite when it starts with the SQLite header, else as JSON."""
    path = Path(path)
    if read_head(path, len(SQLITE_MAGIC)) == SQLITE_MAGIC:
        return SqliteStore(path)
    return JsonStore(path)


def open_live(db: str | Path | None, host: str, port: int, token: str) -> FlowStore:
    """Where a running capture's live filters search everything it has seen: its SQLite
    file ``db``, opened read-only, when it is on this host; else (``db`` None, or a file
    that cannot be opened) the aggregator at ``host:port`` itself, through SEARCH frames."""
    if db is None:
        return RemoteStore(host, port, token)
    try:
        return SqliteStore(db)
    except NetobservError as exc:
        log.warning("live filters will ask the aggregator: %s", exc)
        return RemoteStore(host, port, token)
