"""What the TUI's process is set up with: the cyclic garbage collector kept out of the way
of keystrokes, and Textual's frame rate."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest

from netobserv_tui.cli import main
from netobserv_tui.tui import FPS
from netobserv_tui.tui.collector import YOUNG, quiet_collector


class _Holder:
    """A container the collector tracks."""

    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_quiet_collector_freezes_what_exists_and_collects_the_young_less_often() -> None:
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    kept = [_Holder() for _ in range(100)]
    with quiet_collector():
        assert gc.get_threshold() == (YOUNG, *before[1:])
        # What existed is out of every walk: the collector no longer sees it.
        assert gc.get_freeze_count() >= len(kept)
        walked = {id(obj) for obj in gc.get_objects()}
        assert not any(id(holder) in walked for holder in kept)
        # A cycle made while the TUI runs dies young, in a collection that the next
        # YOUNG allocations make by themselves.
        young = weakref.ref(_Holder())
        churn: list[list[int]] = [[] for _ in range(2 * YOUNG)]
        assert young() is None
        del churn
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    walked = {id(obj) for obj in gc.get_objects()}
    assert all(id(holder) in walked for holder in kept)


def test_quiet_collector_restores_the_settings_when_the_tui_fails() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), quiet_collector():
        raise RuntimeError("the app crashed")
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


class _Terminal:
    """stdin/stdout as `netobserv open` sees them in a real terminal."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def isatty(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@pytest.mark.parametrize("kind", ["flows", "packets"])
def test_open_runs_its_app_with_the_quiet_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """`netobserv open` of a flow capture and of a packet capture: the app runs with the
    TUI's collector settings, and the process gets Python's back once it ends."""
    from netobserv_tui.tui.app import FlowsApp
    from netobserv_tui.tui.packets import PacketsApp

    app_class: type[Any]
    if kind == "flows":
        from netobserv_tui.aggregator.writers import FlowWriter

        writer = FlowWriter(tmp_path)
        writer.write_batch(["SrcAddr", "Bytes", "Packets"], [["198.18.0.1", 60, 1]])
        writer.close()
        path, app_class = writer.db_path, FlowsApp
    else:
        from netobserv_tui.aggregator.pcapng import PcapngWriter

        path, app_class = tmp_path / "capture.pcapng", PacketsApp
        PcapngWriter.create(path, application="test").close()
    seen: list[tuple[tuple[int, ...], int]] = []

    def run(self: Any, *args: Any, **kwargs: Any) -> None:
        seen.append((gc.get_threshold(), gc.get_freeze_count()))

    monkeypatch.setattr(app_class, "run", run)
    monkeypatch.setattr(sys, "stdin", _Terminal(sys.stdin))
    monkeypatch.setattr(sys, "stdout", _Terminal(sys.stdout))
    before = gc.get_threshold()
    assert main(["open", str(path)]) == 0
    assert len(seen) == 1
    threshold, frozen = seen[0]
    assert threshold[0] == YOUNG and frozen > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


@pytest.mark.parametrize(("environment", "expected"), [(None, FPS), ("30", 30)])
def test_netobserv_sets_textuals_frame_rate_unless_the_environment_does(
    environment: str | None, expected: int
) -> None:
    """Textual reads TEXTUAL_FPS once, when first imported: a fresh `netobserv` process that
    starts its TUI gets netobserv's rate, and a rate set in the environment wins."""
    env = {k: v for k, v in os.environ.items() if k != "TEXTUAL_FPS"}
    if environment is not None:
        env["TEXTUAL_FPS"] = environment
    code = ("import netobserv_tui.cli, netobserv_tui.tui.app, textual.constants as c; "
            "print(c.MAX_FPS)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert int(out) == expected != 60
