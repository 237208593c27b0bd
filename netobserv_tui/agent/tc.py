"""Attaching the flow programs to TC clsact hooks, and always taking them off again.

We add a clsact qdisc only where none exists and remove only the qdiscs we added, once no
other filter hangs on them. Our filters are recognisable by name (``nobs_tc_*``) and
priority. Every attachment is written to a state file in ``/run/netobserv-tui`` before it
is made, so that ``netobserv cleanup`` (or the next agent start) can undo the work of an
agent that was killed with SIGKILL.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger(__name__)

STATE_DIR = Path(os.environ.get("NETOBSERV_STATE_DIR", "/run/netobserv-tui"))
FILTER_PREFIX = "nobs_tc_"
#: Our filters' priority; other tools usually take 1 or let the kernel pick 49152.
PRIORITY = 0xC0DE & 0x7FFF
PARENT_INGRESS = 0xFFFFFFF2
PARENT_EGRESS = 0xFFFFFFF3
HOOKS = ((PARENT_INGRESS, "nobs_tc_ingress"), (PARENT_EGRESS, "nobs_tc_egress"))

_GONE = (errno.ENODEV, errno.ENOENT, errno.EINVAL)


def _pid_namespace() -> int:
    """Inode of this process's PID namespace (0 if unknown)."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _start_time(pid: int) -> int:
    """Start time of ``pid`` in clock ticks after boot (field 22 of /proc/PID/stat); 0 if
    the process is gone.  With the PID it identifies a process: PIDs are reused, and in a
    container every agent is PID 1."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return 0
    # The command name (field 2) may hold spaces and parentheses: count after the last ")".
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])


@dataclass
class AttachState:
    """What this agent attached, persisted as JSON so a later run can undo it.

    An agent is identified by its PID namespace, PID and start time, not its PID alone:
    an agent pod's process is PID 1 in every pod, and on a node the state directory is a
    hostPath shared by successive pods.
    """

    pid: int
    attached: dict[int, str] = field(default_factory=dict)
    created_qdisc: set[int] = field(default_factory=set)
    pidns: int = 0
    started: int = 0

    @classmethod
    def for_this_process(cls) -> AttachState:
        pid = os.getpid()
        return cls(pid=pid, pidns=_pid_namespace(), started=_start_time(pid))

    @property
    def path(self) -> Path:
        if self.pidns or self.started:
            return STATE_DIR / f"agent-{self.pidns}-{self.pid}-{self.started}.json"
        return STATE_DIR / f"agent-{self.pid}.json"

    def is_alive(self) -> bool:
        """Is the agent that wrote this still running?  An agent of another PID namespace
        (another pod) counts as gone: one capture runs per node at a time."""
        if not self.pidns and not self.started:  # a state file of an older version
            return _pid_alive(self.pid)
        if self.pidns != _pid_namespace():
            return False
        return _pid_alive(self.pid) and _start_time(self.pid) == self.started

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "pid": self.pid,
                    "pidns": self.pidns,
                    "started": self.started,
                    "attached": {str(k): v for k, v in self.attached.items()},
                    "created_qdisc": sorted(self.created_qdisc),
                }
            )
        )
        os.replace(tmp, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path) -> AttachState:
        data = json.loads(path.read_text())
        return cls(
            pid=int(data["pid"]),
            pidns=int(data.get("pidns", 0)),
            started=int(data.get("started", 0)),
            attached={int(k): str(v) for k, v in data.get("attached", {}).items()},
            created_qdisc={int(i) for i in data.get("created_qdisc", [])},
        )


def _filter_name(msg: Any) -> str | None:
    options = msg.get_attr("TCA_OPTIONS")
    if options is None:
        return None
    name = options.get_attr("TCA_BPF_NAME")
    return str(name) if name is not None else None


def our_filters(ipr: IPRoute, ifindex: int) -> list[tuple[int, int]]:
    """(parent, priority) of every filter of ours on the interface."""
    found = []
    for parent, _name in HOOKS:
        try:
            msgs = ipr.get_filters(index=ifindex, parent=parent)
        except NetlinkError as exc:
            if exc.code in _GONE:
                continue
            raise
        for msg in msgs:
            name = _filter_name(msg)
            if name and name.startswith(FILTER_PREFIX):
                found.append((parent, (msg["info"] >> 16) & 0xFFFF))
    return sorted(set(found))


def _has_clsact(ipr: IPRoute, ifindex: int) -> bool:
    return any(q.get_attr("TCA_KIND") == "clsact" for q in ipr.get_qdiscs(index=ifindex))


def _filters_left(ipr: IPRoute, ifindex: int) -> int:
    total = 0
    for parent, _name in HOOKS:
        try:
            msgs = ipr.get_filters(index=ifindex, parent=parent)
            total += sum(1 for m in msgs if _filter_name(m))
        except NetlinkError as exc:
            if exc.code not in _GONE:
                raise
    return total


def _delete_filters(ipr: IPRoute, ifindex: int) -> int:
    removed = 0
    for parent, prio in our_filters(ipr, ifindex):
        try:
            ipr.tc("del-filter", "bpf", ifindex, parent=parent, prio=prio)
            removed += 1
        except NetlinkError as exc:
            if exc.code not in _GONE:
                raise
    return removed


def _delete_qdisc_if_empty(ipr: IPRoute, ifindex: int) -> bool:
    try:
        if not _has_clsact(ipr, ifindex) or _filters_left(ipr, ifindex):
            return False
        ipr.tc("del", "clsact", ifindex)
        return True
    except NetlinkError as exc:
        if exc.code in _GONE:
            return False
        raise


class TcAttacher:
    """Attaches ``fds`` (ingress fd, egress fd) to interfaces; ``close`` undoes everything.

    ``l3_fds`` are the programs for devices without a link-layer header (``attach(...,
    l3=True)``); without them such a device gets the Ethernet programs."""

    def __init__(self, ingress_fd: int, egress_fd: int,
                 l3_fds: tuple[int, int] | None = None) -> None:
        self.fds = {PARENT_INGRESS: ingress_fd, PARENT_EGRESS: egress_fd}
        self.l3_fds = ({PARENT_INGRESS: l3_fds[0], PARENT_EGRESS: l3_fds[1]}
                       if l3_fds is not None else self.fds)
        self.ipr = IPRoute()
        self.state = AttachState.for_this_process()

    @property
    def attached(self) -> dict[int, str]:
        return dict(self.state.attached)

    def attach(self, ifindex: int, ifname: str, l3: bool = False) -> bool:
        """Attach to one interface (``l3``: it has no link-layer header); False when it
        vanished meanwhile."""
        fds = self.l3_fds if l3 else self.fds
        if ifindex in self.state.attached:
            return True
        self.state.attached[ifindex] = ifname
        try:
            if not _has_clsact(self.ipr, ifindex):
                self.state.created_qdisc.add(ifindex)
                self.state.save()
                self.ipr.tc("add", "clsact", ifindex)
            else:
                self.state.save()
            for parent, name in HOOKS:
                self.ipr.tc(
                    "add-filter",
                    "bpf",
                    ifindex,
                    ":1",
                    fd=fds[parent],
                    name=f"{name}_l3" if l3 and fds is not self.fds else name,
                    parent=parent,
                    prio=PRIORITY,
                    classid=1,
                    direct_action=True,
                )
        except NetlinkError as exc:
            self._undo(ifindex)
            if exc.code in _GONE:
                log.debug("Interface %s (%d) vanished before attaching.", ifname, ifindex)
                return False
            raise
        log.info("Attached to interface %s (index %d%s).", ifname, ifindex,
                 ", no link-layer header" if l3 else "")
        return True

    def forget(self, ifindex: int) -> None:
        """The interface was deleted: the kernel took our filters with it."""
        if self.state.attached.pop(ifindex, None) is not None:
            self.state.created_qdisc.discard(ifindex)
            self.state.save()

    def _undo(self, ifindex: int) -> None:
        try:
            _delete_filters(self.ipr, ifindex)
            if ifindex in self.state.created_qdisc:
                _delete_qdisc_if_empty(self.ipr, ifindex)
        finally:
            self.state.attached.pop(ifindex, None)
            self.state.created_qdisc.discard(ifindex)
            self.state.save()

    def detach(self, ifindex: int) -> None:
        self._undo(ifindex)

    def close(self) -> None:
        errors = []
        for ifindex in list(self.state.attached):
            try:
                self._undo(ifindex)
            except NetlinkError as exc:
                errors.append(f"index {ifindex}: {exc}")
        if errors:
            log.error("Could not detach from every interface: %s.", "; ".join(errors))
        else:
            self.state.remove()
        self.ipr.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_leftovers(exclude_pids: Iterable[int] = ()) -> list[str]:
    """Undo what agents that are no longer running left behind; returns what was removed.

    Filters of ours on interfaces owned by a live agent are kept. Qdiscs are removed only
    when a dead agent's state file says it created them and nothing else hangs on them.
    """
    live_ifindexes: set[int] = set()
    dead: list[AttachState] = []
    me = AttachState.for_this_process()
    skip = set(exclude_pids)
    if STATE_DIR.is_dir():
        for path in STATE_DIR.glob("agent-*.json"):
            try:
                state = AttachState.load(path)
            except (OSError, ValueError, KeyError):
                log.warning("Ignoring unreadable state file %s.", path)
                continue
            mine = state.path == me.path
            if not mine and (state.pid not in skip or state.pidns != me.pidns) \
                    and not state.is_alive():
                dead.append(state)
            else:
                live_ifindexes.update(state.attached)
    removed: list[str] = []
    with IPRoute() as ipr:
        for link in ipr.get_links():
            ifindex = link["index"]
            if ifindex in live_ifindexes:
                continue
            name = link.get_attr("IFLA_IFNAME")
            count = _delete_filters(ipr, ifindex)
            if count:
                removed.append(f"{count} filter(s) on {name}")
        for state in dead:
            for ifindex in state.created_qdisc:
                if ifindex not in live_ifindexes and _delete_qdisc_if_empty(ipr, ifindex):
                    removed.append(f"clsact qdisc on {state.attached.get(ifindex, ifindex)}")
            state.remove()
    for item in removed:
        log.info("Removed leftover %s.", item)
    return removed
