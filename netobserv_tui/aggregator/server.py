"""The ingest server: agents push FLOWS batches, subscribers receive a live stream.

Shape of the data path::

    agent sockets --read, decode, validate--> RowQueue (bounded in rows) --> writer
         ^                                        |                          |
         '-- ACK/NACK <---------------------------'---- after both files ----'
                                                                 |
                                         RecentRows --every 250 ms--> subscribers

* Validation happens before a batch is queued: a NACKed batch never reaches the files.
* The queue is bounded by rows, not by batches, so memory is bounded whatever the batch
  size; when it is full the agent's handler waits in ``put`` and stops reading its socket,
  which is TCP backpressure all the way to the agent.
* A single consumer writes the batches in order, on the event loop by default or in a
  dedicated writer thread (``write_in_thread``); see ``Aggregator.write_in_thread`` for the
  measurements behind the default.
* Subscribers get frames from a bounded queue each; a slow one loses frames (counted), it
  never holds up ingest (see :mod:`.live`).
* Every batch accepted from an agent is ACKed (or NACKed on a write error) before its
  connection closes, whether it ends with BYE, end of stream or a framing ERROR.
* A FINISH session (the controller of a cluster capture, through a port-forward) stops the
  capture like ``stop`` and then sends the closed files over the same connection.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import hmac
import json
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from ..model.errors import CaptureError
from ..model.protocol import (
    FrameType,
    ProtocolError,
    decode_payload_reference,
    decode_payload_strict,
    encode,
    host_port,
    read_raw_frame,
)
from .batch import Batch, BatchError, flows_seq, parse_flows
from .live import RecentRows, Subscriber
from .search import search_session
from .writers import FlowWriter

log = logging.getLogger(__name__)

#: Agent counters kept per agent: at most this many keys, each name at most this long.
MAX_AGENT_COUNTERS: Final = 64
MAX_COUNTER_NAME: Final = 64
#: Kernel send buffer of a subscriber socket: bounds what a stalled TUI pins in the kernel.
SUBSCRIBER_SNDBUF: Final = 256 * 1024
#: How long a connection closed on an error keeps being read, so the ERROR frame is not
#: lost to a TCP reset caused by unread data.
LINGER_SECONDS: Final = 1.0
#: Bytes read and written at a time when a file is sent after FINISH.
FILE_CHUNK: Final = 1024 * 1024


class AuthError(ProtocolError):
    """The peer presented a wrong capture token."""


#: The keys of a FLOWS payload; with no other key, a valid batch is at most 4 levels deep.
FLOWS_KEYS: Final = frozenset({"seq", "columns", "rows"})


@dataclass(slots=True)
class _Frame:
    kind: FrameType
    payload: dict[str, Any]
    #: The payload held a lone UTF-16 surrogate, which UTF-8 (SQLite) cannot store.
    bad_text: bool
    body: bytes
    #: Decoded by orjson (see :func:`~netobserv_tui.model.protocol.decode_payload_strict`).
    strict: bool


@dataclass(slots=True)
class _Job:
    session: _AgentSession | None
    seq: int
    batch: Batch
    bytes: int
    packets: int


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
    #: The agent's own counters from its latest STATS (they are cumulative on its side).
    counters: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**self.info, "connected": self.connections > 0, "batches": self.batches,
                "flows": self.flows, "bytes": self.bytes, "packets": self.packets,
                "rejected": self.rejected, "stats": dict(self.counters)}


class _AgentSession:
    """One agent connection after a good HELLO."""

    def __init__(self, record: AgentRecord, writer: asyncio.StreamWriter) -> None:
        self.record = record
        self.writer = writer
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
        weight = job.batch.nrows
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


class Aggregator:
    """Ingest server for one capture.  Use ``await start()`` then ``await stop(grace)``.

    ``token`` is the capture token agents and subscribers must present.  Files go to
    ``<output>/flow/<UTC time>.{json,db}`` (see :mod:`.writers`).
    """

    def __init__(
        self,
        output: Path | str,
        token: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        queue_rows: int = 50_000,
        live_rows: int = 2000,
        live_interval: float = 0.25,
        stats_interval: float = 0.5,
        subscriber_frames: int = 4,
        handshake_timeout: float = 10.0,
        max_connections: int = 1024,
        write_in_thread: bool = False,
        enricher: Callable[[Batch], None] | None = None,
        files_wait: float = 300.0,
    ) -> None:
        if not token:
            raise ValueError("the capture token is empty: agents could not be authenticated")
        self.output = Path(output)
        self._token = token.encode("utf-8", "surrogatepass")
        self.host, self.port = host, port
        self.live_interval = live_interval
        self.stats_interval = stats_interval
        self.subscriber_frames = subscriber_frames
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections
        #: Write batches in the writer thread instead of on the event loop.  Off by default:
        #: sqlite3 releases the GIL around every row it steps, so the loop and the writer
        #: thread hand the GIL back and forth for each row; measured on this workload, a
        #: thread writes 80-90k flows/s against 110-120k on the loop, on one core or two.
        #: With the loop writing, reading pauses for one batch (tens of ms) at a time, which
        #: the bounded queue and TCP absorb.
        self.write_in_thread = write_in_thread
        self._queue_rows = queue_rows
        self._recent = RecentRows(live_rows)
        self._agents: dict[str, AgentRecord] = {}
        self._sessions: set[asyncio.Task[None]] = set()
        self._agent_tasks: set[asyncio.Task[None]] = set()
        self._finish_tasks: set[asyncio.Task[None]] = set()
        #: Set once a FINISH session closed the files and ended with BYE (the controller has
        #: them), or ``files_wait`` seconds after one broke off without anyone coming back
        #: for them: the process may exit.
        self.finished = asyncio.Event()
        self.files_wait = files_wait
        self._files_timer: asyncio.TimerHandle | None = None
        self._subscribers: set[Subscriber] = set()
        self._counts = dict.fromkeys(
            ("flows", "bytes", "packets", "batches", "batches_rejected",
             "connections_rejected", "protocol_errors", "write_errors", "live_rows_dropped"), 0)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flow-writer")
        self._server: asyncio.Server | None = None
        self._writer: FlowWriter | None = None
        self._queue: RowQueue | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._started = 0.0
        self._stopping: asyncio.Future[dict[str, Any]] | None = None
        #: Called on the event loop after each batch is written (tests, enrichment hooks).
        self.on_written: Callable[[Batch], None] | None = None
        #: Adds columns to each validated batch, in place, on the event loop, before it is
        #: queued (so before it is written and published): see :mod:`.enrich`.  If it
        #: raises, the batch goes on as it is (:class:`.enrich.Enricher` changes nothing
        #: unless it succeeds) and the failure is logged once.
        self.enricher = enricher
        self._enrich_failed = False
        #: The WORKLOAD frame every agent gets after WELCOME (None: no workload filter),
        #: and the agents connected after their WELCOME: see :meth:`set_workload`.
        self._workload: bytes | None = None
        self._agent_sessions: set[_AgentSession] = set()

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind, create the files, start serving; :class:`CaptureError` if either fails.

        The socket is bound before the files are created so that a busy port leaves no empty
        files behind; serving starts only once the files exist.
        """
        try:
            if self.host in ANY_ADDRESS:
                server = await asyncio.start_server(
                    self._handle, sock=any_address_socket(self.port), start_serving=False)
            else:
                server = await asyncio.start_server(
                    self._handle, self.host, self.port, start_serving=False,
                    reuse_address=True)
        except OSError as exc:
            self._executor.shutdown(wait=False)
            raise CaptureError(
                f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}; choose "
                "another address or port (port 0 picks a free one)") from exc
        loop = asyncio.get_running_loop()
        try:
            self._writer = await loop.run_in_executor(
                self._executor, FlowWriter, self.output, datetime.now(UTC)
            )
        except BaseException as exc:
            server.close()
            self._executor.shutdown(wait=False)
            if isinstance(exc, OSError):
                raise CaptureError(
                    f"cannot create the flow files in {self.output.resolve() / 'flow'}: "
                    f"{exc.strerror or exc}; choose a writable output directory") from exc
            raise
        self._server = server
        sockname = server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]
        self._queue = RowQueue(self._queue_rows)
        self._started = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="flow-writer"),
            asyncio.create_task(self._publish_loop(), name="live-publisher"),
        ]
        await server.start_serving()
        log.info("Aggregator listening on %s, writing %s and %s",
                 host_port(self.host, self.port), self._writer.json_path, self._writer.db_path)

    async def __aenter__(self) -> Aggregator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop(grace=0.0)

    @property
    def files(self) -> dict[str, str]:
        """``{"json": path, "db": path}`` of this capture."""
        assert self._writer is not None, "start() first"
        return self._writer.paths

    @property
    def capture(self) -> str:
        """The capture name: the files' common stem (their UTC start time)."""
        assert self._writer is not None, "start() first"
        return self._writer.json_path.stem

    async def stop(self, grace: float = 5.0, *, keep_listening: bool = False) -> dict[str, Any]:
        """Stop gracefully and return the summary; safe to call more than once.

        Stops accepting, gives connected agents ``grace`` seconds to send BYE (their queued
        batches are written and ACKed), closes the others, writes what is queued, sends the
        subscribers a last STATS and BYE, and closes the files. With ``keep_listening`` (a
        FINISH session) the socket stays open for FINISH and SEARCH only, so that the
        controller can come back for the files; a later plain ``stop()`` closes it.
        """
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_future()
            try:
                self._stopping.set_result(await self._stop(grace, keep_listening))
            except asyncio.CancelledError:
                self._stopping.cancel()
                raise
            except BaseException as exc:
                self._stopping.set_exception(exc)
                raise
        summary = await asyncio.shield(self._stopping)
        if not keep_listening:
            self._stop_listening()
        return summary

    def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._files_timer is not None:
            self._files_timer.cancel()
            self._files_timer = None

    async def _stop(self, grace: float, keep_listening: bool) -> dict[str, Any]:
        assert self._server is not None and self._queue is not None and self._writer is not None
        if not keep_listening:
            self._server.close()
        agents = set(self._agent_tasks)
        if agents:
            log.info("Waiting up to %.1f s for %d agent(s) to finish", grace, len(agents))
            _, late = await asyncio.wait(agents, timeout=grace)
            if late:
                log.warning("Closing %d agent connection(s) still open after %.1f s",
                            len(late), grace)
        subscribers = self._subscriber_tasks()
        others = [t for t in self._sessions
                  if t not in subscribers and t not in self._finish_tasks]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await self._queue.close()
        await self._tasks[0]
        self._tasks[1].cancel()
        await asyncio.gather(self._tasks[1], return_exceptions=True)
        await self._close_subscribers()
        loop = asyncio.get_running_loop()
        files = await loop.run_in_executor(self._executor, self._writer.close)
        self._executor.shutdown(wait=True)
        return self._summary(files)

    def _subscriber_tasks(self) -> set[asyncio.Task[None]]:
        return {t for t in self._sessions if t.get_name().startswith("subscriber")}

    async def _close_subscribers(self) -> None:
        frames, skipped = self._recent.take()
        last = [*(f for f, _ in frames)]
        for sub in self._subscribers:
            sub.count_skipped(skipped)
        final = [*last, encode(FrameType.STATS, self.stats()), encode(FrameType.BYE, {})]
        await asyncio.gather(*(s.finish(final, 1.0) for s in list(self._subscribers)))
        subs = self._subscriber_tasks()
        for task in subs:
            task.cancel()
        await asyncio.gather(*subs, return_exceptions=True)

    def _summary(self, files: dict[str, Any]) -> dict[str, Any]:
        stats = self.stats()
        return {
            "capture": self._writer.json_path.stem if self._writer else None,
            "files": {"json": files["json"], "db": files["db"]},
            **{k: stats[k] for k in ("flows", "bytes", "packets", "batches",
                                      "batches_rejected", "connections_rejected",
                                      "protocol_errors", "write_errors", "live_rows_dropped",
                                      "agents_seen", "elapsed")},
            "index_seconds": files["index_seconds"],
            "agent_stats": stats["agent_stats"],
        }

    # ----------------------------------------------------------------- stats

    def stats(self) -> dict[str, Any]:
        """Aggregated counters, as sent in the live STATS frames."""
        counters: dict[str, int] = {}
        for record in self._agents.values():
            for name, value in record.counters.items():
                counters[name] = counters.get(name, 0) + value
        live_dropped = self._counts["live_rows_dropped"] + sum(
            s.rows_dropped for s in self._subscribers)
        return {
            **self._counts,
            "live_rows_dropped": live_dropped,
            "agents": sum(1 for r in self._agents.values() if r.connections),
            "agents_seen": len(self._agents),
            "subscribers": len(self._subscribers),
            "queued_rows": self._queue.rows if self._queue else 0,
            "elapsed": round(time.monotonic() - self._started, 3) if self._started else 0.0,
            "agent_stats": counters,
            "per_agent": {k: r.as_dict() for k, r in self._agents.items()},
        }

    # ----------------------------------------------------------------- workload

    def set_workload(self, ips: Iterable[str] | None) -> None:
        """Narrow the capture to flows with an end in ``ips`` (see :mod:`.workload`).

        Connected agents get ``WORKLOAD {"ips": sorted(ips)}`` now, and every agent gets the
        latest one right after its WELCOME.  ``None`` means no workload filter: nothing is
        sent from then on (an agent already narrowed stays so until it reconnects).  Callable
        before :meth:`start`.
        """
        if ips is None:
            self._workload = None
            return
        self._workload = encode(FrameType.WORKLOAD, {"ips": sorted(set(ips))})
        for session in self._agent_sessions:
            session.send_frame(self._workload)

    @property
    def queue(self) -> RowQueue:
        assert self._queue is not None, "start() first"
        return self._queue

    # ----------------------------------------------------------------- connections

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: the first frame (HELLO or SUBSCRIBE) decides what it is."""
        task = asyncio.current_task()
        assert task is not None
        peer = _peer(writer)
        if len(self._sessions) >= self.max_connections:
            log.warning("Refused connection from %s: %d connections already", peer,
                        len(self._sessions))
            self._counts["connections_rejected"] += 1
            await self._refuse(reader, writer, peer, "too many connections to the aggregator")
            writer.close()
            return
        self._sessions.add(task)
        try:
            await self._serve(reader, writer, peer, task)
        except AuthError as exc:
            self._counts["connections_rejected"] += 1
            log.warning("Rejected connection from %s: %s", peer, exc)
            await self._refuse(reader, writer, peer, str(exc))
        except ProtocolError as exc:
            self._counts["protocol_errors"] += 1
            log.warning("Closing connection from %s: %s", peer, exc)
            await self._refuse(reader, writer, peer, str(exc))
        except TimeoutError:
            self._counts["protocol_errors"] += 1
            reason = f"no HELLO or SUBSCRIBE within {self.handshake_timeout:g} s"
            log.warning("Closing connection from %s: %s", peer, reason)
            await self._refuse(reader, writer, peer, reason)
        except (ConnectionError, OSError) as exc:
            log.info("Connection from %s lost: %s", peer, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("Unexpected error serving %s; closing that connection", peer)
            await self._refuse(reader, writer, peer, "internal error in the aggregator")
        finally:
            self._sessions.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     peer: str, task: asyncio.Task[None]) -> None:
        async with asyncio.timeout(self.handshake_timeout):
            first = await _read_frame(reader)
        if first is None:
            return
        if self._stopping is not None and first.kind in (FrameType.HELLO, FrameType.SUBSCRIBE):
            raise ProtocolError("the capture is closed: its aggregator only hands out the "
                                "files now")
        if first.kind is FrameType.HELLO:
            self._agent_tasks.add(task)
            try:
                await self._agent_session(reader, writer, peer, first)
            finally:
                self._agent_tasks.discard(task)
        elif first.kind is FrameType.SUBSCRIBE:
            task.set_name(f"subscriber {peer}")
            await self._subscriber_session(reader, writer, peer, first)
        elif first.kind is FrameType.SEARCH:
            assert self._writer is not None
            await search_session(reader, writer, peer, self._writer.db_path, self.capture,
                                 self._check_token, first.payload)
        elif first.kind is FrameType.FINISH:
            self._finish_tasks.add(task)
            if self._files_timer is not None:  # the controller came back for the files
                self._files_timer.cancel()
                self._files_timer = None
            done = False
            try:
                done = await self._finish_session(reader, writer, peer, first)
            finally:
                self._finish_tasks.discard(task)
                self._after_finish(peer, done)
        else:
            raise ProtocolError(
                "the first frame must be HELLO, SUBSCRIBE, SEARCH or FINISH, not "
                f"{first.kind.name}")

    # ----------------------------------------------------------------- finish and fetch

    def _after_finish(self, peer: str, done: bool) -> None:
        """A FINISH session ended: with BYE the files are taken and the process may exit. If
        it broke off after the capture was closed (a port-forward dropped mid-file), the
        files stay on offer for ``files_wait`` seconds, for the controller to try again. A
        session refused before that (a wrong token) changes nothing."""
        if done:
            self._files_taken()
        elif self._stopping is not None and not self._finish_tasks and not self.finished.is_set():
            log.warning("The FINISH session from %s broke off before BYE: the files stay on "
                        "offer for %.0f s for another FINISH", peer, self.files_wait)
            self._files_timer = asyncio.get_running_loop().call_later(
                self.files_wait, self._files_taken)

    def _files_taken(self) -> None:
        self._files_timer = None
        self._stop_listening()
        self.finished.set()

    async def _finish_session(self, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter, peer: str, first: _Frame) -> bool:
        """FINISH: close the capture like ``stop``, then serve the files on this connection;
        True when the peer said BYE. Another FINISH later gets the same summary and files.

        This is how the files leave a cluster: the pod's filesystem is gone once it is
        deleted, so the controller asks for them, through a port-forward, before that.
        """
        self._check_token(first.payload)
        grace = first.payload.get("grace", 5.0)
        if not isinstance(grace, int | float) or not 0 <= grace <= 600:
            raise ProtocolError("FINISH grace must be a number of seconds from 0 to 600")
        log.info("FINISH from %s: closing the capture", peer)
        summary = await self.stop(grace=float(grace), keep_listening=True)
        writer.write(encode(FrameType.FINISHED, summary))
        await writer.drain()
        files = {kind: Path(path) for kind, path in summary["files"].items()}
        while True:
            frame = await _read_frame(reader)
            if frame is None:
                return False
            if frame.kind is FrameType.BYE:
                return True
            if frame.kind is not FrameType.FETCH:
                raise ProtocolError(f"{frame.kind.name} is not allowed after FINISH")
            kind = frame.payload.get("file")
            path = files.get(kind) if isinstance(kind, str) else None
            if not isinstance(kind, str) or path is None:
                writer.write(encode(FrameType.ERROR, {
                    "reason": f"no file {kind!r}: ask for one of {sorted(files)}"}))
                await writer.drain()
                continue
            await self._send_file(writer, kind, path)

    async def _send_file(self, writer: asyncio.StreamWriter, kind: str, path: Path) -> None:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            writer.write(encode(FrameType.FILE, {"file": kind, "name": path.name,
                                                 "size": size}))
            left = size
            while left:
                chunk = fh.read(min(FILE_CHUNK, left))
                if not chunk:
                    raise OSError(f"{path.name} shrank while it was sent")
                digest.update(chunk)
                writer.write(chunk)
                left -= len(chunk)
                await writer.drain()
        writer.write(encode(FrameType.FILE_END, {"sha256": digest.hexdigest()}))
        await writer.drain()
        log.info("Sent %s (%d bytes)", path.name, size)

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      peer: str, reason: str) -> None:
        """Send ERROR, then read and discard briefly so the peer gets it before the close."""
        if writer.is_closing():
            return
        try:
            writer.write(encode(FrameType.ERROR, {"reason": reason}))
            if writer.can_write_eof():
                writer.write_eof()
            async with asyncio.timeout(LINGER_SECONDS):
                while await reader.read(65536):
                    pass
        except (TimeoutError, ConnectionError, OSError):
            pass

    def _check_token(self, payload: dict[str, Any]) -> None:
        token = payload.get("token")
        if not isinstance(token, str):
            raise AuthError("the token is missing")
        if not hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self._token):
            raise AuthError("wrong capture token")

    # ----------------------------------------------------------------- agents

    async def _agent_session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                             peer: str, hello: _Frame) -> None:
        self._check_token(hello.payload)
        if hello.bad_text:
            raise ProtocolError("HELLO holds an unpaired UTF-16 surrogate")
        record = self._agent_record(hello.payload.get("agent"), peer)
        session = _AgentSession(record, writer)
        record.connections += 1
        log.info("Agent %s connected from %s", record.key, peer)
        try:
            session.send(FrameType.WELCOME, {"capture": self.capture})
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
            frame = await _read_frame(reader)
            if frame is None or frame.kind is FrameType.BYE:
                return
            if frame.kind is FrameType.FLOWS:
                job = self._on_flows(session, frame)
                # Drop the payload and its text (the batch holds what it needs) before
                # waiting, maybe long, for room in the queue.
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
        record = self._agents.get(key)
        if record is None:
            record = self._agents[key] = AgentRecord(key, clean)
        return record

    def _on_flows(self, session: _AgentSession, frame: _Frame) -> _Job | None:
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
        return _Job(session, seq, batch, batch.total("Bytes"), batch.total("Packets"))

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

    async def _write_loop(self) -> None:
        """The only consumer of the queue: write in the writer thread, then ACK."""
        assert self._writer is not None
        loop = asyncio.get_running_loop()
        queue = self.queue
        while True:
            job, weight = await queue.get()
            if job is None:
                return
            try:
                if self.write_in_thread:
                    await loop.run_in_executor(self._executor, self._writer.write, job.batch)
                else:
                    self._writer.write(job.batch)
            except Exception as exc:  # an I/O error: disk full, file removed...
                self._counts["write_errors"] += 1
                log.error("Could not write batch %d (%d rows): %s", job.seq, job.batch.nrows, exc)
                self._reply(job, FrameType.NACK, {"seq": job.seq,
                                                  "reason": f"the aggregator cannot write: {exc}"})
            else:
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
        n = job.batch.nrows
        counts = self._counts
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
        if self._subscribers:
            self._recent.add(job.batch)
        if self.on_written is not None:
            self.on_written(job.batch)

    @staticmethod
    def _reply(job: _Job, kind: FrameType, payload: dict[str, Any]) -> None:
        if job.session is not None:
            job.session.send(kind, payload)
            job.session.done()

    # ----------------------------------------------------------------- live stream

    async def _subscriber_session(self, reader: asyncio.StreamReader,
                                  writer: asyncio.StreamWriter, peer: str, first: _Frame) -> None:
        self._check_token(first.payload)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SUBSCRIBER_SNDBUF)
        writer.write(encode(FrameType.WELCOME, {"capture": self.capture}))
        sub = Subscriber(writer, self.subscriber_frames, peer)
        self._subscribers.add(sub)
        sub.offer(encode(FrameType.STATS, self.stats()))
        log.info("Live subscriber connected from %s", peer)
        try:
            frame = await _read_frame(reader)
            if frame is not None and frame.kind is not FrameType.BYE:
                raise ProtocolError(f"{frame.kind.name} is not allowed from a subscriber")
        finally:
            self._subscribers.discard(sub)
            self._counts["live_rows_dropped"] += sub.rows_dropped
            await sub.cancel()
            log.info("Live subscriber %s left (%d rows dropped for it)", peer, sub.rows_dropped)

    async def _publish_loop(self) -> None:
        """Every ``live_interval``: recent rows; every ``stats_interval``: stats."""
        next_stats = time.monotonic()
        while True:
            await asyncio.sleep(self.live_interval)
            if not self._subscribers:
                self._recent.clear()
                continue
            frames, skipped = self._recent.take()
            for sub in self._subscribers:
                sub.count_skipped(skipped)
                for frame, rows in frames:
                    sub.offer(frame, rows)
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + self.stats_interval
                stats = encode(FrameType.STATS, self.stats())
                for sub in self._subscribers:
                    sub.offer(stats)


async def _read_frame(reader: asyncio.StreamReader) -> _Frame | None:
    """Read one frame (``None`` at a clean end of stream); framing errors raise ProtocolError.

    FLOWS payloads are decoded by orjson when it accepts them (see :func:`_check_flows`);
    every other payload, and a FLOWS payload orjson refuses, by the ``json`` module, whose
    verdict is the reference.  Unlike :func:`~netobserv_tui.model.protocol.read_frame` it
    also flags lone surrogates (``"\\ud800"``, or their bytes): ``json`` accepts them, but
    such a string cannot be encoded as UTF-8, so it would fail in SQLite after validation.
    orjson refuses them, so only payloads it refused are checked.
    """
    raw = await read_raw_frame(reader)
    if raw is None:
        return None
    kind, body = raw
    if kind is FrameType.FLOWS:
        payload, strict = decode_payload_strict(body)
    else:
        payload, strict = decode_payload_reference(body), False
    bad_text = not strict and not _utf8_clean(payload)
    return _Frame(kind, payload, bad_text, body, strict)


def _check_flows(frame: _Frame) -> tuple[int | None, Batch | BatchError]:
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


_CHECK: Final = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode


def _utf8_clean(payload: dict[str, Any]) -> bool:
    try:
        _CHECK(payload).encode()
    except UnicodeEncodeError:
        return False
    return True


def _merge_counters(counters: dict[str, int], payload: dict[str, Any]) -> None:
    """Keep an agent's integer counters (latest value wins: they are cumulative), bounded."""
    for name, value in payload.items():
        if type(value) is not int or len(name) > MAX_COUNTER_NAME:
            continue
        if name in counters or len(counters) < MAX_AGENT_COUNTERS:
            counters[name] = value


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return host_port(str(peer[0]), peer[1])
    return str(peer)


#: Hosts of ``--listen`` that mean every address of both families.
ANY_ADDRESS: Final = ("*", "")


def any_address_socket(port: int) -> socket.socket:
    """A listening socket for every address, IPv6 and IPv4: one IPv6 socket with
    IPV6_V6ONLY off, which takes IPv4 peers too (as ::ffff:a.b.c.d), so that the aggregator
    answers on IPv6-only, IPv4-only and dual-stack pod networks alike. Where the kernel has
    no IPv6 (booted with ipv6.disable=1) it is an IPv4 socket."""
    try:
        sock = _dual_stack_socket(port)
    except OSError as exc:
        if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT):
            raise
        log.info("No IPv6 here (%s): listening on IPv4 only.", exc.strerror or exc)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", port))
        except BaseException:
            sock.close()
            raise
    sock.setblocking(False)
    return sock


def _dual_stack_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::", port))
    except BaseException:
        sock.close()
        raise
    return sock
