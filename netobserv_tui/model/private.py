"""Folders and files only their owner can read: what every capture file is.

Flows, DNS names and packets are private data. These helpers set the modes explicitly
(0700 folders, 0600 files), so they hold whatever the process umask is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO


def make_private_dirs(directory: Path) -> None:
    """``mkdir -p`` giving mode 0700 to every folder it creates (``Path.mkdir(parents=True)``
    gives the parents the default mode). A folder that exists keeps its mode."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)  # mkdir's mode is masked by the umask: 0700 stays 0700 or less


def create_private(path: Path) -> BinaryIO:
    """Create ``path`` (which must not exist) with mode 0600 and open it for writing."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "wb")
