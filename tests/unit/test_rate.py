"""The header's rate line: a byte counter sampled at arbitrary times, bytes per second, the
sparkline and the item that fits a width."""

from __future__ import annotations

import pytest

from netobserv_tui.tui.rate import (
    BARS,
    ByteRate,
    per_second_text,
    rate_line,
    rate_text,
    sparkline,
)


def test_increases_are_spread_evenly_over_the_seconds_between_samples() -> None:
    rate = ByteRate()
    assert rate.per_second() == []
    rate.add(100.5, 0)
    rate.add(101.0, 500)  # 1000 B/s from 100.5: second 100 is partial, not shown
    rate.add(102.0, 1500)  # 1000 B/s
    rate.add(103.5, 4500)  # 2000 B/s: second 102 whole, 103 half (still counting)
    assert rate.per_second() == [1000.0, 2000.0]
    rate.add(104.25, 6000)  # 2000 B/s: 103 complete (1000 + 1000)
    assert rate.per_second() == [1000.0, 2000.0, 2000.0]


def test_a_sample_at_the_same_time_is_counted_with_the_next() -> None:
    rate = ByteRate()
    rate.add(10.0, 0)
    rate.add(11.0, 100)
    rate.add(11.0, 300)
    rate.add(12.0, 700)  # 600 bytes since 11.0
    assert rate.per_second() == [100.0, 600.0]


def test_a_counter_that_goes_back_starts_over() -> None:
    rate = ByteRate()
    rate.add(10.0, 1000)
    rate.add(11.0, 2000)
    rate.add(12.0, 50)  # another aggregator's counter
    assert rate.per_second() == []
    rate.add(13.0, 150)
    assert rate.per_second() == [100.0]
    rate.clear()
    assert rate.per_second() == []


def test_at_most_a_window_of_seconds() -> None:
    rate = ByteRate(window=60)
    for second in range(200):
        rate.add(float(second), second * 10)
    values = rate.per_second()
    assert values == [10.0] * 60
    assert len(rate._seconds) <= 62


def test_sparkline_heights() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7], 8, span=8) == BARS
    assert sparkline([0.0, 0.0], 8, span=8) == "▁▁"
    assert sparkline([], 8) == "" and sparkline([1.0], 0) == ""


def test_sparkline_groups_seconds_from_the_newest() -> None:
    # 60 s in 20 cells: 3 s per cell.
    values = [0.0] * 57 + [30.0, 30.0, 30.0]
    assert sparkline(values, 20) == "▁" * 19 + "█"
    # 7 s in 20 cells of 3 s: the oldest cell has one second.
    assert sparkline([4.0, 0.0, 0.0, 0.0, 8.0, 8.0, 8.0], 20) == "▅▁█"
    # Fewer cells than seconds: ceil(60 / 7) = 9 s per cell, at most 7 cells.
    assert len(sparkline([1.0] * 60, 7)) == 7


def test_rate_text_and_line() -> None:
    assert per_second_text(1_234_567) == "1.2 MB/s"
    values = [1000.0] * 59 + [2000.0]
    # Heights are relative to the largest cell (the newest 3 s: 1333 B/s), the figure is
    # the fastest second.
    assert rate_text(values, 20) == "▇" * 19 + "█ max 2.0 kB/s"
    assert rate_line(values, 100) == rate_text(values, 20)
    # 27 cells: 14 for the sparkline (5 s per cell, 12 cells), 13 for " max 2.0 kB/s".
    assert rate_line(values, 27) == "▇" * 11 + "█ max 2.0 kB/s"
    assert len(rate_line(values, 21)) == 21  # room for 8 cells: the least shown
    assert rate_line(values, 20) == ""  # room for 7: not shown
    assert rate_line([], 100) == ""


@pytest.mark.parametrize("width", range(21, 60))
def test_rate_line_never_exceeds_its_width(width: int) -> None:
    line = rate_line([float(i) for i in range(60)], width)
    assert len(line) <= width
