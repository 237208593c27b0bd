"""QuickCells paints what DataTable paints, and takes its quick path for plain cells.

Two tables side by side in one app, a plain DataTable and a QuickCells table, get the same
columns, rows and cursor; every line each renders must be the same segments (text, style,
meta). The cells are random: printable ASCII with leading and trailing spaces, longer and
shorter than fixed-width columns, left, right and centre justified, plus cells the quick
path must leave to DataTable (styled text, spans, wide and control characters, numbers).
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from rich.text import Text
from textual.app import App, ComposeResult
from textual.containers import Horizontal
from textual.coordinate import Coordinate
from textual.strip import Strip
from textual.widgets import DataTable

from netobserv_tui.tui.widgets import FlowTable
from netobserv_tui.tui.widgets.quick_cells import QuickCells, quick_text, quick_width

SIZE = (160, 30)
ROWS = 24
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789.:-_/[] ABC"


class Pair(App[None]):
    # The fixed cursor looks like the cursor by default: underlined, a cell painted with
    # the wrong one shows.
    CSS = """
    DataTable { width: 1fr; height: 100%; }
    DataTable > .datatable--fixed-cursor { text-style: underline; }
    """

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield DataTable(id="plain", cursor_type="row", zebra_stripes=True)
            yield QuickCells(id="quick", cursor_type="row", zebra_stripes=True)


def random_cell(rnd: random.Random) -> Any:
    kind = rnd.random()
    plain = "".join(rnd.choice(ALPHABET) for _ in range(rnd.randrange(0, 30)))
    if rnd.random() < 0.2:
        plain = " " * rnd.randrange(1, 4) + plain + " " * rnd.randrange(0, 4)
    justify = rnd.choice(("left", "right", "center", None))
    if kind < 0.80:
        return Text(plain, justify=justify, end="")
    if kind < 0.84:
        return Text(plain, style="bold red", justify=justify)
    if kind < 0.88:
        text = Text(plain + "x", justify=justify)
        text.stylize("italic", 0, 1)
        return text
    if kind < 0.92:
        return Text("名前" + plain, justify=justify)
    if kind < 0.95:
        return Text(plain + "\tend\x07", justify=justify)
    if kind < 0.98:
        return rnd.randrange(-5, 10**9)
    return None


def segments(strip: Strip) -> list[tuple[str, Any]]:
    return [(segment.text, segment.style) for segment in strip.simplify()]


@pytest.mark.parametrize("seed", range(16))
async def test_quick_cells_paint_what_data_table_paints(seed: int) -> None:
    """Every cursor type, a hover, zebra stripes or not, row labels or fixed columns on
    some (DataTable's own path for the line, quick cells still)."""
    rnd = random.Random(seed)
    app = Pair()
    async with app.run_test(size=SIZE) as pilot:
        plain = app.query_one("#plain", DataTable)
        quick = app.query_one("#quick", QuickCells)
        widths = [rnd.choice((None, None, 1, 4, 9, 16)) for _ in range(rnd.randrange(1, 7))]
        rows = [[random_cell(rnd) for _ in widths] for _ in range(ROWS)]
        labels = [f"r{i}" for i in range(ROWS)] if seed % 8 == 5 else [None] * ROWS
        fixed = seed % 8 == 6
        # On a fixed column, the cursor has the fixed cursor's style too.
        cursor = Coordinate(rnd.randrange(ROWS), 0 if fixed else rnd.randrange(len(widths)))
        hover = Coordinate(rnd.randrange(ROWS), rnd.randrange(len(widths)))
        for table in (plain, quick):
            table.cursor_type = ("row", "cell", "column", "none")[seed % 4]
            table.zebra_stripes = seed % 3 != 2
            table.fixed_columns = 1 if fixed else 0
            for index, width in enumerate(widths):
                table.add_column(f"c{index}", width=width)
            for row, label in zip(rows, labels, strict=True):
                table.add_row(*row, label=label)
            table.move_cursor(row=cursor.row, column=cursor.column, animate=False)
            table.hover_coordinate = hover
            table._show_hover_cursor = seed % 2 == 0
        # Unfocused, then each one focused in turn (its cursor looks different then).
        app.set_focus(None)
        await pilot.pause()
        assert painted(quick) == painted(plain)
        quick.focus()
        await pilot.pause()
        ours = painted(quick)
        plain.focus()
        await pilot.pause()
        assert ours == painted(plain)
        assert [c.content_width for c in quick.ordered_columns] == \
            [c.content_width for c in plain.ordered_columns]


def painted(table: DataTable[Any]) -> list[list[tuple[str, Any]]]:
    """Every line of ``table`` as it paints it now, from empty caches."""
    table._clear_caches()
    lines = table.render_lines(table.region.reset_offset)
    assert len(lines) == table.size.height > ROWS // 2
    return [segments(line) for line in lines]


async def test_plain_cells_take_the_quick_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the header goes through DataTable's cell rendering when every cell is plain."""
    calls: list[int] = []
    original = DataTable._render_cell

    def counting(self: DataTable[Any], row_index: int, *args: Any, **kwargs: Any) -> Any:
        calls.append(row_index)
        return original(self, row_index, *args, **kwargs)

    monkeypatch.setattr(DataTable, "_render_cell", counting)
    app = Pair()
    async with app.run_test(size=SIZE) as pilot:
        quick = app.query_one("#quick", QuickCells)
        quick.add_columns("a", "b")
        quick.add_rows([[Text(f"198.18.0.{i}:53"), Text(str(i), justify="right")]
                        for i in range(ROWS)])
        await pilot.pause()
        calls.clear()
        quick._clear_caches()
        for y in range(quick.size.height):
            quick.render_line(y)
        assert calls and set(calls) == {-1}


@pytest.mark.parametrize(
    ("plain", "justify", "width", "expected"),
    [
        ("abc", "left", 5, "abc  "),
        ("abc", None, 2, "ab"),
        ("abc  ", "left", 5, "abc  "),
        (" abc ", "right", 5, "  abc"),
        ("abcdef", "right", 4, "abcd"),
        ("ab", "center", 5, " ab  "),
        ("", "right", 3, "   "),
        ("abc", "full", 5, None),
        ("abc", "left", 0, None),
        ("a\tb", "left", 5, None),
        ("é", "left", 5, None),
    ],
)
def test_quick_text(plain: str, justify: str | None, width: int, expected: str | None) -> None:
    assert quick_text(plain, justify, width) == expected


def test_quick_width() -> None:
    assert quick_width(None) == 0
    assert quick_width(Text("198.18.0.1:53")) == 13
    assert quick_width(Text("x", style="bold")) is None
    assert quick_width(Text("名前")) is None
    assert quick_width("markup [b]str[/b]") is None


class OneFlowTable(App[None]):
    CSS = "FlowTable { height: 100%; }"

    def compose(self) -> ComposeResult:
        yield FlowTable(id="flows")


async def test_a_rebuilt_table_is_measured_before_the_next_paint() -> None:
    """The flows table measures the rows of a rebuild at once (measure_now), not when the
    message queue is next idle: a paint in between showed the cells cut to the old column
    widths and made a second paint a frame later (bench_tui: keystrokes 48-52 ms instead
    of ~30). The widths are those DataTable's own measure gives."""
    app = OneFlowTable()
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(FlowTable)
        await pilot.pause()
        records = [{"SrcAddr": f"fd00:198:18::{i:x}", "SrcPort": 40000 + i,
                    "DstAddr": "198.18.0.12", "DstPort": 53, "Proto": 17,
                    "Interface": f"nobs-pod-{'abc'[i % 3]}-long-name", "Bytes": 10 ** i,
                    "Packets": i, "TimeFlowEndMs": 1_796_618_038_000 + i} for i in range(12)]
        table.add_records(records)
        table.flush()  # no await: nothing ran in between
        assert not table._require_update_dimensions
        measured = [column.content_width for column in table.ordered_columns]
        rows = [[cell.plain for cell in table.get_row_at(i)] for i in range(table.row_count)]
        assert table.row_count == len(records)
        assert measured == [max(len(column.label.plain), *(len(row[i]) for row in rows))
                            for i, column in enumerate(table.ordered_columns)]
        assert max(measured) > len("Source")  # the rows widened their columns
        # DataTable's own measure, when idle, finds the same widths.
        table._require_update_dimensions = True
        table._new_rows.update(table.rows)
        for column in table.ordered_columns:
            column.content_width = len(column.label.plain)
        DataTable._update_dimensions(table, list(table.rows))
        assert [column.content_width for column in table.ordered_columns] == measured
