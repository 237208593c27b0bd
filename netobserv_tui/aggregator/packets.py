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
from ..model.packets import (
    EGRESS,
    MAX_SNAPLEN,
    RECORD_HEAD,
    RING_BUSY,
    RING_DISCARD,
    ZERO3,
    PacketBatch,
    PacketsError,
    records,
)
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


def _address_bytes(body: bytes | memoryview, start: int, end: int) -> bytes:
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
        is built once per batch, and with Kubernetes names once per address pair. The
        records are checked here with one test per record (:func:`records` finds and
        names the fault of a batch that fails it).
        """
        body, names, lookup, clock = batch.body, batch.names, self.lookup, batch.clock_ns
        shared: dict[tuple[int, int, bytes], tuple[int, bytes]] = {}
        #: (interface, direction, captured length[, addresses]) -> the EPB's id, total
        #: length and what follows the frame.
        tails: dict[tuple[int, int, int, bytes], tuple[int, int, bytes]] = {}
        parts: list[bytes] = []
        append = parts.append
        head = EPB_HEAD.pack
        unpack = RECORD_HEAD.unpack_from
        size = len(body)
        off = batch.start
        count = wire = 0
        for _ in range(batch.count):
            if off + 32 > size:
                break  # records() says which record
            length, _, ts, ifindex, orig_len, caplen, direction, zero = unpack(body, off)
            start = off + 32
            off += 8 + (length + 7 & ~7)
            if (length != 24 + caplen or caplen > orig_len or off > size or direction > 1
                    or zero != ZERO3 or caplen > MAX_SNAPLEN):
                if length & RING_DISCARD and not length & RING_BUSY:
                    off = start - 24 + ((length & ~RING_DISCARD) + 7 & ~7)
                    continue
                break
            end = start + caplen
            key = (ifindex, direction, caplen,
                   _address_bytes(body, start, end) if lookup else b"")
            found = tails.get(key)
            if found is None:
                if ifindex not in names:
                    break
                ends = (ifindex, direction, key[3])
                iface_options = shared.get(ends)
                if iface_options is None:
                    iface_options = shared[ends] = self._shared(node, names[ifindex],
                                                                direction, ends[2])
                iface, options = iface_options
                pad = PAD[caplen & 3]
                total = 32 + caplen + len(pad) + len(options)
                found = tails[key] = (iface, total, pad + options + U32.pack(total))
            iface, total, tail = found
            ts += clock
            append(head(EPB_TYPE, total, iface, ts >> 32, ts & 0xFFFFFFFF, caplen, orig_len))
            append(body[start:end])
            append(tail)
            count += 1
            wire += orig_len
        else:
            if off == size:
                self._out.packet_blocks(b"".join(parts), count)
                self._out.flush()
                self.packets += count
                self.bytes += wire
                return count, wire
        for _ in records(batch):  # raises PacketsError naming the fault
            pass
        raise PacketsError("a record does not parse")  # pragma: no cover - records() raises

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
