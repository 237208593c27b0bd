"""Screens over the flows table: the details of one record, and the keys.

:func:`detail_rows` is plain Python (tested without Textual): every field of a record in the
canonical order of ``model.fields``, with its value, a readable form where the raw value is
a code (protocol number, TCP flags bits, epoch milliseconds, nanoseconds, a direction), and
what the field means.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, ClassVar, Final

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from ..model.fields import BY_NAME, FIELD_NAMES
from ..model.units import human_bytes
from .columns import proto_name, tcp_flags

_DIRECTION: Final = {0: "ingress", 1: "egress"}


def _epoch_ms(ms: Any) -> str:
    return datetime.fromtimestamp(ms / 1000).isoformat(sep=" ", timespec="milliseconds")


def _rtt(ns: Any) -> str:
    return f"{ns / 1e6:.3f} ms"


_READABLE: Final[dict[str, Callable[[Any], str]]] = {
    "Proto": proto_name,
    "Flags": tcp_flags,
    "PktDropLatestFlags": tcp_flags,
    "TimeFlowStartMs": _epoch_ms,
    "TimeFlowEndMs": _epoch_ms,
    "TimeReceived": lambda s: datetime.fromtimestamp(s).isoformat(sep=" ", timespec="seconds"),
    "IfDirection": lambda d: _DIRECTION.get(d, ""),
    "FlowDirection": lambda d: _DIRECTION.get(d, ""),
    "IfDirections": lambda ds: ",".join(_DIRECTION.get(d, str(d)) for d in ds),
    "Bytes": human_bytes,
    "PktDropBytes": human_bytes,
    "TimeFlowRttNs": _rtt,
}


def detail_rows(record: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """``(field, value, readable, meaning)`` for every non-NULL field of ``record``.

    Known fields come in the order of ``model.fields``; fields this version does not know
    (a newer agent's) follow in the record's order, so nothing is hidden.
    """
    names = [name for name in FIELD_NAMES if record.get(name) is not None]
    names += [name for name in record if name not in BY_NAME and record[name] is not None]
    rows = []
    for name in names:
        value = record[name]
        raw = json.dumps(value) if isinstance(value, list) else str(value)
        readable = ""
        convert = _READABLE.get(name)
        if convert is not None:
            try:
                readable = convert(value)
            except (TypeError, ValueError, OverflowError, OSError):
                readable = ""
        if readable == raw:
            readable = ""
        meaning = BY_NAME[name].doc if name in BY_NAME else "(not a field of this version)"
        rows.append((name, raw, readable, meaning))
    return rows


class DetailsScreen(ModalScreen[None]):
    """Every field of one record; Escape, Enter or ``q`` closes it."""

    DEFAULT_CSS = """
    DetailsScreen {
        align: center middle;
    }
    DetailsScreen > Vertical {
        width: 90%;
        height: 90%;
        border: round $accent;
        background: $panel;
    }
    DetailsScreen #details-title {
        height: 1;
        padding: 0 1;
        text-style: bold;
    }
    DetailsScreen DataTable {
        height: 1fr;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,enter,q", "dismiss", "Close", show=True),
    ]

    def __init__(self, record: Mapping[str, Any], title: str) -> None:
        super().__init__()
        self.record = dict(record)
        self.rows = detail_rows(record)
        self._title = title

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(self._title), id="details-title", markup=False)
            table: DataTable[Text] = DataTable(id="details", cursor_type="row",
                                                zebra_stripes=True)
            yield table

    def on_mount(self) -> None:
        table = self.query_one("#details", DataTable)
        table.add_columns("Field", "Value", "Readable", "Meaning")
        table.add_rows([Text(cell, end="") for cell in row] for row in self.rows)
        table.focus()

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)


#: The keys, as the help screen lists them: (keys, what they do).
HELP_KEYS: Final[tuple[tuple[str, str], ...]] = (
    ("Ctrl+C, Ctrl+Q", "Stop the capture: flush and keep the files, then exit"),
    ("Left / Right", "Previous / next view: Overview, Packet drops, DNS, RTT, Top talkers, Raw, "
                     "Findings"),
    ("Enter", "In the Findings and Top talkers views: filter the flows to the one selected"),
    ("Page Up / Page Down", "Fewer / more enrichment columns (Names, IP & port ... All)"),
    ("Up / Down", "On the filter line: show more / fewer rows"),
    ("letters, digits, ...", "Type a filter; Enter adds it as a chip (all chips must match)"),
    ("  keyword", "Any field contains it (case-insensitive): tcp, 198.18.0.10, NXDomain"),
    ("  Field=value", "One field equals the value: DstPort=53, Proto=udp, Interface=eth0"),
    ("  /regex/", "A regular expression on any field: /^198\\.18\\.0\\.1[0-9]$/"),
    ("Backspace", "On an empty filter line: remove the last chip"),
    ("Escape", "On the filter line: clear every chip; in the table: back to the filter line"),
    ("Tab", "Move between the filter line and the table"),
    ("Up / Down, Home / End", "In the table: move the row cursor"),
    ("Enter", "Show every field of the selected row (empty filter line or in the table)"),
    ("Ctrl+P", "Pause / resume the table (the capture goes on)"),
    ("? or F1", "This help (on an empty filter line or in the table)"),
)


class HelpScreen(ModalScreen[None]):
    """The keys; Escape, ``?``, F1 or ``q`` closes it.  A subclass for another app sets
    :attr:`HEADING` and :attr:`KEYS` only (defining ``on_mount`` again would make Textual
    run both)."""

    HEADING: ClassVar[str] = "netobserv keys"
    KEYS: ClassVar[tuple[tuple[str, str], ...]] = HELP_KEYS

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    HelpScreen > Vertical {
        width: auto;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: round $accent;
        background: $panel;
        padding: 0 1;
    }
    HelpScreen DataTable {
        height: auto;
        width: auto;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,f1,q", "dismiss", "Close", show=True),
    ]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(self.HEADING, style="bold"), markup=False)
            table: DataTable[Text] = DataTable(id="help-keys", cursor_type="none",
                                                show_header=False)
            yield table

    def on_mount(self) -> None:
        table = self.query_one("#help-keys", DataTable)
        table.add_columns("Keys", "Action")
        table.add_rows([Text(keys, style="bold", end=""), Text(what, end="")]
                       for keys, what in self.KEYS)

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
