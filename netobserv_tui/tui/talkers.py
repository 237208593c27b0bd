"""The Top talkers view's list: one row per talker (bytes, share, packets, flows, top peers)
and the filter chips that Enter applies (:mod:`netobserv_tui.store.talkers` computes them).

Names and addresses come from the capture: shown as :class:`rich.text.Text`, never parsed as
markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable

from ..model.units import human_bytes
from ..store.talkers import Talker

#: Shown before the chips of a talker whose chips also show other flows.
NOT_EXACT = "≈ "


def talker_cells(rank: int, talker: Talker) -> tuple[Text, ...]:
    """The row of ``talker`` (``rank`` from 1): what the list shows, as plain texts."""
    peers = ", ".join(f"{name} {human_bytes(count)}" for name, count in talker.peers)
    chips = "  ".join(talker.chips)
    return (
        Text(str(rank), justify="right"),
        Text(talker.name, style="bold"),
        Text(human_bytes(talker.bytes), justify="right"),
        Text(f"{talker.share:.1%}", justify="right"),
        Text(f"{talker.packets:,}", justify="right"),
        Text(f"{talker.flows:,}", justify="right"),
        Text(peers),
        Text(chips if talker.exact else NOT_EXACT + chips),
    )


class TalkersList(DataTable[Text]):
    """The top talkers, most bytes first; Enter (or a click) on one posts :class:`Chosen`."""

    DEFAULT_CSS = """
    TalkersList {
        height: 1fr;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "leave", "Back to the filter line", show=False),
    ]

    COLUMNS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("#", "rank"), ("Talker", "talker"), ("Bytes", "bytes"), ("Share", "share"),
        ("Packets", "packets"), ("Flows", "flows"), ("Top peers", "peers"),
        ("Enter filters with", "chips"),
    )

    @dataclass
    class Chosen(Message):
        """Enter on a talker: filter the table to its flows."""

        talker: Talker

    @dataclass
    class Left(Message):
        """Escape, or a printable key (``character``): back to the filter line."""

        character: str | None

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.talkers: tuple[Talker, ...] = ()
        #: Shown as the only row when there is no talker.
        self.empty_text = "Counting the talkers…"

    def on_mount(self) -> None:
        for label, key in self.COLUMNS:
            self.add_column(label, key=key)
        self._rebuild()

    def show(self, found: Sequence[Talker], empty_text: str | None = None) -> None:
        """Show ``found`` (the cursor stays on the same row when it can)."""
        if empty_text is not None:
            self.empty_text = empty_text
        found = tuple(found)
        if found == self.talkers and self.row_count:
            return
        self.talkers = found
        if self.is_mounted:
            self._rebuild()

    def _rebuild(self) -> None:
        row = self.cursor_row
        self.clear()
        if not self.talkers:
            blank = [Text("") for _ in self.COLUMNS]
            blank[1] = Text(self.empty_text, style="italic")
            self.add_row(*blank)
            return
        for rank, talker in enumerate(self.talkers, 1):
            self.add_row(*talker_cells(rank, talker))
        self.move_cursor(row=min(row, len(self.talkers) - 1))

    def current(self) -> Talker | None:
        """The talker under the cursor, if any."""
        if not self.talkers or not 0 <= self.cursor_row < len(self.talkers):
            return None
        return self.talkers[self.cursor_row]

    def on_data_table_row_selected(self, message: DataTable.RowSelected) -> None:
        message.stop()
        talker = self.current()
        if talker is not None:
            self.post_message(self.Chosen(talker))

    def on_key(self, event: events.Key) -> None:
        # Typing belongs to the filter line, as in the flow table.
        if event.is_printable and event.character and event.character not in " ?":
            event.stop()
            event.prevent_default()
            self.post_message(self.Left(event.character))

    def action_leave(self) -> None:
        self.post_message(self.Left(None))
