"""Peak memory reports the process's own peak, not one inherited from its parent."""

from __future__ import annotations

import subprocess
import sys

from netobserv_tui.model.memory import peak_rss_kib

CHILD = (
    "import resource\n"
    "from netobserv_tui.model.memory import peak_rss_kib\n"
    "print(peak_rss_kib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
)


def test_a_child_of_a_large_process_reports_its_own_peak() -> None:
    ballast = bytearray(300 * 1024 * 1024)  # pages touched: resident in this process
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    ours, inherited = map(int, out.split())
    assert inherited >= 300 * 1024  # ru_maxrss carries the parent's peak across execve
    assert 5 * 1024 < ours < 120 * 1024  # a Python interpreter, nowhere near 300 MiB
    assert peak_rss_kib() >= 300 * 1024
    del ballast
