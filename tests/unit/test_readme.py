"""The README's commands that a newcomer copies: they must work as written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from netobserv_tui.aggregator.writers import FlowWriter

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def sqlite_example() -> str:
    (command,) = [line for line in README.splitlines() if line.startswith("sqlite3 ")]
    return command


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="needs the sqlite3 tool")
def test_the_sqlite_example_reads_the_newest_of_several_captures(tmp_path: Path) -> None:
    """With two captures in output/flow (a glob would name both, and sqlite3 would take the
    second as SQL), the example queries the newest one and prints its slow DNS answer."""
    columns = ["SrcAddr", "DstAddr", "SrcPort", "DstPort", "Proto", "Interface", "Bytes",
               "Packets", "DnsId", "DnsFlagsResponseCode", "DnsLatencyMs"]
    for latency in (40, 25):  # the older capture first
        writer = FlowWriter(tmp_path / "output")
        writer.write_batch(columns, [["198.18.0.10", "198.18.0.12", 40000, 53, 17, "eth0",
                                      80, 1, 7, "NoError", latency],
                                     ["198.18.0.10", "198.18.0.12", 40001, 53, 17, "eth0",
                                      80, 1, 8, "NoError", 3]])
        writer.close()
        old = time.time() - (100 if latency == 40 else 0)
        os.utime(writer.db_path, (old, old))
    assert len(list((tmp_path / "output" / "flow").glob("*.db"))) == 2
    done = subprocess.run(["bash", "-c", sqlite_example()], cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout == "25|NoError|7|198.18.0.12|53|eth0|17|198.18.0.10|40000|80|1\n"
    assert re.search(r"WHERE DnsLatencyMs > 10 LIMIT 10'$", sqlite_example())
