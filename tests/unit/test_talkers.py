"""Top talkers computed in SQL over captures written by the real FlowWriter: small made-up
captures with every number worked out by hand (local by address, cluster by workload), the
lab capture, and the same answers from records in memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_findings import LAB, matching, write

from netobserv_tui.store.talkers import Talker, talkers, talkers_from_records

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"
WEB = "93.184.216.34"


def flow(src: str, sport: int, dst: str, dport: int, bytes_: int, packets: int,
         **fields: Any) -> dict[str, Any]:
    record = {"SrcAddr": src, "SrcPort": sport, "DstAddr": dst, "DstPort": dport,
              "Proto": 6, "Bytes": bytes_, "Packets": packets, "Sampling": 0,
              "AgentIP": "192.0.2.1", "Interface": "eth0"}
    record.update(fields)
    return record


def both(tmp_path: Path, records: list[dict[str, Any]], **kwargs: Any) -> list[Talker]:
    """The talkers of ``records`` from their SQLite file, checked equal to the ones
    computed from the records themselves."""
    from_file = talkers(write(tmp_path, records), **kwargs)
    assert talkers_from_records(records, **kwargs) == from_file
    return from_file


# -- local: by address -------------------------------------------------------------------

LOCAL = [
    # A -> B seen on two interfaces (1000 bytes at each): once; a second interval on eth0.
    flow(A, 1000, B, 80, 1000, 10),
    flow(A, 1000, B, 80, 1000, 10, Interface="veth0"),
    flow(A, 1000, B, 80, 500, 5),
    # B's answer.
    flow(B, 80, A, 1000, 3000, 3),
    # Sampled 1 in 10: 2000 bytes, 20 packets.
    flow(A, 2000, C, 53, 200, 2, Proto=17, Sampling=10),
    # ICMP: no port.
    flow(C, 0, A, 0, 100, 1, Proto=1),
]


def test_local_talkers_by_address(tmp_path: Path) -> None:
    total = 1500 + 3000 + 2000 + 100
    assert both(tmp_path, LOCAL) == [
        Talker(A, "address", 6600, 39, 4, 6600 / total, ((B, 4500), (C, 2100)),
               (r"/^10\.0\.0\.1$/",)),
        Talker(B, "address", 4500, 18, 2, 4500 / total, ((A, 4500),), (r"/^10\.0\.0\.2$/",)),
        Talker(C, "address", 2100, 21, 2, 2100 / total, ((A, 2100),), (r"/^10\.0\.0\.3$/",)),
    ]


def test_chips_show_exactly_the_talker_records(tmp_path: Path) -> None:
    for talker in both(tmp_path, LOCAL):
        assert talker.exact
        mine = [r for r in LOCAL if talker.name in (r["SrcAddr"], r["DstAddr"])]
        assert matching(LOCAL, talker.chips) == mine


def test_limit(tmp_path: Path) -> None:
    assert [t.name for t in both(tmp_path, LOCAL, limit=2)] == [A, B]


def test_an_address_that_is_also_the_agent_falls_back_to_its_endpoints(
        tmp_path: Path) -> None:
    # A is the host: the agent's address, also on a flow between B and C that it saw.
    records = [{**record, "AgentIP": A} for record in [*LOCAL, flow(B, 3000, C, 22, 10, 1)]]
    found = {t.name: t for t in both(tmp_path, records)}
    # /^10\.0\.0\.1$/ would find B -> C too: the addr:port text is only A's, and leaves its
    # ICMP flow out.
    assert found[A].chips == (r"/^10\.0\.0\.1:[0-9]+$/",)
    assert not found[A].exact
    assert matching(records, found[A].chips) == records[:5]
    assert found[B].chips == (r"/^10\.0\.0\.2$/",) and found[B].exact
    # Without a portless flow, the endpoint chips are exact.
    no_icmp = records[:5] + records[6:]
    found = {t.name: t for t in both(tmp_path / "2", no_icmp)}
    assert found[A].exact
    assert matching(no_icmp, found[A].chips) == records[:5]


def test_ipv6_chips(tmp_path: Path) -> None:
    records = [flow("fd00::1", 5000, "fd00::2", 443, 10, 1, AgentIP="fd00::1"),
               flow("fd00::2", 6000, "fd00::3", 443, 5, 1, AgentIP="fd00::1")]
    found = {t.name: t.chips for t in both(tmp_path, records)}
    assert found == {"fd00::1": (r"/^\[fd00::1\]:[0-9]+$/",), "fd00::2": ("/^fd00::2$/",),
                     "fd00::3": ("/^fd00::3$/",)}
    assert matching(records, found["fd00::1"]) == records[:1]
    assert matching(records, found["fd00::2"]) == records
    assert matching(records, found["fd00::3"]) == records[1:]


# -- cluster: by workload ----------------------------------------------------------------


def pod(ns: str, owner: str, addr: str) -> dict[str, Any]:
    return {"Namespace": ns, "OwnerName": owner, "Name": f"{owner}-5d8f-x", "Addr": addr}


FRONT = pod("shop", "frontend", "10.128.0.10")
FRONT_2 = pod("shop", "frontend", "10.128.0.11")
BACK = pod("shop", "backend", "10.128.0.20")
OTHER_FRONT = pod("other", "frontend", "10.128.1.10")
EXTERNAL = {"Namespace": None, "OwnerName": None, "Name": None, "Addr": WEB}


def k8s_flow(src: dict[str, Any], sport: int, dst: dict[str, Any], dport: int,
             bytes_: int) -> dict[str, Any]:
    record = flow(src["Addr"], sport, dst["Addr"], dport, bytes_, 1)
    for side, end in (("Src", src), ("Dst", dst)):
        for name in ("Namespace", "OwnerName", "Name"):
            record[f"{side}K8S_{name}"] = end[name]
    return record


CLUSTER = [
    k8s_flow(FRONT, 41000, BACK, 8080, 700),
    k8s_flow(BACK, 8080, FRONT, 41000, 300),
    k8s_flow(FRONT_2, 42000, EXTERNAL, 443, 1000),
    k8s_flow(FRONT, 43000, FRONT_2, 9000, 50),  # within the workload: once
    k8s_flow(OTHER_FRONT, 44000, BACK, 8080, 20),
]


def test_cluster_talkers_by_workload(tmp_path: Path) -> None:
    total = 2070
    assert both(tmp_path, CLUSTER) == [
        Talker("shop/frontend", "workload", 2050, 4, 4, 2050 / total,
               ((WEB, 1000), ("shop/backend", 1000), ("shop/frontend", 50)),
               ("/^shop$/", "/^frontend$/"), exact=False),
        Talker("shop/backend", "workload", 1020, 3, 3, 1020 / total,
               (("shop/frontend", 1000), ("other/frontend", 20)),
               ("/^shop$/", "/^backend$/")),
        Talker(WEB, "address", 1000, 1, 1, 1000 / total, (("shop/frontend", 1000),),
               (r"/^93\.184\.216\.34$/",)),
        Talker("other/frontend", "workload", 20, 1, 1, 20 / total, (("shop/backend", 20),),
               ("/^other$/", "/^frontend$/")),
    ]


def test_workload_chips(tmp_path: Path) -> None:
    found = {t.name: t for t in both(tmp_path, CLUSTER)}
    # other/frontend -> shop/backend holds both "shop" and "frontend": said, not hidden.
    assert matching(CLUSTER, found["shop/frontend"].chips) == CLUSTER
    assert not found["shop/frontend"].exact
    assert matching(CLUSTER, found["shop/backend"].chips) == [CLUSTER[0], CLUSTER[1],
                                                              CLUSTER[4]]
    assert matching(CLUSTER, found[WEB].chips) == [CLUSTER[2]]
    assert matching(CLUSTER, found["other/frontend"].chips) == [CLUSTER[4]]


def test_by_address_on_a_cluster_capture(tmp_path: Path) -> None:
    found = both(tmp_path, CLUSTER, by="address")
    assert [(t.name, t.bytes, t.flows, t.kind) for t in found] == [
        ("10.128.0.10", 1050, 3, "address"), ("10.128.0.11", 1050, 2, "address"),
        ("10.128.0.20", 1020, 3, "address"), (WEB, 1000, 1, "address"),
        ("10.128.1.10", 20, 1, "address")]


# -- edges, the lab capture, JSON ----------------------------------------------------------


def test_no_table_no_talkers(tmp_path: Path) -> None:
    import sqlite3

    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert talkers(empty) == []
    assert talkers_from_records([]) == []


def lab_records() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(LAB.read_text())
    return records


LAB_TOP = [
    ("fd00:198:18::10", 7557, 70, 13), ("198.18.0.10", 6541, 75, 18),
    ("198.18.0.11", 5917, 67, 13), ("fd00:198:18::11", 5111, 48, 8),
    ("fd00:198:18::12", 2446, 22, 5), ("198.18.0.12", 624, 8, 5),
]


def test_lab_capture(tmp_path: Path) -> None:
    records = lab_records()
    found = both(tmp_path, records)
    assert [(t.name, t.bytes, t.packets, t.flows) for t in found] == LAB_TOP
    # Every flow between two talkers counts for both: the shares add up to twice the whole.
    assert sum(t.share for t in found) == pytest.approx(2.0)
    assert found[0].peers == (("fd00:198:18::11", 5111), ("fd00:198:18::12", 2446))
    for talker in found:
        assert talker.exact
        mine = [r for r in records if talker.name in (r["SrcAddr"], r["DstAddr"])]
        assert matching(records, talker.chips) == mine


def test_json_round_trip() -> None:
    for talker in talkers_from_records(CLUSTER):
        data = talker.to_json()
        assert json.loads(json.dumps(data)) == data
        assert all(isinstance(value, str | int | float | list) for value in data.values())
        assert Talker.from_json(json.loads(json.dumps(data))) == talker


@pytest.mark.parametrize("data", [{}, {"kind": "pod"}, {"kind": "address", "name": "x"}])
def test_from_json_refuses_what_is_not_a_talker(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Talker.from_json(data)
