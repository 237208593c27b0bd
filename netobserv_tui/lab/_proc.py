"""Process helpers for the lab: the ``ip`` command, and worker processes inside namespaces.

The lab drives the kernel through iproute2 (``ip``, ``bridge``, ``sysctl`` under
``ip netns exec``) rather than pyroute2: each call is a short-lived process with an exit code
and a readable error, nothing forks behind our back, and a crash of this process leaves no
half-open netlink socket in a foreign namespace. Worker processes (traffic generators and
servers) are started with :class:`NsProcess`, which always reaps what it started.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from ..model.errors import LabError, PrivilegeError

log = logging.getLogger(__name__)

#: The stdlib-only program that every lab worker runs (``python -I _worker.py <cmd> <json>``).
WORKER_PATH = str(Path(__file__).with_name("_worker.py"))

_REQUIRED_TOOLS = ("ip", "bridge", "sysctl")


def require_root() -> None:
    """Raise :class:`PrivilegeError` unless the process runs as root."""
    if os.geteuid() != 0:
        raise PrivilegeError(
            "the lab creates network namespaces, veth pairs and a bridge, which needs root: "
            "run it again as root (for example `sudo netobserv lab up`)"
        )


def require_tools() -> None:
    """Raise :class:`LabError` if iproute2 or procps commands are missing from PATH."""
    missing = [tool for tool in _REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise LabError(
            f"the lab needs {', '.join(missing)} on PATH: install iproute2 and procps "
            "(`apt-get install iproute2 procps`) and try again"
        )


def run(
    argv: Sequence[str],
    *,
    input_text: str | None = None,
    timeout: float = 15.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion and return it; raise :class:`LabError` if it fails."""
    try:
        proc = subprocess.run(
            list(argv),
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"`{' '.join(argv)}` did not finish within {timeout:.0f}s") from exc
    except FileNotFoundError as exc:
        raise LabError(f"cannot run `{argv[0]}`: it is not installed or not on PATH") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip() or f"exit code {proc.returncode}"
        raise LabError(f"`{' '.join(argv)}` failed: {detail}")
    return proc


def ip(
    *args: str,
    netns: str | None = None,
    input_text: str | None = None,
    check: bool = True,
) -> str:
    """Run ``ip [-n NETNS] ARGS...`` and return its standard output."""
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    return run(argv, input_text=input_text, check=check).stdout


def ip_json(*args: str, netns: str | None = None) -> list[dict[str, Any]]:
    """Run ``ip -j ARGS...`` and return the decoded list (empty when ``ip`` prints nothing)."""
    out = ip("-j", *args, netns=netns)
    if not out.strip():
        return []
    data = json.loads(out)
    return data if isinstance(data, list) else []


def worker_argv(command: str, **params: Any) -> list[str]:
    """The argv that runs one worker command with its parameters (JSON-encoded)."""
    return [sys.executable, "-I", WORKER_PATH, command, json.dumps(params)]


def worker_pids() -> list[int]:
    """Pids of lab worker processes running on this host (all must be reaped after use)."""
    needle = WORKER_PATH.encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class NsProcess:
    """A process run inside a network namespace (or the root one), reaped on every exit path.

    The process talks JSON lines on stdout (``{"event": "ready"|"done"|..., ...}``); closing its
    stdin asks it to finish. Standard error goes to an unnamed temporary file so that a chatty
    process can never block on a full pipe, and its tail is quoted in errors.
    Use it as a context manager, or call :meth:`stop` in a ``finally``.
    """

    def __init__(self, netns: str | None, argv: Sequence[str], *, label: str) -> None:
        self.label = label
        self._stderr = tempfile.TemporaryFile()
        self._buf = b""
        self._eof = False
        full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
        try:
            # A new session: a Ctrl+C on the terminal reaches only us, and we stop the
            # children in order. `ip netns exec` execs the command, so the pid is the worker.
            self.proc = subprocess.Popen(
                full,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                close_fds=True,
                start_new_session=True,
            )
        except OSError as exc:
            self._stderr.close()
            raise LabError(f"{label}: cannot start `{' '.join(full)}`: {exc}") from exc
        log.debug("Started %s (pid %d): %s", label, self.proc.pid, " ".join(full))

    @property
    def pid(self) -> int:
        """The process id of the worker."""
        return self.proc.pid

    def running(self) -> bool:
        """True while the process has not exited."""
        return self.proc.poll() is None

    def stderr_tail(self, limit: int = 2000) -> str:
        """The last ``limit`` characters the process wrote to standard error."""
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - limit))
            return self._stderr.read().decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""

    def _describe_failure(self, what: str) -> LabError:
        tail = self.stderr_tail()
        detail = f"; its stderr ends with:\n{tail}" if tail else ""
        return LabError(f"{self.label} {what}{detail}")

    def read_event(self, timeout: float) -> dict[str, Any]:
        """Return the next JSON line from stdout, waiting at most ``timeout`` seconds."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            if self._eof:
                try:
                    code = self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    code = None
                raise self._describe_failure(f"closed its output (exit code {code})")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._describe_failure(f"gave no answer within {timeout:.1f}s")
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 65536)
                if chunk:
                    self._buf += chunk
                else:
                    self._eof = True
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            raise self._describe_failure(f"wrote an unreadable line {line[:200]!r}") from exc
        if not isinstance(event, dict):
            raise self._describe_failure(f"wrote an unexpected line {line[:200]!r}")
        if event.get("event") == "error":
            raise self._describe_failure(f"failed: {event.get('message', 'unknown error')}")
        return event

    def expect(self, name: str, timeout: float) -> dict[str, Any]:
        """Read events until one named ``name`` arrives (others are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.read_event(max(0.0, deadline - time.monotonic()))
            if event.get("event") == name:
                return event

    def close_stdin(self) -> None:
        """Tell the worker to finish (every worker treats end of stdin as a stop request)."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit and return its exit code; raise on timeout."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise self._describe_failure(f"did not exit within {timeout:.1f}s") from exc

    def stop(self, grace: float = 2.0) -> int:
        """End the process (stdin EOF, then SIGTERM, then SIGKILL), reap it, free its pipes."""
        self.close_stdin()
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=min(grace, 0.5))
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()
        return self.proc.returncode

    def _signal(self, sig: signal.Signals) -> None:
        try:
            self.proc.send_signal(sig)
        except ProcessLookupError:
            pass

    def __enter__(self) -> NsProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
