"""Child processes of a local capture: started in their own session, ended in order.

Children get their own session so that a Ctrl+C in the terminal reaches only the
controller, which stops them in the right order (agent first, then aggregator). They also
get PR_SET_PDEATHSIG so that they stop if the controller dies without cleaning up.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import signal
import sys
from collections import deque
from typing import Any

from ..model.errors import CaptureError

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Child:
    """One ``python -m <module>`` child speaking JSON lines on stdout, logging on stderr."""

    def __init__(self, name: str, module: str, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.argv = [sys.executable, "-m", module, *args]
        self.env = {**os.environ, **env}
        self.proc: asyncio.subprocess.Process | None = None
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.stderr_tail: deque[str] = deque(maxlen=40)
        self._readers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._readers = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]

    async def _read_stdout(self) -> None:
        assert self.proc and self.proc.stdout
        async for line in self.proc.stdout:
            text = line.decode(errors="replace").strip()
            try:
                event = json.loads(text)
            except ValueError:
                log.debug("%s: %s", self.name, text)
                continue
            if isinstance(event, dict):
                await self.events.put(event)

    async def _read_stderr(self) -> None:
        assert self.proc and self.proc.stderr
        async for line in self.proc.stderr:
            text = line.decode(errors="replace").rstrip()
            self.stderr_tail.append(text)
            log.debug("%s: %s", self.name, text)

    def why(self) -> str:
        """The child's last words, for error messages."""
        lines = [line for line in self.stderr_tail if line.strip()]
        errors = [line for line in lines if "error" in line.lower()]
        return (errors or lines or ["(no output)"])[-1].removeprefix("error: ")

    async def wait_event(self, kind: str, timeout: float) -> dict[str, Any]:
        """Wait for ``{"event": kind}``; raise with the child's stderr if it exits first."""
        assert self.proc
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            get = asyncio.create_task(self.events.get())
            died = asyncio.create_task(self.proc.wait())
            done, _ = await asyncio.wait(
                {get, died}, timeout=max(0.0, deadline - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if get in done:
                died.cancel()
                event = get.result()
                if event.get("event") == kind:
                    return event
                continue
            get.cancel()
            died.cancel()
            if died in done:
                await asyncio.gather(*self._readers, return_exceptions=True)
                raise CaptureError(
                    f"the {self.name} exited with status {self.proc.returncode}: {self.why()}"
                )
            raise CaptureError(f"the {self.name} did not report '{kind}' within {timeout:.0f} s")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self, timeout: float) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                log.error("The %s did not stop within %.0f s; killing it.", self.name, timeout)
                self.proc.kill()
                await self.proc.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)
        return self.proc.returncode
