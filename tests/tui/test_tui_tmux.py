"""Smoke test in a real terminal: tmux runs the app, a real ctrl+c stops it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

SCRIPT = """
import asyncio, sys
sys.path.insert(0, {helpers!r})
from tui_helpers import TOKEN, FakeAggregator
from netobserv_tui.tui.app import FlowsApp

async def main():
    aggregator = FakeAggregator()
    await aggregator.start()
    app = FlowsApp(("127.0.0.1", aggregator.port, TOKEN),
                   {{"target": "local host", "capture": "flows", "output": "out/flow"}})

    async def feed():
        await aggregator.subscribed.wait()
        await aggregator.send_flows([{{"SrcAddr": "10.9.8.7", "SrcPort": 4242, "Bytes": 561}}])
        await aggregator.send_stats(flows=1, bytes=561, packets=1, agents=1)

    feeder = asyncio.create_task(feed())
    result = await app.run_async()
    feeder.cancel()
    await aggregator.close()
    open({result!r}, "w").write(str(result))

asyncio.run(main())
"""


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def test_ctrl_c_in_a_real_terminal(tmp_path: Path) -> None:
    result = tmp_path / "result.txt"
    script = tmp_path / "run_app.py"
    helpers = str(Path(__file__).parent)
    script.write_text(textwrap.dedent(SCRIPT.format(helpers=helpers, result=str(result))))
    session = f"netobserv-tui-test-{uuid.uuid4().hex[:8]}"
    # Textual draws on stderr; stdout must stay empty while the app runs.
    stdout = tmp_path / "stdout.txt"
    command = f"{sys.executable} {script} >{stdout}"
    tmux = ["tmux", "-L", session]  # a private tmux server, killed below

    def pane() -> str:
        capture = [*tmux, "capture-pane", "-p", "-t", session]
        return subprocess.run(capture, capture_output=True, text=True).stdout

    subprocess.run(
        [*tmux, "new-session", "-d", "-s", session, "-x", "120", "-y", "30", command], check=True
    )
    try:
        wait_for(lambda: "10.9.8.7:4242" in pane() and "flows 1" in pane(), "the first flow")
        subprocess.run([*tmux, "send-keys", "-t", session, "C-c"], check=True)
        wait_for(result.exists, "the app to exit")
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
    assert result.read_text() == "stopped"
    assert stdout.read_text() == ""


def test_open_a_saved_capture_in_a_real_terminal(tmp_path: Path) -> None:
    """What a person sees: `netobserv open` on a lab capture, keys typed into a real tmux."""
    sys.path.insert(0, str(Path(__file__).parent))
    from fixture_capture import fixture_capture, fixture_records

    records = fixture_records()
    db = fixture_capture(tmp_path).db_path
    rc = tmp_path / "rc"
    session = f"netobserv-open-{uuid.uuid4().hex[:8]}"
    tmux = ["tmux", "-L", session]
    command = f"TZ=UTC {sys.executable} -m netobserv_tui open {db}; echo $? >{rc}"

    def pane() -> str:
        capture = [*tmux, "capture-pane", "-p", "-t", session]
        return subprocess.run(capture, capture_output=True, text=True).stdout

    def keys(*names: str) -> None:
        subprocess.run([*tmux, "send-keys", "-t", session, *names], check=True)

    subprocess.run(
        [*tmux, "new-session", "-d", "-s", session, "-x", "140", "-y", "36", command],
        check=True,
    )
    try:
        shown = f" of {len(records)} flows shown"
        wait_for(lambda: shown in pane() and "^c Quit" in pane(), "the file's flows")
        screen = pane()
        assert f"flows {len(records)}" in screen and db.name in screen
        assert "? Help" in screen and "Stop capture" not in screen

        # A filter typed on the keyboard: only DNS rows (port 53) stay.
        keys("-l", "DstPort=53")
        keys("Enter")
        dns_queries = sum(1 for r in records if r.get("DstPort") == 53)
        wait_for(lambda: f"{dns_queries} flows match in the file" in pane(), "the filter")
        rows = [line for line in pane().splitlines() if " UDP " in line or " TCP " in line]
        assert len(rows) == dns_queries and all("]:53 " in r or ":53 " in r for r in rows)
        assert "DstPort=53" in pane()

        # The DNS view of the same filter names the queries.
        keys("Right", "Right")
        wait_for(lambda: "DNS · IP & port" in pane(), "the DNS view")
        assert "DNS name" in pane() and ".lab.test" in pane()

        # Escape clears the filter; ? opens the help; Escape closes it.
        keys("Escape")
        wait_for(lambda: "DstPort=53" not in pane(), "the filter cleared")
        keys("?")
        wait_for(lambda: "netobserv keys" in pane(), "the help screen")
        keys("Escape")
        wait_for(lambda: "netobserv keys" not in pane(), "the help closed")

        keys("C-c")
        wait_for(rc.exists, "netobserv to exit")
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
    assert rc.read_text().strip() == "0"
