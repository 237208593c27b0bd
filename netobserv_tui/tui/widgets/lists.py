"""Tables whose typing belongs to the filter line, and the lists of the Findings and Top
talkers views built on them.

:class:`TypingTable` is a :class:`~textual.widgets.DataTable` that hands a printable key
(but space and ``?``) and Escape back to the filter line with one message, :class:`Left`,
whatever table sent it (the flows, the findings, the talkers): the app has one handler.
:class:`ReportList` shows items that carry filter ``chips`` (a
:class:`~netobserv_tui.store.findings.Finding`, a :class:`~netobserv_tui.store.talkers.
Talker`) and posts :class:`ReportList.Chosen` on Enter; a subclass says how an item looks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable

from .quick_cells import QuickCells


class TypingTable(QuickCells):
    """A table that gives typing back to the filter line (see the module)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "leave", "Back to the filter line", show=False),
    ]

    @dataclass
    class Left(Message):
        """Escape, or a printable key (``character``) while the table has the focus: the
        app gives the focus back to the filter line (and the character to it)."""

        character: str | None

    def on_key(self, event: events.Key) -> None:
        if event.is_printable and event.character and event.character not in " ?":
            event.stop()
            event.prevent_default()
            self.post_message(self.Left(event.character))

    def action_leave(self) -> None:
        self.post_message(self.Left(None))


class Reported(Protocol):
    """An item of a report: the filter chips that show its flows."""

    @property
    def chips(self) -> tuple[str, ...]: ...


Item = TypeVar("Item", bound=Reported)


class ReportList(TypingTable, Generic[Item]):
    """Items of a report, one or more rows each; Enter (or a click) on one posts
    :class:`Chosen`.  Subclasses give :attr:`COLUMNS` and :meth:`add_item`."""

    #: (label, key) of each column.
    COLUMNS: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: The column of the empty list's text.
    EMPTY_COLUMN: ClassVar[int] = 0

    @dataclass
    class Chosen(Message):
        """Enter on an item: filter the table to its flows (its ``chips``)."""

        item: Any

    def __init__(self, *, empty_text: str, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.items: tuple[Item, ...] = ()
        #: Shown as the only row when there is no item.
        self.empty_text = empty_text

    def on_mount(self) -> None:
        for label, key in self.COLUMNS:
            self.add_column(label, key=key)
        self._rebuild()

    def show(self, found: Sequence[Item], empty_text: str | None = None) -> None:
        """Show ``found`` (the cursor stays on the same row when it can)."""
        if empty_text is not None:
            self.empty_text = empty_text
        items = tuple(found)
        if items == self.items and self.row_count:
            return
        self.items = items
        if self.is_mounted:
            self._rebuild()

    def add_item(self, index: int, item: Item) -> None:
        """Add the row of ``item`` (``index`` from 0)."""
        raise NotImplementedError

    def _rebuild(self) -> None:
        row = self.cursor_row
        self.clear()
        if not self.items:
            blank = [Text("") for _ in self.COLUMNS]
            blank[self.EMPTY_COLUMN] = Text(self.empty_text, style="italic")
            self.add_row(*blank)
            return
        for index, item in enumerate(self.items):
            self.add_item(index, item)
        self.move_cursor(row=min(row, len(self.items) - 1))

    def current(self) -> Item | None:
        """The item under the cursor, if any."""
        if not self.items or not 0 <= self.cursor_row < len(self.items):
            return None
        return self.items[self.cursor_row]

    def on_data_table_row_selected(self, message: DataTable.RowSelected) -> None:
        message.stop()
        item = self.current()
        if item is not None:
            self.post_message(self.Chosen(item))
