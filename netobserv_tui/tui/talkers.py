"""The Top talkers view's list: one row per talker (bytes, share, packets, flows, top peers)
and the filter chips that Enter applies (:mod:`netobserv_tui.store.talkers` computes them).

Names and addresses come from the capture: shown as :class:`rich.text.Text`, never parsed as
markup.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text

from ..model.units import human_bytes
from ..store.talkers import Talker
from .widgets.lists import ReportList

#: Shown before the chips of a talker whose chips also show other flows.
NOT_EXACT = "≈ "


def talker_cells(rank: int, talker: Talker) -> tuple[Text, ...]:
    """The row of ``talker`` (``rank`` from 1): what the list shows, as plain texts."""
    peers = ", ".join(f"{name} {human_bytes(count)}" for name, count in talker.peers)
    chips = "  ".join(talker.chips)
    return (
        Text(str(rank), justify="right"),
        Text(talker.name, style="bold"),
        Text(human_bytes(talker.bytes), justify="right"),
        Text(f"{talker.share:.1%}", justify="right"),
        Text(f"{talker.packets:,}", justify="right"),
        Text(f"{talker.flows:,}", justify="right"),
        Text(peers),
        Text(chips if talker.exact else NOT_EXACT + chips),
    )


class TalkersList(ReportList[Talker]):
    """The top talkers, most bytes first; Enter (or a click) on one posts :class:`Chosen`."""

    DEFAULT_CSS = """
    TalkersList {
        height: 1fr;
    }
    """

    COLUMNS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("#", "rank"), ("Talker", "talker"), ("Bytes", "bytes"), ("Share", "share"),
        ("Packets", "packets"), ("Flows", "flows"), ("Top peers", "peers"),
        ("Enter filters with", "chips"),
    )
    EMPTY_COLUMN = 1

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(empty_text="Counting the talkers…", id=id)

    @property
    def talkers(self) -> tuple[Talker, ...]:
        return self.items

    def add_item(self, index: int, item: Talker) -> None:
        self.add_row(*talker_cells(index + 1, item))
