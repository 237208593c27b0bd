"""A DNS server for the lab (dnsmasq inside a pod) and a ``dig`` client for the other pods.

The server answers only from local data: the names it was given (A and AAAA records) and
NXDOMAIN for everything else. It never forwards (``--no-resolv``, no ``--server``, and
``--local=/#/`` makes every domain local), reads no configuration, hosts or resolv file, runs no
DHCP, and listens only on the pod's lab addresses, so no query ever leaves the lab.

:func:`dig` runs ``dig`` inside a pod against the server from a fixed source port
(``-b addr#port``), so that a test knows the exact 5-tuple of the query and of its response,
and returns what dig reports: the DNS id, the status, the answers and the query time.

``dnsmasq`` runs with ``--no-daemon``: it stays in the foreground, logs to stderr as well as
to its log file, does not change user, and answers TCP queries in its main process instead of
forking one child per connection; stopping it therefore stops everything it started.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..model.errors import LabError
from ._proc import NsProcess, run
from ._service import Service
from .topology import Lab, Pod

log = logging.getLogger(__name__)

PodRef = str | int | Pod
#: Names the server answers; a value is one address or several (IPv4 and/or IPv6).
NameMap = Mapping[str, str | Sequence[str]]

DNS_PORT = 53
#: Source ports :func:`dig` picks from when none is given: below the kernel's ephemeral range
#: (32768-60999), so they never collide with a port the kernel handed to someone else.
DIG_PORTS = range(20000, 30000)
_LAB_NETWORKS = (
    ipaddress.ip_network("198.18.0.0/15"),
    ipaddress.ip_network("fd00:198:18::/48"),
)
_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_-]{1,63}(\.[A-Za-z0-9_-]{1,63})*\.?$")
_HEADER = re.compile(r"->>HEADER<<- opcode: (\w+), status: (\w+), id: (\d+)")
_FLAGS = re.compile(r"^;; flags:([^;]*);", re.MULTILINE)
_QUERY_TIME = re.compile(r"^;; Query time: (\d+) (msec|usec)", re.MULTILINE)


def _require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise LabError(f"the lab's DNS needs `{tool}`: install it (`apt-get install {package}`)")
    return path


def _check_name(name: str) -> str:
    if name != "." and not _NAME.match(name):
        raise LabError(f"{name!r} is not a DNS name the lab can serve (letters, digits, - and _)")
    return name


def _check_lab_address(addr: str) -> str:
    """Refuse anything outside the lab's networks: answers must never point out of the lab."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise LabError(f"{addr!r} is not an IP address") from None
    if not any(ip in net for net in _LAB_NETWORKS if net.version == ip.version):
        raise LabError(
            f"{addr} is outside the lab's networks (198.18.0.0/15, fd00:198:18::/48); the lab "
            "DNS only answers with lab addresses"
        )
    return str(ip)


def default_names(lab: Lab) -> dict[str, tuple[str, ...]]:
    """``<pod>.lab.test`` for every pod (IPv4 and IPv6), and ``web.lab.test`` for pod-b."""
    names: dict[str, tuple[str, ...]] = {
        f"{pod.name}.lab.test": (pod.v4, pod.v6) for pod in lab.pods
    }
    web = lab.pods[1] if len(lab.pods) > 1 else lab.pods[0]
    names["web.lab.test"] = (web.v4, web.v6)
    return names


class LabDns(Service):
    """dnsmasq in one pod, answering ``names`` and NXDOMAIN for everything else.

    A context manager: entering starts the server and waits (with a deadline) until it
    answers on both of the pod's addresses; leaving always stops it. ``port`` is the port it
    listens on (the DNS_PORT the agent must be built with when it is not 53). Its pid file
    and log live in a temporary directory removed on stop; :meth:`log_text` reads the log.
    """

    def __init__(
        self,
        lab: Lab,
        pod: PodRef = "pod-c",
        names: NameMap | None = None,
        *,
        port: int = DNS_PORT,
        timeout: float = 10.0,
        forward: Mapping[str, int] | None = None,
    ) -> None:
        if not 1 <= port <= 65535:
            raise LabError(f"port must be 1 to 65535, not {port}")
        self.lab = lab
        self.pod = lab.pod(pod)
        self.port = port
        self.timeout = timeout
        given = default_names(lab) if names is None else names
        self.names: dict[str, tuple[str, ...]] = {}
        for name, addrs in given.items():
            values = (addrs,) if isinstance(addrs, str) else tuple(addrs)
            if not values:
                raise LabError(f"no address given for {name!r}")
            key = _check_name(name).rstrip(".").lower()
            self.names[key] = tuple(_check_lab_address(a) for a in values)
        #: Names answered by another server in the same pod, on 127.0.0.1 and this port
        #: (the lab's slow server): dnsmasq forwards their queries there (over the pod's
        #: loopback: nothing leaves the pod).
        self.forward = {_check_name(name).rstrip(".").lower(): port
                        for name, port in (forward or {}).items()}
        self._proc: NsProcess | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._log_text = ""

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running()

    def addr(self, family: int = 4) -> str:
        """The server's address in family 4 or 6."""
        return self.pod.addr(family)

    @property
    def log_path(self) -> Path | None:
        return Path(self._dir.name) / "dnsmasq.log" if self._dir else None

    def log_text(self) -> str:
        """dnsmasq's log (every query, with --log-queries); kept after stop()."""
        path = self.log_path
        if path is not None and path.exists():
            return path.read_text(errors="replace")
        return self._log_text

    def argv(self, workdir: Path) -> list[str]:
        """The dnsmasq command line (answers from local data only; nothing is forwarded)."""
        argv = [
            _require("dnsmasq", "dnsmasq-base"),
            "--no-daemon",
            "--conf-file=/dev/null",  # no /etc/dnsmasq.conf, no conf-dir
            "--no-resolv",  # no upstream servers from resolv.conf ...
            "--local=/#/",  # ... and every domain is local: unknown names get NXDOMAIN
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            f"--listen-address={self.pod.v4}",
            f"--listen-address={self.pod.v6}",
            f"--port={self.port}",
            "--cache-size=0",
            f"--pid-file={workdir / 'dnsmasq.pid'}",
            f"--dhcp-leasefile={workdir / 'dnsmasq.leases'}",
            f"--log-facility={workdir / 'dnsmasq.log'}",
            "--log-queries",
        ]
        for name, addrs in self.names.items():
            argv.append(f"--host-record={name},{','.join(addrs)}")
        for name, port in self.forward.items():
            argv.append(f"--server=/{name}/127.0.0.1#{port}")
        return argv

    def start(self) -> LabDns:
        if self._proc is not None:
            return self
        _require("dig", "dnsutils")
        self._dir = tempfile.TemporaryDirectory(prefix="nobs-lab-dns-")
        try:
            self._proc = NsProcess(
                self.pod.netns,
                self.argv(Path(self._dir.name)),
                label=f"dnsmasq in {self.pod.name}",
            )
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("DNS server for the lab is answering in %s on port %d.", self.pod.name, self.port)
        return self

    def _wait_ready(self) -> None:
        """Wait until dnsmasq has logged its start (it binds its sockets first, and exits if
        it cannot) and then answers, asked from inside its own pod (over loopback: nothing
        crosses the lab's veths) on both addresses. The deadline is ``timeout``.

        The log line matters: another server on the same address and port would answer the
        probes for a dnsmasq that is about to fail with "Address already in use"."""
        deadline = time.monotonic() + self.timeout
        pending = [4, 6]
        last = "dnsmasq has not logged its start yet"
        while pending:
            proc = self._proc
            assert proc is not None
            if not proc.running():
                raise LabError(
                    f"dnsmasq in {self.pod.name} exited (code {proc.proc.returncode}) before "
                    f"answering: {proc.stderr_tail() or self.log_text().strip() or 'no output'}"
                )
            family = pending[0]
            if "started, version" in self.log_text():
                try:
                    dig(self.lab, self.pod, self.pod, "probe.lab.test", family=family,
                        port=self.port, timeout=1.0)  # fmt: skip
                    pending.pop(0)
                    continue
                except LabError as exc:
                    last = str(exc)
            if time.monotonic() >= deadline:
                raise LabError(
                    f"dnsmasq in {self.pod.name} did not answer over IPv{family} within "
                    f"{self.timeout:.0f}s; last attempt: {last}; its log ends with: "
                    f"{self.log_text()[-1000:].strip() or 'nothing'}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop dnsmasq (SIGTERM, then SIGKILL), reap it and remove its files. Idempotent."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None:
                proc.stop(grace=2.0)
        finally:
            if self._dir is not None:
                self._log_text = self.log_text()
                self._dir.cleanup()
                self._dir = None



@dataclass(frozen=True)
class DigResult:
    """What one ``dig`` run reported, and the query's 5-tuple.

    ``status`` is dig's spelling (``NOERROR``, ``NXDOMAIN``, ...); ``query_time_ms`` is dig's
    ``;; Query time:``, measured in user space from send to receive and truncated to whole
    milliseconds. The query goes ``src:src_port -> dst:dst_port``; the response comes back
    the other way round.
    """

    name: str
    qtype: str
    family: int
    tcp: bool
    src: str
    src_port: int
    dst: str
    dst_port: int
    id: int
    opcode: str
    status: str
    flags: tuple[str, ...]
    answers: tuple[str, ...]
    query_time_ms: int
    output: str

    @property
    def proto(self) -> int:
        """IPPROTO_TCP or IPPROTO_UDP."""
        return 6 if self.tcp else 17


def parse_dig(output: str) -> tuple[str, str, int, tuple[str, ...], tuple[str, ...], int]:
    """(opcode, status, id, flags, answer rdata, query time in ms) from dig's default output."""
    header = _HEADER.search(output)
    query_time = _QUERY_TIME.search(output)
    if header is None or query_time is None:
        raise LabError(f"dig printed no answer header or query time:\n{output.strip()}")
    flags_match = _FLAGS.search(output)
    flags = tuple(flags_match.group(1).split()) if flags_match else ()
    answers: list[str] = []
    in_answer = False
    for line in output.splitlines():
        if line.startswith(";; ANSWER SECTION:"):
            in_answer = True
        elif in_answer:
            if not line.strip():
                break
            if not line.startswith(";"):
                parts = line.split(None, 4)
                if len(parts) == 5:
                    answers.append(parts[4].strip())
    ms = int(query_time.group(1))
    if query_time.group(2) == "usec":
        ms //= 1000
    return header.group(1), header.group(2), int(header.group(3)), flags, tuple(answers), ms


def dig(
    lab: Lab,
    pod: PodRef,
    server_pod: PodRef,
    name: str,
    family: int = 4,
    tcp: bool = False,
    *,
    qtype: str = "A",
    src_port: int | None = None,
    port: int = DNS_PORT,
    timeout: float = 2.0,
) -> DigResult:
    """Ask the lab DNS in ``server_pod`` for ``name`` from ``pod`` with one ``dig`` (one try).

    ``family`` picks the addresses of both ends (and so IPv4 or IPv6 transport); ``tcp``
    switches to DNS over TCP. ``src_port`` fixes the client port (default: a random one from
    :data:`DIG_PORTS`). Raises :class:`LabError` when dig gets no answer within ``timeout``.
    """
    if family not in (4, 6):
        raise LabError(f"address family must be 4 or 6, not {family!r}")
    client, server = lab.pod(pod), lab.pod(server_pod)
    sport = random.choice(DIG_PORTS) if src_port is None else src_port
    src, dst = client.addr(family), server.addr(family)
    argv = [
        "ip", "netns", "exec", client.netns,
        _require("dig", "dnsutils"), f"-{family}", f"@{dst}", "-p", str(port),
        "-b", f"{src}#{sport}", "+tries=1", f"+time={max(1, round(timeout))}",
        "+tcp" if tcp else "+notcp", _check_name(name), qtype,
    ]  # fmt: skip
    proc = run(argv, timeout=timeout + 5.0, check=False)
    if proc.returncode != 0:
        detail = (proc.stdout + proc.stderr).strip().splitlines()
        raise LabError(
            f"dig {name} from {client.name} to {server.name} (IPv{family}, "
            f"{'TCP' if tcp else 'UDP'}) failed with exit code {proc.returncode}: "
            f"{detail[-1] if detail else 'no output'}"
        )
    opcode, status, ident, flags, answers, ms = parse_dig(proc.stdout)
    return DigResult(
        name=name,
        qtype=qtype,
        family=family,
        tcp=tcp,
        src=src,
        src_port=sport,
        dst=dst,
        dst_port=port,
        id=ident,
        opcode=opcode,
        status=status,
        flags=flags,
        answers=answers,
        query_time_ms=ms,
        output=proc.stdout,
    )
