"""The agent and aggregator run here exactly as the rendered DaemonSet and Pod specs say.

Command, arguments and environment come from ``manifests.render``; only what a cluster
would supply is supplied here: the Secret's token and the downward API values, the
Service's DNS name resolved to 127.0.0.1, and a directory for each emptyDir mount.  Lab
traffic must then reach the aggregator's files with the exact counts of the flow tests,
and the files leave the "pod" the way they leave a cluster: FINISH and FETCH.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from capture_helpers import json_records, our_tc_objects, sql_totals, totals
from pod_specs import container, kubelet_env

from netobserv_tui.k8s.manifests import DeployOptions, render
from netobserv_tui.lab import Lab
from netobserv_tui.lab.traffic import udp_send
from netobserv_tui.model.fetch import finish_and_fetch

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "pod-entrypoint-token"


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the agent needs root (eBPF, TC): run the tests as root")


def environment(cont: dict[str, Any], emptydirs: dict[str, Path],
                secret: dict[str, str], service_by_name: bool = False) -> dict[str, str]:
    """The kubelet's env for the container, with the paths of emptyDir mounts mapped to
    directories here (and the Service's name kept with ``service_by_name``)."""
    mounts = {m["mountPath"]: emptydirs[m["name"]] for m in cont.get("volumeMounts", [])
              if m["name"] in emptydirs}
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    for name, value in kubelet_env(cont, secret, service_by_name).items():
        for path, local in mounts.items():
            if value == path or value.startswith(path + "/"):
                value = str(local) + value[len(path):]
        env[name] = value
    return env


def argv(cont: dict[str, Any], emptydirs: dict[str, Path]) -> list[str]:
    mounts = {m["mountPath"]: str(emptydirs[m["name"]]) for m in cont.get("volumeMounts", [])
              if m["name"] in emptydirs}
    words = [*cont["command"], *cont.get("args", [])]
    assert words[0] == "python"  # the image's venv python; here, the test's
    return [sys.executable, *(mounts.get(w, w) for w in words[1:])]


def test_the_pod_specs_run_here_and_count_exactly(lab: Lab, tmp_path: Path) -> None:
    options = DeployOptions(capture_id="entry", token=TOKEN, aggregator_port=19990,
                            agent_env={"INTERFACES": "nobs-*", "CACHE_ACTIVE_TIMEOUT": "1s"})
    objects = render(options)
    secret = next(o for o in objects if o["kind"] == "Secret")["stringData"]
    agg_spec, agg = container(objects, "Pod")
    agent_spec, agent = container(objects, "DaemonSet")
    dirs = {v["name"]: tmp_path / v["name"] for v in agg_spec["volumes"] if "emptyDir" in v}
    agent_dirs = {v["name"]: tmp_path / f"agent-{v['name']}" for v in agent_spec["volumes"]
                  if "emptyDir" in v}
    for path in [*dirs.values(), *agent_dirs.values()]:
        path.mkdir()
    assert agg["args"][:2] == ["--listen", "*:19990"]

    aggregator = subprocess.Popen(argv(agg, dirs), env=environment(agg, dirs, secret),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    agent_proc: subprocess.Popen[str] | None = None
    try:
        assert aggregator.stdout is not None
        ready = json.loads(aggregator.stdout.readline())
        assert ready["event"] == "ready" and ready["port"] == 19990
        # The Service's name as the DaemonSet says, which no DNS here resolves, and the
        # variables the kubelet sets for a Service made before the pod: the agent must
        # reach the aggregator without DNS.
        agent_env = environment(agent, agent_dirs, secret, service_by_name=True)
        name, port = agent_env["NETOBSERV_AGGREGATOR"].rsplit(":", 1)
        assert (name, port) == ("netobserv-aggregator.netobserv-cli.svc", "19990")
        with pytest.raises(socket.gaierror):
            socket.getaddrinfo(name, port)
        agent_env |= {"NETOBSERV_AGGREGATOR_SERVICE_HOST": "127.0.0.1",
                      "NETOBSERV_AGGREGATOR_SERVICE_PORT": "19990"}
        agent_proc = subprocess.Popen(argv(agent, agent_dirs), env=agent_env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert agent_proc.stdout is not None
        started = json.loads(agent_proc.stdout.readline())
        assert started["event"] == "ready", agent_proc.stderr
        assert sorted(started["interfaces"]) == sorted(
            ["nobs-br0", *(p.host_ifname for p in lab.pods)])

        a, b = lab.pod("pod-a"), lab.pod("pod-b")
        assert lab.wait_quiet()
        sent = udp_send(lab, a, b, 500, 120, dst_port=7010, src_port=40010)
        assert sent.sent == sent.received == 500

        agent_proc.send_signal(signal.SIGTERM)  # what the kubelet does on delete
        assert agent_proc.wait(60) == 0, agent_proc.stderr.read() if agent_proc.stderr else ""
        assert agent_proc.stderr is not None
        assert "Connected to the aggregator at 127.0.0.1:19990." in agent_proc.stderr.read()
        summary = asyncio.run(finish_and_fetch("127.0.0.1", 19990, TOKEN, tmp_path / "here"))
        assert aggregator.wait(30) == 0
    finally:
        for proc in (agent_proc, aggregator):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert our_tc_objects() == []
    files = summary["local_files"]
    expected = (500, 500 * sent.frame_bytes)
    assert sql_totals(Path(files["db"]), SrcPort=40010, DstPort=7010)[(a.host_ifname, 0)] == \
        expected
    assert sql_totals(Path(files["db"]), SrcPort=40010, DstPort=7010)[(b.host_ifname, 1)] == \
        expected
    assert totals(json_records(Path(files["json"])), SrcPort=40010)[(a.host_ifname, 0)] == \
        expected
    records = json_records(Path(files["json"]))
    assert {r["AgentIP"] for r in records} == {"198.18.0.254"}
