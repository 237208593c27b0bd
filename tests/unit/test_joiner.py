"""The agent's join of kernel events (drops, DNS, RTT) to flow rows: nothing drained is lost.

Pure user space: the rows and the drained tables are built here as the agent gets them from
the kernel maps (the 39-byte 5-tuple prefix of each flow key), so every case is exact.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from netobserv_tui.agent.features import (
    DNS,
    DROP_IFINDEX,
    DROP_NETNS,
    FIVE_TUPLE,
    NO_DEVICE,
    PKTDROP,
    PREFIX,
    FeatureSet,
    Joiner,
)
from netobserv_tui.agent.records import FLOW_ID, ROW_COLUMNS

HOST_NETNS = 4026531833
NAMES = {1: "lo", 7: "eth0"}
WINDOW = (1_700_000_000_000, 1_700_000_001_000)


def prefix(src: str, dst: str, sport: int, dport: int, proto: int = 17) -> bytes:
    mapped = [ipaddress.IPv6Address(f"::ffff:{a}").packed for a in (src, dst)]
    return FIVE_TUPLE.pack(mapped[0], mapped[1], sport, dport, 0x0800, proto)[:PREFIX]


def key(p: bytes) -> bytes:
    return p + bytes(FLOW_ID.size - PREFIX)


def joiner(*features: str) -> Joiner:
    wanted = {"eth0"}
    return Joiner(ROW_COLUMNS, FeatureSet(features), "198.18.0.254", ifname=NAMES.get,
                  wants=wanted.__contains__, netns=HOST_NETNS)


def flow_row(j: Joiner, p: bytes) -> list[Any]:
    row: list[Any] = [None] * len(j.base_columns)
    row[j.columns.index("SrcPort")] = int.from_bytes(p[32:34], "little")
    row[j.columns.index("Bytes")] = 100
    return row


def col(j: Joiner, row: list[Any], name: str) -> Any:
    return row[j.columns.index(name)]


DNS_FIELDS = {"DnsId": 7, "DnsFlags": 0x8183, "DnsFlagsResponseCode": "NXDomain",
              "DnsLatencyMs": 3, "DnsName": "nope.lab.test"}


def dns_fields(j: Joiner) -> dict[str, Any]:
    return {k: v for k, v in DNS_FIELDS.items() if k in j.columns}


def test_a_dns_entry_without_its_flow_row_waits_one_eviction_then_stands_alone() -> None:
    j = joiner(DNS)
    a, b = prefix("198.18.0.10", "198.18.0.12", 40000, 53), prefix("198.18.0.10", "198.18.0.12",
                                                                 40001, 53)
    fields = dns_fields(j)
    # Eviction 1: the DNS map has a and b; only a's flow row was evicted this time.
    rows = j.join(key(a), FLOW_ID.size, [flow_row(j, a)], {DNS: {a: fields, b: fields}}, WINDOW)
    assert [col(j, r, "DnsId") for r in rows] == [7]
    # Eviction 2: b's flow row arrives: the carried entry joins it, nothing else is made.
    rows = j.join(key(b), FLOW_ID.size, [flow_row(j, b)], {DNS: {}}, WINDOW)
    assert [(col(j, r, "SrcPort"), col(j, r, "DnsName")) for r in rows] == [
        (40001, "nope.lab.test")]
    # An entry whose flow never shows up stands alone after one more eviction.
    c = prefix("198.18.0.11", "198.18.0.12", 40002, 53)
    assert j.join(b"", FLOW_ID.size, [], {DNS: {c: fields}}, WINDOW) == []
    (alone,) = j.join(b"", FLOW_ID.size, [], {DNS: {}}, WINDOW)
    assert col(j, alone, "SrcPort") == 40002 and col(j, alone, "DnsName") == "nope.lab.test"
    assert (col(j, alone, "TimeFlowStartMs"), col(j, alone, "TimeFlowEndMs")) == WINDOW
    assert col(j, alone, "Interface") == NO_DEVICE and col(j, alone, "Bytes") == 0
    assert j.flush(WINDOW) == []


def test_the_last_eviction_flushes_what_is_carried() -> None:
    j = joiner(DNS)
    c = prefix("198.18.0.11", "198.18.0.12", 40003, 53)
    assert j.join(b"", FLOW_ID.size, [], {DNS: {c: dns_fields(j)}}, WINDOW) == []
    (alone,) = j.flush(WINDOW)
    assert col(j, alone, "SrcPort") == 40003


def drop(ifindex: int, netns: int = HOST_NETNS) -> dict[str, Any]:
    return {"PktDropBytes": 60, "PktDropPackets": 1, "PktDropLatestState": None,
            "PktDropLatestDropCause": "SKB_DROP_REASON_NO_SOCKET", "PktDropLatestFlags": 0,
            DROP_IFINDEX: ifindex, DROP_NETNS: netns}


def test_drops_no_hook_saw_have_time_and_interface_and_skip_excluded_ones() -> None:
    j = joiner(PKTDROP)
    on_eth0 = prefix("198.18.0.10", "198.18.0.99", 40010, 9)
    on_lo = prefix("127.0.0.1", "127.0.0.1", 40011, 2379)
    in_pod = prefix("198.18.0.10", "198.18.0.11", 40012, 9)
    no_dev = prefix("198.18.0.10", "198.18.0.11", 40013, 9)
    rows = j.join(b"", FLOW_ID.size, [], {PKTDROP: {
        on_eth0: drop(7), on_lo: drop(1), in_pod: drop(2, netns=4026532999),
        no_dev: drop(0)}}, WINDOW)
    got = {col(j, r, "SrcPort"): (col(j, r, "Interface"), col(j, r, "Interfaces"),
                                  col(j, r, "TimeFlowStartMs"), col(j, r, "TimeFlowEndMs"))
           for r in rows}
    assert got == {
        40010: ("eth0", ["eth0"], *WINDOW),
        40012: ("if2@netns:4026532999", ["if2@netns:4026532999"], *WINDOW),
        40013: (NO_DEVICE, [NO_DEVICE], *WINDOW),
    }
    assert j.excluded_drops == 1  # the host's lo is not captured: its drop is left out
    assert all(col(j, r, "PktDropPackets") == 1 for r in rows)
    assert "_ifindex" not in j.columns


def test_a_drop_of_a_captured_flow_joins_its_row_without_the_location_fields() -> None:
    j = joiner(PKTDROP)
    p = prefix("198.18.0.10", "198.18.0.11", 40020, 9)
    (row,) = j.join(key(p), FLOW_ID.size, [flow_row(j, p)], {PKTDROP: {p: drop(7)}}, WINDOW)
    assert col(j, row, "PktDropPackets") == 1 and col(j, row, "Bytes") == 100
    assert len(row) == len(j.columns)


def test_a_flow_on_two_interfaces_lists_both_and_counts_once() -> None:
    from netobserv_tui.agent.records import InterfaceLinker
    from netobserv_tui.aggregator.batch import Batch

    def row(iface: str, direction: int, start: int, sport: int = 40000) -> list[Any]:
        values = {"SrcAddr": "198.18.0.10", "DstAddr": "198.18.0.11", "SrcPort": sport,
                  "DstPort": 53, "Proto": 17, "IcmpType": 0, "IcmpCode": 0, "Bytes": 100,
                  "Packets": 1, "TimeFlowStartMs": start, "TimeFlowEndMs": start + 1,
                  "Interface": iface, "IfDirection": direction, "Interfaces": [iface],
                  "IfDirections": [direction]}
        return [values.get(c) for c in ROW_COLUMNS]

    # Drained in any order: pod-b's egress first, though pod-a's ingress saw it first.
    rows = [row("nobs-pod-b", 1, 1001), row("nobs-pod-a", 0, 1000), row("eth0", 1, 5, 9)]
    a4, b4 = (ipaddress.IPv6Address(f"::ffff:198.18.0.{n}").packed for n in (10, 11))
    keys = b"".join(FLOW_ID.pack(a4, b4, sport, 53, 0x0800, 17, direction, ifindex, 0, 0)
                    for sport, direction, ifindex in ((40000, 1, 12), (40000, 0, 11),
                                                      (9, 1, 2)))
    linker = InterfaceLinker()
    linker.link(rows, keys)
    at = ROW_COLUMNS.index
    assert [(r[at("Interface")], r[at("Interfaces")], r[at("IfDirections")]) for r in rows] == [
        ("nobs-pod-b", ["nobs-pod-a", "nobs-pod-b"], [0, 1]),
        ("nobs-pod-a", ["nobs-pod-a", "nobs-pod-b"], [0, 1]),
        ("eth0", ["eth0"], [1]),  # another flow: alone
    ]
    batch = Batch.from_rows(list(ROW_COLUMNS), rows)
    assert batch.total("Bytes") == 300 and batch.total_once("Bytes") == 200
    assert batch.total_once("Packets") == 2
    # Next interval: the drain re-created pod-b's entry first, yet pod-a still counts.
    later = [row("nobs-pod-a", 0, 2001), row("nobs-pod-b", 1, 2000)]
    linker.link(later, keys[:2 * FLOW_ID.size])
    assert [r[at("Interfaces")] for r in later] == [["nobs-pod-a", "nobs-pod-b"]] * 2


def test_events_of_the_captures_own_connections_are_left_out_and_counted() -> None:
    """RTT and drops of connections with an end at the aggregator (as the agent reached
    it) are the capture's own: no row, counted; the same ends on another port are kept,
    and so is a TC flow row of the own connection (a cluster's real traffic)."""
    from netobserv_tui.agent.features import RTT

    j = joiner(PKTDROP, RTT)
    j.own = frozenset([("127.0.0.1", 37497)])
    to_aggregator = prefix("127.0.0.1", "127.0.0.1", 42250, 37497, proto=6)
    from_aggregator = prefix("127.0.0.1", "127.0.0.1", 37497, 42250, proto=6)
    other_service = prefix("127.0.0.1", "127.0.0.1", 42251, 37498, proto=6)
    rtt = {"TimeFlowRttNs": 36_000}
    tc_row = flow_row(j, to_aggregator)
    rows = j.join(key(to_aggregator), FLOW_ID.size, [tc_row], {
        PKTDROP: {from_aggregator: drop(0)},
        RTT: {to_aggregator: rtt, from_aggregator: rtt, other_service: rtt},
    }, WINDOW)
    assert [col(j, r, "SrcPort") for r in rows] == [42250]  # the TC row, with its RTT
    assert col(j, rows[0], "TimeFlowRttNs") == 36_000
    assert j.excluded_own == 1  # the drop; the RTT entries wait one eviction
    rows = j.join(b"", FLOW_ID.size, [], {}, WINDOW)
    assert [col(j, r, "SrcPort") for r in rows] == [42251]
    assert j.excluded_own == 2  # from_aggregator's RTT; to_aggregator's joined its row
