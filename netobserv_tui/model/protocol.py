"""Wire protocol between agents, the aggregator and the TUI (version 2).

Every message is one *frame*::

    offset  size  field
    0       2     magic  b"NO"
    2       1     protocol version (2)
    3       1     frame type (see ``FrameType``)
    4       4     payload length, unsigned big-endian, at most ``MAX_PAYLOAD``
    8       n     payload: UTF-8 JSON object (PACKETS: raw bytes, see model/packets.py)

Agent session (agent -> aggregator unless noted)::

    HELLO   {"token": str, "agent": {"ip": str, "hostname": str, "version": str}}
    <- WELCOME {"capture": str}  or  <- ERROR {"reason": str} and close
    FLOWS   {"seq": int, "columns": [field names], "rows": [[values in column order], ...]}
    <- ACK  {"seq": int}        once the batch is written to every file
    <- NACK {"seq": int, "reason": str}  the batch was rejected; nothing of it was written
    PACKETS binary (packet capture: seq, count, then each packet's header and bytes;
            see :mod:`netobserv_tui.model.packets`), acknowledged like FLOWS, same seq space
    STATS   {"evicted": int, "map_full": int, ...}  agent counters, cumulative
    BYE     {}                  the agent is done; the aggregator closes after the last ACK
    <- WORKLOAD {"ips": [str, ...]}  at any time after WELCOME, when the capture is narrowed
                                to a workload (-n/--pod/--selector): keep only flows with
                                an end in this set (replaces the previous set)

Live stream session (TUI -> aggregator)::

    SUBSCRIBE {"token": str}
    <- WELCOME {"capture": str}
    <- FLOWS {"seq": int, "columns": [...], "rows": [...]}   recent rows, may skip under load
    <- STATS {"flows": int, "bytes": int, "packets": int, "agents": int, ...}

Finish session (the capture controller -> aggregator; how files leave a cluster)::

    FINISH  {"token": str, "grace": float}
            the aggregator stops taking agents (giving connected ones ``grace`` seconds
            to say BYE), writes what is queued and closes the files
    <- FINISHED {"capture": str, "files": {"json": path, "db": path}, "flows": int, ...}
    FETCH   {"file": "json" | "db"}
    <- FILE {"file": str, "name": str, "size": int}, then exactly ``size`` raw bytes
       (not a frame), then <- FILE_END {"sha256": hex}
    ...     more FETCHes, then BYE; an unknown file gets <- ERROR and the session goes on

Search session (TUI -> aggregator; live filters of a capture whose file is elsewhere)::

    SEARCH  {"token": str}
    <- WELCOME {"capture": str}
    SEARCH  {"chips": [str], "fields": [str], "limit": int, "after": int}
    <- RESULT {"records": [objects], "matched": int, "scanned": int, "last_id": int}
    SEARCH  {"report": str, "limit": 0, "after": 2**62}   a whole-capture report by name
    <- RESULT {"report": str, "items": [objects]}   (an older aggregator: a RESULT without
            "report", the request read as an empty search)
    ...     more SEARCHes; an invalid chip or an unknown report gets <- ERROR and the
            session goes on

Authentication: the first frame of every session proves the capture token without
sending it. ``{"auth": {"nonce": 32 hex digits, random, "mac": HMAC-SHA256(token,
"<FRAME TYPE NAME>:<nonce>") in hex}}`` stands where ``"token"`` is shown above
(:func:`token_proof`). The aggregator refuses a nonce it has seen, so a recorded first frame
cannot be sent again; it still accepts ``"token"`` in clear from older clients (logged
once), which no client of this version sends.

The JSON payload of FLOWS is columnar (one header, then positional rows) because
decoding a list of lists is several times cheaper than a list of objects.

Payloads are decoded by ``orjson`` (strict RFC 8259) and, when it refuses one, by the
standard ``json`` module, whose verdict stands: what ``json`` accepts beyond the RFC
(``NaN``, a UTF-8 BOM, surrogate code points) still decodes, and everything else raises
:class:`ProtocolError` exactly as before.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import json
import secrets
import struct
from typing import Any, Final

import orjson

MAGIC: Final = b"NO"
VERSION: Final = 2
HEADER: Final = struct.Struct("!2sBBI")
HEADER_SIZE: Final = HEADER.size
#: Largest payload accepted; a batch of 20k flows is well under 8 MiB.
MAX_PAYLOAD: Final = 32 * 1024 * 1024


class FrameType(enum.IntEnum):
    HELLO = 1
    WELCOME = 2
    ERROR = 3
    FLOWS = 4
    ACK = 5
    NACK = 6
    STATS = 7
    BYE = 8
    SUBSCRIBE = 9
    FINISH = 10
    FINISHED = 11
    FETCH = 12
    FILE = 13
    FILE_END = 14
    WORKLOAD = 15
    SEARCH = 16
    RESULT = 17
    PACKETS = 18


class ProtocolError(Exception):
    """A peer sent something that is not a valid frame; the connection should close."""


_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def host_port(host: str, port: int) -> str:
    """An address as people write it: ``HOST:PORT``, ``[IPv6]:PORT``; an IPv4 peer seen on a
    dual-stack socket (``::ffff:a.b.c.d``) shows as plain IPv4."""
    host = host.removeprefix("::ffff:")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def encode(ftype: FrameType, payload: dict[str, Any]) -> bytes:
    body = _DUMPS(payload).encode()
    if len(body) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(body)} bytes exceeds the {MAX_PAYLOAD} limit")
    return HEADER.pack(MAGIC, VERSION, ftype, len(body)) + body


def encode_raw(ftype: FrameType, body: bytes) -> bytes:
    """A frame whose payload is ``body`` as it is (PACKETS)."""
    if len(body) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(body)} bytes exceeds the {MAX_PAYLOAD} limit")
    return HEADER.pack(MAGIC, VERSION, ftype, len(body)) + body


def decode_header(header: bytes) -> tuple[FrameType, int]:
    magic, version, ftype, length = HEADER.unpack(header)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {magic!r}: not a netobserv-tui peer")
    if version != VERSION:
        raise ProtocolError(
            f"protocol version {version} is not supported (this side speaks {VERSION})"
        )
    try:
        kind = FrameType(ftype)
    except ValueError:
        raise ProtocolError(f"unknown frame type {ftype}") from None
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"frame of {length} bytes exceeds the {MAX_PAYLOAD} limit")
    return kind, length


def decode_payload(body: bytes) -> dict[str, Any]:
    """The payload object; :class:`ProtocolError` if it is not a UTF-8 JSON object.

    The result is that of :func:`decode_payload_reference` except in two corners where
    ``orjson`` differs: an integer beyond 64 bits comes back as a float, and objects nested
    between ~990 and 1024 levels (the ``json`` module's limit depends on the stack) decode.
    The aggregator, which must judge untrusted agents exactly, uses
    :func:`decode_payload_strict` and the reference instead.
    """
    return decode_payload_strict(body)[0]


def decode_payload_strict(body: bytes) -> tuple[dict[str, Any], bool]:
    """``(payload, strict)``: ``strict`` is True when ``orjson`` decoded it.

    A strict payload is valid UTF-8 without surrogate code points, so every string in it
    can be stored as UTF-8, and it holds no ``NaN``/``Infinity``.  Otherwise the payload
    comes from :func:`decode_payload_reference` (or its :class:`ProtocolError`).
    """
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return decode_payload_reference(body), False
    if type(obj) is not dict:
        return decode_payload_reference(body), False  # raises, with the reference reason
    return obj, True


def decode_payload_reference(body: bytes) -> dict[str, Any]:
    """Decode with the standard ``json`` module: the reference verdict on any payload."""
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"payload is not UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("payload is nested too deeply") from None
    if not isinstance(obj, dict):
        raise ProtocolError("payload is not a JSON object")
    return obj


async def read_raw_frame(
    reader: asyncio.StreamReader, max_payload: int = MAX_PAYLOAD
) -> tuple[FrameType, bytes] | None:
    """Read one frame's type and undecoded payload; ``None`` on a clean end of stream.

    A payload longer than ``max_payload`` is refused from its header, before any of it is
    read (a server reads a first frame, not yet authenticated, with a small limit)."""
    try:
        header = await reader.readexactly(HEADER_SIZE)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ProtocolError("connection closed inside a frame header") from None
    kind, length = decode_header(header)
    if length > max_payload:
        raise ProtocolError(f"a {kind.name} frame of {length} bytes is over the {max_payload} "
                            "bytes allowed here")
    try:
        return kind, await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise ProtocolError("connection closed inside a frame payload") from None


async def read_frame(reader: asyncio.StreamReader) -> tuple[FrameType, dict[str, Any]] | None:
    """Read one frame; ``None`` on a clean end of stream between frames."""
    raw = await read_raw_frame(reader)
    return None if raw is None else (raw[0], decode_payload(raw[1]))


def read_frame_sync(sock_file: Any) -> tuple[FrameType, dict[str, Any]] | None:
    """Blocking variant over a file-like object from ``socket.makefile('rb')``."""
    header = sock_file.read(HEADER_SIZE)
    if not header:
        return None
    if len(header) < HEADER_SIZE:
        raise ProtocolError("connection closed inside a frame header")
    kind, length = decode_header(header)
    body = sock_file.read(length)
    if len(body) < length:
        raise ProtocolError("connection closed inside a frame payload")
    return kind, decode_payload(body)


def token_mac(token: str, kind: FrameType, nonce: str) -> str:
    """HMAC-SHA256 of ``"<kind>:<nonce>"`` keyed by the capture token, in hex."""
    key = token.encode("utf-8", "surrogatepass")
    return hmac.new(key, f"{kind.name}:{nonce}".encode(), hashlib.sha256).hexdigest()


def token_proof(token: str, kind: FrameType) -> dict[str, Any]:
    """The ``auth`` member of a first frame of type ``kind``: proof of the token, which
    itself never crosses the wire (see the module docstring)."""
    nonce = secrets.token_hex(16)
    return {"auth": {"nonce": nonce, "mac": token_mac(token, kind, nonce)}}
