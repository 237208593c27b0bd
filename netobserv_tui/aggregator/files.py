"""The files session: FINISH closes the capture, FETCH sends its closed files, BYE ends it.

Serves the controller of a cluster capture (:func:`~netobserv_tui.model.fetch.finish_and_fetch`
from :mod:`netobserv_tui.capture.cluster`, through a port-forward) for the
:class:`~.server.Aggregator`, which hands each FINISH connection to
:meth:`FileHandover.session`: the capture is stopped like ``stop`` (the socket stays open
for FINISH and SEARCH), then the files go over the same connection, each as FILE, its
bytes and FILE_END with their SHA-256.  Files whose session broke off stay on offer for
``files_wait`` seconds; :attr:`FileHandover.finished` tells the process when it may exit.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from ..model.protocol import FrameType, ProtocolError, encode
from .connection import Frame, read_frame

log = logging.getLogger(__name__)

#: Bytes read and written at a time when a file is sent after FINISH.
FILE_CHUNK: Final = 1024 * 1024


class FileHandover:
    """FINISH sessions of one capture and the files-on-offer timer.

    ``check_token`` checks a FINISH's token; ``stop`` is :meth:`.server.Aggregator.stop`;
    ``closed`` tells whether the capture is closed (stopping or stopped);
    ``stop_listening`` closes the aggregator's socket and cancels the files timer
    (:meth:`cancel_timer`), once the files are taken.
    """

    def __init__(
        self,
        check_token: Callable[[dict[str, Any], FrameType], None],
        stop: Callable[..., Awaitable[dict[str, Any]]],
        closed: Callable[[], bool],
        stop_listening: Callable[[], None],
        *,
        files_wait: float,
    ) -> None:
        self._check_token = check_token
        self._stop = stop
        self._closed = closed
        self._stop_listening = stop_listening
        #: Set once a FINISH session closed the files and ended with BYE (the controller has
        #: them), or ``files_wait`` seconds after one broke off without anyone coming back
        #: for them: the process may exit.
        self.finished = asyncio.Event()
        self.files_wait = files_wait
        #: The tasks serving FINISH connections (``stop`` leaves them alone).
        self.tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def cancel_timer(self) -> None:
        """Stop the files-on-offer countdown, if it runs."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      peer: str, first: Frame, task: asyncio.Task[None]) -> None:
        """Serve a connection that began with FINISH, as ``task``, until it ends."""
        self.tasks.add(task)
        self.cancel_timer()  # the controller came back for the files
        done = False
        try:
            done = await self._finish_session(reader, writer, peer, first)
        finally:
            self.tasks.discard(task)
            self._after_finish(peer, done)

    def _after_finish(self, peer: str, done: bool) -> None:
        """A FINISH session ended: with BYE the files are taken and the process may exit. If
        it broke off after the capture was closed (a port-forward dropped mid-file), the
        files stay on offer for ``files_wait`` seconds, for the controller to try again. A
        session refused before that (a wrong token) changes nothing."""
        if done:
            self._files_taken()
        elif self._closed() and not self.tasks and not self.finished.is_set():
            log.warning("The FINISH session from %s broke off before BYE: the files stay on "
                        "offer for %.0f s for another FINISH", peer, self.files_wait)
            self._timer = asyncio.get_running_loop().call_later(
                self.files_wait, self._files_taken)

    def _files_taken(self) -> None:
        self._timer = None
        self._stop_listening()
        self.finished.set()

    async def _finish_session(self, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter, peer: str, first: Frame) -> bool:
        """FINISH: close the capture like ``stop``, then serve the files on this connection;
        True when the peer said BYE. Another FINISH later gets the same summary and files.

        This is how the files leave a cluster: the pod's filesystem is gone once it is
        deleted, so the controller asks for them, through a port-forward, before that.
        """
        self._check_token(first.payload, FrameType.FINISH)
        grace = first.payload.get("grace", 5.0)
        if not isinstance(grace, int | float) or not 0 <= grace <= 600:
            raise ProtocolError("FINISH grace must be a number of seconds from 0 to 600")
        log.info("FINISH from %s: closing the capture", peer)
        summary = await self._stop(grace=float(grace), keep_listening=True)
        writer.write(encode(FrameType.FINISHED, summary))
        await writer.drain()
        files = {kind: Path(path) for kind, path in summary["files"].items()}
        while True:
            frame = await read_frame(reader)
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
            await _send_file(writer, kind, path)


async def _send_file(writer: asyncio.StreamWriter, kind: str, path: Path) -> None:
    """FILE, the file's bytes in chunks, FILE_END with their SHA-256."""
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
