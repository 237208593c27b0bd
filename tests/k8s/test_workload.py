"""Narrowing a cluster capture to a workload (netobserv_tui.aggregator.workload).

* The label selector: every form of the Kubernetes syntax, what each matches, and the errors.
* ``WorkloadSelector``: its criteria and their errors, and ``ips()`` over a realistic
  inventory (two namespaces with labels, a finished pod, a host-network pod, a dual-stack
  pod, a pending pod, a service).
* ``Aggregator.set_workload``: WORKLOAD after WELCOME, to every connected agent, nothing for
  None.
* Against the API server double, through the real kubernetes-asyncio client: a real
  Aggregator fed by an ``InventoryWatch`` and a ``WorkloadUpdater``, and a fake agent
  speaking the protocol, which gets WORKLOAD with exactly the matching pods' addresses after
  WELCOME, then a new one for each change of the set (a pod created, relabeled, deleted), and
  none for changes that leave it as it is.  Then the same with the
  ``python -m netobserv_tui.aggregator --enrich kubernetes --workload-...`` process, and its
  usage errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import agg_helpers
import pytest
from apiserver_double import ApiServerDouble
from kubernetes_asyncio import client

from netobserv_tui.aggregator.enrich import Inventory, InventoryWatch
from netobserv_tui.aggregator.server import Aggregator
from netobserv_tui.aggregator.workload import (
    Requirement,
    WorkloadSelector,
    WorkloadUpdater,
    parse_selector,
)
from netobserv_tui.model.protocol import FrameType

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "workload-t0ken"
NODE, NODE_IP = "node-a", "198.18.100.1"


# ------------------------------------------------------------------------------- helpers


def pod_obj(ns: str, name: str, ips: list[str], labels: dict[str, str] | None = None, *,
            phase: str = "Running", host_network: bool = False) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "hostIP": NODE_IP, "hostIPs": [{"ip": NODE_IP}]}
    if ips:
        status["podIP"] = ips[0]
        status["podIPs"] = [{"ip": ip} for ip in ips]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
            "spec": {"nodeName": NODE, "hostNetwork": host_network,
                     "containers": [{"name": "main", "image": "registry.example/app:1.0"}]},
            "status": status}


def cluster_pods() -> list[dict[str, Any]]:
    return [
        # Dual-stack, the IPv6 address written unnormalized.
        pod_obj("shop", "web-1", ["10.0.0.1", "FD00:10:0:0::0001"],
                {"app": "web", "tier": "front", "version": "3"}),
        pod_obj("shop", "web-2", ["10.0.0.2"], {"app": "web", "tier": "front", "version": "4"}),
        pod_obj("shop", "db-0", ["10.0.0.3"], {"app": "db", "tier": "back"}),
        pod_obj("shop", "migrate", ["10.0.0.4"], {"app": "web"}, phase="Succeeded"),
        pod_obj("shop", "crashed", ["10.0.0.5"], {"app": "web"}, phase="Failed"),
        pod_obj("shop", "exporter", [NODE_IP], {"app": "web"}, host_network=True),
        pod_obj("shop", "pending", [], {"app": "web"}, phase="Pending"),
        pod_obj("billing", "web-1", ["10.0.1.1"], {"app": "web", "tier": "front"}),
        pod_obj("billing", "api", ["10.0.1.2"], {"app": "api"}),
        pod_obj("kube-system", "coredns", ["10.0.2.1"], {"k8s-app": "kube-dns"}),
    ]


def inventory() -> Inventory:
    inv = Inventory()
    inv.replace("Pod", cluster_pods())
    inv.replace("Service", [{"metadata": {"name": "web", "namespace": "shop"},
                             "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"]}}])
    inv.replace("Node", [{"metadata": {"name": NODE}, "status": {"addresses": [
        {"type": "InternalIP", "address": NODE_IP}]}}])
    return inv


WEB_1 = frozenset({"10.0.0.1", "fd00:10::1"})


class Peer(agg_helpers.Peer):
    """A fake agent speaking protocol v1 that also reads WORKLOAD frames."""

    async def workload(self, timeout: float = 5.0) -> list[str]:
        payload = await self.expect(FrameType.WORKLOAD, timeout)
        assert set(payload) == {"ips"}
        ips: list[str] = payload["ips"]
        assert ips == sorted(ips)
        return ips

    async def nothing(self, timeout: float = 0.5) -> None:
        """No frame arrives within ``timeout`` seconds."""
        with pytest.raises(TimeoutError):
            frame = await self.recv(timeout)
            pytest.fail(f"expected no frame, got {frame}")

    async def hello(self, name: str = NODE) -> None:
        await self.send(FrameType.HELLO, {"token": TOKEN, "agent": {
            "ip": NODE_IP, "hostname": name, "version": "test"}})
        await self.expect(FrameType.WELCOME)

    async def bye(self) -> None:
        await self.send(FrameType.BYE, {})
        assert await self.recv() is None
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


# ------------------------------------------------------------------------------- selector


@pytest.mark.parametrize(("text", "expected"), [
    ("", ()),
    ("   ", ()),
    ("app=web", (Requirement("app", "in", frozenset({"web"})),)),
    ("app==web", (Requirement("app", "in", frozenset({"web"})),)),
    ("app != web", (Requirement("app", "notin", frozenset({"web"})),)),
    ("app=", (Requirement("app", "in", frozenset({""})),)),
    ("app in (web, api)", (Requirement("app", "in", frozenset({"web", "api"})),)),
    ("app notin (db)", (Requirement("app", "notin", frozenset({"db"})),)),
    ("app in (web,)", (Requirement("app", "in", frozenset({"web", ""})),)),
    ("tier", (Requirement("tier", "exists"),)),
    ("!tier", (Requirement("tier", "!exists"),)),
    ("! tier", (Requirement("tier", "!exists"),)),
    ("version>3", (Requirement("version", "gt", frozenset({"3"})),)),
    ("version < 4", (Requirement("version", "lt", frozenset({"4"})),)),
    ("app.kubernetes.io/name=web-ui_2", (
        Requirement("app.kubernetes.io/name", "in", frozenset({"web-ui_2"})),)),
    ("app in (web),tier!=back, !legacy,version", (
        Requirement("app", "in", frozenset({"web"})),
        Requirement("tier", "notin", frozenset({"back"})),
        Requirement("legacy", "!exists"), Requirement("version", "exists"))),
])
def test_selector_forms(text: str, expected: tuple[Requirement, ...]) -> None:
    assert parse_selector(text) == expected


@pytest.mark.parametrize(("text", "labels", "matches"), [
    ("app=web", {"app": "web"}, True),
    ("app=web", {"app": "api"}, False),
    ("app=web", {}, False),
    ("app!=web", {}, True),  # as in Kubernetes: no label is "not web"
    ("app!=web", {"app": "web"}, False),
    ("app in (web,api)", {"app": "api"}, True),
    ("app in (web,api)", {}, False),
    ("app notin (web)", {}, True),
    ("app notin (web)", {"app": "web"}, False),
    ("app=", {"app": ""}, True),
    ("app=", {}, False),
    ("tier", {"tier": ""}, True),
    ("tier", {}, False),
    ("!tier", {}, True),
    ("!tier", {"tier": "x"}, False),
    ("version>3", {"version": "4"}, True),
    ("version>3", {"version": "3"}, False),
    ("version>3", {"version": "four"}, False),
    ("version>3", {}, False),
    ("version<4", {"version": "-1"}, True),
    ("app=web,tier=front", {"app": "web", "tier": "front"}, True),
    ("app=web,tier=front", {"app": "web", "tier": "back"}, False),
])
def test_selector_matching(text: str, labels: dict[str, str], matches: bool) -> None:
    assert all(r.matches(labels) for r in parse_selector(text)) is matches


@pytest.mark.parametrize(("text", "message"), [
    ("app in (web", "expected ',' or ')' after 'web', found the end"),
    ("app in (web api)", "expected ',' or ')' after 'web', found 'api'"),
    ("app in ()", "'app in ()' has no value"),
    ("app in web", "'app in' needs values in parentheses, e.g. 'app in (a,b)', found 'web'"),
    ("app notin", "'app notin' needs values in parentheses"),
    ("app web", "expected an operator after 'app' (=, ==, !=, in, notin, >, <), ',' or the "
                "end, found 'web'"),
    ("=web", "expected a label key, found '='"),
    (",app", "expected a label key, found ','"),
    ("app=web,", "a label key must follow ','"),
    ("app=web,,tier", "expected a label key, found ','"),
    ("app=web=x", "expected ',' between requirements, found '='"),
    ("!", "expected a label key after !, found the end"),
    ("!app=web", "'!app' (the label is absent) takes no operator nor value, found '='"),
    ("app=we/b", "invalid value 'we/b' for 'app'"),
    ("app=-web", "invalid value '-web' for 'app'"),
    (f"app={'x' * 64}", "a label value is empty or at most 63"),
    ("Example.com/app=web", "invalid label key 'Example.com/app': the prefix"),
    ("/app=web", "invalid label key '/app'"),
    ("app_=web", "invalid label key 'app_'"),
    (f"{'k' * 64}=web", "a name is at most 63"),
    ("version>three", "'version >' needs an integer, found 'three'"),
    ("version<", "'version <' needs an integer, found the end"),
])
def test_selector_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_selector(text)
    assert str(info.value).startswith(f"label selector {text!r}: ")
    assert message in str(info.value)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"namespaces": ["Shop"]}, "namespace 'Shop': a namespace is at most 63 lowercase"),
    ({"namespaces": [""]}, "namespace '': a namespace is at most 63 lowercase"),
    ({"pods": ["shop/"]}, "pod 'shop/': a pod name is lowercase"),
    ({"pods": ["/web-1"]}, "pod '/web-1': expected NAME or NAMESPACE/NAME"),
    ({"pods": ["a/b/c"]}, "pod 'a/b/c': expected NAME or NAMESPACE/NAME"),
    ({"pods": ["Web"]}, "pod 'Web': a pod name is lowercase"),
    ({"pods": ["SHOP/web"]}, "pod 'SHOP/web': namespace 'SHOP'"),
    ({"namespaces": ["shop"], "pods": ["billing/web-1"]},
     "pod 'billing/web-1' is not in the namespaces given (shop): it could never match"),
    ({"selector": "app in ("}, "label selector 'app in (': expected ',' or ')' in "
                               "'app in (...)', found the end"),
])
def test_workload_selector_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        WorkloadSelector(**kwargs)
    assert message in str(info.value)


# ------------------------------------------------------------------------------- ips()


@pytest.mark.parametrize(("kwargs", "expected"), [
    # Namespace: the finished, host-network and pending pods add nothing.
    ({"namespaces": ("shop",)}, WEB_1 | {"10.0.0.2", "10.0.0.3"}),
    ({"namespaces": ("shop", "billing")}, WEB_1 | {"10.0.0.2", "10.0.0.3", "10.0.1.1",
                                                   "10.0.1.2"}),
    ({"namespaces": ("absent",)}, frozenset()),
    # Pods: a bare name in every namespace, NS/NAME in one.
    ({"pods": ("web-1",)}, WEB_1 | {"10.0.1.1"}),
    ({"pods": ("billing/web-1",)}, {"10.0.1.1"}),
    ({"pods": ("shop/web-1", "coredns")}, WEB_1 | {"10.0.2.1"}),
    ({"pods": ("migrate", "exporter", "pending")}, frozenset()),
    # Label selectors.
    ({"selector": "app=web"}, WEB_1 | {"10.0.0.2", "10.0.1.1"}),
    ({"selector": "app in (web, db), tier!=back"}, WEB_1 | {"10.0.0.2", "10.0.1.1"}),
    ({"selector": "app notin (web,db)"}, {"10.0.1.2", "10.0.2.1"}),
    ({"selector": "tier"}, WEB_1 | {"10.0.0.2", "10.0.0.3", "10.0.1.1"}),
    ({"selector": "!tier,!k8s-app"}, {"10.0.1.2"}),
    ({"selector": "version>3"}, {"10.0.0.2"}),
    # Every criterion at once (AND).
    ({"namespaces": ("shop",), "selector": "tier=front"}, WEB_1 | {"10.0.0.2"}),
    ({"namespaces": ("shop",), "pods": ("web-1", "db-0"), "selector": "tier=front"}, WEB_1),
    ({"namespaces": ("billing",), "pods": ("web-2",)}, frozenset()),
    # No criterion: every pod that may be selected.
    ({}, WEB_1 | {"10.0.0.2", "10.0.0.3", "10.0.1.1", "10.0.1.2", "10.0.2.1"}),
])
def test_ips(kwargs: dict[str, Any], expected: frozenset[str]) -> None:
    assert WorkloadSelector(**kwargs).ips(inventory()) == expected


def test_ips_skip_host_network_pods_with_a_log_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "netobserv_tui.aggregator.workload")
    selector = WorkloadSelector(namespaces=("shop",), selector="app=web")
    inv = inventory()
    found = selector.resolve(inv)
    assert found.ips == WEB_1 | {"10.0.0.2"}
    assert found.pods == (("shop", "web-1"), ("shop", "web-2"))
    assert found.host_network == (("shop", "exporter"),)
    assert NODE_IP not in found.ips  # the node's address: every flow of the node
    assert selector.ips(inv) == found.ips
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["workload: pod shop/exporter uses the host network: skipped (its "
                        "address is its node's, selecting it would capture the whole node)"]
    assert caplog.records[0].levelno == logging.WARNING


def test_ips_follow_the_inventory() -> None:
    inv = inventory()
    selector = WorkloadSelector(selector="app=web")
    # Relabeled out, then back in with a new address; the pending pod gets one.
    relabeled = pod_obj("shop", "web-2", ["10.0.0.2"], {"app": "web-old"})
    inv.apply("Pod", "MODIFIED", relabeled)
    assert selector.ips(inv) == WEB_1 | {"10.0.1.1"}
    inv.apply("Pod", "MODIFIED", pod_obj("shop", "web-2", ["10.0.0.22"], {"app": "web"}))
    inv.apply("Pod", "MODIFIED", pod_obj("shop", "pending", ["10.0.0.6"], {"app": "web"}))
    assert selector.ips(inv) == WEB_1 | {"10.0.0.22", "10.0.0.6", "10.0.1.1"}
    # A pod that finishes leaves; a deleted one too.
    inv.apply("Pod", "MODIFIED", pod_obj("shop", "pending", ["10.0.0.6"], {"app": "web"},
                                         phase="Succeeded"))
    inv.apply("Pod", "DELETED", pod_obj("billing", "web-1", ["10.0.1.1"]))
    assert selector.ips(inv) == WEB_1 | {"10.0.0.22"}


def test_inventory_keeps_labels_and_tells_its_listener() -> None:
    inv = Inventory()
    kinds: list[str] = []
    inv.on_change = kinds.append
    inv.replace("Pod", cluster_pods())
    inv.apply("Node", "ADDED", {"metadata": {"name": NODE}})
    inv.apply("Pod", "BOOKMARK", {"metadata": {"resourceVersion": "7"}})  # not a change
    inv.apply("Pod", "DELETED", pod_obj("shop", "db-0", []))
    assert kinds == ["Pod", "Node", "Pod"]
    pods = {(p.namespace, p.name): p for p in inv.pods()}
    assert len(pods) == 9
    web = pods["shop", "web-1"]
    assert web.labels == {"app": "web", "tier": "front", "version": "3"}
    assert web.ips == ("10.0.0.1", "fd00:10::1") and not web.host_network
    assert pods["shop", "exporter"].host_network and pods["shop", "exporter"].ips == ()
    assert pods["shop", "migrate"].finished


def test_a_failing_listener_is_logged_once_and_changes_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    inv = Inventory()

    def broken(kind: str) -> None:
        raise RuntimeError("boom")

    inv.on_change = broken
    inv.replace("Pod", cluster_pods())
    inv.apply("Pod", "DELETED", pod_obj("shop", "db-0", []))
    assert inv.lookup("10.0.0.1") is not None and inv.lookup("10.0.0.3") is None
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["Inventory change listener failed (logged once)"]


# ------------------------------------------------------------------------------- aggregator


async def test_set_workload_reaches_every_agent(tmp_path: Path) -> None:
    aggregator = Aggregator(tmp_path / "out", TOKEN)
    aggregator.set_workload(["10.0.0.2", "10.0.0.1", "10.0.0.1"])  # before start
    await aggregator.start()
    try:
        first = await Peer.connect(aggregator.port)
        await first.hello("node-a")
        assert await first.workload() == ["10.0.0.1", "10.0.0.2"]
        second = await Peer.connect(aggregator.port)
        await second.hello("node-b")
        assert await second.workload() == ["10.0.0.1", "10.0.0.2"]
        aggregator.set_workload(frozenset({"fd00::1"}))
        assert await first.workload() == ["fd00::1"]
        assert await second.workload() == ["fd00::1"]
        aggregator.set_workload([])  # a workload without pods: keep nothing
        assert await first.workload() == []
        assert await second.workload() == []
        # None: no workload filter, nothing sent, to connected agents or new ones.
        aggregator.set_workload(None)
        third = await Peer.connect(aggregator.port)
        await third.hello("node-c")
        for peer in (first, second, third):
            await peer.nothing(0.2)
        await second.bye()
        aggregator.set_workload({"10.0.0.9"})  # the agent that left gets nothing
        assert await first.workload() == ["10.0.0.9"]
        assert await third.workload() == ["10.0.0.9"]
        await first.bye()
        await third.bye()
    finally:
        await aggregator.stop(grace=0)


async def test_no_workload_sends_nothing_after_welcome(tmp_path: Path) -> None:
    async with Aggregator(tmp_path / "out", TOKEN) as aggregator:
        peer = await Peer.connect(aggregator.port)
        await peer.hello()
        await peer.nothing(0.2)
        await peer.bye()


# ------------------------------------------------------------------------------- the double

NS, OTHER = "pods", "other"


async def seed(apiserver: ApiServerDouble) -> None:
    apiserver.add_node(NODE, internal_ip=NODE_IP)
    for ns in (NS, OTHER):
        apiserver.put("namespaces", {"metadata": {"name": ns}})
    for pod in (
        pod_obj(NS, "web-a", ["198.18.0.10", "fd00:198:18::10"], {"app": "web"}),
        pod_obj(NS, "web-b", ["198.18.0.11"], {"app": "web"}),
        pod_obj(NS, "db-0", ["198.18.0.12"], {"app": "db"}),
        pod_obj(NS, "job", ["198.18.0.13"], {"app": "web"}, phase="Succeeded"),
        pod_obj(NS, "exporter", [NODE_IP], {"app": "web"}, host_network=True),
        pod_obj(OTHER, "web-z", ["198.18.1.10"], {"app": "web"}),
    ):
        apiserver.put("pods", pod)


async def create_pod(api_client: client.ApiClient, apiserver: ApiServerDouble, ns: str,
                     name: str, ip: str, labels: dict[str, str]) -> None:
    """A pod made through the real client, then given a running status and an address."""
    await client.CoreV1Api(api_client).create_namespaced_pod(ns, client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1PodSpec(node_name=NODE, containers=[
            client.V1Container(name="main", image="registry.example/app:1.0")])))
    apiserver.set_pod_status(ns, name, pod_ip=ip)


async def relabel(api_client: client.ApiClient, ns: str, name: str,
                  labels: dict[str, str]) -> None:
    await client.CoreV1Api(api_client).patch_namespaced_pod(
        name, ns, {"metadata": {"labels": labels}})


@contextlib.asynccontextmanager
async def workload_aggregator(api_client: client.ApiClient, tmp_path: Path,
                              selector: WorkloadSelector,
                              ) -> AsyncIterator[tuple[Aggregator, WorkloadUpdater]]:
    """What the aggregator process does: list, compute the set, then listen."""
    async with InventoryWatch(api_client, backoff=0.05, max_backoff=0.2) as watch:
        assert await watch.wait_ready(5), watch.problem
        aggregator = Aggregator(tmp_path / "out", TOKEN)
        updater = WorkloadUpdater(selector, watch.inventory, aggregator.set_workload)
        updater.start()
        await aggregator.start()
        try:
            yield aggregator, updater
        finally:
            await updater.stop()
            await aggregator.stop(grace=1)


async def recomputed(updater: WorkloadUpdater, before: int) -> None:
    async with asyncio.timeout(5):
        while updater.recomputed == before:
            await asyncio.sleep(0.01)


async def test_agents_get_the_workload_and_its_changes(
        apiserver: ApiServerDouble, api_client: client.ApiClient, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    await seed(apiserver)
    caplog.set_level(logging.INFO, "netobserv_tui.aggregator.workload")
    selector = WorkloadSelector(namespaces=(NS,), selector="app=web")
    async with workload_aggregator(api_client, tmp_path, selector) as (aggregator, updater):
        agent = await Peer.connect(aggregator.port)
        await agent.hello()
        assert await agent.workload() == ["198.18.0.10", "198.18.0.11", "fd00:198:18::10"]

        # A new matching pod, made through the API: a new set with its address.
        await create_pod(api_client, apiserver, NS, "web-c", "198.18.0.14", {"app": "web"})
        assert await agent.workload() == ["198.18.0.10", "198.18.0.11", "198.18.0.14",
                                          "fd00:198:18::10"]
        # Changes that leave the set as it is: recomputed, nothing sent.
        before = updater.recomputed
        await create_pod(api_client, apiserver, OTHER, "web-y", "198.18.1.11", {"app": "web"})
        await create_pod(api_client, apiserver, NS, "cache", "198.18.0.15", {"app": "cache"})
        await relabel(api_client, NS, "web-a", {"app": "web", "release": "2"})
        await recomputed(updater, before)
        await agent.nothing(0.5)
        # A pod relabeled out of the selector leaves; the deleted one too.
        await relabel(api_client, NS, "web-b", {"app": "web-old"})
        assert await agent.workload() == ["198.18.0.10", "198.18.0.14", "fd00:198:18::10"]
        await client.CoreV1Api(api_client).delete_namespaced_pod("web-c", NS)
        assert await agent.workload() == ["198.18.0.10", "fd00:198:18::10"]
        # An agent that connects now gets the current set.
        late = await Peer.connect(aggregator.port)
        await late.hello("node-b")
        assert await late.workload() == ["198.18.0.10", "fd00:198:18::10"]
        # Every matching pod gone: an empty set (keep nothing).
        await client.CoreV1Api(api_client).delete_namespaced_pod("web-a", NS)
        assert await agent.workload() == []
        assert await late.workload() == []
        await agent.bye()
        await late.bye()
    messages = [r.getMessage() for r in caplog.records]
    assert messages[:3] == [
        "workload: narrowing the capture to namespace pods; label selector app=web",
        "workload: pod pods/exporter uses the host network: skipped (its address is its "
        "node's, selecting it would capture the whole node)",
        "workload: 2 pods, 3 addresses"]
    assert messages[3:] == ["workload: 3 pods, 4 addresses", "workload: 2 pods, 3 addresses",
                            "workload: 1 pods, 2 addresses",
                            "workload: 0 pods, 0 addresses (no matching pod has an address: "
                            "agents keep no flow)"]


async def test_changes_are_debounced(apiserver: ApiServerDouble, api_client: client.ApiClient,
                                     tmp_path: Path) -> None:
    await seed(apiserver)
    selector = WorkloadSelector(pods=("web-a", f"{NS}/new-0", f"{NS}/new-1", f"{NS}/new-2"))
    async with workload_aggregator(api_client, tmp_path, selector) as (aggregator, updater):
        agent = await Peer.connect(aggregator.port)
        await agent.hello()
        assert await agent.workload() == ["198.18.0.10", "fd00:198:18::10"]
        before = updater.recomputed
        for i in range(3):  # within the debounce: one recomputation, one frame
            apiserver.put("pods", pod_obj(NS, f"new-{i}", [f"198.18.0.2{i}"]))
        assert await agent.workload() == ["198.18.0.10", "198.18.0.20", "198.18.0.21",
                                          "198.18.0.22", "fd00:198:18::10"]
        await agent.nothing(0.4)
        assert updater.recomputed == before + 1
        await agent.bye()


# ------------------------------------------------------------------------------- the process


async def start_process(tmp_path: Path, *extra: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NETOBSERV_TOKEN": TOKEN}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "netobserv_tui.aggregator", "--listen", "127.0.0.1:0",
        "--output", str(tmp_path / "out"), "--grace", "2", *extra,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


async def test_aggregator_process_sends_the_workload(
        apiserver: ApiServerDouble, api_client: client.ApiClient, kubeconfig: Path,
        tmp_path: Path) -> None:
    await seed(apiserver)
    proc = await start_process(tmp_path, "--enrich", "kubernetes", "--kubeconfig",
                               str(kubeconfig), "--workload-namespace", NS,
                               "--workload-namespace", "absent", "--workload-pod", "web-a",
                               "--workload-pod", "web-c", "--workload-pod", f"{NS}/exporter")
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async with asyncio.timeout(40):
            line = await proc.stdout.readline()
            assert line, (await proc.stderr.read()).decode()
            ready = json.loads(line)
            agent = await Peer.connect(ready["port"])
            await agent.hello()
            assert await agent.workload() == ["198.18.0.10", "fd00:198:18::10"]
            await create_pod(api_client, apiserver, NS, "web-c", "198.18.0.14", {})
            assert await agent.workload() == ["198.18.0.10", "198.18.0.14", "fd00:198:18::10"]
            # Not in the workload: no frame.
            await create_pod(api_client, apiserver, OTHER, "web-c", "198.18.1.14", {})
            await relabel(api_client, NS, "web-a", {"app": "web", "release": "2"})
            await agent.nothing(0.8)
            await client.CoreV1Api(api_client).delete_namespaced_pod("web-c", NS)
            assert await agent.workload() == ["198.18.0.10", "fd00:198:18::10"]
            await agent.bye()
            proc.send_signal(signal.SIGTERM)
            out, err = await proc.communicate()
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    stderr = err.decode()
    assert proc.returncode == 0, stderr
    assert json.loads(out)["event"] == "closed"
    assert ("workload: narrowing the capture to namespace pods, absent; pod web-a, web-c, "
            "pods/exporter") in stderr
    assert "workload: pod pods/exporter uses the host network: skipped" in stderr
    assert [line.split("INFO netobserv_tui.aggregator.workload: ")[1]
            for line in stderr.splitlines() if "addresses" in line] == [
        "workload: 1 pods, 2 addresses", "workload: 2 pods, 3 addresses",
        "workload: 1 pods, 2 addresses"]
    await apiserver.wait_for(lambda: apiserver.streams("watch") == 0, what="closed watches")


@pytest.mark.parametrize(("args", "message"), [
    (["--workload-namespace", "pods"],
     "--workload-namespace, --workload-pod and --workload-selector need --enrich kubernetes"),
    (["--workload-selector", "app=web"], "need --enrich kubernetes"),
    (["--enrich", "kubernetes", "--workload-selector", "app in web"],
     "workload: label selector 'app in web': 'app in' needs values in parentheses"),
    (["--enrich", "kubernetes", "--workload-pod", "a/b/c"],
     "workload: pod 'a/b/c': expected NAME or NAMESPACE/NAME"),
])
async def test_aggregator_process_usage_errors(tmp_path: Path, args: list[str],
                                               message: str) -> None:
    proc = await start_process(tmp_path, *args)
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 2 and not out
    assert message in err.decode()
    assert not (tmp_path / "out").exists()


async def test_aggregator_process_refuses_to_capture_everything_without_the_inventory(
        tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kubeconfig = ApiServerDouble(port=port).write_kubeconfig(tmp_path / "kubeconfig")
    proc = await start_process(tmp_path, "--enrich", "kubernetes", "--kubeconfig",
                               str(kubeconfig), "--enrich-timeout", "1",
                               "--workload-namespace", "pods")
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 1 and not out
    assert "cannot narrow the capture to the workload without the Kubernetes inventory" in (
        err.decode())
