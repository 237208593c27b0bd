"""The table of latest flows: a bounded ring of records, repainted on a timer.

FLOWS batches only append to the ring; the table is rebuilt at most once per
``refresh_interval`` and only when something changed, so a burst of thousands of records
costs a handful of repaints.  Rebuilding 1000 rows takes about 0.1 s of DataTable work
(it measures every cell), hence the default of two refreshes per second.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable

from ..columns import FLOW_COLUMNS, Column, Record


class FlowTable(DataTable[Text]):
    """Latest flows, newest first, at most ``max_rows`` of them."""

    @dataclass
    class Refreshed(Message):
        """The table was rebuilt; ``shown`` rows are displayed out of ``received``."""

        shown: int
        received: int

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
        self._dirty = False
        #: Records received since the start, including those pushed out of the ring.
        self.received = 0
        #: Number of table rebuilds, for tests and the status line.
        self.rebuilds = 0

    def on_mount(self) -> None:
        for column in self._flow_columns:
            self.add_column(column.label, key=column.key)
        self.set_interval(self.refresh_interval, self.flush)

    def set_columns(self, columns: Sequence[Column]) -> None:
        """Show other columns (another view); the rows come back at once from the ring."""
        self._flow_columns = tuple(columns)
        self.clear(columns=True)
        for column in self._flow_columns:
            self.add_column(column.label, key=column.key)
        self._dirty = True
        self.flush()

    @property
    def flow_columns(self) -> tuple[Column, ...]:
        return self._flow_columns

    def add_batch(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Queue a FLOWS batch; it shows at the next refresh."""
        self.received += len(rows)
        kept = rows[-self.max_rows :]
        self._flows.extend(dict(zip(columns, row, strict=False)) for row in kept)
        self._dirty = self._dirty or bool(kept)

    def latest(self) -> list[Record]:
        """Records in the ring, newest first (the order of the table's rows)."""
        return list(reversed(self._flows))

    def flush(self) -> None:
        """Rebuild the table from the ring if records arrived since the last rebuild."""
        if not self._dirty:
            return
        self._dirty = False
        cursor_row = self.cursor_row
        self.clear()
        self.add_rows(self._cells(record) for record in reversed(self._flows))
        if cursor_row:
            self.move_cursor(row=min(cursor_row, self.row_count - 1), animate=False)
        self.rebuilds += 1
        self.post_message(self.Refreshed(self.row_count, self.received))

    def _cells(self, record: Record) -> list[Text]:
        # Text, not str: DataTable parses str cells as markup, and an interface name
        # or a DNS name is data, not markup.
        return [
            Text(str(column.render(record)), justify=column.justify, end="")
            for column in self._flow_columns
        ]
