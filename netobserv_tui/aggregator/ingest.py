"""Ingest from agents: HELLO, FLOWS, PACKETS, STATS, BYE; the bounded queue, the writer, ACKs.

Serves the agents (``python -m netobserv_tui.agent``) for the
:class:`~.server.Aggregator`, which owns the files and the connections and hands each
HELLO connection to :meth:`Ingest.session`.  A FLOWS batch is validated before it is
queued (a NACKed batch never reaches the files), queued in a :class:`RowQueue` bounded by
rows (a full queue stops the agent's handler reading its socket: TCP backpressure), written
in order by the single consumer :meth:`Ingest.write_loop`, then ACKed (NACKed on a write
error).  Agents also get the WORKLOAD frame (:meth:`Ingest.set_workload`), and each agent's
own counters from its STATS are kept in its :class:`AgentRecord`.  A PACKETS batch (packet
capture) is parsed whole before it is queued, weighs one row per KiB in the queue, and is
written by the same consumer to the :class:`~.packets.PacketSink`.

Exactly once: an agent run names itself with a random ``instance`` in its HELLO and
numbers its batches (``seq``, increasing, shared by FLOWS and PACKETS). It sends them in
order, and after a reconnection sends again, in order, every batch it has no ACK for.
So, per instance, a batch whose ``seq`` is not above the highest one written is one
already written (its ACK was lost with the connection): the writer ACKs it again without
writing it, and counts it in ``duplicate_batches``. This holds across any number of
connections of the same run, whatever the order in which their handlers reach the queue
(each connection's own frames stay in order). Without an ``instance`` nothing is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

from ..model.packets import PacketBatch, PacketsError, packets_seq, read_batch
from ..model.protocol import FrameType, ProtocolError, decode_payload_reference, encode
from .batch import Batch, BatchError, flows_seq, parse_flows
from .connection import Frame, read_frame
from .packets import PacketSink
from .writers import FlowWriter

log = logging.getLogger(__name__)

#: Agent counters kept per agent: at most this many keys, each name at most this long.
MAX_AGENT_COUNTERS: Final = 64
MAX_COUNTER_NAME: Final = 64

#: The keys of a FLOWS payload; with no other key, a valid batch is at most 4 levels deep.
FLOWS_KEYS: Final = frozenset({"seq", "columns", "rows"})


@dataclass(slots=True)
class _Job:
    session: _AgentSession | None
    seq: int
    batch: Batch | None
    bytes: int
    packets: int
    #: A PACKETS batch instead of a FLOWS one (``bytes`` and ``packets`` are known once
    #: it is written: its records are checked as they are written).
    captured: PacketBatch | None = None

    @property
    def weight(self) -> int:
        """Its place in the queue: rows, or one per KiB of captured packets."""
        if self.batch is not None:
            return self.batch.nrows
        assert self.captured is not None
        return max(1, len(self.captured.body) >> 10)


@dataclass(slots=True)
class AgentRecord:
    """What the aggregator knows about one agent, across its reconnections."""

    key: str
    info: dict[str, str]
    connections: int = 0
    batches: int = 0
    flows: int = 0
    bytes: int = 0
    packets: int = 0
    rejected: int = 0
    captured_packets: int = 0
    #: The agent's own counters from its latest STATS (they are cumulative on its side).
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def node(self) -> str:
        """The agent's node as the packet file names it: its hostname, else its key."""
        return self.info.get("hostname") or self.key

    def as_dict(self) -> dict[str, Any]:
        return {**self.info, "connected": self.connections > 0, "batches": self.batches,
                "flows": self.flows, "bytes": self.bytes, "packets": self.packets,
                "rejected": self.rejected, "captured_packets": self.captured_packets,
                "stats": dict(self.counters)}


class _AgentSession:
    """One agent connection after a good HELLO."""

    def __init__(self, record: AgentRecord, writer: asyncio.StreamWriter,
                 instance: str = "") -> None:
        self.record = record
        self.writer = writer
        #: The agent run's name from HELLO ("": an agent that does not give one).
        self.instance = instance
        self.pending = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def send(self, kind: FrameType, payload: dict[str, Any]) -> None:
        """Queue a reply; dropped if the connection is gone or was half-closed on an error
        (batches queued before a protocol error are still written, their ACK goes nowhere)."""
        self.send_frame(encode(kind, payload))

    def send_frame(self, frame: bytes) -> None:
        """:meth:`send` of an encoded frame (one encoding for many agents)."""
        if self.writer.is_closing():
            return
        try:
            self.writer.write(frame)
        except RuntimeError:  # write() after write_eof(): the connection is being refused
            pass

    def queued(self) -> None:
        self.pending += 1
        self.idle.clear()

    def done(self) -> None:
        self.pending -= 1
        if not self.pending:
            self.idle.set()


class RowQueue:
    """FIFO of write jobs bounded by the total rows queued or being written.

    A job larger than the whole capacity is still admitted when the queue is empty, so one
    oversized batch cannot wedge the server; memory stays bounded by capacity plus one batch.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.rows = 0
        self.peak_rows = 0
        self._items: deque[tuple[_Job | None, int]] = deque()
        self._cond = asyncio.Condition()

    async def put(self, job: _Job) -> None:
        weight = job.weight
        async with self._cond:
            await self._cond.wait_for(lambda: not self.rows or self.rows + weight <= self.capacity)
            self._items.append((job, weight))
            self.rows += weight
            self.peak_rows = max(self.peak_rows, self.rows)
            self._cond.notify_all()

    async def close(self) -> None:
        """Queue the end marker, past the capacity: the writer stops after what is queued."""
        async with self._cond:
            self._items.append((None, 0))
            self._cond.notify_all()

    async def get(self) -> tuple[_Job | None, int]:
        async with self._cond:
            await self._cond.wait_for(lambda: bool(self._items))
            return self._items.popleft()

    async def release(self, weight: int) -> None:
        """The writer is done with ``weight`` rows: make room for waiting agents."""
        async with self._cond:
            self.rows -= weight
            self._cond.notify_all()


class Ingest:
    """The agents' side of one capture: their records, sessions, the queue and the writer.

    ``counts`` is the :class:`~.server.Aggregator`'s counters dict, shared: ingest adds to
    ``flows``, ``bytes``, ``packets``, ``batches``, ``batches_rejected`` and
    ``write_errors``.  ``check_token`` checks a HELLO's token; ``executor`` is the
    aggregator's writer thread; ``published`` gets each written batch (the live stream),
    before ``on_written``.  :meth:`open` hands over the files once they exist.
    """

    def __init__(
        self,
        counts: dict[str, int],
        check_token: Callable[[dict[str, Any], FrameType], None],
        executor: ThreadPoolExecutor,
        published: Callable[[Batch], None],
        *,
        queue_rows: int,
        write_in_thread: bool,
        enricher: Callable[[Batch], None] | None,
    ) -> None:
        self._counts = counts
        self._check_token = check_token
        self._executor = executor
        self._published = published
        self._queue_rows = queue_rows
        #: See :attr:`.server.Aggregator.write_in_thread` (and why it is off by default).
        self.write_in_thread = write_in_thread
        #: See :attr:`.server.Aggregator.enricher`.
        self.enricher = enricher
        self._enrich_failed = False
        #: Called on the event loop after each batch is written (tests, enrichment hooks).
        self.on_written: Callable[[Batch], None] | None = None
        #: Every agent seen, by key (see :meth:`_agent_record`).
        self.agents: dict[str, AgentRecord] = {}
        #: The tasks serving HELLO connections (the ones ``stop`` gives ``grace`` to).
        self.tasks: set[asyncio.Task[None]] = set()
        #: Per agent run (HELLO's instance), the highest batch seq written.
        self._written_seq: dict[str, int] = {}
        #: The WORKLOAD frame every agent gets after WELCOME (None: no workload filter),
        #: and the agents connected after their WELCOME: see :meth:`set_workload`.
        self._workload: bytes | None = None
        self._agent_sessions: set[_AgentSession] = set()
        self._writer: FlowWriter | None = None
        self._capture = ""
        self._queue: RowQueue | None = None
        self._packets: PacketSink | None = None

    def open(self, writer: FlowWriter, packets: PacketSink | None = None) -> None:
        """The files exist: create the queue; agents are welcome to this capture.  With a
        ``packets`` sink, the capture takes PACKETS batches too."""
        self._writer = writer
        self._packets = packets
        self._capture = writer.json_path.stem
        self._queue = RowQueue(self._queue_rows)

    @property
    def queue(self) -> RowQueue:
        assert self._queue is not None, "start() first"
        return self._queue

    @property
    def queued_rows(self) -> int:
        """Rows queued or being written (0 before :meth:`open`)."""
        return self._queue.rows if self._queue else 0

    # ----------------------------------------------------------------- workload

    def set_workload(self, ips: Iterable[str] | None) -> None:
        """See :meth:`.server.Aggregator.set_workload`."""
        if ips is None:
            self._workload = None
            return
        self._workload = encode(FrameType.WORKLOAD, {"ips": sorted(set(ips))})
        for session in self._agent_sessions:
            session.send_frame(self._workload)

    # ----------------------------------------------------------------- agents

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      peer: str, hello: Frame, task: asyncio.Task[None]) -> None:
        """Serve a connection that began with HELLO, as ``task``, until it ends."""
        self.tasks.add(task)
        try:
            await self._agent_session(reader, writer, peer, hello)
        finally:
            self.tasks.discard(task)

    async def _agent_session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                             peer: str, hello: Frame) -> None:
        self._check_token(hello.payload, FrameType.HELLO)
        if hello.bad_text:
            raise ProtocolError("HELLO holds an unpaired UTF-16 surrogate")
        info = hello.payload.get("agent")
        record = self._agent_record(info, peer)
        instance = info.get("instance") if isinstance(info, dict) else None
        if instance is not None and not (isinstance(instance, str) and 0 < len(instance) <= 64):
            raise ProtocolError("HELLO: agent.instance must be a string of 1 to 64 characters")
        session = _AgentSession(record, writer, instance or "")
        record.connections += 1
        log.info("Agent %s connected from %s", record.key, peer)
        try:
            session.send(FrameType.WELCOME, {"capture": self._capture})
            # Registered in the same step as WELCOME: no workload change can fall between.
            if self._workload is not None:
                session.send_frame(self._workload)
            self._agent_sessions.add(session)
            try:
                await self._agent_loop(reader, session)
            finally:
                # Every batch accepted before BYE, end of stream or a framing error gets its
                # ACK before the connection closes (and before the ERROR), so the agent
                # knows exactly what to send again.
                await session.idle.wait()
        finally:
            self._agent_sessions.discard(session)
            record.connections -= 1
            log.info("Agent %s disconnected (%d flows so far)", record.key, record.flows)

    async def _agent_loop(self, reader: asyncio.StreamReader, session: _AgentSession) -> None:
        """Read frames until BYE or end of stream; ERROR-worthy frames raise ProtocolError."""
        while True:
            frame = await read_frame(reader)
            if frame is None or frame.kind is FrameType.BYE:
                return
            if frame.kind is FrameType.FLOWS:
                job = self._on_flows(session, frame)
                # Drop the payload and its text (the batch holds what it needs) before
                # waiting, maybe long, for room in the queue.
                frame = None
                if job is not None:
                    await self._enqueue(job)
            elif frame.kind is FrameType.PACKETS:
                job = self._on_packets(session, frame.body)
                frame = None
                if job is not None:
                    await self._enqueue(job)
            elif frame.kind is FrameType.STATS:
                if frame.bad_text:
                    raise ProtocolError("STATS holds an unpaired UTF-16 surrogate")
                _merge_counters(session.record.counters, frame.payload)
            else:
                raise ProtocolError(f"{frame.kind.name} is not allowed from an agent after HELLO")
            # Backpressure for an agent that does not read its ACKs.
            await session.writer.drain()

    def _agent_record(self, info: Any, peer: str) -> AgentRecord:
        """The agent's record, keyed by hostname and IP (or the peer address)."""
        clean = {k: v[:256] for k, v in (info if isinstance(info, dict) else {}).items()
                 if k in ("ip", "hostname", "version") and isinstance(v, str)}
        key = "/".join(filter(None, (clean.get("hostname"), clean.get("ip")))) or peer
        record = self.agents.get(key)
        if record is None:
            record = self.agents[key] = AgentRecord(key, clean)
        return record

    def _on_flows(self, session: _AgentSession, frame: Frame) -> _Job | None:
        """Validate a FLOWS frame: the job to queue, or None once the batch is NACKed."""
        seq, checked = _check_flows(frame)
        if isinstance(checked, BatchError):
            self._counts["batches_rejected"] += 1
            session.record.rejected += 1
            log.warning("Rejected batch %s from agent %s: %s", seq, session.record.key, checked)
            session.send(FrameType.NACK, {"seq": seq, "reason": str(checked)})
            return None
        assert seq is not None
        batch = checked.with_column("TimeReceived", int(time.time()))
        if self.enricher is not None:
            self._enrich(batch)
        # Totals count a packet once, however many captured interfaces it crossed.
        return _Job(session, seq, batch, batch.total_once("Bytes"), batch.total_once("Packets"))

    def _on_packets(self, session: _AgentSession, body: bytes) -> _Job | None:
        """Parse a PACKETS frame: the job to queue, or None once the batch is NACKed."""
        try:
            if self._packets is None:
                raise PacketsError("this capture records flows, not packets")
            batch = read_batch(body)
        except PacketsError as exc:
            self._reject_packets(session, packets_seq(body), exc)
            return None
        return _Job(session, batch.seq, None, 0, 0, captured=batch)

    def _reject_packets(self, session: _AgentSession, seq: int | None,
                        exc: PacketsError) -> None:
        self._counts["batches_rejected"] += 1
        session.record.rejected += 1
        log.warning("Rejected packet batch %s from agent %s: %s", seq, session.record.key, exc)
        session.send(FrameType.NACK, {"seq": seq, "reason": str(exc)})

    def _enrich(self, batch: Batch) -> None:
        assert self.enricher is not None
        try:
            self.enricher(batch)
        except Exception:  # the batch is written without the enrichment, never lost
            if not self._enrich_failed:
                self._enrich_failed = True
                log.exception("Enrichment failed; batches go on without it when it fails")

    async def _enqueue(self, job: _Job) -> None:
        assert job.session is not None
        job.session.queued()
        try:
            await self.queue.put(job)
        except BaseException:
            job.session.done()
            raise

    # ----------------------------------------------------------------- writer

    async def write_loop(self) -> None:
        """The only consumer of the queue: write in the writer thread, then ACK."""
        assert self._writer is not None
        loop = asyncio.get_running_loop()
        queue = self.queue
        while True:
            job, weight = await queue.get()
            if job is None:
                return
            instance = job.session.instance if job.session is not None else ""
            if instance and job.seq <= self._written_seq.get(instance, 0):
                # Written already: sent again after a reconnection that lost its ACK.
                self._counts["duplicate_batches"] += 1
                log.info("Batch %d of agent run %s was written already: acknowledged again, "
                         "not written twice", job.seq, instance)
                self._reply(job, FrameType.ACK, {"seq": job.seq})
                await queue.release(weight)
                continue
            try:
                if job.batch is None:
                    assert self._packets is not None and job.captured is not None
                    node = job.session.record.node if job.session else ""
                    job.packets, job.bytes = await loop.run_in_executor(
                        self._executor, self._packets.write, node, job.captured)
                elif self.write_in_thread:
                    await loop.run_in_executor(self._executor, self._writer.write, job.batch)
                else:
                    self._writer.write(job.batch)
            except PacketsError as exc:  # a record that does not parse: none is written
                assert job.session is not None
                self._reject_packets(job.session, job.seq, exc)
                job.session.done()
            except Exception as exc:  # an I/O error: disk full, file removed...
                self._counts["write_errors"] += 1
                log.error("Could not write batch %d (%d %s): %s", job.seq, job.weight,
                          "rows" if job.batch is not None else "KiB of packets", exc)
                self._reply(job, FrameType.NACK, {"seq": job.seq,
                                                  "reason": f"the aggregator cannot write: {exc}"})
            else:
                if instance:
                    self._written_seq[instance] = job.seq
                try:
                    self._written(job)
                except Exception:  # a hook failed: the batch is written all the same
                    log.exception("Post-write processing of batch %d failed", job.seq)
                self._reply(job, FrameType.ACK, {"seq": job.seq})
            finally:
                await queue.release(weight)
            # Let the agents' handlers and the live stream run between two batches.
            await asyncio.sleep(0)

    def _written(self, job: _Job) -> None:
        counts = self._counts
        if job.batch is None:
            counts["captured_packets"] += job.packets
            counts["captured_bytes"] += job.bytes
            counts["batches"] += 1
            if job.session is not None:
                job.session.record.batches += 1
                job.session.record.captured_packets += job.packets
            return
        n = job.batch.nrows
        counts["flows"] += n
        counts["bytes"] += job.bytes
        counts["packets"] += job.packets
        counts["batches"] += 1
        if job.session is not None:
            record = job.session.record
            record.batches += 1
            record.flows += n
            record.bytes += job.bytes
            record.packets += job.packets
        self._published(job.batch)
        if self.on_written is not None:
            self.on_written(job.batch)

    @staticmethod
    def _reply(job: _Job, kind: FrameType, payload: dict[str, Any]) -> None:
        if job.session is not None:
            job.session.send(kind, payload)
            job.session.done()


def _check_flows(frame: Frame) -> tuple[int | None, Batch | BatchError]:
    """Validate a FLOWS frame: ``(seq, batch)``, or ``(seq or None, the reason to NACK)``.

    The fast path takes orjson's payload of a batch with only the FLOWS keys, and tells the
    validator whether the text can hold a boolean (a byte search).  Whenever it rejects the
    batch, the payload is decoded again by the ``json`` module and judged by the reference
    rules, so the verdict is exactly the reference one: orjson reads an integer beyond 64
    bits as a float, and accepts nesting a little deeper than ``json`` (which raises
    :class:`ProtocolError`: the connection closes, as it always did).  A batch that passes
    has only the FLOWS keys and is at most four levels deep, so ``json`` would take it too.
    """
    payload, body = frame.payload, frame.body
    if frame.strict:
        if payload.keys() <= FLOWS_KEYS:
            try:
                return parse_flows(payload,
                                   no_bools=b"true" not in body and b"false" not in body)
            except BatchError:
                pass
        payload = decode_payload_reference(body)
    seq = flows_seq(payload)
    if frame.bad_text:
        return seq, BatchError("a string holds an unpaired UTF-16 surrogate, which UTF-8 "
                               "cannot store")
    try:
        return parse_flows(payload)
    except BatchError as exc:
        return seq, exc


def _merge_counters(counters: dict[str, int], payload: dict[str, Any]) -> None:
    """Keep an agent's integer counters (latest value wins: they are cumulative), bounded."""
    for name, value in payload.items():
        if type(value) is not int or len(name) > MAX_COUNTER_NAME:
            continue
        if name in counters or len(counters) < MAX_AGENT_COUNTERS:
            counters[name] = value
