"""Human-friendly durations and sizes: parsers for command-line flags, and the size
format the TUI and the CLI print."""

from __future__ import annotations

import re

from .errors import UsageError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
               "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}


def parse_duration(text: str, flag: str = "duration") -> float:
    """``30s``, ``5m``, ``1h``, ``250ms`` or a bare number of seconds -> seconds."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise UsageError(
            f"{flag}: {text!r} is not a duration; use a positive number with a unit, "
            "for example 30s, 5m, 1h or 250ms"
        )
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_size(text: str, flag: str = "size") -> int:
    """``1000``, ``50MB``, ``2GiB``, ``10k`` -> bytes (decimal for k/M/G, binary for Ki/Mi/Gi)."""
    match = _SIZE.match(text)
    if not match or float(match.group(1)) <= 0:
        raise UsageError(
            f"{flag}: {text!r} is not a size; use a positive number of bytes, optionally with "
            "a unit such as 500k, 50MB or 2GiB"
        )
    unit = (match.group(2) or "").lower().removesuffix("b")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def human_bytes(n: float) -> str:
    """Decimal units, as ``--max-bytes`` reads them: ``1.5 MB``."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
