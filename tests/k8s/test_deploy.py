"""Creating, checking and deleting a capture's objects, against the API server double.

The real kubernetes-asyncio client sends the rendered manifests to the double, which records
every request; each test checks what a cluster would hold afterwards.
"""

from __future__ import annotations

from typing import Any

import pytest
from apiserver_double import ApiServerDouble, PodOutcome
from kubernetes_asyncio import client

from netobserv_tui.k8s.manifests import DeployOptions, render
from netobserv_tui.k8s.objects import ApplyError, apply, cleanup
from netobserv_tui.k8s.preflight import PreflightError, preflight
from netobserv_tui.k8s.rollout import RolloutError, wait_ready

OPTIONS = DeployOptions(capture_id="cap1", token="s3cret-token", image="registry.test/nobs:1")


async def test_apply_then_cleanup_leaves_nothing(
    apiserver: ApiServerDouble, api_client: client.ApiClient
) -> None:
    objects = render(OPTIONS)
    created: list[str] = []
    await apply(api_client, objects, on_created=lambda o: created.append(o["kind"]))
    assert created == [o["kind"] for o in objects]
    assert [m[0] for m in apiserver.mutations("create")] == ["create"] * len(objects)
    assert len(apiserver.leftovers()) == len(objects)

    said: list[str] = []
    deleted = await cleanup(api_client, "cap1", say=said.append)
    assert apiserver.leftovers() == []
    assert deleted[0] == "DaemonSet netobserv-cli/netobserv-agent"
    assert deleted[-1] == "Namespace netobserv-cli"
    assert said == [f"deleted {d}" for d in deleted]
    assert await cleanup(api_client, "cap1") == []  # idempotent


async def test_cleanup_while_the_namespace_is_terminating_is_not_an_error(
    apiserver: ApiServerDouble, api_client: client.ApiClient
) -> None:
    """A second cleanup while the first one's namespace is still terminating (as on a real
    cluster, which answers 409 to its deletion) says so and succeeds."""
    apiserver.namespace_deletion_delay = None  # until finish_namespace_deletion
    await apply(api_client, render(OPTIONS))
    assert (await cleanup(api_client, "cap1"))[-1] == "Namespace netobserv-cli"
    said: list[str] = []
    assert await cleanup(api_client, "cap1", say=said.append) == []
    assert said == ["Namespace netobserv-cli is already being deleted"]
    apiserver.finish_namespace_deletion("netobserv-cli")
    assert apiserver.leftovers() == []


async def test_cleanup_touches_only_what_the_tool_created(
    apiserver: ApiServerDouble, api_client: client.ApiClient
) -> None:
    await client.CoreV1Api(api_client).create_namespace({"metadata": {"name": "mine"}})
    await apply(api_client, render(OPTIONS))
    await cleanup(api_client)
    assert apiserver.leftovers() == [("v1/namespaces", None, "mine")]


async def test_a_refused_object_is_named_and_what_was_created_is_known(
    apiserver: ApiServerDouble, api_client: client.ApiClient
) -> None:
    apiserver.deny("create", "daemonsets", "netobserv-cli", reason="policy says no")
    created: list[dict[str, Any]] = []
    with pytest.raises(ApplyError, match=r"cannot create DaemonSet netobserv-cli/netobserv-agent"
                                         r": 403 .*policy says no"):
        await apply(api_client, render(OPTIONS), on_created=created.append)
    assert created and created[-1]["kind"] != "DaemonSet"
    await cleanup(api_client, "cap1")
    assert apiserver.leftovers() == []


async def test_preflight_passes_on_a_cluster_that_allows_everything(
    api_client: client.ApiClient,
) -> None:
    await preflight(api_client, "netobserv-cli")


async def test_preflight_lists_every_missing_permission(
    apiserver: ApiServerDouble, api_client: client.ApiClient
) -> None:
    apiserver.deny("create", "daemonsets", "netobserv-cli", group="apps")
    apiserver.deny("create", "pods", "netobserv-cli", reason="no port-forward for you")
    with pytest.raises(PreflightError) as caught:
        await preflight(api_client, "netobserv-cli")
    message = str(caught.value)
    assert "kubectl auth can-i create daemonsets.apps -n netobserv-cli" in message
    assert "kubectl auth can-i create pods -n netobserv-cli" in message
    assert apiserver.mutations("create", "v1/namespaces") == []  # nothing was created


async def test_rollout_reports_progress_until_every_agent_is_ready(
    apiserver: ApiServerDouble, api_client: client.ApiClient
) -> None:
    for node in ("node-a", "node-b", "node-c"):
        apiserver.add_node(node)
    apiserver.run_controllers(PodOutcome.running())
    await apply(api_client, render(OPTIONS))
    progress: list[str] = []
    await wait_ready(api_client, "netobserv-cli", "cap1", timeout=10, progress=progress.append,
                     interval=0.05)
    assert progress[-1] == "agents 3/3 ready, aggregator Ready"


async def test_rollout_stuck_in_image_pull_says_why_at_once(
    apiserver: ApiServerDouble, api_client: client.ApiClient
) -> None:
    apiserver.add_node("node-a")
    apiserver.add_node("node-b")
    apiserver.run_controllers(
        lambda pod: PodOutcome.image_pull_backoff() if pod["spec"].get("nodeName") == "node-b"
        and pod["metadata"]["name"] != "netobserv-aggregator" else PodOutcome.running("up\n"))
    await apply(api_client, render(OPTIONS))
    await apiserver.settled()
    with pytest.raises(RolloutError) as caught:
        await wait_ready(api_client, "netobserv-cli", "cap1", timeout=30, interval=0.05)
    assert str(caught.value).splitlines() == [
        "the capture did not start: the pods cannot start (agents 1/2 ready, aggregator "
        "Ready):",
        '  agent pod on node-b, container agent: ImagePullBackOff: Failed to pull image '
        '"registry.test/nobs:1": rpc error: code = NotFound desc = failed to pull and unpack '
        'image "registry.test/nobs:1": failed to resolve reference "registry.test/nobs:1": '
        'registry.test/nobs:1: not found',
    ]
    details = caught.value.details  # what goes to output/netobserv.log
    assert "on node-b: ImagePullBackOff" in details
    assert "events:" in details and "registry.test/nobs:1: not found" in details
    assert "last log lines of netobserv-aggregator/aggregator:\n  up" in details


async def test_rollout_deadline_with_no_node_for_the_agents(
    apiserver: ApiServerDouble, api_client: client.ApiClient
) -> None:
    apiserver.run_controllers(PodOutcome.running())  # no node at all
    await apply(api_client, render(OPTIONS))
    with pytest.raises(RolloutError, match=r"not ready after 0.3s \(agents 0/0 ready, "
                                           r"aggregator .*\); no node can run an agent"):
        await wait_ready(api_client, "netobserv-cli", "cap1", timeout=0.3, interval=0.05)
