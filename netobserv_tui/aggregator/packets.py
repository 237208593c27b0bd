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
from ..model.packets import EGRESS, MAX_SNAPLEN, PacketBatch, records
from .pcapng import EPB_HEAD, EPB_TYPE, PAD, U32, PcapngWriter, epb_options

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


def _address_bytes(body: memoryview, start: int, end: int) -> bytes:
    """The IP source and destination addresses, back to back, of the Ethernet frame
    ``body[start:end]`` (one VLAN tag skipped): 8 bytes (IPv4), 32 (IPv6) or none."""
    if end - start < 14:
        return b""
    ethertype = int.from_bytes(body[start + 12:start + 14])
    off = start + 14
    if ethertype in VLAN_TYPES and end - start >= 18:
        ethertype = int.from_bytes(body[start + 16:start + 18])
        off = start + 18
    if ethertype == ETH_P_IP and end >= off + 20:
        return bytes(body[off + 12:off + 20])
    if ethertype == ETH_P_IPV6 and end >= off + 40:
        return bytes(body[off + 8:off + 40])
    return b""


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

    def write(self, node: str, batch: PacketBatch) -> tuple[int, int]:
        """Append the packets of ``batch``, seen by the agent on ``node``: ``(packets, bytes
        on the wire)``. Flushed, so a reader of the growing file (the live view, ``-w -``)
        sees whole blocks. :class:`PacketsError` if a record does not parse: none of the
        batch's packets is written then.

        One pass over the records, each becoming its EPB in one buffer; what every packet
        of an (interface, direction) shares (its IDB's id, its options with the comment)
        is built once per batch, and with Kubernetes names once per address pair.
        """
        out = self._out
        names = batch.names
        lookup = self.lookup
        shared: dict[tuple[int, int, bytes], tuple[int, bytes]] = {}
        #: (interface, direction, addresses, captured length) -> what follows the frame.
        tails: dict[tuple[int, int, bytes, int], tuple[int, bytes]] = {}
        blocks = bytearray()
        body = memoryview(batch.body)
        head = EPB_HEAD.pack
        count = wire = 0
        for ts, ifindex, direction, orig_len, start, end in records(batch):
            caplen = end - start
            key = (ifindex, direction, _address_bytes(body, start, end) if lookup else b"",
                   caplen)
            found = tails.get(key)
            if found is None:
                ends = key[:3]
                iface_options = shared.get(ends)
                if iface_options is None:
                    iface_options = shared[ends] = self._shared(node, names[ifindex],
                                                                direction, ends[2])
                iface, options = iface_options
                pad = PAD[caplen & 3]
                total = 32 + caplen + len(pad) + len(options)
                found = tails[key] = (iface, pad + options + U32.pack(total))
            iface, tail = found
            blocks += head(EPB_TYPE, 28 + caplen + len(tail), iface, ts >> 32,
                           ts & 0xFFFFFFFF, caplen, orig_len)
            blocks += body[start:end]
            blocks += tail
            count += 1
            wire += orig_len
        out.packet_blocks(blocks, count)
        out.flush()
        self.packets += count
        self.bytes += wire
        return count, wire

    def _shared(self, node: str, ifname: str, direction: int, ends: bytes) -> tuple[int, bytes]:
        """The interface id and the options of an EPB."""
        comment = (f"Host={node}; Interface={ifname}; "
                   f"Direction={'egress' if direction == EGRESS else 'ingress'}")
        if ends and self.lookup is not None:
            half = len(ends) // 2
            family = socket.AF_INET if half == 4 else socket.AF_INET6
            src, dst = socket.inet_ntop(family, ends[:half]), socket.inet_ntop(family, ends[half:])
            described = _describe("Src", self.lookup(src)) + _describe("Dst", self.lookup(dst))
            if described:
                comment += "; " + "; ".join(described)
        options = epb_options(direction, comment)
        return self._out.interface(node, ifname, self.snaplen), options

    def close(self) -> None:
        self._out.close()
