"""Fixtures of the TUI tests."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest
from tui_helpers import FakeAggregator


@pytest.fixture
async def aggregator() -> AsyncIterator[FakeAggregator]:
    server = FakeAggregator()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC for the test (times shown on screen do not depend on the machine)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()
