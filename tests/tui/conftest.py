"""Fixtures of the TUI tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tui_helpers import FakeAggregator


@pytest.fixture
async def aggregator() -> AsyncIterator[FakeAggregator]:
    server = FakeAggregator()
    await server.start()
    yield server
    await server.close()
