"""Traffic workers that run inside a lab namespace: ``python -I _worker.py COMMAND JSON``.

Standard library only, so that it runs under ``ip netns exec`` with ``-I`` and imports nothing
from the project. Each worker writes JSON lines on stdout (``{"event": "ready", ...}`` once it
listens, ``{"event": "done", ...}`` with its numbers at the end) and treats the end of stdin as
a request to finish, so a worker never outlives the process that started it. Every worker also
has a hard deadline. Unexpected failures print a traceback on stderr and exit non-zero.

Commands: ``udp-recv``, ``udp-send``, ``tcp-server``, ``tcp-client``, ``ping``,
``http-server``, ``udp-sink``, ``mix-client``, ``slow-dns``.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
RCVBUF = 16 * 1024 * 1024
STDIN = 0


def emit(event: str, **fields: Any) -> None:
    """Write one JSON line on stdout and flush it."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def family_of(family: int) -> socket.AddressFamily:
    """4 or 6 -> the socket address family."""
    return socket.AF_INET6 if family == 6 else socket.AF_INET


def stdin_closed(timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for stdin to reach EOF; True if it did."""
    readable, _, _ = select.select([STDIN], [], [], max(0.0, timeout))
    if readable:
        return not os.read(STDIN, 4096)
    return False


def watch_stdin(on_eof: Callable[[], None]) -> None:
    """Call ``on_eof`` from a daemon thread once stdin reaches EOF (the parent went away)."""

    def loop() -> None:
        while os.read(STDIN, 4096):
            pass
        on_eof()

    threading.Thread(target=loop, name="stdin-watch", daemon=True).start()


def big_rcvbuf(sock: socket.socket) -> None:
    """Make the receive buffer large enough that a burst is never dropped at the socket."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)


def dual_stack_socket(kind: socket.SocketKind, port: int) -> socket.socket:
    """A socket bound to ``[::]:port`` that also accepts IPv4 (IPV6_V6ONLY off)."""
    sock = socket.socket(socket.AF_INET6, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    return sock


# --- UDP ---------------------------------------------------------------------------------------


def udp_recv(p: dict[str, Any]) -> None:
    """Count datagrams on ``addr:port`` until stdin closes and ``expect`` arrived (or grace)."""
    sock = socket.socket(family_of(p["family"]), socket.SOCK_DGRAM)
    big_rcvbuf(sock)
    sock.bind((p["addr"], p["port"]))
    emit("ready", port=sock.getsockname()[1])
    expect: int = p["expect"]
    end = time.monotonic() + p["deadline"]
    stop_at: float | None = None
    received = nbytes = 0
    ports: set[int] = set()
    stdin_open = True
    while True:
        now = time.monotonic()
        if now >= end or (stop_at is not None and (received >= expect or now >= stop_at)):
            break
        wait = min(end, stop_at if stop_at is not None else end) - now
        fds: list[Any] = [sock] + ([STDIN] if stdin_open else [])
        readable, _, _ = select.select(fds, [], [], wait)
        if sock in readable:
            data, peer = sock.recvfrom(65535)
            received += 1
            nbytes += len(data)
            ports.add(peer[1])
        if STDIN in readable and not os.read(STDIN, 4096):
            stdin_open = False
            stop_at = time.monotonic() + p["grace"]
    sock.setblocking(False)
    while True:  # anything beyond `expect` still queued is counted too: exactness both ways
        try:
            data, peer = sock.recvfrom(65535)
        except BlockingIOError:
            break
        received += 1
        nbytes += len(data)
        ports.add(peer[1])
    emit("done", received=received, bytes=nbytes, src_ports=sorted(ports))


def udp_send(p: dict[str, Any]) -> None:
    """Send exactly ``count`` datagrams of ``size`` bytes from one socket (one flow)."""
    sock = socket.socket(family_of(p["family"]), socket.SOCK_DGRAM)
    sock.bind((p["src_addr"], p["src_port"]))
    dst = (p["dst_addr"], p["dst_port"])
    payload = bytes(i % 251 for i in range(p["size"]))
    pps: float | None = p.get("pps")
    start = time.monotonic()
    sent = 0
    for i in range(p["count"]):
        if pps:
            delay = start + i / pps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if sock.sendto(payload, dst) != len(payload):
            raise RuntimeError(f"short send of datagram {i}")
        sent += 1
    emit("done", sent=sent, src_port=sock.getsockname()[1])


# --- TCP ---------------------------------------------------------------------------------------


def tcp_server(p: dict[str, Any]) -> None:
    """Accept one connection, count bytes until EOF, answer the count, report it."""
    end = time.monotonic() + p["deadline"]
    srv = socket.socket(family_of(p["family"]), socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((p["addr"], p["port"]))
    srv.listen(1)
    emit("ready", port=srv.getsockname()[1])
    srv.settimeout(p["deadline"])
    conn, peer = srv.accept()
    srv.close()
    total = 0
    with conn:
        conn.settimeout(max(0.1, end - time.monotonic()))
        while chunk := conn.recv(262144):
            total += len(chunk)
        conn.sendall(f"{total}\n".encode())
    emit("done", received=total, client_addr=peer[0], client_port=peer[1])


def tcp_client(p: dict[str, Any]) -> None:
    """Send exactly ``nbytes`` over one connection, half-close, read the server's count."""
    sock = socket.socket(family_of(p["family"]), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((p["src_addr"], p["src_port"]))
    sock.settimeout(p["deadline"])
    sock.connect((p["dst_addr"], p["dst_port"]))
    client_port = sock.getsockname()[1]
    chunk = memoryview(bytes(i % 251 for i in range(65536)))
    remaining: int = p["nbytes"]
    while remaining > 0:
        n = min(remaining, len(chunk))
        sock.sendall(chunk[:n])
        remaining -= n
    sock.shutdown(socket.SHUT_WR)
    reply = b""
    while data := sock.recv(4096):
        reply += data
    sock.close()
    emit("done", sent=p["nbytes"], client_port=client_port, server_ack=int(reply or b"-1"))


# --- ICMP echo ---------------------------------------------------------------------------------


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class Pinger:
    """ICMP/ICMPv6 echo over a raw socket (the lab does not rely on a `ping` binary)."""

    def __init__(self, family: int, ident: int, size: int = 56) -> None:
        self.family = family
        self.ident = ident & 0xFFFF
        self.payload = bytes(i % 256 for i in range(size))
        if family == 6:
            self.sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)

    def send(self, dst: str, seq: int) -> None:
        """Send one echo request (the kernel fills the ICMPv6 checksum)."""
        kind = 128 if self.family == 6 else 8
        header = struct.pack("!BBHHH", kind, 0, 0, self.ident, seq & 0xFFFF)
        if self.family == 4:
            csum = checksum(header + self.payload)
            header = struct.pack("!BBHHH", kind, 0, csum, self.ident, seq & 0xFFFF)
        self.sock.sendto(header + self.payload, (dst, 0))

    def wait_reply(self, dst: str, seq: int, timeout: float) -> bool:
        """Wait up to ``timeout`` for the echo reply to ``seq`` from ``dst``."""
        end = time.monotonic() + timeout
        want = 129 if self.family == 6 else 0
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return False
            readable, _, _ = select.select([self.sock], [], [], remaining)
            if not readable:
                return False
            data, peer = self.sock.recvfrom(65535)
            icmp = data if self.family == 6 else data[(data[0] & 0x0F) * 4 :]
            if len(icmp) < 8:
                continue
            kind, _, _, ident, rseq = struct.unpack("!BBHHH", icmp[:8])
            if kind == want and ident == self.ident and rseq == seq & 0xFFFF and peer[0] == dst:
                return True

    def echo(self, dst: str, seq: int, timeout: float) -> float | None:
        """One round trip; the RTT in milliseconds, or None if no reply came in time."""
        start = time.monotonic()
        self.send(dst, seq)
        if self.wait_reply(dst, seq, timeout):
            return (time.monotonic() - start) * 1000.0
        return None


def ping(p: dict[str, Any]) -> None:
    """``count`` echoes to ``dst`` one ``interval`` apart; with ``until_reply``, stop at the
    first reply (sending one echo per interval until ``deadline``)."""
    pinger = Pinger(p["family"], os.getpid(), p["size"])
    end = time.monotonic() + p["deadline"]
    rtts: list[float] = []
    transmitted = 0
    seq = 0
    while True:
        start = time.monotonic()
        seq += 1
        transmitted += 1
        rtt = pinger.echo(p["dst"], seq, min(p["reply_timeout"], max(0.0, end - start)))
        if rtt is not None:
            rtts.append(rtt)
        if p["until_reply"]:
            if rtts or time.monotonic() >= end:
                break
        elif transmitted >= p["count"] or time.monotonic() >= end:
            break
        delay = start + p["interval"] - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    emit("done", transmitted=transmitted, received=len(rtts), rtts_ms=rtts, ident=pinger.ident)


# --- background mix ----------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server_version = "nobs-lab/1"
    body = b""

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        if self.path in ("/", "/index.html"):
            status, body = 200, self.body
        else:
            status, body = 404, b"not found\n"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class _DualStackHTTPServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def http_server(p: dict[str, Any]) -> None:
    """A tiny HTTP server on ``[::]:port`` (IPv4 too): ``/`` is 200, anything else 404."""
    _Handler.body = f"hello from {p['name']}\n".encode()
    server = _DualStackHTTPServer(("::", p["port"]), _Handler)
    emit("ready", port=p["port"])
    watch_stdin(server.shutdown)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    emit("done")


def udp_sink(p: dict[str, Any]) -> None:
    """Receive and count datagrams on ``[::]:port`` (IPv4 too) until stdin closes."""
    sock = dual_stack_socket(socket.SOCK_DGRAM, p["port"])
    emit("ready", port=p["port"])
    received = 0
    while True:
        fds: list[Any] = [sock, STDIN]
        readable, _, _ = select.select(fds, [], [])
        if sock in readable:
            sock.recvfrom(65535)
            received += 1
        if STDIN in readable and not os.read(STDIN, 4096):
            break
    emit("done", received=received)


def mix_client(p: dict[str, Any]) -> None:
    """Every ``interval``: one HTTP GET (v4/v6 alternately, every 5th a 404), one UDP
    datagram, one echo to each ping target; a cumulative ``stats`` line after each round."""
    stats = {
        "rounds": 0,
        "http_ok": 0,
        "http_not_found": 0,
        "http_failed": 0,
        "udp_sent": 0,
        "ping_sent": 0,
        "ping_replied": 0,
    }
    udp = {fam: socket.socket(family_of(fam), socket.SOCK_DGRAM) for fam in (4, 6)}
    pingers = {fam: Pinger(fam, os.getpid() + fam) for fam in (4, 6)}
    interval: float = p["interval"]
    seq = 0
    while True:
        start = time.monotonic()
        fam = 4 if stats["rounds"] % 2 == 0 else 6
        path = "/missing" if stats["rounds"] % 5 == 4 else "/"
        try:
            conn = http.client.HTTPConnection(p["http"][str(fam)], p["http_port"], timeout=2)
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
            finally:
                conn.close()
            key = "http_ok" if response.status == 200 else "http_not_found"
            stats[key] += 1
        except OSError:
            stats["http_failed"] += 1
        try:
            udp[fam].sendto(
                b"nobs-lab datagram %d" % stats["rounds"], (p["udp"][str(fam)], p["udp_port"])
            )
            stats["udp_sent"] += 1
        except OSError:
            pass
        for target_fam, addr in p["ping"]:
            seq += 1
            stats["ping_sent"] += 1
            if pingers[target_fam].echo(addr, seq, min(1.0, interval)) is not None:
                stats["ping_replied"] += 1
        stats["rounds"] += 1
        emit("stats", **stats)
        if stdin_closed(start + interval - time.monotonic()):
            break
    emit("done", **stats)


def dns_answer(query: bytes, answers: dict[str, str]) -> bytes | None:
    """The response to a one-question DNS ``query``: its A or AAAA record from ``answers``
    ({"4": v4 address, "6": v6 address}), no record for another type; None when the query
    does not parse (no answer is sent)."""
    if len(query) < 12:
        return None
    ident, flags, questions = struct.unpack("!HHH", query[:6])
    if flags & 0x8000 or questions != 1:
        return None
    end = 12
    while end < len(query) and query[end]:
        end += 1 + query[end]
    if end + 5 > len(query):
        return None
    question = query[12:end + 5]
    qtype, qclass = struct.unpack("!HH", question[-4:])
    family = {1: "4", 28: "6"}.get(qtype)
    records = b""
    if family is not None and qclass == 1 and family in answers:
        raw = socket.inet_pton(family_of(int(family)), answers[family])
        records = struct.pack("!HHHIH", 0xC00C, qtype, 1, 60, len(raw)) + raw
    header = struct.pack("!HHHHHH", ident, 0x8180 | (flags & 0x0100), 1,
                         1 if records else 0, 0, 0)
    return header + question + records


def slow_dns(p: dict[str, Any]) -> None:
    """A DNS server on ``127.0.0.1:port`` that answers every query ``delay_ms`` later (from
    ``answers``, see :func:`dns_answer`): a slow upstream for the lab's dnsmasq, which
    forwards one name to it, so that the capture measures a slow DNS answer (the kernel has
    no netem to delay packets)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", p["port"]))
    delay = p["delay_ms"] / 1000
    pending: list[tuple[float, bytes, Any]] = []
    emit("ready", port=p["port"])
    answered = 0
    while True:
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, ready, peer = pending.pop(0)
            sock.sendto(ready, peer)
            answered += 1
        timeout = max(0.0, pending[0][0] - now) if pending else None
        fds: list[Any] = [sock, STDIN]
        readable, _, _ = select.select(fds, [], [], timeout)
        if sock in readable:
            query, peer = sock.recvfrom(4096)
            response = dns_answer(query, p["answers"])
            if response is not None:
                pending.append((time.monotonic() + delay, response, peer))
        if STDIN in readable and not os.read(STDIN, 4096):
            break
    emit("done", answered=answered)


COMMANDS: dict[str, Callable[[dict[str, Any]], None]] = {
    "udp-recv": udp_recv,
    "udp-send": udp_send,
    "tcp-server": tcp_server,
    "tcp-client": tcp_client,
    "ping": ping,
    "http-server": http_server,
    "udp-sink": udp_sink,
    "mix-client": mix_client,
    "slow-dns": slow_dns,
}


def main(argv: list[str]) -> int:
    """Run one worker command; exit 0 on success."""
    if len(argv) != 2 or argv[0] not in COMMANDS:
        sys.stderr.write(f"usage: _worker.py {{{','.join(COMMANDS)}}} JSON\n")
        return 2
    try:
        COMMANDS[argv[0]](json.loads(argv[1]))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # reported to the parent, which turns it into a LabError
        emit("error", message=f"{type(exc).__name__}: {exc}")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
