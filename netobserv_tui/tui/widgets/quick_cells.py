"""A :class:`~textual.widgets.DataTable` that paints plain one-line cells without Rich's
render pipeline.

DataTable paints each cell by rendering ``Styled(Padding(cell))`` through the console: wrap,
justify, crop and style, for every cell of every line it repaints, and looks CSS up several
times per line.  For the tables of this TUI (one-line rows of short plain text) that was
nearly all of a repaint: a 41-row flows table of 9 columns took ~75 ms to rebuild and
repaint on two cores (``tests/bench/bench_tui.py``).

:class:`QuickCells` changes how, not what:

* a body cell of a one-line row whose content is a :class:`~rich.text.Text` of printable
  ASCII with no style and no spans, justified left, right or centre, is one string
  operation and one :class:`~rich.segment.Segment`, its style remembered per (row, column,
  styles); it is not kept in DataTable's cell cache (painting it again costs less than the
  cache's key).  Anything else (the header, a styled or multi-line cell, wide or control
  characters) takes DataTable's own path;
* a line of a table without row labels and fixed columns is assembled without the header
  style DataTable looks up for every line, and the widget's style, the cells' settings and
  the zebra stripes' styles are looked up once per paint;
* the widths of plain cells are counted, not measured by rendering.

What it paints is what DataTable paints, to the segment and the style:
``tests/tui/test_quick_cells.py`` holds the two side by side (cursor types, hover, focus,
zebra stripes, labels, fixed columns, random cells), and the snapshots are unchanged.  The
overrides are of private methods of the pinned Textual (8.2), like the flows table's
``_update_dimensions``: a Textual upgrade must re-run those tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual._types import SegmentLines
from textual.color import Color
from textual.coordinate import Coordinate
from textual.geometry import Region
from textual.strip import Strip
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


#: Cell styles remembered at most (a few screens of cells in each state).
CELL_STYLES_KEPT = 20_000


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
        #: The widget's rich style during a paint (see render_lines).
        self._base_style: Style | None = None
        #: The cells' settings during a paint (see _paint_state).
        self._paint: tuple[int, bool, bool, bool, bool, int, int] | None = None
        #: (row, column, styles) -> a quick cell's style: the same from paint to paint.
        self._cell_styles: dict[tuple[int, int, Style, Style, Style], Style] = {}
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

    def render_lines(self, crop: Region) -> list[Strip]:
        # The widget's own style and the cells' settings, looked up once per paint instead
        # of once per line and per cell.
        self._base_style = self.rich_style
        self._paint = self._paint_state()
        try:
            return super().render_lines(crop)
        finally:
            self._base_style = self._paint = None

    def render_line(self, y: int) -> Strip:
        """DataTable's, with the widget's style looked up once per paint."""
        base_style = self._base_style
        if base_style is None:
            return super().render_line(y)
        width = self.size.width
        scroll_x, scroll_y = self.scroll_offset
        fixed_height = 0
        for index in range(self.fixed_rows):
            fixed_key = self._row_locations.get_key(index)
            if fixed_key is not None:
                fixed_height += self.get_row_height(fixed_key)
        if self.show_header:
            fixed_height += self.get_row_height(self._header_row_key)
        if y >= fixed_height:
            y += scroll_y
        return self._render_line(y, scroll_x, scroll_x + width, base_style)

    def _render_line_in_row(
        self,
        row_key: RowKey,
        line_no: int,
        base_style: Style,
        cursor_location: Coordinate,
        hover_location: Coordinate,
    ) -> tuple[SegmentLines, SegmentLines]:
        """DataTable's for a line of a body row when there are no row labels and no fixed
        columns (the tables here), with what does not change along a line computed once:
        DataTable looks the header's CSS up for every line, needed only for labels and
        fixed columns, and each column's width several times."""
        if (row_key is self._header_row_key or self.fixed_columns
                or (self._labelled_row_exists and self.show_row_labels)):
            return super()._render_line_in_row(row_key, line_no, base_style, cursor_location,
                                               hover_location)
        cursor_type = self.cursor_type
        cache_key = (
            row_key,
            line_no,
            base_style,
            cursor_location,
            hover_location,
            cursor_type,
            self.show_cursor,
            self._show_hover_cursor,
            self._update_count,
            self._pseudo_class_state,
        )
        cached = self._row_render_cache.get(cache_key)
        if cached is not None:
            return cached
        row_index = self._row_locations.get(row_key)
        if row_index is None:  # a row removed before this paint
            return super()._render_line_in_row(row_key, line_no, base_style, cursor_location,
                                               hover_location)
        row_style = self._get_row_style(row_index, base_style)
        should_highlight = self._should_highlight
        render_cell = self._render_cell
        widths = [column.get_render_width(self) for column in self.ordered_columns]
        scrollable_row: SegmentLines = []
        for column_index, width in enumerate(widths):
            cell_location = Coordinate(row_index, column_index)
            scrollable_row.append(render_cell(
                row_index,
                column_index,
                row_style,
                width,
                cursor=should_highlight(cursor_location, cell_location, cursor_type),
                hover=should_highlight(hover_location, cell_location, cursor_type),
            )[line_no])
        # The row's style carried to the widget's right edge, as DataTable does.
        remaining_space = max(0, self.size.width - sum(widths))  # no row labels here
        if cursor_type == "row":
            extend_style, _ = self._get_styles_to_render_cell(
                False,
                False,
                False,
                should_highlight(hover_location, Coordinate(row_index or 0, 0), cursor_type),
                row_index == cursor_location.row,
                self.show_cursor,
                self._show_hover_cursor,
                False,
                False,
            )
            extend_style = row_style + extend_style
        elif row_style.bgcolor is not None:
            faded_color = Color.from_rich_color(row_style.bgcolor).blend(
                self.background_colors[1], factor=0.25)
            extend_style = Style.from_color(color=row_style.color,
                                            bgcolor=faded_color.rich_color)
        else:
            extend_style = Style.from_color(row_style.color, row_style.bgcolor)
        extend_style += Style.from_meta({"row": row_index, "column": 0, "out_of_bounds": True})
        scrollable_row.append([Segment(" " * remaining_space, extend_style)])
        row_pair: tuple[SegmentLines, SegmentLines] = ([], scrollable_row)
        self._row_render_cache[cache_key] = row_pair
        return row_pair

    def refill(self, rows: Iterable[Iterable[Any]]) -> None:
        """Every row replaced by ``rows`` in one go: measured at once (:meth:`measure_now`),
        the cursor kept on its row number (the last row when there are fewer now)."""
        cursor_row = self.cursor_row
        self.clear()
        self.add_rows(rows)
        self.measure_now()
        if cursor_row and self.row_count:
            self.move_cursor(row=min(cursor_row, self.row_count - 1), animate=False)

    def measure_now(self) -> None:
        """Measure the rows added since the last measure now, as DataTable does when its
        message queue is next idle.  A table that was rebuilt in one go calls it: the
        screen may paint before that idle moment, and the measured widths (a column
        widened, the scrollable height) then make a second paint one frame later; measured
        here, the first paint shows them.  Plain cells are counted, not rendered
        (:meth:`_update_dimensions`), so it costs well under a millisecond for a screenful."""
        if self._require_update_dimensions:
            self._require_update_dimensions = False
            new_rows = self._new_rows.copy()
            self._new_rows.clear()
            self._update_dimensions(new_rows)

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
        # What DataTable reads from its reactives for every cell, read once per paint.
        paint = self._paint or self._paint_state()
        padding, show_cursor, show_hover_cursor, css_foreground, css_background = paint[:5]
        cell = self._data[row_key].get(column_key) if self.rows[row_key].height == 1 else None
        text = (
            quick_text(cell.plain, cell.justify, width - 2 * padding)
            if type(cell) is Text and not cell.spans and not cell.style
            else None
        )
        if text is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        # Not kept in DataTable's cell cache: painting it again costs less than the key.
        component_style, post_style = self._get_styles_to_render_cell(
            False,
            False,
            row_index < paint[5] or column_index < paint[6],
            hover,
            cursor,
            show_cursor,
            show_hover_cursor,
            css_foreground,
            css_background,
        )
        style_key = (row_index, column_index, base_style, component_style, post_style)
        style = self._cell_styles.get(style_key)
        if style is None:
            if len(self._cell_styles) > CELL_STYLES_KEPT:
                self._cell_styles.clear()
            style = self._cell_styles[style_key] = (
                base_style
                + Style.from_meta({"row": row_index, "column": column_index})
                + component_style
                + post_style
            )
        pad = " " * padding
        return [[Segment(pad + text + pad, style)]]

    def _paint_state(self) -> tuple[int, bool, bool, bool, bool, int, int]:
        return (self.cell_padding, self.show_cursor, self._show_hover_cursor,
                self.cursor_foreground_priority == "css",
                self.cursor_background_priority == "css", self.fixed_rows, self.fixed_columns)
