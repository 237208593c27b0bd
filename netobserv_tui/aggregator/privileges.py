"""The local aggregator gives up root once its socket and files are open.

A local capture starts as root (the agent needs it for eBPF), but the aggregator only
parses what agents send and appends to files: the part of the tool exposed to the network
should not hold root's power over the host.  ``--user UID:GID`` makes it open everything
as root (the listening socket, the JSON, SQLite with its ``-wal`` and ``-shm`` files, the
pcapng file), then switch to that user for good with no supplementary group.  Writes go
through the descriptors opened before the switch, so the output folder need not be
reachable by that user (a capture under ``/root`` works); the one path operation left,
SQLite deleting its ``-wal`` file when the database leaves WAL mode, is done by the
controller (root) once the aggregator has exited (see ``FlowWriter(keep_wal=True)``).

The controller picks the user: the one behind ``sudo``, else a uid that no account uses.
"""

from __future__ import annotations

import ctypes
import logging
import os

from ..model.errors import UsageError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_PR_GET_PDEATHSIG = 2


def parse_user(text: str) -> tuple[int, int]:
    """``"UID:GID"`` (numbers, not root) as ``(uid, gid)``; UsageError otherwise."""
    uid_text, sep, gid_text = text.partition(":")
    try:
        uid, gid = int(uid_text), int(gid_text if sep else uid_text)
    except ValueError:
        raise UsageError(f"--user {text!r}: expected UID:GID, two numbers "
                         "(e.g. 1000:1000)") from None
    if uid <= 0 or gid <= 0:
        raise UsageError(f"--user {text!r}: the point is not to run as root; give another "
                         "user's UID:GID")
    return uid, gid


def become(uid: int, gid: int) -> None:
    """Switch this process to ``uid``/``gid`` (real, effective and saved, no supplementary
    groups), for good.  Raises PermissionError if it cannot, or if root could be regained.

    A change of credentials clears the parent-death signal that the controller set
    (``procs._die_with_parent``): it is set again, so that the aggregator still stops when
    the controller dies.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    death = ctypes.c_int(0)
    libc.prctl(_PR_GET_PDEATHSIG, ctypes.byref(death), 0, 0, 0)
    parent = os.getppid()
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:  # pragma: no cover - the kernel refuses this to a process that dropped root
        raise PermissionError("could still become root after giving up root")
    if death.value:
        libc.prctl(_PR_SET_PDEATHSIG, death.value, 0, 0, 0)
        if os.getppid() != parent:  # the parent died during the switch
            os.kill(os.getpid(), death.value)
    log.info("Running as uid %d, gid %d from now on (the files are open).", uid, gid)
