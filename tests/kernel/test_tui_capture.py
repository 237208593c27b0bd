"""The real thing in a real terminal: `netobserv flows` with its TUI under tmux, lab traffic,
Ctrl+C, and files a person can open afterwards."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from capture_helpers import our_tc_objects, sqlite_rows

from netobserv_tui.lab import Lab
from netobserv_tui.lab.traffic import udp_send

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="flow capture needs root"),
]


def wait_for(
    condition: Callable[[], bool], what: str, timeout: float = 60.0,
    on_timeout: Callable[[], str] | None = None, deadline: float | None = None,
) -> None:
    """Poll ``condition`` until ``timeout`` s from now, or until ``deadline`` (monotonic)."""
    deadline = time.monotonic() + timeout if deadline is None else deadline
    while not condition():
        if time.monotonic() > deadline:
            seen = f"; the terminal shows:\n{on_timeout()}" if on_timeout else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{seen}")
        time.sleep(0.2)


class Terminal:
    """``netobserv <args> --local --interfaces='nobs-*'`` in a private tmux server, 160x40,
    started in ``folder``; its stdout and exit status go to files there.  ``exactly``: the
    arguments as given, nothing added."""

    def __init__(self, folder: Path, *args: str, exactly: bool = False) -> None:
        self.session = f"nobs-tui-{uuid.uuid4().hex[:8]}"
        self.tmux = ["tmux", "-L", self.session]
        self.stdout, self.status = folder / "stdout.txt", folder / "status.txt"
        added = "" if exactly else " --local --interfaces='nobs-*'"
        command = (f"cd {folder} && {sys.executable} -m netobserv_tui {' '.join(args)}"
                   f"{added} >{self.stdout}; echo $? >{self.status}")
        subprocess.run([*self.tmux, "new-session", "-d", "-s", self.session, "-x", "160",
                        "-y", "40", "sh", "-c", command], check=True)

    def pane(self) -> str:
        return subprocess.run([*self.tmux, "capture-pane", "-p", "-t", self.session],
                              capture_output=True, text=True).stdout

    def live(self) -> None:
        """Wait until the TUI is up and the capture live."""
        # The TUI opens at once with the start's progress; the capture is on once live.
        wait_for(lambda: "Stop capture" in self.pane(), "the TUI", on_timeout=self.pane)
        wait_for(lambda: "● live" in self.pane(), "the live capture", on_timeout=self.pane)

    def key(self, name: str) -> None:
        subprocess.run([*self.tmux, "send-keys", "-t", self.session, name], check=True)

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True)


@pytest.mark.parametrize("key", ["C-c", "C-q"])
def test_tui_shows_lab_flows_and_ctrl_c_leaves_readable_files(
    lab: Lab, tmp_path: Path, key: str
) -> None:
    term = Terminal(tmp_path, "flows")
    pane, stdout, status = term.pane, term.stdout, term.status
    try:
        term.live()
        a, b = lab.pod("pod-a"), lab.pod("pod-b")
        udp_send(lab, a, b, 20, 100, dst_port=7777, src_port=41234)
        wait_for(lambda: f"{a.v4}:41234" in pane(), "the lab flow in the table")
        time.sleep(3)  # a few refreshes and searches of the live file, as a person watches
        screen = pane()
        assert f"{b.v4}:7777" in screen
        term.key(key)
        wait_for(status.exists, "the capture to end")
    finally:
        term.close()
    assert status.read_text().strip() == "0"
    paths = [Path(p) for p in stdout.read_text().split()]
    assert sorted(p.suffix for p in paths) == [".db", ".json"]
    db = next(p for p in paths if p.suffix == ".db")
    js = next(p for p in paths if p.suffix == ".json")
    assert db.parent == tmp_path / "output" / "flow"
    count = sqlite_rows(db, "SELECT count(*) AS n FROM flow")[0]["n"]
    assert count > 0
    subprocess.run([sys.executable, "-m", "json.tool", str(js)], check=True,
                   stdout=subprocess.DEVNULL)
    assert len(json.loads(js.read_text())) == count
    got = sqlite_rows(db, "SELECT SUM(Packets) AS p FROM flow WHERE SrcPort = 41234 "
                          f"AND Interface = '{a.host_ifname}'")
    assert got[0]["p"] == 20
    assert our_tc_objects() == []
    # Nothing went wrong behind the screen: no background task error in the log.
    log = (tmp_path / "output" / "netobserv.log").read_text()
    assert "Traceback" not in log and "never retrieved" not in log, log[-3000:]


def test_packets_tui_shows_lab_packets_and_ctrl_c_leaves_a_readable_pcapng(
    lab: Lab, tmp_path: Path
) -> None:
    """`netobserv packets` with its TUI in a real terminal: the lab's datagrams appear, a real
    Ctrl+C ends the capture, the pcapng holds each datagram once per interface it crossed and
    the host keeps no TC object."""
    if shutil.which("tshark") is None:
        pytest.fail("tshark is missing: scripts/bootstrap installs it (apt package tshark)")
    term = Terminal(tmp_path, "packets", "udp,7788")
    pane, stdout, status = term.pane, term.stdout, term.status
    try:
        term.live()
        a, b = lab.pod("pod-a"), lab.pod("pod-b")
        sent = udp_send(lab, a, b, 15, 120, dst_port=7788, src_port=41288)
        udp_send(lab, a, b, 10, 120, dst_port=7789, src_port=41289)  # outside the filter
        assert sent.sent == sent.received == 15
        wait_for(lambda: f"written {2 * sent.sent} packets" in pane(), "the packets in the header",
                 on_timeout=pane)
        # The header comes from the aggregator's counters; the rows from reading the file.
        wait_for(lambda: f"{a.v4}:41288" in pane(), "the packets in the table", on_timeout=pane)
        screen = pane()
        assert f"{b.v4}:7788" in screen
        assert ":41289" not in screen
        term.key("C-c")
        wait_for(status.exists, "the capture to end", on_timeout=pane)
    finally:
        term.close()
    assert status.read_text().strip() == "0"
    paths = [Path(p) for p in stdout.read_text().split()]
    pcap = next(p for p in paths if p.suffix == ".pcapng")
    assert pcap.parent == tmp_path / "output" / "pcap"
    assert oct(pcap.stat().st_mode & 0o777) == "0o600"
    done = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "udp.dstport",
                           "-e", "frame.len", "-e", "frame.interface_name"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    complaints = [line for line in done.stderr.splitlines()
                  if line.strip() and not line.startswith('Running as user "root"')]
    assert complaints == []
    frames = [line.split("\t") for line in done.stdout.splitlines()]
    assert len(frames) == 2 * sent.sent
    assert {(f[0], int(f[1])) for f in frames} == {("7788", sent.frame_bytes)}
    assert sorted({f[2] for f in frames}) == sorted({a.host_ifname, b.host_ifname})
    assert our_tc_objects() == []


#: The README's main job, as a newcomer types it (`.venv/bin/netobserv flows --local --lab`).
README_MAIN_JOB = ("flows", "--local", "--lab")
#: Per view (Right presses from the Overview): its title and a row it shows of the lab: the
#: iptables DROP, the NXDOMAIN answer, a TCP flow's RTT in ms then its three counters.
LAB_VIEWS = (("Packet drops", r" TCP .* NETFILTER_DROP "),
             ("DNS", r" UDP .* missing\.lab\.test +NXDomain "),
             ("RTT", r" TCP .* \d+\.\d+ +\d+ +\d+ +\d+$"))


def test_the_readmes_main_job_fills_the_drops_dns_and_rtt_views_within_15_s(
    lab_host: None, tmp_path: Path
) -> None:
    """`netobserv flows --local --lab` with no other flag, in a real terminal: within 15 s
    of the command's start, the Packet drops, DNS and RTT views each list flows of their
    kind (the lab's iptables DROP, its DNS names, TCP with an RTT), then Ctrl+C leaves the
    host clean."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert f"netobserv {' '.join(README_MAIN_JOB)}\n" in readme
    started = time.monotonic()
    term = Terminal(tmp_path, *README_MAIN_JOB, exactly=True)
    try:
        seen: dict[str, float] = {}
        for title, sign in LAB_VIEWS:
            term.key("Right")

            def listed(title: str = title, sign: str = sign) -> bool:
                screen = term.pane()
                return (f"{title} · " in screen and " flows match seen by this capture" in screen
                        and any(re.search(sign, line) for line in screen.splitlines()))

            wait_for(listed, f"rows in the {title} view", deadline=started + 15,
                     on_timeout=term.pane)
            seen[title] = time.monotonic() - started
        print(f"seconds from the command's start: {seen}")
        term.key("C-c")
        wait_for(term.status.exists, "the capture to end")
    finally:
        term.close()
    assert term.status.read_text().strip() == "0"
    assert our_tc_objects() == []
    assert "nobs-lab-" not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                             text=True).stdout


def test_closing_the_terminal_stops_the_capture_and_leaves_the_host_clean(
    lab_host: None, tmp_path: Path
) -> None:
    """The terminal goes away under a running `netobserv flows --local --lab` (a closed
    window, a dropped ssh session: SIGHUP, then a terminal that cannot be written): the
    capture stops as with Ctrl+C, its files are complete, and no lab namespace, qdisc or
    process of it is left."""
    term = Terminal(tmp_path, *README_MAIN_JOB, exactly=True)
    try:
        term.live()
        wait_for(lambda: "flows 0 " not in term.pane(), "the first flows")
        pids = [p.pid for p in psutil.process_iter(["cmdline"])
                if "netobserv_tui" in " ".join(p.info["cmdline"] or ())]
        assert pids
    finally:
        term.close()  # tmux kill-server: the pane's processes get SIGHUP
    gone, alive = psutil.wait_procs([psutil.Process(pid) for pid in pids
                                     if psutil.pid_exists(pid)], timeout=60)
    assert alive == [], [p.cmdline() for p in alive]
    assert our_tc_objects() == []
    assert "nobs-lab-" not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                             text=True).stdout
    paths = [Path(p) for p in term.stdout.read_text().split()]
    db = next(p for p in paths if p.suffix == ".db")
    count = sqlite_rows(db, "SELECT count(*) AS n FROM flow")[0]["n"]
    assert count > 0 and not db.with_name(db.name + "-wal").exists()
    js = next(p for p in paths if p.suffix == ".json")
    assert len(json.loads(js.read_text())) == count
    log = (tmp_path / "output" / "netobserv.log").read_text()
    assert "Received SIGHUP" in log and "Traceback" not in log, log[-3000:]
