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

:class:`Aggregator` owns the lifecycle (listening socket, files, writer thread, counters,
``stop``) and hands each connection, by its first frame, to the part that serves it:

* :mod:`.ingest`: HELLO, the agents (:class:`~.ingest.Ingest`: queue, writer, ACK/NACK);
* :mod:`.subscribers`: SUBSCRIBE, the live stream (:class:`~.subscribers.Subscribers`);
* :mod:`.search`: SEARCH, the TUI's filters over the capture file;
* :mod:`.files`: FINISH and FETCH, the files handed over (:class:`~.files.FileHandover`);
* :mod:`.connection`: what they share (frames, tokens, refusals, listening sockets).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..model import speedups
from ..model.errors import CaptureError
from ..model.packets import MAX_SNAPLEN
from ..model.protocol import FrameType, ProtocolError, host_port
from .batch import Batch
from .connection import (
    ANY_ADDRESS,
    FIRST_FRAME_MAX,
    MAX_HANDSHAKES,
    AuthError,
    TokenCheck,
    any_address_socket,
    peer_name,
    read_frame,
    refuse,
)
from .files import FileHandover
from .ingest import Ingest, RowQueue
from .packets import PacketSink
from .search import search_session
from .subscribers import Subscribers
from .writers import FlowWriter

log = logging.getLogger(__name__)


class Aggregator:
    """Ingest server for one capture.  Use ``await start()`` then ``await stop(grace)``.

    ``token`` is the capture token agents and subscribers must present.  Files go to
    ``<output>/flow/<UTC time>.{json,db}`` (see :mod:`.writers`); with ``packets`` (a
    packet capture), the packets agents send go to ``<output>/pcap/<UTC time>.pcapng``
    (see :mod:`.packets`), named by the Kubernetes inventory when ``lookup`` is given.
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
        max_handshakes: int = MAX_HANDSHAKES,
        write_in_thread: bool = False,
        enricher: Callable[[Batch], None] | None = None,
        files_wait: float = 300.0,
        packets: bool = False,
        snaplen: int = MAX_SNAPLEN,
        lookup: Callable[[str], Any] | None = None,
        keep_wal: bool = False,
    ) -> None:
        if not token:
            raise ValueError("the capture token is empty: agents could not be authenticated")
        self.output = Path(output)
        self.packets = packets
        self.snaplen = snaplen
        self._lookup = lookup
        #: The database is closed in WAL mode, for its owner to settle (``privileges.py``).
        self.keep_wal = keep_wal
        self._sink: PacketSink | None = None
        self._check_token = TokenCheck(token)
        self.host, self.port = host, port
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections
        #: Connections not past their first frame may number this many at once; each may
        #: make the aggregator read up to FIRST_FRAME_MAX bytes before its token is checked.
        self.max_handshakes = max_handshakes
        self._handshakes = 0
        #: Every open connection, whatever it serves (``max_connections`` bounds them).
        self._sessions: set[asyncio.Task[None]] = set()
        self._counts = dict.fromkeys(
            ("flows", "bytes", "packets", "batches", "batches_rejected",
             "connections_rejected", "protocol_errors", "write_errors", "live_rows_dropped",
             "captured_packets", "captured_bytes", "duplicate_batches"), 0)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flow-writer")
        self._live = Subscribers(
            self._counts, self.stats, self._check_token, self._sessions, live_rows=live_rows,
            live_interval=live_interval, stats_interval=stats_interval,
            subscriber_frames=subscriber_frames)
        self._ingest = Ingest(
            self._counts, self._check_token, self._executor, self._live.written,
            queue_rows=queue_rows, write_in_thread=write_in_thread, enricher=enricher)
        self._handover = FileHandover(
            self._check_token, self.stop, lambda: self._stopping is not None,
            self._stop_listening, files_wait=files_wait)
        self._server: asyncio.Server | None = None
        self._writer: FlowWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._started = 0.0
        self._stopping: asyncio.Future[dict[str, Any]] | None = None

    # ----------------------------------------------------------------- settings

    @property
    def write_in_thread(self) -> bool:
        """Write batches in the writer thread instead of on the event loop.  Off by default:
        sqlite3 releases the GIL around every row it steps, so the loop and the writer
        thread hand the GIL back and forth for each row; measured on this workload, a
        thread writes 80-90k flows/s against 110-120k on the loop, on one core or two.
        With the loop writing, reading pauses for one batch (tens of ms) at a time, which
        the bounded queue and TCP absorb."""
        return self._ingest.write_in_thread

    @write_in_thread.setter
    def write_in_thread(self, value: bool) -> None:
        self._ingest.write_in_thread = value

    @property
    def enricher(self) -> Callable[[Batch], None] | None:
        """Adds columns to each validated batch, in place, on the event loop, before it is
        queued (so before it is written and published): see :mod:`.enrich`.  If it
        raises, the batch goes on as it is (:class:`.enrich.Enricher` changes nothing
        unless it succeeds) and the failure is logged once."""
        return self._ingest.enricher

    @enricher.setter
    def enricher(self, value: Callable[[Batch], None] | None) -> None:
        self._ingest.enricher = value

    @property
    def on_written(self) -> Callable[[Batch], None] | None:
        """Called on the event loop after each batch is written (tests, enrichment hooks)."""
        return self._ingest.on_written

    @on_written.setter
    def on_written(self, value: Callable[[Batch], None] | None) -> None:
        self._ingest.on_written = value

    @property
    def live_interval(self) -> float:
        """Seconds between two pushes of the most recent rows to the subscribers."""
        return self._live.live_interval

    @live_interval.setter
    def live_interval(self, value: float) -> None:
        self._live.live_interval = value

    @property
    def stats_interval(self) -> float:
        """Seconds between two STATS frames to the subscribers."""
        return self._live.stats_interval

    @stats_interval.setter
    def stats_interval(self, value: float) -> None:
        self._live.stats_interval = value

    @property
    def subscriber_frames(self) -> int:
        """Frames queued per subscriber before pushes are dropped for it."""
        return self._live.subscriber_frames

    @subscriber_frames.setter
    def subscriber_frames(self, value: int) -> None:
        self._live.subscriber_frames = value

    @property
    def finished(self) -> asyncio.Event:
        """Set once a FINISH session closed the files and ended with BYE (the controller has
        them), or ``files_wait`` seconds after one broke off without anyone coming back
        for them: the process may exit."""
        return self._handover.finished

    @property
    def files_wait(self) -> float:
        """Seconds the files stay on offer after a FINISH session broke off before BYE."""
        return self._handover.files_wait

    @files_wait.setter
    def files_wait(self, value: float) -> None:
        self._handover.files_wait = value

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
                self._executor,
                functools.partial(FlowWriter, self.output, datetime.now(UTC),
                                  keep_wal=self.keep_wal))
            if self.packets:
                path = self.output / "pcap" / f"{self._writer.json_path.stem}.pcapng"
                self._sink = await loop.run_in_executor(
                    self._executor, lambda: PacketSink(path, snaplen=self.snaplen,
                                                       lookup=self._lookup))
                log.info("Packets to %s (%s).", path, speedups.describe())
        except BaseException as exc:
            server.close()
            if self._writer is not None:
                self._writer.close()
            self._executor.shutdown(wait=False)
            if isinstance(exc, OSError):
                raise CaptureError(
                    f"cannot create the flow files in {self.output.resolve() / 'flow'}: "
                    f"{exc.strerror or exc}; choose a writable output directory") from exc
            raise
        self._server = server
        sockname = server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]
        self._ingest.open(self._writer, self._sink)
        self._live.capture = self.capture
        self._started = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._ingest.write_loop(), name="flow-writer"),
            asyncio.create_task(self._live.publish_loop(), name="live-publisher"),
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
        """``{"json": path, "db": path}`` of this capture, and ``"pcapng"`` with packets."""
        assert self._writer is not None, "start() first"
        if self._sink is None:
            return self._writer.paths
        return {**self._writer.paths, "pcapng": str(self._sink.path)}

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
        self._handover.cancel_timer()

    async def _stop(self, grace: float, keep_listening: bool) -> dict[str, Any]:
        assert self._server is not None and self._writer is not None
        queue = self._ingest.queue
        if not keep_listening:
            self._server.close()
        agents = set(self._ingest.tasks)
        if agents:
            log.info("Waiting up to %.1f s for %d agent(s) to finish", grace, len(agents))
            _, late = await asyncio.wait(agents, timeout=grace)
            if late:
                log.warning("Closing %d agent connection(s) still open after %.1f s",
                            len(late), grace)
        subscribers = self._live.tasks()
        others = [t for t in self._sessions
                  if t not in subscribers and t not in self._handover.tasks]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await queue.close()
        await self._tasks[0]
        self._tasks[1].cancel()
        await asyncio.gather(self._tasks[1], return_exceptions=True)
        await self._live.close()
        loop = asyncio.get_running_loop()
        files = await loop.run_in_executor(self._executor, self._writer.close)
        if self._sink is not None:
            await loop.run_in_executor(self._executor, self._sink.close)
            files = {**files, "pcapng": str(self._sink.path)}
        self._executor.shutdown(wait=True)
        return self._summary(files)

    def _summary(self, files: dict[str, Any]) -> dict[str, Any]:
        stats = self.stats()
        return {
            "capture": self._writer.json_path.stem if self._writer else None,
            "files": {k: files[k] for k in ("json", "db", "pcapng") if k in files},
            **{k: stats[k] for k in ("flows", "bytes", "packets", "batches",
                                      "captured_packets", "captured_bytes",
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
        for record in self._ingest.agents.values():
            for name, value in record.counters.items():
                counters[name] = counters.get(name, 0) + value
        live_dropped = self._counts["live_rows_dropped"] + self._live.rows_dropped()
        return {
            **self._counts,
            "live_rows_dropped": live_dropped,
            "agents": sum(1 for r in self._ingest.agents.values() if r.connections),
            "agents_seen": len(self._ingest.agents),
            "subscribers": len(self._live.subscribers),
            "queued_rows": self._ingest.queued_rows,
            "elapsed": round(time.monotonic() - self._started, 3) if self._started else 0.0,
            "agent_stats": counters,
            "per_agent": {k: r.as_dict() for k, r in self._ingest.agents.items()},
        }

    # ----------------------------------------------------------------- workload

    def set_workload(self, ips: Iterable[str] | None) -> None:
        """Narrow the capture to flows with an end in ``ips`` (see :mod:`.workload`).

        Connected agents get ``WORKLOAD {"ips": sorted(ips)}`` now, and every agent gets the
        latest one right after its WELCOME.  ``None`` means no workload filter: nothing is
        sent from then on (an agent already narrowed stays so until it reconnects).  Callable
        before :meth:`start`.
        """
        self._ingest.set_workload(ips)

    @property
    def queue(self) -> RowQueue:
        return self._ingest.queue

    # ----------------------------------------------------------------- connections

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: the first frame (HELLO or SUBSCRIBE) decides what it is."""
        task = asyncio.current_task()
        assert task is not None
        peer = peer_name(writer)
        if len(self._sessions) >= self.max_connections:
            log.warning("Refused connection from %s: %d connections already", peer,
                        len(self._sessions))
            self._counts["connections_rejected"] += 1
            await refuse(reader, writer, "too many connections to the aggregator")
            writer.close()
            return
        self._sessions.add(task)
        try:
            await self._serve(reader, writer, peer, task)
        except AuthError as exc:
            self._counts["connections_rejected"] += 1
            log.warning("Rejected connection from %s: %s", peer, exc)
            await refuse(reader, writer, str(exc))
        except ProtocolError as exc:
            self._counts["protocol_errors"] += 1
            log.warning("Closing connection from %s: %s", peer, exc)
            await refuse(reader, writer, str(exc))
        except TimeoutError:
            self._counts["protocol_errors"] += 1
            reason = f"no HELLO or SUBSCRIBE within {self.handshake_timeout:g} s"
            log.warning("Closing connection from %s: %s", peer, reason)
            await refuse(reader, writer, reason)
        except (ConnectionError, OSError) as exc:
            log.info("Connection from %s lost: %s", peer, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("Unexpected error serving %s; closing that connection", peer)
            await refuse(reader, writer, "internal error in the aggregator")
        finally:
            self._sessions.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     peer: str, task: asyncio.Task[None]) -> None:
        if self._handshakes >= self.max_handshakes:
            self._counts["connections_rejected"] += 1
            raise ProtocolError(f"{self._handshakes} connections are already being "
                                "authenticated; try again")
        self._handshakes += 1
        try:
            async with asyncio.timeout(self.handshake_timeout):
                first = await read_frame(reader, FIRST_FRAME_MAX)
        finally:
            self._handshakes -= 1
        if first is None:
            return
        if self._stopping is not None and first.kind in (FrameType.HELLO, FrameType.SUBSCRIBE):
            raise ProtocolError("the capture is closed: its aggregator only hands out the "
                                "files now")
        if first.kind is FrameType.HELLO:
            await self._ingest.session(reader, writer, peer, first, task)
        elif first.kind is FrameType.SUBSCRIBE:
            await self._live.session(reader, writer, peer, first, task)
        elif first.kind is FrameType.SEARCH:
            assert self._writer is not None
            await search_session(reader, writer, peer, self._writer.db_path, self.capture,
                                 self._check_token, first.payload)
        elif first.kind is FrameType.FINISH:
            await self._handover.session(reader, writer, peer, first, task)
        else:
            raise ProtocolError(
                "the first frame must be HELLO, SUBSCRIBE, SEARCH or FINISH, not "
                f"{first.kind.name}")
