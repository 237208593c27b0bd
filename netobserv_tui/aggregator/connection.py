"""Connections to the aggregator: listening sockets, frames read off them, tokens, refusals.

Serves every session of the :class:`~.server.Aggregator` (agents, live subscribers, SEARCH
and FINISH): the frame reader that flags lone UTF-16 surrogates (:func:`read_frame`), the
capture token check (:class:`TokenCheck`, :class:`AuthError`), peer naming, refusing a
connection with an ERROR its peer gets to read (:func:`refuse`), and the listening socket
for ``--listen '*'`` (:func:`any_address_socket`, also used by ``python -m
netobserv_tui.aggregator``).
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import json
import logging
import socket
from dataclasses import dataclass
from typing import Any, Final

from ..model.protocol import (
    MAX_PAYLOAD,
    FrameType,
    ProtocolError,
    decode_payload_reference,
    decode_payload_strict,
    encode,
    host_port,
    read_raw_frame,
    token_mac,
)

log = logging.getLogger(__name__)

#: How long a connection closed on an error keeps being read, so the ERROR frame is not
#: lost to a TCP reset caused by unread data.
LINGER_SECONDS: Final = 1.0
#: The largest first frame (HELLO, SUBSCRIBE, SEARCH, FINISH: a token and a few fields),
#: read before the peer is authenticated: a stranger cannot make the aggregator hold more.
FIRST_FRAME_MAX: Final = 16 * 1024
#: How many connections may be between accept and a checked first frame at once.
MAX_HANDSHAKES: Final = 64
#: Handshake nonces remembered against replays (a capture sees a few per agent).
MAX_NONCES: Final = 100_000


class AuthError(ProtocolError):
    """The peer presented a wrong capture token."""


@dataclass(slots=True)
class Frame:
    kind: FrameType
    payload: dict[str, Any]
    #: The payload held a lone UTF-16 surrogate, which UTF-8 (SQLite) cannot store.
    bad_text: bool
    body: bytes
    #: Decoded by orjson (see :func:`~netobserv_tui.model.protocol.decode_payload_strict`).
    strict: bool


async def read_frame(reader: asyncio.StreamReader, max_payload: int = MAX_PAYLOAD
                     ) -> Frame | None:
    """Read one frame (``None`` at a clean end of stream); framing errors raise ProtocolError.

    A PACKETS payload is not JSON: it is returned as it came (``body``, empty ``payload``).
    FLOWS payloads are decoded by orjson when it accepts them (see
    :func:`~.ingest._check_flows`); every other payload, and a FLOWS payload orjson refuses,
    by the ``json`` module, whose verdict is the reference.  Unlike
    :func:`~netobserv_tui.model.protocol.read_frame` it also flags lone surrogates
    (``"\\ud800"``, or their bytes): ``json`` accepts them, but such a string cannot be
    encoded as UTF-8, so it would fail in SQLite after validation.  orjson refuses them, so
    only payloads it refused are checked.
    """
    raw = await read_raw_frame(reader, max_payload)
    if raw is None:
        return None
    kind, body = raw
    if kind is FrameType.PACKETS:  # raw bytes, parsed by model.packets
        return Frame(kind, {}, False, body, True)
    if kind is FrameType.FLOWS:
        payload, strict = decode_payload_strict(body)
    else:
        payload, strict = decode_payload_reference(body), False
    bad_text = not strict and not _utf8_clean(payload)
    return Frame(kind, payload, bad_text, body, strict)


_CHECK: Final = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode


def _utf8_clean(payload: dict[str, Any]) -> bool:
    try:
        _CHECK(payload).encode()
    except UnicodeEncodeError:
        return False
    return True


class TokenCheck:
    """Checks the proof of the capture token in a first frame: call it with the payload
    and the frame's type; raises :class:`AuthError` if it is missing or wrong (compared in
    constant time), or a replay.

    The proof (``auth``: nonce and HMAC, see :func:`~netobserv_tui.model.protocol.token_proof`)
    is what every client of this version sends. A nonce is accepted once: a first frame
    recorded on the wire cannot be sent again (the nonces seen are kept, up to
    :data:`MAX_NONCES`, oldest forgotten first). ``token`` in clear, from an older client,
    is still accepted (logged once).
    """

    def __init__(self, token: str) -> None:
        self._text = token
        self._token = token.encode("utf-8", "surrogatepass")
        self._seen: dict[str, None] = {}
        self._clear_warned = False

    def __call__(self, payload: dict[str, Any], kind: FrameType) -> None:
        auth = payload.get("auth")
        if auth is not None:
            self._check_proof(auth, kind)
            return
        token = payload.get("token")
        if not isinstance(token, str):
            raise AuthError("the token is missing")
        if not hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self._token):
            raise AuthError("wrong capture token")
        if not self._clear_warned:
            self._clear_warned = True
            log.info("A client sent the capture token in clear (an older version?); "
                        "accepted. Clients of this version send a proof of it instead.")

    def _check_proof(self, auth: Any, kind: FrameType) -> None:
        nonce = auth.get("nonce") if isinstance(auth, dict) else None
        mac = auth.get("mac") if isinstance(auth, dict) else None
        if not (isinstance(nonce, str) and len(nonce) == 32 and isinstance(mac, str)
                and all(c in "0123456789abcdef" for c in nonce)):
            raise AuthError("malformed auth: expected a 32-hex-digit nonce and a mac")
        expected = token_mac(self._text, kind, nonce)
        if not hmac.compare_digest(mac.encode("ascii", "replace"), expected.encode()):
            raise AuthError("wrong capture token")
        if nonce in self._seen:
            raise AuthError("this handshake was used already (a replay?)")
        self._seen[nonce] = None
        if len(self._seen) > MAX_NONCES:
            del self._seen[next(iter(self._seen))]


def peer_name(writer: asyncio.StreamWriter) -> str:
    """The peer's ``host:port`` (``[v6]:port``), for the logs."""
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return host_port(str(peer[0]), peer[1])
    return str(peer)


async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 reason: str) -> None:
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
