"""The flow table's views (Left/Right) and enrichment column sets (Page Up/Down).

Plain Python without Textual: the TUI keeps one :class:`ViewState`, replaces it on a key
press and rebuilds the table from :meth:`ViewState.columns`.

A view's columns are ``lead + enrichment + tail``: the enrichment set chosen with Page Up /
Page Down is inserted between the view's leading columns (time, protocol, ...) and its own
data columns.  The Raw view already shows every field, so it ignores enrichment
(``View.enriched`` is false).  The Findings view shows no flow table but the capture's
findings (``View.findings``; :mod:`netobserv_tui.store.findings`), the Top talkers view
the ends that carried the most bytes (``View.talkers``; :mod:`netobserv_tui.store.talkers`).

Enrichment sets, in cycling order:

========== =================================================================================
Names      Source and Destination as ``namespace/name`` (a node: its name; an end the
           cluster does not know: ``addr:port``); the default of a cluster capture
IP & port  Source and Destination as ``addr:port`` (the Overview's own endpoint columns);
           the default on this host
Node       ``SrcK8S_HostName``, ``DstK8S_HostName``
Namespace  ``SrcK8S_Namespace``, ``DstK8S_Namespace``
Owner      ``SrcK8S_OwnerName``, ``SrcK8S_OwnerType``, ``DstK8S_OwnerName``, ``DstK8S_OwnerType``
Resource   ``SrcK8S_Name``, ``SrcK8S_Type``, ``DstK8S_Name``, ``DstK8S_Type``
Zone       ``SrcK8S_Zone``, ``DstK8S_Zone``
All        every set from IP & port on, in that order
========== =================================================================================

``SrcK8S_HostIP``, ``DstK8S_HostIP`` and ``K8S_FlowLayer`` appear in the Raw view only.
The default state is the Overview with "IP & port", whose columns are exactly
``columns.FLOW_COLUMNS`` (the table shown before views existed); a cluster capture starts
with "Names" (:data:`NAMES_ENRICHMENT`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from . import view_columns as vc
from .columns import Column


@dataclass(frozen=True, slots=True)
class View:
    """One table layout: ``lead`` columns, then the enrichment set, then ``tail`` columns."""

    name: str
    lead: tuple[Column, ...]
    tail: tuple[Column, ...]
    #: Shown instead of rows when no record carries any of ``fields``.
    empty_hint: str
    #: Fields that carry the view's data; empty means every record does (Overview, Raw).
    fields: tuple[str, ...] = ()
    #: False for the Raw view, which already shows every field.
    enriched: bool = True
    #: The Findings view: a list of findings (``tui.findings``) instead of the flow table.
    findings: bool = False
    #: The Top talkers view: a list of talkers (``tui.talkers``) instead of the flow table.
    talkers: bool = False

    def has_data(self, record: Mapping[str, Any]) -> bool:
        """True when ``record`` carries at least one of the view's fields (not NULL)."""
        if not self.fields:
            return True
        return any(record.get(name) is not None for name in self.fields)


@dataclass(frozen=True, slots=True)
class Enrichment:
    """A named set of columns added to every enriched view."""

    name: str
    columns: tuple[Column, ...]


OVERVIEW: Final = View(
    "Overview",
    lead=(vc.TIME, vc.INTERFACE, vc.DIRECTION, vc.PROTO),
    tail=(vc.BYTES, vc.PACKETS, vc.FLAGS),
    empty_hint="No flows yet: waiting for traffic that matches the capture filters",
)
DROPS: Final = View(
    "Packet drops",
    lead=(vc.TIME, vc.INTERFACE, vc.PROTO),
    tail=(vc.DROP_CAUSE, vc.DROP_STATE, vc.DROP_BYTES, vc.DROP_PACKETS, vc.DROP_FLAGS),
    empty_hint="No packet drop data: start the capture with --enable_pktdrop=true",
    fields=("PktDropBytes", "PktDropPackets", "PktDropLatestDropCause"),
)
DNS: Final = View(
    "DNS",
    lead=(vc.TIME, vc.INTERFACE, vc.PROTO),
    tail=(vc.DNS_ID, vc.DNS_NAME, vc.DNS_RCODE, vc.DNS_LATENCY, vc.DNS_ERRNO),
    empty_hint="No DNS data: start the capture with --enable_dns=true",
    fields=("DnsId", "DnsLatencyMs", "DnsFlagsResponseCode", "DnsErrno"),
)
RTT: Final = View(
    "RTT",
    lead=(vc.TIME, vc.INTERFACE, vc.PROTO),
    tail=(vc.RTT, vc.RETRANSMITS, vc.RESETS_SENT, vc.RESETS_RECEIVED),
    empty_hint="No RTT data: start the capture with --enable_rtt=true",
    fields=("TimeFlowRttNs", "TcpRetransmits", "TcpResetsSent", "TcpResetsReceived"),
)
RAW: Final = View(
    "Raw",
    lead=(),
    tail=vc.RAW_COLUMNS,
    empty_hint="No flows yet: waiting for traffic that matches the capture filters",
    enriched=False,
)

FINDINGS: Final = View(
    "Findings",
    lead=(),
    tail=(),
    empty_hint="No findings yet: no NXDOMAIN, unanswered SYN, drop or retransmission",
    enriched=False,
    findings=True,
)

TALKERS: Final = View(
    "Top talkers",
    lead=(),
    tail=(),
    empty_hint="No talkers yet: waiting for flows",
    enriched=False,
    talkers=True,
)

#: Views in Left/Right order; Findings is one Left press from the Overview, Raw two.
VIEWS: Final[tuple[View, ...]] = (OVERVIEW, DROPS, DNS, RTT, TALKERS, RAW, FINDINGS)

_SETS: Final[tuple[Enrichment, ...]] = (
    Enrichment("IP & port", (vc.SRC, vc.DST)),
    Enrichment("Node", (vc.SRC_NODE, vc.DST_NODE)),
    Enrichment("Namespace", (vc.SRC_NAMESPACE, vc.DST_NAMESPACE)),
    Enrichment("Owner", (vc.SRC_OWNER, vc.SRC_OWNER_TYPE, vc.DST_OWNER, vc.DST_OWNER_TYPE)),
    Enrichment("Resource", (vc.SRC_NAME, vc.SRC_TYPE, vc.DST_NAME, vc.DST_TYPE)),
    Enrichment("Zone", (vc.SRC_ZONE, vc.DST_ZONE)),
)

#: Enrichment sets in Page Down order (Page Up goes backwards). "Names" (namespace/name of
#: each end, the address where none is known) is the default on a cluster, "IP & port" one
#: Page Down from it, the default on this host.
ENRICHMENTS: Final[tuple[Enrichment, ...]] = (
    Enrichment("Names", (vc.SRC_NAMED, vc.DST_NAMED)),
    *_SETS,
    Enrichment("All", tuple(column for s in _SETS for column in s.columns)),
)

NAMES_ENRICHMENT: Final = 0
IP_PORT_ENRICHMENT: Final = 1
_DEFAULT_ENRICHMENT: Final = IP_PORT_ENRICHMENT


@dataclass(frozen=True, slots=True)
class ViewState:
    """Which view and which enrichment set are shown; every move returns a new state."""

    view_index: int = 0
    enrichment_index: int = _DEFAULT_ENRICHMENT

    def __post_init__(self) -> None:
        if not 0 <= self.view_index < len(VIEWS):
            raise ValueError(f"view_index {self.view_index} is not in 0..{len(VIEWS) - 1}")
        if not 0 <= self.enrichment_index < len(ENRICHMENTS):
            raise ValueError(
                f"enrichment_index {self.enrichment_index} is not in 0..{len(ENRICHMENTS) - 1}"
            )

    @property
    def view(self) -> View:
        return VIEWS[self.view_index]

    @property
    def enrichment(self) -> Enrichment:
        return ENRICHMENTS[self.enrichment_index]

    def next_view(self) -> ViewState:
        return ViewState((self.view_index + 1) % len(VIEWS), self.enrichment_index)

    def prev_view(self) -> ViewState:
        return ViewState((self.view_index - 1) % len(VIEWS), self.enrichment_index)

    def next_enrichment(self) -> ViewState:
        return ViewState(self.view_index, (self.enrichment_index + 1) % len(ENRICHMENTS))

    def prev_enrichment(self) -> ViewState:
        return ViewState(self.view_index, (self.enrichment_index - 1) % len(ENRICHMENTS))

    def columns(self) -> tuple[Column, ...]:
        """The table's columns, left to right, for this view and enrichment set."""
        view = self.view
        if view.findings or view.talkers:  # no flow table: its columns stay as they were
            return ()
        if not view.enriched:
            return view.lead + view.tail
        return view.lead + self.enrichment.columns + view.tail

    def title(self) -> str:
        """``DNS · Owner`` for a status line; the Raw view names no enrichment."""
        if not self.view.enriched:
            return self.view.name
        return f"{self.view.name} · {self.enrichment.name}"
