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


class RemoteStore:
    """The capture file of an aggregator that is not on this host (a cluster capture, through
    its port-forward), searched by the aggregator itself: SEARCH frames on one connection.

    Blocking, like the other stores (searches run in a worker thread).  It needs the
    :class:`Query`; the predicate given to :meth:`search` is not sent (it is code).
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

    def _expect(self, kind: FrameType) -> dict[str, Any]:
        frame = read_frame_sync(self._reader)
        if frame is None:
            raise StoreError(f"the aggregator at {self.path} closed the search connection")
        got, payload = frame
        if got is FrameType.ERROR:
            reason = payload.get("reason", "no reason given")
            if payload.get("kind") == "regex_timeout":
                raise RegexTimeout(str(reason))
            raise StoreError(f"the aggregator at {self.path} refused the search: {reason}")
        if got is not kind:
            raise StoreError(f"the aggregator at {self.path} answered {got.name} to a search")
        return payload

    def search(self, match: Match | None, limit: int, *, after: int = 0,
               narrow: Narrowing | None = None, query: Query | None = None) -> SearchResult:
        request = {**(query or Query()).to_json(), "limit": max(limit, 0), "after": after}
        for attempt in (1, 2):  # one reconnect: a port-forward tunnel may have been cut
            try:
                if self._sock is None:
                    self._connect()
                self._sock.sendall(encode(FrameType.SEARCH, request))
                payload = self._expect(FrameType.RESULT)
                break
            except RegexTimeout:
                raise  # a verdict on the query: asking again would take as long
            except (OSError, StoreError):
                self.close()
                if attempt == 2:
                    raise
        records = payload.get("records")
        if not isinstance(records, list):
            raise StoreError(f"the aggregator at {self.path} sent a malformed search result")
        return SearchResult(records, int(payload.get("matched", 0)),
                            int(payload.get("scanned", 0)), int(payload.get("last_id", 0)))

    def totals(self) -> Totals:
        return Totals(0, 0, 0, None, None)  # the header has the live totals

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
