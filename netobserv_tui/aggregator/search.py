"""SEARCH sessions: the TUI's live filters, run by the aggregator over its own capture file.

A local capture's TUI reads the SQLite file itself; a cluster capture's file is in the
aggregator pod, so the TUI sends its query (the chips as typed and the view's fields, see
:class:`~netobserv_tui.store.Query`) and the aggregator searches with exactly the same
code (:class:`~netobserv_tui.store.SqliteStore`, which answers the chips in SQL), in a
thread of its own, through a read-only connection: ingest is not held up (the file is in
WAL mode while it is written).

The same session serves reports (:mod:`netobserv_tui.store.reports`): a SEARCH whose
payload names a ``"report"`` instead of chips is answered with RESULT ``{"report": name,
"items": [...]}``, computed over the whole file in a thread as well (the TUI's findings of
a cluster capture).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from ..model.protocol import FrameType, ProtocolError, encode, read_frame
from ..store import Query, SqliteStore, StoreError
from ..store.chips import RegexTimeout
from ..store.reports import UnknownReport, report

log = logging.getLogger(__name__)

#: Most records one RESULT carries (the TUI keeps 1000).
MAX_LIMIT: Final = 5000


async def search_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         peer: str, db_path: Path, capture: str,
                         check_token: Callable[[dict[str, Any], FrameType], None],
                         first: dict[str, Any]) -> None:
    """Serve SEARCH requests on one connection until BYE or end of stream."""
    check_token(first, FrameType.SEARCH)
    writer.write(encode(FrameType.WELCOME, {"capture": capture}))
    await writer.drain()
    store = SqliteStore(db_path)
    log.info("Search session from %s", peer)
    while True:
        frame = await read_frame(reader)
        if frame is None or frame[0] is FrameType.BYE:
            return
        kind, payload = frame
        if kind is not FrameType.SEARCH:
            raise ProtocolError(f"{kind.name} is not allowed in a search session")
        if "report" in payload:
            writer.write(await _report(payload["report"], db_path, peer))
            await writer.drain()
            continue
        try:
            query = Query.from_json(payload)
            match, narrow = query.compile()
            limit, after = payload.get("limit", 1000), payload.get("after", 0)
            if not (isinstance(limit, int) and isinstance(after, int)):
                raise ValueError("limit and after are integers")
            limit = max(0, min(limit, MAX_LIMIT))
            result = await asyncio.to_thread(store.search, match, limit, after=after,
                                             narrow=narrow, query=query)
        except RegexTimeout as exc:  # the TUI drops that chip
            writer.write(encode(FrameType.ERROR, {"reason": str(exc), "kind": "regex_timeout"}))
        except (ValueError, StoreError) as exc:
            writer.write(encode(FrameType.ERROR, {"reason": str(exc)}))
        else:
            writer.write(encode(FrameType.RESULT, {
                "records": result.records, "matched": result.matched,
                "scanned": result.scanned, "last_id": result.last_id}))
        await writer.drain()


async def _report(name: Any, db_path: Path, peer: str) -> bytes:
    """The answer to a report request: RESULT ``{"report", "items"}`` or ERROR."""
    if not isinstance(name, str):
        return encode(FrameType.ERROR, {"reason": "a report is asked for by its name, a string"})
    try:
        items = await asyncio.to_thread(report, name, db_path)
    except UnknownReport as exc:
        return encode(FrameType.ERROR, {"reason": str(exc), "kind": "unknown_report"})
    except sqlite3.Error as exc:
        log.warning("The %s report for %s failed on %s: %s", name, peer, db_path, exc)
        return encode(FrameType.ERROR, {"reason": f"the {name} report failed: {exc}"})
    return encode(FrameType.RESULT, {"report": name, "items": items})
