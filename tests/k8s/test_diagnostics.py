"""A rollout that fails says each distinct cause once; every detail goes to the log.

The double's kubelet gives the pods their outcome (PodOutcome) and posts the events a real
one would (a failed pull: Failed with the registry's error, Error: ErrImagePull, BackOff,
Error: ImagePullBackOff); the message must name each cause once, grouped by pod and
container, and keep the whole picture for ``output/netobserv.log``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from apiserver_double import ApiServerDouble, PodOutcome
from kubernetes_asyncio import client

from netobserv_tui.k8s.manifests import DeployOptions, render
from netobserv_tui.k8s.objects import apply
from netobserv_tui.k8s.rollout import RolloutError, wait_ready

NAMESPACE = "netobserv-cli"
OPTIONS = DeployOptions(capture_id="cap1", token="s3cret-token", image="registry.test/nobs:1")
PULL_ERROR = (
    'Failed to pull image "registry.test/nobs:1": rpc error: code = NotFound desc = failed '
    'to pull and unpack image "registry.test/nobs:1": failed to resolve reference '
    '"registry.test/nobs:1": registry.test/nobs:1: not found')


def is_agent(pod: dict[str, Any]) -> bool:
    return bool(pod["metadata"]["name"] != "netobserv-aggregator")


async def failure(apiserver: ApiServerDouble, api_client: client.ApiClient, *,
                  nodes: int = 3, timeout: float = 30) -> RolloutError:
    """Deploy a capture on ``nodes`` nodes, let the kubelets settle, wait: the error."""
    for name in ("node-a", "node-b", "node-c")[:nodes]:
        apiserver.add_node(name)
    await apply(api_client, render(OPTIONS))
    await apiserver.settled()
    with pytest.raises(RolloutError) as caught:
        await wait_ready(api_client, NAMESPACE, "cap1", timeout=timeout, interval=0.05)
    return caught.value


async def test_a_failed_image_pull_is_one_line_with_the_registry_error_once(
    apiserver: ApiServerDouble, api_client: client.ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Four pods, four containers, sixteen events, one cause: one line."""
    apiserver.run_controllers(PodOutcome.image_pull_backoff())
    caplog.set_level(logging.INFO, logger="netobserv_tui.k8s.rollout")
    error = await failure(apiserver, api_client)
    assert str(error).splitlines() == [
        "the capture did not start: the pods cannot start (agents 0/3 ready, aggregator "
        "ImagePullBackOff):",
        "  aggregator pod on node-a, container aggregator; 3 agent pods (node-a, node-b, "
        "node-c), container agent: ImagePullBackOff: " + PULL_ERROR,
    ]
    # Everything is kept: each pod's state and each of its events, logged at INFO.
    pods = apiserver.objects("pods", NAMESPACE)
    assert len(pods) == 4
    for pod in pods:
        node = pod["spec"]["nodeName"]
        assert f"pod {pod['metadata']['name']} on {node}: ImagePullBackOff" in error.details
        assert (f"Warning Failed Pod/{pod['metadata']['name']}: {PULL_ERROR}"
                in error.details)
    assert error.details.count("registry.test/nobs:1: not found") == 4
    logged = [r.getMessage() for r in caplog.records if r.name == "netobserv_tui.k8s.rollout"]
    assert logged == ["The capture's pods did not become ready: the pods cannot start "
                      "(agents 0/3 ready, aggregator ImagePullBackOff)\n" + error.details]


async def test_each_distinct_cause_gets_its_own_line(
    apiserver: ApiServerDouble, api_client: client.ApiClient
) -> None:
    """Two agents cannot pull, the third lacks a Secret, the aggregator is fine.  Of the
    two, one is still at ErrImagePull (whose message is the registry's answer, as a real
    kubelet says it) and one backs off: the same cause, one line."""
    missing_secret = PodOutcome(phase="Pending", ready=False,
                                waiting_reason="CreateContainerConfigError",
                                waiting_message='secret "nobs-extra" not found')
    still_pulling = dataclasses.replace(
        PodOutcome.image_pull_backoff(), waiting_reason="ErrImagePull",
        waiting_message=PULL_ERROR.split(": ", 1)[1])
    apiserver.run_controllers(
        lambda pod: PodOutcome.running() if not is_agent(pod)
        else missing_secret if pod["spec"]["nodeName"] == "node-c"
        else still_pulling if pod["spec"]["nodeName"] == "node-b"
        else PodOutcome.image_pull_backoff())
    error = await failure(apiserver, api_client)
    assert str(error).splitlines() == [
        "the capture did not start: the pods cannot start (agents 0/3 ready, aggregator "
        "Ready):",
        "  2 agent pods (node-a, node-b), container agent: ImagePullBackOff: " + PULL_ERROR,
        '  agent pod on node-c, container agent: CreateContainerConfigError: secret '
        '"nobs-extra" not found',
    ]


async def test_a_crash_loop_says_the_exit_and_the_log_once(
    apiserver: ApiServerDouble, api_client: client.ApiClient
) -> None:
    log = "kernel headers: /usr/src/linux-headers-6.1.0\nerror: cannot load the flow program\n"
    apiserver.run_controllers(lambda pod: PodOutcome.crash_loop_backoff(logs=log)
                              if is_agent(pod) else PodOutcome.running())
    for name in ("node-a", "node-b"):
        apiserver.add_node(name)
    await apply(api_client, render(OPTIONS))
    await apiserver.settled()
    # As a kubelet reports a crash loop: the last run's exit (not always the same code).
    for code, pod in enumerate(apiserver.objects("pods", NAMESPACE, label_selector=(
            "app.kubernetes.io/component=agent")), start=1):
        pod["status"]["containerStatuses"][0]["lastState"] = {"terminated": {
            "exitCode": 1, "reason": "Error", "startedAt": "2024-08-13T00:00:00Z",
            "finishedAt": f"2024-08-13T00:00:0{code}Z"}}
        apiserver.put("pods", pod, namespace=NAMESPACE)
    with pytest.raises(RolloutError) as caught:
        await wait_ready(api_client, NAMESPACE, "cap1", timeout=30, interval=0.05)
    assert str(caught.value).splitlines() == [
        "the capture did not start: the pods cannot start (agents 0/2 ready, aggregator "
        "Ready):",
        "  2 agent pods (node-a, node-b), container agent: CrashLoopBackOff: exited with "
        "code 1 (Error)",
        "    last log lines (agent pod on node-a, container agent):",
        "      kernel headers: /usr/src/linux-headers-6.1.0",
        "      error: cannot load the flow program",
    ]


async def test_a_deadline_names_what_is_not_ready(
    apiserver: ApiServerDouble, api_client: client.ApiClient
) -> None:
    apiserver.run_controllers(lambda pod: PodOutcome.running() if is_agent(pod)
                              else PodOutcome.not_ready(logs="listening on :9990\n"))
    error = await failure(apiserver, api_client, nodes=2, timeout=0.3)
    assert str(error).splitlines() == [
        "the capture did not start: not ready after 0.3s (agents 2/2 ready, aggregator "
        "Running):",
        "  aggregator pod on node-a, container aggregator: running, not ready: Readiness "
        "probe failed: connection refused",
        "    last log lines (aggregator pod on node-a, container aggregator):",
        "      listening on :9990",
    ]


async def test_netobserv_flows_prints_the_pull_error_once_and_logs_every_detail(
    apiserver: ApiServerDouble, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command line: the short text on stderr, the details in output/netobserv.log."""
    from netobserv_tui.cli import main

    for name in ("node-a", "node-b", "node-c"):
        apiserver.add_node(name)
    apiserver.run_controllers(lambda pod: PodOutcome.image_pull_backoff() if is_agent(pod)
                              else PodOutcome.running())
    kubeconfig = apiserver.write_kubeconfig(tmp_path / "kubeconfig")
    output = tmp_path / "output"
    status = await asyncio.to_thread(main, [
        "flows", "--no-tui", f"--kubeconfig={kubeconfig}", f"--output={output}",
        "--image=registry.test/nobs:1"])
    err = capsys.readouterr().err
    assert status == 1
    assert err.count("registry.test/nobs:1: not found") == 1, err
    assert (f"error: the capture did not start: the pods cannot start (agents 0/3 ready, "
            f"aggregator Ready):\n"
            f"  3 agent pods (node-a, node-b, node-c), container agent: ImagePullBackOff: "
            f"{PULL_ERROR}\n"
            f"Every pod state, event and log line found: {output / 'netobserv.log'}\n") in err
    logged = (output / "netobserv.log").read_text()
    assert logged.count("registry.test/nobs:1: not found") == 3  # an event of each agent
    states = re.findall(r"^pod netobserv-agent-\w+ on (node-.): ImagePullBackOff$", logged,
                        re.MULTILINE)
    assert sorted(states) == ["node-a", "node-b", "node-c"]  # each agent pod's state
    assert apiserver.leftovers() == []
