"""Header: what is captured where; elapsed time, totals and stream state; why a stream was lost."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from textual.content import Content
from textual.widget import Widget

from ..columns import duration, human_bytes

#: Header keys with a fixed place; any other key is shown as ``key: value`` on line one.
KNOWN_KEYS = ("target", "capture", "output", "max_time", "max_bytes")


class CaptureHeader(Widget):
    """Header of the flows app.

    ``info`` comes from the capture controller: ``target`` (``local host`` or a cluster
    context), ``capture`` (what is captured, ``flows``), ``output`` (directory), and optional
    limits ``max_time`` (seconds) and ``max_bytes`` (bytes), all as strings.
    """

    def __init__(self, info: Mapping[str, str], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._info = dict(info)
        self._stats: dict[str, Any] = {}
        self._state = "connecting…"
        self._lost_reason = ""
        self._started = time.monotonic()

    def on_mount(self) -> None:
        self._started = time.monotonic()
        self.set_interval(1.0, self.refresh)

    def show_connecting(self, address: str) -> None:
        self._set_state(f"connecting to {address}…")

    def show_live(self, capture_name: str) -> None:
        self._set_state(f"● live {capture_name}".rstrip())

    def show_lost(self, reason: str) -> None:
        self._lost_reason = reason
        self._set_state("✖ stream lost")

    def show_stats(self, stats: Mapping[str, Any]) -> None:
        self._stats = dict(stats)
        self.refresh()

    def _set_state(self, text: str) -> None:
        self._state = text
        self.set_class(bool(self._lost_reason), "-lost")
        self.refresh(layout=True)

    def render(self) -> Content:
        lines = [self._what_line(), self._progress_line()]
        if self._lost_reason:
            lines.append(Content.styled(self._lost_reason, "bold"))
        return Content("\n").join(lines)

    def _what_line(self) -> Content:
        info = self._info
        extras = [f"{k}: {v}" for k, v in info.items() if k not in KNOWN_KEYS]
        return Content.assemble(
            ("netobserv", "bold"),
            "  ",
            (info.get("capture", "flows"), "bold"),
            " on ",
            (info.get("target", "?"), "bold"),
            "  → ",
            info.get("output", "?"),
            *(f"  {extra}" for extra in extras),
        )

    def _progress_line(self) -> Content:
        stats = self._stats
        elapsed = duration(time.monotonic() - self._started)
        max_time = self._info.get("max_time")
        if max_time:
            elapsed += f" / {_seconds(max_time)}"
        volume = f"bytes {_count(stats.get('bytes'))}"
        max_bytes = self._info.get("max_bytes")
        if max_bytes:
            volume += f" / {_size(max_bytes)}"
        return Content.assemble(
            f"elapsed {elapsed}",
            f"   flows {_count(stats.get('flows'))}",
            f"   {volume}",
            f"   packets {_count(stats.get('packets'))}",
            f"   agents {_count(stats.get('agents'))}",
            "   ",
            (self._state, "bold"),
        )


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "–"


def _seconds(text: str) -> str:
    try:
        return duration(float(text))
    except ValueError:
        return text


def _size(text: str) -> str:
    try:
        return human_bytes(int(text))
    except ValueError:
        return text
