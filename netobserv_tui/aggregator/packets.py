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
from typing import Protocol

from .. import __version__
from ..model.packets import EGRESS, MAX_SNAPLEN, PacketBatch, PacketsError, records
from ..model.speedups import epb_blocks
from .pcapng import PcapngWriter, epb_options


class _Meta(Protocol):
    """What :meth:`~.enrich.Inventory.lookup` returns (an :class:`~.enrich.Meta`)."""

    name: str
    namespace: str | None
    type: str
    owner_name: str
    owner_type: str
    host_name: str | None


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
        #: The blocks of the batch being written; kept, so its pages stay mapped.
        self._blocks = bytearray()

    def write(self, node: str, batch: PacketBatch) -> tuple[int, int]:
        """Append the packets of ``batch``, seen by the agent on ``node``: ``(packets, bytes
        on the wire)``. Flushed, so a reader of the growing file (the live view, ``-w -``)
        sees whole blocks. :class:`PacketsError` if a record does not parse: none of the
        batch's packets is written then.

        One pass over the records (:func:`~netobserv_tui.model.speedups.epb_blocks`, in C
        when built), each becoming its EPB in one buffer; what every packet of an
        (interface, direction[, address pair]) shares, its IDB's id and its options with
        the comment, is built once per batch. When the pass fails, :func:`records` finds
        and names the fault.
        """
        names = batch.names

        def options_of(ifindex: int, direction: int, ends: bytes) -> tuple[int, bytes]:
            return self._shared(node, names[ifindex], direction, ends)

        done = epb_blocks(batch.body, batch.start, batch.count, batch.clock_ns, names,
                          self.lookup is not None, options_of, self._blocks)
        if done is None:
            for _ in records(batch):  # raises PacketsError naming the fault
                pass
            raise PacketsError("a record does not parse")  # pragma: no cover
        length, count, wire = done
        with memoryview(self._blocks) as blocks:
            self._out.packet_blocks(blocks[:length], count)
        self._out.flush()
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
