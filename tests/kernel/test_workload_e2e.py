"""Workload filter end to end: the real aggregator resolves a label selector against the API
server double's pods, whose addresses are the lab pods', and the real agent narrows its
kernel capture to them, following a relabel live.

Only the API server is a double; the aggregator (``--enrich kubernetes --workload-...``)
and the agent (``WORKLOAD_FILTER=1``) are the processes the pods run, with real traffic.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from capture_helpers import json_records, our_tc_objects

from netobserv_tui.lab import Lab
from netobserv_tui.lab.traffic import udp_send
from netobserv_tui.model.fetch import finish_and_fetch
from netobserv_tui.model.stream import LiveStream, StatsUpdate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "k8s"))
from apiserver_double import ApiServerDouble  # noqa: E402

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "workload-e2e-token"
NS = "pods"


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the agent needs root (eBPF, TC): run the tests as root")


def pod(name: str, ips: list[str], labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "hostIP": "198.18.0.254", "podIP": ips[0],
                       "podIPs": [{"ip": ip} for ip in ips]}}


def env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "NETOBSERV_TOKEN": TOKEN,
            **extra}


async def agent_holds(port: int, count: int) -> None:
    """Wait until the agent reports ``count`` addresses in its kernel set (its STATS, as the
    aggregator's live stream relays them once a second)."""
    async with LiveStream("127.0.0.1", port, TOKEN) as stream, asyncio.timeout(30):
        async for frame in stream:
            if isinstance(frame, StatsUpdate) and frame.counters.get(
                    "agent_stats", {}).get("workload_ips") == count:
                return


async def test_a_selector_narrows_the_kernel_capture_and_follows_a_relabel(
    lab: Lab, tmp_path: Path
) -> None:
    a, b, c = lab.pod("pod-a"), lab.pod("pod-b"), lab.pod("pod-c")
    apiserver = ApiServerDouble()
    await apiserver.start()
    apiserver.put("namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                 "metadata": {"name": NS}})
    for ref, app in ((a, "web"), (b, "db"), (c, "batch")):
        apiserver.put("pods", pod(ref.name, [ref.addr(4), ref.addr(6)], {"app": app}))
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "kubeconfig")
    aggregator = subprocess.Popen(
        [sys.executable, "-m", "netobserv_tui.aggregator", "--listen", "127.0.0.1:0",
         "--output", str(tmp_path / "pod"), "--enrich", "kubernetes", "--kubeconfig",
         str(kubeconfig), "--workload-selector", "app in (web)"],
        env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    agent: subprocess.Popen[str] | None = None
    try:
        assert aggregator.stdout is not None
        line = await asyncio.to_thread(aggregator.stdout.readline)
        assert line, aggregator.stderr.read() if aggregator.stderr else ""
        port = json.loads(line)["port"]
        agent = subprocess.Popen(
            [sys.executable, "-m", "netobserv_tui.agent"],
            env=env(NETOBSERV_AGGREGATOR=f"127.0.0.1:{port}", WORKLOAD_FILTER="1",
                    INTERFACES="nobs-*", AGENT_IP="198.18.0.254"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert agent.stdout is not None
        ready = json.loads(await asyncio.to_thread(agent.stdout.readline))
        assert ready["event"] == "ready" and ready["workload"] is True
        await agent_holds(port, 2)  # pod-a's IPv4 and IPv6 addresses
        assert lab.wait_quiet()

        # Only pod-a (app=web) is in the workload: a->b kept, c->b not.
        first_a = await asyncio.to_thread(udp_send, lab, a, b, 200, 64, dst_port=7101,
                                          src_port=41001)
        first_c = await asyncio.to_thread(udp_send, lab, c, b, 200, 64, dst_port=7102,
                                          src_port=41002)
        # pod-c joins the workload by a label change: the next traffic of c is kept.
        apiserver.patch("pods", c.name, {"metadata": {"labels": {"app": "web"}}},
                        namespace=NS)
        await agent_holds(port, 4)  # pod-a's and pod-c's
        later_c = await asyncio.to_thread(udp_send, lab, c, b, 150, 64, dst_port=7103,
                                          src_port=41003)
        for sent in (first_a, first_c, later_c):
            assert sent.sent == sent.received

        agent.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(agent.wait, 60) == 0
        summary = await finish_and_fetch("127.0.0.1", port, TOKEN, tmp_path / "here")
        assert await asyncio.to_thread(aggregator.wait, 30) == 0
    finally:
        for proc in (agent, aggregator):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        await apiserver.stop()
    assert our_tc_objects() == []
    records = json_records(Path(summary["local_files"]["json"]))

    def packets(src_port: int, ifname: str) -> int:
        return sum(r["Packets"] for r in records
                   if r.get("SrcPort") == src_port and r.get("Interface") == ifname)

    assert packets(41001, a.host_ifname) == 200  # a -> b, in the workload
    assert packets(41002, c.host_ifname) == 0  # c -> b, not yet
    assert packets(41003, c.host_ifname) == 150  # c -> b, after the relabel
    # Nothing outside the workload's addresses, and the files carry its names.
    allowed = {a.addr(4), a.addr(6), c.addr(4), c.addr(6)}
    assert all(r["SrcAddr"] in allowed or r["DstAddr"] in allowed for r in records)
    web = next(r for r in records if r.get("SrcPort") == 41001)
    assert (web["SrcK8S_Name"], web["SrcK8S_Namespace"], web["DstK8S_Name"]) == (
        a.name, NS, b.name)
