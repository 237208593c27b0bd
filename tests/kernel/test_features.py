"""Flow features on the real kernel: drops with their cause, RTT, retransmissions, resets.

Ground truth comes from the kernel's own counters in the lab namespaces (iptables rule
counters, /proc/net/snmp of a pod) and from `ss -ti`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from capture_helpers import Capture, sqlite_rows

from netobserv_tui.lab import Lab, Pod
from netobserv_tui.lab.demo import SLOW_DNS_MS, SLOW_NAME
from netobserv_tui.store.findings import findings

pytestmark = pytest.mark.kernel


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("flow capture needs root (eBPF, TC): run the tests as root")


def in_pod(pod: Pod, *argv: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", pod.netns, *argv], capture_output=True,
                          text=True, check=True, **kwargs)  # type: ignore[call-overload]


def iptables_counter(pod: Pod, port: int) -> tuple[int, int]:
    out = in_pod(pod, "iptables", "-L", "INPUT", "-v", "-x", "-n").stdout
    for line in out.splitlines():
        if f"dpt:{port}" in line:
            packets, nbytes = line.split()[:2]
            return int(packets), int(nbytes)
    raise AssertionError(f"no rule for port {port}: {out}")


def snmp(pod: Pod, name: str) -> int:
    """A Tcp: counter of the pod's namespace (/proc/net/snmp is per network namespace)."""
    lines = [line.split() for line in in_pod(pod, "cat", "/proc/net/snmp").stdout.splitlines()
             if line.startswith("Tcp:")]
    return int(lines[1][lines[0].index(name)])


CONNECT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout({timeout})
s.bind(("{src}", {sport}))
try:
    s.connect(("{dst}", {dport}))
except OSError as exc:
    print(type(exc).__name__)
"""


def test_firewall_drop_matches_iptables_counter(lab: Lab, tmp_path: Path) -> None:
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    # Only this flow's packets: the counter then counts what the query below sums (any
    # other SYN to 8081, such as a straggler of the lab's demo, is not dropped here).
    in_pod(b, "iptables", "-A", "INPUT", "-p", "tcp", "--sport", "45000", "--dport", "8081",
           "-j", "DROP")
    with Capture(tmp_path, "--enable_pktdrop=true") as cap:
        out = in_pod(a, sys.executable, "-c", CONNECT.format(
            timeout=2.5, src=a.v4, sport=45000, dst=b.v4, dport=8081)).stdout
        assert "timeout" in out.lower()  # the SYNs never got an answer
        assert cap.stop() == 0, cap.stderr_lines
    dropped_packets, dropped_bytes = iptables_counter(b, 8081)
    assert dropped_packets >= 2  # the SYN and at least one retransmission
    rows = sqlite_rows(cap.files()["db"],
                       "SELECT SUM(PktDropPackets) AS p, SUM(PktDropBytes) AS b, "
                       "GROUP_CONCAT(DISTINCT PktDropLatestDropCause) AS cause, "
                       "GROUP_CONCAT(DISTINCT PktDropLatestFlags) AS flags FROM flow "
                       "WHERE SrcPort = 45000 AND DstPort = 8081 AND PktDropPackets > 0")
    # iptables counts IP bytes; at netfilter skb->len starts at the IP header too.
    assert (rows[0]["p"], rows[0]["b"]) == (dropped_packets, dropped_bytes)
    assert rows[0]["cause"] == "SKB_DROP_REASON_NETFILTER_DROP"
    assert rows[0]["flags"] == "2"  # SYN


def test_drop_without_any_tc_flow_is_still_a_record(lab: Lab, tmp_path: Path) -> None:
    """Drops no TC hook saw become complete records: the eviction window as their time and,
    as Interface, where the kernel dropped them (``-`` before a device was chosen; a device
    of another namespace as ``if<index>@netns:<inode>``)."""
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    in_pod(a, "iptables", "-A", "OUTPUT", "-p", "udp", "--dport", "9999", "-j", "DROP")
    in_pod(a, "iptables", "-A", "INPUT", "-p", "udp", "--dport", "9998", "-j", "DROP")
    send = ("import socket, sys\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.bind((sys.argv[1], int(sys.argv[2])))\n"
            "for _ in range(5):\n    try: s.sendto(b'x' * 20, (sys.argv[3], int(sys.argv[4])))\n"
            "    except OSError: pass\n")
    # Only pod-c's interface is captured, so no TC hook sees these packets.
    with Capture(tmp_path, "--enable_pktdrop=true", interfaces=lab.pod("pod-c").host_ifname
                 ) as cap:
        # Dropped in pod-a's OUTPUT chain, before the kernel chose an output device.
        in_pod(a, sys.executable, "-c", send, a.v4, "46000", b.v4, "9999")
        # Dropped in pod-a's INPUT chain: the device is pod-a's eth0, in pod-a's namespace.
        in_pod(b, sys.executable, "-c", send, b.v4, "46001", a.v4, "9998")
        assert cap.stop() == 0, cap.stderr_lines
    rows = sqlite_rows(cap.files()["db"],
                       "SELECT SrcPort, Packets, Bytes, PktDropPackets, Interface, "
                       "TimeFlowStartMs, TimeFlowEndMs FROM flow "
                       "WHERE SrcPort IN (46000, 46001) AND PktDropPackets > 0")
    netns = os.stat(f"/run/netns/{a.netns}").st_ino
    ifindex = int(in_pod(a, "cat", "/sys/class/net/eth0/ifindex").stdout)
    for port, where in ((46000, "-"), (46001, f"if{ifindex}@netns:{netns}")):
        mine = [r for r in rows if r["SrcPort"] == port]
        assert sum(r["PktDropPackets"] for r in mine) == 5, rows
        assert {r["Interface"] for r in mine} == {where}, rows
    assert all(r["Packets"] == 0 for r in rows)
    assert all(0 < r["TimeFlowStartMs"] <= r["TimeFlowEndMs"] for r in rows)


ECHO_SERVER = """
import socket
srv = socket.socket(socket.{family}, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1){dual_stack}
srv.bind(("{addr}", {port})); srv.listen(1)
print("ready", flush=True)
conn, _ = srv.accept()
while data := conn.recv(65536):
    conn.sendall(data)
"""


def echo_server(addr: str, port: int) -> str:
    """The source of a one-connection TCP echo server on ``addr``; on ``::``, an IPv6
    socket that takes IPv4 too (IPV6_V6ONLY off, as most servers listen)."""
    dual = addr == "::"
    return ECHO_SERVER.format(
        family="AF_INET6" if dual else "AF_INET", addr=addr, port=port,
        dual_stack="\nsrv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)" if dual else "")


PING_PONG_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.bind(("{src}", {sport})); s.connect(("{dst}", {dport}))
for _ in range({rounds}):
    s.sendall(b"x" * 100)
    got = 0
    while got < 100:
        got += len(s.recv(100 - got))
print("done", flush=True)
sys.stdin.read()   # keep the connection open while `ss` looks at it
"""


def ping_pong(lab: Lab, tmp_path: Path, server_code: str, sport: int, dport: int,
              rounds: int, look: tuple[str, ...], look_in: Pod | None = None,
              ) -> tuple[Capture, str]:
    """A capture with RTT on while pod-a's client exchanges ``rounds`` small messages with
    ``server_code`` run in pod-b (it prints "ready", then echoes); ``look`` runs in
    ``look_in`` (pod-a) while the connection is still open.  The stopped capture, and what
    ``look`` printed."""
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    server = subprocess.Popen(["ip", "netns", "exec", b.netns, sys.executable, "-c",
                               server_code], stdout=subprocess.PIPE, text=True)
    client = None
    try:
        assert server.stdout and server.stdout.readline().strip() == "ready"
        with Capture(tmp_path, "--enable_rtt=true") as cap:
            client = subprocess.Popen(
                ["ip", "netns", "exec", a.netns, sys.executable, "-c", PING_PONG_CLIENT.format(
                    src=a.v4, sport=sport, dst=b.v4, dport=dport, rounds=rounds)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert client.stdout and client.stdout.readline().strip() == "done"
            seen = in_pod(look_in or a, *look).stdout
            assert cap.stop() == 0, cap.stderr_lines
    finally:
        for proc in (client, server):
            if proc is not None:
                proc.kill()
                proc.wait()
    return cap, seen


def test_rtt_agrees_with_ss(lab: Lab, tmp_path: Path) -> None:
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    cap, ss = ping_pong(lab, tmp_path, echo_server(b.v4, 9100), 45100, 9100,
                        300, ("ss", "-tin", "src", f"{a.v4}:45100"))
    ss_rtt_ns = float(re.search(r"\brtt:([\d.]+)/", ss).group(1)) * 1e6  # type: ignore[union-attr]
    rows = sqlite_rows(cap.files()["db"],
                       "SELECT TimeFlowRttNs FROM flow WHERE SrcPort = 45100 AND DstPort = 9100 "
                       f"AND Interface = '{a.host_ifname}' AND TimeFlowRttNs IS NOT NULL "
                       "ORDER BY TimeFlowEndMs DESC LIMIT 1")
    ours = rows[0]["TimeFlowRttNs"]
    # tcp:tcp_probe fires as a segment arrives, before that segment's RTT sample updates
    # srtt, so our latest value lags `ss` by one sample: srtt moves by (sample - srtt) / 8,
    # and lab RTTs are tens of microseconds, so allow 25% or 20 us.
    assert abs(ours - ss_rtt_ns) <= max(0.25 * ss_rtt_ns, 20_000), (ours, ss_rtt_ns, ss)


BULK_CLIENT = """
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.bind(("{src}", {sport})); s.connect(("{dst}", {dport}))
for _ in range({rounds}):
    s.sendall(b"y" * 200)
    time.sleep(0.002)
s.shutdown(socket.SHUT_WR)
while s.recv(65536):
    pass
"""


def test_retransmissions_match_the_kernel_counter(lab: Lab, tmp_path: Path) -> None:
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    # Lose every 5th data segment arriving at the server (kernel-side loss, no delay).
    in_pod(b, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "9200", "-m", "statistic",
           "--mode", "nth", "--every", "5", "--packet", "0", "-j", "DROP")
    server = subprocess.Popen(["ip", "netns", "exec", b.netns, sys.executable, "-c",
                               echo_server(b.v4, 9200)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout and server.stdout.readline().strip() == "ready"
        with Capture(tmp_path, "--enable_rtt=true") as cap:
            before = snmp(a, "RetransSegs")
            in_pod(a, sys.executable, "-c", BULK_CLIENT.format(
                src=a.v4, sport=45200, dst=b.v4, dport=9200, rounds=300), timeout=120)
            retrans = snmp(a, "RetransSegs") - before
            assert cap.stop() == 0, cap.stderr_lines
    finally:
        server.kill()
        server.wait()
    assert retrans > 0
    rows = sqlite_rows(cap.files()["db"],
                       "SELECT SUM(TcpRetransmits) AS n FROM flow WHERE SrcPort = 45200 "
                       f"AND DstPort = 9200 AND Interface = '{a.host_ifname}'")
    assert rows[0]["n"] == retrans


def test_resets_sent_and_received(lab: Lab, tmp_path: Path) -> None:
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    with Capture(tmp_path, "--enable_rtt=true") as cap:
        out_rsts = snmp(b, "OutRsts")
        out = in_pod(a, sys.executable, "-c", CONNECT.format(
            timeout=2, src=a.v4, sport=45300, dst=b.v4, dport=8082)).stdout
        assert "ConnectionRefused" in out
        assert snmp(b, "OutRsts") - out_rsts == 1
        assert cap.stop() == 0, cap.stderr_lines
    db = cap.files()["db"]
    sent = sqlite_rows(db, "SELECT SUM(TcpResetsSent) AS n FROM flow WHERE SrcPort = 8082 "
                           f"AND DstPort = 45300 AND Interface = '{b.host_ifname}'")
    received = sqlite_rows(db, "SELECT SUM(TcpResetsReceived) AS n FROM flow WHERE SrcPort = "
                               f"45300 AND DstPort = 8082 AND Interface = '{a.host_ifname}'")
    assert (sent[0]["n"], received[0]["n"]) == (1, 1)


def test_a_feature_whose_hook_is_missing_is_reported_and_the_rest_runs(
    lab: Lab, tmp_path: Path
) -> None:
    # Point the agent at a tracefs copy without tcp:tcp_probe, as on a kernel lacking it.
    fake = tmp_path / "tracefs"
    (fake / "events" / "skb" / "kfree_skb").mkdir(parents=True)
    real = Path("/sys/kernel/tracing/events/skb/kfree_skb/format")
    (fake / "events" / "skb" / "kfree_skb" / "format").write_text(real.read_text())
    env = {"NETOBSERV_TRACEFS": str(fake)}
    with Capture(tmp_path / "out", "--enable_pktdrop=true", "--enable_rtt=true", env=env) as cap:
        ready = next(line for line in cap.stderr_lines if "Capturing flows on" in line)
        assert "with pktdrop" in ready
        assert "rtt off: tracepoint tcp:tcp_probe" in ready
        assert cap.stop() == 0, cap.stderr_lines
    assert sqlite_rows(cap.files()["db"], "SELECT COUNT(*) AS n FROM flow")[0]["n"] >= 0


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_dns_fields_match_what_dig_saw(lab: Lab, tmp_path: Path, tcp: bool) -> None:
    from netobserv_tui.lab.dns import LabDns, dig

    a, c = lab.pod("pod-a"), lab.pod("pod-c")
    with LabDns(lab, c), Capture(tmp_path, "--enable_dns=true") as cap:
        found = dig(lab, a, c, "web.lab.test", tcp=tcp, src_port=45400)
        missing = dig(lab, a, c, "missing.lab.test", family=6, tcp=tcp, src_port=45401)
        assert cap.stop() == 0, cap.stderr_lines
    assert (found.status, missing.status) == ("NOERROR", "NXDOMAIN")
    db = cap.files()["db"]
    for result, rcode in ((found, "NoError"), (missing, "NXDomain")):
        rows = sqlite_rows(db, "SELECT DnsId, DnsFlagsResponseCode, DnsName, DnsLatencyMs "
                               f"FROM flow WHERE SrcPort = 53 AND DstPort = {result.src_port} "
                               f"AND Interface = '{a.host_ifname}'")
        assert len(rows) == 1, rows
        response = rows[0]
        assert response["DnsId"] == result.id
        assert response["DnsFlagsResponseCode"] == rcode
        assert response["DnsName"] == result.name
        # Kernel latency is between the two hooks; dig's is in user space, truncated to whole
        # ms on a clock that moves in scheduler ticks: allow one tick (4 ms at HZ=250) + 1 ms.
        assert 1 <= response["DnsLatencyMs"] <= result.query_time_ms + 5
        query = sqlite_rows(db, f"SELECT DnsId, DnsName FROM flow WHERE SrcPort = "
                                f"{result.src_port} AND DstPort = 53 AND Interface = "
                                f"'{a.host_ifname}'")
        assert query == [{"DnsId": result.id, "DnsName": result.name}]


def test_lab_demo_feeds_every_view(lab_host: None, tmp_path: Path) -> None:
    """`flows --local --lab` (the README's main job) with no feature flag: DNS incl.
    NXDOMAIN, a firewall drop and TCP RTT are there, since the lab demo turns them on."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "netobserv_tui", "flows", "--local", "--lab", "--no-tui",
         "--max-time=7s", "--output", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # The aggregator's port, while it listens: the capture's own connections end there.
    own_ports: set[int] = set()
    while proc.poll() is None:
        own_ports |= aggregator_ports()
        time.sleep(0.2)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    assert own_ports
    db = next(Path(p) for p in stdout.split() if p.endswith(".db"))
    got = sqlite_rows(db, "SELECT "
                          "SUM(DnsFlagsResponseCode = 'NXDomain') AS nx, "
                          "SUM(DnsFlagsResponseCode = 'NoError' AND SrcPort = 53) AS ok, "
                          "SUM(PktDropLatestDropCause = 'SKB_DROP_REASON_NETFILTER_DROP') AS fw, "
                          "SUM(TimeFlowRttNs > 0) AS rtt FROM flow")[0]
    assert got["nx"] and got["ok"] and got["fw"] and got["rtt"], got
    # The slow name's answer comes SLOW_DNS_MS late (the slow server behind dnsmasq); the
    # others at once; the Findings view names it first among the slowest answers.
    slow = sqlite_rows(db, "SELECT DnsName, max(DnsLatencyMs) AS ms FROM flow WHERE "
                           "DnsLatencyMs IS NOT NULL GROUP BY DnsName ORDER BY ms DESC")
    assert slow[0]["DnsName"] == SLOW_NAME and slow[0]["ms"] >= SLOW_DNS_MS, slow
    assert all(row["ms"] < SLOW_DNS_MS / 2 for row in slow[1:]), slow
    (latency,) = [f for f in findings(db) if f.kind == "dns_latency"]
    assert latency.title.startswith("Slowest DNS answer: ") and SLOW_NAME in latency.title
    # The kernel's events of the capture's own connections (their RTT, a closing socket's
    # queue purged) are not reported as the host's.
    own = sqlite_rows(db, f"SELECT count(*) AS n FROM flow WHERE SrcPort IN "
                          f"({','.join(map(str, own_ports))}) OR DstPort IN "
                          f"({','.join(map(str, own_ports))})")[0]
    assert own["n"] == 0, own_ports
    assert subprocess.run(["ip", "netns", "list"], capture_output=True,
                          text=True).stdout.count("nobs-lab-") == 0


def aggregator_ports() -> set[int]:
    """Ports the aggregator processes listen on now."""
    ports = set()
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status != psutil.CONN_LISTEN or conn.pid is None:
            continue
        try:
            cmdline = psutil.Process(conn.pid).cmdline()
        except psutil.Error:
            continue
        if "netobserv_tui.aggregator" in cmdline:
            ports.add(conn.laddr.port)
    return ports


def test_rtt_of_a_dual_stack_server_joins_its_ipv4_flow(lab: Lab, tmp_path: Path) -> None:
    """A server on an IPv6 socket that also takes IPv4 (IPV6_V6ONLY off, as most servers
    listen on ::) sees its IPv4 client as ::ffff:a.b.c.d: its kernel events are keyed as
    the IPv4 flow its packets are, so the server's RTT is on the server -> client flow
    records of its interface, and no record has an IPv4-mapped address (they made records
    of their own, 0 bytes, listed as talkers and as the slowest RTT's destination)."""
    b = lab.pod("pod-b")
    cap, server_view = ping_pong(lab, tmp_path, echo_server("::", 9300),
                                 45400, 9300, 200, ("ss", "-tin", "sport", "= :9300"),
                                 look_in=b)
    assert f"[::ffff:{b.v4}]:9300" in server_view, server_view  # the server's view
    db = cap.files()["db"]
    mapped = sqlite_rows(db, "SELECT SrcAddr, DstAddr, SrcPort, DstPort, Interface FROM flow "
                             "WHERE SrcAddr LIKE '::ffff:%' OR DstAddr LIKE '::ffff:%'")
    assert mapped == [], mapped
    served = sqlite_rows(db, "SELECT max(TimeFlowRttNs) AS rtt, sum(Packets) AS packets "
                             "FROM flow WHERE SrcPort = 9300 AND DstPort = 45400 "
                             f"AND Interface = '{b.host_ifname}' AND Etype = 2048")[0]
    assert served["packets"] and served["rtt"] and served["rtt"] > 0, served
