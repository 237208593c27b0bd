"""Traffic generators that run inside lab pods and return numbers known from outside the tool.

Every generator starts its processes with ``ip netns exec <pod namespace>`` and reaps them on
every exit path (success, error, timeout, Ctrl+C). The numbers come from the generators
themselves (datagrams sent and received, bytes acknowledged by the TCP server, echo replies)
and from the kernel's interface counters (:func:`iface_counters`), never from the tool under
test.

Ethernet frame sizes, as the veth counters count them (no FCS): a UDP datagram with ``P``
payload bytes is ``P + 42`` bytes over IPv4 and ``P + 62`` bytes over IPv6 (see
:func:`udp_frame_bytes`). TCP over veth is segmented lazily (TSO/GSO): the counters see
fewer, larger packets than MSS-sized segments, so only TCP *bytes* at the socket are exact.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model.errors import LabError
from ._proc import NsProcess, ip_json, worker_argv
from ._service import Service
from .topology import Lab, Pod

log = logging.getLogger(__name__)

PodRef = str | int | Pod

ETH_HEADER = 14
IPV4_HEADER = 20
IPV6_HEADER = 40
UDP_HEADER = 8
LAB_MTU = 1500


def _family(family: int) -> int:
    if family not in (4, 6):
        raise LabError(f"address family must be 4 or 6, not {family!r}")
    return family


def udp_frame_bytes(payload_size: int, family: int = 4) -> int:
    """Bytes one UDP datagram of ``payload_size`` takes on a veth counter (Ethernet, no FCS)."""
    ip_header = IPV6_HEADER if _family(family) == 6 else IPV4_HEADER
    return payload_size + UDP_HEADER + ip_header + ETH_HEADER


def max_udp_payload(family: int = 4) -> int:
    """The largest UDP payload that still fits one unfragmented packet in the lab (MTU 1500)."""
    ip_header = IPV6_HEADER if _family(family) == 6 else IPV4_HEADER
    return LAB_MTU - ip_header - UDP_HEADER


# --- interface counters ------------------------------------------------------------------------


@dataclass(frozen=True)
class IfaceCounters:
    """Packet and byte counters of one interface (the kernel's ``rtnl_link_stats64``)."""

    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int
    rx_dropped: int = 0
    tx_dropped: int = 0

    def __sub__(self, other: IfaceCounters) -> IfaceCounters:
        return IfaceCounters(
            rx_packets=self.rx_packets - other.rx_packets,
            rx_bytes=self.rx_bytes - other.rx_bytes,
            tx_packets=self.tx_packets - other.tx_packets,
            tx_bytes=self.tx_bytes - other.tx_bytes,
            rx_dropped=self.rx_dropped - other.rx_dropped,
            tx_dropped=self.tx_dropped - other.tx_dropped,
        )


_COUNTER_FIELDS = ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "rx_dropped", "tx_dropped")


def iface_counters(ifname: str, netns: str | None = None) -> IfaceCounters:
    """Counters of ``ifname`` in the root namespace, or in ``netns`` when given.

    Root-namespace interfaces are read from ``/sys/class/net/<ifname>/statistics``; others with
    ``ip -n NETNS -s -j link show``.
    """
    if netns is None:
        base = Path("/sys/class/net") / ifname / "statistics"
        try:
            values = {name: int((base / name).read_text()) for name in _COUNTER_FIELDS}
        except OSError as exc:
            raise LabError(
                f"cannot read counters of {ifname}: {exc.strerror}; is the interface there "
                "(`ip link show`)?"
            ) from exc
        return IfaceCounters(**values)
    links = ip_json("-s", "link", "show", "dev", ifname, netns=netns)
    if not links:
        raise LabError(f"no interface {ifname} in namespace {netns}")
    stats = links[0].get("stats64", {})
    rx, tx = stats.get("rx", {}), stats.get("tx", {})
    return IfaceCounters(
        rx_packets=int(rx.get("packets", 0)),
        rx_bytes=int(rx.get("bytes", 0)),
        tx_packets=int(tx.get("packets", 0)),
        tx_bytes=int(tx.get("bytes", 0)),
        rx_dropped=int(rx.get("dropped", 0)),
        tx_dropped=int(tx.get("dropped", 0)),
    )


# --- one-shot generators -----------------------------------------------------------------------


@dataclass(frozen=True)
class UdpResult:
    """One UDP flow sent by :func:`udp_send` and what its receiver counted."""

    family: int
    src: str
    dst: str
    src_port: int
    dst_port: int
    payload_size: int
    sent: int
    received: int
    bytes_received: int
    src_ports_seen: tuple[int, ...]

    @property
    def frame_bytes(self) -> int:
        """Bytes of one datagram on a veth counter (payload + UDP + IP + Ethernet headers)."""
        return udp_frame_bytes(self.payload_size, self.family)


@dataclass(frozen=True)
class TcpResult:
    """One TCP connection made by :func:`tcp_transfer`."""

    family: int
    src: str
    dst: str
    client_port: int
    server_port: int
    bytes_sent: int
    bytes_received: int


@dataclass(frozen=True)
class PingResult:
    """ICMP (v4) or ICMPv6 echoes sent by :func:`ping`."""

    family: int
    src: str
    dst: str
    transmitted: int
    received: int
    ident: int
    rtts_ms: tuple[float, ...] = field(default=())

    @property
    def loss(self) -> float:
        """Fraction of echoes without a reply (0.0 to 1.0)."""
        return 1.0 - self.received / self.transmitted if self.transmitted else 0.0


def udp_send(
    lab: Lab,
    src_pod: PodRef,
    dst_pod: PodRef,
    count: int,
    payload_size: int,
    dst_port: int,
    family: int = 4,
    src_port: int = 0,
    *,
    pps: float | None = None,
    timeout: float = 30.0,
    grace: float = 1.0,
) -> UdpResult:
    """Send exactly ``count`` UDP datagrams of ``payload_size`` bytes from one socket.

    A receiver bound to ``dst_pod:dst_port`` starts first and counts what arrives; the sender
    uses one socket (``src_port``, or a kernel-chosen port when 0), so the datagrams form one
    flow. ``pps`` paces the sender (default: as fast as it can). After the sender is done, the
    receiver waits up to ``grace`` seconds for stragglers. Datagrams are never fragmented:
    ``payload_size`` must fit the lab's MTU (see :func:`max_udp_payload`).
    """
    _family(family)
    if count < 0:
        raise LabError(f"count must be 0 or more, not {count}")
    if not 0 <= payload_size <= max_udp_payload(family):
        raise LabError(
            f"payload_size {payload_size} does not fit one IPv{family} packet at MTU {LAB_MTU}: "
            f"use 0 to {max_udp_payload(family)} bytes"
        )
    if pps is not None and pps > 0 and count / pps >= timeout:
        raise LabError(
            f"sending {count} datagrams at {pps:g} per second takes {count / pps:.0f}s, more "
            f"than timeout={timeout:g}s: raise the timeout or the rate"
        )
    src, dst = lab.pod(src_pod), lab.pod(dst_pod)
    label = f"UDP {src.name} -> {dst.name}:{dst_port}/v{family}"
    deadline = time.monotonic() + timeout
    receiver = NsProcess(
        dst.netns,
        worker_argv(
            "udp-recv", family=family, addr=dst.addr(family), port=dst_port, expect=count,
            deadline=timeout, grace=grace,
        ),
        label=f"{label} receiver",
    )  # fmt: skip
    sender: NsProcess | None = None
    try:
        receiver.expect("ready", timeout)
        sender = NsProcess(
            src.netns,
            worker_argv(
                "udp-send", family=family, src_addr=src.addr(family), src_port=src_port,
                dst_addr=dst.addr(family), dst_port=dst_port, count=count, size=payload_size,
                pps=pps,
            ),
            label=f"{label} sender",
        )  # fmt: skip
        sent = sender.expect("done", _remaining(deadline, label))
        receiver.close_stdin()
        got = receiver.expect("done", _remaining(deadline, label) + grace)
    finally:
        if sender is not None:
            sender.stop()
        receiver.stop()
    return UdpResult(
        family=family,
        src=src.addr(family),
        dst=dst.addr(family),
        src_port=int(sent["src_port"]),
        dst_port=dst_port,
        payload_size=payload_size,
        sent=int(sent["sent"]),
        received=int(got["received"]),
        bytes_received=int(got["bytes"]),
        src_ports_seen=tuple(int(p) for p in got["src_ports"]),
    )


def tcp_transfer(
    lab: Lab,
    src: PodRef,
    dst: PodRef,
    nbytes: int,
    port: int = 5201,
    family: int = 4,
    *,
    src_port: int = 0,
    timeout: float = 60.0,
) -> TcpResult:
    """Send exactly ``nbytes`` over one TCP connection from ``src`` to a server in ``dst``.

    The server accepts one connection on ``dst:port``, counts bytes until the client half-closes,
    answers the count and exits; ``bytes_received`` is what the server counted (and the client
    checked the answer). ``src_port`` 0 lets the kernel choose the client port.
    """
    _family(family)
    if nbytes < 0:
        raise LabError(f"nbytes must be 0 or more, not {nbytes}")
    client_pod, server_pod = lab.pod(src), lab.pod(dst)
    label = f"TCP {client_pod.name} -> {server_pod.name}:{port}/v{family}"
    deadline = time.monotonic() + timeout
    server = NsProcess(
        server_pod.netns,
        worker_argv(
            "tcp-server", family=family, addr=server_pod.addr(family), port=port,
            deadline=timeout,
        ),
        label=f"{label} server",
    )  # fmt: skip
    client: NsProcess | None = None
    try:
        server.expect("ready", timeout)
        client = NsProcess(
            client_pod.netns,
            worker_argv(
                "tcp-client", family=family, src_addr=client_pod.addr(family),
                src_port=src_port, dst_addr=server_pod.addr(family), dst_port=port,
                nbytes=nbytes, deadline=timeout,
            ),
            label=f"{label} client",
        )  # fmt: skip
        sent = client.expect("done", _remaining(deadline, label))
        got = server.expect("done", _remaining(deadline, label))
    finally:
        if client is not None:
            client.stop()
        server.stop()
    if int(sent["server_ack"]) != int(got["received"]):
        raise LabError(
            f"{label}: the server reported {got['received']} bytes but acknowledged "
            f"{sent['server_ack']} to the client"
        )
    return TcpResult(
        family=family,
        src=client_pod.addr(family),
        dst=server_pod.addr(family),
        client_port=int(sent["client_port"]),
        server_port=port,
        bytes_sent=int(sent["sent"]),
        bytes_received=int(got["received"]),
    )


def ping(
    lab: Lab,
    src: PodRef,
    dst: PodRef,
    count: int = 3,
    family: int = 4,
    *,
    interval: float = 0.2,
    reply_timeout: float = 1.0,
    payload_size: int = 56,
) -> PingResult:
    """Send ``count`` ICMP echo requests from ``src`` to ``dst``, one per ``interval`` seconds.

    Uses a raw socket inside ``src`` (no ``ping`` binary needed); each echo waits up to
    ``reply_timeout`` seconds for its reply.
    """
    _family(family)
    if count < 1:
        raise LabError(f"count must be 1 or more, not {count}")
    a, b = lab.pod(src), lab.pod(dst)
    budget = count * max(interval, reply_timeout) + 5.0
    proc = NsProcess(
        a.netns,
        worker_argv(
            "ping", family=family, dst=b.addr(family), count=count, interval=interval,
            reply_timeout=reply_timeout, size=payload_size, until_reply=False, deadline=budget,
        ),
        label=f"ping {a.name} -> {b.name} (v{family})",
    )  # fmt: skip
    with proc:
        done = proc.expect("done", budget + 5.0)
    return PingResult(
        family=family,
        src=a.addr(family),
        dst=b.addr(family),
        transmitted=int(done["transmitted"]),
        received=int(done["received"]),
        ident=int(done["ident"]),
        rtts_ms=tuple(float(r) for r in done["rtts_ms"]),
    )


def _remaining(deadline: float, label: str) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise LabError(f"{label} did not finish in time; try a larger timeout")
    return remaining


# --- background mix ----------------------------------------------------------------------------


class LabTraffic(Service):
    """A little real traffic between pods until stopped, for demos and live views.

    While running, once per ``interval`` seconds the first pod (pod-a):

    - sends an HTTP GET to a tiny HTTP server on the second pod (pod-b), port ``http_port``,
      alternating IPv4 and IPv6, every fifth request for a missing page (404);
    - sends one UDP datagram to a sink on the last pod (pod-c with 3 pods), port ``udp_port``;
    - sends one ICMP echo to every other pod (IPv4 and IPv6 alternately).

    Use as a context manager, or call :meth:`start` and :meth:`stop`. :meth:`stats` returns
    the client's cumulative counters. Needs a lab with at least 2 pods.
    """

    def __init__(
        self,
        lab: Lab,
        *,
        interval: float = 1.0,
        http_port: int = 8080,
        udp_port: int = 9000,
        start_timeout: float = 10.0,
    ) -> None:
        if len(lab.pods) < 2:
            raise LabError("background traffic needs a lab with at least 2 pods that is up")
        if interval <= 0:
            raise LabError(f"interval must be positive, not {interval}")
        self.lab = lab
        self.interval = interval
        self.http_port = http_port
        self.udp_port = udp_port
        self.start_timeout = start_timeout
        self.client_pod = lab.pods[0]
        self.http_pod = lab.pods[1]
        self.udp_pod = lab.pods[-1]
        self._procs: list[NsProcess] = []
        self._client: NsProcess | None = None
        self._reader: threading.Thread | None = None
        self._stats: dict[str, int] = {}
        self._lock = threading.Lock()
        self._client_error: str | None = None

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return bool(self._procs)

    def start(self) -> LabTraffic:
        """Start the servers, wait until they listen, then start the client; return ``self``."""
        if self._procs:
            return self
        try:
            http = self._spawn(
                self.http_pod,
                "http-server",
                f"HTTP server in {self.http_pod.name}",
                name=self.http_pod.name,
                port=self.http_port,
            )
            http.expect("ready", self.start_timeout)
            sink = self._spawn(
                self.udp_pod, "udp-sink", f"UDP sink in {self.udp_pod.name}", port=self.udp_port
            )
            sink.expect("ready", self.start_timeout)
            others = [pod for pod in self.lab.pods if pod is not self.client_pod]
            targets = [
                [4 if i % 2 == 0 else 6, pod.addr(4 if i % 2 == 0 else 6)]
                for i, pod in enumerate(others)
            ]
            self._client = self._spawn(
                self.client_pod,
                "mix-client",
                f"traffic client in {self.client_pod.name}",
                http={"4": self.http_pod.v4, "6": self.http_pod.v6},
                http_port=self.http_port,
                udp={"4": self.udp_pod.v4, "6": self.udp_pod.v6},
                udp_port=self.udp_port,
                ping=targets,
                interval=self.interval,
            )
            first = self._client.expect("stats", self.start_timeout)
            self._stats = {k: int(v) for k, v in first.items() if k != "event"}
        except BaseException:
            self.stop()
            raise
        self._reader = threading.Thread(
            target=self._read_stats, name="lab-traffic-stats", daemon=True
        )
        self._reader.start()
        log.info(
            "Background traffic started: %s -> HTTP %s:%d, UDP %s:%d, ICMP to the other pods.",
            self.client_pod.name,
            self.http_pod.name,
            self.http_port,
            self.udp_pod.name,
            self.udp_port,
        )
        return self

    def _spawn(self, pod: Pod, command: str, label: str, **params: Any) -> NsProcess:
        proc = NsProcess(pod.netns, worker_argv(command, **params), label=label)
        self._procs.append(proc)
        return proc

    def _read_stats(self) -> None:
        client = self._client
        while client is not None:
            try:
                event = client.read_event(timeout=3600.0)
            except LabError as exc:
                if self._procs:  # not a deliberate stop
                    self._client_error = str(exc)
                return
            except (OSError, ValueError):  # pipe closed by stop()
                return
            with self._lock:
                self._stats = {k: int(v) for k, v in event.items() if k != "event"}
            if event.get("event") == "done":
                return

    def stats(self) -> dict[str, int]:
        """Cumulative counters from the client (rounds, http_ok, udp_sent, ping_replied...)."""
        with self._lock:
            return dict(self._stats)

    def check(self) -> None:
        """Raise :class:`LabError` if a traffic process has died since :meth:`start`."""
        for proc in self._procs:
            if not proc.running():
                raise LabError(
                    f"{proc.label} exited with code {proc.proc.returncode}"
                    + (f": {proc.stderr_tail()}" if proc.stderr_tail() else "")
                    + "; stop the background traffic and start it again"
                )
        if self._client_error:
            raise LabError(self._client_error)

    def stop(self) -> dict[str, int]:
        """Stop every process (idempotent) and return the final counters."""
        procs, self._procs = self._procs, []
        # The client first (it finishes its round and reports), then the servers.
        for proc in sorted(procs, key=lambda p: p is not self._client):
            with contextlib.suppress(Exception):
                proc.close_stdin()
        if self._reader is not None:
            self._reader.join(timeout=self.interval + 3.0)
            self._reader = None
        for proc in procs:
            proc.stop()
        self._client = None
        return self.stats()
