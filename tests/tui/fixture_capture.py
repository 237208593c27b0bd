"""A saved capture for snapshot and terminal tests: records of a real ``flows --lab
--enable_all`` run (tests/tui/fixtures/lab-capture.json), written again by the real writer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from netobserv_tui.aggregator.writers import FlowWriter

FIXTURE = Path(__file__).parent / "fixtures" / "lab-capture.json"


def fixture_records() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(FIXTURE.read_text())
    return records


def fixture_capture(directory: Path) -> FlowWriter:
    """The fixture's records written by FlowWriter under ``directory`` (closed), in order, one
    batch per run of records with the same fields."""
    writer = FlowWriter(directory)
    batch: list[dict[str, Any]] = []
    for record in [*fixture_records(), None]:
        if batch and (record is None or record.keys() != batch[0].keys()):
            columns = list(batch[0])
            writer.write_batch(columns, [[r[c] for c in columns] for r in batch])
            batch = []
        if record is not None:
            batch.append(record)
    writer.close()
    return writer
