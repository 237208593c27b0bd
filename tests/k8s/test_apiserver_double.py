"""The API server double, proven with the real kubernetes-asyncio client only."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from apiserver_double import ApiServerDouble, PodOutcome
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.stream import WsApiClient

pytestmark = pytest.mark.timeout(10)

NS = "netobserv-test"
LABELS = {"app.kubernetes.io/part-of": "netobserv-tui", "netobserv.io/capture": "c1"}


def meta(name: str, labels: dict[str, str] | None = None) -> client.V1ObjectMeta:
    return client.V1ObjectMeta(name=name, labels=labels)


def pod(name: str, labels: dict[str, str] | None = None) -> client.V1Pod:
    return client.V1Pod(
        metadata=meta(name, labels),
        spec=client.V1PodSpec(containers=[client.V1Container(name="main", image="busybox:1.36")]),
    )


def daemonset(name: str, image: str = "quay.io/netobserv/agent:1.0") -> client.V1DaemonSet:
    labels = {**LABELS, "app": name}
    return client.V1DaemonSet(
        metadata=meta(name, labels),
        spec=client.V1DaemonSetSpec(
            selector=client.V1LabelSelector(match_labels={"app": name}),
            template=client.V1PodTemplateSpec(
                metadata=meta(name, labels),  # name is ignored in a template
                spec=client.V1PodSpec(
                    host_network=True,
                    containers=[client.V1Container(name="agent", image=image)],
                ),
            ),
        ),
    )


def status_body(exc: ApiException) -> dict[str, Any]:
    assert exc.body is not None
    body = json.loads(exc.body)
    assert body["kind"] == "Status"
    return dict(body)


@pytest.fixture
async def core(api_client: client.ApiClient) -> AsyncIterator[client.CoreV1Api]:
    v1 = client.CoreV1Api(api_client)
    await v1.create_namespace(client.V1Namespace(metadata=meta(NS)))
    yield v1


async def collect(stream: watch.Watch, count: int, timeout: float = 1.0) -> list[tuple[str, Any]]:
    """The first ``count`` events of a watch stream, as (type, raw object)."""
    seen: list[tuple[str, Any]] = []
    async with asyncio.timeout(timeout):
        async for event in stream:
            seen.append((event["type"], event["raw_object"]))
            if len(seen) == count:
                break
    return seen


# ------------------------------------------------------------------------------- CRUD


async def test_create_get_list_delete(apiserver: ApiServerDouble, core: client.CoreV1Api) -> None:
    created = await core.create_namespaced_pod(NS, pod("a", {"tier": "web", "env": "prod"}))
    assert created.metadata.uid and created.metadata.namespace == NS
    assert created.metadata.creation_timestamp is not None
    assert int(created.metadata.resource_version) > 0
    assert created.status.phase == "Pending"
    await core.create_namespaced_pod(NS, pod("b", {"tier": "db"}))
    await core.create_namespaced_pod(NS, pod("c"))

    with pytest.raises(ApiException) as dup:
        await core.create_namespaced_pod(NS, pod("a"))
    assert dup.value.status == 409
    assert status_body(dup.value)["reason"] == "AlreadyExists"
    assert status_body(dup.value)["message"] == 'pods "a" already exists'

    got = await core.read_namespaced_pod("a", NS)
    assert got.metadata.uid == created.metadata.uid

    async def names(**kwargs: Any) -> list[str]:
        listed = await core.list_namespaced_pod(NS, **kwargs)
        assert int(listed.metadata.resource_version) >= int(created.metadata.resource_version)
        return [p.metadata.name for p in listed.items]

    assert await names() == ["a", "b", "c"]
    assert await names(label_selector="tier=web") == ["a"]
    assert await names(label_selector="tier!=web") == ["b", "c"]
    assert await names(label_selector="tier in (web, db)") == ["a", "b"]
    assert await names(label_selector="tier notin (web)") == ["b", "c"]
    assert await names(label_selector="tier") == ["a", "b"]
    assert await names(label_selector="!tier") == ["c"]
    assert await names(label_selector="tier=web,env=prod") == ["a"]
    assert await names(field_selector="metadata.name=b") == ["b"]
    assert await names(field_selector="metadata.name!=b") == ["a", "c"]
    every = await core.list_pod_for_all_namespaces(label_selector="tier")
    assert {p.metadata.namespace for p in every.items} == {NS}

    with pytest.raises(ApiException) as bad:
        await core.list_namespaced_pod(NS, field_selector="spec.image=x")
    assert bad.value.status == 400
    assert "field label not supported" in status_body(bad.value)["message"]

    deleted = await core.delete_namespaced_pod("a", NS)
    assert deleted.metadata.deletion_timestamp is not None
    with pytest.raises(ApiException) as gone:
        await core.read_namespaced_pod("a", NS)
    assert gone.value.status == 404
    assert status_body(gone.value)["message"] == 'pods "a" not found'
    with pytest.raises(ApiException) as again:
        await core.delete_namespaced_pod("a", NS)
    assert again.value.status == 404

    assert apiserver.mutations("create", "pods") == [
        ("create", "v1/pods", NS, "a"),
        ("create", "v1/pods", NS, "b"),
        ("create", "v1/pods", NS, "c"),
    ]
    assert [r.code for r in apiserver.journal if r.resource == "pods"] == [
        201,
        201,
        201,
        409,
        200,
        404,
    ]


async def test_create_in_missing_namespace_and_generate_name(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as missing:
        await core.create_namespaced_pod("nowhere", pod("x"))
    assert missing.value.status == 404
    assert status_body(missing.value)["message"] == 'namespaces "nowhere" not found'

    generated = client.V1Pod(
        metadata=client.V1ObjectMeta(generate_name="agent-"), spec=pod("x").spec
    )
    created = await core.create_namespaced_pod(NS, generated)
    assert created.metadata.name.startswith("agent-") and len(created.metadata.name) == 11

    with pytest.raises(ApiException) as invalid:
        await core.create_namespaced_pod(NS, pod("Not_A_Name"))
    assert invalid.value.status == 422


async def test_update_patch_and_conflict(core: client.CoreV1Api) -> None:
    created = await core.create_namespaced_config_map(
        NS, client.V1ConfigMap(metadata=meta("cfg"), data={"a": "1"})
    )
    created.data["b"] = "2"
    replaced = await core.replace_namespaced_config_map("cfg", NS, created)
    assert replaced.data == {"a": "1", "b": "2"}
    with pytest.raises(ApiException) as stale:
        await core.replace_namespaced_config_map("cfg", NS, created)  # old resourceVersion
    assert stale.value.status == 409
    assert "the object has been modified" in status_body(stale.value)["message"]

    merged = await core.patch_namespaced_config_map(
        "cfg",
        NS,
        {"data": {"a": None, "c": "3"}},
        _content_type="application/merge-patch+json",  # type: ignore[call-arg]  # not in stubs
    )
    assert merged.data == {"b": "2", "c": "3"}
    patched = await core.patch_namespaced_config_map(
        "cfg", NS, [{"op": "replace", "path": "/data/b", "value": "20"}]
    )
    assert patched.data == {"b": "20", "c": "3"}

    # Strategic merge (the client's default for a dict) merges containers by name.
    await core.create_namespaced_pod(NS, pod("p"))
    await core.patch_namespaced_pod(
        "p", NS, {"spec": {"containers": [{"name": "main", "image": "busybox:1.37"}]}}
    )
    # Status goes through /status only.
    await core.patch_namespaced_pod("p", NS, {"status": {"phase": "Failed"}})
    await core.patch_namespaced_pod_status("p", NS, {"status": {"phase": "Running"}})
    current = await core.read_namespaced_pod("p", NS)
    assert [c.image for c in current.spec.containers] == ["busybox:1.37"]
    assert current.status.phase == "Running"


async def test_secret_service_and_rbac(
    apiserver: ApiServerDouble, api_client: client.ApiClient, core: client.CoreV1Api
) -> None:
    secret = await core.create_namespaced_secret(
        NS, client.V1Secret(metadata=meta("token", LABELS), string_data={"token": "s3cret"})
    )
    assert secret.data == {"token": "czNjcmV0"} and secret.type == "Opaque"
    service = await core.create_namespaced_service(
        NS,
        client.V1Service(
            metadata=meta("aggregator", LABELS),
            spec=client.V1ServiceSpec(
                selector={"app": "aggregator"}, ports=[client.V1ServicePort(port=9000)]
            ),
        ),
    )
    assert service.spec.cluster_ip and service.spec.ports[0].target_port == 9000

    rbac = client.RbacAuthorizationV1Api(api_client)
    await rbac.create_cluster_role(
        client.V1ClusterRole(
            metadata=meta("netobserv-agent", LABELS),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["list"])],
        )
    )
    await rbac.create_cluster_role_binding(
        client.V1ClusterRoleBinding(
            metadata=meta("netobserv-agent", LABELS),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="netobserv-agent"
            ),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="agent", namespace=NS)],
        )
    )
    selector = "app.kubernetes.io/part-of=netobserv-tui"
    assert len((await rbac.list_cluster_role(label_selector=selector)).items) == 1
    await rbac.delete_collection_cluster_role_binding(label_selector=selector)
    await rbac.delete_collection_cluster_role(label_selector=selector)
    await core.delete_collection_namespaced_secret(NS, label_selector=selector)
    await core.delete_namespaced_service("aggregator", NS)
    await core.delete_namespace(NS)
    assert apiserver.leftovers() == []


async def test_deletecollection_by_label(
    apiserver: ApiServerDouble, core: client.CoreV1Api
) -> None:
    for name in ("a", "b"):
        await core.create_namespaced_pod(NS, pod(name, LABELS))
    await core.create_namespaced_pod(NS, pod("other", {"app": "other"}))
    await core.delete_collection_namespaced_pod(
        NS, label_selector="netobserv.io/capture=c1", body=client.V1DeleteOptions()
    )
    left = await core.list_namespaced_pod(NS)
    assert [p.metadata.name for p in left.items] == ["other"]
    assert ("deletecollection", "v1/pods", NS, None) in apiserver.mutations()


async def test_namespace_deletion_cascades(
    apiserver: ApiServerDouble, api_client: client.ApiClient, core: client.CoreV1Api
) -> None:
    apps = client.AppsV1Api(api_client)
    await core.create_namespaced_service_account(NS, client.V1ServiceAccount(metadata=meta("sa")))
    await core.create_namespaced_secret(NS, client.V1Secret(metadata=meta("s")))
    await core.create_namespaced_pod(NS, pod("p"))
    await apps.create_namespaced_daemon_set(NS, daemonset("agent"))
    await core.create_namespace(client.V1Namespace(metadata=meta("elsewhere")))
    await core.create_namespaced_pod("elsewhere", pod("p"))

    answered = await core.delete_namespace(NS)
    # A real server answers the Namespace; the client reads it as a V1Status (stringified).
    assert answered.kind == "Namespace" and "Terminating" in answered.status
    with pytest.raises(ApiException) as gone:
        await core.read_namespace(NS)
    assert gone.value.status == 404
    assert apiserver.objects(namespace=NS) == []
    assert [p["metadata"]["name"] for p in apiserver.objects("pods")] == ["p"]
    assert apiserver.leftovers() == [
        ("v1/namespaces", None, "elsewhere"),
        ("v1/pods", "elsewhere", "p"),
    ]


async def test_terminating_namespace(apiserver: ApiServerDouble, core: client.CoreV1Api) -> None:
    apiserver.hold_namespace_deletion = True
    await core.delete_namespace(NS)
    assert (await core.read_namespace(NS)).status.phase == "Terminating"
    with pytest.raises(ApiException) as refused:
        await core.create_namespaced_pod(NS, pod("late"))
    assert refused.value.status == 403
    assert "because it is being terminated" in status_body(refused.value)["message"]
    with pytest.raises(ApiException) as twice:
        await core.delete_namespace(NS)
    assert twice.value.status == 409
    apiserver.finish_namespace_deletion(NS)
    with pytest.raises(ApiException) as gone:
        await core.read_namespace(NS)
    assert gone.value.status == 404


# ------------------------------------------------------------------------------- watches


async def test_watch_sees_changes_in_order(core: client.CoreV1Api) -> None:
    listed = await core.list_namespaced_pod(NS)
    await core.create_namespaced_pod(NS, pod("w", {"tier": "web"}))
    await core.patch_namespaced_pod("w", NS, {"metadata": {"labels": {"seen": "yes"}}})
    await core.delete_namespaced_pod("w", NS)
    async with watch.Watch() as w:
        stream = w.stream(
            core.list_namespaced_pod, NS, resource_version=listed.metadata.resource_version
        )
        events = await collect(stream, 3)
    assert [(t, o["metadata"]["name"]) for t, o in events] == [
        ("ADDED", "w"),
        ("MODIFIED", "w"),
        ("DELETED", "w"),
    ]
    assert events[1][1]["metadata"]["labels"] == {"tier": "web", "seen": "yes"}
    versions = [int(o["metadata"]["resourceVersion"]) for _, o in events]
    assert versions == sorted(versions) and len(set(versions)) == 3


async def test_watch_without_version_starts_with_synthetic_added_then_live(
    apiserver: ApiServerDouble, core: client.CoreV1Api
) -> None:
    await core.create_namespaced_pod(NS, pod("old", {"tier": "web"}))
    await core.create_namespaced_pod(NS, pod("db", {"tier": "db"}))
    async with watch.Watch() as w:
        stream = w.stream(core.list_namespaced_pod, NS, label_selector="tier=web")
        first = await collect(stream, 1)
        assert [(t, o["metadata"]["name"]) for t, o in first] == [("ADDED", "old")]
        await apiserver.wait_for(lambda: apiserver.streams("watch") == 1)
        # Leaving and entering the selector reads as DELETED / ADDED.
        await core.patch_namespaced_pod("old", NS, {"metadata": {"labels": {"tier": "x"}}})
        await core.patch_namespaced_pod("db", NS, {"metadata": {"labels": {"tier": "web"}}})
        later = await collect(stream, 2)
    assert [(t, o["metadata"]["name"]) for t, o in later] == [("DELETED", "old"), ("ADDED", "db")]


async def test_watch_from_expired_version_gets_410_then_relists(
    apiserver: ApiServerDouble, core: client.CoreV1Api
) -> None:
    listed = await core.list_namespaced_pod(NS)
    await core.create_namespaced_pod(NS, pod("p1"))
    apiserver.compact()
    async with watch.Watch() as w:
        with pytest.raises(ApiException) as expired:
            await collect(
                w.stream(
                    core.list_namespaced_pod,
                    NS,
                    timeout_seconds=5,
                    resource_version=listed.metadata.resource_version,
                ),
                1,
            )
    assert expired.value.status == 410
    assert "too old resource version" in str(expired.value.reason)

    apiserver.fail_next("watch", "pods", 410)  # injected: arrives as an ERROR event too
    async with watch.Watch() as w:
        with pytest.raises(ApiException) as injected:
            await collect(w.stream(core.list_namespaced_pod, NS, timeout_seconds=5), 1)
    assert injected.value.status == 410

    relisted = await core.list_namespaced_pod(NS)  # what an informer does after a 410
    assert [p.metadata.name for p in relisted.items] == ["p1"]
    await core.create_namespaced_pod(NS, pod("p2"))
    async with watch.Watch() as w:
        events = await collect(
            w.stream(
                core.list_namespaced_pod,
                NS,
                timeout_seconds=5,
                resource_version=relisted.metadata.resource_version,
            ),
            1,
        )
    assert [(t, o["metadata"]["name"]) for t, o in events] == [("ADDED", "p2")]


async def test_watch_timeout_and_bookmark(
    apiserver: ApiServerDouble, core: client.CoreV1Api
) -> None:
    async with watch.Watch() as w:
        stream = w.stream(
            core.list_namespaced_pod, NS, timeout_seconds=0.2, allow_watch_bookmarks=True
        )
        await asyncio.sleep(0)
        task = asyncio.ensure_future(collect(stream, 2))
        await apiserver.wait_for(lambda: apiserver.streams("watch") == 1)
        apiserver.send_bookmark()
        events = await task  # only one arrives: the server ends the watch after 0.2 s
    assert [t for t, _ in events] == ["BOOKMARK"]
    assert events[0][1]["metadata"]["resourceVersion"] == apiserver.resource_version


async def test_watch_of_events_by_field_selector(
    apiserver: ApiServerDouble, core: client.CoreV1Api
) -> None:
    target = await core.create_namespaced_pod(NS, pod("target"))
    await core.create_namespaced_pod(NS, pod("noise"))
    async with watch.Watch() as w:
        stream = w.stream(
            core.list_namespaced_event, NS, field_selector="involvedObject.name=target"
        )
        task = asyncio.ensure_future(collect(stream, 1))
        stored = apiserver.get("pods", "target", NS)
        noise = apiserver.get("pods", "noise", NS)
        assert stored is not None and noise is not None
        apiserver.add_event(noise, "Pulled", "ignored")
        apiserver.add_event(stored, "BackOff", "Back-off restarting", event_type="Warning")
        events = await task
    assert events[0][1]["reason"] == "BackOff"
    assert events[0][1]["involvedObject"]["uid"] == target.metadata.uid


# ------------------------------------------------------------------------------- authorization


async def test_self_subject_access_review(
    apiserver: ApiServerDouble, api_client: client.ApiClient
) -> None:
    apiserver.deny("create", "daemonsets", NS, group="apps", reason="no agents here")
    authz = client.AuthorizationV1Api(api_client)

    async def review(verb: str, resource: str, group: str = "", namespace: str = NS) -> Any:
        return await authz.create_self_subject_access_review(
            client.V1SelfSubjectAccessReview(
                spec=client.V1SelfSubjectAccessReviewSpec(
                    resource_attributes=client.V1ResourceAttributes(
                        verb=verb, resource=resource, group=group, namespace=namespace
                    )
                )
            )
        )

    allowed = await review("create", "pods")
    assert allowed.status.allowed is True
    denied = await review("create", "daemonsets", "apps")
    assert denied.status.allowed is False and denied.status.reason == "no agents here"
    assert (await review("create", "daemonsets", "apps", "other")).status.allowed is True
    assert apiserver.mutations() == []  # a review is not stored


async def test_denied_verb_is_a_403(
    apiserver: ApiServerDouble, api_client: client.ApiClient, core: client.CoreV1Api
) -> None:
    apiserver.deny("create", "clusterrolebindings", reason="ask your cluster admin")
    apiserver.deny("watch", "pods")
    rbac = client.RbacAuthorizationV1Api(api_client)
    binding = client.V1ClusterRoleBinding(
        metadata=meta("b"),
        role_ref=client.V1RoleRef(
            api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="view"
        ),
    )
    with pytest.raises(ApiException) as refused:
        await rbac.create_cluster_role_binding(binding)
    assert refused.value.status == 403 and refused.value.reason == "Forbidden"
    body = status_body(refused.value)
    assert body["reason"] == "Forbidden"
    assert body["message"] == (
        'clusterrolebindings.rbac.authorization.k8s.io is forbidden: User "admin" cannot create '
        'resource "clusterrolebindings" in API group "rbac.authorization.k8s.io" at the cluster '
        "scope: ask your cluster admin"
    )
    # A watch refused: the client reads the Status from the stream and raises.
    await core.list_namespaced_pod(NS)  # list is still allowed
    async with watch.Watch() as w:
        with pytest.raises(ApiException) as no_watch:
            await collect(w.stream(core.list_namespaced_pod, NS, timeout_seconds=1), 1)
    assert no_watch.value.status == 403


async def test_fail_next_once_and_unauthorized(
    apiserver: ApiServerDouble, core: client.CoreV1Api
) -> None:
    apiserver.fail_next("create", "pods", 500, message="etcdserver: request timed out")
    with pytest.raises(ApiException) as failed:
        await core.create_namespaced_pod(NS, pod("p"))
    assert failed.value.status == 500
    assert status_body(failed.value)["message"] == "etcdserver: request timed out"
    await core.create_namespaced_pod(NS, pod("p"))  # once only

    async with client.ApiClient(apiserver.configuration(token="wrong")) as stranger:
        with pytest.raises(ApiException) as unauthorized:
            await client.CoreV1Api(stranger).list_namespace()
    assert unauthorized.value.status == 401


# ------------------------------------------------------------------------------- controllers


async def test_daemonset_pods_come_up_on_two_nodes(
    apiserver: ApiServerDouble, api_client: client.ApiClient, core: client.CoreV1Api
) -> None:
    apiserver.add_node("node-a")
    apiserver.add_node("node-b")
    apiserver.run_controllers(PodOutcome.running(logs="agent started\nattached to eth0\n"))
    apps = client.AppsV1Api(api_client)
    created = await apps.create_namespaced_daemon_set(NS, daemonset("agent"))
    assert created.status.desired_number_scheduled == 0

    async with watch.Watch() as w:  # wait for the rollout the way the product will
        async with asyncio.timeout(1):
            async for event in w.stream(
                apps.list_namespaced_daemon_set, NS, field_selector="metadata.name=agent"
            ):
                status = event["object"].status
                if status.desired_number_scheduled == 2 and status.number_ready == 2:
                    break
    assert status.number_available == 2 and status.updated_number_scheduled == 2
    assert status.observed_generation == created.metadata.generation

    pods = await core.list_namespaced_pod(NS, label_selector="app=agent")
    assert sorted(p.spec.node_name for p in pods.items) == ["node-a", "node-b"]
    for item in pods.items:
        assert item.metadata.owner_references[0].uid == created.metadata.uid
        assert item.metadata.labels["netobserv.io/capture"] == "c1"
        assert item.status.phase == "Running" and item.status.container_statuses[0].ready
        assert item.status.pod_ip == item.status.host_ip  # hostNetwork
    log = await core.read_namespaced_pod_log(pods.items[0].metadata.name, NS, container="agent")
    assert log.splitlines() == ["agent started", "attached to eth0"]
    tail = await core.read_namespaced_pod_log(pods.items[0].metadata.name, NS, tail_lines=1)
    assert tail == "attached to eth0\n"

    await apps.delete_namespaced_daemon_set("agent", NS)  # pods follow (garbage collection)
    assert (await core.list_namespaced_pod(NS)).items == []


async def test_daemonset_pod_stuck_in_image_pull_backoff(
    apiserver: ApiServerDouble, api_client: client.ApiClient, core: client.CoreV1Api
) -> None:
    apiserver.add_node("node-a")
    apiserver.add_node("node-b")

    def outcome(pod: dict[str, Any]) -> PodOutcome:
        if pod["spec"]["nodeName"] == "node-b":
            return PodOutcome.image_pull_backoff()
        return PodOutcome.running(logs="ok\n")

    apiserver.run_controllers(outcome)
    apps = client.AppsV1Api(api_client)
    await apps.create_namespaced_daemon_set(NS, daemonset("agent", image="quay.io/x/agent:nope"))
    await apiserver.settled()

    ds = await apps.read_namespaced_daemon_set_status("agent", NS)
    assert (ds.status.desired_number_scheduled, ds.status.number_ready) == (2, 1)
    assert ds.status.number_unavailable == 1
    stuck = (await core.list_namespaced_pod(NS, field_selector="spec.nodeName=node-b")).items[0]
    assert stuck.status.phase == "Pending"
    waiting = stuck.status.container_statuses[0].state.waiting
    assert waiting.reason == "ImagePullBackOff"
    assert waiting.message == 'Back-off pulling image "quay.io/x/agent:nope"'
    assert not any(c.status == "True" for c in stuck.status.conditions if c.type == "Ready")

    events = await core.list_namespaced_event(
        NS, field_selector=f"involvedObject.name={stuck.metadata.name}"
    )
    reasons = [(e.type, e.reason) for e in events.items]
    assert ("Warning", "Failed") in reasons and ("Normal", "BackOff") in reasons
    failed = next(e for e in events.items if e.message.startswith("Failed to pull image"))
    assert "quay.io/x/agent:nope" in failed.message
    assert failed.involved_object.field_path == "spec.containers{agent}"

    with pytest.raises(ApiException) as no_log:
        await core.read_namespaced_pod_log(stuck.metadata.name, NS)
    assert no_log.value.status == 400
    assert status_body(no_log.value)["message"] == (
        f'container "agent" in pod "{stuck.metadata.name}" is waiting to start: '
        "trying and failing to pull image"
    )
    healthy = (await core.list_namespaced_pod(NS, field_selector="spec.nodeName=node-a")).items[0]
    assert await core.read_namespaced_pod_log(healthy.metadata.name, NS) == "ok\n"


async def test_set_statuses_by_hand(
    apiserver: ApiServerDouble, api_client: client.ApiClient, core: client.CoreV1Api
) -> None:
    apiserver.add_node("node-a")
    await core.create_namespaced_pod(NS, pod("agg"))
    apiserver.set_pod_status(
        NS,
        "agg",
        phase="Pending",
        waiting_reason="ErrImagePull",
        waiting_message="manifest unknown",
    )
    read = await core.read_namespaced_pod_status("agg", NS)
    assert read.status.container_statuses[0].state.waiting.message == "manifest unknown"
    apps = client.AppsV1Api(api_client)
    await apps.create_namespaced_daemon_set(NS, daemonset("agent"))
    apiserver.set_daemonset_status(NS, "agent", desired=3, ready=0)
    ds = await apps.read_namespaced_daemon_set("agent", NS)
    assert (ds.status.desired_number_scheduled, ds.status.number_ready) == (3, 0)
    assert ds.status.number_available is None  # a real server leaves zero counters out


async def test_log_follow(apiserver: ApiServerDouble, core: client.CoreV1Api) -> None:
    await core.create_namespaced_pod(NS, pod("agg"))
    apiserver.set_pod_log(NS, "agg", "line 1\n")
    async with watch.Watch() as w:
        stream = w.stream(core.read_namespaced_pod_log, "agg", NS)
        lines: list[str] = []
        async with asyncio.timeout(1):
            async for line in stream:
                lines.append(line)
                if len(lines) == 1:
                    apiserver.append_pod_log(NS, "agg", "line 2\n")
                    apiserver.end_pod_log(NS, "agg")
    assert lines == ["line 1\n", "line 2\n"]


# ------------------------------------------------------------------------------- port-forward


@pytest.fixture
async def aggregator() -> AsyncIterator[tuple[str, int]]:
    """A stand-in aggregator: greets, then echoes upper-cased."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"hello from aggregator\n")
            await writer.drain()
            while data := await reader.read(65536):
                writer.write(data.upper())
                await writer.drain()
        except ConnectionError:
            pass  # the forward was cut
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield ("127.0.0.1", server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


async def open_forward(ws_api: WsApiClient, pod_name: str, port: int) -> Any:
    v1 = client.CoreV1Api(ws_api)
    return await v1.connect_get_namespaced_pod_portforward(
        pod_name, NS, ports=port, _preload_content=False
    )


async def read_frames(ws: Any, count: int) -> list[bytes]:
    frames = []
    for _ in range(count):
        message = await ws.receive(timeout=1)
        assert message.type == aiohttp.WSMsgType.BINARY, message
        frames.append(message.data)
    return frames


async def test_portforward_carries_bytes_both_ways(
    apiserver: ApiServerDouble,
    core: client.CoreV1Api,
    ws_api_client: WsApiClient,
    aggregator: tuple[str, int],
) -> None:
    apiserver.add_node("node-a")
    apiserver.put(
        "pods",
        {
            "metadata": {"name": "agg", "namespace": NS},
            "spec": {"nodeName": "node-a", "containers": [{"name": "agg", "image": "agg:1"}]},
        },
    )
    apiserver.forward(NS, "agg", 9000, aggregator)
    async with await open_forward(ws_api_client, "agg", 9000) as ws:
        # First frame of each channel: the port, 2 bytes little-endian.
        assert await read_frames(ws, 2) == [b"\x00\x28\x23", b"\x01\x28\x23"]
        assert await read_frames(ws, 1) == [b"\x00hello from aggregator\n"]
        payload = bytes(range(256)) * 64
        await ws.send_bytes(b"\x00" + payload)
        received = b""
        while len(received) < len(payload):
            (frame,) = await read_frames(ws, 1)
            assert frame[0] == 0
            received += frame[1:]
        assert received == payload.upper()
    await apiserver.wait_for(lambda: apiserver.streams("portforward") == 0)


async def test_portforward_errors(
    apiserver: ApiServerDouble, core: client.CoreV1Api, ws_api_client: WsApiClient
) -> None:
    apiserver.add_node("node-a")
    apiserver.put(
        "pods",
        {
            "metadata": {"name": "agg", "namespace": NS},
            "spec": {"nodeName": "node-a", "containers": [{"name": "agg", "image": "agg:1"}]},
        },
    )
    async with await open_forward(ws_api_client, "agg", 9000) as ws:  # nothing listens
        frames = await read_frames(ws, 3)
        assert frames[2][0] == 1 and b"connection refused" in frames[2]
        assert (await ws.receive(timeout=1)).type == aiohttp.WSMsgType.CLOSE
    with pytest.raises(aiohttp.WSServerHandshakeError) as missing:
        async with await open_forward(ws_api_client, "nope", 9000):
            pass
    assert missing.value.status == 404
    apiserver.deny("create", "pods/portforward", NS)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with await open_forward(ws_api_client, "agg", 9000):
            pass
    assert refused.value.status == 403


# ------------------------------------------------------------------------------- lost server


async def test_dropping_connections_cuts_watch_and_portforward(
    apiserver: ApiServerDouble,
    core: client.CoreV1Api,
    ws_api_client: WsApiClient,
    aggregator: tuple[str, int],
) -> None:
    apiserver.add_node("node-a")
    apiserver.put(
        "pods",
        {
            "metadata": {"name": "agg", "namespace": NS},
            "spec": {"nodeName": "node-a", "containers": [{"name": "agg", "image": "agg:1"}]},
        },
    )
    apiserver.forward(NS, "agg", 9000, aggregator)
    async with watch.Watch() as w, await open_forward(ws_api_client, "agg", 9000) as ws:
        await read_frames(ws, 3)
        stream = w.stream(core.list_namespaced_pod, NS)  # no timeout: it would retry on EOF
        assert [t for t, _ in await collect(stream, 1)] == ["ADDED"]
        await apiserver.wait_for(lambda: apiserver.streams() == 2)
        assert apiserver.drop_connections() == 2
        with pytest.raises(aiohttp.ClientPayloadError):
            await collect(stream, 1)
        closed = await ws.receive(timeout=1)
        assert closed.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


async def test_restart_on_same_port_keeps_objects(
    apiserver: ApiServerDouble, core: client.CoreV1Api
) -> None:
    await core.create_namespaced_pod(NS, pod("p"))
    port = apiserver.port
    await apiserver.stop(cancel_controllers=False)
    with pytest.raises(aiohttp.ClientConnectorError):
        await core.list_namespaced_pod(NS)
    await apiserver.start()
    assert apiserver.port == port
    assert [p.metadata.name for p in (await core.list_namespaced_pod(NS)).items] == ["p"]


# ------------------------------------------------------------------------------- kubeconfig


async def test_kubeconfig_with_chosen_context(apiserver: ApiServerDouble, kubeconfig: Path) -> None:
    contexts, current = config.list_kube_config_contexts(str(kubeconfig))
    assert [c["name"] for c in contexts] == ["double", "double-viewer"]
    assert current is not None and current["name"] == "double"
    apiserver.deny("list", "pods", user="viewer", reason="viewers see namespaces only")

    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(kubeconfig),
        context="double-viewer",
        client_configuration=configuration,
        persist_config=False,
    )
    assert configuration.host == apiserver.url
    async with client.ApiClient(configuration) as viewer:
        v1 = client.CoreV1Api(viewer)
        assert "default" in [n.metadata.name for n in (await v1.list_namespace()).items]
        with pytest.raises(ApiException) as refused:
            await v1.list_namespaced_pod("observability")
        assert refused.value.status == 403
        assert 'User "viewer"' in status_body(refused.value)["message"]

    async with await config.new_client_from_config(
        config_file=str(kubeconfig), persist_config=False
    ) as admin:
        await client.CoreV1Api(admin).list_namespaced_pod("default")
    assert [r.user for r in apiserver.requests] == ["viewer", "viewer", "admin"]


async def test_discovery_version_and_openshift_scc() -> None:
    async with ApiServerDouble(openshift=True) as openshift, openshift.api_client() as api:
        version = await client.VersionApi(api).get_code()
        assert version.major == "1"
        groups = await client.ApisApi(api).get_api_versions()
        assert "security.openshift.io" in [g.name for g in groups.groups]
        resources = await client.AppsV1Api(api).get_api_resources()
        assert "daemonsets" in [r.name for r in resources.resources]
        custom = client.CustomObjectsApi(api)
        scc = {
            "apiVersion": "security.openshift.io/v1",
            "kind": "SecurityContextConstraints",
            "metadata": {"name": "netobserv-agent", "labels": LABELS},
            "allowPrivilegedContainer": True,
        }
        await custom.create_cluster_custom_object(
            "security.openshift.io", "v1", "securitycontextconstraints", scc
        )
        await custom.delete_cluster_custom_object(
            "security.openshift.io", "v1", "securitycontextconstraints", "netobserv-agent"
        )
        assert openshift.leftovers() == []
    async with ApiServerDouble() as vanilla, vanilla.api_client() as api:
        groups = await client.ApisApi(api).get_api_versions()
        assert "security.openshift.io" not in [g.name for g in groups.groups]
        with pytest.raises(ApiException) as absent:
            await client.CustomObjectsApi(api).list_cluster_custom_object(
                "security.openshift.io", "v1", "securitycontextconstraints"
            )
        assert absent.value.status == 404


# ------------------------------------------------------------------------------- RBAC

SA_USER = f"system:serviceaccount:{NS}:reader"
RBAC_GROUP = "rbac.authorization.k8s.io"


def role_ref(kind: str, name: str) -> client.V1RoleRef:
    return client.V1RoleRef(api_group=RBAC_GROUP, kind=kind, name=name)


def rule(
    groups: list[str], resources: list[str], verbs: list[str], names: list[str] | None = None
) -> client.V1PolicyRule:
    return client.V1PolicyRule(
        api_groups=groups, resources=resources, verbs=verbs, resource_names=names
    )


async def forbidden(call: Any) -> str:
    """The message of the 403 that ``call`` (an awaitable) gets."""
    with pytest.raises(ApiException) as refused:
        await call
    assert refused.value.status == 403
    body = status_body(refused.value)
    assert body["reason"] == "Forbidden"
    return str(body["message"])


@pytest.fixture
async def reader(
    apiserver: ApiServerDouble, api_client: client.ApiClient, core: client.CoreV1Api
) -> AsyncIterator[client.CoreV1Api]:
    """ServiceAccount ``reader`` of NS with: a ClusterRole (list/watch pods everywhere, get
    pods/log) bound cluster-wide; a Role (one named configmap) bound in NS to the account
    (its namespace left to the binding's); a ClusterRole (list services) bound in NS to the
    group of NS's service accounts."""
    rbac = client.RbacAuthorizationV1Api(api_client)
    await core.create_namespaced_service_account(
        NS, client.V1ServiceAccount(metadata=meta("reader"))
    )
    await core.create_namespace(client.V1Namespace(metadata=meta("other")))
    await core.create_namespaced_pod(NS, pod("p"))
    await core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=meta("settings")))
    await core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=meta("private")))
    await rbac.create_cluster_role(
        client.V1ClusterRole(
            metadata=meta("pod-reader"),
            rules=[rule([""], ["pods"], ["list", "watch"]), rule([""], ["pods/log"], ["get"])],
        )
    )
    await rbac.create_cluster_role_binding(
        client.V1ClusterRoleBinding(
            metadata=meta("pod-reader"),
            role_ref=role_ref("ClusterRole", "pod-reader"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=NS)],
        )
    )
    await rbac.create_namespaced_role(
        NS,
        client.V1Role(
            metadata=meta("settings"),
            rules=[rule([""], ["configmaps"], ["get", "list", "watch"], ["settings"])],
        ),
    )
    await rbac.create_namespaced_role_binding(
        NS,
        client.V1RoleBinding(
            metadata=meta("settings"),
            role_ref=role_ref("Role", "settings"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="reader")],
        ),
    )
    await rbac.create_cluster_role(
        client.V1ClusterRole(
            metadata=meta("service-lister"), rules=[rule([""], ["services"], ["list"])]
        )
    )
    await rbac.create_namespaced_role_binding(
        NS,
        client.V1RoleBinding(
            metadata=meta("services"),
            role_ref=role_ref("ClusterRole", "service-lister"),
            subjects=[
                client.RbacV1Subject(
                    kind="Group", name=f"system:serviceaccounts:{NS}", api_group=RBAC_GROUP
                )
            ],
        ),
    )
    apiserver.set_pod_log(NS, "p", "hello\n")
    async with apiserver.service_account_api_client(NS, "reader") as api:
        yield client.CoreV1Api(api)


async def test_service_account_requests_are_checked_against_rbac(
    apiserver: ApiServerDouble, reader: client.CoreV1Api
) -> None:
    # Allowed: by the ClusterRoleBinding, in every namespace and across them.
    assert [p.metadata.name for p in (await reader.list_pod_for_all_namespaces()).items] == ["p"]
    await reader.list_namespaced_pod("other")
    assert await reader.read_namespaced_pod_log("p", NS) == "hello\n"
    # A verb the rule does not list, and a subresource that is not the resource.
    assert await forbidden(reader.read_namespaced_pod("p", NS)) == (
        f'pods "p" is forbidden: User "{SA_USER}" cannot get resource "pods" in API group "" '
        f'in the namespace "{NS}"'
    )
    assert await forbidden(reader.read_namespaced_pod_status("p", NS)) == (
        f'pods "p" is forbidden: User "{SA_USER}" cannot get resource "pods/status" in API '
        f'group "" in the namespace "{NS}"'
    )
    assert await forbidden(reader.create_namespaced_pod(NS, pod("q"))) == (
        f'pods is forbidden: User "{SA_USER}" cannot create resource "pods" in API group "" '
        f'in the namespace "{NS}"'
    )
    assert await forbidden(reader.list_node()) == (
        f'nodes is forbidden: User "{SA_USER}" cannot list resource "nodes" in API group "" '
        "at the cluster scope"
    )
    # resourceNames: only a request that names the object (a list names one only through
    # a metadata.name field selector, as on a real server).
    await reader.read_namespaced_config_map("settings", NS)
    listed = await reader.list_namespaced_config_map(NS, field_selector="metadata.name=settings")
    assert [c.metadata.name for c in listed.items] == ["settings"]
    assert await forbidden(reader.read_namespaced_config_map("private", NS)) == (
        f'configmaps "private" is forbidden: User "{SA_USER}" cannot get resource "configmaps" '
        f'in API group "" in the namespace "{NS}"'
    )
    assert await forbidden(reader.list_namespaced_config_map(NS)) == (
        f'configmaps is forbidden: User "{SA_USER}" cannot list resource "configmaps" in API '
        f'group "" in the namespace "{NS}"'
    )
    # A RoleBinding grants in its own namespace only; a Group subject reaches the account.
    await reader.list_namespaced_service(NS)
    assert await forbidden(reader.list_namespaced_service("other")) == (
        f'services is forbidden: User "{SA_USER}" cannot list resource "services" in API group '
        '"" in the namespace "other"'
    )
    # A request on a Namespace is in that namespace (RequestInfo), as real messages say.
    assert await forbidden(reader.read_namespace("other")) == (
        f'namespaces "other" is forbidden: User "{SA_USER}" cannot get resource "namespaces" '
        'in API group "" in the namespace "other"'
    )
    refused = [(r.verb, r.resource, r.namespace) for r in apiserver.requests if r.code == 403]
    assert refused == [
        ("get", "pods", NS),
        ("get", "pods/status", NS),
        ("create", "pods", NS),
        ("list", "nodes", None),
        ("get", "configmaps", NS),
        ("list", "configmaps", NS),
        ("list", "services", "other"),
        ("get", "namespaces", None),
    ]


async def test_wildcards_and_missing_roles(
    apiserver: ApiServerDouble, api_client: client.ApiClient, reader: client.CoreV1Api
) -> None:
    rbac = client.RbacAuthorizationV1Api(api_client)
    await rbac.create_cluster_role(
        client.V1ClusterRole(
            metadata=meta("wild"),
            rules=[rule(["*"], ["*/status"], ["get"]), rule(["apps"], ["*"], ["*"])],
        )
    )
    for name, role in (("wild", "wild"), ("ghost", "ghost")):
        await rbac.create_cluster_role_binding(
            client.V1ClusterRoleBinding(
                metadata=meta(name),
                role_ref=role_ref("ClusterRole", role),
                subjects=[client.RbacV1Subject(kind="User", name=SA_USER, api_group=RBAC_GROUP)],
            )
        )
    await reader.read_namespaced_pod_status("p", NS)  # */status
    apps = client.AppsV1Api(reader.api_client)
    await apps.create_namespaced_daemon_set(NS, daemonset("agent"))  # apps/*, every verb
    await apps.delete_namespaced_daemon_set("agent", NS)
    # Denied, with the binding whose role is missing named as the real authorizer does.
    assert await forbidden(reader.delete_namespaced_pod("p", NS)) == (
        f'pods "p" is forbidden: User "{SA_USER}" cannot delete resource "pods" in API group '
        f'"" in the namespace "{NS}": RBAC: clusterrole.rbac.authorization.k8s.io "ghost" '
        "not found"
    )
    # Everything the admin does is allowed as before; RBAC can be switched on for a user.
    await client.CoreV1Api(api_client).delete_namespaced_pod("p", NS)
    apiserver.rbac_users.add("admin")
    assert await forbidden(client.CoreV1Api(api_client).list_node()) == (
        'nodes is forbidden: User "admin" cannot list resource "nodes" in API group "" at the '
        "cluster scope"
    )


async def test_self_subject_access_review_of_a_service_account(
    apiserver: ApiServerDouble, reader: client.CoreV1Api
) -> None:
    authz = client.AuthorizationV1Api(reader.api_client)

    async def review(
        verb: str, resource: str, namespace: str = "", name: str = "", subresource: str = ""
    ) -> Any:
        answer = await authz.create_self_subject_access_review(
            client.V1SelfSubjectAccessReview(
                spec=client.V1SelfSubjectAccessReviewSpec(
                    resource_attributes=client.V1ResourceAttributes(
                        verb=verb,
                        resource=resource,
                        namespace=namespace or None,
                        name=name or None,
                        subresource=subresource or None,
                    )
                )
            )
        )
        return (answer.status.allowed, answer.status.reason)

    assert await review("watch", "pods") == (
        True,
        'RBAC: allowed by ClusterRoleBinding "pod-reader" of ClusterRole "pod-reader" to '
        f'ServiceAccount "reader/{NS}"',
    )
    assert await review("get", "pods", NS, "p", "log") == (
        True,
        'RBAC: allowed by ClusterRoleBinding "pod-reader" of ClusterRole "pod-reader" to '
        f'ServiceAccount "reader/{NS}"',
    )
    assert await review("get", "configmaps", NS, "settings") == (
        True,
        f'RBAC: allowed by RoleBinding "settings/{NS}" of Role "settings" to ServiceAccount '
        f'"reader/{NS}"',
    )
    assert await review("get", "configmaps", NS, "private") == (False, None)
    assert await review("get", "pods", NS, "p") == (False, None)
    assert await review("list", "services", "other") == (False, None)
    # The answers agree with what the requests get.
    await forbidden(reader.read_namespaced_pod("p", NS))
    paths = await authz.create_self_subject_access_review(
        client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                non_resource_attributes=client.V1NonResourceAttributes(path="/metrics", verb="get")
            )
        )
    )
    assert paths.status.allowed is False


async def test_service_account_tokens_live_with_their_account(
    apiserver: ApiServerDouble, api_client: client.ApiClient, core: client.CoreV1Api
) -> None:
    await core.create_namespaced_service_account(NS, client.V1ServiceAccount(metadata=meta("bot")))
    secret = await core.create_namespaced_secret(
        NS,
        client.V1Secret(
            metadata=client.V1ObjectMeta(
                name="bot-token", annotations={"kubernetes.io/service-account.name": "bot"}
            ),
            type="kubernetes.io/service-account-token",
        ),
    )
    account = await core.read_namespaced_service_account("bot", NS)
    assert secret.metadata.annotations["kubernetes.io/service-account.uid"] == account.metadata.uid
    assert base64.b64decode(secret.data["namespace"]).decode() == NS
    token = base64.b64decode(secret.data["token"]).decode()
    async with apiserver.api_client(token) as bot:
        # Authenticated as the account (no binding: nothing allowed but asking).
        message = await forbidden(client.CoreV1Api(bot).list_namespaced_pod(NS))
        assert f'User "system:serviceaccount:{NS}:bot"' in message
        await core.delete_namespaced_secret("bot-token", NS)
        with pytest.raises(ApiException) as revoked:
            await client.CoreV1Api(bot).list_namespaced_pod(NS)
        assert revoked.value.status == 401
    async with apiserver.service_account_api_client(NS, "bot") as bot:
        await forbidden(client.CoreV1Api(bot).list_namespaced_pod(NS))
        await core.delete_namespaced_service_account("bot", NS)
        with pytest.raises(ApiException) as gone:
            await client.CoreV1Api(bot).list_namespaced_pod(NS)
        assert gone.value.status == 401


# ------------------------------------------------------------------------------- deletion


async def test_namespace_deletion_that_takes_time(
    apiserver: ApiServerDouble, api_client: client.ApiClient, core: client.CoreV1Api
) -> None:
    apiserver.namespace_deletion_delay = 0.3
    await core.create_namespaced_pod(NS, pod("p"))
    await core.create_namespaced_secret(NS, client.V1Secret(metadata=meta("s")))
    async with watch.Watch() as w:
        events = w.stream(
            core.list_namespace, field_selector=f"metadata.name={NS}", timeout_seconds=5
        )
        assert [t for t, _ in await collect(events, 1)] == ["ADDED"]
        answered = await core.delete_namespace(NS)
        assert "Terminating" in answered.status
        terminating = await core.read_namespace(NS)
        assert terminating.metadata.deletion_timestamp is not None
        assert [(c.type, c.status, c.reason) for c in terminating.status.conditions] == [
            ("NamespaceDeletionDiscoveryFailure", "False", "ResourcesDiscovered"),
            ("NamespaceDeletionGroupVersionParsingFailure", "False", "ParsedGroupVersions"),
            ("NamespaceDeletionContentFailure", "False", "ContentDeleted"),
            ("NamespaceContentRemaining", "False", "ContentRemoved"),
            ("NamespaceFinalizersRemaining", "False", "ContentHasNoFinalizer"),
        ]
        assert apiserver.objects(namespace=NS) == []  # its contents went at once
        assert await forbidden(core.create_namespaced_pod(NS, pod("late"))) == (
            f'pods "late" is forbidden: unable to create new content in namespace {NS} because '
            "it is being terminated"
        )
        # Then the namespace itself goes, on its own.
        seen = await collect(events, 2, timeout=3)
    assert [(t, o["status"]["phase"]) for t, o in seen] == [
        ("MODIFIED", "Terminating"),
        ("DELETED", "Terminating"),
    ]
    assert apiserver.get("namespaces", NS) is None


# ------------------------------------------------------------------------------- workloads


async def test_workload_controllers_name_label_and_own_their_objects(
    apiserver: ApiServerDouble, api_client: client.ApiClient, core: client.CoreV1Api
) -> None:
    apiserver.add_node("node-a")
    apiserver.run_controllers(PodOutcome.running())
    apps, batch = client.AppsV1Api(api_client), client.BatchV1Api(api_client)
    template = client.V1PodTemplateSpec(
        metadata=meta("", {"app": "web"}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="main", image="web:1")]),
    )
    deployment = await apps.create_namespaced_deployment(
        NS,
        client.V1Deployment(
            metadata=meta("web"),
            spec=client.V1DeploymentSpec(
                replicas=2,
                selector=client.V1LabelSelector(match_labels={"app": "web"}),
                template=template,
            ),
        ),
    )
    await apps.create_namespaced_stateful_set(
        NS,
        client.V1StatefulSet(
            metadata=meta("db"),
            spec=client.V1StatefulSetSpec(
                replicas=2,
                service_name="db",
                selector=client.V1LabelSelector(match_labels={"app": "web"}),
                template=template,
            ),
        ),
    )
    job_spec = client.V1JobSpec(
        template=client.V1PodTemplateSpec(
            spec=client.V1PodSpec(
                restart_policy="Never",
                containers=[client.V1Container(name="main", image="job:1")],
            )
        )
    )
    job = await batch.create_namespaced_job(
        NS, client.V1Job(metadata=meta("migrate"), spec=job_spec)
    )
    assert job.spec.selector.match_labels == {
        "batch.kubernetes.io/controller-uid": job.metadata.uid
    }
    assert job.spec.template.metadata.labels["batch.kubernetes.io/job-name"] == "migrate"
    await batch.create_namespaced_cron_job(
        NS,
        client.V1CronJob(
            metadata=meta("backup"),
            spec=client.V1CronJobSpec(
                schedule="0 0 * * *", job_template=client.V1JobTemplateSpec(spec=job_spec)
            ),
        ),
    )
    made = apiserver.run_cronjob(NS, "backup", scheduled=datetime(2025, 1, 17, tzinfo=UTC))
    assert made["metadata"]["name"] == "backup-28951200"
    await apiserver.settled()

    def owner(obj: dict[str, Any]) -> tuple[str, str]:
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref["controller"] is True and ref["blockOwnerDeletion"] is True
        return ref["kind"], ref["name"]

    (rs,) = apiserver.objects("replicasets", NS)
    digest = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"web-{digest}" and 0 < len(digest) <= 10
    assert set(digest) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert owner(rs) == ("Deployment", "web")
    assert rs["metadata"]["ownerReferences"][0]["uid"] == deployment.metadata.uid
    jobs = {
        j["metadata"]["name"]: owner(j)
        for j in apiserver.objects("jobs", NS)
        if j["metadata"].get("ownerReferences")
    }
    assert jobs == {"backup-28951200": ("CronJob", "backup")}
    cronjob = apiserver.get("cronjobs", "backup", NS)
    assert cronjob is not None and cronjob["status"]["active"][0]["name"] == "backup-28951200"
    pods = apiserver.objects("pods", NS)
    owners = sorted(owner(p) for p in pods)
    assert owners == [
        ("Job", "backup-28951200"),
        ("Job", "migrate"),
        ("ReplicaSet", f"web-{digest}"),
        ("ReplicaSet", f"web-{digest}"),
        ("StatefulSet", "db"),
        ("StatefulSet", "db"),
    ]
    names = {p["metadata"]["name"] for p in pods}
    assert {"db-0", "db-1"} <= names
    assert all(p["status"]["phase"] == "Running" and p["status"]["podIP"] for p in pods)
    db0 = next(p for p in pods if p["metadata"]["name"] == "db-0")
    assert db0["spec"]["hostname"] == "db-0" and db0["spec"]["subdomain"] == "db"
    assert db0["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] == "db-0"
    # Deleting the Deployment takes its ReplicaSet and their pods (garbage collection).
    await apps.delete_namespaced_deployment("web", NS)
    assert apiserver.objects("replicasets", NS) == []
    assert sorted(owner(p)[0] for p in apiserver.objects("pods", NS)) == [
        "Job",
        "Job",
        "StatefulSet",
        "StatefulSet",
    ]


async def test_a_job_must_not_restart_always(
    api_client: client.ApiClient, core: client.CoreV1Api
) -> None:
    job = client.V1Job(
        metadata=meta("bad"),
        spec=client.V1JobSpec(
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(containers=[client.V1Container(name="m", image="i")])
            )
        ),
    )
    with pytest.raises(ApiException) as invalid:
        await client.BatchV1Api(api_client).create_namespaced_job(NS, job)
    assert invalid.value.status == 422
    assert status_body(invalid.value)["message"] == (
        'Job.batch "bad" is invalid: spec.template.spec.restartPolicy: Unsupported value: '
        '"Always": supported values: "OnFailure", "Never"'
    )
