"""The table of flows: live records in a bounded ring, or a filter's matches; repainted on a timer.

Two sources of rows, newest first:

* the **ring**: the latest ``max_rows`` records of the live stream (or of a file when nothing
  is filtered), extended by :meth:`FlowTable.add_batch`;
* **results**: the records that match the active filter, set by :meth:`show_results` (from a
  search over everything the capture has seen) and extended by :meth:`add_results` as new
  matches arrive, also at most ``max_rows`` of them.  A search asks for
  :meth:`fetch_rows` of them, enough for the screen, not ``max_rows``: the newest 1,000 of
  60,000 matches cost ~13 ms more to read than the newest 100 (``tests/bench/bench_tui.py``)
  on the way from a keystroke to its repaint.  When more rows are wanted than are held
  (Up raised the limit, the terminal grew) the table posts :class:`MoreWanted` and the app
  searches again for that many.

Adding records only appends to a deque; the table is rebuilt at most once per
``refresh_interval`` and only when something changed, so a burst of thousands of records
costs a handful of repaints.  While paused, records keep arriving but the table is not
rebuilt.

"Newest first" is by time: the rows shown are the records with the latest
``TimeFlowEndMs``, in that order (records that arrived later first among equal times); a
record without a time comes after every record with one. Agents deliver intervals at their
own pace, so arrival order alone would put an older interval above a newer one.

How many rows are shown: as many as fit the table's height (the article's "number of
displayed flows", adapted to the screen), or :attr:`limit` once the user chose one with
Up/Down (up to ``max_rows``; more than fit makes the table scroll).  Rows off screen are
not built: DataTable measures every cell of every row it holds, so rebuilding 1000 rows
costs ~140 ms and leaves ~37,000 objects for the cyclic garbage collector.  The cells are
painted and measured by :class:`~.quick_cells.QuickCells` (through :class:`~.lists.
TypingTable`): a 41-row rebuild and repaint took ~80 ms with DataTable's own cell
rendering, ~30 ms with it (``tests/bench/bench_tui.py``).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.message import Message
from textual.widgets.data_table import RowKey

from ..columns import FLOW_COLUMNS, Column, Record
from .lists import TypingTable


def newest_first(records: Iterable[Record], count: int) -> list[Record]:
    """The ``count`` newest of ``records`` (given in arrival order), newest first: by
    ``TimeFlowEndMs``, later arrivals first among equal times, records without a time
    last."""
    items = list(records)

    def key(index: int) -> tuple[bool, int, int]:
        end = items[index].get("TimeFlowEndMs")
        return end is not None, end or 0, index

    return [items[i] for i in heapq.nlargest(count, range(len(items)), key=key)]


#: Matches a search reads at least (more when the screen or the limit shows more).
FETCH_AT_LEAST = 100


class FlowTable(TypingTable):
    """Flows, newest first, at most ``max_rows`` of them (fewer with :attr:`limit`); typing
    goes back to the filter line (:class:`~.lists.TypingTable.Left`)."""

    @dataclass
    class Refreshed(Message):
        """The table was rebuilt; ``shown`` rows are displayed out of ``available`` (the
        ring or the filter's kept matches); ``matched`` counts every match (None: no filter)."""

        shown: int
        available: int
        received: int
        matched: int | None

    @dataclass
    class MoreWanted(Message):
        """The filter's matches held are fewer than the rows to show, and there are more:
        search again for :meth:`FlowTable.fetch_rows` of them."""

    def __init__(
        self,
        *,
        max_rows: int = 1000,
        refresh_interval: float = 0.5,
        columns: Sequence[Column] = FLOW_COLUMNS,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.max_rows = max_rows
        self.refresh_interval = refresh_interval
        self._flow_columns = tuple(columns)
        self._flows: deque[Record] = deque(maxlen=max_rows)
        self._results: deque[Record] | None = None
        self._shown: list[Record] = []
        self._dirty = False
        #: Records received since the start, including those pushed out of the ring.
        self.received = 0
        #: Number of records matching the active filter (None when nothing is filtered).
        self.matched: int | None = None
        #: Rows shown, as chosen with Up/Down (None: as many as fit the table's height).
        self.limit: int | None = None
        self.paused = False
        #: Number of table rebuilds, for tests and benchmarks.
        self.rebuilds = 0
        #: Rows asked for with MoreWanted since the last results (asked once).
        self._asked = 0

    def on_mount(self) -> None:
        for column in self._flow_columns:
            self.add_column(column.label, key=column.key)
        self.set_interval(self.refresh_interval, self.flush)

    def on_resize(self) -> None:
        if self.limit is None and self.fit_rows() != len(self._shown):
            self._rebuild()

    def fit_rows(self) -> int:
        """Rows that fit under the header row (50 before the first layout)."""
        height = self.size.height
        return max(1, height - 1) if height else 50

    def wanted_rows(self) -> int:
        """Rows to show: the limit, or as many as fit."""
        return self.fit_rows() if self.limit is None else self.limit

    def fetch_rows(self) -> int:
        """Matches a search should read for this table: the rows to show, at least
        :data:`FETCH_AT_LEAST`, at most ``max_rows``."""
        return min(self.max_rows, max(FETCH_AT_LEAST, self.wanted_rows()))

    # -- what is shown -----------------------------------------------------------------

    def set_columns(self, columns: Sequence[Column], *, rebuild: bool = True) -> None:
        """Show other columns (another view); the rows come back at once unless
        ``rebuild`` is false (a search for other rows follows: no rows meanwhile)."""
        self._flow_columns = tuple(columns)
        self.clear(columns=True)
        self._shown = []
        for column in self._flow_columns:
            self.add_column(column.label, key=column.key)
        if rebuild:
            self._rebuild()

    @property
    def flow_columns(self) -> tuple[Column, ...]:
        return self._flow_columns

    @property
    def filtered(self) -> bool:
        return self._results is not None

    def add_batch(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Add a FLOWS batch to the ring; it shows at the next refresh if nothing is filtered."""
        self.received += len(rows)
        kept = rows[-self.max_rows :]
        self._flows.extend(dict(zip(columns, row, strict=False)) for row in kept)
        if self._results is None and kept:
            self._dirty = True

    def add_records(self, records: Iterable[Record]) -> None:
        """Add records, oldest first, to the ring (a file's latest records, for example)."""
        before = len(self._flows)
        self._flows.extend(records)
        if self._results is None and len(self._flows) != before:
            self._dirty = True

    def ring(self) -> list[Record]:
        """Records in the ring, newest first."""
        return list(reversed(self._flows))

    def show_ring(self) -> None:
        """No filter any more: show the ring again."""
        self._results = None
        self.matched = None
        self._rebuild()

    def show_results(self, newest_first: Sequence[Record], matched: int) -> None:
        """Show a filter's matches (at most ``max_rows`` kept) out of ``matched`` in all."""
        self._results = deque(reversed(newest_first[: self.max_rows]), maxlen=self.max_rows)
        self.matched = matched
        self._asked = 0
        self._rebuild()

    def add_results(self, newest_first: Sequence[Record], matched: int) -> None:
        """New matches of the active filter, ``matched`` of them in all (some may not be kept)."""
        if self._results is None:
            return
        self._results.extend(reversed(newest_first[: self.max_rows]))
        self.matched = (self.matched or 0) + matched
        self._dirty = self._dirty or bool(newest_first) or bool(matched)

    @property
    def kept(self) -> int:
        """Records held for the table: the filter's matches, or the ring."""
        return len(self._results if self._results is not None else self._flows)

    def latest(self) -> list[Record]:
        """What is being shown or would be shown: results or ring, newest first."""
        source = self._results if self._results is not None else self._flows
        return newest_first(source, len(source))

    def shown_records(self) -> list[Record]:
        """The records of the table's rows, in row order (as of the last rebuild)."""
        return list(self._shown)

    def record_at(self, row: int) -> Record | None:
        return self._shown[row] if 0 <= row < len(self._shown) else None

    def set_limit(self, limit: int | None) -> None:
        """Show ``limit`` rows (clamped to 1..max_rows), or as many as fit (None)."""
        if limit is not None:
            limit = max(1, min(limit, self.max_rows))
        if limit != self.limit:
            self.limit = limit
            self._rebuild()

    def set_paused(self, paused: bool) -> None:
        """Freeze the rows on screen; records still arrive and show on resume."""
        self.paused = paused
        if not paused:
            self._rebuild()

    # -- painting ----------------------------------------------------------------------

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        """DataTable measures new rows' cells when idle, widening their columns, but keeps
        the lines it painted before with the old widths (only auto-height rows clear its
        line cache). A repaint that fell between the rows and their measure (a busy
        machine) then showed cells cut to the column labels' width until the next rebuild.
        Drop those lines and repaint. (Textual 8.2's private hook; the version is pinned.)"""
        super()._update_dimensions(new_rows)
        self._clear_caches()
        self.refresh()

    def _rebuild(self) -> None:
        self._dirty = True
        self.flush()

    def flush(self) -> None:
        """Rebuild the table if records arrived since the last rebuild (not while paused)."""
        if not self._dirty or self.paused:
            return
        self._dirty = False
        source = self._results if self._results is not None else self._flows
        wanted = self.wanted_rows()
        count = min(wanted, len(source))
        if (self._results is not None and count < min(wanted, self.matched or 0)
                and wanted > self._asked):
            self._asked = wanted
            self.post_message(self.MoreWanted())
        shown = newest_first(source, count)
        self._shown = shown
        self.refill(self._cells(record) for record in shown)
        self.rebuilds += 1
        self.post_message(self.Refreshed(self.row_count, len(source), self.received, self.matched))

    def _cells(self, record: Record) -> list[Text]:
        # Text, not str: DataTable parses str cells as markup, and an interface name
        # or a DNS name is data, not markup.
        return [
            Text(str(column.render(record)), justify=column.justify, end="")
            for column in self._flow_columns
        ]
