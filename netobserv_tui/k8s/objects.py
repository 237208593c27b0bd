"""Create and delete the objects of ``manifests.render`` with kubernetes-asyncio, by kind.

One table maps each kind the tool creates to its typed API calls (no discovery round
trips, no dynamic client): the manifests are dicts, which the typed calls send as they are.
Cleanup finds objects by label, never by name alone, so it removes only what this tool
created, and it is idempotent: an object already gone is not an error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from ..model.errors import CaptureError
from .manifests import CAPTURE_LABEL, MANAGED_BY

log = logging.getLogger(__name__)

_SCC: Final = ("security.openshift.io", "v1", "securitycontextconstraints")


class ApplyError(CaptureError):
    """The API server refused an object; the message names it and says why."""


@dataclass(frozen=True, slots=True)
class Kind:
    """How to create, list and delete one kind; ``namespaced`` kinds take a namespace."""

    name: str
    api: str
    noun: str
    namespaced: bool
    #: (group, version, plural) of a custom resource (OpenShift's SCC), else None.
    custom: tuple[str, str, str] | None = None

    def _api(self, api_client: client.ApiClient) -> Any:
        return getattr(client, self.api)(api_client)

    async def create(self, api_client: client.ApiClient, obj: Mapping[str, Any]) -> None:
        api, ns = self._api(api_client), obj["metadata"].get("namespace")
        if self.custom is not None:
            await api.create_cluster_custom_object(*self.custom, dict(obj))
        elif self.namespaced:
            await getattr(api, f"create_namespaced_{self.noun}")(ns, dict(obj))
        else:
            await getattr(api, f"create_{self.noun}")(dict(obj))

    async def names(self, api_client: client.ApiClient, selector: str,
                    namespace: str | None) -> list[tuple[str | None, str]]:
        """``(namespace, name)`` of the objects with the labels (all namespaces if None)."""
        api = self._api(api_client)
        if self.custom is not None:
            found = await api.list_cluster_custom_object(*self.custom, label_selector=selector)
            return [(None, item["metadata"]["name"]) for item in found.get("items", [])]
        if not self.namespaced:
            listed = await getattr(api, f"list_{self.noun}")(label_selector=selector)
        elif namespace is None:
            listed = await getattr(api, f"list_{self.noun}_for_all_namespaces")(
                label_selector=selector)
        else:
            listed = await getattr(api, f"list_namespaced_{self.noun}")(
                namespace, label_selector=selector)
        return [(item.metadata.namespace, item.metadata.name) for item in listed.items]

    async def delete(self, api_client: client.ApiClient, namespace: str | None,
                     name: str) -> str | None:
        """Delete one object (its dependents in the background): ``deleted``, ``already
        being deleted`` (a namespace still terminating), or None if it was gone."""
        api = self._api(api_client)
        body = client.V1DeleteOptions(propagation_policy="Background")
        try:
            if self.custom is not None:
                await api.delete_cluster_custom_object(*self.custom, name)
            elif self.namespaced:
                await getattr(api, f"delete_namespaced_{self.noun}")(name, namespace, body=body)
            else:
                await getattr(api, f"delete_{self.noun}")(name, body=body)
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status == 409 and self.noun == "namespace":
                # The server's answer for a namespace that is terminating already: it goes
                # once its contents are gone, as cleanup wants.
                return "already being deleted"
            raise
        return "deleted"


#: Every kind the manifests hold, in the order cleanup deletes them: workloads first (the
#: agents detach and flush), the namespace last (it takes what is left in it along).
KINDS: Final[tuple[Kind, ...]] = (
    Kind("DaemonSet", "AppsV1Api", "daemon_set", True),
    Kind("Pod", "CoreV1Api", "pod", True),
    Kind("Service", "CoreV1Api", "service", True),
    Kind("Secret", "CoreV1Api", "secret", True),
    Kind("ServiceAccount", "CoreV1Api", "service_account", True),
    Kind("ClusterRoleBinding", "RbacAuthorizationV1Api", "cluster_role_binding", False),
    Kind("ClusterRole", "RbacAuthorizationV1Api", "cluster_role", False),
    Kind("SecurityContextConstraints", "CustomObjectsApi", "", False, custom=_SCC),
    Kind("Namespace", "CoreV1Api", "namespace", False),
)
BY_KIND: Final[dict[str, Kind]] = {kind.name: kind for kind in KINDS}


def selector(capture_id: str | None = None) -> str:
    """The label selector of everything the tool created (of one capture if given)."""
    ((key, value),) = MANAGED_BY.items()
    return f"{key}={value}" + (f",{CAPTURE_LABEL}={capture_id}" if capture_id else "")


def describe(obj: Mapping[str, Any]) -> str:
    """``DaemonSet netobserv-cli/netobserv-agent`` or ``ClusterRole netobserv-tui``."""
    meta = obj.get("metadata", {})
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind', '?')} {where}{meta.get('name', '?')}"


async def apply(api_client: client.ApiClient, objects: Iterable[Mapping[str, Any]],
                on_created: Callable[[Mapping[str, Any]], None] = lambda _obj: None) -> None:
    """Create ``objects`` in order; ``on_created`` hears of each one created (so that what
    was created before a failure is known).  Raises :class:`ApplyError`."""
    for obj in objects:
        kind = BY_KIND.get(obj.get("kind", ""))
        if kind is None:
            raise ApplyError(f"{describe(obj)}: this tool does not know how to create a "
                             f"{obj.get('kind')!r}")
        try:
            await kind.create(api_client, obj)
        except ApiException as exc:
            raise ApplyError(f"cannot create {describe(obj)}: {_reason(exc)}") from None
        on_created(obj)
        log.info("Created %s", describe(obj))


async def cleanup(api_client: client.ApiClient, capture_id: str | None = None,
                  *, openshift: bool = False,
                  say: Callable[[str], None] = lambda _text: None) -> list[str]:
    """Delete every object labelled as ours (of one capture if ``capture_id``), in
    :data:`KINDS` order, across namespaces; returns what was deleted.  Idempotent.

    A kind the server does not serve (SCC off OpenShift) or that cannot be listed is
    skipped with a warning; other failures are collected and raised together at the end, so
    one refusal does not keep the rest from being deleted.
    """
    wanted = selector(capture_id)
    deleted: list[str] = []
    failures: list[str] = []
    for kind in KINDS:
        if kind.custom is not None and not openshift:
            continue
        try:
            found = await kind.names(api_client, wanted, None)
        except ApiException as exc:
            if exc.status == 404:
                continue
            failures.append(f"cannot list {kind.name} objects: {_reason(exc)}")
            continue
        for namespace, name in found:
            label = f"{kind.name} {namespace + '/' if namespace else ''}{name}"
            try:
                done = await kind.delete(api_client, namespace, name)
                if done == "deleted":
                    deleted.append(label)
                    say(f"deleted {label}")
                elif done is not None:
                    say(f"{label} is {done}")
            except ApiException as exc:
                failures.append(f"cannot delete {label}: {_reason(exc)}")
    if failures:
        raise ApplyError("cleanup incomplete: " + "; ".join(failures)
                         + f". Retry with `netobserv cleanup`, or delete by hand: "
                         f"kubectl delete all,ns,clusterrole,clusterrolebinding -l {wanted}")
    return deleted


def _reason(exc: ApiException) -> str:
    """The Status message of an API error, or its HTTP reason."""
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return f"{exc.status} {message or exc.reason}"


async def call(what: str, coro: Awaitable[Any]) -> Any:
    """Await an API call; an ApiException becomes an :class:`ApplyError` saying ``what``."""
    try:
        return await coro
    except ApiException as exc:
        raise ApplyError(f"{what}: {_reason(exc)}") from None
