"""The lab with real namespaces and real traffic: topology, exact counts, cleanup, CLI.

Ground truth comes from outside the lab code where possible: ``ip`` output, the kernel's
interface counters, and the receiving process's own count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import pytest

from netobserv_tui.lab import (
    BRIDGE_NAME,
    LOCK_FD_ENV,
    IfaceCounters,
    Lab,
    LabTraffic,
    cleanup_all,
    iface_counters,
    iter_lab_pids,
    lab_lock,
    lab_status,
    ping,
    tcp_transfer,
    udp_frame_bytes,
    udp_send,
)
from netobserv_tui.lab import cli as lab_cli
from netobserv_tui.lab._proc import worker_pids
from netobserv_tui.model.errors import LabError

pytestmark = pytest.mark.kernel

LAB_IFNAMES = {BRIDGE_NAME, "nobs-pod-a", "nobs-pod-b", "nobs-pod-c"}
LAB_NAMESPACES = {"nobs-lab-pod-a", "nobs-lab-pod-b", "nobs-lab-pod-c"}


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def netns_names() -> set[str]:
    out = sh("ip", "-j", "netns", "list").strip()
    return {entry["name"] for entry in json.loads(out)} if out else set()


def root_ifnames() -> set[str]:
    return {link["ifname"] for link in json.loads(sh("ip", "-j", "link", "show"))}


def counters(lab: Lab) -> dict[str, IfaceCounters]:
    return {pod.name: iface_counters(pod.host_ifname) for pod in lab.pods}


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def run_child(argv: list[str], lock_fd: int) -> subprocess.CompletedProcess[str]:
    """Run a child that shares our hold on the lab lock, so that no concurrent test run on
    this machine builds, inspects or removes a lab in the middle of the test."""
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, LOCK_FD_ENV: str(lock_fd)},
        pass_fds=(lock_fd,),
    )


def run_cli(lock_fd: int, *args: str) -> subprocess.CompletedProcess[str]:
    return run_child([sys.executable, "-m", "netobserv_tui.lab", *args], lock_fd)


# --- topology ----------------------------------------------------------------------------------


def test_up_then_down_leaves_nothing_behind(lab_host: None) -> None:
    with lab_lock(timeout=120):  # so that no other test run builds its lab in between
        up_then_down()


def up_then_down() -> None:
    lab = Lab(3)
    with lab:
        assert LAB_NAMESPACES <= netns_names()
        assert LAB_IFNAMES <= root_ifnames()
        assert lab.status().state == "up"
        for pod in lab.pods:
            link = json.loads(sh("ip", "-j", "link", "show", "dev", pod.host_ifname))[0]
            assert link["master"] == BRIDGE_NAME
            assert link["ifindex"] == pod.host_ifindex
        # The bridge and the host ends carry no address; the root namespace has no lab route.
        for ifname in LAB_IFNAMES:
            addrs = json.loads(sh("ip", "-j", "addr", "show", "dev", ifname))[0]
            assert addrs.get("addr_info", []) == [], f"{ifname} has addresses"
        assert "198.18." not in sh("ip", "-4", "route", "show", "table", "all")
        assert "fd00:198:18" not in sh("ip", "-6", "route", "show", "table", "all")
        bridge = json.loads(sh("ip", "-j", "-d", "link", "show", "dev", BRIDGE_NAME))[0]
        data = bridge["linkinfo"]["info_data"]
        assert data["stp_state"] == 0
        assert data["forward_delay"] == 0
    assert not lab.is_up
    assert not (LAB_NAMESPACES & netns_names())
    assert not (LAB_IFNAMES & root_ifnames())
    assert lab_status().state == "absent"
    lab.down()  # idempotent
    assert lab_status().state == "absent"


def test_pods_have_the_documented_names_addresses_and_macs(lab: Lab) -> None:
    assert [pod.name for pod in lab.pods] == ["pod-a", "pod-b", "pod-c"]
    for i, pod in enumerate(lab.pods):
        assert pod.netns == f"nobs-lab-{pod.name}"
        assert pod.host_ifname == f"nobs-{pod.name}"
        assert pod.v4 == f"198.18.0.{10 + i}"
        assert pod.v6 == f"fd00:198:18::{10 + i}"
        info = json.loads(sh("ip", "-n", pod.netns, "-j", "addr", "show", "dev", "eth0"))[0]
        assert info["ifindex"] == pod.ifindex
        assert info["address"] == pod.mac
        assert info["operstate"] == "UP"
        addrs = {(a["local"], a["prefixlen"]) for a in info["addr_info"]}
        assert {(pod.v4, 24), (pod.v6, 64)} <= addrs
        assert not any(a.get("tentative") for a in info["addr_info"])
        lo = json.loads(sh("ip", "-n", pod.netns, "-j", "link", "show", "dev", "lo"))[0]
        assert "UP" in lo["flags"]
    assert lab.pod("b") is lab.pod("pod-b") is lab.pod(1)
    with pytest.raises(LabError, match="no pod 'z'"):
        lab.pod("z")


def test_a_second_lab_is_refused_while_one_exists(lab: Lab) -> None:
    with pytest.raises(LabError, match="already has a lab up"):
        Lab(2).up()
    assert lab.status().state == "up"


def test_lab_is_quiet_when_idle(lab: Lab) -> None:
    """No background chatter (RS, MLD, ARP/ND, DAD): counters stay still while nobody sends."""
    before = lab.host_counters()
    observed = time.monotonic() + 2.0
    while time.monotonic() < observed:
        time.sleep(0.1)
        assert lab.host_counters() == before


# --- traffic with exact counts -----------------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
def test_udp_send_exact_counts_and_veth_counters(lab: Lab, family: int) -> None:
    count, size = 500, 200
    assert lab.wait_quiet(), "the lab never became quiet; counters would not be exact"
    before = counters(lab)
    pod_before = iface_counters("eth0", netns=lab.pod("a").netns)
    result = udp_send(lab, "pod-a", "pod-b", count, size, 7000, family=family, src_port=40000)
    after = counters(lab)
    pod_after = iface_counters("eth0", netns=lab.pod("a").netns)

    assert result.sent == result.received == count
    assert result.bytes_received == count * size
    assert result.src_ports_seen == (40000,)
    assert (result.src_port, result.dst_port) == (40000, 7000)

    frame = udp_frame_bytes(size, family)
    assert frame == size + (42 if family == 4 else 62)
    a, b, c = (after[name] - before[name] for name in ("pod-a", "pod-b", "pod-c"))
    # pod-a's frames enter the bridge on nobs-pod-a (rx) and leave on nobs-pod-b (tx).
    assert (a.rx_packets, a.rx_bytes) == (count, count * frame)
    assert (b.tx_packets, b.tx_bytes) == (count, count * frame)
    # Nothing else moved: no replies, no ARP/ND, no flooding to pod-c.
    assert (a.tx_packets, b.rx_packets) == (0, 0)
    assert (c.rx_packets, c.tx_packets) == (0, 0)
    assert (a.rx_dropped, b.tx_dropped) == (0, 0)
    pod_delta = pod_after - pod_before
    assert (pod_delta.tx_packets, pod_delta.tx_bytes) == (count, count * frame)


class TestTrafficOnASharedLab:
    """Generators on one lab built for the whole class."""

    def test_udp_send_rejects_payloads_that_would_fragment(self, class_lab: Lab) -> None:
        with pytest.raises(LabError, match="does not fit one IPv6 packet"):
            udp_send(class_lab, "a", "b", 1, 1453, 7000, family=6)

    @pytest.mark.parametrize("family", [4, 6])
    def test_tcp_transfer_byte_count(self, class_lab: Lab, family: int) -> None:
        nbytes = 3_000_001
        before = counters(class_lab)
        result = tcp_transfer(class_lab, "pod-a", "pod-c", nbytes, port=5201, family=family)
        after = counters(class_lab)
        assert result.bytes_sent == result.bytes_received == nbytes
        assert result.server_port == 5201
        assert 1024 <= result.client_port <= 65535
        a = after["pod-a"] - before["pod-a"]
        c = after["pod-c"] - before["pod-c"]
        assert a.rx_bytes > nbytes  # payload plus headers, however GSO grouped the segments
        assert c.tx_bytes == a.rx_bytes
        assert after["pod-b"] == before["pod-b"]

    @pytest.mark.parametrize("family", [4, 6])
    def test_ping(self, class_lab: Lab, family: int) -> None:
        result = ping(class_lab, "pod-c", "pod-a", count=3, family=family, interval=0.05)
        assert (result.transmitted, result.received) == (3, 3)
        assert len(result.rtts_ms) == 3 and all(rtt > 0 for rtt in result.rtts_ms)

    def test_generators_reap_their_processes(self, class_lab: Lab) -> None:
        udp_send(class_lab, "b", "c", 10, 10, 7001)
        tcp_transfer(class_lab, "c", "b", 1000, port=5202)
        ping(class_lab, "a", "b", count=1)
        assert list(iter_lab_pids()) == []
        assert worker_pids() == []

    def test_generator_failure_is_a_lab_error_and_reaps(self, class_lab: Lab) -> None:
        # The background sink owns [::]:9100 in pod-c, so the receiver cannot bind there.
        with LabTraffic(class_lab, udp_port=9100), pytest.raises(LabError, match="receiver"):
            udp_send(class_lab, "a", "c", 1, 10, 9100)
        assert list(iter_lab_pids()) == []

    def test_background_traffic_runs_until_stopped(self, class_lab: Lab) -> None:
        before = counters(class_lab)
        with LabTraffic(class_lab, interval=0.2) as traffic:
            wait_until(lambda: traffic.stats().get("rounds", 0) >= 6, 15.0, "6 traffic rounds")
            traffic.check()
        stats = traffic.stats()
        after = counters(class_lab)
        assert stats["http_ok"] >= 4 and stats["http_not_found"] >= 1
        assert stats["http_failed"] == 0
        assert stats["udp_sent"] == stats["rounds"]
        assert stats["ping_replied"] == stats["ping_sent"] == 2 * stats["rounds"]
        for name in ("pod-a", "pod-b", "pod-c"):
            assert after[name].rx_packets > before[name].rx_packets
        assert not traffic.running
        assert list(iter_lab_pids()) == []
        assert worker_pids() == []


# --- cleanup and CLI ---------------------------------------------------------------------------

CRASHING_CHILD = textwrap.dedent(
    """
    import os, subprocess
    from netobserv_tui.lab import Lab
    lab = Lab(3).up()
    # A process left running inside a pod, as a crashed generator would leave it.
    proc = subprocess.Popen(["ip", "netns", "exec", lab.pods[1].netns, "sleep", "300"],
                            start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(proc.pid, flush=True)
    os._exit(1)  # no down(), no finally: the Lab object is lost
    """
)


def test_cleanup_all_removes_the_leftovers_of_a_lost_lab(lab_host: None) -> None:
    with lab_lock(timeout=120) as fd:
        child = run_child([sys.executable, "-c", CRASHING_CHILD], fd)
        assert child.returncode == 1, child.stderr
        assert child.stdout.strip().isdigit(), child.stderr
        orphan = int(child.stdout.strip())
        try:
            status = lab_status()
            assert status.state == "up" and len(status.pods) == 3
            assert LAB_NAMESPACES <= netns_names()
            with pytest.raises(LabError, match="already exists.*lab down"):
                Lab(3).up()
            assert lab_status() == status  # refusing to build must not harm the existing lab
        finally:
            removed = cleanup_all()
        assert set(removed) == LAB_NAMESPACES | LAB_IFNAMES
        assert not (LAB_NAMESPACES & netns_names())
        assert not (LAB_IFNAMES & root_ifnames())
        wait_until(lambda: not os.path.exists(f"/proc/{orphan}"), 5.0, "the orphan to be killed")
        assert cleanup_all() == []


def test_cli_up_status_down(lab_host: None) -> None:
    with lab_lock(timeout=120) as fd:
        try:
            up = run_cli(fd, "up", "--pods", "2", "--json")
            assert up.returncode == 0, up.stderr
            built = json.loads(up.stdout)
            assert built["state"] == "up"
            assert [pod["name"] for pod in built["pods"]] == ["pod-a", "pod-b"]

            again = run_cli(fd, "up")
            assert again.returncode == 1
            assert "already exists" in again.stderr and "lab down" in again.stderr

            status = run_cli(fd, "status", "--json")
            assert status.returncode == 0, status.stderr
            assert json.loads(status.stdout)["pods"] == built["pods"]
            human = run_cli(fd, "status")
            assert human.returncode == 0
            assert "pod-b" in human.stdout and "198.18.0.11/24" in human.stdout

            traffic = run_cli(fd, "traffic", "--duration", "1.5", "--interval", "0.3", "--json")
            assert traffic.returncode == 0, traffic.stderr
            assert json.loads(traffic.stdout)["http_ok"] >= 1
        finally:
            down = run_cli(fd, "down", "--json")
        assert down.returncode == 0, down.stderr
        assert "nobs-lab-pod-a" in json.loads(down.stdout)["removed"]
        gone = run_cli(fd, "status")
        assert gone.returncode == 1 and "No lab exists" in gone.stdout
        assert run_cli(fd, "down").stdout.strip() == "No lab to remove."


def test_cli_errors_say_what_to_do(
    lab_host: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lab_cli.main(["up", "--pods", "0"]) == 2
    assert "1 to 26 pods" in capsys.readouterr().err
    with lab_lock(timeout=120):
        assert lab_status().state == "absent"
        assert lab_cli.main(["traffic", "--duration", "1"]) == 1
    assert "run `netobserv lab up`" in capsys.readouterr().err
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert lab_cli.main(["status"]) == 3
    assert "run it again as root" in capsys.readouterr().err
