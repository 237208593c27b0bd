"""What every capture reader shares: the record and result types, the narrowing a search may
use, the :class:`FlowStore` protocol the TUI and the aggregator's SEARCH sessions program
against, :class:`StoreError`, and reading the first bytes of a capture file with errors that
say what to do next.  Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeAlias

from netobserv_tui.model.errors import UsageError

if TYPE_CHECKING:
    from .query import Query

#: A flow record: field name -> value, only the non-NULL fields; list fields as lists.
Record: TypeAlias = dict[str, Any]
#: The live filter's test of one record.
Match: TypeAlias = Callable[[Mapping[str, Any]], bool]

#: The first 16 bytes of every SQLite 3 database file.
SQLITE_MAGIC: Final = b"SQLite format 3\x00"
#: ``PRAGMA application_id`` of the SQLite files the aggregator writes: every value is of its
#: column's kind (integers in integer columns, texts in the others), checked before it is
#: written.  A reader may rely on it; a file without it (an older capture, one from
#: another tool) is checked value by value.
TYPED_APPLICATION_ID: Final = 0x6E6F6273  # "nobs"
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

    def prepare_search(self) -> None:
        """Do ahead what the first search would (a store that has nothing to read ahead
        does nothing), so that it answers at once when someone types."""
        ...

    def close(self) -> None:
        """Release the file; idempotent.  Other calls fail afterwards."""
        ...


def read_head(path: Path, size: int = -1) -> bytes:
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
