"""``-w -``: the packet file as a live pcapng stream on stdout, for Wireshark or tshark.

Serves ``netobserv packets ... -w -`` (:mod:`.run`) on this host: the aggregator writes
``output/pcap/<time>.pcapng`` and flushes whole blocks; :class:`PcapngFollower` reads the
file as it grows and copies each complete block to the output, in a thread of its own so
that a slow reader (Wireshark drawing) never stalls the capture.  With ``--tls-keylog`` the
key log's new lines are sent as a Decryption Secrets Block before the next packets, so a
TLS session whose keys the application logged at its handshake decrypts live.

When the output's reader goes away (Wireshark closed: ``EPIPE``), the follower stops and
says so; the capture goes on to its file until it is stopped.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from pathlib import Path
from typing import BinaryIO, Final

from ..aggregator.pcapng import secrets_block

log = logging.getLogger(__name__)

SHB_TYPE: Final = 0x0A0D0D0A
BLOCK_HEAD: Final = struct.Struct("<II")


class StreamError(Exception):
    """The file is not a little-endian pcapng stream this tool wrote."""


def split_blocks(buf: bytearray) -> list[bytes]:
    """Take the complete blocks off the front of ``buf`` (what remains is a partial one)."""
    blocks = []
    off = 0
    while len(buf) - off >= BLOCK_HEAD.size:
        kind, total = BLOCK_HEAD.unpack_from(buf, off)
        if total < 12 or total % 4:
            raise StreamError(f"a block of type {kind:#x} claims {total} bytes: not pcapng")
        if len(buf) - off < total:
            break
        blocks.append(bytes(buf[off:off + total]))
        off += total
    del buf[:off]
    return blocks


class KeylogFollower:
    """The lines appended to a TLS key log file since the last call (whole lines only)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._offset = 0

    def new_lines(self) -> bytes:
        if self.path is None:
            return b""
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return b""  # not written yet: the application creates it at its first handshake
        end = data.rfind(b"\n") + 1
        self._offset += end
        return data[:end]


class PcapngFollower:
    """Copies a growing pcapng file to ``out`` block by block until :meth:`finish`."""

    def __init__(self, path: Path, out: BinaryIO, keylog: Path | None = None,
                 poll: float = 0.05) -> None:
        self.path = path
        self.out = out
        self.keys = KeylogFollower(keylog)
        self.poll = poll
        self.blocks = 0
        self.secrets = 0
        #: Why the stream ended early ("the reader of stdout closed it"), or None.
        self.broken: str | None = None
        self._finish = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pcapng-stdout", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finish(self, timeout: float = 30.0) -> None:
        """The file is complete: copy what is left, then return."""
        self._finish.set()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._copy()
        except BrokenPipeError:
            self.broken = "the reader of the stream closed it"
        except (OSError, StreamError) as exc:
            self.broken = f"the stream stopped: {exc}"
        if self.broken:
            log.warning("pcapng on stdout: %s; the capture goes on into %s.", self.broken,
                        self.path)

    def _copy(self) -> None:
        buf = bytearray()
        started = False
        with self.path.open("rb") as f:
            while True:
                last = self._finish.is_set()  # read once more after the file was completed
                chunk = f.read(1 << 20)
                buf += chunk
                blocks = split_blocks(buf)
                if blocks and not started:
                    if BLOCK_HEAD.unpack_from(blocks[0])[0] != SHB_TYPE:
                        raise StreamError("the file does not begin with a section header")
                    self._write(blocks.pop(0))
                    started = True
                if started:
                    keys = self.keys.new_lines()
                    if keys:  # before the packets: the handshake they decrypt comes next
                        self._write(secrets_block(keys))
                        self.secrets += 1
                for block in blocks:
                    self._write(block)
                    self.blocks += 1
                if blocks or chunk:
                    self.out.flush()
                if not chunk:
                    if last:
                        return
                    self._finish.wait(self.poll)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self.out.write(view)
            view = view[written or 0:]


def stdout_binary() -> BinaryIO:
    """Standard output as an unbuffered binary stream, refused when it is a terminal."""
    if os.isatty(1):
        raise OSError("stdout is a terminal: pipe it, as in `netobserv packets tcp,80 -w - | "
                      "wireshark -k -i -` or `... | tshark -r -`")
    return os.fdopen(os.dup(1), "wb", buffering=0)
