"""Kubernetes enrichment in the aggregator (netobserv_tui.aggregator.enrich).

* ``Inventory``: realistic objects as the API serves them (JSON dicts), events and relists.
* ``Enricher``: the columns it adds to a validated batch, and a micro-benchmark (printed).
* ``InventoryWatch`` against the API server double through the real kubernetes-asyncio client:
  objects created through the API appear, 410 Gone relists, dropped connections and an API
  server outage recover.
* End to end: the lab's addresses (namespace "pods") held by the double's pods, services and
  nodes; records sent by the agents' real Exporter to a real Aggregator (in process, then the
  ``python -m netobserv_tui.aggregator --enrich kubernetes`` process); the SQLite file (read with
  the sqlite3 CLI) and the JSON file carry the exact metadata.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from apiserver_double import ApiServerDouble
from kubernetes_asyncio import client

from netobserv_tui.agent.exporter import Exporter
from netobserv_tui.aggregator.batch import Batch
from netobserv_tui.aggregator.enrich import (
    K8S_COLUMNS,
    Enricher,
    Inventory,
    InventoryWatch,
    Meta,
)
from netobserv_tui.aggregator.server import Aggregator
from netobserv_tui.aggregator.writers import FlowWriter
from netobserv_tui.model.fields import BASE_COLUMNS, FIELD_NAMES

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "enrich-t0ken"
NS = "pods"

# The lab's "pods" (netobserv_tui.lab: 198.18.0.10.. and fd00:198:18::10..), as Kubernetes
# pods of namespace "pods" on two nodes in two zones.
NODE_A, NODE_B = "node-a", "node-b"
NODE_A_IP, NODE_B_IP = "198.18.100.1", "198.18.100.2"
NODE_A_EXTERNAL = "203.0.113.1"
ZONE_A, ZONE_B = "eu-west-1a", "eu-west-1b"
HOST_IPS = {NODE_A: NODE_A_IP, NODE_B: NODE_B_IP}
WEB_A, WEB_B = "198.18.0.10", "198.18.0.11"
WEB_A6, WEB_B6 = "fd00:198:18::10", "fd00:198:18::11"
AGENT_IP, DB_IP, DEBUG_IP, JOB_IP, DNS_IP = (
    "198.18.0.12", "198.18.0.13", "198.18.0.14", "198.18.0.15", "198.18.0.53")
CRON_IP = "198.18.0.16"
CRON_JOB = "backup-28951200"  # the Job a CronJob made for 2025-01-17 00:00 UTC
WEB_SVC, WEB_SVC6, API_SVC = "198.19.0.10", "fd00:198:19::10", "198.19.0.1"
RS = "web-7d4b9c5f6"
EXTERNAL = "192.0.2.1"


def owner_ref(kind: str, name: str, api_version: str = "apps/v1") -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": f"uid-{name}",
            "controller": True, "blockOwnerDeletion": True}


def pod_obj(name: str, ips: list[str], *, node: str = NODE_A, ns: str = NS,
            owner: tuple[str, str] | None = None, host_network: bool = False,
            phase: str = "Running") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": {"app": name}}
    if owner is not None:
        api_version = "batch/v1" if owner[0] in ("Job", "CronJob") else "apps/v1"
        meta["ownerReferences"] = [owner_ref(*owner, api_version=api_version)]
    status: dict[str, Any] = {"phase": phase, "hostIP": HOST_IPS[node],
                              "hostIPs": [{"ip": HOST_IPS[node]}]}
    if ips:
        status["podIP"] = ips[0]
        status["podIPs"] = [{"ip": ip} for ip in ips]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": node, "hostNetwork": host_network,
                     "containers": [{"name": "main", "image": "registry.example/app:1.0"}]},
            "status": status}


def node_obj(name: str, ip: str, zone: str, external: str | None = None) -> dict[str, Any]:
    addresses = [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]
    if external:
        addresses.append({"type": "ExternalIP", "address": external})
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                                   "topology.kubernetes.io/zone": zone}},
            "status": {"addresses": addresses}}


def service_obj(name: str, ips: list[str], ns: str = NS) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"type": "ClusterIP", "clusterIP": ips[0], "clusterIPs": ips,
                     "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]}}


def workload_spec(app: str) -> dict[str, Any]:
    return {"replicas": 2, "selector": {"matchLabels": {"app": app}},
            "template": {"metadata": {"labels": {"app": app}},
                         "spec": {"containers": [{"name": "main",
                                                  "image": "registry.example/app:1.0"}]}}}


def replicaset_obj(name: str, deployment: str | None, ns: str = NS) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if deployment:
        meta["ownerReferences"] = [owner_ref("Deployment", deployment)]
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta,
            "spec": workload_spec(deployment or name)}


def job_obj(name: str, cronjob: str | None, ns: str = NS) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if cronjob:
        meta["ownerReferences"] = [owner_ref("CronJob", cronjob, api_version="batch/v1")]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "main", "image": "registry.example/app:1.0"}]}}}}


def cluster_objects() -> dict[str, list[dict[str, Any]]]:
    """The objects of the tests, by kind."""
    return {
        "Node": [node_obj(NODE_A, NODE_A_IP, ZONE_A, NODE_A_EXTERNAL),
                 node_obj(NODE_B, NODE_B_IP, ZONE_B)],
        "ReplicaSet": [replicaset_obj(RS, "web"),
                       replicaset_obj("coredns-5d78c9869d", "coredns", ns="kube-system")],
        # A Job made by hand (its pods' owner), and one made by a CronJob.
        "Job": [job_obj("migrate", None), job_obj(CRON_JOB, "backup")],
        "Pod": [
            pod_obj(f"{RS}-x7k2p", [WEB_A, WEB_A6], node=NODE_A, owner=("ReplicaSet", RS)),
            pod_obj(f"{RS}-q9z4m", [WEB_B, WEB_B6], node=NODE_B, owner=("ReplicaSet", RS)),
            pod_obj("agent-8hj2k", [AGENT_IP], node=NODE_A, owner=("DaemonSet", "agent")),
            pod_obj("db-0", [DB_IP], node=NODE_B, owner=("StatefulSet", "db")),
            pod_obj("debug", [DEBUG_IP], node=NODE_A),
            pod_obj("migrate-4tq8w", [JOB_IP], node=NODE_B, owner=("Job", "migrate"),
                    phase="Succeeded"),
            pod_obj(f"{CRON_JOB}-k2x9p", [CRON_IP], node=NODE_A, owner=("Job", CRON_JOB)),
            # Host network: its address is its node's.
            pod_obj("exporter-lm3nb", [NODE_A_IP], node=NODE_A, owner=("DaemonSet", "exporter"),
                    host_network=True),
            pod_obj("coredns-5d78c9869d-2xw9v", [DNS_IP], node=NODE_B, ns="kube-system",
                    owner=("ReplicaSet", "coredns-5d78c9869d")),
        ],
        "Service": [
            service_obj("web", [WEB_SVC, WEB_SVC6]),
            service_obj("db", ["None"]),  # headless
            service_obj("kubernetes", [API_SVC], ns="default"),
        ],
    }


def web_a() -> Meta:
    return Meta(f"{RS}-x7k2p", NS, "Pod", "web", "Deployment", NODE_A, NODE_A_IP, ZONE_A)


def web_b() -> Meta:
    return Meta(f"{RS}-q9z4m", NS, "Pod", "web", "Deployment", NODE_B, NODE_B_IP, ZONE_B)


NODE_A_META = Meta(NODE_A, None, "Node", NODE_A, "Node", NODE_A, NODE_A_IP, ZONE_A)
NODE_B_META = Meta(NODE_B, None, "Node", NODE_B, "Node", NODE_B, NODE_B_IP, ZONE_B)
WEB_SVC_META = Meta("web", NS, "Service", "web", "Service")

#: Every address of cluster_objects() and what it resolves to.
EXPECTED: dict[str, Meta | None] = {
    WEB_A: web_a(), WEB_A6: web_a(), WEB_B: web_b(), WEB_B6: web_b(),
    AGENT_IP: Meta("agent-8hj2k", NS, "Pod", "agent", "DaemonSet", NODE_A, NODE_A_IP, ZONE_A),
    DB_IP: Meta("db-0", NS, "Pod", "db", "StatefulSet", NODE_B, NODE_B_IP, ZONE_B),
    DEBUG_IP: Meta("debug", NS, "Pod", "debug", "Pod", NODE_A, NODE_A_IP, ZONE_A),
    JOB_IP: Meta("migrate-4tq8w", NS, "Pod", "migrate", "Job", NODE_B, NODE_B_IP, ZONE_B),
    CRON_IP: Meta(f"{CRON_JOB}-k2x9p", NS, "Pod", "backup", "CronJob", NODE_A, NODE_A_IP,
                  ZONE_A),
    DNS_IP: Meta("coredns-5d78c9869d-2xw9v", "kube-system", "Pod", "coredns", "Deployment",
                 NODE_B, NODE_B_IP, ZONE_B),
    NODE_A_IP: NODE_A_META, NODE_A_EXTERNAL: NODE_A_META, NODE_B_IP: NODE_B_META,
    WEB_SVC: WEB_SVC_META, WEB_SVC6: WEB_SVC_META,
    API_SVC: Meta("kubernetes", "default", "Service", "kubernetes", "Service"),
    EXTERNAL: None, "None": None, "": None,
}


def loaded(objects: dict[str, list[dict[str, Any]]] | None = None) -> Inventory:
    inventory = Inventory()
    for kind, items in (objects or cluster_objects()).items():
        inventory.replace(kind, items)
    return inventory


# ------------------------------------------------------------------------------- Inventory


def test_lookup_resolves_every_kind_of_address() -> None:
    inventory = loaded()
    assert {ip: inventory.lookup(ip) for ip in EXPECTED} == EXPECTED
    assert inventory.counts() == {"Pod": 9, "Service": 3, "Node": 2, "ReplicaSet": 2, "Job": 2}


def test_replicaset_listed_after_its_pods_resolves_then() -> None:
    objects = cluster_objects()
    replicasets = objects.pop("ReplicaSet")
    inventory = loaded(objects)
    assert inventory.lookup(WEB_A) == Meta(f"{RS}-x7k2p", NS, "Pod", RS, "ReplicaSet", NODE_A,
                                           NODE_A_IP, ZONE_A)
    inventory.apply("ReplicaSet", "ADDED", replicasets[0])
    assert inventory.lookup(WEB_A) == web_a()
    # A ReplicaSet without owner (created by hand) is the owner itself.
    inventory.apply("ReplicaSet", "MODIFIED", replicaset_obj(RS, None))
    assert inventory.lookup(WEB_A).owner_type == "ReplicaSet"  # type: ignore[union-attr]


def test_job_listed_after_its_pods_resolves_to_its_cronjob_then() -> None:
    objects = cluster_objects()
    jobs = objects.pop("Job")
    inventory = loaded(objects)
    assert inventory.lookup(CRON_IP) == Meta(f"{CRON_JOB}-k2x9p", NS, "Pod", CRON_JOB, "Job",
                                             NODE_A, NODE_A_IP, ZONE_A)
    inventory.apply("Job", "ADDED", jobs[1])
    assert inventory.lookup(CRON_IP) == EXPECTED[CRON_IP]
    # The Job goes (history limit) while its pod is still there: the pod's own owner.
    inventory.apply("Job", "DELETED", jobs[1])
    assert inventory.lookup(CRON_IP).owner_type == "Job"  # type: ignore[union-attr]
    # A Job made by hand is the owner itself; a pod's other owners are never followed.
    inventory.apply("Job", "ADDED", jobs[0])
    assert inventory.lookup(JOB_IP) == EXPECTED[JOB_IP]
    inventory.apply("Job", "ADDED", job_obj("agent", "someone"))  # same name as a DaemonSet
    assert inventory.lookup(AGENT_IP) == EXPECTED[AGENT_IP]


def test_node_listed_after_its_pods_gives_the_zone_then() -> None:
    objects = cluster_objects()
    nodes = objects.pop("Node")
    inventory = loaded(objects)
    assert inventory.lookup(DEBUG_IP) == Meta("debug", NS, "Pod", "debug", "Pod", NODE_A,
                                              NODE_A_IP, None)
    # The host-network pod's address is not a pod address: unknown until the node is.
    assert inventory.lookup(NODE_A_IP) is None
    inventory.apply("Node", "ADDED", nodes[0])
    assert inventory.lookup(DEBUG_IP) == EXPECTED[DEBUG_IP]
    assert inventory.lookup(NODE_A_IP) == NODE_A_META
    # The zone label changes: pods follow.
    relabeled = copy.deepcopy(nodes[0])
    relabeled["metadata"]["labels"]["topology.kubernetes.io/zone"] = "eu-west-1c"
    inventory.apply("Node", "MODIFIED", relabeled)
    assert inventory.lookup(DEBUG_IP).zone == "eu-west-1c"  # type: ignore[union-attr]


def test_dual_stack_host_network_pod_resolves_to_its_node_for_both_families() -> None:
    node = node_obj(NODE_A, NODE_A_IP, ZONE_A)
    node["status"]["addresses"].append({"type": "InternalIP", "address": "fd00:198:100::1"})
    pod = pod_obj("exporter", [NODE_A_IP, "fd00:198:100::1"], host_network=True)
    inventory = Inventory()
    inventory.apply("Node", "ADDED", node)
    inventory.apply("Pod", "ADDED", pod)
    expected = Meta(NODE_A, None, "Node", NODE_A, "Node", NODE_A, NODE_A_IP, ZONE_A)
    assert inventory.lookup(NODE_A_IP) == expected
    assert inventory.lookup("fd00:198:100::1") == expected


def test_addresses_are_normalized_like_the_agents_write_them() -> None:
    inventory = Inventory()
    inventory.apply("Pod", "ADDED", pod_obj("v6", ["FD00:198:18:0:0:0:0:AB"]))
    assert inventory.lookup("fd00:198:18::ab") is not None
    assert inventory.lookup("FD00:198:18:0:0:0:0:AB") is None  # agents write inet_ntop text


def test_modified_pod_moves_its_address() -> None:
    inventory = loaded()
    moved = pod_obj("debug", ["198.18.0.99"], node=NODE_A)
    inventory.apply("Pod", "MODIFIED", moved)
    assert inventory.lookup(DEBUG_IP) is None
    assert inventory.lookup("198.18.0.99").name == "debug"  # type: ignore[union-attr]
    # Events of other types (BOOKMARK) change nothing.
    inventory.apply("Pod", "BOOKMARK", {"metadata": {"resourceVersion": "9"}})
    assert inventory.lookup("198.18.0.99") is not None


def test_address_reused_after_the_old_pod_is_deleted() -> None:
    inventory = loaded()
    old = pod_obj("debug", [DEBUG_IP], node=NODE_A)
    inventory.apply("Pod", "DELETED", old)
    assert inventory.lookup(DEBUG_IP) is None
    new = pod_obj("debug-2", [DEBUG_IP], node=NODE_B, owner=("StatefulSet", "cache"))
    inventory.apply("Pod", "ADDED", new)
    assert inventory.lookup(DEBUG_IP) == Meta("debug-2", NS, "Pod", "cache", "StatefulSet",
                                              NODE_B, NODE_B_IP, ZONE_B)
    # A late DELETED of the old pod does not take the address from the new one.
    inventory.apply("Pod", "DELETED", old)
    assert inventory.lookup(DEBUG_IP).name == "debug-2"  # type: ignore[union-attr]


def test_address_reused_while_the_old_pod_still_exists() -> None:
    inventory = loaded()
    # The completed Job pod keeps its address in its status; a new pod gets it.
    new = pod_obj("reuser", [JOB_IP], node=NODE_A)
    inventory.apply("Pod", "ADDED", new)
    assert inventory.lookup(JOB_IP).name == "reuser"  # type: ignore[union-attr]
    # The finished pod being modified does not take it back (running pods win).
    finished = pod_obj("migrate-4tq8w", [JOB_IP], node=NODE_B, owner=("Job", "migrate"),
                       phase="Succeeded")
    inventory.apply("Pod", "MODIFIED", finished)
    assert inventory.lookup(JOB_IP).name == "reuser"  # type: ignore[union-attr]
    inventory.apply("Pod", "DELETED", new)
    assert inventory.lookup(JOB_IP) == EXPECTED[JOB_IP]


def test_services_nodes_and_replicasets_events() -> None:
    inventory = loaded()
    inventory.apply("Service", "DELETED", service_obj("web", [WEB_SVC, WEB_SVC6]))
    assert inventory.lookup(WEB_SVC) is None and inventory.lookup(WEB_SVC6) is None
    inventory.apply("Node", "DELETED", node_obj(NODE_B, NODE_B_IP, ZONE_B))
    assert inventory.lookup(NODE_B_IP) is None
    # A pod of the deleted node keeps its host (from the pod), not the zone (from the node).
    assert inventory.lookup(DB_IP) == Meta("db-0", NS, "Pod", "db", "StatefulSet", NODE_B,
                                           NODE_B_IP, None)
    inventory.apply("ReplicaSet", "DELETED", replicaset_obj(RS, "web"))
    assert inventory.lookup(WEB_B).owner_type == "ReplicaSet"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="unknown kind"):
        inventory.apply("Deployment", "ADDED", {})


def test_relist_replaces_the_state_of_that_kind_only() -> None:
    inventory = loaded()
    objects = cluster_objects()
    pods = [p for p in objects["Pod"] if p["metadata"]["name"] != "debug"]
    pods.append(pod_obj("newcomer", ["198.18.0.77"], node=NODE_B))
    inventory.replace("Pod", pods)
    assert inventory.lookup(DEBUG_IP) is None
    assert inventory.lookup("198.18.0.77").name == "newcomer"  # type: ignore[union-attr]
    assert inventory.lookup(WEB_SVC) == WEB_SVC_META  # services untouched
    assert inventory.lookup(WEB_A) == web_a()
    inventory.replace("Service", [])
    assert inventory.lookup(WEB_SVC) is None
    assert inventory.counts() == {"Pod": 9, "Service": 0, "Node": 2, "ReplicaSet": 2, "Job": 2}
    inventory.replace("Job", [])
    assert inventory.lookup(CRON_IP).owner_type == "Job"  # type: ignore[union-attr]
    assert inventory.lookup(WEB_A) == web_a()


async def test_client_models_are_accepted_once_sanitized() -> None:
    async with client.ApiClient() as api:
        model = client.V1Pod(
            metadata=client.V1ObjectMeta(name="modelled", namespace=NS, owner_references=[
                client.V1OwnerReference(api_version="apps/v1", kind="ReplicaSet", name=RS,
                                        uid="u", controller=True)]),
            spec=client.V1PodSpec(node_name=NODE_B, containers=[
                client.V1Container(name="main", image="registry.example/app:1.0")]),
            status=client.V1PodStatus(host_ip=NODE_B_IP, pod_ip="198.18.0.88",
                                      pod_ips=[client.V1PodIP(ip="198.18.0.88")]))
        inventory = loaded()
        inventory.apply("Pod", "ADDED", api.sanitize_for_serialization(model))
    assert inventory.lookup("198.18.0.88") == Meta("modelled", NS, "Pod", "web", "Deployment",
                                                   NODE_B, NODE_B_IP, ZONE_B)


# ------------------------------------------------------------------------------- Enricher


def flow_record(i: int, src: str, dst: str, etype: int = 2048) -> dict[str, Any]:
    """A complete base record (every BASE_COLUMNS field) from ``src`` to ``dst``."""
    return dict.fromkeys(BASE_COLUMNS, 0) | {
        "SrcAddr": src, "DstAddr": dst, "SrcPort": 40000 + i, "DstPort": 8080, "Proto": 6,
        "Etype": etype, "SrcMac": "0A:58:C6:12:00:0A", "DstMac": "0A:58:C6:12:00:14",
        "Bytes": 1000 + i, "Packets": 2, "TimeFlowStartMs": 1_795_633_800_000 + i,
        "TimeFlowEndMs": 1_795_633_800_400 + i, "AgentIP": NODE_A_IP,
        "Interface": "nobs-pod-a", "Interfaces": ["nobs-pod-a"], "IfDirections": [0]}


def batch_of(pairs: list[tuple[str | None, str | None]], extra: dict[str, Any] | None = None,
             ) -> Batch:
    columns = ["SrcAddr", "DstAddr", "Bytes", *(extra or {})]
    rows = [[src, dst, 100 + i, *(extra or {}).values()] for i, (src, dst) in enumerate(pairs)]
    return Batch.from_rows(columns, rows)


def row_dicts(batch: Batch) -> list[dict[str, Any]]:
    return [dict(zip(batch.columns, row, strict=True)) for row in batch.rows()]


def k8s_of(meta: Meta | None, side: str) -> dict[str, Any]:
    values = meta if meta else (None,) * 8
    names = [c for c in K8S_COLUMNS if c.startswith(side)]
    return dict(zip(names, values, strict=True))


#: (src, dst, K8S_FlowLayer): netobserv's EnrichLayer cases.
LAYER_CASES = [
    (DNS_IP, NODE_B_IP, "infra"),       # infra pod to node
    (NODE_A_IP, API_SVC, "infra"),      # node to default/kubernetes
    (NODE_A_IP, EXTERNAL, "infra"),     # node to external
    (EXTERNAL, "192.0.2.2", "infra"),   # external to external
    (NODE_A_IP, NODE_B_IP, "infra"),    # node to node
    (WEB_A, WEB_SVC, "app"),            # app to app
    (NODE_B_IP, WEB_B, "app"),          # node to app
    (WEB_A, DNS_IP, "app"),             # app to infra
    (DEBUG_IP, EXTERNAL, "app"),        # app to external
    (API_SVC, DB_IP, "app"),            # infra service to app
]


def test_enrich_appends_the_columns_with_exact_values() -> None:
    enricher = Enricher(loaded())
    pairs: list[tuple[str | None, str | None]] = [(s, d) for s, d, _ in LAYER_CASES]
    pairs += [(WEB_A6, WEB_SVC6), (None, WEB_B)]
    batch = batch_of(pairs)
    enricher(batch)
    assert batch.columns == ("SrcAddr", "DstAddr", "Bytes", *K8S_COLUMNS)
    assert batch.columns[3:] == tuple(c for c in FIELD_NAMES if "K8S" in c)
    rows = row_dicts(batch)
    for row, (src, dst) in zip(rows, pairs, strict=True):
        assert row == {"SrcAddr": src, "DstAddr": dst, "Bytes": row["Bytes"],
                       **k8s_of(EXPECTED.get(src or ""), "Src"),
                       **k8s_of(EXPECTED.get(dst or ""), "Dst"),
                       "K8S_FlowLayer": row["K8S_FlowLayer"]}
    assert [r["K8S_FlowLayer"] for r in rows] == [
        *(layer for *_, layer in LAYER_CASES), "app", "app"]
    # Index sets: a column with a None is nullable, the others are plain text for JSON.
    for i, name in enumerate(batch.columns[3:], start=3):
        has_none = None in batch.values[i]
        assert (i in batch.nullable) == has_none, name
        assert (i in batch.plain) == (not has_none), name


def test_enrich_writes_valid_files(tmp_path: Path) -> None:
    batch = batch_of([(WEB_A, WEB_SVC), (EXTERNAL, NODE_B_IP), (NODE_A_IP, WEB_B)])
    Enricher(loaded())(batch)
    writer = FlowWriter(tmp_path)
    writer.write(batch)
    files = writer.close()
    objects = json.loads(Path(files["json"]).read_text())
    assert objects[1] == {"SrcAddr": EXTERNAL, "DstAddr": NODE_B_IP, "Bytes": 101,
                          **{k: v for k, v in k8s_of(NODE_B_META, "Dst").items()
                             if v is not None}, "K8S_FlowLayer": "infra"}
    assert objects[0]["SrcK8S_OwnerName"] == "web" and objects[0]["DstK8S_Type"] == "Service"


def test_enrich_replaces_k8s_columns_sent_by_an_agent_and_skips_empty_batches() -> None:
    enricher = Enricher(loaded())
    batch = batch_of([(WEB_A, EXTERNAL)], {"SrcK8S_Name": "forged", "K8S_FlowLayer": "x"})
    enricher(batch)
    assert batch.columns == ("SrcAddr", "DstAddr", "Bytes", *K8S_COLUMNS)
    assert row_dicts(batch)[0]["SrcK8S_Name"] == f"{RS}-x7k2p"
    assert len(batch.values) == len(batch.columns)
    empty = Batch.from_rows(["SrcAddr"], [])
    enricher(empty)
    assert empty.columns == ("SrcAddr",)


def test_enrich_without_address_columns_and_with_unplain_names() -> None:
    inventory = loaded()
    batch = Batch.from_rows(["Bytes"], [[1], [2]])
    Enricher(inventory)(batch)
    assert row_dicts(batch)[0]["K8S_FlowLayer"] == "infra"
    assert row_dicts(batch)[0]["SrcK8S_Name"] is None
    # A value that needs JSON escaping (not a valid name, but the writer must cope).
    inventory.apply("Node", "MODIFIED", node_obj(NODE_A, NODE_A_IP, 'zone "a"'))
    batch = batch_of([(NODE_A_IP, NODE_A_IP)])
    Enricher(inventory)(batch)
    assert not batch.plain & set(range(3, len(batch.columns)))


def test_infra_prefixes_include_our_namespace() -> None:
    objects = cluster_objects()
    objects["Pod"].append(pod_obj("aggregator", ["198.18.0.200"], ns="team-net"))
    inventory = loaded(objects)
    pairs: list[tuple[str | None, str | None]] = [("198.18.0.200", NODE_A_IP)]
    default, ours = batch_of(pairs), batch_of(pairs)
    Enricher(inventory)(default)
    Enricher(inventory, infra_prefixes=("openshift", "kube-", "team-net"))(ours)
    assert row_dicts(default)[0]["K8S_FlowLayer"] == "app"
    assert row_dicts(ours)[0]["K8S_FlowLayer"] == "infra"


def test_micro_benchmark_of_5000_row_batches(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Not a timed test: prints what enrichment costs per 5000-row batch, next to what
    writing the same batch costs, with the aggregator process's GC settings (__main__)."""
    objects = cluster_objects()
    objects["Node"] = [node_obj(f"node-{i}", f"10.0.{i}.1", f"zone-{i % 3}") for i in range(50)]
    objects["ReplicaSet"] = [replicaset_obj(f"app-{i}-rs", f"app-{i}") for i in range(200)]
    objects["Pod"] = [pod_obj(f"app-{i % 200}-rs-{i}", [f"10.128.{i // 250}.{i % 250}"],
                              owner=("ReplicaSet", f"app-{i % 200}-rs"))
                      for i in range(5000)]
    for i, pod in enumerate(objects["Pod"]):
        pod["spec"]["nodeName"] = f"node-{i % 50}"
    objects["Service"] = [service_obj(f"svc-{i}", [f"172.30.{i // 250}.{i % 250}"])
                          for i in range(500)]
    enricher = Enricher(loaded(objects))
    columns = list(BASE_COLUMNS)
    writer = FlowWriter(tmp_path)
    results = []
    thresholds = gc.get_threshold()
    gc.collect()
    gc.set_threshold(50_000, 20, 10)
    try:
        for distinct in (50, 500, 5000):
            rows = []
            for i in range(5000):
                j = i % distinct
                src = f"10.128.{j // 250}.{j % 250}"
                dst = f"172.30.{j % 500 // 250}.{j % 250}" if i % 3 else f"192.0.2.{j % 200}"
                row = flow_record(i, src, dst)
                rows.append([row[c] for c in columns])
            template = Batch.from_rows(columns, rows)
            runs = 20
            batches = [Batch(template.columns, list(template.values), template.nrows,
                             template.nullable, template.plain) for _ in range(runs)]
            started = time.perf_counter()
            for batch in batches:
                enricher(batch)
            enrich = (time.perf_counter() - started) / runs
            started = time.perf_counter()
            for batch in batches[:5]:
                writer.write(batch)
            write = (time.perf_counter() - started) / 5
            assert batches[0].nrows == 5000
            assert len(batches[0].columns) == len(columns) + len(K8S_COLUMNS)
            results.append(f"{distinct:>4} distinct addresses a side: enrich {enrich * 1e3:.2f} "
                           f"ms ({enrich / 5000 * 1e9:.0f} ns/row), write {write * 1e3:.1f} ms")
    finally:
        gc.set_threshold(*thresholds)
        writer.close()
    with capsys.disabled():
        print("\nKubernetes enrichment of 5000-row batches (5000 pods, 500 services, "
              "50 nodes):\n  " + "\n  ".join(results))


# ------------------------------------------------------------------------------- the watch


async def seed(apiserver: ApiServerDouble) -> None:
    """cluster_objects() in the double (nodes through add_node, as the double makes them)."""
    apiserver.add_node(NODE_A, internal_ip=NODE_A_IP, zone=ZONE_A)
    apiserver.add_node(NODE_B, internal_ip=NODE_B_IP, zone=ZONE_B)
    node_a = apiserver.get("nodes", NODE_A)
    assert node_a is not None
    apiserver.patch("nodes", NODE_A, {"status": {"addresses": [
        *node_a["status"]["addresses"], {"type": "ExternalIP", "address": NODE_A_EXTERNAL}]}})
    apiserver.put("namespaces", {"metadata": {"name": NS}})
    objects = cluster_objects()
    for ns, name in ((NS, "web"), ("kube-system", "coredns")):
        deployment = apiserver.put("deployments", {
            "metadata": {"name": name, "namespace": ns}, "spec": workload_spec(name)})
        for rs in objects["ReplicaSet"]:
            ref = rs["metadata"]["ownerReferences"][0]
            if ref["name"] == name:
                ref["uid"] = deployment["metadata"]["uid"]
                apiserver.put("replicasets", rs)
    cronjob = apiserver.put("cronjobs", {
        "metadata": {"name": "backup", "namespace": NS},
        "spec": {"schedule": "0 0 * * *", "jobTemplate": {"spec": job_obj("x", None)["spec"]}}})
    for job in objects["Job"]:
        for ref in job["metadata"].get("ownerReferences", []):
            ref["uid"] = cronjob["metadata"]["uid"]
        apiserver.put("jobs", job)
    for pod in objects["Pod"]:
        apiserver.put("pods", pod)
    for svc in objects["Service"]:
        created = apiserver.put("services", svc)
        # The double makes services single-stack: give "web" its IPv6 address back.
        ns, name = created["metadata"]["namespace"], created["metadata"]["name"]
        apiserver.patch("services", name, {"spec": {"clusterIPs": svc["spec"]["clusterIPs"]}},
                        namespace=ns)


@contextlib.asynccontextmanager
async def watching(api_client: client.ApiClient, **kwargs: Any) -> AsyncIterator[InventoryWatch]:
    kwargs.setdefault("backoff", 0.05)
    kwargs.setdefault("max_backoff", 0.2)
    async with InventoryWatch(api_client, **kwargs) as watch:
        assert await watch.wait_ready(5), watch.problem
        yield watch


async def until(predicate: Any, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_watch_lists_then_follows_objects_made_through_the_api(
        apiserver: ApiServerDouble, api_client: client.ApiClient) -> None:
    await seed(apiserver)
    async with watching(api_client, page_size=3) as watch:
        inventory = watch.inventory
        assert {ip: inventory.lookup(ip) for ip in EXPECTED} == EXPECTED
        assert watch.lists == {"Pod": 1, "Service": 1, "Node": 1, "ReplicaSet": 1, "Job": 1}
        core = client.CoreV1Api(api_client)
        await core.create_namespaced_pod(NS, client.V1Pod(
            metadata=client.V1ObjectMeta(name="late", owner_references=[client.V1OwnerReference(
                api_version="apps/v1", kind="ReplicaSet", name=RS, uid="u", controller=True)]),
            spec=client.V1PodSpec(node_name=NODE_B, containers=[
                client.V1Container(name="main", image="registry.example/app:1.0")])))
        apiserver.set_pod_status(NS, "late", pod_ip="198.18.0.30")
        await until(lambda: inventory.lookup("198.18.0.30") is not None, "the new pod")
        assert inventory.lookup("198.18.0.30") == Meta("late", NS, "Pod", "web", "Deployment",
                                                       NODE_B, NODE_B_IP, ZONE_B)
        await core.create_namespaced_service(NS, client.V1Service(
            metadata=client.V1ObjectMeta(name="late-svc"),
            spec=client.V1ServiceSpec(cluster_ip="198.19.0.30",
                                      ports=[client.V1ServicePort(port=80)])))
        await until(lambda: inventory.lookup("198.19.0.30") is not None, "the new service")
        await core.delete_namespaced_pod("late", NS)
        await until(lambda: inventory.lookup("198.18.0.30") is None, "the pod's deletion")
        assert watch.lists == {"Pod": 1, "Service": 1, "Node": 1, "ReplicaSet": 1, "Job": 1}
    # Stopped: the watches are closed.
    await apiserver.wait_for(lambda: apiserver.streams("watch") == 0, what="closed watches")


async def test_410_gone_relists(apiserver: ApiServerDouble,
                                api_client: client.ApiClient) -> None:
    await seed(apiserver)
    async with watching(api_client) as watch:
        inventory = watch.inventory
        # History compacted, then a change: the pods watch's version is now too old, and
        # the change is what its next watch would have to replay.
        apiserver.compact()
        apiserver.remove("pods", "debug", namespace=NS)
        apiserver.compact()
        apiserver.drop_connections()
        await until(lambda: watch.lists["Pod"] == 2, "a relist of the pods")
        await until(lambda: inventory.lookup(DEBUG_IP) is None, "the pod's deletion")
        assert inventory.lookup(WEB_A) == web_a()
        # And the watch goes on from the relist.
        apiserver.put("pods", pod_obj("after", ["198.18.0.31"], node=NODE_A))
        await until(lambda: inventory.lookup("198.18.0.31") is not None, "a pod after")
        # A 410 sent as an ERROR event on a live watch relists too.
        apiserver.fail_next("watch", "services", 410)
        apiserver.drop_connections()
        await until(lambda: watch.lists["Service"] == 2, "a relist of the services")


async def test_dropped_connections_resume_without_relisting(
        apiserver: ApiServerDouble, api_client: client.ApiClient,
        caplog: pytest.LogCaptureFixture) -> None:
    await seed(apiserver)
    caplog.set_level(logging.DEBUG, "netobserv_tui.aggregator.enrich")
    async with watching(api_client) as watch:
        inventory = watch.inventory
        for i in range(3):
            await until(lambda: apiserver.streams("watch") == 5, "five watches")
            assert apiserver.drop_connections() == 5
            apiserver.put("pods", pod_obj(f"p{i}", [f"198.18.0.4{i}"], node=NODE_B))
            await until(lambda i=i: inventory.lookup(f"198.18.0.4{i}") is not None,
                        "the pod made while the watch was cut")
        assert watch.lists == {"Pod": 1, "Service": 1, "Node": 1, "ReplicaSet": 1, "Job": 1}
        assert watch.drops == {"Pod": 3, "Service": 3, "Node": 3, "ReplicaSet": 3, "Job": 3}
        assert watch.failures == {"Pod": 0, "Service": 0, "Node": 0, "ReplicaSet": 0, "Job": 0}
    # A cut that resumes at once is no outage: nothing above debug.
    assert not [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG]


async def test_api_server_outage_is_logged_once_and_recovered(
        apiserver: ApiServerDouble, api_client: client.ApiClient,
        caplog: pytest.LogCaptureFixture) -> None:
    await seed(apiserver)
    caplog.set_level(logging.INFO, "netobserv_tui.aggregator.enrich")
    async with watching(api_client) as watch:
        inventory = watch.inventory
        await apiserver.stop()
        # While it is down: a pod goes, a service comes, and the history is compacted.
        apiserver.remove("pods", "db-0", namespace=NS)
        apiserver.put("services", service_obj("while-down", ["198.19.0.40"]))
        apiserver.compact()
        await until(lambda: sum(watch.failures.values()) >= 12, "several failed retries")
        assert inventory.lookup(DB_IP) is not None  # what is known stays
        await apiserver.start()
        await until(lambda: inventory.lookup(DB_IP) is None, "the relisted pods")
        await until(lambda: inventory.lookup("198.19.0.40") is not None, "the service")
        await until(lambda: watch.problem is None, "every kind back")
    records = [r for r in caplog.records if r.name == "netobserv_tui.aggregator.enrich"]
    warnings = [r for r in records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "cannot watch" in warnings[0].getMessage()
    assert any("answers again" in r.getMessage() for r in records)


#: Where workloads() makes its workloads, and the owners their pods must resolve to.
SHOP = "shop"
CRONJOB_RUN = datetime(2025, 1, 17, tzinfo=UTC)
WORKLOAD_OWNERS = sorted([
    ("web", "Deployment"), ("web", "Deployment"), ("agent", "DaemonSet"), ("agent", "DaemonSet"),
    ("db", "StatefulSet"), ("db", "StatefulSet"), ("migrate", "Job"), ("backup", "CronJob"),
    ("legacy", "ReplicaSet"), ("debug", "Pod"),
])


async def workloads(apiserver: ApiServerDouble, api_client: client.ApiClient) -> None:
    """Every kind of pod owner, made through the API and brought up by the double's
    controllers on the two nodes of seed(): a Deployment (through its ReplicaSet), a
    DaemonSet, a StatefulSet, a Job, a CronJob (through the Job it made), a ReplicaSet made
    by hand and a pod of its own."""
    apiserver.run_controllers()
    await client.CoreV1Api(api_client).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=SHOP)))
    apps, batch = client.AppsV1Api(api_client), client.BatchV1Api(api_client)

    def spec(app: str, **extra: Any) -> dict[str, Any]:
        return {"selector": {"matchLabels": {"app": app}}, **extra,
                "template": {"metadata": {"labels": {"app": app}}, "spec": {"containers": [
                    {"name": "main", "image": "registry.example/app:1.0"}]}}}

    job = {"template": {"spec": {"restartPolicy": "Never", "containers": [
        {"name": "main", "image": "registry.example/job:1.0"}]}}}
    await apps.create_namespaced_deployment(SHOP, {"metadata": {"name": "web"},
                                                   "spec": spec("web", replicas=2)})
    await apps.create_namespaced_daemon_set(SHOP, {"metadata": {"name": "agent"},
                                                   "spec": spec("agent")})
    await apps.create_namespaced_stateful_set(SHOP, {"metadata": {"name": "db"},
                                                     "spec": spec("db", replicas=2,
                                                                  serviceName="db")})
    await apps.create_namespaced_replica_set(SHOP, {"metadata": {"name": "legacy"},
                                                    "spec": spec("legacy", replicas=1)})
    await batch.create_namespaced_job(SHOP, {"metadata": {"name": "migrate"}, "spec": job})
    await batch.create_namespaced_cron_job(SHOP, {
        "metadata": {"name": "backup"},
        "spec": {"schedule": "0 0 * * *", "jobTemplate": {"spec": job}}})
    apiserver.run_cronjob(SHOP, "backup", scheduled=CRONJOB_RUN)
    await client.CoreV1Api(api_client).create_namespaced_pod(SHOP, {
        "metadata": {"name": "debug"},
        "spec": {"containers": [{"name": "main", "image": "registry.example/app:1.0"}]}})
    await apiserver.settled()


def workload_owners(apiserver: ApiServerDouble, inventory: Inventory) -> list[tuple[str, str]]:
    """(owner name, owner kind) of every pod of SHOP as the inventory resolves its address;
    each must resolve to that very pod, on its node."""
    owners = []
    for pod in apiserver.objects("pods", SHOP):
        meta = inventory.lookup(pod["status"]["podIP"])
        if meta is None:
            continue
        node = pod["spec"]["nodeName"]
        assert (meta.name, meta.namespace, meta.type, meta.host_name) == (
            pod["metadata"]["name"], SHOP, "Pod", node)
        owners.append((meta.owner_name, meta.owner_type))
    return sorted(owners)


async def check_workload_owners(apiserver: ApiServerDouble, inventory: Inventory) -> None:
    await until(lambda: workload_owners(apiserver, inventory) == WORKLOAD_OWNERS,
                "every workload's pod resolved to its owner")
    # The named ones, spelled out.
    by_name = {p["metadata"]["name"]: inventory.lookup(p["status"]["podIP"])
               for p in apiserver.objects("pods", SHOP)}
    for name in ("db-0", "db-1", "debug"):
        meta = by_name[name]
        assert meta is not None and (meta.owner_name, meta.owner_type) == (
            ("debug", "Pod") if name == "debug" else ("db", "StatefulSet"))
    cron_pods = [n for n in by_name if n.startswith("backup-28951200-")]
    assert len(cron_pods) == 1 and by_name[cron_pods[0]].owner_type == (  # type: ignore[union-attr]
        "CronJob")


async def test_owner_chain_of_every_workload_kind(apiserver: ApiServerDouble,
                                                  api_client: client.ApiClient) -> None:
    await seed(apiserver)
    async with watching(api_client) as watch:
        await workloads(apiserver, api_client)
        await check_workload_owners(apiserver, watch.inventory)
        # The CronJob's Job deleted, its pod orphaned: the pod's owner is the Job it names.
        (cron_pod,) = [p for p in apiserver.objects("pods", SHOP)
                       if p["metadata"]["name"].startswith("backup-")]
        await client.BatchV1Api(api_client).delete_namespaced_job(
            "backup-28951200", SHOP, propagation_policy="Orphan")
        ip = cron_pod["status"]["podIP"]
        await until(lambda: watch.inventory.lookup(ip).owner_type == "Job",  # type: ignore[union-attr]
                    "the orphaned pod owned by its Job")
        assert watch.inventory.lookup(ip) == Meta(
            cron_pod["metadata"]["name"], SHOP, "Pod", "backup-28951200", "Job",
            cron_pod["spec"]["nodeName"], cron_pod["status"]["hostIP"],
            ZONE_A if cron_pod["spec"]["nodeName"] == NODE_A else ZONE_B)


async def test_forbidden_lists_never_get_ready(apiserver: ApiServerDouble,
                                               api_client: client.ApiClient) -> None:
    await seed(apiserver)
    apiserver.deny("list", "replicasets", group="apps")
    async with InventoryWatch(api_client, backoff=0.05, max_backoff=0.1) as watch:
        assert not await watch.wait_ready(0.5)
        assert watch.problem is not None and "403" in watch.problem
        assert watch.inventory.counts()["Pod"] == 9  # the other kinds are there
        apiserver.allow_all()
        assert await watch.wait_ready(5)


# ------------------------------------------------------------------------------- end to end

#: Lab flows (between the "pods" of namespace "pods", and to their services and nodes).
FLOWS: list[tuple[str, str, int]] = [
    (WEB_A, WEB_SVC, 2048), (WEB_B, WEB_A, 2048), (WEB_A6, WEB_SVC6, 34525),
    (AGENT_IP, NODE_B_IP, 2048), (NODE_A_IP, EXTERNAL, 2048), (DB_IP, DEBUG_IP, 2048),
    (JOB_IP, DNS_IP, 2048), (DNS_IP, NODE_A_EXTERNAL, 2048), (EXTERNAL, "192.0.2.2", 2048),
    (WEB_B6, "fd00:198:18::99", 34525), (CRON_IP, DB_IP, 2048),
]


def flow_records() -> list[dict[str, Any]]:
    return [flow_record(i, src, dst, etype) for i, (src, dst, etype) in enumerate(FLOWS)]


def expected_k8s(src: str, dst: str) -> dict[str, Any]:
    """The K8S columns of a flow, as the files must hold them (None: NULL / absent)."""
    enricher = Enricher(Inventory())
    src_meta, dst_meta = EXPECTED.get(src), EXPECTED.get(dst)
    app = enricher.is_app(src_meta) or enricher.is_app(dst_meta)
    return {**k8s_of(src_meta, "Src"), **k8s_of(dst_meta, "Dst"),
            "K8S_FlowLayer": "app" if app else "infra"}


def sqlite_rows(db: str | Path) -> list[dict[str, Any]]:
    columns = ", ".join(["SrcAddr", "DstAddr", *K8S_COLUMNS])
    out = subprocess.run(["sqlite3", "-json", str(db),
                          f"SELECT {columns} FROM flow ORDER BY SrcPort"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    rows: list[dict[str, Any]] = json.loads(out) if out.strip() else []
    return rows


def check_files(files: dict[str, str]) -> None:
    expected = [{"SrcAddr": s, "DstAddr": d, **expected_k8s(s, d)} for s, d, _ in FLOWS]
    assert sqlite_rows(files["db"]) == expected
    objects = json.loads(Path(files["json"]).read_text())
    assert [{k: v for k, v in o.items() if "K8S" in k or k in ("SrcAddr", "DstAddr")}
            for o in objects] == [{k: v for k, v in e.items() if v is not None}
                                  for e in expected]
    # Spot checks, spelled out.
    web = objects[0]
    assert (web["SrcK8S_Name"], web["SrcK8S_Namespace"], web["SrcK8S_OwnerName"],
            web["SrcK8S_OwnerType"], web["SrcK8S_HostName"], web["SrcK8S_HostIP"],
            web["SrcK8S_Zone"]) == (f"{RS}-x7k2p", NS, "web", "Deployment", NODE_A, NODE_A_IP,
                                    ZONE_A)
    assert (web["DstK8S_Name"], web["DstK8S_Type"], web["K8S_FlowLayer"]) == (
        "web", "Service", "app")
    assert "DstK8S_Name" not in objects[4] and objects[4]["SrcK8S_Type"] == "Node"
    assert not any("K8S_" in k and k != "K8S_FlowLayer" for k in objects[8])


def send(port: int, records: list[dict[str, Any]]) -> None:
    exporter = Exporter("127.0.0.1", port, TOKEN,
                        {"ip": NODE_A_IP, "hostname": NODE_A, "version": "test"})
    exporter.connect()
    columns = list(BASE_COLUMNS)
    exporter.submit(columns, [[r[c] for c in columns] for r in records])
    deadline = time.monotonic() + 10
    while exporter.pending_rows:
        assert time.monotonic() < deadline, "the aggregator did not acknowledge the batch"
        exporter.pump(wait=0.05)
    assert exporter.finish(5.0)


async def test_aggregator_in_process_writes_enriched_files(
        apiserver: ApiServerDouble, api_client: client.ApiClient, tmp_path: Path) -> None:
    await seed(apiserver)
    async with watching(api_client) as watch:
        aggregator = Aggregator(tmp_path / "out", TOKEN, enricher=Enricher(watch.inventory))
        await aggregator.start()
        try:
            await asyncio.to_thread(send, aggregator.port, flow_records())
        finally:
            summary = await aggregator.stop()
    assert summary["flows"] == len(FLOWS)
    check_files(summary["files"])


async def test_a_failing_enricher_never_loses_a_batch(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def broken(batch: Batch) -> None:
        calls.append(batch.nrows)
        raise RuntimeError("boom")

    aggregator = Aggregator(tmp_path / "out", TOKEN, enricher=broken)
    await aggregator.start()
    try:
        await asyncio.to_thread(send, aggregator.port, flow_records())
        await asyncio.to_thread(send, aggregator.port, flow_records())
    finally:
        summary = await aggregator.stop()
    assert calls == [len(FLOWS), len(FLOWS)] and summary["flows"] == 2 * len(FLOWS)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "Enrichment failed; batches go on without it when it fails"]
    assert all(row["SrcK8S_Name"] is None for row in sqlite_rows(summary["files"]["db"]))


async def run_process(tmp_path: Path, *extra: str) -> tuple[dict[str, Any], str]:
    """Start the aggregator process, send the flows, SIGTERM it: (closed line, stderr)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NETOBSERV_TOKEN": TOKEN}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "netobserv_tui.aggregator", "--listen", "127.0.0.1:0",
        "--output", str(tmp_path / "out"), "--grace", "2", *extra,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async with asyncio.timeout(30):
            line = await proc.stdout.readline()
            assert line, (await proc.stderr.read()).decode()
            ready = json.loads(line)
            assert ready["event"] == "ready"
            await asyncio.to_thread(send, ready["port"], flow_records())
            proc.send_signal(signal.SIGTERM)
            out, err = await proc.communicate()
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    assert proc.returncode == 0, err.decode()
    closed: dict[str, Any] = json.loads(out)
    assert closed["event"] == "closed" and closed["flows"] == len(FLOWS)
    return closed, err.decode()


async def test_aggregator_process_with_enrich_kubernetes(
        apiserver: ApiServerDouble, kubeconfig: Path, tmp_path: Path) -> None:
    await seed(apiserver)
    closed, err = await run_process(tmp_path, "--enrich", "kubernetes",
                                    "--kubeconfig", str(kubeconfig))
    assert ("Kubernetes enrichment on: 9 pod(s), 3 service(s), 2 node(s), 2 replicaset(s), "
            "2 job(s)") in err
    check_files(closed["files"])
    await apiserver.wait_for(lambda: apiserver.streams("watch") == 0, what="closed watches")


async def test_aggregator_process_runs_without_enrichment_when_the_api_is_unreachable(
        tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kubeconfig = ApiServerDouble(port=port).write_kubeconfig(tmp_path / "kubeconfig")
    closed, err = await run_process(tmp_path, "--enrich", "kubernetes", "--kubeconfig",
                                    str(kubeconfig), "--enrich-timeout", "1")
    assert "Kubernetes enrichment off: the objects could not be listed within 1 s" in err
    assert "Connect" in err  # the reason: connection refused
    assert sqlite_rows(closed["files"]["db"])[0]["SrcK8S_Name"] is None
    assert not any("K8S" in k for k in json.loads(Path(closed["files"]["json"]).read_text())[0])
