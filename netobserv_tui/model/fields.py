"""Flow record fields: names, types and the order used on the wire and in files.

Field names follow netobserv's flow format so that existing queries keep working
(the seed article's ``SELECT DnsLatencyMs, ... FROM flow`` runs unchanged).  A field
whose feature is off is simply absent from a batch and stored as NULL.

This module imports nothing heavy: agent, aggregator and TUI all depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: Version of the record schema; bumped when a field changes meaning.
SCHEMA_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    #: Python type accepted on the wire: int, str, or list (stored as JSON text).
    kind: type
    sql: str
    doc: str


def _f(name: str, kind: type, doc: str) -> Field:
    sql = {int: "INTEGER", str: "TEXT", list: "TEXT"}[kind]
    return Field(name, kind, sql, doc)


#: Every field a flow record may carry, in canonical order.
FIELDS: Final[tuple[Field, ...]] = (
    _f("SrcAddr", str, "Source IP address (IPv4 dotted or IPv6 text)."),
    _f("DstAddr", str, "Destination IP address."),
    _f("SrcPort", int, "Source port (TCP, UDP, SCTP); 0 otherwise."),
    _f("DstPort", int, "Destination port (TCP, UDP, SCTP); 0 otherwise."),
    _f("Proto", int, "IP protocol number (6 TCP, 17 UDP, 132 SCTP, 1 ICMP, 58 ICMPv6)."),
    _f("SrcMac", str, "Source MAC address, upper-case colon form."),
    _f("DstMac", str, "Destination MAC address."),
    _f("Etype", int, "Ethernet type (2048 IPv4, 34525 IPv6)."),
    _f("Dscp", int, "DSCP of the first packet of the interval."),
    _f("IcmpType", int, "ICMP/ICMPv6 type; 0 for other protocols."),
    _f("IcmpCode", int, "ICMP/ICMPv6 code."),
    _f("Flags", int, "OR of the TCP flags seen (FIN=1 SYN=2 RST=4 PSH=8 ACK=16 URG=32 ...)."),
    _f("Bytes", int, "Bytes seen at the hook, L2 header included (skb->len)."),
    _f("Packets", int, "Packets seen at the hook."),
    _f("Sampling", int, "Sampling rate in effect (0 or 1: every packet)."),
    _f("TimeFlowStartMs", int, "Wall-clock time of the interval's first packet, ms since epoch."),
    _f("TimeFlowEndMs", int, "Wall-clock time of the interval's last packet, ms since epoch."),
    _f("TimeReceived", int, "When the aggregator received the record, s since epoch."),
    _f("AgentIP", str, "Address of the node (agent) that saw the flow."),
    _f("Interface", str, "Interface the flow was seen on."),
    _f("IfDirection", int, "0 ingress, 1 egress, at that interface."),
    _f("Interfaces", list, "All interfaces the record covers (JSON array)."),
    _f("IfDirections", list, "Direction at each of Interfaces (JSON array)."),
    _f("FlowDirection", int, "0 ingress, 1 egress, relative to the node."),
    _f("DnsId", int, "DNS transaction id."),
    _f("DnsFlags", int, "DNS header flags."),
    _f("DnsFlagsResponseCode", str, "DNS response code name (NoError, NXDomain, ServFail, ...)."),
    _f("DnsLatencyMs", int, "Time between the DNS query and its response."),
    _f("DnsErrno", int, "Error number when DNS tracking failed for this flow."),
    _f("DnsName", str, "Queried DNS name."),
    _f("PktDropBytes", int, "Bytes of this flow dropped by the kernel."),
    _f("PktDropPackets", int, "Packets of this flow dropped by the kernel."),
    _f("PktDropLatestState", str, "TCP state of the latest drop."),
    _f("PktDropLatestDropCause", str, "Kernel drop reason name of the latest drop."),
    _f("PktDropLatestFlags", int, "TCP flags of the latest dropped packet."),
    _f("TimeFlowRttNs", int, "Smoothed TCP round-trip time, ns."),
    _f("TcpRetransmits", int, "TCP segments retransmitted by the socket sending this flow."),
    _f("TcpResetsSent", int, "TCP resets sent by the socket sending this flow."),
    _f("TcpResetsReceived", int, "TCP resets received by the socket sending this flow."),
    _f("SrcK8S_Name", str, "Kubernetes name of the source."),
    _f("SrcK8S_Namespace", str, "Kubernetes namespace of the source."),
    _f("SrcK8S_Type", str, "Pod, Service or Node."),
    _f("SrcK8S_OwnerName", str, "Owner of the source (Deployment, DaemonSet, ...)."),
    _f("SrcK8S_OwnerType", str, "Kind of the source's owner."),
    _f("SrcK8S_HostName", str, "Node the source runs on."),
    _f("SrcK8S_HostIP", str, "IP of the node the source runs on."),
    _f("SrcK8S_Zone", str, "topology.kubernetes.io/zone of the source's node."),
    _f("DstK8S_Name", str, "Kubernetes name of the destination."),
    _f("DstK8S_Namespace", str, "Kubernetes namespace of the destination."),
    _f("DstK8S_Type", str, "Pod, Service or Node."),
    _f("DstK8S_OwnerName", str, "Owner of the destination."),
    _f("DstK8S_OwnerType", str, "Kind of the destination's owner."),
    _f("DstK8S_HostName", str, "Node the destination runs on."),
    _f("DstK8S_HostIP", str, "IP of the node the destination runs on."),
    _f("DstK8S_Zone", str, "topology.kubernetes.io/zone of the destination's node."),
    _f("K8S_FlowLayer", str, "infra or app."),
)

FIELD_NAMES: Final[tuple[str, ...]] = tuple(f.name for f in FIELDS)
BY_NAME: Final[dict[str, Field]] = {f.name: f for f in FIELDS}

#: Columns the SQLite file indexes, for the filters people use most.
INDEXED: Final[tuple[tuple[str, ...], ...]] = (
    ("SrcAddr",),
    ("DstAddr",),
    ("SrcPort",),
    ("DstPort",),
    ("Proto",),
    ("TimeFlowStartMs",),
    ("Interface",),
)

#: Columns an agent fills for a basic flow capture (no optional feature).
BASE_COLUMNS: Final[tuple[str, ...]] = (
    "SrcAddr",
    "DstAddr",
    "SrcPort",
    "DstPort",
    "Proto",
    "SrcMac",
    "DstMac",
    "Etype",
    "Dscp",
    "IcmpType",
    "IcmpCode",
    "Flags",
    "Bytes",
    "Packets",
    "Sampling",
    "TimeFlowStartMs",
    "TimeFlowEndMs",
    "AgentIP",
    "Interface",
    "IfDirection",
    "Interfaces",
    "IfDirections",
    "FlowDirection",
)

PROTO_NAMES: Final[dict[int, str]] = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}
