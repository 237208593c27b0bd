"""Kernel filters through the real command line, with real lab traffic."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from capture_helpers import NETOBSERV, Capture, our_tc_objects, sql_totals, sqlite_rows

from netobserv_tui.lab import Lab
from netobserv_tui.lab.traffic import tcp_transfer, udp_send

pytestmark = pytest.mark.kernel


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("flow capture needs root (eBPF, TC): run the tests as root")


def test_or_rules_keep_what_matches_and_nothing_else(lab: Lab, tmp_path: Path) -> None:
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    with Capture(tmp_path, "--enable_filter=true", "--protocol=udp", "--dport=7001", "or",
                 "--protocol=tcp", "--port=5201") as cap:
        inside = udp_send(lab, a, b, 40, 100, dst_port=7001, src_port=47001)
        udp_send(lab, a, b, 40, 100, dst_port=7002, src_port=47002)
        tcp_transfer(lab, a, b, 100_000, port=5201, src_port=47003)
        assert cap.stop() == 0, cap.stderr_lines
    db = cap.files()["db"]
    assert sql_totals(db, DstPort=7001)[(a.host_ifname, 0)] == (40, 40 * inside.frame_bytes)
    assert sql_totals(db, DstPort=7002) == {}
    assert (a.host_ifname, 0) in sql_totals(db, SrcPort=47003, DstPort=5201)
    assert (a.host_ifname, 1) in sql_totals(db, SrcPort=5201, DstPort=47003)  # --port: either
    others = sqlite_rows(db, "SELECT COUNT(*) AS n FROM flow WHERE NOT ((Proto = 17 AND "
                             "DstPort = 7001) OR (Proto = 6 AND 5201 IN (SrcPort, DstPort)))")
    assert others[0]["n"] == 0


def test_reject_rule_drops_only_its_traffic(lab: Lab, tmp_path: Path) -> None:
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    with Capture(tmp_path, "--enable_filter=true", "--action=Reject", "--dport=7003") as cap:
        udp_send(lab, a, b, 10, 50, dst_port=7003)
        kept = udp_send(lab, a, b, 10, 50, dst_port=7004)
        assert cap.stop() == 0, cap.stderr_lines
    db = cap.files()["db"]
    assert sql_totals(db, DstPort=7003) == {}
    assert sql_totals(db, DstPort=7004)[(a.host_ifname, 0)] == (10, 10 * kept.frame_bytes)


def test_sampling_records_the_rate_and_scales(lab: Lab, tmp_path: Path) -> None:
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    with Capture(tmp_path, "--sampling=4") as cap:
        udp_send(lab, a, b, 4000, 50, dst_port=7005, src_port=47005)
        assert cap.stop() == 0, cap.stderr_lines
    db = cap.files()["db"]
    rows = sqlite_rows(db, "SELECT SUM(Packets) AS p, MIN(Sampling) AS lo, MAX(Sampling) AS hi "
                           f"FROM flow WHERE DstPort = 7005 AND Interface = '{a.host_ifname}'")
    # Each packet is kept with probability 1/4: 1000 expected, standard deviation ~27.
    assert rows[0]["lo"] == rows[0]["hi"] == 4
    assert 865 <= rows[0]["p"] <= 1135, rows


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--enable_filter=true", "--cidr=10.0.0.0/33"], "--cidr"),
        (["--enable_filter=true", "--port=70000"], "--port"),
        (["--enable_filter=true", "--protocol=tcpx"], "--protocol"),
        (["--enable_filter=true", "--port_range=90-80"], "--port_range"),
    ],
)
def test_bad_filter_is_refused_before_anything_is_deployed(
    tmp_path: Path, argv: list[str], flag: str
) -> None:
    out = subprocess.run([*NETOBSERV, "flows", "--local", "--no-tui", "--output",
                          str(tmp_path), *argv], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert flag in out.stderr
    assert not (tmp_path / "flow").exists()
    assert our_tc_objects() == []


def test_drops_filter_keeps_only_dropped_traffic(lab: Lab, tmp_path: Path) -> None:
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    subprocess.run(["ip", "netns", "exec", b.netns, "iptables", "-A", "INPUT", "-p", "udp",
                    "--dport", "7008", "-j", "DROP"], check=True)
    # The drop hook sees the whole host (loopback included): narrow it to the lab.
    with Capture(tmp_path, "--enable_filter=true", "--drops=true", "--cidr=198.18.0.0/15") as cap:
        udp_send(lab, a, b, 12, 30, dst_port=7008, src_port=47008)  # dropped in pod-b
        udp_send(lab, a, b, 12, 30, dst_port=7009, src_port=47009)  # delivered
        assert cap.stop() == 0, cap.stderr_lines
    rows = sqlite_rows(cap.files()["db"], "SELECT DstPort, PktDropPackets, "
                                          "PktDropLatestDropCause FROM flow")
    assert rows, "nothing recorded"
    assert {r["DstPort"] for r in rows} == {7008}
    assert sum(r["PktDropPackets"] or 0 for r in rows) == 12
    assert {r["PktDropLatestDropCause"] for r in rows} == {"SKB_DROP_REASON_NETFILTER_DROP"}
