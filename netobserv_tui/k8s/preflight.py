"""Before creating anything: is the cluster reachable, may this user do what a capture
needs, and is another capture already running?"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from ..model.errors import CaptureError
from .objects import call, selector


class PreflightError(CaptureError):
    """The capture cannot start; the message lists every reason and what to do."""


@dataclass(frozen=True, slots=True)
class Permission:
    verb: str
    resource: str
    group: str = ""
    #: Namespaced check in the capture's namespace; False: cluster-wide.
    namespaced: bool = True
    subresource: str = ""

    def kubectl(self, namespace: str) -> str:
        """The ``kubectl auth can-i`` command that checks it by hand."""
        resource = self.resource + (f"/{self.subresource}" if self.subresource else "")
        resource += f".{self.group}" if self.group else ""
        where = f" -n {namespace}" if self.namespaced else " --all-namespaces"
        return f"kubectl auth can-i {self.verb} {resource}{where}"


#: What a capture does, and why (the verbs of objects.apply/cleanup, rollout, port-forward,
#: and what the aggregator's ClusterRole grants, which one may only bind if one holds it).
NEEDED: Final[tuple[Permission, ...]] = (
    Permission("create", "namespaces", namespaced=False),
    Permission("delete", "namespaces", namespaced=False),
    *(Permission(verb, resource)
      for resource in ("serviceaccounts", "secrets", "services", "pods")
      for verb in ("create", "delete", "list")),
    Permission("create", "daemonsets", "apps"),
    Permission("delete", "daemonsets", "apps"),
    Permission("get", "daemonsets", "apps"),
    *(Permission(verb, resource, "rbac.authorization.k8s.io", namespaced=False)
      for resource in ("clusterroles", "clusterrolebindings")
      for verb in ("create", "delete", "list")),
    Permission("list", "events"),
    Permission("get", "pods", subresource="log"),
    Permission("create", "pods", subresource="portforward"),
    *(Permission(verb, resource, group, namespaced=False)
      for resource, group in (("pods", ""), ("services", ""), ("nodes", ""),
                              ("replicasets", "apps"))
      for verb in ("get", "list", "watch")),
)
OPENSHIFT: Final[tuple[Permission, ...]] = (
    Permission("create", "securitycontextconstraints", "security.openshift.io",
               namespaced=False),
    Permission("delete", "securitycontextconstraints", "security.openshift.io",
               namespaced=False),
)


async def missing_permissions(api_client: client.ApiClient, namespace: str,
                              needed: Sequence[Permission] = NEEDED) -> list[str]:
    """One SelfSubjectAccessReview per permission; the refused ones, as ``kubectl auth
    can-i`` commands with the server's reason."""
    api = client.AuthorizationV1Api(api_client)
    refused = []
    for perm in needed:
        review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                verb=perm.verb, resource=perm.resource, group=perm.group,
                subresource=perm.subresource or None,
                namespace=namespace if perm.namespaced else None)))
        answer = await call("cannot check permissions (SelfSubjectAccessReview)",
                            api.create_self_subject_access_review(review))
        status = answer.status
        if not status.allowed:
            why = f" ({status.reason})" if status.reason else ""
            refused.append(f"{perm.kubectl(namespace)}{why}")
    return refused


async def running_captures(api_client: client.ApiClient) -> list[str]:
    """Namespaces holding objects of a capture of this tool (with their capture ids)."""
    api = client.CoreV1Api(api_client)
    found = await call("cannot list namespaces",
                       api.list_namespace(label_selector=selector()))
    return [f"{item.metadata.name} (capture "
            f"{(item.metadata.labels or {}).get('netobserv.io/capture', '?')})"
            for item in found.items]


async def node_kernels(api_client: client.ApiClient,
                       node_selector: Mapping[str, str]) -> list[str] | None:
    """``status.nodeInfo.kernelVersion`` of each node the agents will run on (those with
    the ``node_selector`` labels); None when the nodes cannot be listed."""
    api = client.CoreV1Api(api_client)
    labels = ",".join(f"{key}={value}" for key, value in sorted(node_selector.items()))
    try:
        nodes = await (api.list_node(label_selector=labels) if labels else api.list_node())
    except (ApiException, OSError, aiohttp.ClientError, TimeoutError):
        return None
    return [str(getattr(node.status.node_info, "kernel_version", "") or "")
            if node.status and node.status.node_info else "" for node in nodes.items]


async def check_reachable(api_client: client.ApiClient) -> str:
    """The cluster's version, or :class:`PreflightError` saying what to check."""
    server = api_client.configuration.host
    try:
        version = await client.VersionApi(api_client).get_code()
    except ApiException as exc:
        raise PreflightError(f"the cluster at {server} answered {exc.status} {exc.reason}: "
                             "check your kubeconfig credentials") from None
    except (OSError, aiohttp.ClientError, TimeoutError) as exc:
        raise PreflightError(f"cannot reach the cluster at {server} ({exc}); check the "
                             "kubeconfig context, or capture on this host with --local") \
            from None
    return str(version.git_version)


async def preflight(api_client: client.ApiClient, namespace: str, *,
                    openshift: bool = False) -> None:
    """Raise :class:`PreflightError` listing every missing permission, or the capture
    already running; nothing is created."""
    await check_reachable(api_client)
    running = await running_captures(api_client)
    if running:
        raise PreflightError(
            "a capture is already running (or was interrupted) in namespace "
            + ", ".join(running) + ": stop it, or remove it with `netobserv cleanup`")
    needed = (*NEEDED, *OPENSHIFT) if openshift else NEEDED
    refused = await missing_permissions(api_client, namespace, needed)
    if refused:
        raise PreflightError(
            "your user may not do everything a capture needs; ask a cluster admin for:\n  "
            + "\n  ".join(refused))
