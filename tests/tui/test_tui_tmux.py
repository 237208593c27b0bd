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
