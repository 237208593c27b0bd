"""The capture file of an aggregator that is not on this host, searched by the aggregator
itself.  Serves the TUI of a cluster capture (through the port-forward); the other end is
:mod:`netobserv_tui.aggregator.search`.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from netobserv_tui.model.protocol import FrameType, encode, read_frame_sync, token_proof

from .base import Match, Narrowing, SearchResult, StoreError, Totals
from .chips import RegexTimeout
from .query import Query

#: A row id beyond any capture's (SQLite's rowids are below 2^63).
_BEYOND = 1 << 62


class ReportRefused(StoreError):
    """The aggregator does not compute the report asked for (an unknown name, or a version
    older than reports): compute it some other way."""


class RemoteStore:
    """The capture file of an aggregator that is not on this host (a cluster capture, through
    its port-forward), searched by the aggregator itself: SEARCH frames on one connection.

    Blocking, like the other stores (searches run in a worker thread).  It needs the
    :class:`Query`; the predicate given to :meth:`search` is not sent (it is code).
    :meth:`report` asks for a whole-capture report (:mod:`.reports`) on the same connection.
    """

    kind: str = "remote"
    incomplete: bool = True

    def __init__(self, host: str, port: int, token: str, *, timeout: float = 30.0) -> None:
        self.path = Path(f"{host}:{port}")
        self._address = (host, port)
        self._token = token
        self._timeout = timeout
        self._sock: Any = None
        self._reader: Any = None

    def _connect(self) -> None:
        sock = socket.create_connection(self._address, timeout=self._timeout)
        self._sock, self._reader = sock, sock.makefile("rb")
        sock.sendall(encode(FrameType.SEARCH, token_proof(self._token, FrameType.SEARCH)))
        self._expect(FrameType.WELCOME)

    def _expect(self, kind: FrameType, what: str = "search") -> dict[str, Any]:
        frame = read_frame_sync(self._reader)
        if frame is None:
            raise StoreError(f"the aggregator at {self.path} closed the search connection")
        got, payload = frame
        if got is FrameType.ERROR:
            reason = payload.get("reason", "no reason given")
            if payload.get("kind") == "regex_timeout":
                raise RegexTimeout(str(reason))
            if payload.get("kind") == "unknown_report":
                raise ReportRefused(f"the aggregator at {self.path} refused the {what}: "
                                    f"{reason}")
            raise StoreError(f"the aggregator at {self.path} refused the {what}: {reason}")
        if got is not kind:
            raise StoreError(f"the aggregator at {self.path} answered {got.name} to a {what}")
        return payload

    def _ask(self, request: dict[str, Any], what: str) -> dict[str, Any]:
        """Send ``request`` (a SEARCH frame) and return the RESULT; reconnects once, since a
        port-forward tunnel may have been cut, but not after a verdict on the request."""
        for attempt in (1, 2):
            try:
                if self._sock is None:
                    self._connect()
                self._sock.sendall(encode(FrameType.SEARCH, request))
                return self._expect(FrameType.RESULT, what)
            except (RegexTimeout, ReportRefused):
                raise  # asking again would get the same answer
            except (OSError, StoreError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def search(self, match: Match | None, limit: int, *, after: int = 0,
               narrow: Narrowing | None = None, query: Query | None = None) -> SearchResult:
        request = {**(query or Query()).to_json(), "limit": max(limit, 0), "after": after}
        payload = self._ask(request, "search")
        records = payload.get("records")
        if not isinstance(records, list):
            raise StoreError(f"the aggregator at {self.path} sent a malformed search result")
        return SearchResult(records, int(payload.get("matched", 0)),
                            int(payload.get("scanned", 0)), int(payload.get("last_id", 0)))

    def report(self, name: str) -> list[dict[str, Any]]:
        """The report ``name`` (:mod:`.reports`) of the whole capture, computed by the
        aggregator over its file.  :class:`ReportRefused` when the aggregator does not
        compute it (an unknown name, or an aggregator older than reports)."""
        # limit 0 and an ``after`` beyond any row: an aggregator older than reports reads
        # this as a search and answers at once, with an empty RESULT and no "report".
        payload = self._ask({"report": name, "limit": 0, "after": _BEYOND}, "report")
        if payload.get("report") != name:
            raise ReportRefused(f"the aggregator at {self.path} does not compute reports "
                                "(an older version)")
        items = payload.get("items")
        if not (isinstance(items, list) and all(isinstance(item, dict) for item in items)):
            raise StoreError(f"the aggregator at {self.path} sent a malformed {name} report")
        return items

    def totals(self) -> Totals:
        return Totals(0, 0, 0, None, None)  # the header has the live totals

    def prepare_search(self) -> None:
        """Nothing to read ahead here: the aggregator searches its own file."""

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
