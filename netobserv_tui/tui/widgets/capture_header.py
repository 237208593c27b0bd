"""Header: what is captured where; elapsed time, totals, rates and stream state; limits as
progress; why a stream was lost.  Also shows a saved capture (``show_file``).

Line one says what is captured, on which target and where it is written; line two the
progress, with the last minute's bytes/s as a sparkline (``show_rate``, :mod:`..rate`) when
it has room for one.  Each line is made of items which are packed to the widget's width, so a narrow
terminal gets more lines rather than cut text.  When a line fits with labels (``elapsed``,
``bytes``) it gets them; otherwise the labels that the units make redundant are dropped.

Time comes only from the ``clock`` given to the constructor (``time.monotonic`` by default),
so tests and snapshots can freeze it.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from textual.content import Content
from textual.geometry import Size
from textual.timer import Timer
from textual.widget import Widget

from ...model.units import human_bytes
from ..columns import duration
from ..rate import CELLS, MIN_CELLS, rate_line, rate_text

if TYPE_CHECKING:
    from textual.css.styles import RulesMap

#: Header keys with a fixed place; any other key is shown as ``key: value`` on line one.
KNOWN_KEYS = ("target", "capture", "output", "max_time", "max_bytes")

#: Seconds of clock time over which flows/s and bytes/s are computed.
RATE_WINDOW = 5.0

_SEP = Content("  ")
_NEWLINE = Content("\n")
_UNKNOWN = "–"
#: At most this many STATS samples are kept for the rates (a few per second is the norm).
_MAX_SAMPLES = 256

#: Where ``_progress_items`` puts the flows/s and B/s item.
_RATES_ITEM = 4
#: An item of a line: (short form, long form); the long form carries a label.
_Item = tuple[Content, Content]


class CaptureHeader(Widget):
    """Header of the flows app.

    ``info`` comes from the capture controller: ``target`` (``local host`` or a cluster
    context), ``capture`` (what is captured, ``flows``), ``output`` (directory), and optional
    limits ``max_time`` (seconds) and ``max_bytes`` (bytes), all as strings.

    ``clock`` (seconds, monotonic) is used for the elapsed time and the rates.
    """

    DEFAULT_CSS = """
    CaptureHeader {
        height: auto;
    }
    """

    def __init__(
        self,
        info: Mapping[str, str],
        *,
        id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(id=id)
        self._clock = clock
        self._set_info(info)
        self._started = clock()
        # Stream state
        self._state = "connecting…"
        self._capture_name = ""
        self._lost_reason = ""
        self._paused = False
        #: What the capture warns about (agents that did not connect...), "" if nothing.
        self._warning = ""
        #: The findings line (``3 findings: ...``), "" if nothing is found.
        self._findings = ""
        # Totals and rates
        self._flows: int | None = None
        self._bytes: int | None = None
        self._packets: int | None = None
        self._agents: int | None = None
        self._samples: deque[tuple[float, int, int]] = deque(maxlen=_MAX_SAMPLES)
        self._rates: tuple[float, float] | None = None
        #: Bytes per second of the last minute, oldest first (the rate line).
        self._per_second: tuple[float, ...] = ()
        # File mode: (path, flows, bytes, packets, first_ms, last_ms)
        self._file: tuple[str, int | None, int | None, int | None, int | None,
                          int | None] | None = None
        self._timer: Timer | None = None
        # Cache of the rendered content: (version, elapsed second, width) -> Content
        self._version = 0
        self._cache_key: tuple[int, int, int] | None = None
        self._cache: Content = Content()
        self._what_key: tuple[int, int] | None = None
        self._what: list[Content] = []

    # -- public API ----------------------------------------------------------------------

    def on_mount(self) -> None:
        if self._file is None:
            self._started = self._clock()
            self._timer = self.set_interval(1.0, self._tick)

    def show_connecting(self, address: str) -> None:
        self._lost_reason = ""
        self._set_state(f"connecting to {address}…")

    def show_live(self, capture_name: str) -> None:
        self._lost_reason = ""
        self._capture_name = capture_name
        self._set_state("● live")

    def show_lost(self, reason: str) -> None:
        self._lost_reason = reason
        # Rates of a stream that is gone would be stale; they restart with the next stream.
        self._samples.clear()
        self._rates = None
        self._set_state("✖ stream lost")

    def show_warning(self, text: str) -> None:
        """Lines the capture wants seen under the progress ("" removes them)."""
        self._warning = text
        self.set_class(bool(text), "-warning")
        self._changed()

    def show_findings(self, text: str) -> None:
        """The line that says what the Findings view found ("" removes it)."""
        if text != self._findings:
            self._findings = text
            self._changed()

    def show_paused(self, paused: bool) -> None:
        """The app paused (or resumed) its table; the capture itself goes on."""
        self._paused = paused
        self._set_state(self._state)

    def show_stats(self, stats: Mapping[str, Any]) -> None:
        """A STATS frame: cumulative ``flows``, ``bytes``, ``packets`` and ``agents``."""
        self._flows = _int(stats.get("flows"))
        self._bytes = _int(stats.get("bytes"))
        self._packets = _int(stats.get("packets"))
        self._agents = _int(stats.get("agents"))
        self._add_sample(self._clock(), self._flows, self._bytes)
        self._changed()

    def show_rate(self, per_second: Sequence[float]) -> None:
        """Bytes in each of the last seconds, oldest first: a sparkline after the rates
        when line two has room for it (never an extra line); empty removes it."""
        values = tuple(per_second)
        if values != self._per_second:
            self._per_second = values
            self._changed()

    def show_file(self, totals: Mapping[str, Any], path: str) -> None:
        """Show a saved capture: its totals (``flows``, ``bytes``, ``packets``) and time span
        (``first_ms``, ``last_ms``, epoch milliseconds); no clock runs."""
        self._file = (
            path,
            _int(totals.get("flows")),
            _int(totals.get("bytes")),
            _int(totals.get("packets")),
            _int(totals.get("first_ms")),
            _int(totals.get("last_ms")),
        )
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._changed()

    # -- updates -------------------------------------------------------------------------

    def _set_state(self, text: str) -> None:
        self._state = text
        self.set_class(bool(self._lost_reason), "-lost")
        self.set_class(self._paused, "-paused")
        self._changed()

    def _add_sample(self, now: float, flows: int | None, bytes_: int | None) -> None:
        samples = self._samples
        if flows is None or bytes_ is None:
            return
        if samples:
            last_time, last_flows, last_bytes = samples[-1]
            if flows < last_flows or bytes_ < last_bytes or now < last_time:
                samples.clear()  # counters (or the clock) went back: start over
            elif now == last_time:
                samples.pop()  # two updates at once: keep the newer
        samples.append((now, flows, bytes_))
        # Keep one sample at or before the window's start, so the rates span about
        # RATE_WINDOW seconds (more when updates are further apart than that).
        start = now - RATE_WINDOW
        while len(samples) > 2 and samples[1][0] <= start:
            samples.popleft()
        if len(samples) < 2:
            self._rates = None
            return
        first_time, first_flows, first_bytes = samples[0]
        span = now - first_time
        self._rates = ((flows - first_flows) / span, (bytes_ - first_bytes) / span)

    def _set_info(self, info: Mapping[str, str]) -> None:
        self._info = dict(info)
        self._max_time = _limit(self._info.get("max_time"))
        max_bytes = _limit(self._info.get("max_bytes"))
        self._max_bytes = None if max_bytes is None else int(max_bytes)
        # A limit that is not a number is shown as given, without a percentage.
        self._raw_limits = {k: v for k in ("max_time", "max_bytes")
                            if (v := self._info.get(k)) and not _is_number(v)}

    def set_info(self, info: Mapping[str, str]) -> None:
        """What is captured, once the capture has started (interfaces and features are
        known then); the elapsed time starts over from now."""
        self._set_info(info)
        self._started = self._clock()
        self._changed()

    def _changed(self) -> None:
        self._version += 1
        self._update_display()

    def _tick(self) -> None:
        if self._key(self.size.width) != self._cache_key:
            self._update_display()

    def _update_display(self) -> None:
        """Repaint; also lay out again when the content needs another number of lines."""
        if not self.is_mounted:
            return
        width = self.size.width
        self.refresh(layout=self._height(width) != self.size.height)

    # -- rendering -----------------------------------------------------------------------

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        # The content is packed to the width it is laid out at, not to the current one.
        return self._height(width)

    def _height(self, width: int) -> int:
        if width <= 0:
            return 0
        # RenderStyles answers the RulesMap lookups, as in Widget.get_content_height.
        return self._content(width).get_height(cast("RulesMap", self.styles), width)

    def render(self) -> Content:
        return self._content(self.size.width)

    def _elapsed(self) -> float:
        return max(0.0, self._clock() - self._started)

    def _key(self, width: int) -> tuple[int, int, int]:
        second = -1 if self._file is not None else int(self._elapsed())
        return (self._version, second, width)

    def _content(self, width: int) -> Content:
        key = self._key(width)
        if key != self._cache_key:
            self._cache = self._build(width, key[1])
            self._cache_key = key
        return self._cache

    def _build(self, width: int, elapsed: int) -> Content:
        # Line one only changes with the state; line two (elapsed time) every second.
        if self._what_key != (self._version, width):
            items = self._what_items() if self._file is None else self._file_what_items()
            self._what = _fit(items, width)
            self._what_key = (self._version, width)
        if self._file is not None:
            lines = self._what + _fit(self._file_totals_items(), width)
        else:
            lines = self._what + self._with_rate(self._progress_items(elapsed), width)
        if self._lost_reason:
            lines.append(Content.styled(self._lost_reason, "bold"))
        lines.extend(Content.styled(line, "bold") for line in self._warning.splitlines())
        if self._findings:
            lines.append(Content.styled(self._findings, "bold"))
        return _NEWLINE.join(lines)

    def _what_items(self) -> list[_Item]:
        info = self._info
        items = [_same(Content.styled("netobserv", "bold"))]
        if self._capture_name:
            items.append(_same(Content(self._capture_name)))
        items.append(_same(Content.assemble(
            (info.get("capture", "flows"), "bold"), " on ", (info.get("target", "?"), "bold"),
        )))
        items.append(_same(Content(f"→ {info.get('output', '?')}")))
        items.extend(self._extra_items())
        return items

    def _extra_items(self) -> Iterable[_Item]:
        return (_same(Content(f"{k}: {v}")) for k, v in self._info.items()
                if k not in KNOWN_KEYS)

    def _progress_items(self, elapsed: int) -> list[_Item]:
        timer = duration(elapsed)
        if self._max_time is not None:
            timer += f" / {duration(self._max_time)} {_percent(elapsed, self._max_time)}"
        elif "max_time" in self._raw_limits:
            timer += f" / {self._raw_limits['max_time']}"
        if self._rates is None:
            rates = f"{_UNKNOWN} flows/s {_UNKNOWN} B/s"
        else:
            flows_rate, bytes_rate = self._rates
            rates = f"{_per_second(flows_rate)} flows/s {human_bytes(bytes_rate)}/s"
        state = self._state
        if self._paused:
            state = f"{state} (paused)" if self._lost_reason else "paused"
        return [
            _labelled("elapsed", timer),
            _same(Content(f"flows {_count(self._flows)}")),
            self._bytes_item(),
            _same(Content(f"packets {_count(self._packets)}")),
            _same(Content(rates)),
            _same(Content(f"agents {_count(self._agents)}")),
            _same(Content.styled(state, "bold")),
        ]

    def _with_rate(self, items: list[_Item], width: int) -> list[Content]:
        """Line two with the rate line after the rates: on one line, with the labels if
        they fit, else without; else in the packed lines if it adds none; else not."""
        lines = _fit(items, width)
        values = self._per_second
        if not values or width <= 0:
            return lines
        at = _RATES_ITEM + 1
        for forms in ([item[1] for item in items], [item[0] for item in items]):
            text = rate_line(values, width - _width(forms) - _SEP.cell_length)
            if text:
                return [_SEP.join([*forms[:at], Content(text), *forms[at:]])]
        short = [item[0] for item in items]
        for cells in range(CELLS, MIN_CELLS - 1, -1):
            text = rate_text(values, cells)
            packed = _pack([*short[:at], Content(text), *short[at:]], width)
            if len(packed) <= len(lines) and all(line.cell_length <= width for line in packed):
                return packed
        return lines

    def _bytes_item(self) -> _Item:
        value = self._bytes
        max_bytes = self._max_bytes
        text = _UNKNOWN if value is None else human_bytes(value)
        if max_bytes is not None:
            text += f" / {human_bytes(max_bytes)}"
            if value is not None:
                text += f" {_percent(value, max_bytes)}"
        elif "max_bytes" in self._raw_limits:
            text += f" / {self._raw_limits['max_bytes']}"
        if value is None:
            return _same(Content(f"bytes {text}"))
        return _labelled("bytes", text)

    def _file_what_items(self) -> list[_Item]:
        assert self._file is not None
        info = self._info
        items = [
            _same(Content.styled("netobserv", "bold")),
            _same(Content.assemble("saved capture ", (self._file[0], "bold"))),
        ]
        if "capture" in info or "target" in info:
            items.append(_same(Content.assemble(
                (info.get("capture", "flows"), "bold"), " on ",
                (info.get("target", "?"), "bold"),
            )))
        items.extend(self._extra_items())
        return items

    def _file_totals_items(self) -> list[_Item]:
        assert self._file is not None
        _, flows, bytes_, packets, first_ms, last_ms = self._file
        if first_ms is None or last_ms is None:
            span = f"span {_UNKNOWN}"
        else:
            start = datetime.fromtimestamp(first_ms / 1000).strftime("%Y-%m-%d %H:%M:%S")
            span = f"span {duration(max(0, last_ms - first_ms) / 1000)} from {start}"
        byte_text = _UNKNOWN if bytes_ is None else human_bytes(bytes_)
        return [
            _same(Content(f"flows {_count(flows)}")),
            _labelled("bytes", byte_text) if bytes_ is not None
            else _same(Content(f"bytes {byte_text}")),
            _same(Content(f"packets {_count(packets)}")),
            _same(Content(span)),
        ]


# -- layout ------------------------------------------------------------------------------


def _same(content: Content) -> _Item:
    return (content, content)


def _labelled(label: str, text: str) -> _Item:
    return (Content(text), Content(f"{label} {text}"))


def _width(items: Sequence[Content]) -> int:
    return sum(item.cell_length for item in items) + _SEP.cell_length * (len(items) - 1)


def _fit(items: Sequence[_Item], width: int) -> list[Content]:
    """The long forms on one line when they fit; else the short forms packed into lines."""
    long = [item[1] for item in items]
    if width <= 0 or _width(long) <= width:
        return [_SEP.join(long)]
    return _pack([item[0] for item in items], width)


def _pack(items: Sequence[Content], width: int) -> list[Content]:
    """Greedy packing; an item wider than the line gets a line of its own (and is wrapped
    by Textual)."""
    lines: list[Content] = []
    line: list[Content] = []
    used = 0
    sep = _SEP.cell_length
    for item in items:
        size = item.cell_length
        if line and used + sep + size > width:
            lines.append(_SEP.join(line))
            line, used = [], 0
        used += size + (sep if line else 0)
        line.append(item)
    if line:
        lines.append(_SEP.join(line))
    return lines


# -- formatting --------------------------------------------------------------------------


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _count(value: int | None) -> str:
    return _UNKNOWN if value is None else f"{value:,}"


def _percent(value: float, limit: float) -> str:
    """Floor, capped at 100%."""
    return f"{min(100, int(value * 100 // limit))}%"


def _per_second(rate: float) -> str:
    return f"{rate:.1f}" if 0 < rate < 10 else f"{rate:,.0f}"


def _limit(text: str | None) -> float | None:
    """A positive, finite limit; None when absent, zero or not a number."""
    try:
        value = float(text) if text else 0.0
    except ValueError:
        return None
    return value if 0 < value < math.inf else None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
