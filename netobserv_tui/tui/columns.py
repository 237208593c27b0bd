"""How a flow record is shown: table columns and small formatters.

Pure functions without Textual, so views (a later DNS or drops view, a details pane) can
reuse them and tests can check them directly.  A record is a mapping of field name to value
(see ``netobserv_tui.model.fields``); a field whose feature is off is simply absent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeAlias

from netobserv_tui.model.fields import PROTO_NAMES
from netobserv_tui.store.chips import endpoint as endpoint  # the filters match this text

Record: TypeAlias = Mapping[str, Any]
Cell: TypeAlias = str | int

_TCP_FLAGS = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")
_DIRECTIONS = {0: "ingress", 1: "egress"}


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    render: Callable[[Record], Cell]
    justify: Literal["left", "right"] = "left"


def clock_ms(ms: int | None) -> str:
    """Milliseconds since the epoch as local ``HH:MM:SS.mmm``; empty when absent."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000).strftime("%H:%M:%S.%f")[:-3]


def tcp_flags(flags: int | None) -> str:
    """``SYN,ACK``; unknown bits are kept as a number so nothing is hidden."""
    if not flags:
        return ""
    names = [name for bit, name in enumerate(_TCP_FLAGS) if flags & (1 << bit)]
    rest = flags & ~0xFF
    if rest:
        names.append(hex(rest))
    return ",".join(names)


def proto_name(proto: int | None) -> str:
    if proto is None:
        return ""
    return PROTO_NAMES.get(proto, str(proto))


def duration(seconds: float) -> str:
    """``0:01:05`` (hours are not padded)."""
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


FLOW_COLUMNS: tuple[Column, ...] = (
    Column("time", "Time end", lambda r: clock_ms(r.get("TimeFlowEndMs"))),
    Column("interface", "Interface", lambda r: r.get("Interface") or ""),
    Column("direction", "Dir", lambda r: _DIRECTIONS.get(r.get("IfDirection", -1), "")),
    Column("proto", "Proto", lambda r: proto_name(r.get("Proto"))),
    Column("src", "Source", lambda r: endpoint(r.get("SrcAddr"), r.get("SrcPort"))),
    Column("dst", "Destination", lambda r: endpoint(r.get("DstAddr"), r.get("DstPort"))),
    Column("bytes", "Bytes", lambda r: r.get("Bytes", ""), "right"),
    Column("packets", "Packets", lambda r: r.get("Packets", ""), "right"),
    Column("flags", "Flags", lambda r: tcp_flags(r.get("Flags"))),
)
"""Columns of the default flows view, left to right."""
