"""SVG snapshots of every view, the details and the help screen, at 140x36.

The app browses a fixed capture (tests/tui/fixtures/lab-capture.json, records of a real lab
run written again by the real writer), in UTC, so every pixel is reproducible.  After a
deliberate change of the look, review the new pictures and accept them with
``pytest tests/tui/test_tui_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fixture_capture import fixture_capture
from rich.cells import cell_len
from textual.coordinate import Coordinate
from textual.pilot import Pilot
from tui_helpers import wait_until

from netobserv_tui.store import open_store
from netobserv_tui.tui.app import FlowsApp
from netobserv_tui.tui.findings import FindingsList
from netobserv_tui.tui.widgets import FlowTable
from netobserv_tui.tui.widgets.filter_bar import FilterBar

SIZE = (140, 36)
Compare = Callable[..., bool]


pytestmark = pytest.mark.usefixtures("utc")  # times on screen in UTC (conftest.py)


@pytest.fixture
def app(tmp_path: Path) -> FlowsApp:
    db = fixture_capture(tmp_path).db_path
    header = {"output": "fixtures/lab-capture.db"}
    return FlowsApp(None, header, store=open_store(db), refresh_interval=0.05)


def columns_fit(table: FlowTable) -> bool:
    """Every column of the table is sized for its widest cell (and no resize is pending)."""
    if getattr(table, "_require_update_dimensions", False):
        return False
    for index, column in enumerate(table.ordered_columns):
        cells = (table.get_cell_at(Coordinate(row, index)) for row in range(table.row_count))
        if column.content_width < max((cell_len(str(cell)) for cell in cells), default=0):
            return False
    return True


def painted(app: FlowsApp, table: FlowTable) -> bool:
    """The screen, as a snapshot sees it, shows the first row's cells whole."""
    if not table.row_count or app.screen is not table.screen:
        return True
    svg = app.export_screenshot()
    shown = html.unescape("".join(re.findall(r">([^<>]*)</text>", svg))).replace("\xa0", " ")
    right, cells = 0, []
    for index, column in enumerate(table.ordered_columns):
        right += column.get_render_width(table)
        if right > table.size.width:  # off screen, to the right
            break
        cells.append(str(table.get_cell_at(Coordinate(0, index))))
    return all(cell in shown for cell in cells)


def settled(*keys: str, then: tuple[str, ...] = ()) -> Callable[[Pilot[Any]], Any]:
    """Wait for the file's rows, press ``keys``, wait until searches are done and the table
    is painted; then press ``then`` (keys that open a screen over the table)."""

    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, FlowsApp)
        app.query_one(FilterBar).input.cursor_blink = False
        table = app.query_one(FlowTable)
        await wait_until(pilot, lambda: table.row_count > 0, "the file's rows")
        # The header's findings line comes once they are computed.
        await wait_until(pilot, lambda: app.findings_runs > 0, "the findings")
        for key in keys:
            await pilot.press(key)
        await wait_until(pilot, lambda: "searching" not in app.status_text(), "the search")
        # The table rebuilt with the result (it rebuilds on a timer), then painted.
        await wait_until(
            pilot, lambda: table.row_count == min(table.fit_rows(), len(table.latest()))
            and table.shown_records() == table.latest()[: table.row_count], "the rebuild")
        # DataTable sizes its columns from the new rows when idle: a picture taken before
        # shows narrow, cut columns. Wait until every column is as wide as its cells.
        await wait_until(pilot, lambda: columns_fit(table), "the column widths")
        # ... and painted with them: the table may have been painted just before its widths
        # changed, and under load the picture could show that older paint.
        await wait_until(pilot, lambda: painted(pilot.app, table), "the paint")
        if then:
            screens = len(app.screen_stack)
            for key in then:
                await pilot.press(key)
            await wait_until(pilot, lambda: len(app.screen_stack) > screens, "the screen")
        await pilot.pause(0.1)
        await pilot.wait_for_scheduled_animations()

    return run_before


@pytest.mark.parametrize(
    ("name", "keys"),
    [
        ("overview", ()),
        ("drops", ("right",)),
        ("dns", ("right", "right")),
        ("rtt", ("right", "right", "right")),
        ("raw", ("left", "left")),
        ("overview_all_enrichment", ("pageup", "pageup")),
    ],
)
def test_view(snap_compare: Compare, app: FlowsApp, name: str, keys: tuple[str, ...]) -> None:
    assert snap_compare(app, terminal_size=SIZE, run_before=settled(*keys))


def test_findings_view(snap_compare: Compare, app: FlowsApp) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        assert isinstance(pilot.app, FlowsApp)
        app = pilot.app
        app.query_one(FilterBar).input.cursor_blink = False
        await wait_until(pilot, lambda: app.findings_runs > 0, "the findings")
        await pilot.press("left")
        await wait_until(pilot, lambda: app.query_one(FindingsList).row_count == 7, "the rows")
        await pilot.pause(0.1)
        await pilot.wait_for_scheduled_animations()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_filter_chips(snap_compare: Compare, app: FlowsApp) -> None:
    keys = (*"nobs-pod-b", "enter", *"Proto=tcp", "enter")
    assert snap_compare(app, terminal_size=SIZE, run_before=settled(*keys))


def test_details(snap_compare: Compare, app: FlowsApp) -> None:
    # The table behind settles before the details open over it (its column widths).
    assert snap_compare(app, terminal_size=SIZE, run_before=settled("right", then=("enter",)))


def test_help(snap_compare: Compare, app: FlowsApp) -> None:
    assert snap_compare(app, terminal_size=SIZE, run_before=settled("question_mark"))
