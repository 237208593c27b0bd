"""Reports: whole-capture summaries computed from a capture's SQLite file, by name.

A cluster capture's file stays in the aggregator pod while the capture runs; the TUI asks
the aggregator for a report by name (a SEARCH frame with ``"report"``, see
:mod:`netobserv_tui.aggregator.search` and ``docs/protocol.md``) and gets its items as
JSON objects.  A local capture's TUI computes the same thing from its own file.

Each report takes the path of the SQLite file, opens it read-only (the aggregator is
writing it, in WAL mode) and returns a list of JSON objects.  Plain Python and
:mod:`sqlite3`: no Textual, nothing of the aggregator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from .findings import findings
from .talkers import talkers

Report = Callable[[Path], list[dict[str, Any]]]


def findings_report(path: Path) -> list[dict[str, Any]]:
    """``findings``: every finding of the capture (:func:`.findings.findings`), problems
    first, each as :meth:`.findings.Finding.to_json` gives it."""
    return [finding.to_json() for finding in findings(path)]


def talkers_report(path: Path) -> list[dict[str, Any]]:
    """``talkers``: the top talkers of the capture (:func:`.talkers.talkers`), most bytes
    first, each as :meth:`.talkers.Talker.to_json` gives it."""
    return [talker.to_json() for talker in talkers(path)]


#: The reports an aggregator computes, by the name a request gives.
REPORTS: Final[Mapping[str, Report]] = {
    "findings": findings_report,
    "talkers": talkers_report,
}


class UnknownReport(ValueError):
    """A report name that is not in :data:`REPORTS`."""


def report(name: str, path: Path) -> list[dict[str, Any]]:
    """The report ``name`` of the capture file at ``path``; :class:`UnknownReport` for a
    name that is not one."""
    compute = REPORTS.get(name)
    if compute is None:
        known = ", ".join(sorted(REPORTS))
        raise UnknownReport(f"unknown report {name!r} (this aggregator computes: {known})")
    return compute(path)
