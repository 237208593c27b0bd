"""Before creating anything: is the cluster reachable, may this user do what a capture
needs, and is the tool's namespace free?

The namespace is free when no object of an earlier capture of this tool is left, with three
cases for the objects that are (:func:`find_captures`):

* **running**: its aggregator pod is up (Running, or Pending while it starts) and not being
  deleted: the capture is refused; that capture is someone's (or was abandoned: then
  ``netobserv cleanup`` removes it).
* **terminating**: its namespace is being deleted (a capture that just ended: namespaces take
  tens of seconds to go). If it is the namespace this capture needs, :func:`preflight` waits
  for it to be gone (up to ``timeout``, saying so), then goes on; a terminating namespace of
  another capture is no obstacle.
* **interrupted**: anything else: the namespace without a live aggregator, or a ClusterRole or
  ClusterRoleBinding (an SCC on OpenShift) whose namespace is gone. The capture is refused
  until ``netobserv cleanup`` removes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from ..model.errors import CaptureError
from .manifests import AGGREGATOR_NAME, CAPTURE_LABEL, cluster_scoped_name
from .objects import call, selector

#: How long :func:`preflight` waits for a terminating namespace by default, in seconds (the
#: rollout timeout's default: the capture passes that one to it).
WAIT_TIMEOUT: Final = 180.0
#: How often the wait looks again when the API server refuses to watch namespaces.
POLL_INTERVAL: Final = 1.0


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
    # What the aggregator's ClusterRole grants (deploy/rbac.yaml): RBAC lets a user grant
    # only what they hold themselves.
    *(Permission(verb, resource, group, namespaced=False)
      for resource, group in (("pods", ""), ("services", ""), ("nodes", ""),
                              ("replicasets", "apps"), ("jobs", "batch"))
      for verb in ("list", "watch")),
    # Finding earlier captures (their namespaces), and waiting for a terminating one.
    Permission("list", "namespaces", namespaced=False),
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


@dataclass(frozen=True, slots=True)
class Found:
    """Objects of an earlier capture of this tool, and what became of it."""

    namespace: str
    #: Its capture id (the ``netobserv.io/capture`` label), ``?`` if it has none.
    capture: str
    #: ``running``, ``terminating`` or ``interrupted`` (see the module docstring).
    state: str
    #: Why that state, for messages: ``its aggregator pod is Running``.
    detail: str
    #: The objects found: ``Namespace netobserv-cli``, ``ClusterRole netobserv-tui-x``.
    objects: tuple[str, ...] = ()


def _aggregator_state(pods: Sequence[Any]) -> tuple[str, str]:
    """(state, detail) of a capture from its aggregator pod (a list of zero or one)."""
    if not pods:
        return "interrupted", "no aggregator pod"
    pod = pods[0]
    if pod.metadata.deletion_timestamp is not None:
        return "interrupted", "its aggregator pod is being deleted"
    phase = (pod.status.phase if pod.status else None) or "Unknown"
    if phase == "Running":
        return "running", "its aggregator pod is Running"
    if phase == "Pending":
        return "running", "its aggregator pod is starting (Pending)"
    return "interrupted", f"its aggregator pod is {phase}"


async def find_captures(api_client: client.ApiClient, *,
                        openshift: bool = False) -> list[Found]:
    """Every earlier capture of this tool the cluster still holds something of, by label:
    its namespaces, then the cluster-scoped objects of namespaces that are gone."""
    core = client.CoreV1Api(api_client)
    labelled = selector()
    namespaces = await call("cannot list namespaces",
                            core.list_namespace(label_selector=labelled))
    found: list[Found] = []
    for item in namespaces.items:
        name = item.metadata.name
        capture = (item.metadata.labels or {}).get(CAPTURE_LABEL, "?")
        where = (f"Namespace {name}",)
        if item.metadata.deletion_timestamp is not None or (
                item.status is not None and item.status.phase == "Terminating"):
            found.append(Found(name, capture, "terminating", "its namespace is being deleted",
                               where))
            continue
        pods = await call(f"cannot list the pods of namespace {name}",
                          core.list_namespaced_pod(
                              name, field_selector=f"metadata.name={AGGREGATOR_NAME}"))
        state, detail = _aggregator_state(pods.items)
        found.append(Found(name, capture, state, detail, where))
    # Cluster-scoped objects are named after their capture's namespace; without it, they are
    # what an interrupted cleanup left.
    present = {f.namespace for f in found}
    orphans: dict[str, list[tuple[str, str]]] = {}
    for kind, names in await _cluster_scoped(api_client, labelled, openshift):
        for name, capture in names:
            namespace = name.removeprefix(cluster_scoped_name(""))
            if namespace not in present:
                orphans.setdefault(namespace, []).append((f"{kind} {name}", capture))
    for namespace, objects in orphans.items():
        found.append(Found(namespace, objects[0][1], "interrupted",
                           f"its namespace {namespace} is gone",
                           tuple(what for what, _ in objects)))
    return found


async def _cluster_scoped(api_client: client.ApiClient, labelled: str,
                          openshift: bool) -> list[tuple[str, list[tuple[str, str]]]]:
    """(kind, [(name, capture id)]) of this tool's ClusterRoles, ClusterRoleBindings and
    (``openshift``) SecurityContextConstraints."""
    rbac = client.RbacAuthorizationV1Api(api_client)
    found: list[tuple[str, list[tuple[str, str]]]] = []
    for kind, lister in (("ClusterRoleBinding", rbac.list_cluster_role_binding),
                         ("ClusterRole", rbac.list_cluster_role)):
        listed = await call(f"cannot list {kind}s", lister(label_selector=labelled))
        found.append((kind, [(i.metadata.name,
                              (i.metadata.labels or {}).get(CAPTURE_LABEL, "?"))
                             for i in listed.items]))
    if openshift:
        try:
            sccs = await client.CustomObjectsApi(api_client).list_cluster_custom_object(
                "security.openshift.io", "v1", "securitycontextconstraints",
                label_selector=labelled)
        except ApiException:  # not served, or not ours to list: apply will say
            sccs = {}
        found.append(("SecurityContextConstraints", [
            (i["metadata"]["name"], i["metadata"].get("labels", {}).get(CAPTURE_LABEL, "?"))
            for i in sccs.get("items", [])]))
    return found


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


async def wait_namespace_gone(api_client: client.ApiClient, namespace: str, *,
                              timeout: float = WAIT_TIMEOUT,
                              progress: Callable[[str], None] = lambda _text: None) -> None:
    """Wait until ``namespace`` (terminating) is gone, following it with a watch; say so
    through ``progress`` when the wait starts and ends. :class:`PreflightError` after
    ``timeout`` seconds, saying what to do."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    core = client.CoreV1Api(api_client)
    field = f"metadata.name={namespace}"
    progress(f"Namespace {namespace} is still terminating (previous capture); waiting up to "
             f"{timeout:g}s...")
    while True:
        listed = await call("cannot list namespaces", core.list_namespace(field_selector=field))
        if not listed.items:
            progress(f"Namespace {namespace} is gone after {loop.time() - started:.0f}s.")
            return
        remaining = started + timeout - loop.time()
        if remaining <= 0:
            raise PreflightError(
                f"namespace {namespace} is still terminating after {timeout:g}s (the objects "
                "of a previous capture are still being deleted): retry later or with a longer "
                "--rollout-timeout, or capture in another namespace with "
                f"--netobserv-namespace; `kubectl get namespace {namespace} -o yaml` shows "
                "what it is waiting for (status.conditions)")
        try:
            async with asyncio.timeout(remaining):
                await _deleted_or_changed(core, field, listed.metadata.resource_version,
                                          remaining)
        except TimeoutError:
            pass  # look once more, then give up


async def _deleted_or_changed(core: client.CoreV1Api, field: str, version: str | None,
                              seconds: float) -> None:
    """Return once a watch from ``version`` sees the namespace deleted or ends; when it
    cannot watch (refused, expired, cut), after a pause (the caller lists again)."""
    stream = watch.Watch()
    try:
        async for event in stream.stream(core.list_namespace, field_selector=field,
                                         resource_version=version,
                                         timeout_seconds=max(1, int(min(seconds, 60)))):
            if event["type"] == "DELETED":
                return
    except ApiException as exc:
        if exc.status != 410:  # 410: the list is simply too old; list again at once
            await asyncio.sleep(POLL_INTERVAL)
    except (OSError, aiohttp.ClientError, ValueError):
        await asyncio.sleep(POLL_INTERVAL)
    finally:
        stream.stop()
        await stream.close()


def _running(found: Sequence[Found]) -> str:
    return "; ".join(f"a capture is already running in namespace {f.namespace} (capture "
                     f"{f.capture}; {f.detail})" for f in found) + (
        ": wait for it to end or stop it; if it was abandoned, remove it with "
        "`netobserv cleanup`")


def _interrupted(found: Sequence[Found]) -> str:
    return "; ".join(f"an interrupted capture left objects behind: {', '.join(f.objects)} "
                     f"(capture {f.capture}; {f.detail})" for f in found) + (
        ": remove them with `netobserv cleanup`, then retry")


async def preflight(api_client: client.ApiClient, namespace: str, *,
                    openshift: bool = False, timeout: float = WAIT_TIMEOUT,
                    progress: Callable[[str], None] = lambda _text: None) -> None:
    """Raise :class:`PreflightError` listing every missing permission, or saying which
    capture is running or left objects behind; wait (up to ``timeout`` seconds, told through
    ``progress``) while ``namespace`` is terminating. Nothing is created."""
    await check_reachable(api_client)
    needed = (*NEEDED, *OPENSHIFT) if openshift else NEEDED
    refused = await missing_permissions(api_client, namespace, needed)
    if refused:
        raise PreflightError(
            "your user may not do everything a capture needs; ask a cluster admin for:\n  "
            + "\n  ".join(refused))
    waited = False
    while True:
        found = await find_captures(api_client, openshift=openshift)
        if running := [f for f in found if f.state == "running"]:
            raise PreflightError(_running(running))
        if interrupted := [f for f in found if f.state == "interrupted"]:
            raise PreflightError(_interrupted(interrupted))
        if waited or not any(f.namespace == namespace for f in found):
            return
        await wait_namespace_gone(api_client, namespace, timeout=timeout, progress=progress)
        waited = True
