"""Peak memory of this process, as the capture report shows it."""

from __future__ import annotations

import resource


def peak_rss_kib() -> int:
    """The process's peak resident set size in KiB: ``VmHWM`` from ``/proc/self/status``.

    Not ``getrusage().ru_maxrss``: Linux keeps that across ``execve``, so a child started by
    a large parent reports the parent's peak (an aggregator started by a 230 MiB process
    said 230 MiB while its own peak was 58 MiB).  ``VmHWM`` belongs to the address space,
    which ``execve`` replaces.  ``ru_maxrss`` remains the fallback without ``/proc``.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
