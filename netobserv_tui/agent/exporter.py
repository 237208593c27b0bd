"""Client side of the agent session: push FLOWS and PACKETS batches to the aggregator.

Batches stay in a bounded buffer until the aggregator ACKs them. When the connection drops
the agent keeps evicting; unacknowledged batches are re-sent after reconnecting. The HELLO
names this agent run (``instance``, random) and batches are numbered in order, so the
aggregator writes a batch re-sent after a lost ACK only once (see aggregator/ingest.py).
When the buffer is over its row budget the oldest batches are dropped and counted in
``lost_rows``: memory is bounded, loss is visible.

Sending never blocks the caller (the agent's loop, which drains the kernel): after the
handshake the socket is non-blocking, :meth:`Exporter.pump` writes what the socket takes
and keeps its place in a frame, and a stalled aggregator (stopped, or slow to read) only
makes batches wait in the buffer. STATS frames go between batches, the latest one only.
Packet batches (packet capture) share the sequence numbers and the ACKs, with a budget of
their own in bytes (``max_pending_packet_bytes``); what is dropped over it is counted in
``lost_packets``.

Frames from the aggregator are handled where they are read, on the caller's thread (in
``connect()`` and ``pump()``): ACK/NACK, ERROR, and WORKLOAD, which goes to ``on_workload``.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import select
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..model.errors import CaptureError
from ..model.packets import Captured, pack_chunk
from ..model.protocol import (
    HEADER_SIZE,
    FrameType,
    ProtocolError,
    decode_header,
    decode_payload,
    encode,
    encode_raw,
    host_port,
    token_proof,
)

log = logging.getLogger(__name__)


class TokenRejected(CaptureError):
    """The aggregator refused our token: retrying cannot help."""


@dataclass
class _Batch:
    seq: int
    frame: bytes
    rows: int
    sent: bool = False
    #: Written to a connection once: the aggregator may have it, so it is never dropped
    #: for room (it is sent again, and written once, after a reconnection).
    ever_sent: bool = False
    #: A PACKETS batch: its packets and their payload bytes (``rows`` is 0).
    packets: int = 0
    size: int = 0


#: Seconds between two warnings about an aggregator that cannot be reached.
WARN_EVERY: Final = 5.0


class Exporter:
    def __init__(
        self,
        host: str,
        port: int,
        token: str,
        agent: dict[str, str],
        batch_rows: int = 5000,
        max_pending_rows: int = 1_000_000,
        max_pending_packet_bytes: int = 256 << 20,
        fallbacks: Sequence[tuple[str, int]] = (),
    ) -> None:
        #: Where the aggregator is tried, in order, at each connection: ``(host, port)``
        #: first, then ``fallbacks``. ``address`` is the last one tried or reached.
        self.addresses = list(dict.fromkeys([(host, port), *fallbacks]))
        self.address = self.addresses[0]
        self._last_warning = -float("inf")
        self.token = token
        #: What HELLO says of this agent; ``instance`` names this run (exactly-once writes).
        self.agent = {**agent, "instance": agent.get("instance") or secrets.token_hex(8)}
        self.batch_rows = batch_rows
        self.max_pending_rows = max_pending_rows
        self.max_pending_packet_bytes = max_pending_packet_bytes
        self._pending_packet_bytes = 0
        self.acked_packets = 0
        self.lost_packets = 0
        self.nacked_packets = 0
        self.sock: socket.socket | None = None
        self._buf = bytearray()
        #: The frame being written (a batch's, or STATS) and how much of it is out.
        self._out: memoryview | None = None
        self._out_batch: _Batch | None = None
        #: The latest STATS, to send at the next frame boundary.
        self._stats: bytes | None = None
        self._pending: deque[_Batch] = deque()
        self._pending_rows = 0
        self._seq = 0
        self._next_attempt = 0.0
        self.sent_rows = 0
        self.sent_packets = 0
        self.acked_rows = 0
        self.lost_rows = 0
        self.nacked_rows = 0
        self.reconnects = 0
        #: The aggregator's address and port as last reached (IPv4 as IPv4, not mapped).
        self.peer: tuple[str, int] | None = None
        #: Called with the addresses of each valid WORKLOAD frame (the whole new set), on the
        #: thread that called connect() or pump().
        self.on_workload: Callable[[list[str]], None] | None = None
        self._workload_ignored = False

    # -- connection -------------------------------------------------------------------

    def connect(self, timeout: float = 5.0) -> None:
        """Connect and say HELLO to the first of :attr:`addresses` that answers; the
        OSError of the last one (naming every address tried) when none does."""
        failures = []
        for address in self.addresses:
            self.address = address
            try:
                sock = socket.create_connection(address, timeout=timeout)
            except OSError as exc:
                failures.append(f"{host_port(*address)}: {exc.strerror or exc}")
                continue
            self._hello(sock, timeout)
            return
        raise OSError("; ".join(failures))

    def _hello(self, sock: socket.socket, timeout: float) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.sendall(encode(FrameType.HELLO, {**token_proof(self.token, FrameType.HELLO),
                                                "agent": self.agent}))
            self.sock, self._buf = sock, bytearray()
            kind, payload, rest = self._read_frame_blocking(timeout)
        except BaseException:
            self.sock = None
            sock.close()
            raise
        if kind == FrameType.ERROR:
            self._drop_connection()
            reason = payload.get("reason", "no reason given")
            host, port = self.address
            raise TokenRejected(f"the aggregator at {host}:{port} refused this agent: {reason}")
        if kind != FrameType.WELCOME:
            self._drop_connection()
            raise ProtocolError(f"expected WELCOME from the aggregator, got {kind.name}")
        for batch in self._pending:
            batch.sent = False
        self._out = self._out_batch = None
        sock.setblocking(False)  # from now on pump() never waits on the network
        peer = sock.getpeername()
        mapped = ipaddress.ip_address(peer[0].split("%")[0])
        if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped is not None:
            mapped = mapped.ipv4_mapped
        self.peer = (str(mapped), peer[1])
        named, reached = host_port(*self.address), host_port(peer[0], self.address[1])
        log.info("Connected to the aggregator at %s%s.", named,
                 "" if reached == named else f" ({reached})")
        # Frames that came with WELCOME (the aggregator sends WORKLOAD right after it).
        for kind, payload in rest:
            self._handle(kind, payload)

    def _drop_connection(self) -> None:
        self._out = self._out_batch = None
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def _ensure_connected(self) -> bool:
        if self.sock is not None:
            return True
        now = time.monotonic()
        if now < self._next_attempt:
            return False
        try:
            self.connect()
            return True
        except (OSError, ProtocolError) as exc:
            self._next_attempt = now + 1.0
            self.reconnects += 1
            self.warn_unreachable(exc)
            return False

    def warn_unreachable(self, exc: BaseException, hint: str = "will retry") -> None:
        """Log a failed connection attempt, at most once every :data:`WARN_EVERY` seconds."""
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY:
            self._last_warning = now
            log.warning("Cannot reach the aggregator (%s); %s.", exc, hint)

    # -- frames -----------------------------------------------------------------------

    def _parse_frames(self) -> list[tuple[FrameType, dict[str, Any]]]:
        frames = []
        while len(self._buf) >= HEADER_SIZE:
            kind, length = decode_header(bytes(self._buf[:HEADER_SIZE]))
            if len(self._buf) < HEADER_SIZE + length:
                break
            body = bytes(self._buf[HEADER_SIZE : HEADER_SIZE + length])
            del self._buf[: HEADER_SIZE + length]
            frames.append((kind, decode_payload(body)))
        return frames

    def _recv(self, timeout: float) -> bool:
        """Read whatever arrives within ``timeout``; False when the peer closed."""
        assert self.sock is not None
        ready, _, _ = select.select([self.sock], [], [], max(timeout, 0))
        if not ready:
            return True
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return True
        if not data:
            return False
        self._buf += data
        return True

    def _read_frame_blocking(
        self, timeout: float
    ) -> tuple[FrameType, dict[str, Any], list[tuple[FrameType, dict[str, Any]]]]:
        """The first frame, and the frames that arrived with it (to handle after it)."""
        deadline = time.monotonic() + timeout
        while True:
            frames = self._parse_frames()
            if frames:
                return frames[0][0], frames[0][1], frames[1:]
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProtocolError("the aggregator did not answer in time")
            if not self._recv(left):
                raise ProtocolError("the aggregator closed the connection")

    def _handle(self, kind: FrameType, payload: dict[str, Any]) -> None:
        if kind in (FrameType.ACK, FrameType.NACK):
            seq = payload.get("seq")
            if not isinstance(seq, int):
                log.error("The aggregator sent an acknowledgement without a sequence number.")
                return
            while self._pending and self._pending[0].sent and self._pending[0].seq <= seq:
                batch = self._pending.popleft()
                self._pending_rows -= batch.rows
                self._pending_packet_bytes -= batch.size
                if batch.seq == seq and kind == FrameType.NACK:
                    self.nacked_rows += batch.rows
                    self.nacked_packets += batch.packets
                    log.error("The aggregator rejected batch %d: %s.", seq, payload.get("reason"))
                else:
                    self.acked_rows += batch.rows
                    self.acked_packets += batch.packets
        elif kind == FrameType.ERROR:
            log.error("The aggregator reported an error: %s.", payload.get("reason"))
        elif kind == FrameType.WORKLOAD:
            ips = payload.get("ips")
            if not isinstance(ips, list) or not all(isinstance(ip, str) for ip in ips):
                log.error("The aggregator sent a WORKLOAD frame without a list of addresses; "
                          "ignored (the previous set stays).")
                return
            if self.on_workload is None:
                if not self._workload_ignored:
                    self._workload_ignored = True
                    log.warning("The aggregator sent a workload set, but this agent does not "
                                "filter by workload (--workload-filter); ignored.")
                return
            self.on_workload(ips)

    # -- public -----------------------------------------------------------------------

    def submit(self, columns: Sequence[str], rows: list[list[Any]]) -> None:
        """Queue rows for sending, in batches of ``batch_rows``."""
        cols = list(columns)
        for start in range(0, len(rows), self.batch_rows):
            chunk = rows[start : start + self.batch_rows]
            self._seq += 1
            frame = encode(FrameType.FLOWS, {"seq": self._seq, "columns": cols, "rows": chunk})
            self._pending.append(_Batch(self._seq, frame, len(chunk)))
            self._pending_rows += len(chunk)
        while self._pending_rows > self.max_pending_rows:
            oldest = self._droppable(packets=False)
            if oldest is None:
                break
            self._pending_rows -= oldest.rows
            self.lost_rows += oldest.rows
            log.warning("Export buffer full: dropped a batch of %d flows.", oldest.rows)

    def _droppable(self, *, packets: bool) -> _Batch | None:
        """Take out the oldest flows (or packets) batch the aggregator cannot have: never
        written to a connection, not the one being written, not the newest; None if none."""
        oldest = next((b for b in self._pending if (b.packets if packets else b.rows)
                       and not b.ever_sent and b is not self._out_batch), None)
        if oldest is None or oldest is self._pending[-1]:
            return None
        self._pending.remove(oldest)
        return oldest

    def submit_packets(self, captured: Captured) -> None:
        """Queue captured packets for sending, a batch per chunk (see ``PacketRing``)."""
        for index, (_, count) in enumerate(captured.chunks):
            self._seq += 1
            frame = encode_raw(FrameType.PACKETS, pack_chunk(self._seq, captured, index))
            self._pending.append(_Batch(self._seq, frame, 0, packets=count, size=len(frame)))
            self._pending_packet_bytes += len(frame)
        while self._pending_packet_bytes > self.max_pending_packet_bytes:
            oldest = self._droppable(packets=True)
            if oldest is None:
                break
            self._pending_packet_bytes -= oldest.size
            self.lost_packets += oldest.packets
            log.warning("Export buffer full: dropped a batch of %d packets.", oldest.packets)

    def send_stats(self, stats: dict[str, Any]) -> None:
        """Send ``stats`` at the next frame boundary (a newer one replaces it)."""
        self._stats = encode(FrameType.STATS, stats)
        if self.sock is not None:
            self.pump(0.0)

    def fileno(self) -> int:
        """The connection's socket (for ``select``), -1 when not connected."""
        return self.sock.fileno() if self.sock is not None else -1

    @property
    def wants_write(self) -> bool:
        """Whether :meth:`pump` has something to write as soon as the socket takes it."""
        return self.sock is not None and (
            self._out is not None or self._stats is not None
            or any(not batch.sent for batch in self._pending))

    def _next_frame(self) -> bool:
        """Start the next frame to write: STATS first, then the oldest unsent batch."""
        if self._stats is not None:
            self._out, self._out_batch, self._stats = memoryview(self._stats), None, None
            return True
        for batch in self._pending:
            if not batch.sent:
                self._out, self._out_batch = memoryview(batch.frame), batch
                return True
        return False

    def _write(self) -> None:
        """Write what the socket takes now, frame after frame, without waiting."""
        assert self.sock is not None
        while self._out is not None or self._next_frame():
            assert self._out is not None
            try:
                written = self.sock.send(self._out)
            except BlockingIOError:
                return
            self._out = self._out[written:]
            if len(self._out):
                continue
            self._out = None
            batch, self._out_batch = self._out_batch, None
            if batch is not None:
                batch.sent = batch.ever_sent = True
                self.sent_rows += batch.rows
                self.sent_packets += batch.packets

    def pump(self, wait: float = 0.0) -> None:
        """Write what the socket takes of the unsent batches (never waiting for room), and
        process the ACKs that arrive within ``wait`` seconds."""
        if not self._ensure_connected():
            return
        assert self.sock is not None
        try:
            self._write()
            if not self._recv(wait):
                raise ConnectionError("closed by the aggregator")
            for kind, payload in self._parse_frames():
                self._handle(kind, payload)
            self._write()  # the ACKs may have made room
        except (OSError, ProtocolError) as exc:
            log.warning("Lost the aggregator connection (%s); will reconnect.", exc)
            self._drop_connection()

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    def finish(self, timeout: float) -> bool:
        """Send everything, wait for the ACKs, say BYE; True if all was acknowledged."""
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            self.pump(wait=min(0.2, max(0.0, deadline - time.monotonic())))
            if self.sock is None and self._pending:
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        done = not self._pending
        if self.sock is not None:
            try:
                self.sock.setblocking(True)
                self.sock.settimeout(max(0.1, deadline - time.monotonic()))
                if self._out is not None:  # a STATS frame half out: complete it first
                    self.sock.sendall(self._out)
                self.sock.sendall(encode(FrameType.BYE, {}))
            except OSError:
                pass
        self._drop_connection()
        if not done:
            self.lost_rows += self._pending_rows
            left = sum(batch.packets for batch in self._pending)
            self.lost_packets += left
            log.error("%d flows and %d packets could not be delivered to the aggregator.",
                      self._pending_rows, left)
        return done
