"""Who may read a capture's files: their owner only, and the owner is the person who ran it.

Flows, DNS names and packets are private data. A local capture runs as root, so without
care its files would be root's and, with the default umask, readable by every local user.
Here:

* :func:`private_files` sets the umask to 077 for the capture: every directory this process
  and its children (agent, aggregator) create is 0700 and every file 0600; the folders that
  are ours by name (``flow``, ``pcap``, ``netobserv.log``) are set so even when an older
  version made them.
* :func:`invoking_user` is the user behind ``sudo`` (``SUDO_UID``/``SUDO_GID``) when root
  runs the command through it; :func:`hand_over` gives that user the capture's files and
  the folders this capture created, so ``sqlite3 output/flow/...`` works without sudo.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

#: Sub-folders and files of the output directory that belong to this tool by name.
OURS = ("flow", "pcap", "netobserv.log")


def invoking_user() -> tuple[int, int] | None:
    """``(uid, gid)`` of the user who ran ``sudo netobserv ...``, or None (not root, not
    through sudo, or sudo from root itself)."""
    if os.geteuid() != 0:
        return None
    try:
        uid = int(os.environ.get("SUDO_UID", ""))
    except ValueError:
        return None
    if uid <= 0:
        return None
    try:
        gid = int(os.environ.get("SUDO_GID", ""))
    except ValueError:
        gid = uid
    return uid, gid


@contextlib.contextmanager
def private_files(output: Path) -> Iterator[list[Path]]:
    """Umask 077 while the block runs; yields the folders it created for ``output`` (for
    :func:`hand_over`). Our own sub-folders of ``output`` are made 0700 if they exist."""
    created = [p for p in (output, *output.parents) if not p.exists()]
    previous = os.umask(0o077)
    try:
        output.mkdir(parents=True, exist_ok=True)
        for name in OURS:
            with contextlib.suppress(FileNotFoundError):
                path = output / name
                path.chmod(0o700 if path.is_dir() else 0o600)
        yield created
    finally:
        os.umask(previous)


def hand_over(paths: Iterable[Path | str], user: tuple[int, int] | None) -> None:
    """Give ``paths`` (files and folders; a database's ``-wal``/``-shm`` too) to ``user``;
    nothing when ``user`` is None. A path that is gone is skipped; a failure is logged, not
    raised: the files are complete either way, and root can still give them away."""
    if user is None:
        return
    uid, gid = user
    for item in paths:
        path = Path(item)
        for each in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            try:
                os.chown(each, uid, gid, follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("Could not give %s to uid %d: %s.", each, uid, exc)


#: Where :func:`unassigned_user` looks: the range systemd leaves for dynamic users.
UNASSIGNED_RANGE = range(61184, 65520)


def unassigned_user() -> tuple[int, int]:
    """A ``(uid, gid)`` pair that no account or group of this host uses: what the local
    aggregator runs as when no ``sudo`` user is known, so that it owns nothing and can
    read nothing of anyone's."""
    for number in UNASSIGNED_RANGE:
        try:
            pwd.getpwuid(number)
        except KeyError:
            try:
                grp.getgrgid(number)
            except KeyError:
                return number, number
    raise OSError("every uid from 61184 to 65519 has an account; cannot pick one for the "
                  "aggregator")


def aggregator_user() -> tuple[int, int]:
    """Who the local aggregator runs as once its files are open: the ``sudo`` user, else
    an unassigned uid (see :mod:`netobserv_tui.aggregator.privileges`)."""
    return invoking_user() or unassigned_user()
