"""The lab topology: network-namespace "pods" on one Linux bridge in the root namespace.

::

    root namespace                          nobs-lab-pod-a          nobs-lab-pod-b   ...
    nobs-br0 (bridge, no IP, no STP) ──┬── nobs-pod-a ═══ veth ═══ eth0 198.18.0.10/24
                                       │                               fd00:198:18::10/64
                                       ├── nobs-pod-b ═══ veth ═══ eth0 198.18.0.11 ...
                                       └── nobs-pod-c ═══ veth ═══ eth0 198.18.0.12 ...

The host ends (``nobs-<pod>``) play the part of a Kubernetes node's pod veths: that is where
the agent attaches its TC programs. Everything is built so that a test can predict counters
exactly: fixed MACs, permanent neighbour entries (no ARP or neighbour discovery), static
bridge forwarding entries (no flooding once learned entries would age out), IPv6 without
router solicitations or DAD, IPv6 switched off on the bridge and host ends, and ``up()`` waits
until the lab is quiet. Only ``198.18.0.0/24`` and ``fd00:198:18::/64`` are used, and the root
namespace gets no address and no route into the lab.

Only one lab exists at a time (the names are fixed). A lock file (:data:`LOCK_PATH`) serializes
labs between processes, for example two test runs on the same machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import string
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ..model.errors import LabError
from ._proc import NsProcess, ip, ip_json, require_root, require_tools, run, worker_argv

log = logging.getLogger(__name__)

#: Prefix of every lab network namespace (``nobs-lab-pod-a``); cleanup finds them by it.
LAB_PREFIX = "nobs-lab-"
#: Prefix of the host veth ends in the root namespace (``nobs-pod-a``).
HOST_IF_PREFIX = "nobs-"
#: The bridge joining all pods, in the root namespace.
BRIDGE_NAME = "nobs-br0"
#: Interface name inside each pod.
POD_IFNAME = "eth0"
#: Lock serializing labs between processes (holds the pid of the owner).
LOCK_PATH = "/run/netobserv-lab.lock"
#: Environment variable naming an inherited descriptor of a held lab lock (see lab_lock()).
LOCK_FD_ENV = "NETOBSERV_LAB_LOCK_FD"

V4_PREFIX = "198.18.0."
V4_PREFIXLEN = 24
V6_PREFIX = "fd00:198:18::"
V6_PREFIXLEN = 64
#: Pod ``i`` (0-based: pod-a is 0) gets host number ``FIRST_HOST + i``.
FIRST_HOST = 10
MAX_PODS = len(string.ascii_lowercase)
DEFAULT_PODS = 3

#: Inside each pod: no router solicitations, no RA, no DAD (link-local included), and the MLD
#: reports that joining solicited-node groups triggers are repeated within 10 ms instead of
#: 1-10 s, so that the lab is silent soon after it comes up.
_POD_SYSCTLS = {
    f"net.ipv6.conf.{scope}.{key}": value
    for scope in ("all", "default", POD_IFNAME)
    for key, value in (
        ("accept_ra", "0"),
        ("router_solicitations", "0"),
        ("accept_dad", "0"),
        ("dad_transmits", "0"),
        ("mldv1_unsolicited_report_interval", "10"),
        ("mldv2_unsolicited_report_interval", "10"),
    )
}

_QUIET_WINDOW = 0.3


def pod_name(index: int) -> str:
    """The name of pod ``index`` (0-based): ``pod-a``, ``pod-b``, ..."""
    return f"pod-{string.ascii_lowercase[index]}"


@dataclass(frozen=True)
class Pod:
    """One lab pod: a network namespace with ``eth0`` wired to the bridge.

    ``host_ifindex`` and ``ifindex`` are known once the lab is up (0 before).
    """

    name: str
    index: int
    netns: str
    host_ifname: str
    host_ifindex: int
    ifname: str
    ifindex: int
    v4: str
    v6: str
    mac: str

    @classmethod
    def planned(cls, index: int) -> Pod:
        """The pod the lab builds at position ``index`` (names, addresses, MAC)."""
        name = pod_name(index)
        host = FIRST_HOST + index
        return cls(
            name=name,
            index=index,
            netns=f"{LAB_PREFIX}{name}",
            host_ifname=f"{HOST_IF_PREFIX}{name}",
            host_ifindex=0,
            ifname=POD_IFNAME,
            ifindex=0,
            v4=f"{V4_PREFIX}{host}",
            v6=f"{V6_PREFIX}{host}",
            mac=f"02:00:c6:12:00:{host:02x}",
        )

    def addr(self, family: int = 4) -> str:
        """The pod's address in family 4 or 6."""
        if family not in (4, 6):
            raise LabError(f"address family must be 4 or 6, not {family!r}")
        return self.v6 if family == 6 else self.v4

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description of the pod."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class LabStatus:
    """What exists on the host right now.

    ``state`` is ``"up"`` (bridge plus complete pods, no problems), ``"absent"`` (nothing with
    the lab prefixes) or ``"partial"`` (leftovers or a broken lab: see ``problems``).
    """

    state: str
    bridge: str | None
    namespaces: tuple[str, ...]
    host_ifnames: tuple[str, ...]
    pods: tuple[Pod, ...]
    problems: tuple[str, ...] = field(default=())

    @property
    def exists(self) -> bool:
        """True if anything of a lab exists (complete or not)."""
        return self.state != "absent"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description of the status."""
        return {
            "state": self.state,
            "bridge": self.bridge,
            "namespaces": list(self.namespaces),
            "host_ifnames": list(self.host_ifnames),
            "pods": [pod.to_dict() for pod in self.pods],
            "problems": list(self.problems),
        }


# --- discovery ---------------------------------------------------------------------------------


def _lab_namespaces() -> list[str]:
    names = [str(entry.get("name", "")) for entry in ip_json("netns", "list")]
    return sorted(name for name in names if is_lab_netns(name))


def is_lab_netns(name: str) -> bool:
    """True for a namespace name the lab owns (``nobs-lab-*``)."""
    return name.startswith(LAB_PREFIX)


def is_lab_ifname(name: str) -> bool:
    """True for a root-namespace interface name the lab owns: the bridge or a host end.

    Other tools on the same host may use ``nobs-`` names of their own; the lab never matches
    anything but ``nobs-br0`` and ``nobs-pod-a`` ... ``nobs-pod-z``.
    """
    if name == BRIDGE_NAME:
        return True
    pod = name.removeprefix(HOST_IF_PREFIX)
    return (
        name.startswith(HOST_IF_PREFIX)
        and len(pod) == 5
        and pod.startswith("pod-")
        and pod[4] in string.ascii_lowercase
    )


def _lab_links() -> list[dict[str, Any]]:
    """Root-namespace veth and bridge links that the lab owns (see :func:`is_lab_ifname`)."""
    links = []
    for link in ip_json("-d", "link", "show"):
        name = str(link.get("ifname", ""))
        kind = link.get("linkinfo", {}).get("info_kind")
        if is_lab_ifname(name) and kind in ("veth", "bridge"):
            links.append(link)
    return links


def _pod_from_netns(netns: str, host_links: dict[str, dict[str, Any]]) -> tuple[Pod | None, str]:
    """Rebuild a :class:`Pod` from what exists; (None, reason) when it is incomplete."""
    name = netns.removeprefix(LAB_PREFIX)
    if not (name.startswith("pod-") and len(name) == 5 and name[4] in string.ascii_lowercase):
        return None, f"namespace {netns} does not follow the lab's naming (pod-a ... pod-z)"
    planned = Pod.planned(string.ascii_lowercase.index(name[4]))
    host = host_links.get(planned.host_ifname)
    if host is None:
        return None, f"namespace {netns} has no host interface {planned.host_ifname}"
    if host.get("master") != BRIDGE_NAME:
        return None, f"{planned.host_ifname} is not attached to {BRIDGE_NAME}"
    try:
        addrs = ip_json("addr", "show", "dev", POD_IFNAME, netns=netns)
    except LabError:
        return None, f"namespace {netns} has no {POD_IFNAME}"
    if not addrs:
        return None, f"namespace {netns} has no {POD_IFNAME}"
    info = addrs[0]
    locals_ = {str(a.get("local")) for a in info.get("addr_info", [])}
    missing = [a for a in (planned.v4, planned.v6) if a not in locals_]
    if missing:
        return None, f"{POD_IFNAME} in {netns} lacks {', '.join(missing)}"
    pod = dataclasses.replace(
        planned,
        host_ifindex=int(host.get("ifindex", 0)),
        ifindex=int(info.get("ifindex", 0)),
        mac=str(info.get("address", planned.mac)),
    )
    return pod, ""


def lab_status() -> LabStatus:
    """Inspect the host and report every lab namespace and interface that exists."""
    namespaces = _lab_namespaces()
    links = _lab_links()
    bridge = BRIDGE_NAME if any(link["ifname"] == BRIDGE_NAME for link in links) else None
    host_links = {str(link["ifname"]): link for link in links if link["ifname"] != BRIDGE_NAME}
    pods: list[Pod] = []
    problems: list[str] = []
    for netns in namespaces:
        pod, problem = _pod_from_netns(netns, host_links)
        if pod is None:
            problems.append(problem)
        else:
            pods.append(pod)
    owned = {pod.host_ifname for pod in pods}
    for name in sorted(set(host_links) - owned):
        problems.append(f"interface {name} belongs to no complete pod")
    if namespaces and bridge is None:
        problems.append(f"bridge {BRIDGE_NAME} is missing")
    if not namespaces and not links:
        state = "absent"
    elif bridge and pods and not problems:
        state = "up"
    else:
        state = "partial"
    return LabStatus(
        state=state,
        bridge=bridge,
        namespaces=tuple(namespaces),
        host_ifnames=tuple(sorted(host_links)),
        pods=tuple(pods),
        problems=tuple(problems),
    )


# --- removal -----------------------------------------------------------------------------------


def _kill_netns_processes(netns: str) -> None:
    """SIGKILL whatever still runs inside a lab namespace (it would keep the namespace alive)."""
    out = ip("netns", "pids", netns, check=False)
    for token in out.split():
        if token.isdigit():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(token), 9)


def _remove(namespaces: list[str], ifnames: list[str], timeout: float) -> list[str]:
    """Remove the given lab namespaces and root-namespace links; return what was removed."""
    removed: list[str] = []
    existing_ns = set(_lab_namespaces())
    existing_links = {str(link["ifname"]) for link in _lab_links()}
    for netns in namespaces:
        if netns in existing_ns:
            _kill_netns_processes(netns)
    # Deleting a veth end deletes its peer at once; deleting a namespace only schedules the
    # destruction of its interfaces, so the host ends go first and explicitly.
    for name in sorted(ifnames, key=lambda n: n == BRIDGE_NAME):
        if name in existing_links:
            ip("link", "del", "dev", name, check=False)
            removed.append(name)
    for netns in namespaces:
        if netns in existing_ns:
            ip("netns", "del", netns, check=False)
            removed.append(netns)
    deadline = time.monotonic() + timeout
    while True:
        left = sorted(set(namespaces) & set(_lab_namespaces())) + sorted(
            set(ifnames) & {str(link["ifname"]) for link in _lab_links()}
        )
        if not left:
            return removed
        if time.monotonic() >= deadline:
            raise LabError(
                f"could not remove {', '.join(left)} within {timeout:.0f}s: check "
                f"`ip netns pids <namespace>` for processes still inside, then run "
                f"`netobserv lab down` again"
            )
        time.sleep(0.05)


def cleanup_all(*, timeout: float = 15.0, lock_timeout: float = 30.0) -> list[str]:
    """Remove every lab namespace and lab interface, whoever created them.

    This is for leftovers of a crashed run and for ``netobserv lab down``. If a ``Lab`` of this
    process is up it is brought down first; if another process holds the lab lock, this waits
    up to ``lock_timeout`` seconds for it. Returns the names removed (empty if none).
    """
    require_root()
    require_tools()
    if _LabLock.held_here is not None:
        _LabLock.held_here.down()
    lock = _LabLock()
    lock.acquire(lock_timeout)
    try:
        status = lab_status()
        names = list(status.host_ifnames) + ([status.bridge] if status.bridge else [])
        removed = _remove(list(status.namespaces), names, timeout)
    finally:
        lock.release()
    if removed:
        log.info("Removed lab leftovers: %s.", ", ".join(removed))
    return removed


# --- lock --------------------------------------------------------------------------------------


class _ProcessLock:
    """The process-wide, re-entrant hold on the ``flock`` of :data:`LOCK_PATH`.

    Re-entrant so that code holding :func:`lab_lock` can build a lab or call
    :func:`cleanup_all` itself. A child process can share the hold: pass the descriptor
    (``pass_fds``) and its number in the environment variable :data:`LOCK_FD_ENV`.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.count = 0
        self.fd: int | None = None
        self._file: IO[str] | None = None
        self._mutex = threading.Lock()

    def holder(self) -> str:
        with contextlib.suppress(OSError):
            return Path(self.path).read_text().strip() or "unknown"
        return "unknown"

    def _inherited_fd(self) -> int | None:
        text = os.environ.get(LOCK_FD_ENV, "")
        if not text.isdigit():
            return None
        fd = int(text)
        try:
            mine, theirs = os.fstat(fd), os.stat(self.path)
            if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
                return None
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # instant if the parent holds it
        except OSError:
            return None
        return fd

    def acquire(self, timeout: float) -> None:
        with self._mutex:
            if self.count:
                self.count += 1
                return
            inherited = self._inherited_fd()
            if inherited is not None:
                self.fd, self.count = inherited, 1
                return
            handle = open(self.path, "a+")  # noqa: SIM115 (kept open while the lock is held)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        handle.close()
                        raise LabError(
                            f"another process (pid {self.holder()}) is using the lab (lock "
                            f"{self.path}); wait for it to finish, or stop it and run "
                            "`netobserv lab down`"
                        ) from None
                    time.sleep(0.1)
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            self._file, self.fd, self.count = handle, handle.fileno(), 1

    def release(self) -> None:
        with self._mutex:
            if not self.count:
                return
            self.count -= 1
            if self.count:
                return
            if self._file is not None:  # an inherited descriptor stays the parent's business
                with contextlib.suppress(OSError):
                    self._file.truncate(0)
                self._file.close()  # closing the only descriptor releases the flock
            self._file, self.fd = None, None


_PROCESS_LOCK = _ProcessLock(LOCK_PATH)


class _LabLock:
    """One user's hold on the process-wide lab lock (idempotent release)."""

    #: The Lab of this process that is up, if any (only one at a time).
    held_here: Lab | None = None

    def __init__(self) -> None:
        self._held = False

    def acquire(self, timeout: float) -> None:
        """Take the lock, waiting up to ``timeout`` seconds for another process to let go."""
        if not self._held:
            _PROCESS_LOCK.acquire(timeout)
            self._held = True

    def release(self) -> None:
        """Let go of this hold (idempotent)."""
        if self._held:
            self._held = False
            _PROCESS_LOCK.release()


@contextlib.contextmanager
def lab_lock(timeout: float = 30.0) -> Iterator[int]:
    """Hold the lab lock for a block: no other process builds or removes a lab meanwhile.

    Yields the lock's file descriptor. To let a child process (for example the CLI under test)
    build or remove the lab inside the block, give it the descriptor and its number::

        with lab_lock() as fd:
            env = {**os.environ, LOCK_FD_ENV: str(fd)}
            subprocess.run([...], env=env, pass_fds=(fd,))

    Raises :class:`LabError` if the lock is not free within ``timeout`` seconds.
    """
    lock = _LabLock()
    lock.acquire(timeout)
    try:
        assert _PROCESS_LOCK.fd is not None
        yield _PROCESS_LOCK.fd
    finally:
        lock.release()


# --- the lab -----------------------------------------------------------------------------------


class Lab:
    """A set of network-namespace pods on one bridge; build with :meth:`up`, remove with
    :meth:`down` (or use it as a context manager)::

        with Lab(pods=3) as lab:
            a, b = lab.pod("pod-a"), lab.pod("pod-b")
            ...

    ``timeout`` bounds each wait in ``up()``/``down()``; ``lock_timeout`` is how long ``up()``
    waits for a lab of another process to be brought down.
    """

    def __init__(
        self,
        pods: int = DEFAULT_PODS,
        *,
        timeout: float = 15.0,
        lock_timeout: float = 120.0,
    ) -> None:
        if not isinstance(pods, int) or not 1 <= pods <= MAX_PODS:
            raise LabError(f"a lab has 1 to {MAX_PODS} pods, not {pods!r}")
        self.size = pods
        self.timeout = timeout
        self.lock_timeout = lock_timeout
        self._planned = tuple(Pod.planned(i) for i in range(pods))
        self._pods: tuple[Pod, ...] = ()
        self._lock = _LabLock()
        self._owned = True
        self._up = False
        # What this object created (or adopted), and so what down() removes: never more.
        self._created_netns: list[str] = []
        self._created_links: list[str] = []

    # -- accessors ------------------------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        """True between a successful :meth:`up` (or :meth:`attach`) and :meth:`down`."""
        return self._up

    @property
    def pods(self) -> tuple[Pod, ...]:
        """The pods, with interface indexes (empty until the lab is up)."""
        return self._pods

    @property
    def bridge(self) -> str:
        """The bridge name in the root namespace."""
        return BRIDGE_NAME

    def pod(self, which: str | int | Pod) -> Pod:
        """A pod by name (``"pod-b"`` or ``"b"``), 0-based index, or a :class:`Pod`."""
        if not self._up:
            raise LabError("the lab is not up: call up() (or use `with Lab() as lab:`) first")
        if isinstance(which, Pod):
            which = which.name
        if isinstance(which, int):
            if 0 <= which < len(self._pods):
                return self._pods[which]
        else:
            wanted = which if which.startswith("pod-") else f"pod-{which}"
            for pod in self._pods:
                if pod.name == wanted:
                    return pod
        names = ", ".join(pod.name for pod in self._pods)
        raise LabError(f"no pod {which!r} in this lab; it has {names}")

    # -- life cycle -----------------------------------------------------------------------------

    @classmethod
    def attach(cls) -> Lab:
        """Adopt a complete lab that already exists (for example from ``netobserv lab up``).

        The returned object is not the owner: leaving a ``with`` block does not remove the
        lab, but an explicit :meth:`down` does.
        """
        require_root()
        require_tools()
        status = lab_status()
        if status.state != "up":
            detail = "; ".join(status.problems) or "no lab exists"
            raise LabError(f"no complete lab to attach to ({detail}): run `netobserv lab up`")
        lab = cls(len(status.pods))
        lab._pods = status.pods
        lab._planned = status.pods
        lab._owned = False
        lab._created_links = [BRIDGE_NAME, *(pod.host_ifname for pod in status.pods)]
        lab._created_netns = [pod.netns for pod in status.pods]
        lab._up = True
        return lab

    def up(self) -> Lab:
        """Build the lab and wait until it is usable and quiet; return ``self``.

        Raises :class:`LabError` (after removing whatever it had built) if the lab cannot be
        built, for example because a lab already exists.
        """
        if self._up:
            return self
        require_root()
        require_tools()
        if _LabLock.held_here is not None:
            raise LabError(
                "this process already has a lab up: call down() on it before building another"
            )
        self._lock.acquire(self.lock_timeout)
        try:
            started = time.monotonic()
            existing = lab_status()
            if existing.exists:
                names = existing.namespaces + existing.host_ifnames
                raise LabError(
                    f"a lab already exists ({', '.join(names) or BRIDGE_NAME}): remove it with "
                    "`netobserv lab down` (or `python -m netobserv_tui.lab down`) and try again"
                )
            self._build()
            self._wait_ready()
            if not self.wait_quiet(timeout=self.timeout):
                log.warning(
                    "The lab still sees background packets after %.0fs; per-interface "
                    "counters may include packets the tests did not send.",
                    self.timeout,
                )
        except BaseException:
            self._teardown()
            self._lock.release()
            raise
        self._up = True
        _LabLock.held_here = self
        log.info(
            "Lab up with %d pods in %.2fs: %s.",
            self.size,
            time.monotonic() - started,
            ", ".join(f"{p.name} {p.v4} {p.v6}" for p in self._pods),
        )
        return self

    def down(self) -> None:
        """Remove everything this lab built (namespaces, veths, bridge). Idempotent."""
        try:
            self._teardown(raise_errors=True)
        finally:
            self._up = False
            self._pods = ()
            if _LabLock.held_here is self:
                _LabLock.held_here = None
            self._lock.release()

    def release(self) -> None:
        """Let the lab outlive this object: keep it built, but drop the lock and ownership.

        ``netobserv lab up`` uses this; remove the lab later with :func:`cleanup_all`.
        """
        if _LabLock.held_here is self:
            _LabLock.held_here = None
        self._lock.release()
        self._owned = False

    def status(self) -> LabStatus:
        """What exists on the host now (see :func:`lab_status`)."""
        return lab_status()

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._owned:
            self.down()

    def __repr__(self) -> str:
        state = "up" if self._up else "down"
        return f"<Lab {self.size} pods {state}>"

    # -- counters and quiet ---------------------------------------------------------------------

    def host_counters(self) -> dict[str, tuple[int, int]]:
        """``{host_ifname: (rx_packets, tx_packets)}`` for every pod's host end."""
        result = {}
        for pod in self._pods or self._planned:
            base = Path("/sys/class/net") / pod.host_ifname / "statistics"
            try:
                rx = int((base / "rx_packets").read_text())
                tx = int((base / "tx_packets").read_text())
            except OSError:
                continue
            result[pod.host_ifname] = (rx, tx)
        return result

    def wait_quiet(self, window: float = _QUIET_WINDOW, timeout: float = 5.0) -> bool:
        """Wait until no host end sends or receives a packet for ``window`` seconds.

        Returns False if the lab was never quiet that long within ``timeout`` seconds. Use it
        before measuring interface counters; ``up()`` already calls it.
        """
        deadline = time.monotonic() + timeout
        last = self.host_counters()
        since = time.monotonic()
        while True:
            time.sleep(0.05)
            now = time.monotonic()
            current = self.host_counters()
            if current != last:
                last, since = current, now
            elif now - since >= window:
                return True
            if now >= deadline:
                return False

    # -- building -------------------------------------------------------------------------------

    def _build(self) -> None:
        ip(
            "link", "add", "name", BRIDGE_NAME, "type", "bridge",
            "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0",
        )  # fmt: skip
        self._created_links.append(BRIDGE_NAME)
        _disable_ipv6(BRIDGE_NAME)
        ip("link", "set", "dev", BRIDGE_NAME, "up")
        for pod in self._planned:
            ip("netns", "add", pod.netns)
            self._created_netns.append(pod.netns)
            ip(
                "link", "add", "name", pod.host_ifname, "type", "veth",
                "peer", "name", POD_IFNAME, "address", pod.mac, "netns", pod.netns,
            )  # fmt: skip
            self._created_links.append(pod.host_ifname)
            _disable_ipv6(pod.host_ifname)
            ip("link", "set", "dev", pod.host_ifname, "master", BRIDGE_NAME, "up")
            settings = [f"{key}={value}" for key, value in _POD_SYSCTLS.items()]
            run(["ip", "netns", "exec", pod.netns, "sysctl", "-q", "-w", *settings])
            lines = [
                f"addr add {pod.v4}/{V4_PREFIXLEN} dev {POD_IFNAME}",
                f"addr add {pod.v6}/{V6_PREFIXLEN} dev {POD_IFNAME} nodad",
                "link set dev lo up",
                f"link set dev {POD_IFNAME} up",
            ]
            for other in self._planned:
                if other is not pod:
                    for addr in (other.v4, other.v6):
                        lines.append(
                            f"neigh replace {addr} lladdr {other.mac} dev {POD_IFNAME} "
                            "nud permanent"
                        )
            ip("-batch", "-", netns=pod.netns, input_text="\n".join(lines) + "\n")
        fdb = [f"fdb replace {p.mac} dev {p.host_ifname} master static" for p in self._planned]
        run(["bridge", "-batch", "-"], input_text="\n".join(fdb) + "\n")
        pods = []
        for pod in self._planned:
            host = ip_json("link", "show", "dev", pod.host_ifname)[0]
            inner = ip_json("link", "show", "dev", POD_IFNAME, netns=pod.netns)[0]
            pods.append(
                dataclasses.replace(
                    pod, host_ifindex=int(host["ifindex"]), ifindex=int(inner["ifindex"])
                )
            )
        self._pods = tuple(pods)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout
        for pod in self._pods:
            _wait_for(
                lambda pod=pod: _port_forwarding(pod.host_ifname),
                deadline,
                f"{pod.host_ifname} did not reach the forwarding state on {BRIDGE_NAME}",
            )
            _wait_for(
                lambda pod=pod: _addresses_usable(pod),
                deadline,
                f"{POD_IFNAME} in {pod.netns} did not come up with usable addresses "
                "(still tentative or down)",
            )
        if len(self._pods) < 2:
            return
        # Each pod pings the next one (a ring covers every port), both families, in parallel.
        procs: list[tuple[str, NsProcess]] = []
        try:
            for i, pod in enumerate(self._pods):
                peer = self._pods[(i + 1) % len(self._pods)]
                for family in (4, 6):
                    what = f"{pod.name} -> {peer.name} ({peer.addr(family)})"
                    argv = worker_argv(
                        "ping", family=family, dst=peer.addr(family), count=1,
                        interval=0.1, reply_timeout=0.1, size=56, until_reply=True,
                        deadline=max(0.5, deadline - time.monotonic()),
                    )  # fmt: skip
                    procs.append((what, NsProcess(pod.netns, argv, label=f"ping {what}")))
            failed = []
            for what, proc in procs:
                result = proc.expect("done", timeout=max(1.0, deadline - time.monotonic() + 1))
                if not result["received"]:
                    failed.append(what)
            if failed:
                raise LabError(
                    f"pods cannot reach each other ({'; '.join(failed)}). If the host loads "
                    "br_netfilter with net.bridge.bridge-nf-call-iptables=1, bridged lab "
                    "traffic passes the root namespace's FORWARD chain: check that it accepts "
                    "198.18.0.0/24 and fd00:198:18::/64"
                )
        finally:
            for _, proc in procs:
                proc.stop()

    def _teardown(self, raise_errors: bool = False) -> None:
        """Remove what this object created (an existing lab it refused to replace is kept)."""
        namespaces, ifnames = self._created_netns, self._created_links
        if not namespaces and not ifnames:
            return
        try:
            _remove(list(namespaces), list(ifnames), self.timeout)
            self._created_netns, self._created_links = [], []
        except LabError:
            if raise_errors:
                raise
            log.exception("Could not fully remove the lab; run `netobserv lab down`.")


def _disable_ipv6(ifname: str) -> None:
    """Switch IPv6 off on a root-namespace lab interface so it sends nothing of its own."""
    path = Path("/proc/sys/net/ipv6/conf") / ifname / "disable_ipv6"
    if path.exists():
        path.write_text("1\n")


def _port_forwarding(ifname: str) -> bool:
    base = Path("/sys/class/net") / ifname
    try:
        state = (base / "brport" / "state").read_text().strip()
        oper = (base / "operstate").read_text().strip()
    except OSError:
        return False
    return state == "3" and oper == "up"  # BR_STATE_FORWARDING


def _addresses_usable(pod: Pod) -> bool:
    info = ip_json("addr", "show", "dev", POD_IFNAME, netns=pod.netns)
    if not info or info[0].get("operstate") != "UP":
        return False
    addrs = info[0].get("addr_info", [])
    if any(a.get("tentative") or a.get("dadfailed") for a in addrs):
        return False
    return {pod.v4, pod.v6} <= {a.get("local") for a in addrs}


def _wait_for(check: Any, deadline: float, message: str) -> None:
    while not check():
        if time.monotonic() >= deadline:
            raise LabError(f"{message}; run `netobserv lab down` and try again")
        time.sleep(0.02)


def iter_lab_pids() -> Iterator[tuple[str, int]]:
    """(namespace, pid) of every process still running inside a lab namespace."""
    for netns in _lab_namespaces():
        for token in ip("netns", "pids", netns, check=False).split():
            if token.isdigit():
                yield netns, int(token)


__all__ = [
    "BRIDGE_NAME",
    "HOST_IF_PREFIX",
    "LAB_PREFIX",
    "LOCK_FD_ENV",
    "LOCK_PATH",
    "POD_IFNAME",
    "Lab",
    "LabStatus",
    "Pod",
    "cleanup_all",
    "is_lab_ifname",
    "is_lab_netns",
    "iter_lab_pids",
    "lab_lock",
    "lab_status",
    "pod_name",
]
