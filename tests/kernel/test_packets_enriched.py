"""Packets carry the names flows carry: the real aggregator (``--packets --enrich
kubernetes``) names each end from the API server double's pods, and the real agent
(``PACKETS=1``) copies lab traffic from the kernel. tshark reads the comments back.

Only the API server is a double; the processes are the ones the pods run.
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
from capture_helpers import our_tc_objects

from netobserv_tui.lab import Lab
from netobserv_tui.lab.traffic import udp_send
from netobserv_tui.model.fetch import finish_and_fetch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "k8s"))
from apiserver_double import ApiServerDouble  # noqa: E402

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "packets-enriched-token"
NS = "shop"


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the agent needs root (eBPF, TC): run the tests as root")


def pod(name: str, ips: list[str], owner: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": owner},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                              "name": f"{owner}-5d9c", "uid": f"rs-{owner}",
                                              "controller": True}]},
            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "hostIP": "198.18.0.254", "podIP": ips[0],
                       "podIPs": [{"ip": ip} for ip in ips]}}


def replicaset(owner: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"{owner}-5d9c", "namespace": NS, "uid": f"rs-{owner}",
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                              "name": owner, "uid": f"d-{owner}",
                                              "controller": True}]},
            "spec": {"selector": {"matchLabels": {"app": owner}},
                     "template": {"metadata": {"labels": {"app": owner}},
                                  "spec": {"containers": [{"name": "c", "image": "i"}]}}}}


def env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "NETOBSERV_TOKEN": TOKEN,
            **extra}


async def test_each_packet_names_both_ends_and_where_it_was_seen(
    lab: Lab, tmp_path: Path
) -> None:
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    apiserver = ApiServerDouble()
    await apiserver.start()
    apiserver.put("namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                 "metadata": {"name": NS}})
    for ref, owner in ((a, "web"), (b, "db")):
        apiserver.put("replicasets", replicaset(owner))
        apiserver.put("pods", pod(ref.name, [ref.addr(4), ref.addr(6)], owner))
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "kubeconfig")
    aggregator = subprocess.Popen(
        [sys.executable, "-m", "netobserv_tui.aggregator", "--listen", "127.0.0.1:0",
         "--output", str(tmp_path / "pod"), "--enrich", "kubernetes", "--kubeconfig",
         str(kubeconfig), "--packets"],
        env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    agent: subprocess.Popen[str] | None = None
    rules = json.dumps({"version": 1, "enabled": True, "sampling": 0, "rules": [
        {"action": "Accept", "direction": None, "cidr": None, "peer_cidr": None,
         "protocol": 17, "sport": None, "dport": [[7141, 7141]], "port": None,
         "icmp_type": None, "icmp_code": None, "tcp_flags": None, "drops": False}]})
    try:
        assert aggregator.stdout is not None
        line = await asyncio.to_thread(aggregator.stdout.readline)
        assert line, aggregator.stderr.read() if aggregator.stderr else ""
        port = json.loads(line)["port"]
        agent = subprocess.Popen(
            [sys.executable, "-m", "netobserv_tui.agent"],
            env=env(NETOBSERV_AGGREGATOR=f"127.0.0.1:{port}", PACKETS="1",
                    FLOW_FILTER_RULES=rules, INTERFACES="nobs-*", AGENT_IP="198.18.0.254"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert agent.stdout is not None
        ready = json.loads(await asyncio.to_thread(agent.stdout.readline))
        assert ready["event"] == "ready"
        sent = await asyncio.to_thread(udp_send, lab, a, b, 30, 120, dst_port=7141,
                                       src_port=41041)
        assert sent.sent == sent.received
        agent.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(agent.wait, 60) == 0
        summary = await finish_and_fetch("127.0.0.1", port, TOKEN, tmp_path / "here",
                                         files=("json", "db", "pcapng"))
        assert await asyncio.to_thread(aggregator.wait, 30) == 0
    finally:
        for proc in (agent, aggregator):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        await apiserver.stop()
    assert our_tc_objects() == []
    pcap = Path(summary["local_files"]["pcapng"])
    assert pcap.parent == tmp_path / "here" / "pcap"
    assert summary["captured_packets"] == 2 * sent.sent
    done = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "frame.len",
                           "-e", "frame.interface_name", "-e", "frame.comment"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert len(rows) == 2 * sent.sent
    ends = ("SrcK8S_Namespace=shop; SrcK8S_Name=pod-a; SrcK8S_Type=Pod; "
            "SrcK8S_OwnerName=web; SrcK8S_OwnerType=Deployment; SrcK8S_HostName=node-a; "
            "DstK8S_Namespace=shop; DstK8S_Name=pod-b; DstK8S_Type=Pod; "
            "DstK8S_OwnerName=db; DstK8S_OwnerType=Deployment; DstK8S_HostName=node-a")
    host = ready.get("hostname") or os.uname().nodename
    for ifname, direction in ((a.host_ifname, "ingress"), (b.host_ifname, "egress")):
        seen = [r for r in rows if r[1] == ifname]
        assert len(seen) == sent.sent
        assert {r[0] for r in seen} == {str(sent.frame_bytes)}
        assert {r[2] for r in seen} == {
            f"Host={host}; Interface={ifname}; Direction={direction}; {ends}"}
