"""Least privilege, proven: the aggregator's enrichment runs as the ServiceAccount of
deploy/rbac.yaml against the API server double, which enforces RBAC for ServiceAccounts.

The manifests are rendered as a capture renders them (``manifests.render``) and created
through the product's own apply path (``objects.apply``); the enrichment (``InventoryWatch``,
then the ``python -m netobserv_tui.aggregator`` process) authenticates with a token of the
rendered ServiceAccount, so every request it makes is checked against the rendered
ClusterRole and ClusterRoleBinding.  The tests hold both directions:

* **nothing missing**: the enrichment gets its exact results, and without any one permission
  of the role it fails (never ready) or degrades (no watch) with the server's 403 in its
  problem;
* **nothing extra**: the set of (group, resource, verb) its requests use is exactly the set the
  role grants, so an unneeded permission (``get`` used to be one) fails a test; a request
  outside the role is refused.

The agents share the ServiceAccount but get no token at all: they need no rule.  The
OpenShift-only ``use`` rule is exercised by SCC admission, which asks the authorizer the
question a SelfSubjectAccessReview asks.
"""

from __future__ import annotations

import ast
import asyncio
import copy
import dataclasses
import json
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
import yaml
from apiserver_double import ApiServerDouble
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from test_enrich import (
    EXPECTED,
    check_files,
    check_workload_owners,
    flow_records,
    run_process,
    seed,
    send,
    until,
    watching,
    workloads,
)

from netobserv_tui.aggregator.enrich import Enricher, InventoryWatch
from netobserv_tui.aggregator.server import Aggregator
from netobserv_tui.k8s.manifests import (
    AGGREGATOR_NAME,
    SERVICE_ACCOUNT_NAME,
    DeployOptions,
    cluster_scoped_name,
    render,
)
from netobserv_tui.k8s.objects import apply
from netobserv_tui.k8s.preflight import NEEDED

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = DeployOptions(capture_id="rbac1", token="enrich-t0ken", image="registry.test/nobs:1")
NS = OPTIONS.namespace
ROLE = cluster_scoped_name(NS)
SA_USER = f"system:serviceaccount:{NS}:{SERVICE_ACCOUNT_NAME}"
ALLOWED_BY = (
    f'RBAC: allowed by ClusterRoleBinding "{ROLE}" of ClusterRole "{ROLE}" to ServiceAccount '
    f'"{SERVICE_ACCOUNT_NAME}/{NS}"'
)
#: The inventory's kind for each resource the role may grant.
KIND = {
    "pods": "Pod",
    "services": "Service",
    "nodes": "Node",
    "replicasets": "ReplicaSet",
    "jobs": "Job",
}

Permission = tuple[str, str, str]  # (API group, resource, verb)


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {obj["kind"]: obj for obj in objects}


def permissions(rules: list[dict[str, Any]]) -> set[Permission]:
    """What rules without resourceNames grant, one (group, resource, verb) at a time."""
    return {
        (group, resource, verb)
        for rule in rules
        if not rule.get("resourceNames")
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def without(rules: list[dict[str, Any]], permission: Permission) -> list[dict[str, Any]]:
    """``rules`` with one (group, resource, verb) taken out, everything else kept."""
    group, resource, verb = permission
    kept: list[dict[str, Any]] = []
    for rule in rules:
        if group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]:
            others = [r for r in rule["resources"] if r != resource]
            if others:
                kept.append({**rule, "resources": others})
            verbs = [v for v in rule["verbs"] if v != verb]
            if verbs:
                kept.append({**rule, "resources": [resource], "verbs": verbs})
        else:
            kept.append(rule)
    return kept


RULES = by_kind(render(OPTIONS))["ClusterRole"]["rules"]
GRANTED = sorted(permissions(RULES))


def forbidden_message(
    verb: str, resource: str, group: str, namespace: str = "", name: str = ""
) -> str:
    """The message of a real server's 403 for the aggregator's ServiceAccount."""
    qualified = f"{resource.split('/')[0]}.{group}" if group else resource.split("/")[0]
    subject = f'{qualified} "{name}"' if name else qualified
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    return (
        f'{subject} is forbidden: User "{SA_USER}" cannot {verb} resource "{resource}" in API '
        f'group "{group}" {scope}'
    )


async def refused(call: Awaitable[Any]) -> str:
    with pytest.raises(ApiException) as caught:
        await call
    assert caught.value.status == 403, caught.value
    return str(json.loads(caught.value.body)["message"])


def sa_requests(apiserver: ApiServerDouble) -> list[Any]:
    return [r for r in apiserver.requests if r.user == SA_USER]


# ------------------------------------------------------------------------------- nothing missing


async def test_enrichment_as_the_aggregator_service_account(
    apiserver: ApiServerDouble, api_client: client.ApiClient, tmp_path: Path
) -> None:
    await seed(apiserver)
    await apply(api_client, render(OPTIONS))
    async with (
        apiserver.service_account_api_client(NS, SERVICE_ACCOUNT_NAME) as sa,
        watching(sa) as watch,
    ):
        inventory = watch.inventory
        assert {ip: inventory.lookup(ip) for ip in EXPECTED} == EXPECTED
        # Every kind of owner, made while the aggregator watches.
        await workloads(apiserver, api_client)
        await check_workload_owners(apiserver, inventory)
        aggregator = Aggregator(tmp_path / "out", OPTIONS.token, enricher=Enricher(inventory))
        await aggregator.start()
        try:
            await asyncio.to_thread(send, aggregator.port, flow_records())
        finally:
            summary = await aggregator.stop()
        assert watch.failures == dict.fromkeys(KIND.values(), 0)
    check_files(summary["files"])
    # Nothing refused, and every permission of the role used: none is missing, none extra.
    mine = sa_requests(apiserver)
    assert [r.as_tuple() for r in mine if not r.ok] == []
    assert sorted({(r.group, r.resource, r.verb) for r in mine}) == GRANTED


async def test_aggregator_process_as_the_service_account(
    apiserver: ApiServerDouble, api_client: client.ApiClient, tmp_path: Path
) -> None:
    """What the aggregator pod runs, with the rendered ServiceAccount's credentials."""
    await seed(apiserver)
    await apply(api_client, render(OPTIONS))
    kubeconfig = apiserver.write_service_account_kubeconfig(
        tmp_path / "kubeconfig", NS, SERVICE_ACCOUNT_NAME
    )
    closed, err = await run_process(
        tmp_path, "--enrich", "kubernetes", "--kubeconfig", str(kubeconfig)
    )
    # The seed, plus the capture's own aggregator pod and Service.
    assert (
        "Kubernetes enrichment on: 10 pod(s), 4 service(s), 2 node(s), 2 replicaset(s), 2 job(s)"
    ) in err
    check_files(closed["files"])
    mine = sa_requests(apiserver)
    assert mine and [r.as_tuple() for r in mine if not r.ok] == []
    assert {(r.group, r.resource, r.verb) for r in mine} == set(GRANTED)


@pytest.mark.parametrize("permission", GRANTED, ids=["-".join(p[::-1]).strip("-") for p in GRANTED])
async def test_without_any_one_permission_enrichment_breaks_and_says_why(
    apiserver: ApiServerDouble, api_client: client.ApiClient, permission: Permission
) -> None:
    group, resource, verb = permission
    objects = render(OPTIONS)
    role = by_kind(objects)["ClusterRole"]
    role["rules"] = without(role["rules"], permission)
    assert permissions(role["rules"]) == set(GRANTED) - {permission}
    await seed(apiserver)
    await apply(api_client, objects)
    kind = KIND[resource]
    problem = f"{kind}: HTTP 403: {forbidden_message(verb, resource, group)}"
    async with (
        apiserver.service_account_api_client(NS, SERVICE_ACCOUNT_NAME) as sa,
        InventoryWatch(sa, backoff=0.05, max_backoff=0.1) as watch,
    ):
        if verb == "watch":
            # Listed once (enrichment starts), then never follows changes: degraded.
            assert await watch.wait_ready(5)
        await until(lambda: watch.problem is not None and watch.failures[kind] >= 2, "the refusals")
        assert watch.problem == problem
        if verb == "list":
            # Never listed, so never ready: the aggregator runs without enrichment.
            assert watch.lists[kind] == 0 and not watch.ready.is_set()
        else:
            assert watch.lists == dict.fromkeys(KIND.values(), 1)
            assert watch.events[kind] == 0
    codes = {r.code for r in sa_requests(apiserver) if (r.resource, r.verb) == (resource, verb)}
    assert codes == {403}


async def test_without_the_jobs_rule_the_aggregator_says_enrichment_is_off(
    apiserver: ApiServerDouble, api_client: client.ApiClient, tmp_path: Path
) -> None:
    """The user-visible side of a missing rule: the aggregator's log names the refusal."""
    objects = render(OPTIONS)
    role = by_kind(objects)["ClusterRole"]
    role["rules"] = [r for r in role["rules"] if "batch" not in r["apiGroups"]]
    await seed(apiserver)
    await apply(api_client, objects)
    kubeconfig = apiserver.write_service_account_kubeconfig(
        tmp_path / "kubeconfig", NS, SERVICE_ACCOUNT_NAME
    )
    closed, err = await run_process(
        tmp_path, "--enrich", "kubernetes", "--kubeconfig", str(kubeconfig), "--enrich-timeout", "1"
    )
    assert (
        "Kubernetes enrichment off: the objects could not be listed within 1 s (Job: HTTP 403: "
        + forbidden_message("list", "jobs", "batch")
        + ")"
    ) in err


# ------------------------------------------------------------------------------- nothing extra


async def test_requests_outside_the_role_are_refused(
    apiserver: ApiServerDouble, api_client: client.ApiClient
) -> None:
    await apply(api_client, render(OPTIONS))
    async with apiserver.service_account_api_client(NS, SERVICE_ACCOUNT_NAME) as sa:
        core, apps = client.CoreV1Api(sa), client.AppsV1Api(sa)
        batch, rbac = client.BatchV1Api(sa), client.RbacAuthorizationV1Api(sa)
        await core.list_pod_for_all_namespaces()  # inside
        outside = [
            (
                core.read_namespaced_pod(AGGREGATOR_NAME, NS),
                forbidden_message("get", "pods", "", NS, AGGREGATOR_NAME),
            ),
            (
                core.read_namespaced_pod_log(AGGREGATOR_NAME, NS),
                forbidden_message("get", "pods/log", "", NS, AGGREGATOR_NAME),
            ),
            (core.read_node("node-a"), forbidden_message("get", "nodes", "", "", "node-a")),
            (core.list_namespaced_secret(NS), forbidden_message("list", "secrets", "", NS)),
            (
                core.list_config_map_for_all_namespaces(),
                forbidden_message("list", "configmaps", ""),
            ),
            (core.list_namespace(), forbidden_message("list", "namespaces", "")),
            (
                apps.list_deployment_for_all_namespaces(),
                forbidden_message("list", "deployments", "apps"),
            ),
            (
                batch.list_cron_job_for_all_namespaces(),
                forbidden_message("list", "cronjobs", "batch"),
            ),
            (
                core.create_namespaced_pod(
                    NS,
                    {
                        "metadata": {"name": "x"},
                        "spec": {"containers": [{"name": "x", "image": "x"}]},
                    },
                ),
                forbidden_message("create", "pods", "", NS),
            ),
            (
                core.delete_namespaced_service("netobserv-aggregator", NS),
                forbidden_message("delete", "services", "", NS, "netobserv-aggregator"),
            ),
            (
                rbac.list_cluster_role(),
                forbidden_message("list", "clusterroles", "rbac.authorization.k8s.io"),
            ),
        ]
        for call, message in outside:
            assert await refused(call) == message

        # And a SelfSubjectAccessReview by the account answers the same.
        authz = client.AuthorizationV1Api(sa)

        async def review(group: str, resource: str, verb: str, name: str = "") -> Any:
            answer = await authz.create_self_subject_access_review(
                client.V1SelfSubjectAccessReview(
                    spec=client.V1SelfSubjectAccessReviewSpec(
                        resource_attributes=client.V1ResourceAttributes(
                            group=group, resource=resource, verb=verb, name=name or None
                        )
                    )
                )
            )
            return (answer.status.allowed, answer.status.reason)

        for group, resource, verb in GRANTED:
            assert await review(group, resource, verb) == (True, ALLOWED_BY)
        for group, resource, verb in (
            ("", "pods", "get"),
            ("", "secrets", "list"),
            ("batch", "cronjobs", "list"),
            ("apps", "*", "watch"),
        ):
            assert await review(group, resource, verb) == (False, None)


def test_preflight_asks_the_user_for_everything_the_role_grants() -> None:
    """Creating a ClusterRole takes holding what it grants (RBAC's escalation check)."""
    cluster_wide = {
        (p.group, p.resource, p.verb) for p in NEEDED if not p.namespaced and not p.subresource
    }
    assert set(GRANTED) <= cluster_wide


async def test_the_openshift_use_rule_names_only_the_rendered_scc() -> None:
    options = dataclasses.replace(OPTIONS, openshift=True)
    objects = render(options)
    rules = by_kind(objects)["ClusterRole"]["rules"]
    assert [r for r in rules if r not in RULES] == [
        {
            "apiGroups": ["security.openshift.io"],
            "resources": ["securitycontextconstraints"],
            "resourceNames": [ROLE],
            "verbs": ["use"],
        }
    ]
    async with ApiServerDouble(openshift=True) as server, server.api_client() as admin:
        await apply(admin, objects)
        async with server.service_account_api_client(NS, SERVICE_ACCOUNT_NAME) as sa:
            authz = client.AuthorizationV1Api(sa)

            async def may_use(name: str) -> bool:
                answer = await authz.create_self_subject_access_review(
                    client.V1SelfSubjectAccessReview(
                        spec=client.V1SelfSubjectAccessReviewSpec(
                            resource_attributes=client.V1ResourceAttributes(
                                group="security.openshift.io",
                                resource="securitycontextconstraints",
                                verb="use",
                                name=name or None,
                            )
                        )
                    )
                )
                return bool(answer.status.allowed)

            # SCC admission asks this for the agent pods: only the rendered SCC may be used.
            assert await may_use(ROLE) is True
            assert await may_use("privileged") is False
            assert await may_use("") is False


def test_the_agents_run_without_an_api_token() -> None:
    """The agents share the ServiceAccount (for OpenShift's SCC) but get no token: they need
    no rule, and their code has no Kubernetes client to use one."""
    objects = by_kind(render(OPTIONS))
    assert objects["ServiceAccount"]["automountServiceAccountToken"] is False
    agents = objects["DaemonSet"]["spec"]["template"]["spec"]
    assert (agents["serviceAccountName"], agents["automountServiceAccountToken"]) == (
        SERVICE_ACCOUNT_NAME,
        False,
    )
    aggregator = objects["Pod"]["spec"]
    assert (aggregator["serviceAccountName"], aggregator["automountServiceAccountToken"]) == (
        SERVICE_ACCOUNT_NAME,
        True,
    )
    imported: set[str] = set()
    for path in (ROOT / "netobserv_tui" / "agent").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module)
    assert imported and not {m for m in imported if m.split(".")[0].startswith("kubernetes")}


def test_the_role_in_deploy_is_the_one_rendered() -> None:
    """The file's rules are what a capture grants (the renderer only drops the OpenShift rule
    off OpenShift), so the tests above hold for deploy/rbac.yaml itself."""
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "rbac.yaml").read_text()))
    role = copy.deepcopy(next(d for d in docs if d["kind"] == "ClusterRole"))
    assert [r for r in role["rules"] if "security.openshift.io" not in r["apiGroups"]] == RULES
