"""Run real captures from tests and read their files back with real readers."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

NETOBSERV = [sys.executable, "-m", "netobserv_tui"]
READY_MARK = "Capturing flows on"


class Capture:
    """``netobserv flows --local --no-tui`` (or ``packets``) as a child process, stopped by
    a signal."""

    def __init__(
        self, output: Path, *extra: str, interfaces: str = "nobs-*",
        env: dict[str, str] | None = None, command: str = "flows",
    ) -> None:
        self.command = command
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.output = output
        self.argv = [
            *NETOBSERV,
            command,
            "--local",
            "--no-tui",
            "--output",
            str(output),
            f"--interfaces={interfaces}",
            *extra,
        ]
        self.proc: subprocess.Popen[str] | None = None
        self.stderr_lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.stdout = ""
        self.returncode: int | None = None

    def start(self, timeout: float = 120) -> Capture:
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        try:
            self.wait_for(f"Capturing {self.command} on", timeout)
        except BaseException:
            self.proc.kill()  # __exit__ does not run when __enter__ fails
            self.proc.wait()
            raise
        return self

    def _pump(self) -> None:
        assert self.proc and self.proc.stderr
        for line in self.proc.stderr:
            self.stderr_lines.append(line.rstrip("\n"))
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"{text!r} not seen within {timeout} s; stderr:\n"
                    + "\n".join(self.stderr_lines)
                ) from None
            if line is None:
                raise AssertionError(
                    f"capture exited before {text!r}; stderr:\n" + "\n".join(self.stderr_lines)
                )
            if text in line:
                return line

    def children(self) -> list[psutil.Process]:
        assert self.proc
        return psutil.Process(self.proc.pid).children(recursive=True)

    def child(self, module: str) -> psutil.Process:
        for proc in self.children():
            if module in " ".join(proc.cmdline()):
                return proc
        raise AssertionError(f"no child runs {module}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 120) -> int:
        assert self.proc
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float = 120) -> int:
        assert self.proc and self.proc.stdout
        self.stdout = self.proc.stdout.read()
        self.returncode = self.proc.wait(timeout)
        return self.returncode

    def files(self) -> dict[str, Path]:
        found = {}
        for line in self.stdout.splitlines():
            path = Path(line.strip())
            if path.suffix in (".json", ".db", ".pcapng"):
                found[path.suffix[1:]] = path
        kinds = {"json", "db"} | ({"pcapng"} if self.command == "packets" else set())
        assert set(found) == kinds, f"file paths not printed; stdout: {self.stdout!r}"
        return found

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.stop()


def credentials(proc: psutil.Process) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    """A process's (real, effective, saved, filesystem) uids and gids and its supplementary
    groups, as the kernel reports them in /proc/PID/status."""
    status = dict(line.split(":", 1) for line in
                  Path(f"/proc/{proc.pid}/status").read_text().splitlines() if ":" in line)
    return (tuple(int(x) for x in status["Uid"].split()),
            tuple(int(x) for x in status["Gid"].split()), status["Groups"].strip())


def sqlite_rows(db: Path, query: str) -> list[dict[str, Any]]:
    """Run ``query`` with the sqlite3 command-line shell, as a person would."""
    out = subprocess.run(
        ["sqlite3", "-json", str(db), query], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out) if out.strip() else []


def json_records(path: Path) -> list[dict[str, Any]]:
    subprocess.run(
        [sys.executable, "-m", "json.tool", str(path)], check=True, stdout=subprocess.DEVNULL
    )
    with path.open() as f:
        data = json.load(f)
    assert isinstance(data, list)
    return data


def totals(records: list[dict[str, Any]], **match: Any) -> dict[tuple[str, int], tuple[int, int]]:
    """Sum Packets and Bytes of matching records per (Interface, IfDirection)."""
    out: dict[tuple[str, int], tuple[int, int]] = {}
    for rec in records:
        if all(rec.get(k) == v for k, v in match.items()):
            key = (rec["Interface"], rec["IfDirection"])
            packets, nbytes = out.get(key, (0, 0))
            out[key] = (packets + rec["Packets"], nbytes + rec["Bytes"])
    return out


def sql_totals(db: Path, **match: Any) -> dict[tuple[str, int], tuple[int, int]]:
    where = " AND ".join(
        f"{k} = {v!r}" if isinstance(v, int) else f"{k} = '{v}'" for k, v in match.items()
    )
    rows = sqlite_rows(
        db,
        "SELECT Interface, IfDirection, SUM(Packets) AS p, SUM(Bytes) AS b FROM flow "
        f"WHERE {where} GROUP BY Interface, IfDirection",
    )
    return {(r["Interface"], r["IfDirection"]): (r["p"], r["b"]) for r in rows}


def our_tc_objects() -> list[str]:
    """Every classifier of ours and every clsact qdisc on a lab interface, as tc shows them."""
    found = []
    for name in os.listdir("/sys/class/net"):
        for hook in ("ingress", "egress"):
            out = subprocess.run(
                ["tc", "filter", "show", "dev", name, hook], capture_output=True, text=True
            ).stdout
            if "nobs_tc_" in out:
                found.append(f"{name} {hook}: {out.strip()}")
        if name.startswith("nobs-"):
            out = subprocess.run(
                ["tc", "qdisc", "show", "dev", name], capture_output=True, text=True
            ).stdout
            if "clsact" in out:
                found.append(f"{name}: {out.strip()}")
    return found
