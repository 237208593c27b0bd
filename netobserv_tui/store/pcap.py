"""Packet captures read back: the pcapng files of ``netobserv packets`` for the TUI.

Serves ``netobserv open FILE.pcapng``: :class:`PacketFile` gives the packets table (one
:class:`PacketSummary` per packet), the interfaces, the conversations and, per packet, the
captured bytes; :func:`decode_layers` and :func:`hexdump` give the detail view of one
packet.  Standard library and dpkt only, and no root needed beyond reading the file.

The blocks are walked here rather than with ``dpkt.pcapng.Reader``, which ignores the
interface id of each packet and reads a single interface.  Little-endian sections only
(what every x86 and arm64 writer, and this tool's aggregator, produce).  Section Header,
Interface Description (``if_name``, ``if_description``, ``if_tsresol``) and Enhanced Packet
(interface, timestamp, lengths, ``opt_comment``, ``epb_flags``) blocks are read; Decryption
Secrets Blocks are counted; every other block (Simple Packet, statistics, name resolution)
is skipped.  The file may still be growing: :meth:`PacketFile.refresh` reads the complete
blocks appended since its last call, and a partial block at the end waits for the next.

The packets table is built by a small parser of the Ethernet, 802.1Q, IPv4, IPv6, ARP,
TCP, UDP and ICMP headers, about twice as fast as dpkt: reading a file runs at ~100,000
packets/s (1 KiB TCP frames with comments, one core) and keeps ~0.5 KiB per packet, the
captured bytes staying in the file.  The detail view of one packet decodes it with dpkt.
Neither raises on malformed or truncated bytes.
"""

from __future__ import annotations

import socket
import struct
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, NamedTuple, TypeAlias

import dpkt

from .base import SQLITE_MAGIC, StoreError

#: Where packet captures are, for error messages.
PCAPNG_HINT: Final = "packet captures are written as <output>/pcap/<time>.pcapng"

SHB_TYPE: Final = 0x0A0D0D0A
IDB_TYPE: Final = 0x00000001
EPB_TYPE: Final = 0x00000006
DSB_TYPE: Final = 0x0000000A
#: The byte-order magic of a section, as a little-endian reader sees it in each order.
_LITTLE: Final = 0x1A2B3C4D
_BIG: Final = 0x4D3C2B1A
#: First four bytes of classic pcap files (microsecond and nanosecond, both orders).
_PCAP_MAGICS: Final = {bytes.fromhex(m) for m in ("a1b2c3d4", "d4c3b2a1", "a1b23c4d",
                                                   "4d3cb2a1")}
_DLT_EN10MB: Final = 1

_HEAD: Final = struct.Struct("<II")
_U32: Final = struct.Struct("<I")
_EPB: Final = struct.Struct("<5I")
_OPTION: Final = struct.Struct("<HH")
#: Bytes read from the file at a time by :meth:`PacketFile.refresh`.
_CHUNK: Final = 4 << 20
#: Bytes of each frame the packets table looks at: headers only.
_HEADERS: Final = 256

ETHERTYPES: Final = {0x0800: "IPv4", 0x86DD: "IPv6", 0x0806: "ARP", 0x8100: "802.1Q",
                     0x88A8: "802.1ad", 0x88CC: "LLDP", 0x8847: "MPLS", 0x8035: "RARP"}
IP_PROTOCOLS: Final = {1: "ICMP", 2: "IGMP", 6: "TCP", 17: "UDP", 47: "GRE", 50: "ESP",
                       51: "AH", 58: "ICMPv6", 89: "OSPF", 112: "VRRP", 132: "SCTP"}
TCP_FLAGS: Final = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")
ICMP_TYPES: Final = {0: "echo reply", 3: "destination unreachable", 5: "redirect",
                     8: "echo request", 11: "time exceeded", 12: "parameter problem"}
ICMP6_TYPES: Final = {1: "destination unreachable", 2: "packet too big", 3: "time exceeded",
                      4: "parameter problem", 128: "echo request", 129: "echo reply",
                      133: "router solicitation", 134: "router advertisement",
                      135: "neighbor solicitation", 136: "neighbor advertisement"}
ARP_OPS: Final = {1: "request", 2: "reply"}
_VLAN_TYPES: Final = (0x8100, 0x88A8)
#: IPv6 extension headers walked to reach the transport header: hop-by-hop options,
#: routing, fragment, destination options.
_IPV6_EXTENSIONS: Final = (0, 43, 44, 60)
_PRINTABLE: Final = bytes(b if 0x20 <= b < 0x7F else 0x2E for b in range(256))

#: One layer of :func:`decode_layers`: its name and its (field, value) pairs.
Layer: TypeAlias = tuple[str, list[tuple[str, str]]]


@dataclass(frozen=True, slots=True)
class PacketSummary:
    """One row of the packets table."""

    #: Position in the file among the packets, from 0 (``raw(index)``).
    index: int
    #: Nanoseconds since the Unix epoch.
    ts_ns: int
    #: The interface's ``if_name`` (``if<id>`` without one).
    interface: str
    #: The node that captured it (from ``if_description`` ``"<if> on <node>"``), or "".
    node: str
    #: ``"ingress"``, ``"egress"`` or ``""`` (no ``epb_flags`` direction).
    direction: str
    #: Length of the frame on the wire.
    length: int
    #: Bytes kept in the file (less than ``length`` when cut at the snapshot length).
    caplen: int
    #: IP (ARP: protocol) addresses, or MAC addresses for other frames.
    src: str
    dst: str
    #: ``TCP``, ``UDP``, ``ICMP``, ``ICMPv6``, ``ARP``, another IP protocol's or
    #: EtherType's name, or its number.
    proto: str
    sport: int | None
    dport: int | None
    #: A short description: TCP flags, sequence numbers and payload length, ICMP type...
    info: str
    #: The packet's ``opt_comment`` (several joined by ``"; "``), or "".
    comment: str


@dataclass(frozen=True, slots=True)
class Conversation:
    """The packets of one direction of a 5-tuple (one flow)."""

    proto: str
    src: str
    sport: int | None
    dst: str
    dport: int | None
    packets: int
    #: Sum of the frames' lengths on the wire.
    bytes: int
    first_ns: int
    last_ns: int


class _Interface(NamedTuple):
    name: str
    node: str
    linktype: int
    #: Timestamp units to nanoseconds: ``ts * mul // div``.
    mul: int
    div: int


class _Headers(NamedTuple):
    src: str
    dst: str
    proto: str
    sport: int | None
    dport: int | None
    info: str


class PacketFile:
    """A pcapng file opened for reading, maybe still growing; one call at a time.

    :class:`~.base.StoreError` with what to do when the file is missing, unreadable or not
    a little-endian pcapng file, or when a block is damaged.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = _open(path)
        try:
            _check_head(path, self._file.read(12))
        except StoreError:
            self._file.close()
            raise
        self.packets: list[PacketSummary] = []
        #: ``(if_name, if_description)`` of every interface, in file order.
        self.interfaces: list[tuple[str, str]] = []
        #: Decryption Secrets Blocks (TLS key logs) seen.
        self.secrets_blocks = 0
        #: Bytes at the end that are not yet a complete block (the file is being written).
        self.partial = 0
        self._offset = 0
        self._section: list[_Interface] = []
        self._data_at = array("Q")
        self._conversations: dict[tuple[str, str, int | None, str, int | None], list[int]] = {}
        self._strings: dict[str, str] = {}
        self._comments: dict[bytes, str] = {}
        try:
            self.refresh()
        except StoreError:
            self._file.close()
            raise

    def refresh(self) -> int:
        """Read the complete blocks appended since the last call; the new packets' count."""
        before = len(self.packets)
        f = self._file
        f.seek(self._offset)
        pending = b""
        while chunk := f.read(_CHUNK):
            buf = pending + chunk if pending else chunk
            base = self._offset
            self._blocks(buf, base)
            pending = buf[self._offset - base:]
        self.partial = len(pending)
        return len(self.packets) - before

    def raw(self, index: int) -> bytes:
        """The captured bytes of packet ``index``, from its Ethernet header on."""
        self._file.seek(self._data_at[index])
        return self._file.read(self.packets[index].caplen)

    def conversations(self) -> list[Conversation]:
        """Every 5-tuple's packets, bytes and time span, most bytes first."""
        rows = [Conversation(*key, *counts) for key, counts in self._conversations.items()]
        rows.sort(key=lambda c: (-c.bytes, c.first_ns))
        return rows

    def close(self) -> None:
        """Release the file; idempotent."""
        self._file.close()

    def _blocks(self, buf: bytes, base: int) -> None:
        """Read the complete blocks at the start of ``buf`` (at ``base`` in the file),
        moving the file offset past each."""
        off = 0
        end = len(buf)
        while end - off >= 12:
            kind, total = _HEAD.unpack_from(buf, off)
            if kind == SHB_TYPE:
                _check_order(self.path, _U32.unpack_from(buf, off + 8)[0])
            if total < 12 or total % 4:
                raise self._damaged(base + off, f"a block of type {kind:#x} claims {total} "
                                                "bytes")
            if end - off < total:
                break
            if _U32.unpack_from(buf, off + total - 4)[0] != total:
                raise self._damaged(base + off, "the block's two lengths differ")
            if kind == EPB_TYPE:
                self._packet(buf, off, total, base)
            elif kind == IDB_TYPE:
                self._interface(buf, off, total, base)
            elif kind == SHB_TYPE:
                self._section = []  # interface ids start over in each section
            elif kind == DSB_TYPE:
                self.secrets_blocks += 1
            off += total
            self._offset = base + off

    def _interface(self, buf: bytes, off: int, total: int, base: int) -> None:
        if total < 20:
            raise self._damaged(base + off, f"an interface block of {total} bytes")
        linktype = int.from_bytes(buf[off + 8:off + 10], "little")
        name = description = ""
        resolution = 6  # microseconds unless if_tsresol says otherwise
        for code, value in _options(buf, off + 16, off + total - 4):
            if code == 2:
                name = value.decode("utf-8", "replace")
            elif code == 3:
                description = value.decode("utf-8", "replace")
            elif code == 9 and value:
                resolution = value[0]
        if not name:
            name = f"if{len(self.interfaces)}"
        node = description[len(name) + 4:] if description.startswith(f"{name} on ") else ""
        if resolution & 0x80:
            mul, div = 10**9, 1 << (resolution & 0x7F)
        elif resolution <= 9:
            mul, div = 10 ** (9 - resolution), 1
        else:
            mul, div = 1, 10 ** (resolution - 9)
        self._section.append(_Interface(name, node, linktype, mul, div))
        self.interfaces.append((name, description))

    def _packet(self, buf: bytes, off: int, total: int, base: int) -> None:
        iface, high, low, caplen, length = _EPB.unpack_from(buf, off + 8)
        data = off + 28
        options = data + ((caplen + 3) & ~3)
        if options > off + total - 4:
            raise self._damaged(base + off, f"a packet of {caplen} bytes in a block of {total}")
        if iface >= len(self._section):
            raise self._damaged(base + off, f"a packet on interface {iface}, which has no "
                                            "interface block before it")
        interface = self._section[iface]
        comments = []
        direction = ""
        for code, value in _options(buf, options, off + total - 4):
            if code == 1:
                text = self._comments.get(value)
                if text is None:
                    text = self._comments[value] = value.decode("utf-8", "replace")
                comments.append(text)
            elif code == 2 and len(value) == 4:
                direction = ("", "ingress", "egress", "")[value[0] & 3]
        ts_ns = ((high << 32) | low) * interface.mul // interface.div
        if interface.linktype == _DLT_EN10MB:
            head = _summarize(buf[data:data + min(caplen, _HEADERS)])
        else:
            head = _Headers("", "", f"linktype {interface.linktype}", None, None, "")
        intern = self._strings.setdefault
        src = intern(head.src, head.src)
        dst = intern(head.dst, head.dst)
        comment = comments[0] if len(comments) == 1 else "; ".join(comments)
        self.packets.append(PacketSummary(
            len(self.packets), ts_ns, interface.name, interface.node, direction, length,
            caplen, src, dst, head.proto, head.sport, head.dport, head.info,
            comment))
        self._data_at.append(base + data)
        key = (head.proto, src, head.sport, dst, head.dport)
        counts = self._conversations.get(key)
        if counts is None:
            self._conversations[key] = [1, length, ts_ns, ts_ns]
        else:
            counts[0] += 1
            counts[1] += length
            counts[2] = min(counts[2], ts_ns)
            counts[3] = max(counts[3], ts_ns)

    def _damaged(self, at: int, what: str) -> StoreError:
        return StoreError(f"{self.path} is damaged at byte {at}: {what}; Wireshark may read "
                          "the packets before it")


def _open(path: Path) -> BinaryIO:
    if path.is_dir():
        raise StoreError(f"{path} is a directory: give a .pcapng file; {PCAPNG_HINT}")
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise StoreError(f"{path}: no such file: check the path; {PCAPNG_HINT}") from None
    except PermissionError:
        raise StoreError(f"{path}: permission denied (capture files are readable by root "
                         f"only): run with sudo, or make it readable (sudo chmod a+r "
                         f"{path})") from None
    except OSError as exc:
        raise StoreError(f"{path}: cannot read it: {exc.strerror or exc}") from None


def _check_head(path: Path, head: bytes) -> None:
    """A StoreError unless ``head`` (the first 12 bytes) starts a little-endian pcapng."""
    if not head:
        raise StoreError(f"{path} is empty, not a pcapng file (a capture writes its header "
                         "at once: is this the right file?)")
    if head[:4] in _PCAP_MAGICS:
        raise StoreError(f"{path} is a classic pcap file, not pcapng: convert it with "
                         f"`editcap -F pcapng {path} {path.stem}.pcapng`")
    if head.startswith(SQLITE_MAGIC[:12]) or head.lstrip()[:1] == b"[":
        raise StoreError(f"{path} is a flow capture (SQLite or JSON), not a packet "
                         f"capture; {PCAPNG_HINT}")
    if len(head) < 12 or _HEAD.unpack_from(head)[0] != SHB_TYPE:
        raise StoreError(f"{path} is not a pcapng file (it does not start with a section "
                         f"header block); {PCAPNG_HINT}")
    _check_order(path, _U32.unpack_from(head, 8)[0])


def _check_order(path: Path, magic: int) -> None:
    if magic == _BIG:
        raise StoreError(f"{path} has a big-endian pcapng section, which this reader does "
                         f"not read: convert it with `editcap -F pcapng {path} "
                         f"{path.stem}-le.pcapng` (it writes this machine's byte order)")
    if magic != _LITTLE:
        raise StoreError(f"{path} is not a pcapng file (its section header has no "
                         f"byte-order magic); {PCAPNG_HINT}")


def _options(buf: bytes, pos: int, end: int) -> Iterator[tuple[int, bytes]]:
    """``(code, value)`` of the options in ``buf[pos:end]``, to opt_endofopt or a bad one."""
    while pos + 4 <= end:
        code, size = _OPTION.unpack_from(buf, pos)
        stop = pos + 4 + size
        if code == 0 or stop > end:
            return
        yield code, buf[pos + 4:stop]
        pos += 4 + ((size + 3) & ~3)


def _mac(raw: bytes) -> str:
    return raw.hex(":")


def _flag_names(bits: int) -> str:
    return " ".join(name for i, name in enumerate(TCP_FLAGS) if bits >> i & 1)


#: The names of the TCP flags set in a flags byte, by its value.
_FLAGS: Final = tuple(_flag_names(bits) for bits in range(256))


def _summarize(f: bytes) -> _Headers:
    """Addresses, protocol, ports and a description of the Ethernet frame ``f``'s headers."""
    if len(f) < 14:
        return _Headers("", "", "Ethernet", None, None, "truncated Ethernet header")
    src, dst = _mac(f[6:12]), _mac(f[0:6])
    ethertype = int.from_bytes(f[12:14])
    off = 14
    for _ in range(2):
        if ethertype not in _VLAN_TYPES or len(f) < off + 4:
            break
        ethertype = int.from_bytes(f[off + 2:off + 4])
        off += 4
    if ethertype == 0x0800:
        return _ipv4(f, off, src, dst)
    if ethertype == 0x86DD:
        return _ipv6(f, off, src, dst)
    if ethertype == 0x0806:
        return _arp(f, off, src, dst)
    if ethertype <= 1500:
        return _Headers(src, dst, "LLC", None, None, f"802.3 length={ethertype}")
    return _Headers(src, dst, ETHERTYPES.get(ethertype, f"0x{ethertype:04x}"), None, None, "")


def _ipv4(f: bytes, off: int, src: str, dst: str) -> _Headers:
    if len(f) < off + 20 or f[off] >> 4 != 4 or f[off] & 0x0F < 5:
        return _Headers(src, dst, "IPv4", None, None, "truncated or invalid IPv4 header")
    header = (f[off] & 0x0F) * 4
    total = int.from_bytes(f[off + 2:off + 4])
    fragment = int.from_bytes(f[off + 6:off + 8]) & 0x1FFF
    proto = f[off + 9]
    src = socket.inet_ntop(socket.AF_INET, f[off + 12:off + 16])
    dst = socket.inet_ntop(socket.AF_INET, f[off + 16:off + 20])
    if fragment:
        name = IP_PROTOCOLS.get(proto, str(proto))
        return _Headers(src, dst, name, None, None, f"fragment offset={fragment * 8}")
    return _transport(f, off + header, total - header, proto, src, dst)


def _ipv6(f: bytes, off: int, src: str, dst: str) -> _Headers:
    if len(f) < off + 40 or f[off] >> 4 != 6:
        return _Headers(src, dst, "IPv6", None, None, "truncated or invalid IPv6 header")
    remaining = int.from_bytes(f[off + 4:off + 6])
    proto = f[off + 6]
    src = socket.inet_ntop(socket.AF_INET6, f[off + 8:off + 24])
    dst = socket.inet_ntop(socket.AF_INET6, f[off + 24:off + 40])
    off += 40
    while proto in _IPV6_EXTENSIONS:
        if len(f) < off + 8:
            return _Headers(src, dst, "IPv6", None, None, "truncated extension header")
        if proto == 44 and int.from_bytes(f[off + 2:off + 4]) >> 3:
            name = IP_PROTOCOLS.get(f[off], str(f[off]))
            offset = (int.from_bytes(f[off + 2:off + 4]) >> 3) * 8
            return _Headers(src, dst, name, None, None, f"fragment offset={offset}")
        size = 8 if proto == 44 else (f[off + 1] + 1) * 8
        proto = f[off]
        off += size
        remaining -= size
    return _transport(f, off, remaining, proto, src, dst)


def _transport(f: bytes, off: int, length: int, proto: int, src: str, dst: str) -> _Headers:
    """The TCP, UDP or ICMP header at ``f[off:]``, of an IP payload of ``length`` bytes."""
    name = IP_PROTOCOLS.get(proto, str(proto))
    if proto == 6 and len(f) >= off + 16:
        sport, dport, seq, ack, offset, bits, window = struct.unpack_from("!HHIIBBH", f, off)
        info = f"{_FLAGS[bits] or 'no flags'} seq={seq}"
        if bits & 0x10:
            info += f" ack={ack}"
        return _Headers(src, dst, name, sport, dport,
                        f"{info} win={window} len={max(length - (offset >> 4) * 4, 0)}")
    if proto == 17 and len(f) >= off + 8:
        sport, dport, size = struct.unpack_from("!HHH", f, off)
        return _Headers(src, dst, name, sport, dport, f"len={max(size - 8, 0)}")
    if proto in (1, 58) and len(f) >= off + 2:
        kind, code = f[off], f[off + 1]
        text = (ICMP_TYPES if proto == 1 else ICMP6_TYPES).get(kind, f"type={kind}")
        return _Headers(src, dst, name, None, None, f"{text} code={code}" if code else text)
    if proto in (1, 6, 17, 58):
        return _Headers(src, dst, name, None, None, f"truncated {name} header")
    return _Headers(src, dst, name, None, None, f"len={max(length, 0)}")


def _arp(f: bytes, off: int, src: str, dst: str) -> _Headers:
    if len(f) < off + 28 or f[off + 4:off + 6] != b"\x06\x04":
        return _Headers(src, dst, "ARP", None, None, "truncated or not Ethernet/IPv4")
    op = int.from_bytes(f[off + 6:off + 8])
    sender = socket.inet_ntop(socket.AF_INET, f[off + 14:off + 18])
    target = socket.inet_ntop(socket.AF_INET, f[off + 24:off + 28])
    if op == 1:
        info = f"who-has {target} tell {sender}"
    elif op == 2:
        info = f"{sender} is-at {_mac(f[off + 8:off + 14])}"
    else:
        info = f"operation {op}"
    return _Headers(sender, target, "ARP", None, None, info)


# ------------------------------------------------------------------ one packet, in detail


class _Malformed(Exception):
    """A layer dpkt could not decode; the message names it and says why."""


def decode_layers(data: bytes) -> list[Layer]:
    """The layers of the Ethernet frame ``data``, outermost first, then ``Payload``.

    Never raises: what decodes is returned, then a ``Malformed`` layer with the reason.
    """
    layers: list[Layer] = []
    try:
        _decode(data, layers)
    except _Malformed as exc:
        layers.append(("Malformed", [("Reason", str(exc))]))
    except Exception as exc:  # dpkt raises many kinds of errors on odd bytes
        layers.append(("Malformed", [("Reason", f"{type(exc).__name__}: {exc}")]))
    return layers


def _layer(name: str, cls: Any, raw: Any) -> Any:
    """``raw`` as a ``cls`` (dpkt left bytes where it failed: decode again for the reason)."""
    if isinstance(raw, cls):
        return raw
    try:
        return cls(bytes(raw))
    except (dpkt.UnpackError, struct.error, ValueError, IndexError, KeyError) as exc:
        raise _Malformed(f"{name}: {exc or type(exc).__name__}") from None


def _type_name(value: int, names: dict[int, str]) -> str:
    name = names.get(value)
    return f"{value} ({name})" if name else str(value)


def _decode(data: bytes, layers: list[Layer]) -> None:
    eth = _layer("Ethernet", dpkt.ethernet.Ethernet, data)
    layers.append(("Ethernet", [("Source", _mac(eth.src)), ("Destination", _mac(eth.dst)),
                                ("Type", f"0x{eth.type:04x} "
                                         f"({ETHERTYPES.get(eth.type, 'unknown')})")]))
    ethertype = eth.type
    for tag in getattr(eth, "vlan_tags", ()):
        if isinstance(tag, dpkt.ethernet.VLANtag8021Q):
            layers.append(("802.1Q", [("VLAN", str(tag.id)), ("Priority", str(tag.pri)),
                                      ("Type", f"0x{tag.type:04x} "
                                               f"({ETHERTYPES.get(tag.type, 'unknown')})")]))
            ethertype = tag.type
    inner: Any = eth.data
    if ethertype == 0x0800:
        inner = _decode_ipv4(_layer("IPv4", dpkt.ip.IP, inner), layers)
    elif ethertype == 0x86DD:
        inner = _decode_ipv6(_layer("IPv6", dpkt.ip6.IP6, inner), layers)
    elif ethertype == 0x0806:
        arp = _layer("ARP", dpkt.arp.ARP, inner)
        layers.append(("ARP", [
            ("Operation", _type_name(arp.op, ARP_OPS)),
            ("Sender MAC", _mac(arp.sha)), ("Sender IP", _address(arp.spa)),
            ("Target MAC", _mac(arp.tha)), ("Target IP", _address(arp.tpa))]))
        inner = arp.data
    layers.append(("Payload", [("Length", f"{len(inner)} bytes")]))


def _address(raw: bytes) -> str:
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    if len(raw) == 16:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return raw.hex(":")


def _decode_ipv4(ip: Any, layers: list[Layer]) -> Any:
    flags = [name for name, bit in (("DF", ip.df), ("MF", ip.mf)) if bit]
    layers.append(("IPv4", [
        ("Source", _address(ip.src)), ("Destination", _address(ip.dst)),
        ("TTL", str(ip.ttl)), ("Protocol", _type_name(ip.p, IP_PROTOCOLS)),
        ("Total length", str(ip.len)), ("Header length", str(ip.hl * 4)),
        ("ID", f"0x{ip.id:04x} ({ip.id})"), ("Flags", " ".join(flags) or "none"),
        ("Fragment offset", str(ip.offset * 8)), ("Checksum", f"0x{ip.sum:04x}")]))
    if ip.offset:  # a later fragment: no transport header
        return ip.data
    return _decode_transport(ip.p, ip.data, layers)


def _decode_ipv6(ip6: Any, layers: list[Layer]) -> Any:
    proto = getattr(ip6, "p", ip6.nxt)
    layers.append(("IPv6", [
        ("Source", _address(ip6.src)), ("Destination", _address(ip6.dst)),
        ("Hop limit", str(ip6.hlim)), ("Next header", _type_name(ip6.nxt, IP_PROTOCOLS)),
        ("Protocol", _type_name(proto, IP_PROTOCOLS)), ("Payload length", str(ip6.plen)),
        ("Traffic class", f"0x{ip6.fc:02x}"), ("Flow label", f"0x{ip6.flow:05x}")]))
    fragment = ip6.extension_hdrs.get(44)
    if fragment is not None and fragment.frag_off:
        return ip6.data
    return _decode_transport(proto, ip6.data, layers)


def _decode_transport(proto: int, raw: Any, layers: list[Layer]) -> Any:
    """The TCP, UDP, ICMP or ICMPv6 layer in ``raw``; its payload (``raw`` for others)."""
    if proto == 6:
        tcp = _layer("TCP", dpkt.tcp.TCP, raw)
        layers.append(("TCP", [
            ("Source port", str(tcp.sport)), ("Destination port", str(tcp.dport)),
            ("Sequence", str(tcp.seq)), ("Acknowledgment", str(tcp.ack)),
            ("Flags", _FLAGS[tcp.flags & 0xFF] or "none"), ("Window", str(tcp.win)),
            ("Header length", str(tcp.off * 4)), ("Checksum", f"0x{tcp.sum:04x}")]))
        return tcp.data
    if proto == 17:
        udp = _layer("UDP", dpkt.udp.UDP, raw)
        layers.append(("UDP", [
            ("Source port", str(udp.sport)), ("Destination port", str(udp.dport)),
            ("Length", str(udp.ulen)), ("Checksum", f"0x{udp.sum:04x}")]))
        return udp.data
    if proto in (1, 58):
        name, cls, types = (("ICMP", dpkt.icmp.ICMP, ICMP_TYPES) if proto == 1
                            else ("ICMPv6", dpkt.icmp6.ICMP6, ICMP6_TYPES))
        icmp = _layer(name, cls, raw)
        fields = [("Type", _type_name(icmp.type, types)), ("Code", str(icmp.code)),
                  ("Checksum", f"0x{icmp.sum:04x}")]
        body = icmp.data
        if isinstance(body, dpkt.icmp.ICMP.Echo | dpkt.icmp6.ICMP6.Echo):
            fields += [("Identifier", str(body.id)), ("Sequence", str(body.seq))]
            body = body.data
        layers.append((name, fields))
        return body
    return raw


def hexdump(data: bytes, width: int = 16) -> list[str]:
    """``data`` as ``0000  45 00 00 54 …  E..T…`` lines of ``width`` bytes each."""
    digits = max(4, len(f"{max(len(data) - 1, 0):x}"))
    lines = []
    for off in range(0, len(data), width):
        chunk = data[off:off + width]
        lines.append(f"{off:0{digits}x}  {chunk.hex(' '):<{width * 3 - 1}}  "
                     f"{chunk.translate(_PRINTABLE).decode('ascii')}")
    return lines
