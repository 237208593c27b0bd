"""Cells of a :class:`~textual.widgets.DataTable` painted without Rich's render pipeline.

DataTable paints each cell by rendering ``Styled(Padding(cell))`` through the console: wrap,
justify, crop and style, for every cell of every line it repaints.  For the tables of this
TUI (one-line rows of short plain text) that is ~90 % of a repaint: a 41-row flows table of
9 columns took ~75 ms to repaint on two cores (``tests/bench/bench_tui.py``), nearly all of
it in that pipeline.

:class:`QuickCells` paints the cells it can in one string operation and one
:class:`~rich.segment.Segment`: a body cell (not the header, not a row label) of a one-line
row whose content is a :class:`~rich.text.Text` of printable ASCII with no style and no spans,
justified left, right or centre.  Anything else (a styled or multi-line cell, wide
characters, control characters) takes DataTable's own path.  What it paints is what
DataTable paints, to the cell and the style: ``tests/tui/test_quick_cells.py`` holds the two
paths to the same segments, and the snapshots are unchanged.

The override is of a private method of the pinned Textual (8.2), like the flows table's
``_update_dimensions``: a Textual upgrade must re-run those tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual._types import SegmentLines
from textual.widgets import DataTable
from textual.widgets.data_table import RowKey


def quick_text(plain: str, justify: str | None, width: int) -> str | None:
    """``plain`` fitted to ``width`` cells as Rich justifies and crops a one-line
    :class:`~rich.text.Text`; None when the quick path does not apply."""
    if width < 1 or not (plain.isascii() and plain.isprintable()):
        return None
    if justify in (None, "default", "left"):
        return plain[:width].ljust(width)
    if justify == "right":
        return plain.rstrip()[:width].rjust(width)
    if justify == "center":
        text = plain.rstrip()[:width]
        return (" " * ((width - len(text)) // 2) + text).ljust(width)
    return None


def quick_width(cell: object) -> int | None:
    """Cells ``cell`` takes, if it is nothing or a plain printable-ASCII
    :class:`~rich.text.Text` (None otherwise: DataTable measures it)."""
    if cell is None:
        return 0
    if type(cell) is not Text or cell.spans or cell.style:
        return None
    plain = cell.plain
    return len(plain) if plain.isascii() and plain.isprintable() else None


class QuickCells(DataTable[Any]):
    """A DataTable that paints and measures plain one-line cells quickly (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Before DataTable's __init__: it clears the caches.
        self._row_styles: dict[tuple[int, Style, object], Style] = {}
        super().__init__(*args, **kwargs)

    def notify_style_update(self) -> None:
        self._row_styles.clear()
        super().notify_style_update()

    def _clear_caches(self) -> None:
        self._row_styles.clear()
        super()._clear_caches()

    def _get_row_style(self, row_index: int, base_style: Style) -> Style:
        """DataTable's, remembered: it looks the zebra stripe's CSS up for every line
        painted."""
        # The header (-1) and fixed rows each have their style; the others alternate.
        kind = row_index if row_index < self.fixed_rows else self.fixed_rows + row_index % 2
        key = (kind, base_style, self._pseudo_class_state)
        style = self._row_styles.get(key)
        if style is None:
            style = self._row_styles[key] = super()._get_row_style(row_index, base_style)
        return style

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        """DataTable's, with the widths of plain cells counted rather than rendered: rows
        with a label, an automatic height or another cell go to DataTable's measure."""
        columns = self.ordered_columns
        others: list[RowKey] = []
        for row_key in new_rows:
            row = self.rows.get(row_key)
            if row is None or row_key not in self._row_locations:
                continue
            if row.label is not None or row.auto_height:
                others.append(row_key)
                continue
            cells = self._data[row_key]
            widths = [quick_width(cells.get(column.key)) for column in columns]
            if None in widths:
                others.append(row_key)
                continue
            for column, width in zip(columns, widths, strict=True):
                if width is not None and width > column.content_width:
                    column.content_width = width
        super()._update_dimensions(others)

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> SegmentLines:
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        if row_key is None or column_key is None:  # the header, a row label
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        cache_key = (
            row_key,
            column_key,
            base_style,
            cursor,
            hover,
            self._show_hover_cursor,
            self._update_count,
            self._pseudo_class_state,
        )
        cache = self._cell_render_cache
        lines = cache.get(cache_key)
        if lines is not None:
            return lines
        row = self.rows[row_key]
        cell = self._data[row_key].get(column_key) if row.height == 1 else None
        padding = self.cell_padding
        text = (
            quick_text(cell.plain, cell.justify, width - 2 * padding)
            if type(cell) is Text and not cell.spans and not cell.style
            else None
        )
        if text is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        component_style, post_style = self._get_styles_to_render_cell(
            False,
            False,
            row_index < self.fixed_rows or column_index < self.fixed_columns,
            hover,
            cursor,
            self.show_cursor,
            self._show_hover_cursor,
            self.cursor_foreground_priority == "css",
            self.cursor_background_priority == "css",
        )
        style = (
            base_style
            + Style.from_meta({"row": row_index, "column": column_index})
            + component_style
            + post_style
        )
        pad = " " * padding
        lines = [[Segment(pad + text + pad, style)]]
        cache[cache_key] = lines
        return lines
