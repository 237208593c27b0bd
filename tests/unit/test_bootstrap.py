"""scripts/lib/apt.sh, which scripts/bootstrap and scripts/build-image install with: it
waits for another apt or dpkg instead of failing with "Could not get lock"."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCK = Path("/var/lib/dpkg/lock-frontend")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("apt-get") is None or not LOCK.parent.is_dir(),
    reason="needs root on a Debian/Ubuntu machine (apt's locks)")


def apt_get(*args: str, wait: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", '. scripts/lib/apt.sh; apt_get "$@"', "apt_get", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "APT_LOCK_WAIT": str(wait)})


@pytest.fixture
def hold_dpkg_lock() -> Iterator[Callable[[float], None]]:
    """Take dpkg's frontend lock as another apt would (a POSIX record lock) and let go of it
    after the given seconds, or when the test ends."""
    fds: list[int] = []
    timers: list[threading.Timer] = []

    def release(fd: int) -> None:
        if fd in fds:
            fds.remove(fd)
            os.close(fd)

    def hold(seconds: float) -> None:
        fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o640)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fds.append(fd)
        timers.append(threading.Timer(seconds, release, (fd,)))
        timers[-1].start()

    yield hold
    for timer in timers:
        timer.cancel()
    for fd in list(fds):
        release(fd)


def test_it_waits_for_another_apt_then_installs(
    hold_dpkg_lock: Callable[[float], None]
) -> None:
    """The lock is held for 8 s, longer than apt's own wait (DPkg::Lock::Timeout=5): the
    first attempt fails, the helper says once that it waits, and the install then works
    (sqlite3, which bootstrap installs, is there already: nothing changes)."""
    hold_dpkg_lock(8)
    started = time.monotonic()
    done = apt_get("install", "-y", "-qq", "--no-install-recommends", "sqlite3")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("another apt or dpkg is running; waiting") == 1, done.stderr
    assert time.monotonic() - started >= 8


def test_it_gives_up_after_its_wait_with_apts_own_words(
    hold_dpkg_lock: Callable[[float], None]
) -> None:
    hold_dpkg_lock(30)
    done = apt_get("install", "-y", "-qq", "sqlite3", wait=1)
    assert done.returncode != 0
    assert "Unable to acquire the dpkg frontend lock" in done.stderr, done.stderr


def test_other_failures_are_not_waited_for() -> None:
    started = time.monotonic()
    done = apt_get("install", "-y", "-qq", "no-such-package-netobserv")
    assert done.returncode != 0 and "waiting" not in done.stderr
    assert "Unable to locate package no-such-package-netobserv" in done.stderr
    assert time.monotonic() - started < 30
