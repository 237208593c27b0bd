"""SVG snapshots of the packets UI (a saved pcapng, in UTC) at 140x36: the Packets and
Conversations views, the names columns, and a decoded packet.  Accept a deliberate change of
the look with ``pytest tests/tui/test_tui_packets_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_tui_packets import loaded, saved
from textual.pilot import Pilot

from netobserv_tui.store.pcap import PacketFile
from netobserv_tui.tui.packets import PacketsApp

SIZE = (140, 36)
Compare = Callable[..., bool]


pytestmark = pytest.mark.usefixtures("utc")  # times on screen in UTC (conftest.py)


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PacketsApp:
    monkeypatch.chdir(tmp_path)  # the screen shows the file's path: keep it the same
    path = saved(Path("capture.pcapng"))
    return PacketsApp(PacketFile(path), {"output": "capture.pcapng"}, refresh_interval=0.05)


def settled(*keys: str) -> Callable[[Pilot[Any]], Any]:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, PacketsApp)
        await loaded(pilot, app, 6)
        for key in keys:
            await pilot.press(key)
        await pilot.pause(0.3)
        await pilot.wait_for_scheduled_animations()

    return run_before


@pytest.mark.parametrize(
    ("name", "keys"),
    [("packets", ()), ("conversations", ("right",)), ("names", ("pagedown",)),
     ("decoded", ("down", "down", "down", "enter"))],
)
def test_view(snap_compare: Compare, app: PacketsApp, name: str, keys: tuple[str, ...]) -> None:
    assert snap_compare(app, terminal_size=SIZE, run_before=settled(*keys))
