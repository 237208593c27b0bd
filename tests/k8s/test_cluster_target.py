"""The Kubernetes target's whole lifecycle, against the API server double.

The double plays the cluster (objects, controllers, kubelets, port-forward); the aggregator
"pod" is the real Aggregator running here, which the double's port-forward reaches, and the
"agents" are the real Exporter sending records to it.  Every test ends with the cluster as
it was: nothing the capture created is left.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from apiserver_double import ApiServerDouble, PodOutcome

from netobserv_tui.agent.exporter import Exporter
from netobserv_tui.aggregator.server import Aggregator
from netobserv_tui.capture.cluster import ClusterOptions, KubernetesTarget
from netobserv_tui.capture.target import CaptureOptions
from netobserv_tui.k8s.preflight import PreflightError
from netobserv_tui.k8s.rollout import RolloutError
from netobserv_tui.model.fields import BASE_COLUMNS
from netobserv_tui.model.stream import FlowBatch, LiveStream

NAMESPACE = "netobserv-cli"


def record(i: int) -> list[Any]:
    values: dict[str, Any] = {
        "SrcAddr": "198.18.0.10", "DstAddr": "198.18.0.11", "SrcPort": 40000 + i,
        "DstPort": 8080, "Proto": 6, "SrcMac": "0A:58:C6:12:00:0A", "DstMac": "0A:58:C6:12:00:0B",
        "Etype": 2048, "Dscp": 0, "IcmpType": 0, "IcmpCode": 0, "Flags": 16, "Bytes": 100 + i,
        "Packets": 1, "Sampling": 0, "TimeFlowStartMs": 1_795_633_800_000 + i,
        "TimeFlowEndMs": 1_795_633_800_100 + i, "AgentIP": "198.18.0.254", "Interface": "eth0",
        "IfDirection": 0, "Interfaces": ["eth0"], "IfDirections": [0], "FlowDirection": 0,
    }  # fmt: skip
    return [values[c] for c in BASE_COLUMNS]


@pytest.fixture
async def cluster(apiserver: ApiServerDouble) -> AsyncIterator[ApiServerDouble]:
    apiserver.add_node("node-a")
    apiserver.add_node("node-b")
    yield apiserver


def target_for(apiserver: ApiServerDouble, tmp_path: Path, **cluster: Any) -> KubernetesTarget:
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "kubeconfig")
    said: list[str] = []
    target = KubernetesTarget(
        CaptureOptions(output=tmp_path / "output", features=["dns"]),
        ClusterOptions(kubeconfig=str(kubeconfig), rollout_timeout=10, **cluster),
        say=said.append)
    target.said = said  # type: ignore[attr-defined]
    return target


async def send(port: int, token: str, rows: list[list[Any]]) -> None:
    def push() -> None:
        exporter = Exporter("127.0.0.1", port, token, {"hostname": "node-a", "ip": "10.0.0.1"})
        exporter.connect()
        exporter.submit(list(BASE_COLUMNS), rows)
        assert exporter.finish(10)

    await asyncio.to_thread(push)


async def test_a_capture_starts_streams_stops_and_leaves_nothing(
    cluster: ApiServerDouble, tmp_path: Path
) -> None:
    cluster.run_controllers(PodOutcome.running())
    target = target_for(cluster, tmp_path)
    pod = Aggregator(tmp_path / "pod", target.token, live_interval=0.02, stats_interval=0.05)
    await pod.start()
    cluster.forward(NAMESPACE, "netobserv-aggregator", 9990, ("127.0.0.1", pod.port))
    try:
        endpoint = await target.start()
        said = target.said  # type: ignore[attr-defined]
        assert "  agents 2/2 ready, aggregator Ready" in said
        assert target.description == "cluster double"  # the kubeconfig's current context
        created = {m[1] for m in cluster.mutations("create")}
        assert {"v1/namespaces", "apps/v1/daemonsets", "v1/pods", "v1/secrets"} <= created
        ds = cluster.get("daemonsets", "netobserv-agent", NAMESPACE)
        assert ds is not None
        env = {e["name"]: e.get("value") for e in
               ds["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["FEATURES"] == "dns" and env["NETOBSERV_AGGREGATOR"] == (
            "netobserv-aggregator.netobserv-cli.svc:9990")
        # Both nodes run 6.1: no SYS_RESOURCE (it is for RLIMIT_MEMLOCK before 5.11).
        agent = ds["spec"]["template"]["spec"]["containers"][0]
        assert agent["securityContext"]["capabilities"]["add"] == ["BPF", "PERFMON",
                                                                   "NET_ADMIN"]

        # The live stream through the port-forward sees what the agents send.
        async with LiveStream(endpoint.host, endpoint.port, endpoint.token) as stream:
            await send(pod.port, target.token, [record(i) for i in range(50)])
            got = 0
            async with asyncio.timeout(5):
                async for frame in stream:
                    if isinstance(frame, FlowBatch):
                        got += len(frame.rows)
                        if got >= 50:
                            break
        assert got == 50

        steps: list[str] = []
        result = await target.stop(steps.append)
    finally:
        await pod.stop(grace=0)
    assert result.problems == [] and result.flows == 50
    assert steps[0].startswith("Stopping the agents")
    assert any(s.startswith("Copying") for s in steps)
    assert steps[-1].startswith("Deleting the capture's objects")
    local = json.loads(Path(result.files["json"]).read_text())
    assert sorted(r["SrcPort"] for r in local) == list(range(40000, 40050))
    assert Path(result.files["db"]).parent == tmp_path / "output" / "flow"
    assert cluster.leftovers() == []


@pytest.mark.parametrize(("selector", "granted"), [
    ({}, True), ({"kubernetes.io/hostname": "node-a"}, False)])
async def test_an_old_kernel_on_a_selected_node_gets_the_agents_sys_resource(
    cluster: ApiServerDouble, tmp_path: Path, selector: dict[str, str], granted: bool
) -> None:
    """SYS_RESOURCE goes to the agents when a node they run on has a kernel before 5.11,
    and only then: an old node outside --node-selector does not count."""
    old = cluster.get("nodes", "node-b")
    assert old is not None
    old["status"]["nodeInfo"]["kernelVersion"] = "5.10.0-28-amd64"
    cluster.put("nodes", old)
    cluster.run_controllers(PodOutcome.running())
    target = target_for(cluster, tmp_path, node_selector=selector, copy=False)
    pod = Aggregator(tmp_path / "pod", target.token)
    await pod.start()
    cluster.forward(NAMESPACE, "netobserv-aggregator", 9990, ("127.0.0.1", pod.port))
    try:
        await target.start()
        ds = cluster.get("daemonsets", "netobserv-agent", NAMESPACE)
        assert ds is not None
        added = ds["spec"]["template"]["spec"]["containers"][0]["securityContext"][
            "capabilities"]["add"]
        assert ("SYS_RESOURCE" in added) is granted, added
    finally:
        await target.stop()
        await pod.stop(grace=0)
    assert cluster.leftovers() == []


async def test_a_failed_rollout_explains_and_cleans_up(
    cluster: ApiServerDouble, tmp_path: Path
) -> None:
    cluster.run_controllers(lambda pod: PodOutcome.image_pull_backoff()
                            if pod["metadata"]["name"] != "netobserv-aggregator"
                            else PodOutcome.running())
    target = target_for(cluster, tmp_path, image="registry.test/nobs:missing")
    with pytest.raises(RolloutError, match=r"ImagePullBackOff.*registry.test/nobs:missing"):
        await target.start()
    assert cluster.leftovers() == []
    assert cluster.mutations("delete")  # everything created was deleted


async def test_missing_permissions_create_nothing(
    cluster: ApiServerDouble, tmp_path: Path
) -> None:
    cluster.deny("create", "daemonsets", NAMESPACE, group="apps")
    target = target_for(cluster, tmp_path)
    with pytest.raises(PreflightError, match="kubectl auth can-i create daemonsets.apps"):
        await target.start()
    assert cluster.mutations("create") == [] and cluster.leftovers() == []


async def test_a_lost_api_connection_still_ends_in_files_and_cleanup(
    cluster: ApiServerDouble, tmp_path: Path
) -> None:
    cluster.run_controllers(PodOutcome.running())
    target = target_for(cluster, tmp_path)
    pod = Aggregator(tmp_path / "pod", target.token)
    await pod.start()
    cluster.forward(NAMESPACE, "netobserv-aggregator", 9990, ("127.0.0.1", pod.port))
    try:
        await target.start()
        await send(pod.port, target.token, [record(i) for i in range(7)])
        cluster.drop_connections()  # watches and port-forwards cut mid-capture
        result = await target.stop()
    finally:
        await pod.stop(grace=0)
    assert result.problems == [] and result.flows == 7
    assert Path(result.files["db"]).is_file()
    assert cluster.leftovers() == []


async def test_netobserv_cleanup_deletes_every_capture_by_label_and_only_those(
    cluster: ApiServerDouble, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kubernetes_asyncio import client as k8s

    from netobserv_tui.cli import main
    from netobserv_tui.k8s.manifests import DeployOptions, render
    from netobserv_tui.k8s.objects import apply

    async with cluster.api_client() as api:
        await k8s.CoreV1Api(api).create_namespace({"metadata": {"name": "mine"}})
        await apply(api, render(DeployOptions(capture_id="old1", token="t")))
        await apply(api, render(DeployOptions(capture_id="old2", token="t",
                                              namespace="other-ns")))
    kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig")
    assert await asyncio.to_thread(main, ["cleanup", f"--kubeconfig={kubeconfig}"]) == 0
    out = capsys.readouterr().out
    assert "deleted DaemonSet netobserv-cli/netobserv-agent" in out
    assert "deleted DaemonSet other-ns/netobserv-agent" in out
    assert cluster.leftovers() == [("v1/namespaces", None, "mine")]
    assert await asyncio.to_thread(main, ["cleanup", f"--kubeconfig={kubeconfig}"]) == 0
    assert "nothing to clean up in the cluster" in capsys.readouterr().out


async def test_declining_the_files_still_cleans_up(
    cluster: ApiServerDouble, tmp_path: Path
) -> None:
    cluster.run_controllers(PodOutcome.running())
    target = target_for(cluster, tmp_path, copy=False)
    pod = Aggregator(tmp_path / "pod", target.token)
    await pod.start()
    cluster.forward(NAMESPACE, "netobserv-aggregator", 9990, ("127.0.0.1", pod.port))
    try:
        await target.start()
        steps: list[str] = []
        result = await target.stop(steps.append)
    finally:
        await pod.stop(grace=0)
    assert result.files == {} and result.problems == []
    assert "Not copying the files (--copy=false): they go with the aggregator pod." in steps
    assert not (tmp_path / "output" / "flow").exists()
    assert cluster.leftovers() == []


async def test_netobserv_flows_no_tui_on_a_cluster_end_to_end(
    cluster: ApiServerDouble, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command line itself: `netobserv flows --no-tui --max-time` with a kubeconfig."""
    from netobserv_tui.capture import cluster as cluster_module
    from netobserv_tui.cli import main

    monkeypatch.setattr(cluster_module.secrets, "token_urlsafe", lambda _n: "cli-e2e-token")
    cluster.run_controllers(PodOutcome.running())
    pod = Aggregator(tmp_path / "pod", "cli-e2e-token", live_interval=0.02)
    await pod.start()
    cluster.forward(NAMESPACE, "netobserv-aggregator", 9990, ("127.0.0.1", pod.port))
    kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig")
    output = tmp_path / "output"
    argv = ["flows", "--no-tui", "--max-time=3s", f"--kubeconfig={kubeconfig}",
            f"--output={output}", "--enable_dns"]
    try:
        run = asyncio.create_task(asyncio.to_thread(main, argv))
        await cluster.wait_for(lambda: cluster.get("pods", "netobserv-aggregator", NAMESPACE)
                               is not None, timeout=10)
        await send(pod.port, "cli-e2e-token", [record(i) for i in range(12)])
        status = await run
    finally:
        await pod.stop(grace=0)
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "Starting the capture on the cluster double..." in captured.err
    assert "agents 2/2 ready, aggregator Ready" in captured.err
    assert "Capture ended: max-time reached." in captured.err
    assert "12 flows" in captured.err
    paths = captured.out.split()
    assert [Path(p).suffix for p in paths] == [".json", ".db"]
    assert len(json.loads(Path(paths[0]).read_text())) == 12
    assert cluster.leftovers() == []


def frame(i: int, payload: int) -> bytes:
    """An Ethernet/IPv4/UDP frame to port 53 of ``payload`` bytes (real header bytes)."""
    import dpkt

    udp = dpkt.udp.UDP(sport=41000 + i, dport=53, data=bytes(payload))
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=bytes([198, 18, 0, 10]), dst=bytes([198, 18, 0, 11]), p=17, data=udp)
    ip.len = len(ip)
    eth = dpkt.ethernet.Ethernet(src=b"\x0a\x58\xc6\x12\x00\x0a", dst=b"\x0a\x58\xc6\x12\x00\x0b",
                                 type=0x0800, data=ip)
    return bytes(eth)


async def test_netobserv_packets_on_a_cluster_copies_the_pcapng_home(
    cluster: ApiServerDouble, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """`netobserv packets udp,53 --no-tui` with a kubeconfig: the agents' pods get PACKETS,
    the aggregator --packets, and its pcapng comes home through FINISH/FETCH."""
    import subprocess

    from netobserv_tui.capture import cluster as cluster_module
    from netobserv_tui.cli import main
    from netobserv_tui.model.packets import Captured, Packet

    monkeypatch.setattr(cluster_module.secrets, "token_urlsafe", lambda _n: "pk-e2e-token")
    cluster.run_controllers(PodOutcome.running())
    pod = Aggregator(tmp_path / "pod", "pk-e2e-token", live_interval=0.02, packets=True)
    await pod.start()
    cluster.forward(NAMESPACE, "netobserv-aggregator", 9990, ("127.0.0.1", pod.port))
    kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig")
    output = tmp_path / "output"
    argv = ["packets", "udp,53", "--no-tui", "--max-time=3s", f"--kubeconfig={kubeconfig}",
            f"--output={output}"]
    packets = [Packet(1_795_633_800_000_000_000 + i * 1001, 3, "eth0", i % 2, 42 + 10 * i,
                      frame(i, 10 * i)) for i in range(25)]

    def push() -> None:
        exporter = Exporter("127.0.0.1", pod.port, "pk-e2e-token",
                            {"hostname": "node-a", "ip": "10.0.0.1"})
        exporter.connect()
        exporter.submit_packets(Captured.of(packets))
        assert exporter.finish(10)

    try:
        run = asyncio.create_task(asyncio.to_thread(main, argv))
        await cluster.wait_for(lambda: cluster.get("daemonsets", "netobserv-agent", NAMESPACE)
                               is not None, timeout=10)
        daemonset = cluster.get("daemonsets", "netobserv-agent", NAMESPACE)
        assert daemonset is not None
        env = {e["name"]: e.get("value") for e in
               daemonset["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert (env["PACKETS"], env["SNAPLEN"]) == ("1", "65535")
        aggregator = cluster.get("pods", "netobserv-aggregator", NAMESPACE)
        assert aggregator is not None
        assert "--packets" in aggregator["spec"]["containers"][0]["args"]
        await asyncio.to_thread(push)
        status = await run
    finally:
        await pod.stop(grace=0)
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "25 packets (" in captured.err
    paths = [Path(p) for p in captured.out.split()]
    assert [p.suffix for p in paths] == [".pcapng", ".json", ".db"]
    assert paths[0].parent == output / "pcap"
    assert oct(paths[0].stat().st_mode & 0o777) == "0o600"
    read = subprocess.run(["tshark", "-r", str(paths[0]), "-T", "fields", "-e", "frame.len",
                           "-e", "frame.interface_description"],
                          capture_output=True, text=True, timeout=60)
    assert read.returncode == 0, read.stderr
    assert read.stdout.splitlines() == [f"{42 + 10 * i}\teth0 on node-a" for i in range(25)]
    assert cluster.leftovers() == []
