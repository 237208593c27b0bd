"""Columns of the feature views (drops, DNS, RTT), of the enrichment sets and of the Raw view.

Plain Python without Textual, like :mod:`netobserv_tui.tui.columns`, whose ``Column`` type and
formatters are reused unchanged.  A column keyed by a field name shows that field; the
endpoint columns ``src`` and ``dst`` are the very objects of ``FLOW_COLUMNS``.  An absent
field, or one stored as NULL because its feature was off, shows as an empty cell, never as 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal

from netobserv_tui.model.fields import BY_NAME, FIELDS

from .columns import FLOW_COLUMNS, Cell, Column, Record, endpoint, tcp_flags

_FLOW: Final = {column.key: column for column in FLOW_COLUMNS}

#: Columns shared with the Overview (``FLOW_COLUMNS``), by key.
TIME: Final = _FLOW["time"]
INTERFACE: Final = _FLOW["interface"]
DIRECTION: Final = _FLOW["direction"]
PROTO: Final = _FLOW["proto"]
SRC: Final = _FLOW["src"]
DST: Final = _FLOW["dst"]
BYTES: Final = _FLOW["bytes"]
PACKETS: Final = _FLOW["packets"]
FLAGS: Final = _FLOW["flags"]


def text_of(value: object) -> Cell:
    """A raw field value as a cell: ``""`` when absent, lists comma-joined, ints kept."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return str(value)


def rtt_ms(ns: int | None) -> str:
    """Nanoseconds as milliseconds with microsecond precision: ``0.121``; empty when absent."""
    if ns is None:
        return ""
    return f"{ns / 1_000_000:.3f}"


def _field_render(name: str) -> Callable[[Record], Cell]:
    return lambda record: text_of(record.get(name))


def field_column(
    name: str, label: str | None = None, justify: Literal["left", "right"] | None = None
) -> Column:
    """A column showing field ``name`` as is; numbers are right-aligned unless told."""
    if justify is None:
        justify = "right" if BY_NAME[name].kind is int else "left"
    return Column(name, label or name, _field_render(name), justify)


# -- Packet drops (--enable_pktdrop) ---------------------------------------------------

DROP_BYTES: Final = field_column("PktDropBytes", "Drop bytes")
DROP_PACKETS: Final = field_column("PktDropPackets", "Drop pkts")
DROP_STATE: Final = field_column("PktDropLatestState", "Drop state")
#: The kernel's reason without its common prefix (``NETFILTER_DROP`` for
#: ``SKB_DROP_REASON_NETFILTER_DROP``): 16 characters more for the other columns at 160
#: columns; the files, the details and the filters keep the full name.
DROP_CAUSE: Final = Column(
    "PktDropLatestDropCause", "Drop cause",
    lambda r: str(r.get("PktDropLatestDropCause") or "").removeprefix("SKB_DROP_REASON_"))
DROP_FLAGS: Final = Column(
    "PktDropLatestFlags", "Drop flags", lambda r: tcp_flags(r.get("PktDropLatestFlags"))
)

# -- DNS (--enable_dns) ----------------------------------------------------------------

DNS_ID: Final = field_column("DnsId", "DNS id")
DNS_NAME: Final = field_column("DnsName", "DNS name")
DNS_RCODE: Final = field_column("DnsFlagsResponseCode", "DNS rcode")
DNS_LATENCY: Final = field_column("DnsLatencyMs", "DNS latency ms")
DNS_ERRNO: Final = field_column("DnsErrno", "DNS errno")

# -- RTT and TCP socket counters (--enable_rtt) ----------------------------------------

RTT: Final = Column("TimeFlowRttNs", "RTT ms", lambda r: rtt_ms(r.get("TimeFlowRttNs")), "right")
RETRANSMITS: Final = field_column("TcpRetransmits", "Retransmits")
RESETS_SENT: Final = field_column("TcpResetsSent", "RST sent")
RESETS_RECEIVED: Final = field_column("TcpResetsReceived", "RST received")

# -- Kubernetes enrichment -------------------------------------------------------------

SRC_NODE: Final = field_column("SrcK8S_HostName", "Src node")
DST_NODE: Final = field_column("DstK8S_HostName", "Dst node")
SRC_NAMESPACE: Final = field_column("SrcK8S_Namespace", "Src namespace")
DST_NAMESPACE: Final = field_column("DstK8S_Namespace", "Dst namespace")
SRC_OWNER: Final = field_column("SrcK8S_OwnerName", "Src owner")
SRC_OWNER_TYPE: Final = field_column("SrcK8S_OwnerType", "Src owner type")
DST_OWNER: Final = field_column("DstK8S_OwnerName", "Dst owner")
DST_OWNER_TYPE: Final = field_column("DstK8S_OwnerType", "Dst owner type")
SRC_NAME: Final = field_column("SrcK8S_Name", "Src name")
SRC_TYPE: Final = field_column("SrcK8S_Type", "Src type")
DST_NAME: Final = field_column("DstK8S_Name", "Dst name")
DST_TYPE: Final = field_column("DstK8S_Type", "Dst type")
SRC_ZONE: Final = field_column("SrcK8S_Zone", "Src zone")
DST_ZONE: Final = field_column("DstK8S_Zone", "Dst zone")



def _named(side: str) -> Callable[[Record], Cell]:
    """``namespace/name`` of an end (``name`` without a namespace: a node), else its
    ``address:port`` (an end outside the cluster)."""
    name_key, ns_key = f"{side}K8S_Name", f"{side}K8S_Namespace"
    addr_key, port_key = f"{side}Addr", f"{side}Port"

    def render(record: Record) -> Cell:
        name = record.get(name_key)
        if name:
            namespace = record.get(ns_key)
            return f"{namespace}/{name}" if namespace else str(name)
        return endpoint(record.get(addr_key), record.get(port_key))

    return render


#: Who each end is, as a cluster user reads it; the address where no name is known.
SRC_NAMED: Final = Column("src_named", "Source", _named("Src"))
DST_NAMED: Final = Column("dst_named", "Destination", _named("Dst"))

# -- Raw ------------------------------------------------------------------------------

#: One column per field of ``FIELDS``, in canonical order, labelled by the field name.
RAW_COLUMNS: Final[tuple[Column, ...]] = tuple(
    Column(f.name, f.name, _field_render(f.name), "right" if f.kind is int else "left")
    for f in FIELDS
)
