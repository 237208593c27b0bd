"""Real daemons for the image delivery tests: a registry and a containerd, private to a test.

Both come from Debian packages, unpacked (``apt-get download`` and ``dpkg-deb -x``) into a
cache rather than installed: installing them would enable system services (containerd on
its standard socket, a registry on port 5000) on the developer's machine. Each runs with
its own state in a temporary directory, listens only on 127.0.0.1 or a private socket,
and is stopped and removed by its context manager.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Where unpacked packages are kept between runs.
TOOLS = Path(os.environ.get("NETOBSERV_CACHE", "/var/cache/netobserv-tui")) / "test-tools"


def tool_dir(package: str, binary: str) -> Path:
    """The directory holding ``binary``: the installed one, else the package unpacked."""
    found = shutil.which(binary)
    if found:
        return Path(found).parent
    dest = TOOLS / package
    bindir = dest / "usr" / "bin"
    if not (bindir / binary).exists():
        work = Path(tempfile.mkdtemp(prefix=f"nobs-{package}-"))
        try:
            done = subprocess.run(["apt-get", "download", package], cwd=work,
                                  capture_output=True, text=True, timeout=300)
            if done.returncode != 0:  # package lists missing or stale: refresh them once
                subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
                done = subprocess.run(["apt-get", "download", package], cwd=work,
                                      capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                pytest.fail(f"apt-get download {package} failed: {done.stderr.strip()}")
            (deb,) = work.glob("*.deb")
            tmp = Path(str(dest) + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.parent.mkdir(parents=True, exist_ok=True)  # a fresh machine has no cache yet
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
            shutil.rmtree(dest, ignore_errors=True)
            tmp.replace(dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    assert (bindir / binary).exists(), f"{package} has no usr/bin/{binary}"
    return bindir


def remove_tree(path: Path) -> list[str]:
    """Remove ``path``, unmounting first whatever is still mounted below it; returns those
    mounts (a runtime that cleaned up after itself leaves none)."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
              if line.split()[1].startswith(str(path) + "/")]
    for mount in reversed(mounts):
        subprocess.run(["umount", "-l", mount], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)
    return mounts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def registry() -> Iterator[str]:
    """A container registry (Docker's distribution, Debian's docker-registry) on
    127.0.0.1 over plain HTTP; yields its host:port."""
    binary = tool_dir("docker-registry", "docker-registry") / "docker-registry"
    work = Path(tempfile.mkdtemp(prefix="nobs-registry-"))
    port = free_port()
    (work / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {work / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen([str(binary), "serve", str(work / "config.yml")],
                            stdout=subprocess.DEVNULL, stderr=open(work / "log", "wb"))
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the registry did not start: {(work / 'log').read_text()}")
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(proc)
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Containerd:
    socket: Path
    bindir: Path
    root: Path

    def ctr(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run([str(self.bindir / "ctr"), "--address", str(self.socket),
                               "--namespace", "k8s.io", *args],
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"ctr {' '.join(args)}: {done.stderr}"
        return done.stdout


@contextmanager
def containerd() -> Iterator[Containerd]:
    """A containerd of its own (root, state and socket in a temporary directory; the CRI
    plugin off, since no kubelet talks to it), running containers with runc."""
    bindir = tool_dir("containerd", "containerd")
    # A short path: a unix socket's path is limited to 107 bytes.
    work = Path(tempfile.mkdtemp(prefix="nobs-ctrd-", dir="/tmp"))
    sock = work / "sock"
    (work / "config.toml").write_text(
        f'version = 2\nroot = "{work / "root"}"\nstate = "{work / "state"}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n'
        f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{work / "opt"}"\n'
    )
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    proc = subprocess.Popen([str(bindir / "containerd"), "--config", str(work / "config.toml")],
                            stdout=subprocess.DEVNULL, stderr=open(work / "log", "wb"), env=env)
    try:
        deadline = time.monotonic() + 20
        while not sock.is_socket():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"containerd did not start: {(work / 'log').read_text()[-3000:]}")
            time.sleep(0.05)
        yield Containerd(sock, bindir, work)
    finally:
        _stop(proc)
        mounts = remove_tree(work)
        assert not mounts, f"containerd left mounts behind: {mounts}"
