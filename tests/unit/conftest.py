"""Fixtures of the unit tests: aggregators that are always stopped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agg_helpers import TOKEN, AggregatorFactory

from netobserv_tui.aggregator.server import Aggregator


@pytest.fixture
async def make_aggregator(tmp_path: Path) -> AsyncIterator[AggregatorFactory]:
    """Start aggregators writing under ``tmp_path``; every one is stopped at teardown."""
    started: list[Aggregator] = []

    async def factory(**kwargs: Any) -> Aggregator:
        kwargs.setdefault("live_interval", 0.02)
        kwargs.setdefault("stats_interval", 0.05)
        agg = Aggregator(kwargs.pop("output", tmp_path / "output"), TOKEN, **kwargs)
        await agg.start()
        started.append(agg)
        return agg

    yield factory
    for agg in started:
        await agg.stop(grace=0)


@pytest.fixture
async def aggregator(make_aggregator: AggregatorFactory) -> Aggregator:
    return await make_aggregator()
