"""No silent empty capture: running agents that do not connect to the aggregator are named.

The logic (:class:`ConnectCheck`, the texts) is tested with times the test gives; the
whole path against the API server double, where the aggregator "pod" is a real Aggregator
here and each "agent" a real Exporter that connects (or not): the warning comes within
15 s with the pods' log lines, an agent that never connects fails the capture (its files
kept), a late one clears the warning, and connected agents give none.  The 10 s of a real
capture are ``agents_grace`` (and ``AGENTS_GRACE`` for the command line): 0.3 s here.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from apiserver_double import ApiServerDouble, PodOutcome
from textual.app import App, ComposeResult

from netobserv_tui.agent.exporter import Exporter
from netobserv_tui.aggregator.server import Aggregator
from netobserv_tui.capture import cluster as cluster_module
from netobserv_tui.capture.cluster import (
    ClusterOptions,
    ConnectCheck,
    KubernetesTarget,
    agent_matches,
    not_connected,
    not_connected_brief,
)
from netobserv_tui.capture.session import Limits, Notice, Progress, run_capture, watch_stats
from netobserv_tui.capture.target import CaptureOptions, StreamEndpoint
from netobserv_tui.k8s.rollout import AgentPod
from netobserv_tui.model.fields import BASE_COLUMNS
from netobserv_tui.tui.widgets import CaptureHeader

NAMESPACE = "netobserv-cli"
GRACE = 0.3
SERVICE = "ns/agg (ClusterIP 10.96.0.12, port 9990)"
A = AgentPod("netobserv-agent-aaaaa", "node-a", "198.18.100.1", "Ready")
B = AgentPod("netobserv-agent-bbbbb", "node-b.example.com", "198.18.100.2", "Ready")


FLOW: dict[str, Any] = {
    "SrcAddr": "198.18.0.10", "DstAddr": "198.18.0.11", "SrcPort": 40000, "DstPort": 8080,
    "Proto": 6, "SrcMac": "0A:58:C6:12:00:0A", "DstMac": "0A:58:C6:12:00:0B", "Etype": 2048,
    "Dscp": 0, "IcmpType": 0, "IcmpCode": 0, "Flags": 16, "Bytes": 100, "Packets": 1,
    "Sampling": 0, "TimeFlowStartMs": 1_795_633_800_000, "TimeFlowEndMs": 1_795_633_800_100,
    "AgentIP": "10.0.0.1", "Interface": "eth0", "IfDirection": 0, "Interfaces": ["eth0"],
    "IfDirections": [0], "FlowDirection": 0,
}  # fmt: skip


def agent(hostname: str, ip: str, connected: bool = True) -> dict[str, Any]:
    """An agent as the aggregator's STATS ``per_agent`` shows it."""
    return {"hostname": hostname, "ip": ip, "version": "0.1", "connected": connected,
            "flows": 0}


# -- the logic --------------------------------------------------------------------------


def test_agents_are_matched_by_the_node_address_or_hostname() -> None:
    assert agent_matches(A, agent("some-host", "198.18.100.1"))  # AGENT_IP: status.hostIP
    assert agent_matches(B, agent("node-b", "10.9.9.9"))  # a short hostname, an FQDN node
    assert agent_matches(A, agent("node-a.example.com", ""))
    assert not agent_matches(A, agent("node-b", "198.18.100.2"))
    assert not agent_matches(A, agent("", ""))


def test_the_check_waits_for_the_grace_then_names_who_is_missing() -> None:
    check = ConnectCheck(grace=10)
    assert check.update(100.0, [A, B], {}) == []
    assert check.update(109.9, [A, B], {}) == []
    assert check.update(110.0, [B, A], {}) == [A, B]  # by node
    assert check.never == {A.name: A, B.name: B}
    # A connects late: it is no longer missing, and no longer "never connected".
    per_agent = {"a": agent("ip-198-18-100-1", "198.18.100.1")}
    assert check.update(111.0, [A, B], per_agent) == [B]
    assert check.never == {B.name: B}
    # A's agent goes away: missing again once the grace is over, but it did connect.
    per_agent = {"a": agent("ip-198-18-100-1", "198.18.100.1", connected=False)}
    assert check.update(112.0, [A, B], per_agent) == [B]
    assert check.update(122.0, [A, B], per_agent) == [A, B]
    assert check.never == {B.name: B}
    # B's pod is gone (its node left the cluster): forgotten.
    assert check.update(123.0, [A], per_agent) == [A]
    assert check.never == {}


def test_a_pod_that_shows_up_later_gets_its_own_grace() -> None:
    check = ConnectCheck(grace=10)
    connected = {"a": agent("node-a", "198.18.100.1")}
    assert check.update(100.0, [A], connected) == []
    assert check.update(200.0, [A, B], connected) == []
    assert check.update(209.0, [A, B], connected) == []
    assert check.update(210.0, [A, B], connected) == [B]


def test_the_texts_name_each_pod_its_node_and_its_log() -> None:
    missing = [(A, ["line 1", "line 2", "line 3"]), (B, [])]
    assert not_connected(missing, 3, 10.0, SERVICE).splitlines() == [
        "2 of 3 agents not connected to the aggregator for 10s or more; no flows come from "
        "node-a, node-b.example.com:",
        "  netobserv-agent-aaaaa on node-a (Ready), last log lines:",
        "    line 1",
        "    line 2",
        "    line 3",
        "  netobserv-agent-bbbbb on node-b.example.com (Ready): no log line",
        "Check that the nodes reach the Service ns/agg (ClusterIP 10.96.0.12, port 9990), "
        "that no NetworkPolicy blocks it, and that cluster DNS answers from the host network "
        "(the agents' fallback).",
    ]
    assert not_connected(missing[:1], 3, 10.0, SERVICE, never=True).splitlines()[0] == (
        "1 of 3 agents never connected to the aggregator; the capture has no flows from "
        "node-a:")
    more = [(AgentPod(f"netobserv-agent-{i}", f"node-{i}", "", "Ready"), [f"log {i}"])
            for i in range(5)]
    assert not_connected_brief([*missing, *more], 7, 10.0, SERVICE,
                               Path("/o/netobserv.log")).splitlines() == [
        "⚠ 7 of 7 agents not connected to the aggregator for 10s: node-a, "
        "node-b.example.com, node-0 and 4 more",
        "  node-a: line 2",
        "          line 3",
        "  node-b.example.com: (no log line)",
        "  node-0: log 0",
        "Check the Service ns/agg (ClusterIP 10.96.0.12, port 9990), NetworkPolicies and "
        "cluster DNS from the host network; details in /o/netobserv.log",
    ]
    assert not_connected_brief(missing[:1], 2, 10.0, SERVICE,
                               Path("/o/netobserv.log")).splitlines()[0] == (
        "⚠ 1 of 2 agents not connected to the aggregator for 10s: node-a")


class HeaderApp(App[None]):
    def __init__(self, header: CaptureHeader) -> None:
        super().__init__()
        self.header = header

    def compose(self) -> ComposeResult:
        yield self.header


async def test_the_tui_header_shows_the_warning_until_it_is_over() -> None:
    header = CaptureHeader({"target": "cluster c", "capture": "flows", "output": "o"},
                           clock=lambda: 0.0)
    async with HeaderApp(header).run_test(size=(120, 20)) as pilot:
        before = header.render().plain.splitlines()
        header.show_warning("⚠ 1 of 2 agents not connected\n  node-b: no route")
        await pilot.pause()
        assert header.render().plain.splitlines() == [
            *before, "⚠ 1 of 2 agents not connected", "  node-b: no route"]
        assert header.has_class("-warning")
        header.show_warning("")
        await pilot.pause()
        assert header.render().plain.splitlines() == before
        assert not header.has_class("-warning")


# -- against the API server double ------------------------------------------------------


def agent_log(node: str) -> str:
    return (f"2026-01-01 10:00:00,000 agent INFO Kernel headers of {node}: found\n"
            f"2026-01-01 10:00:05,000 agent WARNING Cannot reach the aggregator "
            f"(198.19.255.9:9990: timed out); trying again for 25 s.\n")


@pytest.fixture
async def cluster(apiserver: ApiServerDouble) -> AsyncIterator[ApiServerDouble]:
    apiserver.add_node("node-a")
    apiserver.add_node("node-b")
    apiserver.run_controllers(
        lambda pod: PodOutcome.running() if pod["metadata"]["name"] == "netobserv-aggregator"
        else PodOutcome.running(logs=agent_log(pod["spec"]["nodeName"])))
    yield apiserver


@asynccontextmanager
async def aggregator_pod(cluster: ApiServerDouble, root: Path,
                         token: str) -> AsyncIterator[Aggregator]:
    """The real aggregator, where the double's port-forward to the pod leads."""
    pod = Aggregator(root / "pod", token, live_interval=0.02, stats_interval=0.05)
    await pod.start()
    cluster.forward(NAMESPACE, "netobserv-aggregator", 9990, ("127.0.0.1", pod.port))
    try:
        yield pod
    finally:
        await pod.stop(grace=0)


def target_for(cluster: ApiServerDouble, tmp_path: Path) -> KubernetesTarget:
    kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig")
    return KubernetesTarget(
        CaptureOptions(output=tmp_path / "output"),
        ClusterOptions(kubeconfig=str(kubeconfig), rollout_timeout=10,
                       agents_grace=GRACE, agents_check_interval=0.05))


@asynccontextmanager
async def agents_connected(port: int, token: str, *nodes: str) -> AsyncIterator[None]:
    """Real agents of ``nodes`` connected (each sends a flow) until the block ends; they
    run in threads, the aggregator in this loop."""
    release = threading.Event()
    up = [threading.Event() for _ in nodes]

    def run(node: str, connected: threading.Event) -> None:
        exporter = Exporter("127.0.0.1", port, token, {"hostname": node, "ip": "10.0.0.1"})
        exporter.connect()
        exporter.submit(list(BASE_COLUMNS), [[FLOW[c] for c in BASE_COLUMNS]])
        connected.set()
        release.wait(30)
        exporter.finish(10)

    threads = [threading.Thread(target=run, args=pair, daemon=True)
               for pair in zip(nodes, up, strict=True)]
    for thread in threads:
        thread.start()
    try:
        for event in up:
            assert await asyncio.to_thread(event.wait, 10), "an agent could not connect"
        yield
    finally:
        release.set()
        for thread in threads:
            await asyncio.to_thread(thread.join, 15)


def expected_warning(cluster: ApiServerDouble, nodes: list[str], total: int, *,
                     never: bool = False) -> str:
    """The full text, with the double's pod names and the Service's ClusterIP."""
    pods = {p["spec"]["nodeName"]: p["metadata"]["name"] for p in cluster.objects(
        "pods", NAMESPACE, label_selector="app.kubernetes.io/component=agent")}
    service = cluster.get("services", "netobserv-aggregator", NAMESPACE)
    assert service is not None
    if never:
        head = (f"{len(nodes)} of {total} agents never connected to the aggregator; the "
                f"capture has no flows from {', '.join(nodes)}:")
    else:
        head = (f"{len(nodes)} of {total} agents not connected to the aggregator for "
                f"{GRACE:g}s or more; no flows come from {', '.join(nodes)}:")
    lines = [head]
    for node in nodes:
        lines.append(f"  {pods[node]} on {node} (Ready), last log lines:")
        lines.extend(f"    {line}" for line in agent_log(node).splitlines())
    lines.append(f"Check that the nodes reach the Service netobserv-cli/netobserv-aggregator "
                 f"(ClusterIP {service['spec']['clusterIP']}, port 9990), that no "
                 "NetworkPolicy blocks it, and that cluster DNS answers from the host "
                 "network (the agents' fallback).")
    return "\n".join(lines)


async def until_notice(notices: list[Notice], count: int, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while len(notices) < count:
            await asyncio.sleep(0.01)


async def test_agents_that_never_connect_are_named_with_their_logs_and_fail_the_capture(
    cluster: ApiServerDouble, tmp_path: Path
) -> None:
    target = target_for(cluster, tmp_path)
    notices: list[Notice] = []

    async def foreground(_e: StreamEndpoint, _s: asyncio.Event, progress: Progress) -> str:
        await until_notice(notices, 1)  # within 15 s, or the test fails
        assert progress.notice is notices[0]
        return "seen"

    async with aggregator_pod(cluster, tmp_path, target.token):
        result, reason = await run_capture(target, Limits(), foreground,
                                           on_notice=notices.append)
        # The texts are built with the pods still there (stop deletes them).
    assert reason == "seen"
    assert len(notices) == 1 and not notices[0].cleared
    # The pods are gone now; their names and the Service's address were in the texts.
    assert notices[0].full.startswith(
        "2 of 2 agents not connected to the aggregator for 0.3s or more; no flows come from "
        "node-a, node-b:\n  netobserv-agent-")
    assert "    2026-01-01 10:00:05,000 agent WARNING Cannot reach the aggregator" \
        in notices[0].full
    assert notices[0].brief.splitlines()[1:3] == [
        "  node-a: 2026-01-01 10:00:00,000 agent INFO Kernel headers of node-a: found",
        "          2026-01-01 10:00:05,000 agent WARNING Cannot reach the aggregator "
        "(198.19.255.9:9990: timed out); trying again for 25 s."]
    assert len(result.problems) == 1
    assert result.problems[0].startswith(
        "2 of 2 agents never connected to the aggregator; the capture has no flows from "
        "node-a, node-b:\n")
    assert sorted(result.files) == ["db", "json"]  # the (empty) capture is kept
    assert cluster.leftovers() == []


async def test_the_warning_and_the_failure_name_the_pods_exactly(
    cluster: ApiServerDouble, tmp_path: Path
) -> None:
    """The same texts, checked whole while the pods exist: node-a connects, node-b not."""
    target = target_for(cluster, tmp_path)
    notices: list[Notice] = []
    async with aggregator_pod(cluster, tmp_path, target.token) as pod:
        endpoint = await target.start()
        latest: dict[str, Any] = {}
        streaming = asyncio.create_task(watch_stats(endpoint, lambda s: latest.update(s)))
        watching = asyncio.create_task(target.watch(lambda: latest, notices.append))
        try:
            async with agents_connected(pod.port, target.token, "node-a"):
                await until_notice(notices, 1)
                assert notices[0].full == expected_warning(cluster, ["node-b"], 2)
                never = await target._never_connected()
                assert never == expected_warning(cluster, ["node-b"], 2, never=True)
        finally:
            watching.cancel()
            streaming.cancel()
            await asyncio.gather(watching, streaming, return_exceptions=True)
            result = await target.stop()
    assert result.problems == [never]
    assert result.flows == 1  # node-a's flow is kept
    assert cluster.leftovers() == []


async def test_an_agent_that_connects_late_clears_the_warning(
    cluster: ApiServerDouble, tmp_path: Path
) -> None:
    target = target_for(cluster, tmp_path)
    notices: list[Notice] = []

    async with aggregator_pod(cluster, tmp_path, target.token) as pod:
        async def foreground(_e: StreamEndpoint, _s: asyncio.Event, _p: Progress) -> str:
            await until_notice(notices, 1)
            async with agents_connected(pod.port, target.token, "node-a", "node-b"):
                await until_notice(notices, 2)
            return "done"

        result, _ = await run_capture(target, Limits(), foreground, on_notice=notices.append)
    assert [n.cleared for n in notices] == [False, True]
    assert notices[1].full == notices[1].brief == "All 2 agents are connected now."
    assert result.problems == [] and result.flows == 2
    assert cluster.leftovers() == []


async def test_connected_agents_give_no_warning(
    cluster: ApiServerDouble, tmp_path: Path
) -> None:
    """Both agents connected: many looks past the grace, and nothing to say."""
    target = target_for(cluster, tmp_path)
    notices: list[Notice] = []
    looks = 0
    enough = asyncio.Event()
    latest: dict[str, Any] = {}

    def stats() -> dict[str, Any]:
        nonlocal looks
        if latest.get("agents") == 2:
            looks += 1
            if looks * 0.05 >= 3 * GRACE:  # 0.9 s of looks with both connected
                enough.set()
        return latest

    async with aggregator_pod(cluster, tmp_path, target.token) as pod:
        endpoint = await target.start()
        async with agents_connected(pod.port, target.token, "node-a", "node-b"):
            streaming = asyncio.create_task(watch_stats(endpoint, lambda s: latest.update(s)))
            watching = asyncio.create_task(target.watch(stats, notices.append))
            try:
                await asyncio.wait_for(enough.wait(), 15)
            finally:
                watching.cancel()
                streaming.cancel()
                await asyncio.gather(watching, streaming, return_exceptions=True)
        result = await target.stop()
    assert notices == []
    assert result.problems == [] and result.flows == 2
    assert cluster.leftovers() == []


async def test_netobserv_flows_warns_then_exits_non_zero_keeping_the_files(
    cluster: ApiServerDouble, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command line, without the TUI: node-a's agent connects, node-b's never does."""
    from netobserv_tui.cli import main

    monkeypatch.setattr("netobserv_tui.capture.cluster.secrets.token_urlsafe",
                        lambda _n: "nc-token")
    monkeypatch.setattr(cluster_module, "AGENTS_GRACE", GRACE)
    monkeypatch.setattr(cluster_module, "AGENTS_CHECK_INTERVAL", 0.05)
    kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig")
    output = tmp_path / "output"
    async with aggregator_pod(cluster, tmp_path, "nc-token") as pod:
        run = asyncio.create_task(asyncio.to_thread(main, [
            "flows", "--no-tui", "--max-time=3s", f"--kubeconfig={kubeconfig}",
            f"--output={output}"]))
        await cluster.wait_for(lambda: any(
            p.get("status", {}).get("phase") == "Running" for p in cluster.objects(
                "pods", NAMESPACE, label_selector="app.kubernetes.io/component=agent")),
            timeout=10)
        async with agents_connected(pod.port, "nc-token", "node-a"):
            await cluster.wait_for(lambda: cluster.get(
                "daemonsets", "netobserv-agent", NAMESPACE) is None, timeout=15)
        status = await run
    captured = capsys.readouterr()
    assert status == 1, captured.err
    err = captured.err
    # Not "on no interface", as it said before: the agents take every interface.
    assert "Capturing flows on every interface; press Ctrl+C to stop.\n" in err
    warning = err[err.index("warning: 1 of 2 agents"):]
    lines = warning.splitlines()
    assert lines[0] == ("warning: 1 of 2 agents not connected to the aggregator for 0.3s or "
                        "more; no flows come from node-b:")
    assert lines[1].startswith("  netobserv-agent-") and lines[1].endswith(
        " on node-b (Ready), last log lines:")
    assert lines[2:4] == [f"    {line}" for line in agent_log("node-b").splitlines()]
    assert lines[4].startswith("Check that the nodes reach the Service netobserv-cli/"
                               "netobserv-aggregator (ClusterIP 198.19.255.")
    error = err[err.index("error: 1 of 2 agents"):].splitlines()
    assert error[0] == ("error: 1 of 2 agents never connected to the aggregator; the capture "
                        "has no flows from node-b:")
    assert error[1] == lines[1] and error[2:5] == lines[2:5]
    assert err.count("warning: 1 of 2 agents") == 1  # said once, not every second
    # The files are kept, with node-a's flow.
    paths = [Path(p) for p in captured.out.split()]
    assert [p.suffix for p in paths] == [".json", ".db"]
    assert len(json.loads(paths[0].read_text())) == 1
    assert "1 of 2 agents not connected" in (output / "netobserv.log").read_text()
    assert cluster.leftovers() == []
