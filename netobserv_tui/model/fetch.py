"""Client of the FINISH session: close a capture on its aggregator and copy its files here.

A cluster capture's files live in the aggregator pod, which is deleted at the end; the
controller reaches the pod through a port-forward and, before deleting anything::

    summary = await finish_and_fetch(host, port, token, Path("output"),
                                     progress=lambda text: print(text, file=sys.stderr))
    summary["local_files"]   # {"json": "output/flow/<ts>.json", "db": "output/flow/<ts>.db"}

Each file is written to ``<dest>/flow/<name>.part``, checked against the size and SHA-256
the aggregator sent, then renamed: a file under its final name is always complete, and an
existing file is never overwritten (a ``-1``, ``-2``... suffix is added instead).  Plain
asyncio, no Textual and no Kubernetes imports.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from .errors import CaptureError
from .protocol import FrameType, ProtocolError, encode, host_port, read_frame, token_proof

#: Bytes read from the socket at a time while a file arrives.
CHUNK: Final = 1024 * 1024
#: How long the aggregator may take to close the capture (index build included).
FINISH_TIMEOUT: Final = 600.0
#: Longest silence while a file is transferred.
READ_TIMEOUT: Final = 60.0


class FetchError(CaptureError):
    """The files could not be finished or copied; what was copied completely is kept.
    ``retryable``: the connection broke or the bytes were damaged on the way, so asking
    again may work (the aggregator keeps its files on offer after a broken session)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


#: Where each kind of file goes under the output directory (default ``flow``).
FOLDERS: Final = {"pcapng": "pcap"}


async def finish_and_fetch(
    host: str,
    port: int,
    token: str,
    dest: Path,
    *,
    files: Sequence[str] = ("json", "db"),
    grace: float = 5.0,
    progress: Callable[[str], None] = lambda _text: None,
    connect_timeout: float = 10.0,
    attempts: int = 4,
    retry_delay: float = 2.0,
) -> dict[str, Any]:
    """FINISH, then FETCH each of ``files`` into ``dest/flow/`` (a ``pcapng`` into
    ``dest/pcap/``); returns the FINISHED summary
    with ``local_files`` (kind -> path) added.  Raises :class:`FetchError`.

    A session that breaks (a port-forward dropped, bytes damaged) is tried again, up to
    ``attempts`` sessions in all, ``retry_delay`` seconds apart, each asking only for the
    files not yet copied: the aggregator answers a second FINISH with the same summary.
    """
    local: dict[str, str] = {}
    for attempt in range(1, attempts):
        try:
            summary = await _session(host, port, token, dest, files, grace, progress,
                                     connect_timeout, local)
            return {**summary, "local_files": local}
        except FetchError as exc:
            if not exc.retryable:
                raise
            progress(f"{exc}; trying again ({attempt + 1} of {attempts})...")
            await asyncio.sleep(retry_delay)
    summary = await _session(host, port, token, dest, files, grace, progress,
                             connect_timeout, local)
    return {**summary, "local_files": local}


async def _session(host: str, port: int, token: str, dest: Path, files: Sequence[str],
                   grace: float, progress: Callable[[str], None], connect_timeout: float,
                   local: dict[str, str]) -> dict[str, Any]:
    """One FINISH session: FETCH the ``files`` not in ``local`` yet, adding them there."""
    address = host_port(host, port)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=CHUNK), connect_timeout)
    except (OSError, TimeoutError) as exc:
        raise FetchError(f"cannot reach the aggregator at {address} to collect the files: "
                         f"{exc or 'timed out'}", retryable=True) from None
    try:
        finish = {**token_proof(token, FrameType.FINISH), "grace": grace}
        writer.write(encode(FrameType.FINISH, finish))
        await writer.drain()
        progress("Completing the files in the aggregator: last batches, SQLite indexes...")
        kind, summary = await _expect(reader, FrameType.FINISHED, FINISH_TIMEOUT, address)
        for name in files:
            if name in local:
                continue
            writer.write(encode(FrameType.FETCH, {"file": name}))
            await writer.drain()
            _, header = await _expect(reader, FrameType.FILE, READ_TIMEOUT, address)
            size = header.get("size")
            remote = str(header.get("name", ""))
            if not isinstance(size, int) or size < 0 or not _safe_name(remote):
                raise FetchError(f"the aggregator at {address} sent a bad FILE header: {header}")
            progress(f"Copying {remote} ({size:,} bytes)...")
            folder = dest / FOLDERS.get(name, "flow")
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            target = await _receive(reader, folder, remote, size, address)
            local[name] = str(target)
        writer.write(encode(FrameType.BYE, {}))
        await writer.drain()
        return summary
    except (OSError, ProtocolError) as exc:
        raise FetchError(f"the connection to the aggregator at {address} failed while "
                         f"collecting the files: {exc}", retryable=True) from None
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def _expect(reader: asyncio.StreamReader, kind: FrameType, timeout: float,
                  address: str) -> tuple[FrameType, dict[str, Any]]:
    try:
        frame = await asyncio.wait_for(read_frame(reader), timeout)
    except TimeoutError:
        raise FetchError(f"the aggregator at {address} sent no {kind.name} within "
                         f"{timeout:g}s", retryable=True) from None
    if frame is None:
        raise FetchError(f"the aggregator at {address} closed the connection before "
                         f"{kind.name}", retryable=True)
    got, payload = frame
    if got is FrameType.ERROR:
        raise FetchError(f"the aggregator at {address} refused: "
                         f"{payload.get('reason', 'no reason given')}")
    if got is not kind:
        raise FetchError(f"the aggregator at {address} sent {got.name} instead of {kind.name}")
    return got, payload


async def _receive(reader: asyncio.StreamReader, flow_dir: Path, name: str, size: int,
                   address: str) -> Path:
    """Exactly ``size`` bytes into ``<name>.part``, checked, then renamed to a free name."""
    part = flow_dir / f"{name}.part"
    digest = hashlib.sha256()
    try:
        # Only its owner reads a capture (flows and DNS names, packets and their payloads).
        with open(part, "wb", opener=lambda path, flags: os.open(path, flags, 0o600)) as out:
            left = size
            while left:
                try:
                    chunk = await asyncio.wait_for(reader.read(min(CHUNK, left)), READ_TIMEOUT)
                except TimeoutError:
                    raise FetchError(f"{name}: no data from {address} for {READ_TIMEOUT:g}s, "
                                     f"{size - left:,} of {size:,} bytes copied",
                                     retryable=True) from None
                if not chunk:
                    raise FetchError(f"{name}: the connection to {address} closed after "
                                     f"{size - left:,} of {size:,} bytes", retryable=True)
                digest.update(chunk)
                out.write(chunk)
                left -= len(chunk)
            out.flush()
            os.fsync(out.fileno())
        _, end = await _expect(reader, FrameType.FILE_END, READ_TIMEOUT, address)
        if end.get("sha256") != digest.hexdigest():
            raise FetchError(f"{name}: the copy does not match the aggregator's file "
                             f"(SHA-256 {digest.hexdigest()} != {end.get('sha256')})",
                             retryable=True)
        target = _free_name(flow_dir / name)
        os.rename(part, target)
        return target
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _safe_name(name: str) -> bool:
    """A plain file name: no directory part, nothing hidden, nothing to climb out with."""
    return bool(name) and name == Path(name).name and not name.startswith(".")


def _free_name(path: Path) -> Path:
    if not path.exists():
        return path
    for n in range(1, 1000):
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise FetchError(f"{path}: no free file name next to it")
