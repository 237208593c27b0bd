"""DNS tracking (ebpf/dns.h) on the real kernel, checked against what dig reports.

The first tests check the Python mirror and the dig parser and need nothing; the others need
root, BCC, dnsmasq and dig, and are skipped with the reason otherwise.

dnsmasq runs in pod-c and answers only lab names (NXDOMAIN otherwise); dig runs in pod-a from
a fixed source port, so the test knows both 5-tuples. The flow program is attached to every
host end, so each DNS packet is seen twice (leaving pod-a at nobs-pod-a ingress, entering
pod-c at nobs-pod-c egress, and the other way round for the response): a response latency
above 0 also proves that the second sighting did not overwrite the first one's latency.

Latency tolerance: the kernel measures between the query's and the response's first TC hook,
which lie inside dig's send-to-receive interval, so 0 < kernel latency, and it is at most that
interval. dig's "Query time" is that interval truncated to whole ms, *and* read from
CLOCK_REALTIME_COARSE (BIND 9.18's isc_time_now()), which advances one tick at a time (4 ms at
HZ=250): with a server that sleeps 10 ms, dig reports 8 ms now and then, and with 200 ms it
reported 199 while the kernel measured 200.4. So the bound is
kernel latency <= dig time + 1 ms + one coarse-clock tick, i.e.
1 <= DnsLatencyMs (rounded up) <= dig time + 1 + tick (in whole ms, rounded up).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from netobserv_tui.agent.bpf import FlowProgram
from netobserv_tui.agent.dns import (
    DNS_ERR_NAME_TOO_LONG,
    DNS_ERR_NO_QUERY,
    DNS_NAME_MAX,
    DNS_RECORD,
    FLOW_5TUPLE,
    JOIN_PREFIX,
    dns_counters,
    dns_fields,
    drain_dns,
    flow_5tuple,
    latency_ms,
)
from netobserv_tui.agent.records import FLOW_ID
from netobserv_tui.agent.tc import TcAttacher
from netobserv_tui.lab import Lab, udp_send
from netobserv_tui.lab._proc import NsProcess
from netobserv_tui.lab.dns import DigResult, LabDns, dig, parse_dig
from netobserv_tui.model.errors import KernelError

WEB = "web.lab.test"
MISSING = "missing.lab.test"
#: 51 characters: beyond upstream netobserv's 32-byte DnsName, within our 64.
LONG = "a-rather-long-service-name.with-several-labels.lab"
#: Resolution of CLOCK_REALTIME_COARSE (5 on Linux), the clock dig's Query time comes from.
DIG_TICK_MS = -(-int(time.clock_getres(5) * 1e9) // 1_000_000)
#: Exactly DNS_NAME_MAX characters: fills the buffer with no NUL.
EXACT = "b" * (DNS_NAME_MAX - len(".lab.test")) + ".lab.test"
#: Longer than DNS_NAME_MAX: the record keeps its first DNS_NAME_MAX characters.
TOO_LONG = "c" * 60 + ".defghijklmnopqrstuvwxyz.lab.test"


@pytest.fixture
def kernel_requirements() -> None:
    if os.geteuid() != 0:
        pytest.skip("DNS tracking needs root (eBPF, TC, network namespaces): run as root")
    for tool, package in (("dnsmasq", "dnsmasq-base"), ("dig", "dnsutils"), ("tc", "iproute2")):
        if shutil.which(tool) is None:
            pytest.skip(f"the DNS tests need `{tool}` (apt-get install {package})")


@dataclass
class Tracking:
    lab: Lab
    prog: FlowProgram


@contextmanager
def dns_tracking(lab: Lab, dns_port: int = 53) -> Iterator[Tracking]:
    """flows.c with DNS tracking, attached to every host end of the lab; always detached."""
    from netobserv_tui.agent.kernel import prepare_bcc

    try:
        prepare_bcc()
    except KernelError as exc:
        pytest.skip(f"BCC cannot compile here: {exc}")
    with FlowProgram(max_flows=4096, defines={"ENABLE_DNS": None, "DNS_PORT": dns_port}) as prog:
        attacher = TcAttacher(prog.fds["nobs_tc_ingress"], prog.fds["nobs_tc_egress"])
        try:
            for pod in lab.pods:
                assert attacher.attach(pod.host_ifindex, pod.host_ifname)
            yield Tracking(lab, prog)
        finally:
            attacher.close()


def attached_filters(lab: Lab) -> list[str]:
    """Our classifiers still on a lab host end, as `tc filter show` lists them."""
    found = []
    for pod in lab.pods:
        for hook in ("ingress", "egress"):
            out = subprocess.run(
                ["tc", "filter", "show", "dev", pod.host_ifname, hook],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            if "nobs_tc_" in out:
                found.append(f"{pod.host_ifname} {hook}: {out.strip()}")
    return found


def keys(r: DigResult) -> tuple[bytes, bytes]:
    """The dns_flows keys of the query (client -> server) and of the response."""
    query = flow_5tuple(r.src, r.dst, r.src_port, r.dst_port, r.proto)
    response = flow_5tuple(r.dst, r.src, r.dst_port, r.src_port, r.proto)
    return query, response


def check_pair(dns: dict[bytes, dict[str, Any]], r: DigResult, name: str, errno: int = 0) -> None:
    """Both records of one lookup agree with dig."""
    query_key, response_key = keys(r)
    assert query_key in dns, f"no record for the query of {r.name}; have {len(dns)} records"
    assert response_key in dns, f"no record for the response of {r.name}"
    query, response = dns[query_key], dns[response_key]

    assert query["DnsId"] == r.id
    assert query["DnsFlags"] & 0x8000 == 0  # QR clear: a query
    assert query["DnsFlagsResponseCode"] == "NoError"
    assert query["DnsLatencyMs"] == 0
    assert query["DnsName"] == name
    assert query["DnsErrno"] == errno

    assert response["DnsId"] == r.id
    assert response["DnsFlags"] & 0x8000
    assert response["DnsFlagsResponseCode"].upper() == r.status  # NXDomain / NXDOMAIN
    assert response["DnsName"] == name
    assert response["DnsErrno"] == errno
    # See the module docstring for the tolerance.
    bound = r.query_time_ms + 1 + DIG_TICK_MS
    assert 1 <= response["DnsLatencyMs"] <= bound, (response, r.query_time_ms)


def check_joins(t: Tracking, dns: dict[bytes, dict[str, Any]], results: list[DigResult]) -> None:
    """Every DNS key joins flow records by its first 39 bytes: one per host end it crossed."""
    drained = t.prog.drain()
    flows: dict[bytes, set[int]] = {}
    for i in range(drained.count):
        key = bytes(drained.keys[i * FLOW_ID.size : (i + 1) * FLOW_ID.size])
        flows.setdefault(key[:JOIN_PREFIX], set()).add(FLOW_ID.unpack(key)[7])
    a, c = t.lab.pod("pod-a"), t.lab.pod("pod-c")
    for r in results:
        for key in keys(r):
            assert key in dns
            assert flows.get(key[:JOIN_PREFIX]) == {a.host_ifindex, c.host_ifindex}


def left_in_flight(t: Tracking) -> int:
    return len(list(t.prog.bpf[b"dns_queries"].keys()))


#: Skips a test that loads eBPF and runs dnsmasq/dig when this host cannot (with the reason).
needs_kernel = pytest.mark.usefixtures("kernel_requirements")


# --- the Python mirror and the dig parser (no privileges needed) ------------------------------

DIG_OUTPUT = """
; <<>> DiG 9.18.49-1~deb12u3-Debian <<>> @198.18.0.12 -b 198.18.0.10#40053 web.lab.test
; (1 server found)
;; global options: +cmd
;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 34010
;; flags: qr aa rd ra; QUERY: 1, ANSWER: 2, AUTHORITY: 0, ADDITIONAL: 1

;; OPT PSEUDOSECTION:
; EDNS: version: 0, flags:; udp: 1232
;; QUESTION SECTION:
;web.lab.test.\t\t\tIN\tA

;; ANSWER SECTION:
web.lab.test.\t\t0\tIN\tA\t198.18.0.11
web.lab.test.\t\t0\tIN\tA\t198.18.0.12

;; Query time: 3 msec
;; SERVER: 198.18.0.12#53(198.18.0.12) (UDP)
;; MSG SIZE  rcvd: 57
"""


def test_parse_dig() -> None:
    assert parse_dig(DIG_OUTPUT) == (
        "QUERY",
        "NOERROR",
        34010,
        ("qr", "aa", "rd", "ra"),
        ("198.18.0.11", "198.18.0.12"),
        3,
    )
    newer = DIG_OUTPUT.replace("Query time: 3 msec", "Query time: 2500 usec")
    assert parse_dig(newer)[5] == 2


def test_record_layout_matches_flow_id() -> None:
    assert DNS_RECORD.size == 16 + DNS_NAME_MAX == 80
    assert FLOW_5TUPLE.size == 40
    key = flow_5tuple("198.18.0.10", "198.18.0.12", 40053, 53, 17)
    flow_id = FLOW_ID.pack(
        b"\0" * 10 + b"\xff\xff" + bytes([198, 18, 0, 10]),
        b"\0" * 10 + b"\xff\xff" + bytes([198, 18, 0, 12]),
        40053, 53, 0x0800, 17, 1, 7, 0, 0,
    )  # fmt: skip
    assert key[:JOIN_PREFIX] == flow_id[:JOIN_PREFIX] and key[JOIN_PREFIX:] == b"\0"
    v6 = flow_5tuple("fd00:198:18::10", "fd00:198:18::12", 40053, 53, 6)
    assert FLOW_5TUPLE.unpack(v6)[2:] == (40053, 53, 0x86DD, 6)


def test_dns_fields() -> None:
    name = b"web.lab.test"
    raw = DNS_RECORD.pack(0x1234, 0x8183, 0, 1_500_000, name)
    assert dns_fields(raw) == {
        "DnsId": 0x1234,
        "DnsFlags": 0x8183,
        "DnsFlagsResponseCode": "NXDomain",
        "DnsLatencyMs": 2,
        "DnsErrno": 0,
        "DnsName": "web.lab.test",
    }
    full = b"x" * DNS_NAME_MAX  # exactly full: no NUL at all
    fields = dns_fields(DNS_RECORD.pack(1, 0x8180, DNS_ERR_NO_QUERY, 0, full))
    assert fields["DnsName"] == full.decode() and fields["DnsLatencyMs"] == 0
    assert fields["DnsFlagsResponseCode"] == "NoError" and fields["DnsErrno"] == DNS_ERR_NO_QUERY


def test_latency_rounds_up() -> None:
    assert [latency_ms(ns) for ns in (0, 1, 999_999, 1_000_000, 1_000_001)] == [0, 1, 1, 1, 2]


# --- on the kernel ---------------------------------------------------------------------------


@pytest.mark.kernel
@needs_kernel
@pytest.mark.parametrize(
    ("family", "tcp"),
    [(4, False), (6, False), (4, True), (6, True)],
    ids=["udp4", "udp6", "tcp4", "tcp6"],
)
def test_dns_ids_codes_names_and_latency_match_dig(lab: Lab, family: int, tcp: bool) -> None:
    base = 21000 + family * 100 + (10 if tcp else 0)
    with LabDns(lab, "pod-c", names={WEB: ("198.18.0.11", "fd00:198:18::11")}):
        with dns_tracking(lab) as t:
            found = dig(lab, "pod-a", "pod-c", WEB, family, tcp, src_port=base)
            missing = dig(lab, "pod-a", "pod-c", MISSING, family, tcp, src_port=base + 1)
            dns = drain_dns(t.prog.bpf)
            assert left_in_flight(t) == 0  # each response removed its query
            assert dns_counters(t.prog.bpf) == {"dns_flows_full": 0}
            check_joins(t, dns, [found, missing])
    assert attached_filters(lab) == []

    assert (found.status, found.answers) == ("NOERROR", ("198.18.0.11",))
    assert (missing.status, missing.answers) == ("NXDOMAIN", ())
    check_pair(dns, found, WEB)
    check_pair(dns, missing, MISSING)
    assert dns[keys(found)[1]]["DnsFlagsResponseCode"] == "NoError"
    assert dns[keys(missing)[1]]["DnsFlagsResponseCode"] == "NXDomain"
    # Only the four DNS messages' 5-tuples were recorded: nothing else is DNS in the lab.
    assert set(dns) == {*keys(found), *keys(missing)}


@pytest.mark.kernel
@needs_kernel
def test_long_names(lab: Lab) -> None:
    assert len(LONG) > 32 and len(EXACT) == DNS_NAME_MAX and len(TOO_LONG) > DNS_NAME_MAX
    with LabDns(lab, "pod-c", names={LONG: "198.18.0.11"}):
        with dns_tracking(lab) as t:
            long = dig(lab, "pod-a", "pod-c", LONG, 4, src_port=22001)
            exact = dig(lab, "pod-a", "pod-c", EXACT, 6, src_port=22002)
            too_long = dig(lab, "pod-a", "pod-c", TOO_LONG, 4, tcp=True, src_port=22003)
            root = dig(lab, "pod-a", "pod-c", ".", 4, qtype="NS", src_port=22004)
            dns = drain_dns(t.prog.bpf)
    assert attached_filters(lab) == []

    assert long.status == "NOERROR" and long.answers == ("198.18.0.11",)
    check_pair(dns, long, LONG)
    check_pair(dns, exact, EXACT)
    check_pair(dns, too_long, TOO_LONG[:DNS_NAME_MAX], errno=DNS_ERR_NAME_TOO_LONG)
    check_pair(dns, root, "")


@pytest.mark.kernel
@needs_kernel
def test_dns_port_is_configurable_and_other_traffic_is_ignored(lab: Lab) -> None:
    with (
        LabDns(lab, "pod-c", names={WEB: "198.18.0.11"}, port=5353),
        LabDns(lab, "pod-b", names={WEB: "198.18.0.11"}),  # port 53: not tracked now
    ):
        with dns_tracking(lab, dns_port=5353) as t:
            tracked = dig(lab, "pod-a", "pod-c", WEB, 4, port=5353, src_port=23001)
            untracked = dig(lab, "pod-a", "pod-b", WEB, 4, src_port=23002)
            sent = udp_send(lab, "pod-a", "pod-c", 20, 64, dst_port=7053, src_port=23003)
            dns = drain_dns(t.prog.bpf)
    assert attached_filters(lab) == []

    assert untracked.status == "NOERROR" and sent.received == 20
    check_pair(dns, tracked, WEB)
    assert set(dns) == set(keys(tracked))


#: A DNS server that answers every UDP query with NXDOMAIN after a delay (argv: address, delay
#: in seconds); dnsmasq cannot be slowed down and this kernel has no netem. Stops when its
#: stdin closes.
SLOW_SERVER = r"""
import json, select, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print(json.dumps({"event": "ready"}), flush=True)
while True:
    ready, _, _ = select.select([s, sys.stdin], [], [], 60)
    if not ready or sys.stdin in ready:
        break
    query, peer = s.recvfrom(4096)
    time.sleep(float(sys.argv[2]))
    end = 12 + query[12:].index(0) + 1 + 4  # the question: name, QTYPE, QCLASS
    # Same id; QR, RD, RA, rcode 3 (NXDOMAIN); one question, no other records.
    s.sendto(query[:2] + b"\x81\x83\x00\x01" + bytes(6) + query[12:end], peer)
"""


@pytest.mark.kernel
@needs_kernel
def test_slow_response_latency_and_response_without_query(lab: Lab) -> None:
    """A 200 ms answer is measured as such (the seed query's ``DnsLatencyMs > 10`` case);
    a response whose query entry is gone gets DnsErrno NO_QUERY and latency 0."""
    pod_c = lab.pod("pod-c")
    delay_ms = 200
    server = NsProcess(
        pod_c.netns,
        [sys.executable, "-I", "-c", SLOW_SERVER, pod_c.v4, str(delay_ms / 1000)],
        label="slow DNS server in pod-c",
    )
    with server:
        server.expect("ready", 10.0)
        with dns_tracking(lab) as t:
            slow = dig(lab, "pod-a", "pod-c", "slow.lab.test", 4, src_port=24001, timeout=3.0)
            queries = t.prog.bpf[b"dns_queries"]
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(
                    dig, lab, "pod-a", "pod-c", "lost.lab.test", 4, src_port=24002, timeout=3.0
                )
                deadline = time.monotonic() + 2.0
                while not list(queries.keys()) and time.monotonic() < deadline:
                    time.sleep(0.005)
                assert list(queries.keys()), "the query never reached dns_queries"
                queries.clear()  # while the server sleeps: the response finds no query
                lost = pending.result()
            dns = drain_dns(t.prog.bpf)
    assert attached_filters(lab) == []

    assert slow.status == lost.status == "NXDOMAIN"
    check_pair(dns, slow, "slow.lab.test")
    assert dns[keys(slow)[1]]["DnsLatencyMs"] >= delay_ms
    query, response = (dns[key] for key in keys(lost))
    assert (query["DnsId"], query["DnsErrno"]) == (lost.id, 0)
    assert (response["DnsId"], response["DnsName"]) == (lost.id, "lost.lab.test")
    assert (response["DnsErrno"], response["DnsLatencyMs"]) == (DNS_ERR_NO_QUERY, 0)
    assert response["DnsFlagsResponseCode"] == "NXDomain"
