"""What an earlier capture's objects mean to the next one, against the API server double.

Three cases, three texts (netobserv_tui.k8s.preflight): a capture whose aggregator is up is
**running** (refused); a namespace being deleted is **terminating** (waited for, with a
progress line, within the timeout; past it, an error saying what to do); anything else is
**interrupted** (refused until ``netobserv cleanup``).  The double's namespace deletion takes
the time the test says: its contents go at once, the namespace only when the test lets it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from apiserver_double import ApiServerDouble, PodOutcome
from kubernetes_asyncio import client

from netobserv_tui.aggregator.server import Aggregator
from netobserv_tui.capture.cluster import ClusterOptions, KubernetesTarget
from netobserv_tui.capture.target import CaptureOptions
from netobserv_tui.k8s import preflight as preflight_module
from netobserv_tui.k8s.manifests import AGGREGATOR_NAME, DeployOptions, render
from netobserv_tui.k8s.objects import apply, cleanup
from netobserv_tui.k8s.preflight import PreflightError, preflight

pytestmark = pytest.mark.timeout(30)

NS = "netobserv-cli"
OPTIONS = DeployOptions(capture_id="cap1", token="s3cret-token", image="registry.test/nobs:1")
WAITING = f"Namespace {NS} is still terminating (previous capture); waiting up to 10s..."
GONE = re.compile(rf"Namespace {NS} is gone after \d+s\.")


async def refusal(api_client: client.ApiClient, **kwargs: Any) -> str:
    with pytest.raises(PreflightError) as caught:
        await preflight(api_client, NS, **kwargs)
    return str(caught.value)


async def terminating(
    apiserver: ApiServerDouble,
    api_client: client.ApiClient,
    options: DeployOptions = OPTIONS,
    delay: float | None = None,
) -> None:
    """A capture that just ended: its objects deleted, its namespace still Terminating (for
    ``delay`` seconds; None: until the test finishes it)."""
    apiserver.namespace_deletion_delay = delay
    await apply(api_client, render(options))
    await cleanup(api_client, options.capture_id)
    found = apiserver.get("namespaces", options.namespace)
    assert found is not None and found["status"]["phase"] == "Terminating"
    assert apiserver.objects(namespace=options.namespace) == []


# ------------------------------------------------------------------------------- running


@pytest.mark.parametrize(
    ("phase", "detail"),
    [
        ("Running", "its aggregator pod is Running"),
        ("Pending", "its aggregator pod is starting (Pending)"),
    ],
)
async def test_a_capture_whose_aggregator_is_up_is_running(
    apiserver: ApiServerDouble, api_client: client.ApiClient, phase: str, detail: str
) -> None:
    await apply(api_client, render(OPTIONS))
    if phase == "Running":
        apiserver.set_pod_status(NS, AGGREGATOR_NAME, phase="Running")
    assert await refusal(api_client) == (
        f"a capture is already running in namespace {NS} (capture cap1; {detail}): wait for it "
        "to end or stop it; if it was abandoned, remove it with `netobserv cleanup`"
    )


# ------------------------------------------------------------------------------- interrupted


async def test_a_namespace_without_a_live_aggregator_is_interrupted(
    apiserver: ApiServerDouble, api_client: client.ApiClient
) -> None:
    await apply(api_client, render(OPTIONS)[:1])  # the namespace alone
    message = (
        f"an interrupted capture left objects behind: Namespace {NS} (capture cap1; {{}}): "
        "remove them with `netobserv cleanup`, then retry"
    )
    assert await refusal(api_client) == message.format("no aggregator pod")
    await apply(api_client, [o for o in render(OPTIONS) if o["kind"] != "Namespace"])
    apiserver.set_pod_status(NS, AGGREGATOR_NAME, phase="Failed")
    assert await refusal(api_client) == message.format("its aggregator pod is Failed")
    apiserver.set_pod_status(NS, AGGREGATOR_NAME, phase="Running")
    apiserver.patch(
        "pods",
        AGGREGATOR_NAME,
        {"metadata": {"deletionTimestamp": "2025-01-17T00:00:00Z"}},
        namespace=NS,
    )
    assert await refusal(api_client) == message.format("its aggregator pod is being deleted")
    # The remedy the message gives works.
    await cleanup(api_client)
    await preflight(api_client, NS)


async def test_cluster_scoped_objects_of_a_deleted_namespace_are_interrupted(
    apiserver: ApiServerDouble, api_client: client.ApiClient
) -> None:
    await apply(api_client, render(OPTIONS))
    await client.CoreV1Api(api_client).delete_namespace(NS)  # by hand: kubectl delete ns
    assert await refusal(api_client) == (
        "an interrupted capture left objects behind: ClusterRoleBinding netobserv-tui-"
        f"{NS}, ClusterRole netobserv-tui-{NS} (capture cap1; its namespace {NS} is gone): "
        "remove them with `netobserv cleanup`, then retry"
    )
    await cleanup(api_client)
    await preflight(api_client, NS)


# ------------------------------------------------------------------------------- terminating


async def test_a_terminating_namespace_is_waited_for(
    apiserver: ApiServerDouble, api_client: client.ApiClient
) -> None:
    await terminating(apiserver, api_client)
    said: list[str] = []
    task = asyncio.create_task(preflight(api_client, NS, timeout=10, progress=said.append))
    await apiserver.wait_for(lambda: apiserver.streams("watch") == 1, what="the wait's watch")
    assert said == [WAITING] and not task.done()
    apiserver.finish_namespace_deletion(NS)
    await asyncio.wait_for(task, 5)
    assert said[0] == WAITING and GONE.fullmatch(said[1]) and len(said) == 2
    assert len(apiserver.mutations("create")) == len(render(OPTIONS))  # the earlier capture's


async def test_past_the_timeout_the_wait_says_what_to_do(
    apiserver: ApiServerDouble, api_client: client.ApiClient
) -> None:
    await terminating(apiserver, api_client)
    said: list[str] = []
    assert await refusal(api_client, timeout=0.3, progress=said.append) == (
        f"namespace {NS} is still terminating after 0.3s (the objects of a previous capture are "
        "still being deleted): retry later or with a longer --rollout-timeout, or capture in "
        f"another namespace with --netobserv-namespace; `kubectl get namespace {NS} -o yaml` "
        "shows what it is waiting for (status.conditions)"
    )
    assert said == [
        f"Namespace {NS} is still terminating (previous capture); waiting up to 0.3s..."
    ]


async def test_the_wait_polls_when_namespaces_cannot_be_watched(
    apiserver: ApiServerDouble, api_client: client.ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preflight_module, "POLL_INTERVAL", 0.05)
    apiserver.deny("watch", "namespaces", reason="no watching here")
    await terminating(apiserver, api_client)
    said: list[str] = []
    task = asyncio.create_task(preflight(api_client, NS, timeout=10, progress=said.append))
    await apiserver.wait_for(
        lambda: sum(1 for r in apiserver.requests if r.verb == "watch" and r.code == 403) >= 2,
        what="refused watches",
    )
    apiserver.finish_namespace_deletion(NS)
    await asyncio.wait_for(task, 5)
    assert said[0] == WAITING and GONE.fullmatch(said[1])


async def test_the_namespace_going_by_itself_ends_the_wait(
    apiserver: ApiServerDouble, api_client: client.ApiClient
) -> None:
    await terminating(apiserver, api_client, delay=0.3)  # a fast namespace controller
    said: list[str] = []
    await preflight(api_client, NS, timeout=10, progress=said.append)
    assert said[0] == WAITING and GONE.fullmatch(said[1])
    assert apiserver.get("namespaces", NS) is None


async def test_another_capture_terminating_is_no_obstacle(
    apiserver: ApiServerDouble, api_client: client.ApiClient
) -> None:
    other = DeployOptions(capture_id="cap0", token="t", namespace="netobserv-old")
    await terminating(apiserver, api_client, other)
    said: list[str] = []
    await preflight(api_client, NS, timeout=10, progress=said.append)
    assert said == []


# ------------------------------------------------------------------------------- a capture


@pytest.fixture
async def cluster(apiserver: ApiServerDouble) -> AsyncIterator[ApiServerDouble]:
    apiserver.add_node("node-a")
    apiserver.add_node("node-b")
    yield apiserver


async def test_a_capture_right_after_another_waits_then_starts(
    cluster: ApiServerDouble, api_client: client.ApiClient, tmp_path: Path
) -> None:
    """Issue 14's "already running" right after a capture ended: the namespace of the
    previous capture is still terminating, so the new one waits for it, then starts."""
    await terminating(cluster, api_client, DeployOptions(capture_id="cprevious", token="t"))
    cluster.run_controllers(PodOutcome.running())
    said: list[str] = []
    target = KubernetesTarget(
        CaptureOptions(output=tmp_path / "output"),
        ClusterOptions(
            kubeconfig=str(cluster.write_kubeconfig(tmp_path / "kubeconfig")),
            rollout_timeout=10,
            copy=False,
        ),
        say=said.append,
    )
    pod = Aggregator(tmp_path / "pod", target.token)
    await pod.start()
    cluster.forward(NS, AGGREGATOR_NAME, 9990, ("127.0.0.1", pod.port))
    try:
        start = asyncio.create_task(target.start())
        await cluster.wait_for(lambda: f"  {WAITING}" in said, what="the progress line")
        assert not start.done() and cluster.mutations("create", "v1/namespaces") == [
            ("create", "v1/namespaces", None, NS)  # the previous capture's, only
        ]
        cluster.finish_namespace_deletion(NS)
        await asyncio.wait_for(start, 10)
        mine = said.index(f"  {WAITING}")
        assert said[mine - 1] == f"Checking the cluster and your permissions (namespace {NS})..."
        assert GONE.fullmatch(said[mine + 1].strip())
        assert said[mine + 2].startswith(f"Creating the capture {target.capture_id} in namespace")
        namespace = cluster.get("namespaces", NS)
        assert namespace is not None
        assert namespace["metadata"]["labels"]["netobserv.io/capture"] == target.capture_id
    finally:
        await target.stop()
        await pod.stop(grace=0)
    cluster.finish_namespace_deletion(NS)  # this capture's own, held too
    assert cluster.leftovers() == []
