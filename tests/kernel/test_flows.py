"""Flow capture end to end on the real kernel: known traffic in, exact numbers out.

Ground truth comes from outside the tool: the generators' own counts and the host-side veth
counters. The lab is quiet (permanent neighbours, no IPv6 chatter), so every packet a host
end receives during a send belongs to the flow under test.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from capture_helpers import (
    NETOBSERV,
    Capture,
    credentials,
    json_records,
    our_tc_objects,
    sql_totals,
    sqlite_rows,
    totals,
)

from netobserv_tui.lab import Lab
from netobserv_tui.lab.traffic import iface_counters, ping, tcp_transfer, udp_send

pytestmark = pytest.mark.kernel

SEED_QUERY = (
    "SELECT DnsLatencyMs, DnsFlagsResponseCode, DnsId, DstAddr, DstPort, Interface, Proto, "
    "SrcAddr, SrcPort, Bytes, Packets FROM flow WHERE DnsLatencyMs >10 LIMIT 10;"
)


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("flow capture needs root (eBPF, TC): run the tests as root")


#: The accounting tests run twice: flows only, and with every feature on (issue 3).
FEATURES = pytest.mark.parametrize("features", [(), ("--enable_all=true",)], ids=["base", "all"])


#: Sends one datagram to each of 5,000 ports of pod-b, every second, for ``seconds``: 5,000
#: flows per second, 10,000 records per second at the two captured veths, far more than
#: the sockets between agent and aggregator hold while the aggregator does not read.
MANY_FLOWS = """
import socket, sys, time
src, dst, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
ports = int(sys.argv[4]) if len(sys.argv) > 4 else 5000
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 47000))
sent, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    began = time.monotonic()
    for port in range(20000, 20000 + ports):
        s.sendto(b"x" * 20, (dst, port))
        sent += 1
    time.sleep(max(0.0, 1.0 - (time.monotonic() - began)))
print(sent)
"""


def test_a_stopped_aggregator_loses_nothing_and_writes_nothing_twice(
    lab: Lab, tmp_path: Path
) -> None:
    """The aggregator is stopped (SIGSTOP) for 10 s while 5,000 flows run, then resumed.
    The agent keeps draining the kernel every second (its sends never wait on the stopped
    peer: they wait in its buffer) and delivers everything once it reads again. Before,
    the agent's send blocked, timed out, reconnected and sent again batches the aggregator
    then wrote twice. Now the records add up to exactly the datagrams sent (and the veth
    counted), and no (flow, interface, interval) record appears twice."""
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    with Capture(tmp_path) as cap:
        assert cap.proc is not None
        aggregator = next(child for child in psutil.Process(cap.proc.pid).children(True)
                          if "netobserv_tui.aggregator" in " ".join(child.cmdline()))
        assert lab.wait_quiet()
        before = iface_counters(a.host_ifname)
        sender = subprocess.Popen(["ip", "netns", "exec", a.netns, sys.executable, "-c",
                                   MANY_FLOWS, a.v4, b.v4, "16"], stdout=subprocess.PIPE,
                                  text=True)
        time.sleep(3)
        aggregator.suspend()
        try:
            time.sleep(10)
        finally:
            aggregator.resume()
        out, _ = sender.communicate(timeout=60)
        assert lab.wait_quiet()
        delta = iface_counters(a.host_ifname) - before
        assert cap.stop() == 0, cap.stderr_lines
    sent = int(out)
    assert sent >= 15 * 5000 and delta.rx_packets == sent  # nothing else left pod-a
    db = cap.files()["db"]
    got = sqlite_rows(db, "SELECT Interface, SUM(Packets) AS p, SUM(Bytes) AS b, "
                          "COUNT(DISTINCT DstPort) AS ports FROM flow WHERE SrcPort = 47000 "
                          "AND Proto = 17 GROUP BY Interface ORDER BY Interface")
    frame = 14 + 20 + 8 + 20
    assert {r["Interface"]: (r["p"], r["b"], r["ports"]) for r in got} == {
        a.host_ifname: (sent, sent * frame, 5000),
        b.host_ifname: (sent, sent * frame, 5000),
    }
    assert delta.rx_bytes == sent * frame
    twice = sqlite_rows(db, "SELECT DstPort, Interface, TimeFlowStartMs, count(*) AS n "
                            "FROM flow WHERE SrcPort = 47000 GROUP BY DstPort, Interface, "
                            "TimeFlowStartMs, TimeFlowEndMs HAVING n > 1 LIMIT 5")
    assert twice == []
    # The agent kept evicting once a second while the aggregator was stopped.
    intervals = sqlite_rows(db, "SELECT count(DISTINCT TimeFlowStartMs) AS n FROM flow "
                                f"WHERE DstPort = 20000 AND Interface = '{a.host_ifname}'")
    assert intervals[0]["n"] >= 14
    assert not any("lost" in line or "could not be delivered" in line
                   for line in cap.stderr_lines), cap.stderr_lines


def test_the_aggregator_gives_up_root_and_still_writes_everything(
    lab: Lab, tmp_path: Path
) -> None:
    """Run by root without sudo: the aggregator (what agents talk to) switches to a uid no
    account uses once its socket and files are open, with no group of root's. The output
    folder sits in a folder only root may enter, and the counts are still exact: it writes
    through what it opened as root. Its database is left in WAL mode, which the controller
    (root) ends: no -wal or -shm file is left, and the files are root's."""
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    private = tmp_path / "root-only"
    private.mkdir(mode=0o700)
    out = private / "out"
    with Capture(out, env={"SUDO_UID": ""}) as cap:
        uids, gids, groups = credentials(cap.child("netobserv_tui.aggregator"))
        assert lab.wait_quiet()
        sent = udp_send(lab, a, b, 300, 100, dst_port=7011, src_port=40011)
        assert cap.stop() == 0, cap.stderr_lines
    uid = uids[0]
    assert 61184 <= uid <= 65519 and uids == (uid,) * 4 and gids == (uid,) * 4, (uids, gids)
    assert groups == ""
    with pytest.raises(KeyError):
        pwd.getpwuid(uid)
    files = cap.files()
    flow = {"SrcPort": 40011, "DstPort": 7011, "Proto": 17}
    assert sql_totals(files["db"], **flow) == {
        (a.host_ifname, 0): (300, 300 * sent.frame_bytes),
        (b.host_ifname, 1): (300, 300 * sent.frame_bytes)}
    assert sorted(p.name for p in (out / "flow").iterdir()) == sorted(
        [files["db"].name, files["json"].name])
    assert sqlite_rows(files["db"], "PRAGMA journal_mode") == [{"journal_mode": "delete"}]
    for path in (out, out / "flow", files["db"], files["json"]):
        assert path.stat().st_uid == 0, path


@FEATURES
@pytest.mark.parametrize("family", [4, 6])
def test_udp_exact_packets_and_bytes(
    lab: Lab, tmp_path: Path, family: int, features: tuple[str, ...]
) -> None:
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    count, size = 1000, 200
    with Capture(tmp_path, *features) as cap:
        assert lab.wait_quiet()
        before_a, before_b = iface_counters(a.host_ifname), iface_counters(b.host_ifname)
        sent = udp_send(lab, a, b, count, size, dst_port=7001, family=family, src_port=40001)
        after_a, after_b = iface_counters(a.host_ifname), iface_counters(b.host_ifname)
        assert cap.stop() == 0, cap.stderr_lines
    assert sent.sent == sent.received == count
    rx_a, tx_b = after_a - before_a, after_b - before_b
    frame = sent.frame_bytes
    # The interface counters agree with the generator: nothing else crossed the lab.
    assert (rx_a.rx_packets, rx_a.rx_bytes) == (count, count * frame)
    assert (tx_b.tx_packets, tx_b.tx_bytes) == (count, count * frame)

    expected = {
        (a.host_ifname, 0): (count, count * frame),  # leaving pod-a: ingress at its host end
        (b.host_ifname, 1): (count, count * frame),  # entering pod-b: egress at its host end
    }
    flow = {
        "SrcAddr": a.addr(family),
        "DstAddr": b.addr(family),
        "SrcPort": 40001,
        "DstPort": 7001,
        "Proto": 17,
    }
    files = cap.files()
    assert sql_totals(files["db"], **flow) == expected
    records = json_records(files["json"])
    assert totals(records, **flow) == expected
    sample = next(r for r in records if r["DstPort"] == 7001)
    assert sample["Etype"] == (2048 if family == 4 else 34525)
    assert sample["SrcMac"] == a.mac.upper()
    assert sample["DstMac"] == b.mac.upper()
    assert sample["TimeFlowStartMs"] <= sample["TimeFlowEndMs"]
    assert abs(sample["TimeFlowEndMs"] / 1000 - time.time()) < 120
    # Each record lists both interfaces, pod-a's (seen first) first; counted once, the
    # flow is `count` packets, and so are the capture's totals (the summary, the header,
    # --max-bytes): the same rule over every record of the file.
    mine = [r for r in records if r.get("DstPort") == 7001 and r.get("SrcPort") == 40001]
    assert {(tuple(r["Interfaces"]), tuple(r["IfDirections"])) for r in mine} == {
        ((a.host_ifname, b.host_ifname), (0, 1))}
    once = sqlite_rows(files["db"], "SELECT SUM(Packets) AS p, SUM(Bytes) AS b FROM flow "
                                    "WHERE json_extract(Interfaces, '$[0]') = Interface "
                                    "AND json_extract(IfDirections, '$[0]') = IfDirection")
    flow_once = [r for r in mine if r["Interface"] == a.host_ifname]
    assert sum(r["Packets"] for r in flow_once) == count
    summary = next(line for line in cap.stderr_lines if line.endswith(" packets."))
    assert summary.endswith(f"{once[0]['b']} bytes, {once[0]['p']} packets."), summary
    assert our_tc_objects() == []


@FEATURES
@pytest.mark.parametrize("family", [4, 6])
def test_tcp_transfer_matches_interface_counters(
    lab: Lab, tmp_path: Path, family: int, features: tuple[str, ...]
) -> None:
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    nbytes = 3_000_000
    with Capture(tmp_path, *features) as cap:
        assert lab.wait_quiet()
        before = iface_counters(a.host_ifname)
        result = tcp_transfer(lab, a, b, nbytes, port=5201, family=family, src_port=40100)
        assert lab.wait_quiet()
        delta = iface_counters(a.host_ifname) - before
        assert cap.stop() == 0, cap.stderr_lines
    assert result.bytes_received == nbytes
    db = cap.files()["db"]
    client_to_server = sql_totals(db, SrcAddr=a.addr(family), SrcPort=40100, DstPort=5201, Proto=6)
    server_to_client = sql_totals(db, DstAddr=a.addr(family), DstPort=40100, SrcPort=5201, Proto=6)
    # Per skb, L2 header included: exactly what the veth counted.
    assert client_to_server[(a.host_ifname, 0)] == (delta.rx_packets, delta.rx_bytes)
    assert server_to_client[(a.host_ifname, 1)] == (delta.tx_packets, delta.tx_bytes)
    # The same packets crossed pod-b's host end in the other direction.
    assert client_to_server[(b.host_ifname, 1)] == client_to_server[(a.host_ifname, 0)]
    assert server_to_client[(b.host_ifname, 0)] == server_to_client[(a.host_ifname, 1)]
    flags = sqlite_rows(
        db, f"SELECT Flags FROM flow WHERE SrcPort = 40100 AND Interface = '{a.host_ifname}'"
    )
    combined = 0
    for row in flags:
        combined |= row["Flags"]
    assert combined & 0x02 and combined & 0x10 and combined & 0x01  # SYN, ACK, FIN


def test_interfaces_created_during_capture_are_captured(lab_host: None, tmp_path: Path) -> None:
    with Capture(tmp_path) as cap:
        with Lab(2) as lab:  # created after the agent attached to what existed then
            a, b = lab.pod("pod-a"), lab.pod("pod-b")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not _attached(a.host_ifname):
                time.sleep(0.05)
            assert _attached(a.host_ifname), "the new interface was not attached"
            sent = udp_send(lab, a, b, 50, 100, dst_port=7003, src_port=40003)
            assert cap.stop() == 0, cap.stderr_lines
            assert our_tc_objects() == []
    assert sent.received == 50
    db = cap.files()["db"]
    assert sql_totals(db, SrcPort=40003, DstPort=7003)[(a.host_ifname, 0)] == (
        50,
        50 * sent.frame_bytes,
    )


def _attached(ifname: str) -> bool:
    out = subprocess.run(
        ["tc", "filter", "show", "dev", ifname, "ingress"], capture_output=True, text=True
    ).stdout
    return "nobs_tc_ingress" in out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_flushes_last_interval_and_detaches(
    lab: Lab, tmp_path: Path, sig: signal.Signals
) -> None:
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    # A 60 s eviction interval: nothing is evicted before the signal, so every counted
    # packet reaches the files only through the final drain.
    with Capture(tmp_path, "--cache-active-timeout=60s") as cap:
        sent = udp_send(lab, a, b, 300, 64, dst_port=7004, src_port=40004)
        assert cap.stop(sig) == 0, cap.stderr_lines
    assert our_tc_objects() == []
    # Each stopping step is said before it runs, then the report.
    steps = [line.split(":")[0] for line in cap.stderr_lines
             if line.startswith(("Stopping the agent", "Completing the files", "Capture ended"))]
    assert steps == ["Stopping the agent", "Completing the files", "Capture ended"], steps
    files = cap.files()
    expected = (300, 300 * sent.frame_bytes)
    assert sql_totals(files["db"], SrcPort=40004, DstPort=7004)[(a.host_ifname, 0)] == expected
    assert totals(json_records(files["json"]), SrcPort=40004)[(a.host_ifname, 0)] == expected


def test_agent_killed_mid_capture_leaves_nothing(lab: Lab, tmp_path: Path) -> None:
    with Capture(tmp_path) as cap:
        agent = cap.child("netobserv_tui.agent")
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        assert our_tc_objects(), "a SIGKILLed agent cannot detach: its filters should remain"
        cap.stop(signal.SIGTERM)
    assert our_tc_objects() == []
    assert any("removed leftovers" in line for line in cap.stderr_lines), cap.stderr_lines
    files = cap.files()
    assert sqlite_rows(files["db"], "SELECT count(*) AS n FROM flow")[0]["n"] >= 0
    json_records(files["json"])


def test_cleanup_command_removes_leftovers_of_a_killed_agent(lab: Lab, tmp_path: Path) -> None:
    cap = Capture(tmp_path).start()
    agent = cap.child("netobserv_tui.agent")
    aggregator = cap.child("netobserv_tui.aggregator")
    # Kill the agent and the controller together, as `kill -9` or the OOM killer would.
    agent.send_signal(signal.SIGKILL)
    psutil_process(cap).send_signal(signal.SIGKILL)
    cap.wait(10)
    aggregator.wait(60)  # PR_SET_PDEATHSIG: it closes its files and exits on its own
    assert our_tc_objects(), "a SIGKILLed agent cannot detach: its filters should remain"
    out = subprocess.run([*NETOBSERV, "cleanup"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "removed" in out.stdout
    assert our_tc_objects() == []
    again = subprocess.run([*NETOBSERV, "cleanup"], capture_output=True, text=True)
    assert again.returncode == 0 and "nothing to clean up" in again.stdout


def psutil_process(cap: Capture) -> psutil.Process:
    assert cap.proc
    return psutil.Process(cap.proc.pid)


def test_controller_killed_children_stop_and_detach(lab: Lab, tmp_path: Path) -> None:
    cap = Capture(tmp_path).start()
    children = cap.children()
    psutil_process(cap).send_signal(signal.SIGKILL)
    cap.wait(10)
    for child in children:
        child.wait(60)  # PR_SET_PDEATHSIG delivers SIGTERM: they end on their own
    assert our_tc_objects() == []


def test_seed_query_runs_unchanged(lab: Lab, tmp_path: Path) -> None:
    with Capture(tmp_path) as cap:
        udp_send(lab, "pod-a", "pod-b", 10, 10, dst_port=7005)
        cap.stop()
    out = subprocess.run(
        ["sqlite3", str(cap.files()["db"]), SEED_QUERY], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout == ""  # no DNS feature yet: DnsLatencyMs is NULL everywhere


def test_max_time_ends_capture_with_complete_files(lab: Lab, tmp_path: Path) -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [
            *NETOBSERV,
            "flows",
            "--local",
            "--no-tui",
            "--max-time=3s",
            "--interfaces=nobs-*",
            "--output",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "max-time reached" in proc.stderr
    assert time.monotonic() - started >= 3
    paths = [Path(p) for p in proc.stdout.split()]
    assert {p.suffix for p in paths} == {".json", ".db"}
    assert all(p.parent == tmp_path / "flow" for p in paths)
    assert our_tc_objects() == []


def test_max_bytes_ends_capture(lab: Lab, tmp_path: Path) -> None:
    with Capture(tmp_path, "--max-bytes=20000") as cap:
        sent = udp_send(lab, "pod-a", "pod-b", 200, 200, dst_port=7006)
        assert sent.received == 200  # 200 x 242 bytes, twice (two host ends) > 20000
        assert cap.wait(60) == 0, cap.stderr_lines
    assert any("max-bytes reached" in line for line in cap.stderr_lines)


def test_flows_without_root_says_what_to_do(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            sys.executable,
            "-m",
            "netobserv_tui",
            "flows",
            "--local",
            "--no-tui",
            "--output",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3
    assert "needs root or the capabilities" in proc.stderr
    assert "sudo" in proc.stderr


@FEATURES
def test_full_flow_map_loses_nothing_and_says_so(
    lab: Lab, tmp_path: Path, features: tuple[str, ...]
) -> None:
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    # 8 map entries, one eviction at the end: most of the 30 flows x 2 interfaces find the
    # map full and travel through the overflow ring buffer instead (and, with features on,
    # through the join of feature data by key).
    with Capture(tmp_path, "--cache-max-flows=8", "--cache-active-timeout=60s",
                 *features) as cap:
        results = [udp_send(lab, a, b, 5, 50, dst_port=7010, src_port=42000 + i)
                   for i in range(30)]
        assert cap.stop() == 0, cap.stderr_lines
    assert all(r.received == 5 for r in results)
    db = cap.files()["db"]
    got = sql_totals(db, DstPort=7010, Proto=17)
    frame = results[0].frame_bytes
    assert got[(a.host_ifname, 0)] == (150, 150 * frame)
    assert got[(b.host_ifname, 1)] == (150, 150 * frame)
    flows = sqlite_rows(db, "SELECT COUNT(DISTINCT SrcPort) AS n FROM flow WHERE DstPort = 7010")
    assert flows[0]["n"] == 30
    report = "\n".join(cap.stderr_lines)
    assert "kernel flow map was full" in report, report
    assert "0 lost" in report, report


def test_sustained_traffic_over_10000_flows_adds_up_exactly(lab: Lab, tmp_path: Path) -> None:
    """60 s of 10,000 flows a second (one datagram each, as fast as the generator goes, then
    the rest of the second idle), 1 s evictions: each veth's records add up to exactly the
    datagrams sent and the veth's own counters."""
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    with Capture(tmp_path) as cap:
        assert lab.wait_quiet()
        before_a, before_b = iface_counters(a.host_ifname), iface_counters(b.host_ifname)
        out = subprocess.run(["ip", "netns", "exec", a.netns, sys.executable, "-c",
                              MANY_FLOWS, a.v4, b.v4, "60", "10000"], capture_output=True,
                             text=True, check=True, timeout=180).stdout
        assert lab.wait_quiet()
        rx_a = iface_counters(a.host_ifname) - before_a
        tx_b = iface_counters(b.host_ifname) - before_b
        assert cap.stop() == 0, cap.stderr_lines
    sent = int(out)
    frame = 14 + 20 + 8 + 20
    assert sent >= 50 * 10_000 and (rx_a.rx_packets, tx_b.tx_packets) == (sent, sent)
    got = sqlite_rows(cap.files()["db"], "SELECT Interface, SUM(Packets) AS p, SUM(Bytes) AS b "
                      "FROM flow WHERE SrcPort = 47000 AND Proto = 17 GROUP BY Interface")
    assert {r["Interface"]: (r["p"], r["b"]) for r in got} == {
        a.host_ifname: (sent, sent * frame), b.host_ifname: (sent, sent * frame)}
    assert not any("lost" in line for line in cap.stderr_lines), cap.stderr_lines


def test_more_flows_than_the_map_holds_are_all_accounted_for(
    lab: Lab, tmp_path: Path
) -> None:
    """5,000 flows a second for 5 s against a 2,000-entry flow map (two interfaces: 10,000
    entries a second wanted). What does not fit goes through the overflow ring buffer;
    every datagram is in the file, or counted as lost in the end summary."""
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    with Capture(tmp_path, "--cache-max-flows=2000") as cap:
        assert lab.wait_quiet()
        before = iface_counters(a.host_ifname)
        out = subprocess.run(["ip", "netns", "exec", a.netns, sys.executable, "-c",
                              MANY_FLOWS, a.v4, b.v4, "5"], capture_output=True, text=True,
                             check=True, timeout=60).stdout
        assert lab.wait_quiet()
        delta = iface_counters(a.host_ifname) - before
        assert cap.stop() == 0, cap.stderr_lines
    sent = int(out)
    assert delta.rx_packets == sent
    report = "\n".join(cap.stderr_lines)
    assert "kernel flow map was full" in report, report
    lost = int(re.search(r"overflow ring buffer, (\d+) lost", report).group(1))  # type: ignore[union-attr]
    got = sqlite_rows(cap.files()["db"], "SELECT Interface, SUM(Packets) AS p FROM flow "
                      "WHERE SrcPort = 47000 AND Proto = 17 GROUP BY Interface")
    written = {r["Interface"]: r["p"] for r in got}
    print(f"sent {sent}, written {written}, lost {lost}")
    # Each datagram crossed both veths: 2 x sent packets to account for, written or lost.
    assert written[a.host_ifname] + written[b.host_ifname] + lost == 2 * sent, (written, lost)


SCTP_SENDER = """
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 132)
header = struct.pack("!HHII", 2905, 3868, 0, 0) + b"x" * 20
for _ in range({count}):
    s.sendto(header, ("{dst}", 0))
"""


def test_icmp_icmpv6_and_sctp_are_told_apart(lab: Lab, tmp_path: Path) -> None:
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    with Capture(tmp_path) as cap:
        assert ping(lab, a, b, count=4, family=4).received == 4
        assert ping(lab, a, b, count=3, family=6).received == 3
        subprocess.run(["ip", "netns", "exec", a.netns, sys.executable, "-c",
                        SCTP_SENDER.format(count=7, dst=b.v4)], check=True)
        assert cap.stop() == 0, cap.stderr_lines
    db = cap.files()["db"]
    ingress_a = (a.host_ifname, 0)
    egress_a = (a.host_ifname, 1)
    assert sql_totals(db, Proto=1, IcmpType=8, IcmpCode=0)[ingress_a][0] == 4  # echo request
    assert sql_totals(db, Proto=1, IcmpType=0, IcmpCode=0)[egress_a][0] == 4   # echo reply
    assert sql_totals(db, Proto=58, IcmpType=128)[ingress_a][0] == 3
    assert sql_totals(db, Proto=58, IcmpType=129)[egress_a][0] == 3
    sctp = sql_totals(db, Proto=132, SrcPort=2905, DstPort=3868)
    assert sctp[ingress_a] == (7, 7 * (14 + 20 + 32))
