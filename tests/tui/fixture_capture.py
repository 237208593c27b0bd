"""Saved captures for snapshot, findings and terminal tests, written again by the real
writer:

* ``fixtures/lab-capture.json``: records of a real ``flows --lab --enable_all`` run (the
  snapshots' numbers come from it);
* ``fixtures/lab-demo-capture.json``: the README's main job, ``netobserv flows --local --lab
  --no_tui --max_time 10s`` on a quiet machine (2026-12-07), with the lab's slow DNS server:
  every problem the lab makes (a name that does not exist, a port with no listener, an
  iptables DROP, a slow DNS answer) is in it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from netobserv_tui.aggregator.writers import FlowWriter

FIXTURE = Path(__file__).parent / "fixtures" / "lab-capture.json"
DEMO_FIXTURE = FIXTURE.with_name("lab-demo-capture.json")


def fixture_records(path: Path = FIXTURE) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(path.read_text())
    return records


def fixture_capture(directory: Path, path: Path = FIXTURE) -> FlowWriter:
    """The fixture's records written by FlowWriter under ``directory`` (closed), in order, one
    batch per run of records with the same fields."""
    writer = FlowWriter(directory)
    batch: list[dict[str, Any]] = []
    for record in [*fixture_records(path), None]:
        if batch and (record is None or record.keys() != batch[0].keys()):
            columns = list(batch[0])
            writer.write_batch(columns, [[r[c] for c in columns] for r in batch])
            batch = []
        if record is not None:
            batch.append(record)
    writer.close()
    return writer
