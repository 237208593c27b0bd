"""The Findings view's list: one row per finding, its title over its evidence, and the
filter chips that Enter applies (:mod:`netobserv_tui.store.findings` computes them).

The texts are data (names and addresses from the capture): shown as :class:`rich.text.Text`,
never parsed as markup.
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

from ..store.findings import Finding


class FindingsList(DataTable[Text]):
    """The findings, problems first; Enter (or a click) on one posts :class:`Chosen`."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "leave", "Back to the filter line", show=False),
    ]

    @dataclass
    class Chosen(Message):
        """Enter on a finding: filter the table to it."""

        finding: Finding

    @dataclass
    class Left(Message):
        """Escape, or a printable key (``character``): back to the filter line."""

        character: str | None

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.findings: tuple[Finding, ...] = ()
        #: Shown as the only row when there is no finding.
        self.empty_text = "Looking for findings…"

    def on_mount(self) -> None:
        self.add_column("Finding", key="finding")
        self.add_column("Enter filters with", key="chips")
        self._rebuild()

    def show(self, found: Sequence[Finding], empty_text: str | None = None) -> None:
        """Show ``found`` (the cursor stays on the same row when it can)."""
        if empty_text is not None:
            self.empty_text = empty_text
        found = tuple(found)
        if found == self.findings and self.row_count:
            return
        self.findings = found
        if self.is_mounted:
            self._rebuild()

    def _rebuild(self) -> None:
        row = self.cursor_row
        self.clear()
        if not self.findings:
            self.add_row(Text(self.empty_text, style="italic"), Text(""))
            return
        for finding in self.findings:
            cell = Text(finding.title, style="bold" if finding.severity == "problem" else "")
            for line in finding.evidence:
                cell.append("\n  " + line, style="")
            self.add_row(cell, Text("  ".join(finding.chips)), height=None)
        self.move_cursor(row=min(row, len(self.findings) - 1))

    def current(self) -> Finding | None:
        """The finding under the cursor, if any."""
        if not self.findings or not 0 <= self.cursor_row < len(self.findings):
            return None
        return self.findings[self.cursor_row]

    def on_data_table_row_selected(self, message: DataTable.RowSelected) -> None:
        message.stop()
        finding = self.current()
        if finding is not None:
            self.post_message(self.Chosen(finding))

    def on_key(self, event: events.Key) -> None:
        # Typing belongs to the filter line, as in the flow table.
        if event.is_printable and event.character and event.character not in " ?":
            event.stop()
            event.prevent_default()
            self.post_message(self.Left(event.character))

    def action_leave(self) -> None:
        self.post_message(self.Left(None))
