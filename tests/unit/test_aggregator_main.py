"""``python -m netobserv_tui.aggregator`` as a real process: ready/closed lines, signals, errors."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agg_helpers import DNS_COLUMNS, TOKEN, as_objects, load_json, sample_rows, sqlite_json

from netobserv_tui.aggregator.__main__ import parse_listen
from netobserv_tui.model.protocol import FrameType, encode, read_frame_sync

ROOT = Path(__file__).resolve().parents[2]


#: Runs the aggregator as ``python -m`` does, in an interpreter where Textual and Rich
#: cannot be imported (``sys.modules[name] = None`` makes every import of them fail, as if
#: they were not installed): what the image's aggregator must survive.
WITHOUT_TEXTUAL = (
    "import runpy, sys\n"
    "sys.modules['textual'] = sys.modules['rich'] = None\n"
    "sys.argv[0] = 'netobserv_tui.aggregator'\n"
    "runpy.run_module('netobserv_tui.aggregator', run_name='__main__', alter_sys=True)\n"
)


def start(output: Path, *extra: str, token: str | None = TOKEN,
          listen: str = "127.0.0.1:0", textual: bool = True) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "NETOBSERV_TOKEN"}
    env["PYTHONPATH"] = str(ROOT)
    if token is not None:
        env["NETOBSERV_TOKEN"] = token
    entry = ["-m", "netobserv_tui.aggregator"] if textual else ["-c", WITHOUT_TEXTUAL]
    return subprocess.Popen(
        [sys.executable, *entry, "--listen", listen, "--output", str(output), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def ready_line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"no ready line; stderr: {proc.communicate(timeout=10)[1]}"
    ready: dict[str, Any] = json.loads(line)
    return ready


def hello(sock: socket.socket) -> Any:
    """HELLO as agent n1 on ``sock``; the file to read the aggregator's frames from."""
    rfile = sock.makefile("rb")
    sock.sendall(encode(FrameType.HELLO, {"token": TOKEN, "agent": {"hostname": "n1"}}))
    welcome = read_frame_sync(rfile)
    assert welcome is not None and welcome[0] is FrameType.WELCOME
    return rfile


def send_batches(port: int, batches: list[list[list[Any]]]) -> list[dict[str, Any]]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        rfile = hello(sock)
        for seq, rows in enumerate(batches):
            sock.sendall(encode(FrameType.FLOWS, {"seq": seq, "columns": list(DNS_COLUMNS),
                                                  "rows": rows}))
        acks = []
        for _ in batches:
            frame = read_frame_sync(rfile)
            assert frame is not None and frame[0] is FrameType.ACK, frame
            acks.append(frame[1])
        sock.sendall(encode(FrameType.BYE, {}))
        assert read_frame_sync(rfile) is None
        return acks


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_feed_and_stop_with_a_signal(tmp_path: Path, signum: int) -> None:
    proc = start(tmp_path / "out", "--grace", "2")
    try:
        ready = ready_line(proc)
        assert set(ready) == {"event", "host", "port", "capture", "files"}
        assert ready["event"] == "ready" and ready["host"] == "127.0.0.1"
        assert ready["files"] == {
            "json": str(tmp_path / "out" / "flow" / f"{ready['capture']}.json"),
            "db": str(tmp_path / "out" / "flow" / f"{ready['capture']}.db")}
        batches = [sample_rows(400, seed=1), sample_rows(600, seed=2)]
        assert send_batches(ready["port"], batches) == [{"seq": 0}, {"seq": 1}]
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    closed = json.loads(out)
    assert closed["event"] == "closed" and closed["files"] == ready["files"]
    assert closed["flows"] == 1000 and closed["batches"] == 2 and closed["agents_seen"] == 1
    rows = batches[0] + batches[1]
    assert closed["bytes"] == sum(r[DNS_COLUMNS.index("Bytes")] for r in rows)
    written = load_json(closed["files"]["json"])
    assert [{k: v for k, v in o.items() if k != "TimeReceived"} for o in written] == \
        as_objects(DNS_COLUMNS, rows)
    assert sqlite_json(closed["files"]["db"], "SELECT count(*) AS n FROM flow") == [{"n": 1000}]
    assert TOKEN not in err and TOKEN not in out


def test_the_entry_points_load_no_textual() -> None:
    """The pods' entry points, and the store the aggregator searches with, import nothing
    of the terminal UI (the import contracts in pyproject.toml say why)."""
    code = (
        "import sys\n"
        "import netobserv_tui.aggregator.__main__, netobserv_tui.agent.main\n"
        "import netobserv_tui.store\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')\n"
        "               or m.startswith('netobserv_tui.tui'))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_runs_where_textual_is_not_installed(tmp_path: Path) -> None:
    """Ingest, a SEARCH session (the store) and a clean close, with Textual unimportable."""
    proc = start(tmp_path / "out", "--grace", "2", textual=False)
    try:
        ready = ready_line(proc)
        rows = sample_rows(300, seed=4)
        assert send_batches(ready["port"], [rows]) == [{"seq": 0}]
        with socket.create_connection(("127.0.0.1", ready["port"]), timeout=10) as sock:
            rfile = sock.makefile("rb")
            sock.sendall(encode(FrameType.SEARCH, {"token": TOKEN}))
            assert read_frame_sync(rfile) == (FrameType.WELCOME, {"capture": ready["capture"]})
            sock.sendall(encode(FrameType.SEARCH, {"chips": ["DstPort=53"], "fields": [],
                                                   "limit": 1000, "after": 0}))
            frame = read_frame_sync(rfile)
            assert frame is not None and frame[0] is FrameType.RESULT, frame
            port = DNS_COLUMNS.index("DstPort")
            assert frame[1]["matched"] == sum(1 for r in rows if r[port] == 53) > 0
            sock.sendall(encode(FrameType.BYE, {}))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "ModuleNotFoundError" not in err
    closed = json.loads(out)
    assert closed["event"] == "closed" and closed["flows"] == 300


def test_missing_token_is_a_usage_error(tmp_path: Path) -> None:
    proc = start(tmp_path / "out", token=None)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2 and out == ""
    assert "NETOBSERV_TOKEN" in err
    assert not (tmp_path / "out").exists()


def test_busy_port_fails_cleanly(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = start(tmp_path / "out", listen=f"127.0.0.1:{port}")
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 1 and out == ""
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert not (tmp_path / "out").exists()


def test_unwritable_output_fails_cleanly(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = start(blocker / "out")
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 1 and out == ""
    assert "cannot create the flow files" in err


def test_bad_listen_address_is_a_usage_error(tmp_path: Path) -> None:
    proc = start(tmp_path / "out", listen="localhost")
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2 and "HOST:PORT" in err


@pytest.mark.parametrize(("text", "expected"), [
    ("*:9990", ("*", 9990)), (":9990", ("*", 9990)), ("127.0.0.1:0", ("127.0.0.1", 0)),
    ("[::1]:9990", ("::1", 9990)), ("[fd00:198:18::10]:1", ("fd00:198:18::10", 1)),
])
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


def test_sigkill_mid_capture_keeps_every_acknowledged_row(tmp_path: Path) -> None:
    """The aggregator killed with SIGKILL while an agent is still connected: every batch it
    acknowledged is in the SQLite file (read back by the sqlite3 tool, which replays the
    ``-wal`` file), and the JSON file holds the same rows once recovered."""
    from netobserv_tui.aggregator.writers import recover

    proc = start(tmp_path / "out")
    try:
        ready = ready_line(proc)
        batches = [sample_rows(250, seed=seed) for seed in range(8)]
        with socket.create_connection(("127.0.0.1", ready["port"]), timeout=10) as sock:
            rfile = hello(sock)
            for seq, rows in enumerate(batches):
                sock.sendall(encode(FrameType.FLOWS, {"seq": seq, "columns": list(DNS_COLUMNS),
                                                      "rows": rows}))
                ack = read_frame_sync(rfile)
                assert ack is not None and ack[0] is FrameType.ACK and ack[1] == {"seq": seq}
            proc.send_signal(signal.SIGKILL)  # no BYE, no close: the connection is still up
            proc.wait(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    db, json_path = ready["files"]["db"], ready["files"]["json"]
    assert Path(db + "-wal").exists()  # the kill left the journal: sqlite3 must replay it
    rows = [row for batch in batches for row in batch]
    got = sqlite_json(db, "SELECT count(*) AS n, sum(Bytes) AS b FROM flow")
    assert got == [{"n": len(rows), "b": sum(r[DNS_COLUMNS.index("Bytes")] for r in rows)}]
    recover(json_path, db)
    written = load_json(json_path)
    assert [{k: v for k, v in o.items() if k != "TimeReceived"} for o in written] == \
        as_objects(DNS_COLUMNS, rows)
    assert sqlite_json(db, "SELECT count(*) AS n FROM flow") == [{"n": len(rows)}]


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_user_gives_up_root_once_the_files_are_open(tmp_path: Path) -> None:
    """``--user``: the aggregator runs as that uid (the kernel says so) from its ready line
    on; batches it takes afterwards are written although its folder is root's alone; it
    closes the database in WAL mode with an empty -wal file, which settle_wal (as root)
    then ends."""
    from netobserv_tui.aggregator.writers import settle_wal
    from netobserv_tui.capture.owner import unassigned_user

    uid, gid = unassigned_user()
    private = tmp_path / "root-only"
    private.mkdir(mode=0o700)
    proc = start(private / "out", "--user", f"{uid}:{gid}")
    try:
        ready = ready_line(proc)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        rows = sample_rows(400, seed=9)
        assert send_batches(ready["port"], [rows[:200], rows[200:]]) == [{"seq": 0}, {"seq": 1}]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert ready["uid"] == uid
    assert f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}\n" in status
    assert f"Gid:\t{gid}\t{gid}\t{gid}\t{gid}\n" in status
    assert re.search(r"^Groups:\s*$", status, re.MULTILINE), status
    assert json.loads(out)["flows"] == 400
    db = Path(ready["files"]["db"])
    assert Path(f"{db}-wal").stat().st_size == 0
    assert settle_wal(db) is True
    assert not Path(f"{db}-wal").exists()
    assert sqlite_json(db, "SELECT count(*) AS n FROM flow") == [{"n": 400}]
    assert sqlite_json(db, "PRAGMA journal_mode") == [{"journal_mode": "delete"}]


@pytest.mark.parametrize(("value", "says"), [
    ("0:0", "not to run as root"), ("nobody", "two numbers"), ("1000:", "two numbers")])
def test_bad_user_is_a_usage_error(tmp_path: Path, value: str, says: str) -> None:
    proc = start(tmp_path / "out", "--user", value)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2 and out == "" and says in err, err
    assert not (tmp_path / "out").exists()
