"""The header's rate line: bytes/s over the last minute as a sparkline (``▁▃▅█▇``).

Plain Python without Textual.  :class:`ByteRate` takes the capture's byte counter each time
the aggregator sends it (STATS, about twice a second: exact totals, even when the live
stream skips batches) with the time it arrived, and spreads each increase evenly over the
time since the previous one, second by second.  :meth:`ByteRate.per_second` gives the
seconds that are complete (up to the latest counter), oldest first, at most
:data:`WINDOW` of them.  :func:`sparkline` draws them in a given number of cells (several
seconds per cell when needed, averaged), :func:`rate_line` adds the peak as a figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from ..model.units import human_bytes

#: Seconds shown.
WINDOW: Final = 60
#: The eight heights, lowest first.
BARS: Final = "▁▂▃▄▅▆▇█"
#: Cells the sparkline takes when there is room; fewer down to MIN_CELLS, else none.
CELLS: Final = 20
MIN_CELLS: Final = 8


class ByteRate:
    """Bytes per second, from a cumulative byte counter sampled at arbitrary times."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        #: Bytes counted in each second (``int(time)``) since the first sample.
        self._seconds: dict[int, float] = {}
        self._last: tuple[float, int] | None = None
        self._first_second: int | None = None

    def clear(self) -> None:
        """Forget everything (the stream was lost: its rates would be stale)."""
        self._seconds.clear()
        self._last = None
        self._first_second = None

    def add(self, now: float, total: int) -> None:
        """The counter read ``total`` bytes at ``now`` (seconds, any monotonic clock).  A
        counter or a clock that went back starts a new baseline."""
        last = self._last
        if last is not None and now == last[0] and total >= last[1]:
            return  # no time to spread it over: the next sample brings it
        self._last = (now, total)
        if last is None or now < last[0] or total < last[1]:
            self._seconds.clear()
            self._first_second = math.ceil(now)  # a partial first second would look slow
            return
        start, before = last
        # Evenly over [start, now): each second gets its share of the increase.
        per_second = (total - before) / (now - start)
        second = math.floor(start)
        while second < now:
            overlap = min(now, second + 1) - max(start, second)
            if overlap > 0:
                self._seconds[second] = self._seconds.get(second, 0.0) + per_second * overlap
            second += 1
        oldest = math.floor(now) - self.window - 1
        for key in [key for key in self._seconds if key < oldest]:
            del self._seconds[key]

    def per_second(self) -> list[float]:
        """Bytes in each complete second, oldest first: the seconds from the first sample
        up to the one before the latest sample's, at most ``window`` of them."""
        if self._last is None or self._first_second is None:
            return []
        end = math.floor(self._last[0])  # this second is still being counted
        start = max(self._first_second, end - self.window)
        return [self._seconds.get(second, 0.0) for second in range(start, end)]


def sparkline(values: Sequence[float], cells: int, span: int = WINDOW) -> str:
    """``values`` (one per second, oldest first) in at most ``cells`` characters: each
    character is the mean of ``ceil(span / cells)`` seconds, counted from the newest (the
    oldest character may cover fewer); heights relative to the largest character."""
    if cells <= 0 or not values:
        return ""
    step = max(1, math.ceil(span / cells))
    means: list[float] = []
    end = len(values)
    while end > 0 and len(means) < cells:
        group = values[max(0, end - step):end]
        means.append(sum(group) / len(group))
        end -= step
    means.reverse()
    peak = max(means)
    if peak <= 0:
        return BARS[0] * len(means)
    top = len(BARS) - 1
    return "".join(BARS[min(top, int(mean * len(BARS) / peak))] for mean in means)


def per_second_text(rate: float) -> str:
    """``1.2 MB/s``."""
    return f"{human_bytes(rate)}/s"


def rate_text(values: Sequence[float], cells: int) -> str:
    """``▁▂▅█▃ max 1.2 MB/s``: the sparkline of ``values`` in at most ``cells`` characters
    and the fastest second; "" without values."""
    if not values:
        return ""
    return f"{sparkline(values, cells)} max {per_second_text(max(values))}"


def rate_line(values: Sequence[float], width: int) -> str:
    """:func:`rate_text` in at most ``width`` cells, with at most :data:`CELLS` characters of
    sparkline; "" when there is nothing to show yet or room for fewer than
    :data:`MIN_CELLS`."""
    if not values:
        return ""
    label = len(rate_text(values, 0))
    cells = min(CELLS, width - label)
    if cells < MIN_CELLS:
        return ""
    return rate_text(values, cells)
