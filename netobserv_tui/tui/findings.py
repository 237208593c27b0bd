"""The Findings view's list: one row per finding, its title over its evidence, and the
filter chips that Enter applies (:mod:`netobserv_tui.store.findings` computes them).

The texts are data (names and addresses from the capture): shown as :class:`rich.text.Text`,
never parsed as markup.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text

from ..store.findings import Finding
from .widgets.lists import ReportList


class FindingsList(ReportList[Finding]):
    """The findings, problems first; Enter (or a click) on one posts :class:`Chosen`."""

    COLUMNS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("Finding", "finding"), ("Enter filters with", "chips"))

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(empty_text="Looking for findings…", id=id)

    @property
    def findings(self) -> tuple[Finding, ...]:
        return self.items

    def add_item(self, index: int, item: Finding) -> None:
        cell = Text(item.title, style="bold" if item.severity == "problem" else "")
        for line in item.evidence:
            cell.append("\n  " + line, style="")
        # One chip a line: the column is as wide as the longest chip, not as all of them.
        self.add_row(cell, Text("\n".join(item.chips)), height=None)
