"""Which agent a TC state file belongs to: PID namespace, PID and start time, not PID alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netobserv_tui.agent import tc
from netobserv_tui.agent.tc import AttachState


def test_this_process_is_alive_and_a_reused_pid_is_not() -> None:
    me = AttachState.for_this_process()
    assert me.started > 0 and me.pidns > 0
    assert me.is_alive()
    # PID 1 again in a new pod, or a reused PID: same number, another start time.
    predecessor = AttachState(pid=me.pid, pidns=me.pidns, started=me.started - 1)
    assert not predecessor.is_alive()
    assert predecessor.path != me.path  # and its file is not overwritten by ours


def test_an_agent_of_another_pid_namespace_counts_as_gone() -> None:
    me = AttachState.for_this_process()
    other_pod = AttachState(pid=me.pid, pidns=me.pidns + 1, started=me.started)
    assert not other_pod.is_alive()


def test_a_finished_process_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = tc._start_time(child.pid)
    child.wait()
    state = AttachState(pid=child.pid, pidns=tc._pid_namespace(), started=started)
    assert started > 0 and not state.is_alive()


def test_state_files_of_the_older_format_still_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tc, "STATE_DIR", tmp_path)
    old = tmp_path / f"agent-{os.getpid()}.json"
    old.write_text(json.dumps({"pid": os.getpid(), "attached": {"7": "eth0"},
                               "created_qdisc": [7]}))
    state = AttachState.load(old)
    assert (state.pidns, state.started) == (0, 0) and state.path == old
    assert state.is_alive()  # the PID check, as before
    saved = AttachState.for_this_process()
    saved.attached = {7: "eth0"}
    saved.save()
    again = AttachState.load(saved.path)
    assert (again.pid, again.pidns, again.started, again.attached) == (
        saved.pid, saved.pidns, saved.started, {7: "eth0"})


def test_the_command_name_may_hold_spaces_and_parentheses(tmp_path: Path) -> None:
    odd = tmp_path / "x) (y z"
    odd.symlink_to(sys.executable)  # the kernel's comm is the executable's name
    child = subprocess.Popen([str(odd), "-c", "import time; time.sleep(5)"])
    try:
        comm_file = Path(f"/proc/{child.pid}/comm")
        deadline = time.monotonic() + 10  # the forked child runs pytest's name until exec
        while comm_file.read_text().strip() != "x) (y z":
            assert time.monotonic() < deadline, comm_file.read_text()
            time.sleep(0.01)
        assert tc._start_time(child.pid) >= AttachState.for_this_process().started
    finally:
        child.kill()
        child.wait()
