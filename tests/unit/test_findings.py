"""Findings computed in SQL over captures written by the real FlowWriter: a real lab capture
(every feature on) and small made-up captures for each kind, local and cluster."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from netobserv_tui.aggregator.writers import FlowWriter
from netobserv_tui.store.chips import FilterChips
from netobserv_tui.store.findings import (
    Finding,
    findings,
    findings_from_records,
    summary_line,
)

LAB = Path(__file__).parents[1] / "tui" / "fixtures" / "lab-capture.json"


def write(out: Path, records: list[dict[str, Any]]) -> Path:
    """``records`` written by the real writer, one batch per run of the same fields."""
    writer = FlowWriter(out)
    batch: list[dict[str, Any]] = []
    for record in [*records, None]:
        if batch and (record is None or record.keys() != batch[0].keys()):
            columns = list(batch[0])
            writer.write_batch(columns, [[r[c] for c in columns] for r in batch])
            batch = []
        if record is not None:
            batch.append(record)
    writer.close()
    return writer.db_path


def lab_records() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(LAB.read_text())
    return records


def flow(src: str, sport: int, dst: str, dport: int, **fields: Any) -> dict[str, Any]:
    record = {"SrcAddr": src, "SrcPort": sport, "DstAddr": dst, "DstPort": dport,
              "Proto": 6, "Flags": 0x10, "Bytes": 100, "Packets": 1, "Interface": "eth0"}
    record.update(fields)
    return record


def by_kind(found: list[Finding]) -> dict[str, list[Finding]]:
    result: dict[str, list[Finding]] = {}
    for finding in found:
        result.setdefault(finding.kind, []).append(finding)
    return result


def matching(records: list[dict[str, Any]], texts: tuple[str, ...]) -> list[dict[str, Any]]:
    chips = FilterChips()
    for text in texts:
        chips, error = chips.add(text)
        assert error is None, error
    return chips.filter(records)


LAB_FINDINGS = [
    Finding(
        "nxdomain", "NXDOMAIN: 1 answer for 1 name (missing.lab.test)",
        ("missing.lab.test  1 answer · asked by 198.18.0.10",),
        ("DnsFlagsResponseCode=NXDomain", "DnsName=missing.lab.test"), "NXDOMAIN 1 name"),
    Finding(
        "syn_unanswered",
        "SYN unanswered: 3 connection attempts to 1 destination (198.18.0.11:8081)",
        ("198.18.0.11:8081  3 attempts from 198.18.0.10 · dropped: NETFILTER_DROP (firewall "
         "rule)",),
        ("Proto=6", "DstAddr=198.18.0.11", "DstPort=8081", "Flags=2"), "3 SYN unanswered"),
    Finding(
        "drops", "Drops NETFILTER_DROP: 3 packets in 3 flows",
        ("198.18.0.10:37958 → 198.18.0.11:8081 TCP  1 packet",
         "198.18.0.10:37970 → 198.18.0.11:8081 TCP  1 packet",
         "198.18.0.10:37982 → 198.18.0.11:8081 TCP  1 packet"),
        ("PktDropLatestDropCause=SKB_DROP_REASON_NETFILTER_DROP",), "drops NETFILTER_DROP"),
    # ping's echo replies, offered to ping sockets after its raw socket took them
    Finding(
        "drops", "Drops NO_SOCKET: 16 packets in 2 flows (ping replies, "
        "taken by ping's raw socket: normal)",
        ("198.18.0.11 → 198.18.0.10 ICMP  8 packets",
         "fd00:198:18::12 → fd00:198:18::10 ICMPv6  8 packets"),
        ("PktDropLatestDropCause=SKB_DROP_REASON_NO_SOCKET",), "drops NO_SOCKET", "info"),
    Finding(
        "drops", "Drops QUEUE_PURGE: 8 packets in 8 flows (a closing "
        "socket's queues purged: normal)",
        ("198.18.0.10:37430 → 198.18.0.11:8080 TCP  1 packet",
         "198.18.0.10:37438 → 198.18.0.11:8080 TCP  1 packet",
         "198.18.0.10:37440 → 198.18.0.11:8080 TCP  1 packet",
         "198.18.0.10:37448 → 198.18.0.11:8080 TCP  1 packet",
         "[fd00:198:18::10]:56966 → [fd00:198:18::11]:8080 TCP  1 packet"),
        ("PktDropLatestDropCause=SKB_DROP_REASON_QUEUE_PURGE",), "drops QUEUE_PURGE", "info"),
    # The replies' records count for the server (port 8080), not for the clients' ports.
    Finding(
        "rtt", "Slowest RTT: 0.067 ms to 198.18.0.11:8080",
        ("198.18.0.11:8080  max 0.067 ms · avg 0.057 ms · 8 flow records",
         "[fd00:198:18::11]:8080  max 0.066 ms · avg 0.049 ms · 16 flow records"),
        ("DstAddr=198.18.0.11", "DstPort=8080"), "RTT 0.067 ms", "info"),
    Finding(
        "dns_latency", "Slowest DNS answer: 1 ms for missing.lab.test from 198.18.0.12",
        ("missing.lab.test from 198.18.0.12  max 1 ms · avg 1.0 ms · 2 answer records",
         "web.lab.test from 198.18.0.12  max 1 ms · avg 1.0 ms · 2 answer records",
         "web.lab.test from fd00:198:18::12  max 1 ms · avg 1.0 ms · 2 answer records"),
        ("DnsName=missing.lab.test",), "DNS 1 ms", "info"),
]


def test_lab_capture_findings(tmp_path: Path) -> None:
    assert findings(write(tmp_path, lab_records())) == LAB_FINDINGS


def test_lab_findings_from_records_and_from_a_connection_agree(tmp_path: Path) -> None:
    db = write(tmp_path, lab_records())
    assert findings_from_records(lab_records()) == LAB_FINDINGS
    with sqlite3.connect(db) as conn:
        assert findings(conn) == LAB_FINDINGS


def test_lab_chips_filter_to_each_finding(tmp_path: Path) -> None:
    records = lab_records()
    nx, syn, netfilter, no_socket, _purge, rtt, dns = LAB_FINDINGS
    assert {r["DnsFlagsResponseCode"] for r in matching(records, nx.chips)} == {"NXDomain"}
    assert len(matching(records, nx.chips)) == 2  # one answer, seen on two interfaces
    unanswered = matching(records, syn.chips)
    assert {(r["SrcPort"], r["DstPort"], r["Flags"]) for r in unanswered} == {
        (37958, 8081, 2), (37970, 8081, 2), (37982, 8081, 2)}
    assert len(unanswered) == 6
    assert len(matching(records, no_socket.chips)) == 16
    assert {r["DstPort"] for r in matching(records, netfilter.chips)} == {8081}
    assert {r["DstAddr"] for r in matching(records, rtt.chips)} == {"198.18.0.11"}
    assert {r["DnsName"] for r in matching(records, dns.chips)} == {"missing.lab.test"}


def test_summary_line_names_the_problems_only() -> None:
    assert summary_line(LAB_FINDINGS) == (
        "3 findings: NXDOMAIN 1 name · 3 SYN unanswered · drops NETFILTER_DROP")
    assert summary_line(LAB_FINDINGS[-2:]) == ""
    assert summary_line([]) == ""


def test_nxdomain_counts_answers_by_name_with_who_asked(tmp_path: Path) -> None:
    def answer(dns_id: int, name: str, asker: str) -> dict[str, Any]:
        return flow("10.0.0.53", 53, asker, 40000 + dns_id, Proto=17, Flags=0, DnsId=dns_id,
                    DnsFlags=0x8183, DnsFlagsResponseCode="NXDomain", DnsLatencyMs=2,
                    DnsName=name)

    records = [answer(1, "bad.lab.", "10.0.0.1"), answer(2, "bad.lab.", "10.0.0.2"),
               answer(2, "bad.lab.", "10.0.0.2"),  # the same answer, another interface
               answer(3, "nope.lab.", "10.0.0.1")]
    nx = by_kind(findings(write(tmp_path, records)))["nxdomain"]
    assert nx == [Finding(
        "nxdomain", "NXDOMAIN: 3 answers for 2 names (bad.lab., nope.lab.)",
        ("bad.lab.  2 answers · asked by 10.0.0.1, 10.0.0.2",
         "nope.lab.  1 answer · asked by 10.0.0.1"),
        ("DnsFlagsResponseCode=NXDomain",), "NXDOMAIN 2 names")]


def test_syn_unanswered_and_refused_by_destination(tmp_path: Path) -> None:
    records = [
        # answered: SYN alone in one record, SYN+ACK back
        flow("10.0.0.1", 1000, "10.0.0.9", 80, Flags=0x02),
        flow("10.0.0.9", 80, "10.0.0.1", 1000, Flags=0x12),
        # refused: RST back
        flow("10.0.0.1", 1001, "10.0.0.9", 81, Flags=0x02),
        flow("10.0.0.9", 81, "10.0.0.1", 1001, Flags=0x14),
        # unanswered: nothing back, twice to :82, once to :83
        flow("10.0.0.1", 1002, "10.0.0.9", 82, Flags=0x02),
        flow("10.0.0.2", 1003, "10.0.0.9", 82, Flags=0x02),
        flow("10.0.0.1", 1004, "10.0.0.8", 83, Flags=0xC2),  # SYN with ECE and CWR
        # not an attempt: established traffic
        flow("10.0.0.1", 1005, "10.0.0.9", 84, Flags=0x18),
    ]
    kinds = by_kind(findings(write(tmp_path, records)))
    assert kinds["syn_unanswered"] == [Finding(
        "syn_unanswered",
        "SYN unanswered: 3 connection attempts to 2 destinations (10.0.0.9:82, 10.0.0.8:83)",
        ("10.0.0.9:82  2 attempts from 10.0.0.1, 10.0.0.2",
         "10.0.0.8:83  1 attempt from 10.0.0.1"),
        ("Proto=6",), "3 SYN unanswered")]
    assert kinds["syn_refused"] == [Finding(
        "syn_refused",
        "SYN refused (RST): 1 connection attempt to 1 destination (10.0.0.9:81)",
        ("10.0.0.9:81  1 attempt from 10.0.0.1",),
        ("Proto=6", "DstAddr=10.0.0.9", "DstPort=81", "Flags=2"), "1 SYN refused")]
    assert set(kinds) == {"syn_unanswered", "syn_refused"}


def test_attempts_name_the_drop_causes_of_their_packets(tmp_path: Path) -> None:
    """Each destination of unanswered or refused SYNs says which kernel drop causes hit
    those attempts' packets, either way, and what they likely are; drops of other flows
    are not theirs."""
    drop = "SKB_DROP_REASON_"
    records = [
        # :82 twice, both SYNs dropped by a firewall rule (one record also counts it)
        flow("10.0.0.1", 1002, "10.0.0.9", 82, Flags=0x02,
             PktDropLatestDropCause=f"{drop}NETFILTER_DROP", PktDropPackets=1),
        flow("10.0.0.2", 1003, "10.0.0.9", 82, Flags=0x02),
        flow("10.0.0.2", 1003, "10.0.0.9", 82, Flags=0x02, Packets=0, Bytes=0,
             PktDropLatestDropCause=f"{drop}NETFILTER_DROP", PktDropPackets=1),
        # :83: no drop seen
        flow("10.0.0.1", 1004, "10.0.0.8", 83, Flags=0x02),
        # :84: the reply dropped on its way back, for a cause with no gloss
        flow("10.0.0.1", 1005, "10.0.0.7", 84, Flags=0x02),
        flow("10.0.0.7", 84, "10.0.0.1", 1005, Flags=0x00, Packets=0, Bytes=0,
             PktDropLatestDropCause=f"{drop}PKT_TOO_SMALL", PktDropPackets=1),
        # refused (RST back), the SYN also dropped for no listener
        flow("10.0.0.1", 1006, "10.0.0.9", 81, Flags=0x02,
             PktDropLatestDropCause=f"{drop}NO_SOCKET", PktDropPackets=1),
        flow("10.0.0.9", 81, "10.0.0.1", 1006, Flags=0x14),
        # a drop of an established flow to :83 is not the attempt's
        flow("10.0.0.3", 1007, "10.0.0.8", 83, Flags=0x18,
             PktDropLatestDropCause=f"{drop}NETFILTER_DROP", PktDropPackets=1),
    ]
    kinds = by_kind(findings(write(tmp_path, records)))
    assert kinds["syn_unanswered"][0].evidence == (
        "10.0.0.9:82  2 attempts from 10.0.0.1, 10.0.0.2 · dropped: NETFILTER_DROP "
        "(firewall rule)",
        "10.0.0.7:84  1 attempt from 10.0.0.1 · dropped: PKT_TOO_SMALL",
        "10.0.0.8:83  1 attempt from 10.0.0.1")
    assert kinds["syn_refused"][0].evidence == (
        "10.0.0.9:81  1 attempt from 10.0.0.1 · dropped: NO_SOCKET (no listener)",)
    # A capture without the drop feature: the same attempts, no cause.
    without = [{k: v for k, v in r.items() if not k.startswith("PktDrop")} for r in records]
    evidence = by_kind(findings(write(tmp_path / "plain", without)))["syn_unanswered"][0]
    assert all("dropped" not in line for line in evidence.evidence)


def test_retransmissions_by_flow_count_one_interface(tmp_path: Path) -> None:
    records = [
        flow("10.0.0.1", 1000, "10.0.0.9", 443, TcpRetransmits=2, TimeFlowRttNs=0),
        flow("10.0.0.1", 1000, "10.0.0.9", 443, TcpRetransmits=3, TimeFlowRttNs=0),
        # the same segments seen on a second interface: not counted twice
        flow("10.0.0.1", 1000, "10.0.0.9", 443, TcpRetransmits=5, TimeFlowRttNs=0,
             Interface="eth1"),
        flow("10.0.0.2", 1001, "10.0.0.9", 443, TcpRetransmits=1, TimeFlowRttNs=0),
        flow("10.0.0.3", 1002, "10.0.0.9", 443, TcpRetransmits=0, TimeFlowRttNs=0),
    ]
    assert findings(write(tmp_path, records)) == [Finding(
        "retransmits",
        "Retransmissions: 6 segments in 2 flows (most: 10.0.0.1:1000 → 10.0.0.9:443, 5)",
        ("10.0.0.1:1000 → 10.0.0.9:443  5 segments", "10.0.0.2:1001 → 10.0.0.9:443  1 segment"),
        ("SrcAddr=10.0.0.1", "SrcPort=1000", "DstAddr=10.0.0.9", "DstPort=443"),
        "retransmits 2 flows")]


def test_cluster_capture_groups_by_workload(tmp_path: Path) -> None:
    def k8s(side: str, namespace: str, owner: str, pod: str) -> dict[str, Any]:
        return {f"{side}K8S_Namespace": namespace, f"{side}K8S_OwnerName": owner,
                f"{side}K8S_Name": pod}

    web = {**k8s("Src", "shop", "web", "web-1"), **k8s("Dst", "shop", "db", "db-0")}
    web2 = {**k8s("Src", "shop", "web", "web-2"), **k8s("Dst", "shop", "db", "db-1")}
    records = [
        flow("10.1.0.1", 1000, "10.2.0.1", 5432, Flags=0x02, **web),
        flow("10.1.0.2", 1001, "10.2.0.2", 5432, Flags=0x02, **web2),
        flow("10.1.0.1", 1002, "10.2.0.1", 5432, Flags=0x02, TimeFlowRttNs=5_000_000, **web),
        flow("10.1.0.2", 1003, "10.2.0.2", 5432, Flags=0x10, TimeFlowRttNs=15_000_000, **web2),
        flow("10.3.0.53", 53, "10.1.0.1", 4000, Proto=17, Flags=0, DnsId=7, DnsFlags=0x8183,
             DnsFlagsResponseCode="NXDomain", DnsLatencyMs=120, DnsName="db.shop.",
             **k8s("Src", "kube-system", "coredns", "coredns-1"),
             **k8s("Dst", "shop", "web", "web-1")),
    ]
    kinds = by_kind(findings(write(tmp_path, records)))
    assert kinds["nxdomain"][0].evidence == ("db.shop.  1 answer · asked by shop/web",)
    assert kinds["syn_unanswered"] == [Finding(
        "syn_unanswered",
        "SYN unanswered: 3 connection attempts to 1 destination (shop/db:5432)",
        ("shop/db:5432  3 attempts from shop/web",),
        ("Proto=6", "DstK8S_Namespace=shop", "DstK8S_OwnerName=db", "DstPort=5432",
         "Flags=2"), "3 SYN unanswered")]
    assert kinds["rtt"][0].title == "Slowest RTT: 15.0 ms to shop/db:5432"
    assert kinds["rtt"][0].evidence == ("shop/db:5432  max 15.0 ms · avg 10.0 ms · "
                                        "2 flow records",)
    assert kinds["dns_latency"][0].title == (
        "Slowest DNS answer: 120 ms for db.shop. from kube-system/coredns")
    # The workload chips find both pods' flows.
    assert len(matching(records, kinds["syn_unanswered"][0].chips)) == 3


def test_features_off_give_no_finding(tmp_path: Path) -> None:
    records = [flow("10.0.0.1", 1000 + i, "10.0.0.9", 80, Flags=0x1A) for i in range(5)]
    assert findings(write(tmp_path, records)) == []
    assert findings_from_records([]) == []


def test_a_file_without_the_table_has_no_finding(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert findings(empty) == []


def test_slowest_rtt_destinations_beyond_the_slowest_records(tmp_path: Path,
                                                             monkeypatch: Any) -> None:
    """When the slowest records all go to fewer destinations than are listed, every record is
    grouped: the next destinations still appear, with exact figures."""
    monkeypatch.setattr("netobserv_tui.store.findings.SLOWEST_RECORDS", 2)
    records = [flow("10.0.0.1", 1000 + i, "10.0.0.9", 443, TimeFlowRttNs=rtt)
               for i, rtt in enumerate((9_000_000, 8_000_000, 7_000_000))]
    records.append(flow("10.0.0.1", 2000, "10.0.0.8", 80, TimeFlowRttNs=1_500_000))
    rtt = by_kind(findings(write(tmp_path, records)))["rtt"]
    assert rtt == [Finding(
        "rtt", "Slowest RTT: 9.0 ms to 10.0.0.9:443",
        ("10.0.0.9:443  max 9.0 ms · avg 8.0 ms · 3 flow records",
         "10.0.0.8:80  max 1.5 ms · avg 1.5 ms · 1 flow record"),
        ("DstAddr=10.0.0.9", "DstPort=443"), "RTT 9.0 ms", "info")]


def test_findings_round_trip_through_json() -> None:
    for finding in LAB_FINDINGS:
        data = json.loads(json.dumps(finding.to_json()))
        assert Finding.from_json(data) == finding
    assert LAB_FINDINGS[0].to_json() == {
        "kind": "nxdomain", "title": "NXDOMAIN: 1 answer for 1 name (missing.lab.test)",
        "evidence": ["missing.lab.test  1 answer · asked by 198.18.0.10"],
        "chips": ["DnsFlagsResponseCode=NXDomain", "DnsName=missing.lab.test"],
        "summary": "NXDOMAIN 1 name", "severity": "problem"}


@pytest.mark.parametrize("change", [
    {"title": None}, {"evidence": "one line"}, {"chips": [1]}, {"severity": "warning"}])
def test_a_malformed_finding_is_refused(change: dict[str, Any]) -> None:
    data = {**LAB_FINDINGS[0].to_json(), **change}
    with pytest.raises(ValueError):
        Finding.from_json(data)


def dropped(src: str, sport: int, dst: str, dport: int, cause: str, packets: int,
            **fields: Any) -> dict[str, Any]:
    return flow(src, sport, dst, dport, PktDropLatestDropCause=f"SKB_DROP_REASON_{cause}",
                PktDropPackets=packets, PktDropBytes=100 * packets, **fields)


def test_housekeeping_drops_are_informational(tmp_path: Path) -> None:
    records = [
        # UDP to a port nobody listens on: a problem
        dropped("10.0.0.1", 5000, "10.0.0.9", 514, "NO_SOCKET", 4, Proto=17, Flags=0),
        # a TCP segment for no connection: a problem, with the UDP one (no Proto chip)
        dropped("10.0.0.2", 40000, "10.0.0.9", 8080, "NO_SOCKET", 1),
        # echo replies offered to ping sockets: housekeeping
        dropped("10.0.0.9", 0, "10.0.0.1", 0, "NO_SOCKET", 3, Proto=1, Flags=0),
        # a closing socket's queues: housekeeping
        dropped("10.0.0.1", 40001, "10.0.0.9", 443, "QUEUE_PURGE", 2),
        dropped("10.0.0.1", 40002, "10.0.0.9", 443, "QUEUE_PURGE", 5),
        dropped("10.0.0.1", 40003, "10.0.0.9", 443, "NETFILTER_DROP", 1),
    ]
    found = findings(write(tmp_path, records))
    assert [(f.title, f.severity) for f in found] == [
        ("Drops NO_SOCKET: 5 packets in 2 flows", "problem"),
        ("Drops NETFILTER_DROP: 1 packet in 1 flow", "problem"),
        ("Drops QUEUE_PURGE: 7 packets in 2 flows (a closing socket's "
         "queues purged: normal)", "info"),
        ("Drops NO_SOCKET: 3 packets in 1 flow (ping replies, taken by "
         "ping's raw socket: normal)", "info"),
    ]
    assert found[0].evidence == ("10.0.0.1:5000 → 10.0.0.9:514 UDP  4 packets",
                                 "10.0.0.2:40000 → 10.0.0.9:8080 TCP  1 packet")
    assert found[0].chips == ("PktDropLatestDropCause=SKB_DROP_REASON_NO_SOCKET",)
    assert found[3].evidence == ("10.0.0.9 → 10.0.0.1 ICMP  3 packets",)
    assert found[3].chips == ("PktDropLatestDropCause=SKB_DROP_REASON_NO_SOCKET", "Proto=1")
    assert summary_line(found) == "2 findings: drops NO_SOCKET, NETFILTER_DROP"
    assert len(matching(records, found[3].chips)) == 1


def test_rtt_counts_replies_for_their_server(tmp_path: Path) -> None:
    records = [
        # 10.0.0.9:443 received a SYN: the server, its replies to 55001 count for it
        flow("10.0.0.1", 55001, "10.0.0.9", 443, Flags=0x02),
        flow("10.0.0.1", 55001, "10.0.0.9", 443, TimeFlowRttNs=4_000_000),
        flow("10.0.0.9", 443, "10.0.0.1", 55001, Flags=0x12, TimeFlowRttNs=9_000_000),
        # no SYN seen: the lower port (8080) is the server's
        flow("10.0.0.8", 8080, "10.0.0.2", 60000, Flags=0x18, TimeFlowRttNs=6_000_000),
        flow("10.0.0.2", 60000, "10.0.0.8", 8080, Flags=0x18, TimeFlowRttNs=2_000_000),
        # a listener on a high port, known by the SYN it received
        flow("10.0.0.3", 1000, "10.0.0.7", 40000, Flags=0x02),
        flow("10.0.0.7", 40000, "10.0.0.3", 1000, Flags=0x18, TimeFlowRttNs=1_000_000),
    ]
    rtt = by_kind(findings(write(tmp_path, records)))["rtt"]
    assert rtt == [Finding(
        "rtt", "Slowest RTT: 9.0 ms to 10.0.0.9:443",
        ("10.0.0.9:443  max 9.0 ms · avg 6.5 ms · 2 flow records",
         "10.0.0.8:8080  max 6.0 ms · avg 4.0 ms · 2 flow records",
         "10.0.0.7:40000  max 1.0 ms · avg 1.0 ms · 1 flow record"),
        ("DstAddr=10.0.0.9", "DstPort=443"), "RTT 9.0 ms", "info")]


def test_sampled_counts_are_scaled_and_say_about(tmp_path: Path) -> None:
    def nxdomain(dns_id: int, sampling: int) -> dict[str, Any]:
        return flow("10.0.0.53", 53, "10.0.0.1", 40000 + dns_id, Proto=17, Flags=0,
                    DnsId=dns_id, DnsFlags=0x8183, DnsFlagsResponseCode="NXDomain",
                    DnsLatencyMs=2, DnsName="bad.lab.", Sampling=sampling)

    records = [
        nxdomain(1, 50), nxdomain(1, 50),  # one answer on two interfaces: 50 answers
        nxdomain(2, 1),  # unsampled: 1
        flow("10.0.0.1", 1000, "10.0.0.9", 82, Flags=0x02, Sampling=50),
        flow("10.0.0.1", 1001, "10.0.0.9", 82, Flags=0x02, Sampling=50),
        dropped("10.0.0.1", 1002, "10.0.0.9", 443, "NETFILTER_DROP", 2, Sampling=50),
        dropped("10.0.0.1", 1003, "10.0.0.9", 443, "NETFILTER_DROP", 1, Sampling=0),
        flow("10.0.0.1", 1004, "10.0.0.9", 443, TcpRetransmits=3, Sampling=50),
        flow("10.0.0.1", 1005, "10.0.0.9", 443, TcpRetransmits=2, Sampling=1),
    ]
    kinds = by_kind(findings(write(tmp_path, records)))
    assert kinds["nxdomain"] == [Finding(
        "nxdomain", "NXDOMAIN: about 51 answers for 1 name (bad.lab.)",
        ("bad.lab.  about 51 answers · asked by 10.0.0.1",),
        ("DnsFlagsResponseCode=NXDomain", "DnsName=bad.lab."), "NXDOMAIN 1 name")]
    assert kinds["syn_unanswered"] == [Finding(
        "syn_unanswered",
        "SYN unanswered: about 100 connection attempts to 1 destination (10.0.0.9:82)",
        ("10.0.0.9:82  about 100 attempts from 10.0.0.1",),
        ("Proto=6", "DstAddr=10.0.0.9", "DstPort=82", "Flags=2"), "about 100 SYN unanswered")]
    assert kinds["drops"] == [Finding(
        "drops", "Drops NETFILTER_DROP: about 101 packets in 2 flows",
        ("10.0.0.1:1002 → 10.0.0.9:443 TCP  about 100 packets",
         "10.0.0.1:1003 → 10.0.0.9:443 TCP  1 packet"),
        ("PktDropLatestDropCause=SKB_DROP_REASON_NETFILTER_DROP",), "drops NETFILTER_DROP")]
    assert kinds["retransmits"] == [Finding(
        "retransmits",
        "Retransmissions: about 152 segments in 2 flows (most: 10.0.0.1:1004 → "
        "10.0.0.9:443, about 150)",
        ("10.0.0.1:1004 → 10.0.0.9:443  about 150 segments",
         "10.0.0.1:1005 → 10.0.0.9:443  2 segments"),
        ("SrcAddr=10.0.0.1", "SrcPort=1004", "DstAddr=10.0.0.9", "DstPort=443"),
        "retransmits 2 flows")]
    assert summary_line(found := findings(write(tmp_path / "again", records))) == (
        "4 findings: NXDOMAIN 1 name · about 100 SYN unanswered · drops NETFILTER_DROP · "
        "retransmits 2 flows")
    assert found == findings_from_records(records)
