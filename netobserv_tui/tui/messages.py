"""App-wide messages, named for what happened.  The stream worker posts the first four."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


@dataclass
class StreamConnected(Message):
    """The aggregator accepted the subscription (WELCOME)."""

    capture: str


@dataclass
class FlowsReceived(Message):
    """A FLOWS batch: positional ``rows`` in the order of ``columns``."""

    columns: list[str]
    rows: list[list[Any]]


@dataclass
class StatsReceived(Message):
    """Cumulative counters of the capture; only the latest one matters."""

    stats: dict[str, Any]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StatsReceived)


@dataclass
class StreamLost(Message):
    """The stream could not be opened or ended; ``reason`` is shown to the user."""

    reason: str


@dataclass
class StopRequested(Message):
    """The capture controller asked the app to exit with ``reason`` as its return value."""

    reason: str
