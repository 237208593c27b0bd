"""The packet capture's file: PACKETS batches from agents into ``<output>/pcap/<time>.pcapng``.

Serves :class:`~.ingest.Ingest` (the writer calls :meth:`PacketSink.write` with each
validated batch, in order, before the ACK) for the :class:`~.server.Aggregator` of a
``netobserv packets`` capture.  One Interface Description Block per (node, interface), as
the agents name them; each Enhanced Packet Block carries, as its comment, what the flows
carry as columns: the interface, direction and host that saw it and, with Kubernetes
enrichment, who each end is (``SrcK8S_Namespace=…; SrcK8S_Name=…; …``), so that
``frame.comment contains "DstK8S_Name=web"`` works in Wireshark.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol

from .. import __version__
from ..model.packets import EGRESS, MAX_SNAPLEN, Packet
from .pcapng import PcapngWriter

ETH_P_IP: Final = 0x0800
ETH_P_IPV6: Final = 0x86DD
VLAN_TYPES: Final = (0x8100, 0x88A8)


class _Meta(Protocol):
    """What :meth:`~.enrich.Inventory.lookup` returns (an :class:`~.enrich.Meta`)."""

    name: str
    namespace: str | None
    type: str
    owner_name: str
    owner_type: str
    host_name: str | None


def addresses(frame: bytes) -> tuple[str, str] | None:
    """The IP source and destination of an Ethernet frame (one VLAN tag skipped), or None."""
    if len(frame) < 14:
        return None
    ethertype = int.from_bytes(frame[12:14])
    off = 14
    if ethertype in VLAN_TYPES and len(frame) >= 18:
        ethertype = int.from_bytes(frame[16:18])
        off = 18
    if ethertype == ETH_P_IP and len(frame) >= off + 20:
        return (socket.inet_ntop(socket.AF_INET, frame[off + 12:off + 16]),
                socket.inet_ntop(socket.AF_INET, frame[off + 16:off + 20]))
    if ethertype == ETH_P_IPV6 and len(frame) >= off + 40:
        return (socket.inet_ntop(socket.AF_INET6, frame[off + 8:off + 24]),
                socket.inet_ntop(socket.AF_INET6, frame[off + 24:off + 40]))
    return None


def _describe(prefix: str, meta: _Meta | None) -> list[str]:
    if meta is None:
        return []
    fields = [("Namespace", meta.namespace), ("Name", meta.name), ("Type", meta.type),
              ("OwnerName", meta.owner_name), ("OwnerType", meta.owner_type),
              ("HostName", meta.host_name)]
    return [f"{prefix}K8S_{key}={value}" for key, value in fields if value]


class PacketSink:
    """Writes validated packet batches to one pcapng file (owned; closed by :meth:`close`)."""

    def __init__(self, path: Path, *, snaplen: int = MAX_SNAPLEN,
                 lookup: Callable[[str], _Meta | None] | None = None) -> None:
        self.path = path
        self.snaplen = snaplen
        #: Who an address is (the Kubernetes inventory), or None: no names in the comments.
        self.lookup = lookup
        self.packets = 0
        self.bytes = 0
        self._out = PcapngWriter.create(path, application=f"netobserv-tui {__version__}")
        self._ends: dict[tuple[str, str], str] = {}

    def write(self, node: str, packets: list[Packet]) -> None:
        """Append ``packets`` seen by the agent on ``node``; flushed, so a reader of the
        growing file (the live view, ``-w -``) sees whole blocks."""
        out = self._out
        self._ends.clear()  # looked up once per batch: pods come and go, addresses move
        for p in packets:
            iface = out.interface(node, p.ifname, self.snaplen)
            comment = (f"Host={node}; Interface={p.ifname}; "
                       f"Direction={'egress' if p.direction == EGRESS else 'ingress'}")
            ends = self._names(p.data)
            if ends:
                comment += "; " + ends
            out.packet(iface, p.ts_ns, p.data, p.orig_len, direction=p.direction,
                       comment=comment)
            self.packets += 1
            self.bytes += p.orig_len
        out.flush()

    def _names(self, frame: bytes) -> str:
        if self.lookup is None:
            return ""
        pair = addresses(frame)
        if pair is None:
            return ""
        text = self._ends.get(pair)
        if text is None:
            text = "; ".join(_describe("Src", self.lookup(pair[0]))
                             + _describe("Dst", self.lookup(pair[1])))
            self._ends[pair] = text
        return text

    def close(self) -> None:
        self._out.close()

