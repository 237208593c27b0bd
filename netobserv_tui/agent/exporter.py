"""Client side of the agent session: push FLOWS and PACKETS batches to the aggregator.

Batches stay in a bounded buffer until the aggregator ACKs them. When the connection drops
the agent keeps evicting; unacknowledged batches are re-sent after reconnecting (so a batch
may be written twice if only its ACK was lost). When the buffer is over its row budget the
oldest batches are dropped and counted in ``lost_rows``: memory is bounded, loss is visible.
Packet batches (packet capture) share the sequence numbers and the ACKs, with a budget of
their own in bytes (``max_pending_packet_bytes``); what is dropped over it is counted in
``lost_packets``.

Frames from the aggregator are handled where they are read, on the caller's thread (in
``connect()`` and ``pump()``): ACK/NACK, ERROR, and WORKLOAD, which goes to ``on_workload``.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..model.errors import CaptureError
from ..model.packets import Packet, pack_packets
from ..model.protocol import (
    HEADER_SIZE,
    FrameType,
    ProtocolError,
    decode_header,
    decode_payload,
    encode,
    encode_raw,
    host_port,
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
    #: A PACKETS batch: its packets and their payload bytes (``rows`` is 0).
    packets: int = 0
    size: int = 0


class Exporter:
    def __init__(
        self,
        host: str,
        port: int,
        token: str,
        agent: dict[str, str],
        batch_rows: int = 5000,
        max_pending_rows: int = 1_000_000,
        batch_bytes: int = 4 << 20,
        max_pending_packet_bytes: int = 256 << 20,
    ) -> None:
        self.address = (host, port)
        self.token = token
        self.agent = agent
        self.batch_rows = batch_rows
        self.max_pending_rows = max_pending_rows
        self.batch_bytes = batch_bytes
        self.max_pending_packet_bytes = max_pending_packet_bytes
        self._pending_packet_bytes = 0
        self.acked_packets = 0
        self.lost_packets = 0
        self.nacked_packets = 0
        self.sock: socket.socket | None = None
        self._buf = bytearray()
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
        #: Called with the addresses of each valid WORKLOAD frame (the whole new set), on the
        #: thread that called connect() or pump().
        self.on_workload: Callable[[list[str]], None] | None = None
        self._workload_ignored = False

    # -- connection -------------------------------------------------------------------

    def connect(self, timeout: float = 5.0) -> None:
        sock = socket.create_connection(self.address, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.sendall(encode(FrameType.HELLO, {"token": self.token, "agent": self.agent}))
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
        named, reached = host_port(*self.address), host_port(sock.getpeername()[0],
                                                              self.address[1])
        log.info("Connected to the aggregator at %s%s.", named,
                 "" if reached == named else f" ({reached})")
        # Frames that came with WELCOME (the aggregator sends WORKLOAD right after it).
        for kind, payload in rest:
            self._handle(kind, payload)

    def _drop_connection(self) -> None:
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
            log.warning("Aggregator at %s:%d unreachable (%s); will retry.", *self.address, exc)
            return False

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
        data = self.sock.recv(1 << 20)
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
        while self._pending_rows > self.max_pending_rows and len(self._pending) > 1:
            batch = self._pending.popleft()
            self._pending_rows -= batch.rows
            self.lost_rows += batch.rows
            log.warning("Export buffer full: dropped a batch of %d flows.", batch.rows)

    def submit_packets(self, packets: list[Packet]) -> None:
        """Queue captured packets for sending, in batches of about ``batch_bytes``."""
        start = 0
        while start < len(packets):
            end, size = start, 0
            while end < len(packets) and (end == start or size < self.batch_bytes):
                size += len(packets[end].data) + 40
                end += 1
            self._seq += 1
            frame = encode_raw(FrameType.PACKETS, pack_packets(self._seq, packets[start:end]))
            self._pending.append(_Batch(self._seq, frame, 0, packets=end - start,
                                        size=len(frame)))
            self._pending_packet_bytes += len(frame)
            start = end
        while self._pending_packet_bytes > self.max_pending_packet_bytes:
            oldest = next((b for b in self._pending if b.packets and not b.sent), None)
            if oldest is None or oldest is self._pending[-1]:
                break
            self._pending.remove(oldest)
            self._pending_packet_bytes -= oldest.size
            self.lost_packets += oldest.packets
            log.warning("Export buffer full: dropped a batch of %d packets.", oldest.packets)

    def send_stats(self, stats: dict[str, Any]) -> None:
        if self.sock is not None:
            try:
                self.sock.sendall(encode(FrameType.STATS, stats))
            except OSError:
                self._drop_connection()

    def pump(self, wait: float = 0.0) -> None:
        """Send unsent batches and process ACKs that arrive within ``wait`` seconds."""
        if not self._ensure_connected():
            return
        assert self.sock is not None
        try:
            for batch in self._pending:
                if not batch.sent:
                    self.sock.sendall(batch.frame)
                    batch.sent = True
                    self.sent_rows += batch.rows
                    self.sent_packets += batch.packets
            if not self._recv(wait):
                raise ConnectionError("closed by the aggregator")
            for kind, payload in self._parse_frames():
                self._handle(kind, payload)
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
