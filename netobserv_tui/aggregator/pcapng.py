"""pcapng output: the packet capture's file as Wireshark and tshark read it, block by block.

Serves :class:`~.packets.PacketSink` (the aggregator's ``<output>/pcap/<time>.pcapng``),
the ``-w -`` stream of :mod:`netobserv_tui.capture.pcap_stream` (:func:`secrets_block`)
and ``--tls-keylog`` at the end of a capture (:func:`with_secrets_first`).  Standard
library and dpkt only: the aggregator runs in a pod with no terminal.

Every block is little-endian and written whole, so a reader of the growing file (``tail
-f`` into ``tshark -r -``, the ``-w -`` follower) never sees a partial block after a
:meth:`PcapngWriter.flush`.  The layout:

* one Section Header Block, at once, naming the application, the OS and the machine;
* one Interface Description Block per (node, interface), written the first time that
  interface has a packet, so IDBs appear mid-stream as agents report new interfaces:
  ``if_name`` is the interface, ``if_description`` ``"<interface> on <node>"`` (Wireshark's
  ``frame.interface_description``), link type Ethernet, nanosecond timestamps;
* one Enhanced Packet Block per packet, with the original length (a frame cut at the
  snapshot length keeps its real length), ``epb_flags`` inbound/outbound and a comment.

The SHB and IDBs are built with dpkt's block classes.  EPBs are packed by hand with
:mod:`struct`: dpkt's ``EnhancedPacketBlockLE`` always writes the captured length as the
original length, and packing by hand is several times faster (one ``pack`` and one
``join`` per packet).
"""

from __future__ import annotations

import mmap
import os
import platform
import shutil
import struct
import tempfile
from pathlib import Path
from typing import BinaryIO, Final

from dpkt import pcapng as dp

from ..model.private import make_private_dirs

#: Block types this module writes by hand or looks for.
SHB_TYPE: Final = dp.PCAPNG_BT_SHB
EPB_TYPE: Final = dp.PCAPNG_BT_EPB
DSB_TYPE: Final = 0x0000000A
#: The DSB's secrets type of a TLS key log in NSS format ("TLSK").
TLS_KEY_LOG: Final = 0x544C534B
#: The EPB option holding the direction (a u32 whose bits 0-1 are 1 inbound, 2 outbound).
EPB_FLAGS: Final = 2
INBOUND: Final = 1
OUTBOUND: Final = 2
#: if_tsresol 9: timestamps count nanoseconds.
TSRESOL_NS: Final = 9

_BLOCK_HEAD: Final = struct.Struct("<II")
#: An EPB's fixed fields: type, total length, interface id, timestamp high and low 32 bits,
#: captured and original length. Then the frame, padded to 4 bytes, the options and the
#: total length again: 32 bytes plus the padded frame plus the options.
EPB_HEAD: Final = struct.Struct("<7I")
_OPTION_HEAD: Final = struct.Struct("<HH")
_FLAGS_OPTION: Final = struct.Struct("<HHI")
_END_OF_OPTIONS: Final = _OPTION_HEAD.pack(dp.PCAPNG_OPT_ENDOFOPT, 0)
U32: Final = struct.Struct("<I")
#: The zero bytes that pad ``n`` bytes to a multiple of 4: ``PAD[n & 3]``.
PAD: Final = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")
_BUFFER: Final = 1 << 16


class PcapngError(ValueError):
    """A file that is not a pcapng this module wrote (little-endian, one section)."""


def _option(code: int, value: bytes) -> dp.PcapngOptionLE:
    return dp.PcapngOptionLE(code=code, data=value)


def _with_end(options: list[dp.PcapngOptionLE]) -> list[dp.PcapngOptionLE]:
    return [*options, dp.PcapngOptionLE(code=dp.PCAPNG_OPT_ENDOFOPT)]


def epb_options(direction: int | None, comment: str | None) -> bytes:
    """An EPB's options: the comment, ``epb_flags`` inbound (direction 0) or outbound (1),
    and the end of options; empty bytes when there are none."""
    parts: list[bytes] = []
    if comment is not None:
        text = comment.encode()
        parts += (_OPTION_HEAD.pack(dp.PCAPNG_OPT_COMMENT, len(text)), text, PAD[len(text) & 3])
    if direction is not None:
        parts.append(_FLAGS_OPTION.pack(EPB_FLAGS, 4, OUTBOUND if direction else INBOUND))
    if parts:
        parts.append(_END_OF_OPTIONS)
    return b"".join(parts)


def secrets_block(keylog: bytes) -> bytes:
    """A Decryption Secrets Block holding ``keylog``, NSS key log text (``CLIENT_RANDOM …``)."""
    pad = PAD[len(keylog) & 3]
    total = 20 + len(keylog) + len(pad)
    return b"".join((struct.pack("<IIII", DSB_TYPE, total, TLS_KEY_LOG, len(keylog)),
                     keylog, pad, U32.pack(total)))


class PcapngWriter:
    """Writes one pcapng section to ``out``: the SHB at once, then IDBs, EPBs and DSBs.

    Not thread-safe.  :meth:`create` makes (and owns) the file; with a stream given to the
    constructor, :meth:`close` flushes it and leaves it open.
    """

    def __init__(self, out: BinaryIO, *, application: str) -> None:
        self._out = out
        self._owned = False
        self._ids: dict[tuple[str, str], int] = {}
        #: Enhanced Packet Blocks written.
        self.packets = 0
        #: Bytes written, all blocks included (the file's size once flushed).
        self.bytes_written = 0
        options = [_option(dp.PCAPNG_OPT_SHB_USERAPPL, application.encode()),
                   _option(dp.PCAPNG_OPT_SHB_OS,
                           f"{platform.system()} {platform.release()}".encode())]
        if platform.machine():
            options.append(_option(dp.PCAPNG_OPT_SHB_HARDWARE, platform.machine().encode()))
        self._write(bytes(dp.SectionHeaderBlockLE(opts=_with_end(options))))
        self._out.flush()  # a reader that opens the file at once finds a pcapng

    @classmethod
    def create(cls, path: Path, *, application: str) -> PcapngWriter:
        """A writer of the new file ``path`` (mode 0600; missing parents made 0700).

        ``FileExistsError`` if it exists: a capture never overwrites another.
        """
        make_private_dirs(path.parent)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        out = os.fdopen(fd, "wb", buffering=_BUFFER)
        try:
            writer = cls(out, application=application)
        except BaseException:
            out.close()
            raise
        writer._owned = True
        return writer

    def interface(self, node: str, name: str, snaplen: int = 65535) -> int:
        """The interface id of ``name`` on ``node``; its IDB is written the first time."""
        key = (node, name)
        found = self._ids.get(key)
        if found is not None:
            return found
        options = [_option(dp.PCAPNG_OPT_IF_NAME, name.encode()),
                   _option(dp.PCAPNG_OPT_IF_DESCRIPTION, f"{name} on {node}".encode()),
                   _option(dp.PCAPNG_OPT_IF_TSRESOL, bytes([TSRESOL_NS]))]
        self._write(bytes(dp.InterfaceDescriptionBlockLE(
            linktype=dp.DLT_EN10MB, snaplen=snaplen, opts=_with_end(options))))
        self._ids[key] = iface = len(self._ids)
        return iface

    def packet(self, iface: int, ts_ns: int, data: bytes, orig_len: int, *,
               direction: int | None = None, comment: str | None = None) -> None:
        """One EPB: ``data`` (the frame's first bytes) of an ``orig_len``-byte frame seen at
        ``ts_ns`` on interface ``iface``; direction 0 ingress (inbound), 1 egress."""
        caplen = len(data)
        if not 0 <= iface < len(self._ids):
            raise ValueError(f"interface id {iface} was not returned by interface()")
        if orig_len < caplen:
            raise ValueError(f"{caplen} bytes captured of a {orig_len}-byte frame")
        options = epb_options(direction, comment)
        pad = PAD[caplen & 3]
        total = 32 + caplen + len(pad) + len(options)
        self._out.write(b"".join((
            EPB_HEAD.pack(EPB_TYPE, total, iface, ts_ns >> 32, ts_ns & 0xFFFFFFFF, caplen,
                          orig_len),
            data, pad, options, U32.pack(total))))
        self.bytes_written += total
        self.packets += 1

    def packet_blocks(self, blocks: bytes | bytearray | memoryview, count: int) -> None:
        """``count`` EPBs built by the caller (see :func:`epb_options`), back to back, for
        interfaces :meth:`interface` returned."""
        self._write(blocks)
        self.packets += count

    def secrets(self, keylog: bytes) -> None:
        """A Decryption Secrets Block with ``keylog`` (NSS key log text), at this point of
        the file: Wireshark uses it for the TLS sessions whose packets come after it."""
        self._write(secrets_block(keylog))

    def flush(self) -> None:
        """Hand every block written so far to the OS (readers of the file then see them)."""
        self._out.flush()

    def close(self) -> None:
        """Flush, and close the file if :meth:`create` opened it; idempotent."""
        if self._out.closed:
            return
        self._out.flush()
        if self._owned:
            self._out.close()

    def _write(self, block: bytes | bytearray | memoryview) -> None:
        self._out.write(block)
        self.bytes_written += len(block)


def _section_end(path: Path, view: mmap.mmap) -> int:
    """The SHB's length, once every block of the file is checked (whole, one section)."""
    size = len(view)
    if size < 28 or _BLOCK_HEAD.unpack_from(view)[0] != SHB_TYPE:
        raise PcapngError(f"{path} is not a pcapng file (no section header at its start)")
    if U32.unpack_from(view, 8)[0] != dp.BYTE_ORDER_MAGIC:
        raise PcapngError(f"{path} is a big-endian pcapng file; netobserv writes "
                          "little-endian ones")
    off = 0
    while off < size:
        if size - off < 12:
            raise PcapngError(f"{path} ends in a partial block at byte {off} (was the "
                              "capture stopped cleanly?)")
        kind, total = _BLOCK_HEAD.unpack_from(view, off)
        if total < 12 or total % 4 or (kind == SHB_TYPE) != (off == 0):
            raise PcapngError(f"{path}: damaged or unexpected block (type {kind:#x}, "
                              f"{total} bytes) at byte {off}")
        if off + total > size or U32.unpack_from(view, off + total - 4)[0] != total:
            raise PcapngError(f"{path} ends in a partial block at byte {off} (was the "
                              "capture stopped cleanly?)")
        off += total
    return int(_BLOCK_HEAD.unpack_from(view)[1])


def with_secrets_first(path: Path, keylog: bytes) -> None:
    """Rewrite the finished file ``path`` with a DSB holding ``keylog`` right after its SHB.

    Wireshark decrypts a TLS session only with secrets that come before its packets, and
    the key log is complete only at the end of the capture.  Atomic: a temporary file in
    the same directory (mode 0600, then the original's) replaces ``path`` once synced.
    DSBs already in the file stay, after the new one.  :class:`PcapngError` when the file
    is not a whole little-endian single-section pcapng.
    """
    with open(path, "rb") as src:
        if os.fstat(src.fileno()).st_size == 0:
            raise PcapngError(f"{path} is empty, not a pcapng file")
        with mmap.mmap(src.fileno(), 0, access=mmap.ACCESS_READ) as view:
            shb_len = _section_end(path, view)
            head = view[:shb_len]
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(head)
                out.write(secrets_block(keylog))
                src.seek(shb_len)
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fchmod(out.fileno(), os.fstat(src.fileno()).st_mode & 0o7777)
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
