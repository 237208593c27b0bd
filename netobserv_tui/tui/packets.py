"""The packet capture's app: conversations and packets of a pcapng file, live or saved.

Serves ``netobserv packets`` on this host (the aggregator writes ``output/pcap/<time>.pcapng``;
this app reads it as it grows and follows the live stream for the totals) and ``netobserv
open FILE.pcapng`` (a saved file, no root needed).  The file is read with
:class:`~netobserv_tui.store.pcap.PacketFile`; the live stream is
:class:`~netobserv_tui.model.stream.LiveStream`, of which only the STATS frames are used::

    app = PacketsApp(PacketFile(path), {"output": str(path)})      # netobserv open
    app.run()

    app = PacketsApp(None, {"target": "local host", "capture": "packets"}, starting=True)
    app.show_progress("agent ready")                                 # while it starts
    app.attach((host, port, token), "output/pcap/20240101-120000.pcapng", header)
    reason = await app.run_async()   # "stopped" (Ctrl+C, Ctrl+Q) or request_stop's reason

Same driving API as :class:`~netobserv_tui.tui.app.FlowsApp` (``show_progress``, ``attach``,
``request_stop``, ``run_async``), so ``capture/run.py`` can start either.  The STATS frames
go through :meth:`PacketsApp.update_stats` (written packets and bytes, agents, and the
packets the agents lost, always shown, in red once not zero).

Two views (Left/Right): **Packets**, the newest packets first, and **Conversations**, one row
per 5-tuple (protocol, source, source port, destination, destination port) with its packets,
bytes and first and last times, most bytes first.  Column sets (Page Up/Down): addresses and
ports, Kubernetes names (``SrcK8S_Namespace``/``SrcK8S_Name`` ... from each packet's
comment, the address when there is none), the interface (node, interface, direction), or
all of them.

Keys (the help screen, ``?``, lists them): the table has the focus, so single letters are
keys: ``/`` opens the filter line, ``p`` pauses (live only; Ctrl+P too, as in flows), ``+``
and ``-`` show more or fewer rows (Up/Down on the filter line, as in flows), Enter opens a
packet or a conversation's packets, Backspace/Delete drop the last chip, Escape every chip.

Filter chips: a chip is a keyword that must occur,
case-insensitively, in the row's text; the text of a row is its cells under every column
set (so PageUp/PageDown never change what matches).  Every chip must match.  Enter on a
conversation adds a chip that matches exactly its 5-tuple and shows its packets.

Cost: the file is read in a worker thread (``refresh`` every ``refresh_interval`` when
live), where the conversations are updated from the new packets only and the chips are
tried on the new packets only (a new chip tries every packet once, in that thread).  A
repaint builds the rows on screen only (or the count chosen with Up/Down, at most
``max_rows``): the Packets view indexes the file's packet list, the Conversations view
picks the largest with a heap.  The UI thread never waits for the reader: a repaint that
finds it busy comes back at the next tick.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, NamedTuple, TypeAlias

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Static
from textual.widgets.data_table import RowKey
from textual.worker import Worker, WorkerState

from ..model.stream import LiveStream, StatsUpdate, StreamError
from ..model.units import human_bytes
from ..store.base import StoreError
from ..store.pcap import Layer, PacketFile, PacketSummary, decode_layers, hexdump
from .app import PROGRESS_LINES, STOPPED
from .columns import duration, endpoint
from .messages import StatsReceived, StopRequested, StreamConnected, StreamLost
from .plain import PlainNotifications
from .screens import HelpScreen
from .widgets.capture_header import (
    _UNKNOWN,
    CaptureHeader,
    _count,
    _int,
    _Item,
    _labelled,
    _per_second,
    _percent,
    _same,
)
from .widgets.filter_bar import FilterBar, FilterInput
from .widgets.quick_cells import QuickCells

__all__ = ["HELP_KEYS", "STOPPED", "Chip", "PacketHeader", "PacketScreen", "PacketTable",
           "PacketsApp", "PacketsHelpScreen", "packet_loss"]

#: ``(proto, src, sport, dst, dport)``: a conversation, as ``PacketFile`` keys them.
ConvKey: TypeAlias = tuple[str, str, int | None, str, int | None]

PLACEHOLDER: Final = "type a keyword (any column, any case), then Enter; Escape clears"
VIEW_NAMES: Final = ("Packets", "Conversations")
PACKETS: Final = 0
CONVERSATIONS: Final = 1
ENRICHMENT_NAMES: Final = ("IP & port", "Names", "Interface", "All")
#: Nodes, interfaces or directions listed per conversation before ``…``.
_SEEN_MAX: Final = 3


# ------------------------------------------------------------------------- plain helpers


@functools.lru_cache(maxsize=4096)
def _hms(seconds: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(seconds))


def clock_us(ts_ns: int) -> str:
    """Nanoseconds since the epoch as local ``HH:MM:SS.uuuuuu`` (integer arithmetic)."""
    seconds, ns = divmod(ts_ns, 1_000_000_000)
    return f"{_hms(seconds)}.{ns // 1000:06d}"


def clock_ms_ns(ts_ns: int) -> str:
    """Nanoseconds since the epoch as local ``HH:MM:SS.mmm``."""
    seconds, ns = divmod(ts_ns, 1_000_000_000)
    return f"{_hms(seconds)}.{ns // 1_000_000:03d}"


def _label(fields: Mapping[str, str], prefix: str) -> str:
    name = fields.get(f"{prefix}K8S_Name", "")
    if not name:
        return ""
    namespace = fields.get(f"{prefix}K8S_Namespace", "")
    return f"{namespace}/{name}" if namespace else name


@functools.lru_cache(maxsize=65536)
def comment_names(comment: str) -> tuple[str, str]:
    """``("shop/web-1", "db/pg-0")`` from a packet comment's ``SrcK8S_``/``DstK8S_`` fields;
    ``""`` for an end without a name.  The first value of a field wins."""
    fields: dict[str, str] = {}
    for part in comment.split(";"):
        key, equals, value = part.strip().partition("=")
        if equals:
            fields.setdefault(key, value)
    return _label(fields, "Src"), _label(fields, "Dst")


def conversation_text(key: ConvKey) -> str:
    """``TCP 10.1.0.5:40000 → 10.96.0.10:80``: a conversation chip's text."""
    proto, src, sport, dst, dport = key
    return f"{proto} {endpoint(src, sport)} → {endpoint(dst, dport)}"


def packet_loss(stats: Mapping[str, Any]) -> int | None:
    """Packets lost by the agents (ring full, delivery failed), from a STATS frame's
    ``agent_stats``; None when the frame has no agent counters."""
    agents = stats.get("agent_stats")
    if not isinstance(agents, Mapping):
        return None
    return sum(_int(agents.get(key)) or 0 for key in ("packets_lost", "export_lost_packets"))


# ------------------------------------------------------------------------- conversations


class _Conversation:
    """One 5-tuple's packets, bytes and times, updated in place as packets arrive."""

    __slots__ = ("key", "packets", "bytes", "first_ns", "last_ns", "src_name", "dst_name",
                 "nodes", "interfaces", "directions", "_text")

    def __init__(self, key: ConvKey, p: PacketSummary, names: tuple[str, str]) -> None:
        self.key = key
        self.packets = 1
        self.bytes = p.length
        self.first_ns = self.last_ns = p.ts_ns
        self.src_name, self.dst_name = names
        self.nodes = [p.node] if p.node else []
        self.interfaces = [p.interface]
        self.directions = [p.direction] if p.direction else []
        self._text: str | None = None

    def add(self, p: PacketSummary, names: tuple[str, str]) -> None:
        self.packets += 1
        self.bytes += p.length
        if p.ts_ns < self.first_ns:
            self.first_ns = p.ts_ns
        if p.ts_ns > self.last_ns:
            self.last_ns = p.ts_ns
        changed = _seen(self.nodes, p.node) | _seen(self.interfaces, p.interface)
        changed |= _seen(self.directions, p.direction)
        if not self.src_name and names[0] or not self.dst_name and names[1]:
            self.src_name = self.src_name or names[0]
            self.dst_name = self.dst_name or names[1]
            changed = True
        if changed:
            self._text = None

    def static_text(self) -> str:
        """The lower-case cells that change rarely (all but the counts and times)."""
        if self._text is None:
            self._text = "\t".join(str(column.render(self)) for column in _CONV_STATIC).lower()
        return self._text

    def text(self) -> str:
        """Every cell of every column set, lower case: what keyword chips search."""
        return "\t".join((self.static_text(), *(str(c.render(self)) for c in _CONV_COUNTS)))


def _seen(values: list[str], value: str) -> bool:
    """Add ``value`` to a short list of distinct values (at most ``_SEEN_MAX`` + a marker)."""
    if not value or value in values or len(values) > _SEEN_MAX:
        return False
    values.append(value if len(values) < _SEEN_MAX else "…")
    return True


# ------------------------------------------------------------------------- columns


@dataclass(frozen=True, slots=True)
class _Col:
    label: str
    render: Callable[[Any], str | int]
    justify: Literal["left", "right"] = "left"


def _src_named(p: PacketSummary) -> str:
    return endpoint(comment_names(p.comment)[0] or p.src, p.sport)


def _dst_named(p: PacketSummary) -> str:
    return endpoint(comment_names(p.comment)[1] or p.dst, p.dport)


_P_TIME: Final = _Col("Time", lambda p: clock_us(p.ts_ns))
_P_PROTO: Final = _Col("Proto", lambda p: p.proto)
_P_SRC: Final = _Col("Source", lambda p: endpoint(p.src, p.sport))
_P_DST: Final = _Col("Destination", lambda p: endpoint(p.dst, p.dport))
_P_SRC_NAME: Final = _Col("Source", _src_named)
_P_DST_NAME: Final = _Col("Destination", _dst_named)
_P_NODE: Final = _Col("Node", lambda p: p.node)
_P_IFACE: Final = _Col("Interface", lambda p: p.interface)
_P_DIR: Final = _Col("Dir", lambda p: p.direction)
_P_LENGTH: Final = _Col("Length", lambda p: p.length, "right")
_P_INFO: Final = _Col("Info", lambda p: p.info)

_C_PROTO: Final = _Col("Proto", lambda c: c.key[0])
_C_SRC: Final = _Col("Source", lambda c: endpoint(c.key[1], c.key[2]))
_C_DST: Final = _Col("Destination", lambda c: endpoint(c.key[3], c.key[4]))
_C_SRC_NAME: Final = _Col("Source", lambda c: endpoint(c.src_name or c.key[1], c.key[2]))
_C_DST_NAME: Final = _Col("Destination", lambda c: endpoint(c.dst_name or c.key[3], c.key[4]))
_C_NODES: Final = _Col("Node", lambda c: ",".join(c.nodes))
_C_IFACES: Final = _Col("Interface", lambda c: ",".join(c.interfaces))
_C_DIRS: Final = _Col("Dir", lambda c: ",".join(c.directions))
_C_PACKETS: Final = _Col("Packets", lambda c: c.packets, "right")
_C_BYTES: Final = _Col("Bytes", lambda c: c.bytes, "right")
_C_FIRST: Final = _Col("First seen", lambda c: clock_ms_ns(c.first_ns))
_C_LAST: Final = _Col("Last seen", lambda c: clock_ms_ns(c.last_ns))
_C_DURATION: Final = _Col("Duration", lambda c: f"{(c.last_ns - c.first_ns) / 1e9:.3f}s",
                          "right")


class _Layout(NamedTuple):
    lead: tuple[_Col, ...]
    sets: tuple[tuple[_Col, ...], ...]
    tail: tuple[_Col, ...]

    def columns(self, enrichment: int) -> tuple[_Col, ...]:
        return self.lead + self.sets[enrichment] + self.tail


_LAYOUTS: Final = (
    _Layout(
        (_P_TIME, _P_PROTO),
        ((_P_SRC, _P_DST), (_P_SRC_NAME, _P_DST_NAME),
         (_P_NODE, _P_IFACE, _P_DIR, _P_SRC, _P_DST),
         (_P_NODE, _P_IFACE, _P_DIR, _P_SRC, _P_DST,
          _Col("Src name", lambda p: comment_names(p.comment)[0]),
          _Col("Dst name", lambda p: comment_names(p.comment)[1]))),
        (_P_LENGTH, _P_INFO)),
    _Layout(
        (_C_PROTO,),
        ((_C_SRC, _C_DST), (_C_SRC_NAME, _C_DST_NAME),
         (_C_NODES, _C_IFACES, _C_DIRS, _C_SRC, _C_DST),
         (_C_NODES, _C_IFACES, _C_DIRS, _C_SRC, _C_DST,
          _Col("Src name", lambda c: c.src_name), _Col("Dst name", lambda c: c.dst_name))),
        (_C_PACKETS, _C_BYTES, _C_FIRST, _C_LAST, _C_DURATION)),
)
#: The cells every packet's keyword text is made of: every column of every set, once.
_PACKET_TEXT: Final = (*_LAYOUTS[PACKETS].columns(3), _P_SRC_NAME, _P_DST_NAME)
_CONV_STATIC: Final = (*_LAYOUTS[CONVERSATIONS].lead, *_LAYOUTS[CONVERSATIONS].sets[3],
                       _C_SRC_NAME, _C_DST_NAME)
_CONV_COUNTS: Final = _LAYOUTS[CONVERSATIONS].tail


def _cells(columns: Sequence[_Col], item: Any) -> list[Text]:
    # Text, not str: DataTable parses str as markup; addresses and names are data.
    return [Text(str(column.render(item)), justify=column.justify, end="")
            for column in columns]


def packet_text(p: PacketSummary) -> str:
    """Every cell of a packet row under every column set, lower case (keyword chips)."""
    return "\t".join(str(column.render(p)) for column in _PACKET_TEXT).lower()


# ------------------------------------------------------------------------- chips


@dataclass(frozen=True, slots=True)
class Chip:
    """A filter chip: a keyword, or (from Enter on a conversation) one exact 5-tuple."""

    text: str
    conversation: ConvKey | None = None


class _Matcher:
    """Every chip of a set, compiled for packets and for conversations."""

    def __init__(self, chips: Sequence[Chip]) -> None:
        keys = {chip.conversation for chip in chips if chip.conversation is not None}
        self.impossible = len(keys) > 1
        self.key = next(iter(keys)) if len(keys) == 1 else None
        self.words = [chip.text.lower() for chip in chips if chip.conversation is None]

    def packet(self, p: PacketSummary) -> bool:
        if self.impossible:
            return False
        if self.key is not None and (p.proto, p.src, p.sport, p.dst, p.dport) != self.key:
            return False
        if self.words:
            text = packet_text(p)
            return all(word in text for word in self.words)
        return True

    def conversation(self, c: _Conversation) -> bool:
        if self.impossible or self.key is not None and c.key != self.key:
            return False
        if self.words:
            text = c.text()
            return all(word in text for word in self.words)
        return True


# ------------------------------------------------------------------------- the capture


class _Capture:
    """A :class:`PacketFile` with its conversations and the chips' matches.

    Shared by the UI thread and the reader thread: every attribute is read and written with
    :attr:`lock` held (the UI thread only tries it, never waits).
    """

    def __init__(self, pcap: PacketFile, max_rows: int) -> None:
        self.file = pcap
        self.lock = threading.Lock()
        #: Packets of ``file.packets`` counted in the conversations and totals.
        self.folded = 0
        self.bytes = 0
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.conversations: dict[ConvKey, _Conversation] = {}
        #: The chips the matches below are for, and how far the packets were tried.
        self.chips: tuple[Chip, ...] = ()
        self.matches: deque[int] = deque(maxlen=max_rows)
        self.matched = 0
        self.scanned = 0

    def catch_up(self, chips: tuple[Chip, ...], read: bool) -> bool:
        """Read the blocks appended to the file (``read``), fold the new packets into the
        conversations, try ``chips`` on the packets not tried yet.  True when a row may
        have changed (new packets, other chips).  Lock held by the caller."""
        if read:
            self.file.refresh()
        packets = self.file.packets
        end = len(packets)
        changed = end > self.folded or chips != self.chips
        conversations = self.conversations
        for p in packets[self.folded:end]:
            key = (p.proto, p.src, p.sport, p.dst, p.dport)
            names = comment_names(p.comment) if p.comment else ("", "")
            found = conversations.get(key)
            if found is None:
                conversations[key] = _Conversation(key, p, names)
            else:
                found.add(p, names)
            self.bytes += p.length
            if self.first_ns is None or p.ts_ns < self.first_ns:
                self.first_ns = p.ts_ns
            if self.last_ns is None or p.ts_ns > self.last_ns:
                self.last_ns = p.ts_ns
        self.folded = end
        if chips != self.chips:
            self.chips = chips
            self.matches.clear()
            self.matched = self.scanned = 0
        if chips:
            match = _Matcher(chips).packet
            for index in range(self.scanned, end):
                if match(packets[index]):
                    self.matches.append(index)
                    self.matched += 1
        self.scanned = end
        return changed


# ------------------------------------------------------------------------- widgets


class PacketHeader(CaptureHeader):
    """The flows header, counting packets: written, bytes, rates, agents and loss.

    ``show_stats`` takes a STATS frame of a packet capture (``captured_packets``,
    ``captured_bytes``, ``agents``, ``agent_stats``); the loss (``packets_lost`` +
    ``export_lost_packets``) is always shown, in red once it is not zero.
    ``show_packet_file`` shows a saved file's totals.
    """

    def __init__(self, info: Mapping[str, str], *, id: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(info, id=id, clock=clock)
        #: Packets lost by the agents (None before the first STATS frame).
        self.loss: int | None = None
        self._interfaces: int | None = None

    def show_stats(self, stats: Mapping[str, Any]) -> None:
        """A STATS frame of a packet capture: packets and bytes written, agents, loss."""
        self._packets = _int(stats.get("captured_packets"))
        self._bytes = _int(stats.get("captured_bytes"))
        self._agents = _int(stats.get("agents"))
        self.loss = packet_loss(stats)
        # The rates of the base class count its first value per second: packets here.
        self._add_sample(self._clock(), self._packets, self._bytes)
        self._changed()

    def show_packet_file(self, path: str, *, packets: int, bytes_: int,
                         first_ns: int | None, last_ns: int | None, interfaces: int) -> None:
        self._interfaces = interfaces
        self.show_file({"packets": packets, "bytes": bytes_,
                        "first_ms": None if first_ns is None else first_ns // 1_000_000,
                        "last_ms": None if last_ns is None else last_ns // 1_000_000}, path)

    def text(self) -> str:
        """The header as plain text, for tests."""
        return self._content(max(self.size.width, 1)).plain

    def _loss_item(self) -> _Item:
        if self.loss is None:
            return _same(Content(f"lost {_UNKNOWN}"))
        if self.loss:
            return _same(Content.styled(f"LOST {self.loss:,} packets", "bold white on red"))
        return _same(Content("lost 0"))

    def _progress_items(self, elapsed: int) -> list[_Item]:
        timer = duration(elapsed)
        if self._max_time is not None:
            timer += f" / {duration(self._max_time)} {_percent(elapsed, self._max_time)}"
        elif "max_time" in self._raw_limits:
            timer += f" / {self._raw_limits['max_time']}"
        if self._rates is None:
            rates = f"{_UNKNOWN} pkts/s {_UNKNOWN} B/s"
        else:
            packets_rate, bytes_rate = self._rates
            rates = f"{_per_second(packets_rate)} pkts/s {human_bytes(bytes_rate)}/s"
        state = self._state
        if self._paused:
            state = f"{state} (paused)" if self._lost_reason else "paused"
        return [
            _labelled("elapsed", timer),
            _labelled("written", f"{_count(self._packets)} packets"),
            self._bytes_item(),
            _same(Content(rates)),
            _same(Content(f"agents {_count(self._agents)}")),
            self._loss_item(),
            _same(Content.styled(state, "bold")),
        ]

    def _file_totals_items(self) -> list[_Item]:
        assert self._file is not None
        _, _, bytes_, packets, first_ms, last_ms = self._file
        if first_ms is None or last_ms is None:
            span = f"span {_UNKNOWN}"
        else:
            start = datetime.fromtimestamp(first_ms / 1000).strftime("%Y-%m-%d %H:%M:%S")
            span = f"span {duration(max(0, last_ms - first_ms) / 1000)} from {start}"
        return [
            _same(Content(f"packets {_count(packets)}")),
            _labelled("bytes", _UNKNOWN if bytes_ is None else human_bytes(bytes_)),
            _same(Content(span)),
            _same(Content(f"interfaces {_count(self._interfaces)}")),
        ]


class PacketTable(QuickCells):
    """The rows the app built (only those shown); :attr:`refs` says what each row is."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("backspace,delete", "app.remove_chip", "Remove the last chip", show=False),
        Binding("escape", "app.clear_chips", "Clear the chips", show=False),
    ]

    @dataclass
    class Resized(Message):
        """The table's height changed: the rows that fit changed too."""

    def __init__(self, *, max_rows: int, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.max_rows = max_rows
        #: Rows shown, as chosen with Up/Down (None: as many as fit the table's height).
        self.limit: int | None = None
        #: What each row shows: a packet index, or a conversation's key.
        self.refs: list[Any] = []
        self._height = 0
        #: Number of rebuilds, for tests.
        self.rebuilds = 0

    def fit_rows(self) -> int:
        """Rows that fit under the header row (50 before the first layout)."""
        height = self.size.height
        return max(1, height - 1) if height else 50

    def wanted_rows(self) -> int:
        return min(self.fit_rows() if self.limit is None else self.limit, self.max_rows)

    def on_resize(self) -> None:
        if self.size.height != self._height:
            self._height = self.size.height
            self.post_message(self.Resized())

    def set_columns(self, columns: Sequence[_Col]) -> None:
        self.clear(columns=True)
        self.refs = []
        for column in columns:
            self.add_column(column.label)

    def show_rows(self, rows: Iterable[list[Text]], refs: list[Any]) -> None:
        self.refs = refs
        self.refill(rows)
        self.rebuilds += 1

    def cells(self) -> list[list[str]]:
        """Every row's cells as plain text, top to bottom (for tests and scripts)."""
        return [[cell.plain for cell in self.get_row_at(row)] for row in range(self.row_count)]

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        """As in :class:`~.widgets.flow_table.FlowTable`: drop the lines painted before the
        new rows were measured, or cells stay cut to the labels' width until the next
        rebuild (Textual 8.2's private hook; the version is pinned)."""
        super()._update_dimensions(new_rows)
        self._clear_caches()
        self.refresh()


def layer_lines(layers: Sequence[Layer]) -> list[str]:
    """Decoded layers as indented lines: the layer's name, then ``    Field: value``."""
    lines = []
    for name, fields in layers:
        lines.append(name)
        lines += [f"    {field}: {value}" for field, value in fields]
    return lines


class PacketScreen(ModalScreen[None]):
    """One packet: where it was seen, its comment, its decoded layers and its bytes in hex.
    Escape, Enter or ``q`` closes it."""

    DEFAULT_CSS = """
    PacketScreen {
        align: center middle;
    }
    PacketScreen > Vertical {
        width: 95%;
        height: 95%;
        border: round $accent;
        background: $panel;
    }
    PacketScreen #packet-title {
        height: auto;
        padding: 0 1;
        text-style: bold;
    }
    PacketScreen #packet-comment {
        height: auto;
        padding: 0 1;
        color: $text-muted;
    }
    PacketScreen VerticalScroll {
        height: 1fr;
        padding: 0 1;
    }
    PacketScreen #packet-hex {
        margin-top: 1;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,enter,q", "dismiss", "Close", show=True),
    ]

    def __init__(self, packet: PacketSummary, data: bytes, total: int) -> None:
        super().__init__()
        self.packet = packet
        self.decoded = decode_layers(data)
        self.layer_lines = layer_lines(self.decoded)
        self.hex_lines = hexdump(data)
        where = f"{packet.interface} on {packet.node}" if packet.node else packet.interface
        cut = f" ({packet.caplen} captured)" if packet.caplen != packet.length else ""
        self.title_text = " · ".join(part for part in (
            f"Packet {packet.index + 1:,} of {total:,}", clock_us(packet.ts_ns), where,
            packet.direction, f"{packet.length} bytes{cut}") if part)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(self.title_text), id="packet-title", markup=False)
            if self.packet.comment:
                yield Static(Text(self.packet.comment), id="packet-comment", markup=False)
            with VerticalScroll(id="packet-body"):
                layers = Text()
                for line in self.layer_lines:
                    if layers:
                        layers.append("\n")
                    layers.append(line, style="" if line.startswith(" ") else "bold")
                yield Static(layers, id="packet-layers", markup=False)
                yield Static(Text("\n".join(self.hex_lines)), id="packet-hex", markup=False)

    def on_mount(self) -> None:
        self.query_one("#packet-body", VerticalScroll).focus()

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)


#: The keys, as the help screen lists them: (keys, what they do).
HELP_KEYS: Final[tuple[tuple[str, str], ...]] = (
    ("Ctrl+C, Ctrl+Q", "Stop the capture (flush and keep the files) / quit"),
    ("Left / Right", "Previous / next view: Packets, Conversations"),
    ("Page Up / Page Down", "Column sets: IP & port, Names, Interface, All"),
    ("Up / Down", "In the table: move the cursor; on the filter line: more / fewer rows"),
    ("+ / -", "In the table: show more / fewer rows"),
    ("/", "Open the filter line: a keyword, Enter adds it as a chip (all chips must match)"),
    ("  keyword", "Any cell of the row contains it (any case): tcp, 10.1.0.5, shop/web, SYN"),
    ("Backspace, Delete", "In the table, or on an empty filter line: remove the last chip"),
    ("Escape", "Clear every chip (in the table or on the filter line)"),
    ("Tab", "Move between the table and the filter line"),
    ("Enter", "Packets: decoded layers and bytes; Conversations: show its packets"),
    ("p, Ctrl+P", "Pause / resume the table (live capture only; the capture goes on)"),
    ("? or F1", "This help"),
)


class PacketsHelpScreen(HelpScreen):
    """The keys of the packets app (:data:`HELP_KEYS`), on the flows help screen."""

    HEADING = "netobserv packets keys"
    KEYS = HELP_KEYS


# ------------------------------------------------------------------------- the app


class PacketsApp(PlainNotifications, App[str | None]):
    """Packets and conversations of a packet capture, live or saved.  Returns ``"stopped"``
    (Ctrl+C, Ctrl+Q) or the reason given to ``request_stop``."""

    CSS_PATH = "app.tcss"
    TITLE = "netobserv"
    ENABLE_COMMAND_PALETTE = False

    BINDINGS: ClassVar[list[BindingType]] = [
        # As in FlowsApp: ctrl+c and ctrl+q stop a capture, or close a file.
        Binding("ctrl+c,ctrl+q", "stop", "Stop capture", id="stop", priority=True),
        Binding("ctrl+c,ctrl+q", "close_file", "Quit", id="close_file", priority=True),
        Binding("p", "toggle_pause", "Pause", id="pause"),
        Binding("ctrl+p", "toggle_pause", "Pause", id="pause_ctrl", priority=True, show=False),
        Binding("slash", "open_filter", "Filter", id="open_filter", key_display="/"),
        Binding("f1,question_mark", "help", "Help", id="help", key_display="?"),
        Binding("right", "next_view", "Next view", id="next_view", priority=True, show=False),
        Binding("left", "prev_view", "Previous view", id="prev_view", priority=True,
                show=False),
        Binding("pagedown", "next_enrichment", "More columns", id="next_enrichment",
                priority=True, show=False),
        Binding("pageup", "prev_enrichment", "Other columns", id="prev_enrichment",
                priority=True, show=False),
        # Up/Down reach the app from the filter line only (the table moves its cursor with
        # them); + and - from the table only (the filter line types them).
        Binding("up,plus", "more_rows", "More rows", id="more_rows", show=False),
        Binding("down,minus", "fewer_rows", "Fewer rows", id="fewer_rows", show=False),
    ]

    def __init__(
        self,
        pcap: PacketFile | None,
        header: Mapping[str, str],
        *,
        max_rows: int = 1000,
        refresh_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        starting: bool = False,
    ) -> None:
        super().__init__()
        if pcap is None and not starting:
            raise ValueError("PacketsApp needs a packet file, or starting=True and attach()")
        #: A saved file (``netobserv open``): nothing is live, no pause.
        self.open_mode = pcap is not None
        #: Shown while the capture starts (progress lines); ``attach`` brings the file.
        self.starting = starting
        self.max_rows = max_rows
        self.refresh_interval = refresh_interval
        self._capture = _Capture(pcap, max_rows) if pcap is not None else None
        self._path: Path | None = pcap.path if pcap is not None else None
        self._stream: LiveStream | None = None
        info = dict(header)
        if pcap is None:
            info.setdefault("capture", "packets")
        self._header = PacketHeader(info, clock=clock, id="header")
        self._progress_lines: deque[str] = deque(maxlen=PROGRESS_LINES)
        self._progress = Static("", id="progress", markup=False)
        self._tabs = Static("", id="packet-tabs", markup=False)
        self._table = PacketTable(max_rows=max_rows, id="packets")
        self._filter_bar = FilterBar(id="filter")
        self._filter_bar.input.placeholder = PLACEHOLDER
        self._status = Static("", id="status", markup=False)
        self.view = PACKETS
        self.enrichment = 0
        self.chips: tuple[Chip, ...] = ()
        self.paused = False
        #: The aggregator accepted the live stream (WELCOME received).
        self.connected = False
        #: The latest STATS counters.
        self.stats: dict[str, Any] = {}
        #: Completed reads of the file, for tests.
        self.reads = 0
        self._dirty = True
        self._reading = False
        self._read_again = False
        #: Why the live file cannot be read (it stays so: no more attempts).
        self._error = ""
        #: (rows that match, rows in all) of the view, as of the last rebuild.
        self._shown_of: tuple[int, int] = (0, 0)

    # -- Textual hooks -------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":
            return not self.open_mode
        if action == "close_file":
            return self.open_mode
        if action == "toggle_pause":
            return not self.open_mode
        return super().check_action(action, parameters)

    def compose(self) -> ComposeResult:
        yield self._header
        yield self._progress
        yield self._tabs
        yield self._table
        yield self._filter_bar
        yield self._status
        yield Footer()

    def on_mount(self) -> None:
        self._progress.display = self.starting
        self._table.set_columns(self._columns())
        self._show_tabs()
        self._table.focus()
        if self.starting:
            self._header.show_connecting("the capture being started")
        elif self._capture is not None:
            self._show_file_totals()
            self._read()
        self._update_status()
        self.set_interval(self.refresh_interval, self._tick)

    def on_unmount(self) -> None:
        capture = self._capture
        if capture is not None:
            with capture.lock:
                capture.file.close()

    # -- driving API (as FlowsApp's) -----------------------------------------------------

    def show_progress(self, text: str) -> None:
        """A line of the start's progress; from the app's loop."""
        self._progress_lines.append(text)
        if self.is_running:
            self._progress.update("\n".join(self._progress_lines))

    def attach(self, stream: tuple[str, int, str], pcap_path: str | Path,
               header: Mapping[str, str]) -> None:
        """The capture has started: read ``pcap_path`` as it grows, follow the stream's
        STATS.  From the app's loop."""
        self.starting = False
        self._progress.display = False
        self._path = Path(pcap_path)
        info = dict(header)
        info.setdefault("capture", "packets")
        self._header.set_info(info)
        self._stream = LiveStream(*stream)
        self._header.show_connecting(self._stream.address)
        self._follow_stream()
        self._read()
        self._update_status()
        self.refresh_bindings()

    def request_stop(self, reason: str) -> None:
        """Exit with ``reason`` as the return value; safe from any thread."""
        self.post_message(StopRequested(reason))

    def update_stats(self, counters: Mapping[str, Any]) -> None:
        """A STATS frame's counters (``captured_packets``, ``captured_bytes``, ``agents``,
        ``agent_stats``) into the header; from the app's loop (the stream calls it)."""
        self.stats = dict(counters)
        self._header.show_stats(counters)

    def add_filter(self, text: str) -> None:
        """Add a keyword chip as if typed (for scripts and tests)."""
        self._add_chip(Chip(text.strip()))

    @property
    def packets_read(self) -> int:
        """Packets read from the file so far (counted in the conversations)."""
        return self._capture.folded if self._capture is not None else 0

    def rows(self) -> list[list[str]]:
        """The table's rows as plain text, top to bottom."""
        return self._table.cells()

    # -- reading the file ----------------------------------------------------------------

    def _tick(self) -> None:
        if not self.open_mode and self._path is not None and not self._error:
            self._read()
        self._repaint()

    def _read(self) -> None:
        """Start a read of the file (or of the chips' matches) unless one runs: then
        another starts when it ends."""
        if self._reading:
            self._read_again = True
            return
        self._reading = True
        self._read_file(self.chips, not self.open_mode)

    @work(thread=True, group="read", exit_on_error=False)
    def _read_file(self, chips: tuple[Chip, ...], live: bool) -> None:
        capture = self._capture
        if capture is None:
            assert self._path is not None
            try:
                ready = self._path.stat().st_size >= 12
            except FileNotFoundError:
                ready = False
            if not ready:  # the aggregator creates it when the capture starts
                self.call_from_thread(self._read_done, None, False)
                return
            capture = _Capture(PacketFile(self._path), self.max_rows)
            live = False  # PacketFile read it all already
        with capture.lock:
            changed = capture.catch_up(chips, live)
        self.call_from_thread(self._read_done, capture, changed)

    def _read_done(self, capture: _Capture | None, changed: bool) -> None:
        self._reading = False
        self.reads += 1
        if capture is not None and (changed or self._capture is None):
            self._capture = capture
            self._dirty = True
            if self.open_mode:
                self._show_file_totals()
        self._repaint()
        if self._read_again:
            self._read_again = False
            self._read()

    def _show_file_totals(self) -> None:
        capture = self._capture
        if capture is None or not self.open_mode or not capture.lock.acquire(blocking=False):
            return
        try:
            file = capture.file
            self._header.show_packet_file(
                str(file.path), packets=len(file.packets), bytes_=capture.bytes,
                first_ns=capture.first_ns, last_ns=capture.last_ns,
                interfaces=len(file.interfaces))
        finally:
            capture.lock.release()

    # -- building the rows ---------------------------------------------------------------

    def _columns(self) -> tuple[_Col, ...]:
        return _LAYOUTS[self.view].columns(self.enrichment)

    def _repaint(self) -> None:
        """Rebuild the rows on screen if something changed (not while paused, not while
        the reader holds the capture: the next tick comes back)."""
        capture = self._capture
        if not self._dirty or self.paused or capture is None:
            return
        if not capture.lock.acquire(blocking=False):
            return
        try:
            if self.view == PACKETS and capture.chips != self.chips:
                return  # the reader has not tried the new chips yet
            self._dirty = False
            count = self._table.wanted_rows()
            columns = self._columns()
            refs: list[Any]
            if self.view == PACKETS:
                indexes, available, total = self._packet_rows(capture, count)
                packets = capture.file.packets
                refs = list(indexes)
                rows = [_cells(columns, packets[i]) for i in indexes]
            else:
                conversations, available, total = self._conversation_rows(capture, count)
                refs = [c.key for c in conversations]
                rows = [_cells(columns, c) for c in conversations]
        finally:
            capture.lock.release()
        self._table.show_rows(rows, refs)
        self._shown_of = (available, total)
        self._update_status()

    def _packet_rows(self, capture: _Capture, count: int) -> tuple[list[int], int, int]:
        """The newest ``count`` packets (that match), their indexes newest first."""
        total = capture.folded
        if not self.chips:
            return list(range(total - 1, max(total - count, 0) - 1, -1)), total, total
        matches = capture.matches
        kept = min(count, len(matches))
        return [matches[-1 - i] for i in range(kept)], capture.matched, total

    def _conversation_rows(self, capture: _Capture,
                           count: int) -> tuple[list[_Conversation], int, int]:
        """The ``count`` conversations (that match) with the most bytes."""
        every: Iterable[_Conversation] = capture.conversations.values()
        total = len(capture.conversations)
        available = total
        if self.chips:
            match = _Matcher(self.chips).conversation
            kept = [c for c in every if match(c)]
            available, every = len(kept), kept
        top = heapq.nlargest(count, every, key=lambda c: (c.bytes, -c.first_ns))
        return top, available, total

    def _invalidate(self, columns: bool = False) -> None:
        if columns:
            self._table.set_columns(self._columns())
        self._dirty = True
        self._show_tabs()
        self._repaint()
        self._update_status()

    # -- status and tabs -----------------------------------------------------------------

    def _show_tabs(self) -> None:
        line = Text()
        for index, name in enumerate(VIEW_NAMES):
            line.append(f" {name} ", style="bold reverse" if index == self.view else "dim")
            line.append(" ")
        line.append(f"  columns: {ENRICHMENT_NAMES[self.enrichment]}", style="bold")
        line.append("  (Left/Right: view, PgUp/PgDn: columns, /: filter, ?: keys)",
                    style="dim")
        self._tabs.update(line)

    def _update_status(self) -> None:
        self._status.update(self.status_text())

    def title_text(self) -> str:
        """``Packets · Names``: the view and its column set."""
        return f"{VIEW_NAMES[self.view]} · {ENRICHMENT_NAMES[self.enrichment]}"

    def status_text(self) -> str:
        """The status line: view, what is shown out of what, the chips' count, pause."""
        if self.starting:
            return "Starting the capture… (Ctrl+C cancels and cleans up)"
        parts = [self.title_text()]
        capture = self._capture
        if self._error:
            parts.append(self._error)
        elif capture is None:
            parts.append(f"Waiting for the packet file {self._path}…")
        elif self.view == PACKETS and capture.chips != self.chips:
            parts.append("searching…")
        else:
            shown = self._table.row_count
            available, total = self._shown_of
            limit = f" (limit {self._table.limit}, +/-)" if self._table.limit else ""
            what = "packets" if self.view == PACKETS else "conversations"
            order = "newest first" if self.view == PACKETS else "most bytes first"
            if self.chips:
                parts.append(f"{available:,} of {total:,} {what} match; {shown:,} shown, "
                             f"{order}{limit}")
            elif total == 0:
                parts.append("No packets yet" if self.open_mode
                             else "Waiting for packets that match the capture filter…")
            else:
                parts.append(f"{shown:,} of {total:,} {what} shown, {order}{limit}")
        if self.paused:
            parts.append("PAUSED (p resumes)")
        return " · ".join(parts)

    # -- keys ----------------------------------------------------------------------------

    def action_next_view(self) -> None:
        self.view = (self.view + 1) % len(VIEW_NAMES)
        self._invalidate(columns=True)

    def action_prev_view(self) -> None:
        self.view = (self.view - 1) % len(VIEW_NAMES)
        self._invalidate(columns=True)

    def action_next_enrichment(self) -> None:
        self.enrichment = (self.enrichment + 1) % len(ENRICHMENT_NAMES)
        self._invalidate(columns=True)

    def action_prev_enrichment(self) -> None:
        self.enrichment = (self.enrichment - 1) % len(ENRICHMENT_NAMES)
        self._invalidate(columns=True)

    def action_more_rows(self) -> None:
        self._set_limit((self._table.limit or self._table.fit_rows()) + 1)

    def action_fewer_rows(self) -> None:
        self._set_limit((self._table.limit or self._table.fit_rows()) - 1)

    def _set_limit(self, limit: int) -> None:
        self._table.limit = max(1, min(limit, self.max_rows))
        self._invalidate()

    def action_toggle_pause(self) -> None:
        if self.open_mode:
            return
        self.paused = not self.paused
        self._header.show_paused(self.paused)
        self._invalidate()

    def action_help(self) -> None:
        if not isinstance(self.screen, PacketsHelpScreen):
            self.push_screen(PacketsHelpScreen())

    def action_open_filter(self) -> None:
        self._filter_bar.input.focus()

    def on_filter_input_help_requested(self, _message: FilterInput.HelpRequested) -> None:
        self.action_help()

    def on_packet_table_resized(self, _message: PacketTable.Resized) -> None:
        if self._table.limit is None:
            self._invalidate()

    def on_data_table_row_selected(self, message: DataTable.RowSelected) -> None:
        if message.data_table is self._table:
            self._select(message.cursor_row)

    def _select(self, row: int) -> None:
        """Enter on a row: a packet's details, or a conversation's packets."""
        refs = self._table.refs
        if not 0 <= row < len(refs):
            self.notify("No row to open yet", timeout=3)
            return
        ref = refs[row]
        if self.view == CONVERSATIONS:
            # Its packets: a chip of its 5-tuple, instead of another conversation's.
            key: ConvKey = ref
            self.view = PACKETS
            keywords = tuple(chip for chip in self.chips if chip.conversation is None)
            self._set_chips((*keywords, Chip(conversation_text(key), key)), columns=True)
        else:
            self._open_packet(int(ref))

    @work(thread=True, group="detail", exit_on_error=False)
    def _open_packet(self, index: int) -> None:
        capture = self._capture
        assert capture is not None
        with capture.lock:
            data = capture.file.raw(index)
            packet = capture.file.packets[index]
            total = capture.folded
        self.call_from_thread(self._show_packet, packet, data, total)

    def _show_packet(self, packet: PacketSummary, data: bytes, total: int) -> None:
        self.push_screen(PacketScreen(packet, data, total))

    # -- chips ---------------------------------------------------------------------------

    def on_filter_input_entered(self, message: FilterInput.Entered) -> None:
        text = message.value.strip()
        self._table.focus()
        if not text:
            self._select(self._table.cursor_row)
            return
        self._add_chip(Chip(text))

    def on_filter_input_remove_last(self, _message: FilterInput.RemoveLast) -> None:
        self.action_remove_chip()

    def on_filter_input_clear_all(self, _message: FilterInput.ClearAll) -> None:
        self.action_clear_chips()
        self._table.focus()

    def action_remove_chip(self) -> None:
        if self.chips:
            self._set_chips(self.chips[:-1])

    def action_clear_chips(self) -> None:
        if self.chips:
            self._set_chips(())

    def _add_chip(self, chip: Chip) -> None:
        if chip.text and chip not in self.chips:
            self._set_chips((*self.chips, chip))

    def _set_chips(self, chips: tuple[Chip, ...], columns: bool = False) -> None:
        self.chips = chips
        self._filter_bar.show_chips(tuple(chip.text for chip in chips))
        if self._capture is not None:
            self._read()  # the reader tries the new chips on every packet
        self._invalidate(columns)

    # -- live stream ---------------------------------------------------------------------

    @work(exclusive=True, group="stream", exit_on_error=False)
    async def _follow_stream(self) -> None:
        assert self._stream is not None
        async with self._stream as stream:
            self.post_message(StreamConnected(stream.capture))
            async for frame in stream:
                if isinstance(frame, StatsUpdate):
                    self.post_message(StatsReceived(frame.counters))
                await asyncio.sleep(0)  # keep the UI responsive while a burst is read
        self.post_message(StreamLost(f"the aggregator at {stream.address} closed the stream"))

    def on_stream_connected(self, message: StreamConnected) -> None:
        self.connected = True
        self._header.show_live(message.capture)

    def on_stats_received(self, message: StatsReceived) -> None:
        self.update_stats(message.stats)

    def on_stream_lost(self, message: StreamLost) -> None:
        self._header.show_lost(message.reason)
        self.notify(message.reason, title="Live stream lost", severity="error", timeout=10)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Where the reader's, the details' and the stream's failures end up."""
        if event.state is not WorkerState.ERROR:
            return
        error = event.worker.error
        group = event.worker.group
        if group == "read":
            self._reading = False
            text = str(error) if isinstance(error, StoreError) else f"internal error: {error!r}"
            self._error = f"cannot read the packet file: {text}"
            self.notify(text, title="Packet file", severity="error", timeout=10)
            self._update_status()
        elif group == "detail":
            self.notify(f"{error}", title="Packet not shown", severity="error", timeout=10)
        elif group == "stream":
            reason = (str(error) if isinstance(error, StreamError)
                      else f"internal error: {error!r}")
            self.post_message(StreamLost(reason))

    # -- stopping ------------------------------------------------------------------------

    def action_stop(self) -> None:
        self.exit(STOPPED)

    def action_close_file(self) -> None:
        self.exit(STOPPED)

    async def action_quit(self) -> None:
        self.exit(STOPPED)

    def on_stop_requested(self, message: StopRequested) -> None:
        self.exit(message.reason)
