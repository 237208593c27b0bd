"""A test double of the Kubernetes API server (tests only: the product never imports it).

``ApiServerDouble`` is a small but real HTTP server (aiohttp, plain HTTP on 127.0.0.1, random
port) that the real kubernetes-asyncio client talks to, because no API server can run on our
machines.  Objects live in memory, as JSON dicts shaped like the API's; every change gets a
resourceVersion and goes into a history that watches replay.

The subset it implements:

* Resources (generic by group/version/resource, see ``RESOURCE_TYPES``): core/v1 namespaces,
  nodes, pods (+ ``/status``, ``/log``, ``/portforward``), services, serviceaccounts, secrets,
  configmaps, endpoints, events; apps/v1 daemonsets, deployments, replicasets, statefulsets;
  batch/v1 jobs, cronjobs; rbac.authorization.k8s.io/v1 clusterroles, clusterrolebindings,
  roles, rolebindings;
  authorization.k8s.io/v1 selfsubjectaccessreviews (create only); security.openshift.io/v1
  securitycontextconstraints (only when built with ``openshift=True``).  Discovery (``/api``,
  ``/apis``, ``/api/v1``, ``/apis/G/V``) and ``/version`` answer for those.
* Verbs: create (409 AlreadyExists, 404 for a missing namespace, 403 in a terminating one,
  generateName, a few validations that real servers do: names, selector vs template labels, a
  Job's restartPolicy, a binding's roleRef kind; a Job's own selector and pod labels; a
  ``kubernetes.io/service-account-token`` Secret gets its account's token), get, list
  (labelSelector ``=``/``==``/``!=``/``in``/``notin``/exists/``!``; fieldSelector on
  ``metadata.name``/``metadata.namespace`` and the fields the real server supports per resource,
  400 otherwise; ``limit``/``continue``), update (PUT, 409 on a stale resourceVersion), patch
  (merge, an approximate strategic merge, JSON patch, and apply treated as an upsert+merge),
  delete (DeleteOptions/preconditions; pods and namespaces answer the object, others a Status;
  ownerReference garbage collection unless ``propagationPolicy=Orphan``; namespace deletion
  removes what is in it at once, and the namespace itself at once, or, with
  ``namespace_deletion_delay``, after that many seconds (None: when the test calls
  ``finish_namespace_deletion``) while it is Terminating with a deletionTimestamp and the
  namespace controller's conditions; a second delete is a 409), deletecollection, watch
  (``watch=true``: without resourceVersion or with "0" synthetic ADDED events first, otherwise
  the changes after that version; an ERROR event with a 410 Expired Status for a version older
  than the kept history; label/field selectors with objects entering/leaving them seen as
  ADDED/DELETED; ``timeoutSeconds``; BOOKMARK events on request), ``pods/log`` (container,
  tailLines, limitBytes, follow), ``pods/portforward`` over WebSocket (``v4.channel.k8s.io``:
  per port a data channel ``2i`` and an error channel ``2i+1``, each first frame the port as 2
  bytes little-endian; the bytes go to a TCP target that the test registers per pod and port).
* Errors are real ``Status`` objects (kind, code, reason, message, details), so the client
  raises ``ApiException`` with the right status; bearer tokens map to users (401 otherwise).
* Authorization: the test's ``deny`` rules first, for every user; then, for ServiceAccounts
  (user ``system:serviceaccount:<ns>:<name>``, groups ``system:serviceaccounts``,
  ``system:serviceaccounts:<ns>`` and ``system:authenticated``; tokens from
  ``token_for_service_account``, ``service_account_api_client``,
  ``write_service_account_kubeconfig`` or a service-account-token Secret, valid while the
  account, and the Secret, exist) and the users in ``rbac_users``, RBAC as the real
  authorizer evaluates it: ClusterRoleBindings, then the RoleBindings of the request's
  namespace (a Namespace's own name for a request on it); subjects User, Group and
  ServiceAccount (its namespace defaulting to the binding's); rules by apiGroups, resources
  (``*``, ``resource/subresource``, ``*/subresource``), verbs and resourceNames (matched only
  by a request that names an object: get, update, patch, delete, a subresource, or a list or
  watch whose field selector is ``metadata.name=<name>``), ``*`` wildcards; a 403 Forbidden
  with the real message, ending with ``RBAC: <role> not found`` when a binding's role is
  missing.  SelfSubjectAccessReviews answer the same (with the real "allowed by" reason).
  Discovery, ``/version`` and reviews are open to every authenticated user (the bootstrap
  policy); other users (the test's ``admin`` and ``viewer``) are allowed everything else.

Test-side controls (Python methods, not HTTP): ``deny``, ``fail_next``, ``put``/``patch``/
``remove``/``get``/``objects``, ``add_node``, ``add_event``, ``set_pod_status``,
``set_daemonset_status``, ``set_pod_log``/``append_pod_log``/``end_pod_log``, ``forward``
(port-forward targets), ``run_controllers`` (a DaemonSet controller creating one pod per
matching node; Deployment -> ReplicaSet -> pods, StatefulSet and Job controllers, with the
names, labels and ownerReferences the real ones give; a scheduler + kubelet for pods, with
per-pod ``PodOutcome``s such as ImagePullBackOff, and their events), ``run_cronjob`` (a
CronJob's schedule fires: its Job ``<name>-<minutes since the epoch>``),
``namespace_deletion_delay``/``hold_namespace_deletion``/``finish_namespace_deletion``,
``rbac_users``, ``authorize``, ``compact`` (410 for older versions), ``send_bookmark``,
``drop_connections`` (aborts open watches, log follows and port-forwards), ``stop``/``start``/
``restart`` on the same port, ``wait_for`` (a condition re-checked on every change and every
answered request, no sleeps), and the recording:
``requests`` (every request), ``journal`` (mutating ones), ``mutations()``, ``leftovers()``.

Use (the fixtures are in ``conftest.py``)::

    async def test_rollout(apiserver: ApiServerDouble, api_client: client.ApiClient) -> None:
        apiserver.add_node("node-a")
        apiserver.run_controllers(PodOutcome.image_pull_backoff())
        await client.AppsV1Api(api_client).create_namespaced_daemon_set("default", manifest)
        await apiserver.settled()
        pods = apiserver.objects("pods", "default", label_selector="app=agent")
        assert pods[0]["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == (
            "ImagePullBackOff"
        )
        assert apiserver.mutations("create") == [
            ("create", "apps/v1/daemonsets", "default", "agent")
        ]

Not implemented: TLS, exec/attach, SPDY port-forward, server-side apply field ownership, dryRun,
graceful deletion of pods and finalizers (objects other than namespaces go at once; pods are
answered with a deletionTimestamp), admission beyond the namespace lifecycle (no ServiceAccount
token mounting, no SecurityContextConstraints, no RBAC escalation check on creating roles and
bindings), aggregated ClusterRoles, non-resource URLs other than discovery and ``/version``
(reviews of them do follow the rules), workload statuses, scaling and rollouts (controllers
create once), CronJob schedules (tests fire them), recreation of deleted DaemonSet pods,
protobuf, the watch-list feature.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import itertools
import json
import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aiohttp import WSMsgType, web
from kubernetes_asyncio import client
from kubernetes_asyncio.stream import WsApiClient

Obj = dict[str, Any]

ADMIN_TOKEN = "admin-token"
VIEWER_TOKEN = "viewer-token"
DEFAULT_TOKENS: dict[str, str] = {ADMIN_TOKEN: "admin", VIEWER_TOKEN: "viewer"}
PORTFORWARD_PROTOCOLS = ("v4.channel.k8s.io", "channel.k8s.io")
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
SERVICE_ACCOUNT_TOKEN_TYPE = "kubernetes.io/service-account-token"
MUTATING_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
SEED_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
SERVER_VERSION: Obj = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-apiserver-double",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_STANDARD_VERBS = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)


# --------------------------------------------------------------------------------------------
# Resource table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceType:
    """One API resource: where it is served and how it is scoped."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ("status",)
    verbs: tuple[str, ...] = _STANDARD_VERBS
    field_labels: frozenset[str] = frozenset()
    openshift: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """``pods`` or ``daemonsets.apps``: how real error messages name the resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def key(self) -> str:
        return f"{self.api_version}/{self.plural}"

    @property
    def singular(self) -> str:
        return self.kind.lower()


_POD_FIELDS = frozenset(
    {
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    }
)
_EVENT_FIELDS = frozenset(
    {
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    }
)
_RBAC = "rbac.authorization.k8s.io"

RESOURCE_TYPES: tuple[ResourceType, ...] = (
    ResourceType(
        "",
        "v1",
        "namespaces",
        "Namespace",
        False,
        ("ns",),
        ("status", "finalize"),
        field_labels=frozenset({"status.phase"}),
    ),
    ResourceType(
        "", "v1", "nodes", "Node", False, ("no",), field_labels=frozenset({"spec.unschedulable"})
    ),
    ResourceType(
        "",
        "v1",
        "pods",
        "Pod",
        True,
        ("po",),
        ("status", "log", "portforward"),
        field_labels=_POD_FIELDS,
    ),
    ResourceType("", "v1", "services", "Service", True, ("svc",)),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",), ()),
    ResourceType("", "v1", "secrets", "Secret", True, (), (), field_labels=frozenset({"type"})),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, ("cm",), ()),
    ResourceType("", "v1", "endpoints", "Endpoints", True, ("ep",), ()),
    ResourceType("", "v1", "events", "Event", True, ("ev",), (), field_labels=_EVENT_FIELDS),
    ResourceType("apps", "v1", "daemonsets", "DaemonSet", True, ("ds",)),
    ResourceType("apps", "v1", "deployments", "Deployment", True, ("deploy",)),
    ResourceType("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",)),
    ResourceType("apps", "v1", "statefulsets", "StatefulSet", True, ("sts",)),
    ResourceType(
        "batch", "v1", "jobs", "Job", True, (), field_labels=frozenset({"status.successful"})
    ),
    ResourceType("batch", "v1", "cronjobs", "CronJob", True, ("cj",)),
    ResourceType(_RBAC, "v1", "clusterroles", "ClusterRole", False, (), ()),
    ResourceType(_RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", False, (), ()),
    ResourceType(_RBAC, "v1", "roles", "Role", True, (), ()),
    ResourceType(_RBAC, "v1", "rolebindings", "RoleBinding", True, (), ()),
    ResourceType(
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        False,
        (),
        (),
        verbs=("create",),
    ),
    ResourceType(
        "security.openshift.io",
        "v1",
        "securitycontextconstraints",
        "SecurityContextConstraints",
        False,
        ("scc",),
        (),
        openshift=True,
    ),
)
_SUBRESOURCE_VERBS = {
    "status": ("get", "patch", "update"),
    "finalize": ("update",),
    "log": ("get",),
    "portforward": ("create", "get"),
}
_SUBRESOURCE_KIND = {"log": "Pod", "portforward": "PodPortForwardOptions"}
_NOT_STORED = frozenset({"selfsubjectaccessreviews"})  # answered, never kept
#: (type, reason, message) of the conditions of a Terminating namespace whose contents are
#: gone, as the namespace controller writes them.
_NAMESPACE_TERMINATING_CONDITIONS = (
    (
        "NamespaceDeletionDiscoveryFailure",
        "ResourcesDiscovered",
        "All resources successfully discovered",
    ),
    (
        "NamespaceDeletionGroupVersionParsingFailure",
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
    ),
    (
        "NamespaceDeletionContentFailure",
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    ("NamespaceContentRemaining", "ContentRemoved", "All content successfully removed"),
    (
        "NamespaceFinalizersRemaining",
        "ContentHasNoFinalizer",
        "All content-preserving finalizers finished",
    ),
)
_WORKLOAD_KINDS = frozenset({"DaemonSet", "Deployment", "ReplicaSet", "StatefulSet"})


# --------------------------------------------------------------------------------------------
# Records and knobs visible to tests
# --------------------------------------------------------------------------------------------


@dataclass
class RequestRecord:
    """One request as the double understood it (``code`` is the HTTP status it answered)."""

    verb: str
    group: str
    version: str
    resource: str  # plural, "pods/log" for a subresource
    namespace: str | None
    name: str | None
    user: str
    query: dict[str, str] = field(default_factory=dict)
    code: int = 0

    @property
    def gvr(self) -> str:
        """``v1/pods``, ``apps/v1/daemonsets``: apiVersion/resource."""
        api_version = f"{self.group}/{self.version}" if self.group else self.version
        return f"{api_version}/{self.resource}"

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    def as_tuple(self) -> tuple[str, str, str | None, str | None]:
        return (self.verb, self.gvr, self.namespace, self.name)


@dataclass(frozen=True)
class PodOutcome:
    """What the double's kubelet makes of a pod when controllers run.

    ``waiting_message`` and the event messages may use ``{image}``, ``{container}``, ``{pod}``.
    ``logs`` is given to every container of the pod.
    """

    phase: str = "Running"
    ready: bool = True
    waiting_reason: str | None = None
    waiting_message: str | None = None
    pull_error: str = (
        'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": '
        'failed to resolve reference "{image}": {image}: not found'
    )
    restart_count: int = 0
    logs: str = ""
    events: tuple[tuple[str, str, str], ...] = ()  # extra (type, reason, message)

    @classmethod
    def running(cls, logs: str = "") -> PodOutcome:
        return cls(logs=logs)

    @classmethod
    def not_ready(cls, logs: str = "") -> PodOutcome:
        """Running, but the readiness probe never passes."""
        return cls(ready=False, logs=logs)

    @classmethod
    def image_pull_backoff(cls, pull_error: str | None = None) -> PodOutcome:
        kwargs: dict[str, Any] = {} if pull_error is None else {"pull_error": pull_error}
        return cls(
            phase="Pending",
            ready=False,
            waiting_reason="ImagePullBackOff",
            waiting_message='Back-off pulling image "{image}"',
            **kwargs,
        )

    @classmethod
    def crash_loop_backoff(cls, logs: str = "", restart_count: int = 3) -> PodOutcome:
        return cls(
            phase="Running",
            ready=False,
            waiting_reason="CrashLoopBackOff",
            waiting_message="back-off 40s restarting failed container={container} pod={pod}",
            restart_count=restart_count,
            logs=logs,
        )

    @classmethod
    def pending(cls) -> PodOutcome:
        """Scheduled, containers never created (``ContainerCreating`` forever)."""
        return cls(phase="Pending", ready=False, waiting_reason="ContainerCreating")


OutcomeRule = PodOutcome | Callable[[Obj], PodOutcome]


@dataclass
class _Denial:
    verb: str
    resource: str
    namespace: str | None
    group: str | None
    user: str | None
    reason: str

    def matches(
        self, user: str, verb: str, group: str, resource: str, namespace: str | None
    ) -> bool:
        return (
            self.verb in ("*", verb)
            and self.resource in ("*", resource)
            and (self.group is None or self.group == group)
            and (self.user is None or self.user == user)
            # A cluster-wide question (namespace None) is refused if any namespace is refused.
            and (self.namespace is None or namespace is None or self.namespace == namespace)
        )


@dataclass(frozen=True)
class Attributes:
    """What the authorizer is asked about one request, as the real server's RequestInfo has it.

    ``namespace`` is the object's own name for a request on a Namespace, and ``name`` is the
    ``metadata.name`` of a list or watch's field selector when it asks for exactly one name,
    as a real server does; a list, watch, create or deletecollection otherwise has no name.
    """

    user: str
    groups: tuple[str, ...]
    verb: str
    group: str
    resource: str  # plural, without the subresource
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def combined(self) -> str:
        """``pods`` or ``pods/log``: what the rules' ``resources`` are compared with."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def forbidden(self, reason: str = "") -> ApiError:
        """The 403 a real server answers, with its message."""
        scope = f'in the namespace "{self.namespace}"' if self.namespace else "at the cluster scope"
        message = (
            f'User "{self.user}" cannot {self.verb} resource "{self.combined}" in API group '
            f'"{self.group}" {scope}'
        )
        if reason:
            message += f": {reason}"
        group_resource = f"{self.resource}.{self.group}" if self.group else self.resource
        subject = f'{group_resource} "{self.name}"' if self.name else group_resource
        details: Obj = {"group": self.group, "kind": self.resource}
        if self.name:
            details["name"] = self.name
        return ApiError(403, "Forbidden", f"{subject} is forbidden: {message}", details)


def service_account_user(namespace: str, name: str) -> str:
    """The user name a ServiceAccount's token authenticates as."""
    return f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


def user_groups(user: str) -> tuple[str, ...]:
    """The groups the authenticator gives a user: a ServiceAccount is in
    ``system:serviceaccounts`` and ``system:serviceaccounts:<namespace>``; every
    authenticated user in ``system:authenticated``."""
    if user == "system:anonymous":
        return ("system:unauthenticated",)
    if user.startswith(SERVICE_ACCOUNT_PREFIX):
        namespace = user[len(SERVICE_ACCOUNT_PREFIX) :].split(":", 1)[0]
        return (
            "system:serviceaccounts",
            f"system:serviceaccounts:{namespace}",
            "system:authenticated",
        )
    return ("system:authenticated",)


def rule_allows(rule: Obj, attrs: Attributes) -> bool:
    """One PolicyRule against a resource request, as the real RBAC authorizer matches it:
    verbs, apiGroups, resources (``*``, ``resource/subresource``, ``*/subresource``) and
    resourceNames (only when the request names an object)."""
    verbs = rule.get("verbs") or []
    groups = rule.get("apiGroups") or []
    if "*" not in verbs and attrs.verb not in verbs:
        return False
    if "*" not in groups and attrs.group not in groups:
        return False
    combined = attrs.combined
    for resource in rule.get("resources") or []:
        if resource in ("*", combined) or (
            attrs.subresource and resource == f"*/{attrs.subresource}"
        ):
            break
    else:
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.name in names


def non_resource_rule_allows(rule: Obj, verb: str, path: str) -> bool:
    """A PolicyRule's ``nonResourceURLs`` (``*`` or a trailing ``*`` is a prefix)."""
    verbs = rule.get("verbs") or []
    if "*" not in verbs and verb not in verbs:
        return False
    for url in rule.get("nonResourceURLs") or []:
        if url == "*" or url == path or (url.endswith("*") and path.startswith(url[:-1])):
            return True
    return False


def _subject_applies(
    subject: Obj, user: str, groups: tuple[str, ...], binding_namespace: str
) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return bool(subject.get("name") == user)
    if kind == "Group":
        return subject.get("name") in groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return bool(namespace) and user == service_account_user(namespace, subject.get("name", ""))
    return False


def _describe_subject(subject: Obj, binding_namespace: str) -> str:
    if subject.get("kind") == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return f'ServiceAccount "{subject.get("name")}/{namespace}"'
    return f'{subject.get("kind")} "{subject.get("name")}"'


#: What every authenticated user may do whatever the bindings say: the bootstrap policy's
#: ``system:discovery``, ``system:public-info-viewer`` and ``system:basic-user``.
_BOOTSTRAP_PATHS = (
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/version",
    "/version/",
    "/healthz",
    "/livez",
    "/readyz",
    "/openapi",
    "/openapi/*",
)


@dataclass
class _Failure:
    verb: str
    resource: str
    code: int
    namespace: str | None
    name: str | None
    message: str | None
    reason: str | None
    remaining: int


@dataclass(frozen=True)
class _Change:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    rt: ResourceType
    obj: Obj
    old: Obj | None


@dataclass(frozen=True)
class _Target:
    rt: ResourceType
    namespace: str | None
    name: str | None
    sub: str | None

    @property
    def resource(self) -> str:
        return f"{self.rt.plural}/{self.sub}" if self.sub else self.rt.plural


@dataclass(eq=False)
class _Stream:
    """A long-running request: a watch, a log follow or a port-forward."""

    kind: str
    request: web.Request
    target: _Target | None = None
    labels: Callable[[dict[str, str]], bool] | None = None
    fields: Callable[[Obj], bool] | None = None
    bookmarks: bool = False
    queue: asyncio.Queue[_Change | Obj | None] = field(default_factory=asyncio.Queue)
    dropped: bool = False

    def abort(self) -> None:
        self.dropped = True
        self.queue.put_nowait(None)
        transport = self.request.transport
        if transport is not None:
            transport.abort()


class ApiError(Exception):
    """Answered as a ``Status`` object with this code."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def body(self) -> Obj:
        return status_object(self.code, self.reason, self.message, self.details)

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.code)


STATUS_REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_object(code: int, reason: str, message: str, details: Obj | None = None) -> Obj:
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


def _not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{rt.group_resource} "{name}" not found',
        {"name": name, "group": rt.group, "kind": rt.plural}
        if rt.group
        else {"name": name, "kind": rt.plural},
    )


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _invalid(rt: ResourceType, name: str, field_path: str, message: str) -> ApiError:
    kind = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    return ApiError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {field_path}: {message}',
        {
            "name": name,
            "group": rt.group,
            "kind": rt.kind,
            "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field_path}],
        },
    )


def _server_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


# --------------------------------------------------------------------------------------------
# Selectors and patches
# --------------------------------------------------------------------------------------------

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"[-A-Za-z0-9_.]*"
_SET_RE = re.compile(rf"^({_KEY})\s+(in|notin)\s+\(([^)]*)\)$")
_EQ_RE = re.compile(rf"^({_KEY})\s*(==|=|!=)\s*({_VALUE})$")
_EXISTS_RE = re.compile(rf"^(!?)\s*({_KEY})$")


def _split_top_level(text: str) -> Iterator[str]:
    depth, start = 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            yield text[start:index].strip()
            start = index + 1
    yield text[start:].strip()


def parse_label_selector(selector: str | None) -> Callable[[dict[str, str]], bool]:
    """The label selector grammar of the API server; ValueError for what it would refuse.

    ``k=v``/``k==v`` read as ``k in (v)``, ``k!=v`` as ``k notin (v)`` (true without the label).
    """
    requirements: list[tuple[str, str, frozenset[str]]] = []  # (key, operator, values)
    for term in _split_top_level(selector or ""):
        if not term:
            if selector and selector.strip():
                raise ValueError(f"unable to parse requirement: empty term in {selector!r}")
            continue
        if match := _SET_RE.match(term):
            values = frozenset(v.strip() for v in match.group(4).split(",") if v.strip())
            requirements.append((match.group(1), match.group(3), values))
        elif match := _EQ_RE.match(term):
            operator = "notin" if match.group(3) == "!=" else "in"
            requirements.append((match.group(1), operator, frozenset({match.group(4)})))
        elif match := _EXISTS_RE.match(term):
            operator = "!exists" if match.group(1) == "!" else "exists"
            requirements.append((match.group(2), operator, frozenset()))
        else:
            raise ValueError(f"unable to parse requirement: {term!r}")

    def matches(labels: dict[str, str]) -> bool:
        for key, operator, values in requirements:
            value = labels.get(key)
            if operator == "in" and value not in values:
                return False
            if operator == "notin" and value in values:
                return False
            if operator == "exists" and value is None:
                return False
            if operator == "!exists" and value is not None:
                return False
        return True

    return matches


def _field_value(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_field_selector(rt: ResourceType, selector: str | None) -> Callable[[Obj], bool]:
    """``field=value``/``field!=value`` terms on the fields the real server supports."""
    requirements: list[tuple[str, bool, str]] = []  # (field, negated, value)
    allowed = rt.field_labels | {"metadata.name", "metadata.namespace"}
    for term in (selector or "").split(","):
        term = term.strip()
        if not term:
            continue
        match = re.match(r"^([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)$", term)
        if not match:
            raise ValueError(f"invalid selector: '{term}'; can't understand '{term}'")
        key, op, value = match.groups()
        if key not in allowed:
            raise ValueError(f"field label not supported: {key}")
        requirements.append((key, op == "!=", value))

    def matches(obj: Obj) -> bool:
        return all((_field_value(obj, k) == v) != negated for k, negated, v in requirements)

    return matches


def _exact_name(selector: str | None) -> str:
    """The name a field selector requires exactly (``metadata.name=x``), else ``""``."""
    for term in (selector or "").split(","):
        match = re.match(r"^\s*metadata\.name\s*(==|=)\s*(\S+)\s*$", term)
        if match:
            return match.group(2)
    return ""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


_SMP_MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "volumes": ("name",),
    "env": ("name",),
    "volumeMounts": ("mountPath",),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
    "imagePullSecrets": ("name",),
    "ports": ("containerPort", "port"),
    "hostAliases": ("ip",),
}


def strategic_merge_patch(target: Any, patch: Any, field_name: str | None = None) -> Any:
    """An approximation of strategic merge: merge patch, but the usual keyed lists merge by key.

    ``$patch``/``$retainKeys`` directives are dropped, not honoured.
    """
    if isinstance(patch, dict):
        result = dict(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if key.startswith("$"):
                continue
            if value is None:
                result.pop(key, None)
            else:
                result[key] = strategic_merge_patch(result.get(key), value, key)
        return result
    if isinstance(patch, list) and isinstance(target, list):
        if field_name == "finalizers":
            return list(target) + [item for item in patch if item not in target]
        keys = _SMP_MERGE_KEYS.get(field_name or "", ())
        key = next(
            (k for k in keys if patch and all(isinstance(i, dict) and k in i for i in patch)),
            None,
        )
        if key is not None:
            merged = [copy.deepcopy(item) for item in target]
            for item in patch:
                for index, existing in enumerate(merged):
                    if isinstance(existing, dict) and existing.get(key) == item[key]:
                        merged[index] = strategic_merge_patch(existing, item)
                        break
                else:
                    merged.append(copy.deepcopy(item))
            return merged
    return copy.deepcopy(patch)


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(document: Any, operations: list[Obj]) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    doc = copy.deepcopy(document)

    def parent(tokens: list[str]) -> tuple[Any, str]:
        node = doc
        for token in tokens[:-1]:
            node = node[int(token)] if isinstance(node, list) else node[token]
        return node, tokens[-1]

    def get(tokens: list[str]) -> Any:
        node = doc
        for token in tokens:
            node = node[int(token)] if isinstance(node, list) else node[token]
        return node

    def remove(tokens: list[str]) -> Any:
        node, last = parent(tokens)
        return node.pop(int(last)) if isinstance(node, list) else node.pop(last)

    def put(tokens: list[str], value: Any, insert: bool) -> None:
        nonlocal doc
        if not tokens:
            doc = copy.deepcopy(value)
            return
        node, last = parent(tokens)
        if isinstance(node, list):
            if last == "-":
                node.append(copy.deepcopy(value))
            elif insert:
                node.insert(int(last), copy.deepcopy(value))
            else:
                node[int(last)] = copy.deepcopy(value)
        else:
            if not insert and last not in node:
                raise KeyError(last)
            node[last] = copy.deepcopy(value)

    for operation in operations:
        op, tokens = operation.get("op"), _pointer(str(operation.get("path", "")))
        if op == "add":
            put(tokens, operation.get("value"), insert=True)
        elif op == "replace":
            put(tokens, operation.get("value"), insert=False)
        elif op == "remove":
            remove(tokens)
        elif op in ("move", "copy"):
            source = _pointer(str(operation.get("from", "")))
            value = remove(source) if op == "move" else copy.deepcopy(get(source))
            put(tokens, value, insert=True)
        elif op == "test":
            if get(tokens) != operation.get("value"):
                raise ValueError(f"test operation failed at {operation.get('path')}")
        else:
            raise ValueError(f"unknown JSON patch operation {op!r}")
    return doc


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _meta(obj: Obj) -> Obj:
    meta = obj.setdefault("metadata", {})
    assert isinstance(meta, dict)
    return meta


def _labels(obj: Obj) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("labels") or {})


def _condition_true(obj: Obj, kind: str) -> bool:
    for condition in obj.get("status", {}).get("conditions") or []:
        if condition.get("type") == kind:
            return bool(condition.get("status") == "True")
    return False


_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # no vowels: no words in generated names


def _template_hash(template: Obj) -> str:
    """A pod-template-hash as the controllers spell it (a 32-bit hash, its decimal digits
    mapped onto the safe alphabet, e.g. ``7d4b9c5f6``)."""
    value = int(hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:8], 16)
    return "".join(_SAFE_ALPHABET[ord(c) % len(_SAFE_ALPHABET)] for c in str(value))


def _owner_uids(obj: Obj) -> set[str]:
    return {ref.get("uid", "") for ref in obj.get("metadata", {}).get("ownerReferences") or []}


_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class ApiServerDouble:
    """In-memory Kubernetes API server double speaking real HTTP (see the module docstring)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        openshift: bool = False,
        tokens: dict[str, str] | None = None,
        require_auth: bool = True,
    ) -> None:
        self.host = host
        self._port = port
        self.openshift = openshift
        self.tokens = dict(DEFAULT_TOKENS if tokens is None else tokens)
        self.require_auth = require_auth
        # token -> (namespace, ServiceAccount, the Secret holding it or None)
        self._sa_tokens: dict[str, tuple[str, str, str | None]] = {}
        #: Users other than ServiceAccounts whose requests go through RBAC too.
        self.rbac_users: set[str] = set()
        #: How long a deleted namespace stays Terminating (its contents go at once): 0 = it
        #: goes at once; None = until ``finish_namespace_deletion``.
        self.namespace_deletion_delay: float | None = 0.0
        self._timers: set[asyncio.Task[None]] = set()
        self.requests: list[RequestRecord] = []
        self._types = [rt for rt in RESOURCE_TYPES if openshift or not rt.openshift]
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self._origin: dict[tuple[str, str, str], str] = {}
        self._rv = 0
        self._compacted_rv = 0
        self._history: list[_Change] = []
        self._streams: set[_Stream] = set()
        self._denials: list[_Denial] = []
        self._failures: list[_Failure] = []
        self._logs: dict[tuple[str, str, str], str] = {}
        self._logs_ended: set[tuple[str, str, str]] = set()
        self._forwards: dict[tuple[str, str, int], tuple[str, int]] = {}
        self._outcome: OutcomeRule | None = None
        self._step_delay = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._change = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._ips = itertools.count(2)
        self._started_once = False

    @property
    def hold_namespace_deletion(self) -> bool:
        """True: a deleted namespace stays Terminating until ``finish_namespace_deletion``
        (the same as ``namespace_deletion_delay = None``)."""
        return self.namespace_deletion_delay is None

    @hold_namespace_deletion.setter
    def hold_namespace_deletion(self, hold: bool) -> None:
        self.namespace_deletion_delay = None if hold else 0.0

    # ---------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        """Listen (again) on the same port; stored objects survive a stop/start."""
        if self._runner is not None:
            return
        if not self._started_once:
            for name in SEED_NAMESPACES:
                self.put("namespaces", {"metadata": {"name": name}})
            self._started_once = True
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=0.2, access_log=None
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port)
        await site.start()
        self._runner = runner
        if self._port == 0:
            self._port = int(runner.addresses[0][1])

    async def stop(self, *, cancel_controllers: bool = True) -> None:
        """Stop listening: open streams are cut, idle connections closed."""
        if cancel_controllers:
            for task in [*self._tasks, *self._timers]:
                task.cancel()
            await asyncio.gather(*self._tasks, *self._timers, return_exceptions=True)
        self.drop_connections()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def restart(self) -> None:
        """Simulate an API server restart: connections cut, state (etcd) kept, same port."""
        await self.stop(cancel_controllers=False)
        await self.start()

    async def __aenter__(self) -> ApiServerDouble:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------- clients

    def configuration(self, token: str = ADMIN_TOKEN) -> client.Configuration:
        return client.Configuration(
            host=self.url,
            api_key={"BearerToken": token},
            api_key_prefix={"BearerToken": "Bearer"},
        )

    def api_client(self, token: str = ADMIN_TOKEN) -> client.ApiClient:
        return client.ApiClient(configuration=self.configuration(token))

    def ws_api_client(self, token: str = ADMIN_TOKEN) -> WsApiClient:
        return WsApiClient(configuration=self.configuration(token))

    def token_for_service_account(self, namespace: str, name: str) -> str:
        """A new bearer token of ServiceAccount ``namespace/name`` (user
        ``system:serviceaccount:<namespace>:<name>``, its requests checked by RBAC).

        As with a real token, requests with it are refused (401) while the ServiceAccount does
        not exist.
        """
        token = f"sa-{secrets.token_urlsafe(18)}"
        self.tokens[token] = service_account_user(namespace, name)
        self._sa_tokens[token] = (namespace, name, None)
        return token

    def service_account_api_client(self, namespace: str, name: str) -> client.ApiClient:
        """A client authenticated as ServiceAccount ``namespace/name`` (a new token)."""
        return self.api_client(self.token_for_service_account(namespace, name))

    def write_service_account_kubeconfig(self, path: Path, namespace: str, name: str) -> Path:
        """A kubeconfig whose only context (``double-sa``) is ServiceAccount
        ``namespace/name``, as a pod of that ServiceAccount reaches the API server."""
        token = self.token_for_service_account(namespace, name)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "double-sa",
            "clusters": [{"name": "double", "cluster": {"server": self.url}}],
            "users": [{"name": "sa", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "double-sa",
                    "context": {"cluster": "double", "user": "sa", "namespace": namespace},
                }
            ],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config))
        return path

    def _sa_token_valid(self, token: str) -> bool:
        namespace, name, secret_name = self._sa_tokens[token]
        if self._find(self.resource_type("serviceaccounts"), namespace, name) is None:
            return False
        if secret_name is None:
            return True
        secret = self._find(self.resource_type("secrets"), namespace, secret_name)
        stored = (secret or {}).get("data", {}).get("token", "")
        return bool(stored) and base64.b64decode(stored).decode() == token

    def kubeconfig(self, *, current_context: str = "double") -> Obj:
        """Two contexts on this server: ``double`` (user admin, namespace default) and
        ``double-viewer`` (user viewer, namespace observability)."""
        viewer_token = next((t for t, u in self.tokens.items() if u == "viewer"), VIEWER_TOKEN)
        admin_token = next((t for t, u in self.tokens.items() if u == "admin"), ADMIN_TOKEN)
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "current-context": current_context,
            "clusters": [{"name": "double", "cluster": {"server": self.url}}],
            "users": [
                {"name": "admin", "user": {"token": admin_token}},
                {"name": "viewer", "user": {"token": viewer_token}},
            ],
            "contexts": [
                {
                    "name": "double",
                    "context": {"cluster": "double", "user": "admin", "namespace": "default"},
                },
                {
                    "name": "double-viewer",
                    "context": {
                        "cluster": "double",
                        "user": "viewer",
                        "namespace": "observability",
                    },
                },
            ],
        }

    def write_kubeconfig(self, path: Path, *, current_context: str = "double") -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.kubeconfig(current_context=current_context)))
        return path

    # ---------------------------------------------------------------- resource lookup

    def resource_type(self, resource: str) -> ResourceType:
        """By plural (``pods``), ``plural.group`` (``daemonsets.apps``), kind or short name."""
        plural, _, group = resource.partition(".")
        matches = [
            rt
            for rt in self._types
            if (plural in (rt.plural, rt.kind, rt.kind.lower()) or plural in rt.short_names)
            and (not group or rt.group == group)
        ]
        if len(matches) != 1:
            raise KeyError(f"unknown or ambiguous resource {resource!r}")
        return matches[0]

    def _lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        for rt in self._types:
            if (rt.group, rt.version, rt.plural) == (group, version, plural):
                return rt
        return None

    @staticmethod
    def _key(rt: ResourceType, namespace: str | None, name: str) -> tuple[str, str, str]:
        return (rt.key, namespace or "", name)

    def _find(self, rt: ResourceType, namespace: str | None, name: str) -> Obj | None:
        return self._objects.get(self._key(rt, namespace if rt.namespaced else None, name))

    def _items(self, rt: ResourceType, namespace: str | None = None) -> list[Obj]:
        found = [
            obj
            for (key, ns, _), obj in self._objects.items()
            if key == rt.key and (namespace is None or ns == namespace)
        ]
        return sorted(
            found, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])
        )

    # ---------------------------------------------------------------- store (no HTTP)

    def get(self, resource: str, name: str, namespace: str | None = None) -> Obj | None:
        rt = self.resource_type(resource)
        found = self._find(rt, namespace, name)
        return copy.deepcopy(found) if found is not None else None

    def objects(
        self,
        resource: str | None = None,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[Obj]:
        types = [self.resource_type(resource)] if resource else self._types
        match = parse_label_selector(label_selector)
        return [
            copy.deepcopy(obj)
            for rt in types
            for obj in self._items(rt, namespace)
            if match(_labels(obj))
        ]

    def put(self, resource: str, obj: Obj, *, namespace: str | None = None) -> Obj:
        """Create or replace an object directly (a seed, not a client request).

        The status given is kept (unlike through the API), so tests can seed running pods.
        """
        rt = self.resource_type(resource)
        body = copy.deepcopy(obj)
        meta = _meta(body)
        ns = (namespace or meta.get("namespace") or "default") if rt.namespaced else None
        existing = self._find(rt, ns, meta.get("name", ""))
        if existing is not None:
            body.setdefault("apiVersion", rt.api_version)
            body.setdefault("kind", rt.kind)
            for kept in ("uid", "creationTimestamp", "namespace"):
                if kept in existing["metadata"]:
                    meta[kept] = existing["metadata"][kept]
            return copy.deepcopy(self._replace(rt, body))
        status = body.get("status")
        created = self._admit_create(rt, ns, body)
        if status is not None:
            created["status"] = copy.deepcopy(status)
        return copy.deepcopy(self._insert(rt, created, "seed"))

    def patch(self, resource: str, name: str, patch: Obj, *, namespace: str | None = None) -> Obj:
        """Merge-patch an object directly, status included."""
        rt = self.resource_type(resource)
        current = self._require(rt, namespace, name)
        updated = merge_patch(current, patch)
        return copy.deepcopy(self._replace(rt, updated))

    def remove(self, resource: str, name: str, *, namespace: str | None = None) -> None:
        """Delete directly, with the same cascade as through the API."""
        rt = self.resource_type(resource)
        self._delete(rt, self._require(rt, namespace, name), "Background")

    def _require(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        found = self._find(rt, namespace, name)
        if found is None:
            raise KeyError(f"{rt.group_resource} {namespace}/{name} not found")
        return found

    def _bump(self, obj: Obj) -> None:
        self._rv += 1
        _meta(obj)["resourceVersion"] = str(self._rv)

    def _emit(self, change_type: str, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        change = _Change(self._rv, change_type, rt, copy.deepcopy(obj), old)
        self._history.append(change)
        for stream in self._streams:
            if stream.kind == "watch":
                stream.queue.put_nowait(change)
        self._notify()

    def _open_stream(self, stream: _Stream) -> None:
        self._streams.add(stream)
        self._notify()

    def _close_stream(self, stream: _Stream) -> None:
        self._streams.discard(stream)
        self._notify()

    def _notify(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    def _insert(self, rt: ResourceType, obj: Obj, origin: str) -> Obj:
        meta = _meta(obj)
        key = self._key(rt, meta.get("namespace"), meta["name"])
        self._bump(obj)
        self._objects[key] = obj
        self._origin[key] = origin
        self._emit("ADDED", rt, obj, None)
        return obj

    def _replace(self, rt: ResourceType, obj: Obj) -> Obj:
        meta = _meta(obj)
        key = self._key(rt, meta.get("namespace"), meta["name"])
        old = self._objects[key]
        if rt.kind in _WORKLOAD_KINDS and obj.get("spec") != old.get("spec"):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        self._bump(obj)
        self._objects[key] = obj
        self._emit("MODIFIED", rt, obj, copy.deepcopy(old))
        return obj

    def _delete(self, rt: ResourceType, obj: Obj, propagation: str | None) -> list[Obj]:
        """Remove ``obj`` and what depends on it; returns what went (DELETED events sent)."""
        meta = obj["metadata"]
        gone: list[Obj] = []
        if rt.kind == "Namespace":
            meta.setdefault("deletionTimestamp", _now())
            obj.setdefault("status", {})["phase"] = "Terminating"
            gone += self._empty_namespace(meta["name"])
        elif rt.kind == "Pod":
            meta.setdefault("deletionTimestamp", _now())
            meta.setdefault("deletionGracePeriodSeconds", 0)
        key = self._key(rt, meta.get("namespace"), meta["name"])
        if self._objects.get(key) is not obj:
            return gone
        del self._objects[key]
        self._origin.pop(key, None)
        self._bump(obj)
        self._emit("DELETED", rt, obj, None)
        gone.append(obj)
        if rt.kind == "Pod":
            for log_key in [
                k for k in self._logs if k[:2] == (meta.get("namespace"), meta["name"])
            ]:
                del self._logs[log_key]
        if propagation != "Orphan":
            uid = meta.get("uid")
            for other in self._types:
                for item in self._items(other):
                    if uid in _owner_uids(item) and (
                        not rt.namespaced
                        or item["metadata"].get("namespace") == meta.get("namespace")
                    ):
                        gone += self._delete(other, item, propagation)
        if rt.kind == "Pod" and self._outcome is not None:
            self._refresh_owner(obj)
        return gone

    def _empty_namespace(self, name: str) -> list[Obj]:
        """What the namespace controller does: delete everything in the namespace."""
        gone: list[Obj] = []
        for other in self._types:
            if other.namespaced:
                for item in self._items(other, name):
                    if self._find(other, name, item["metadata"]["name"]) is item:
                        gone += self._delete(other, item, "Background")
        return gone

    def _terminate_namespace(self, rt: ResourceType, current: Obj) -> Obj:
        """The first deletion of a namespace that takes time: Terminating (with the
        conditions the namespace controller sets), then its contents deleted."""
        terminating = copy.deepcopy(current)
        meta = terminating["metadata"]
        meta["deletionTimestamp"] = _now()
        meta["deletionGracePeriodSeconds"] = 0
        now = _now()
        terminating["status"] = {
            "phase": "Terminating",
            "conditions": [
                {
                    "type": kind,
                    "status": "False",
                    "lastTransitionTime": now,
                    "reason": reason,
                    "message": message,
                }
                for kind, reason, message in _NAMESPACE_TERMINATING_CONDITIONS
            ],
        }
        stored = self._replace(rt, terminating)
        self._empty_namespace(meta["name"])
        delay = self.namespace_deletion_delay
        if delay is not None:
            uid = meta.get("uid")

            async def finish() -> None:
                await asyncio.sleep(delay)
                found = self._find(rt, None, meta["name"])
                if found is not None and found["metadata"].get("uid") == uid:
                    self._delete(rt, found, "Background")

            task = asyncio.get_running_loop().create_task(finish())
            self._timers.add(task)
            task.add_done_callback(self._timers.discard)
        return stored

    def compact(self) -> int:
        """Forget the history: watches from an older resourceVersion get 410 Expired."""
        self._history.clear()
        self._compacted_rv = self._rv
        return self._rv

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    # ---------------------------------------------------------------- recording

    @property
    def journal(self) -> list[RequestRecord]:
        """Every mutating request, in order, whatever its outcome (reviews excepted: they
        change nothing; they are in ``requests``)."""
        return [
            r for r in self.requests if r.verb in MUTATING_VERBS and r.resource not in _NOT_STORED
        ]

    def mutations(
        self, verb: str | None = None, resource: str | None = None
    ) -> list[tuple[str, str, str | None, str | None]]:
        """Successful mutations as (verb, "apiVersion/resource", namespace, name)."""
        return [
            r.as_tuple()
            for r in self.journal
            if r.ok
            and (verb is None or r.verb == verb)
            and (resource is None or r.resource == resource or r.gvr == resource)
        ]

    def leftovers(self) -> list[tuple[str, str | None, str]]:
        """Objects made by clients (or by controllers for them) that still exist.

        Events are not counted: a real cluster expires them on its own.
        """
        return sorted(
            (key[0], key[1] or None, key[2])
            for key, origin in self._origin.items()
            if origin in ("client", "controller") and not key[0].endswith("/events")
        )

    def streams(self, kind: str | None = None) -> int:
        """How many watches / log follows / port-forwards are open."""
        return sum(1 for s in self._streams if kind is None or s.kind == kind)

    async def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 2.0, what: str = ""
    ) -> None:
        """Wait until ``predicate()`` holds, re-checking after every change in the double and
        every request it answers."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"timed out waiting for {what or predicate}")
            changed = self._change
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    # ---------------------------------------------------------------- failure injection

    def deny(
        self,
        verb: str,
        resource: str,
        namespace: str | None = None,
        *,
        reason: str = "",
        group: str | None = None,
        user: str | None = None,
    ) -> None:
        """Answer 403 for ``verb`` on ``resource`` (``pods``, ``pods/log``, ``*``) and make
        SelfSubjectAccessReviews for it say not allowed, with ``reason``."""
        self._denials.append(_Denial(verb, resource, namespace, group, user, reason))

    def allow_all(self) -> None:
        self._denials.clear()

    def fail_next(
        self,
        verb: str,
        resource: str,
        status: int,
        *,
        namespace: str | None = None,
        name: str | None = None,
        message: str | None = None,
        reason: str | None = None,
        times: int = 1,
    ) -> None:
        """The next ``times`` matching requests fail with ``status`` (a watch failing with 410
        gets it as an ERROR event, as from a real server)."""
        self._failures.append(
            _Failure(verb, resource, status, namespace, name, message, reason, times)
        )

    def drop_connections(self) -> int:
        """Cut every open watch, log follow and port-forward, as a lost connection would."""
        streams = list(self._streams)
        for stream in streams:
            stream.abort()
        self._streams.clear()
        self._notify()
        return len(streams)

    def send_bookmark(self) -> None:
        """A BOOKMARK to every watch that asked for them (allowWatchBookmarks)."""
        for stream in self._streams:
            if stream.kind == "watch" and stream.bookmarks and stream.target is not None:
                rt = stream.target.rt
                stream.queue.put_nowait(
                    {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": rt.kind,
                            "apiVersion": rt.api_version,
                            "metadata": {"resourceVersion": str(self._rv)},
                        },
                    }
                )

    # ---------------------------------------------------------------- nodes, events, status

    def add_node(
        self,
        name: str,
        *,
        labels: dict[str, str] | None = None,
        ready: bool = True,
        internal_ip: str | None = None,
        zone: str | None = None,
    ) -> Obj:
        index = len(self._items(self.resource_type("nodes"))) + 1
        node_labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": "amd64",
        }
        if zone:
            node_labels["topology.kubernetes.io/zone"] = zone
        node_labels.update(labels or {})
        now = _now()
        node: Obj = {
            "metadata": {"name": name, "labels": node_labels},
            "spec": {"podCIDR": f"198.19.{index}.0/24", "podCIDRs": [f"198.19.{index}.0/24"]},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": internal_ip or f"198.18.100.{index}"},
                    {"type": "Hostname", "address": name},
                ],
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True" if ready else "False",
                        "reason": "KubeletReady" if ready else "KubeletNotReady",
                        "message": "kubelet is posting ready status"
                        if ready
                        else "container runtime network not ready",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
                "nodeInfo": {
                    "architecture": "amd64",
                    "bootID": str(uuid.uuid4()),
                    "containerRuntimeVersion": "containerd://1.7.20",
                    "kernelVersion": "6.1.0-double",
                    "kubeProxyVersion": "v1.31.0",
                    "kubeletVersion": "v1.31.0",
                    "machineID": uuid.uuid4().hex,
                    "operatingSystem": "linux",
                    "osImage": "Debian GNU/Linux 12 (bookworm)",
                    "systemUUID": str(uuid.uuid4()),
                },
            },
        }
        return self.put("nodes", node)

    def _node_ip(self, node_name: str | None) -> str | None:
        node = self._find(self.resource_type("nodes"), None, node_name or "")
        if node is None:
            return None
        for address in node.get("status", {}).get("addresses") or []:
            if address.get("type") == "InternalIP":
                return str(address["address"])
        return None

    def add_event(
        self,
        involved: Obj,
        reason: str,
        message: str,
        *,
        event_type: str = "Normal",
        component: str = "kubelet",
        host: str | None = None,
        field_path: str | None = None,
        count: int = 1,
    ) -> Obj:
        """A core/v1 Event about ``involved`` (a stored object), as a kubelet would post."""
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        involved_ref = {
            "apiVersion": involved.get("apiVersion", "v1"),
            "kind": involved.get("kind", ""),
            "name": meta["name"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        if meta.get("namespace"):
            involved_ref["namespace"] = meta["namespace"]
        if field_path:
            involved_ref["fieldPath"] = field_path
        source = {"component": component}
        if host:
            source["host"] = host
        now = _now()
        event: Obj = {
            "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}", "namespace": namespace},
            "involvedObject": involved_ref,
            "reason": reason,
            "message": message,
            "type": event_type,
            "source": source,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": count,
            "reportingComponent": component,
            "reportingInstance": host or "",
        }
        rt = self.resource_type("events")
        return copy.deepcopy(
            self._insert(rt, self._admit_create(rt, namespace, event), "controller")
        )

    def set_pod_status(
        self,
        namespace: str,
        name: str,
        *,
        phase: str = "Running",
        ready: bool | None = None,
        waiting_reason: str | None = None,
        waiting_message: str | None = None,
        restart_count: int = 0,
        pod_ip: str | None = None,
    ) -> Obj:
        """Give a pod a complete, client-valid status (conditions, containerStatuses)."""
        rt = self.resource_type("pods")
        pod = copy.deepcopy(self._require(rt, namespace, name))
        outcome = PodOutcome(
            phase=phase,
            ready=(phase == "Running" and waiting_reason is None) if ready is None else ready,
            waiting_reason=waiting_reason,
            waiting_message=waiting_message,
            restart_count=restart_count,
        )
        pod["status"] = self._pod_status(pod, outcome, pod_ip=pod_ip)
        updated = self._replace(rt, pod)
        if self._outcome is not None:
            self._refresh_owner(updated)
        return copy.deepcopy(updated)

    def _pod_status(self, pod: Obj, outcome: PodOutcome, *, pod_ip: str | None = None) -> Obj:
        spec = pod.get("spec", {})
        meta = pod["metadata"]
        now = _now()
        previous = pod.get("status") or {}
        node = spec.get("nodeName")
        host_ip = self._node_ip(node)
        containers = spec.get("containers") or []
        names = [c.get("name", "") for c in containers]
        ready = outcome.ready and outcome.phase == "Running"
        unready = [] if ready else names

        def condition(kind: str, ok: bool, reason: str | None = None) -> Obj:
            result: Obj = {
                "type": kind,
                "status": "True" if ok else "False",
                "lastProbeTime": None,
                "lastTransitionTime": now,
            }
            if reason:
                result["reason"] = reason
                result["message"] = f"containers with unready status: [{' '.join(unready)}]"
            return result

        status: Obj = {
            "phase": outcome.phase,
            "qosClass": previous.get("qosClass", "BestEffort"),
            "conditions": [
                condition("PodReadyToStartContainers", node is not None),
                condition("Initialized", True),
                condition("Ready", ready, None if ready else "ContainersNotReady"),
                condition("ContainersReady", ready, None if ready else "ContainersNotReady"),
                condition("PodScheduled", node is not None),
            ],
            "containerStatuses": [],
            "startTime": previous.get("startTime", now),
        }
        if host_ip:
            status["hostIP"] = host_ip
            status["hostIPs"] = [{"ip": host_ip}]
        ip = pod_ip or previous.get("podIP")
        if ip is None and node is not None and outcome.phase in ("Running", "Succeeded"):
            ip = host_ip if spec.get("hostNetwork") else self._allocate_pod_ip(node)
        if ip:
            status["podIP"] = ip
            status["podIPs"] = [{"ip": ip}]
        for container in containers:
            image = container.get("image", "")
            fmt = {"image": image, "container": container.get("name", ""), "pod": meta["name"]}
            state: Obj
            if outcome.waiting_reason:
                waiting: Obj = {"reason": outcome.waiting_reason}
                if outcome.waiting_message:
                    waiting["message"] = outcome.waiting_message.format(**fmt)
                state = {"waiting": waiting}
            elif outcome.phase == "Running":
                state = {"running": {"startedAt": now}}
            elif outcome.phase in ("Succeeded", "Failed"):
                failed = outcome.phase == "Failed"
                state = {
                    "terminated": {
                        "exitCode": 1 if failed else 0,
                        "reason": "Error" if failed else "Completed",
                        "startedAt": now,
                        "finishedAt": now,
                    }
                }
            else:
                state = {"waiting": {"reason": "ContainerCreating"}}
            pulled = "running" in state or "terminated" in state
            digest = hashlib.sha256(image.encode()).hexdigest()
            container_status: Obj = {
                "name": container.get("name", ""),
                "image": image,
                "imageID": f"{image.split(':')[0]}@sha256:{digest}" if pulled else "",
                "ready": ready,
                "started": "running" in state,
                "restartCount": outcome.restart_count,
                "state": state,
            }
            if pulled:
                container_status["containerID"] = f"containerd://{secrets.token_hex(32)}"
            status["containerStatuses"].append(container_status)
        return status

    def _allocate_pod_ip(self, node: str) -> str:
        nodes = [n["metadata"]["name"] for n in self._items(self.resource_type("nodes"))]
        subnet = nodes.index(node) + 1 if node in nodes else 250
        return f"198.19.{subnet}.{next(self._ips) % 250 + 2}"

    def set_daemonset_status(
        self,
        namespace: str,
        name: str,
        *,
        desired: int,
        ready: int,
        available: int | None = None,
        updated: int | None = None,
        current: int | None = None,
        misscheduled: int = 0,
        observed_generation: int | None = None,
    ) -> Obj:
        """Set a DaemonSet's rollout counters; zero optional counters are left out, as a real
        server does (so ``number_available`` reads None, not 0)."""
        rt = self.resource_type("daemonsets")
        ds = copy.deepcopy(self._require(rt, namespace, name))
        available = ready if available is None else available
        status: Obj = {
            "currentNumberScheduled": desired if current is None else current,
            "desiredNumberScheduled": desired,
            "numberMisscheduled": misscheduled,
            "numberReady": ready,
            "observedGeneration": ds["metadata"].get("generation", 1)
            if observed_generation is None
            else observed_generation,
        }
        optional = {
            "numberAvailable": available,
            "numberUnavailable": max(desired - available, 0),
            "updatedNumberScheduled": desired if updated is None else updated,
        }
        status.update({k: v for k, v in optional.items() if v})
        ds["status"] = status
        return copy.deepcopy(self._replace(rt, ds))

    # ---------------------------------------------------------------- logs, port-forward

    def _log_key(self, namespace: str, pod: str, container: str | None) -> tuple[str, str, str]:
        if container is None:
            found = self._require(self.resource_type("pods"), namespace, pod)
            container = found["spec"]["containers"][0]["name"]
        return (namespace, pod, str(container))

    def set_pod_log(
        self, namespace: str, pod: str, text: str, *, container: str | None = None
    ) -> None:
        key = self._log_key(namespace, pod, container)
        self._logs[key] = text
        self._logs_ended.discard(key)
        self._notify()

    def append_pod_log(
        self, namespace: str, pod: str, text: str, *, container: str | None = None
    ) -> None:
        key = self._log_key(namespace, pod, container)
        self._logs[key] = self._logs.get(key, "") + text
        self._notify()

    def end_pod_log(self, namespace: str, pod: str, *, container: str | None = None) -> None:
        """The container exited: ``follow`` streams of its log end."""
        self._logs_ended.add(self._log_key(namespace, pod, container))
        self._notify()

    def forward(self, namespace: str, pod: str, port: int, target: tuple[str, int]) -> None:
        """Port-forwards to ``pod``:``port`` reach the TCP server at ``target``."""
        self._forwards[(namespace, pod, port)] = target

    # ---------------------------------------------------------------- controllers

    def run_controllers(
        self, outcome: OutcomeRule | None = None, *, step_delay: float = 0.0
    ) -> None:
        """From now on, act like the cluster's controllers and kubelets.

        A created DaemonSet gets one pod per node matching its nodeSelector (ownerReferences,
        template labels, ``controller-revision-hash``), a created pod is scheduled (first
        matching node) and brought to ``outcome`` (a ``PodOutcome`` or a function of the pod),
        with the events a kubelet posts; DaemonSet status follows its pods.
        """
        self._outcome = outcome or PodOutcome.running()
        self._step_delay = step_delay

    def stop_controllers(self) -> None:
        self._outcome = None

    async def settled(self, timeout: float = 2.0) -> None:
        """Wait until the controllers have nothing left to do."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError("controllers did not settle")
            await asyncio.wait(set(self._tasks), timeout=remaining)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _step(self) -> None:
        await asyncio.sleep(self._step_delay)

    def _outcome_for(self, pod: Obj) -> PodOutcome:
        rule = self._outcome or PodOutcome.running()
        return rule(copy.deepcopy(pod)) if callable(rule) else rule

    def _matching_nodes(self, pod_spec: Obj) -> list[str]:
        selector = pod_spec.get("nodeSelector") or {}
        return [
            node["metadata"]["name"]
            for node in self._items(self.resource_type("nodes"))
            if all(_labels(node).get(k) == v for k, v in selector.items())
        ]

    def _on_created(self, rt: ResourceType, obj: Obj) -> None:
        if self._outcome is None:
            return
        meta = obj["metadata"]
        if rt.kind == "DaemonSet":
            self._spawn(self._run_daemonset(meta["namespace"], meta["name"], meta["uid"]))
        elif rt.kind == "Pod":
            self._spawn(self._run_pod(meta["namespace"], meta["name"], meta["uid"]))
        elif rt.kind in ("Deployment", "ReplicaSet", "StatefulSet", "Job"):
            self._spawn(self._run_workload(rt, meta["namespace"], meta["name"], meta["uid"]))

    @staticmethod
    def _owner_ref(owner: Obj) -> Obj:
        return {
            "apiVersion": owner["apiVersion"],
            "kind": owner["kind"],
            "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def _create_owned(self, rt: ResourceType, owner: Obj, obj: Obj) -> Obj | None:
        """Create what a controller makes for ``owner`` (None if the namespace refuses it)."""
        _meta(obj)["ownerReferences"] = [self._owner_ref(owner)]
        try:
            admitted = self._admit_create(rt, owner["metadata"]["namespace"], obj)
        except ApiError:
            return None  # the namespace went away under us
        created = self._insert(rt, admitted, "controller")
        made = created["metadata"]["name"]
        reason, message = {
            "Deployment": (
                "ScalingReplicaSet",
                f"Scaled up replica set {made} from 0 to {owner['spec'].get('replicas', 1)}",
            ),
            "StatefulSet": (
                "SuccessfulCreate",
                f"create Pod {made} in StatefulSet {owner['metadata']['name']} successful",
            ),
            "CronJob": ("SuccessfulCreate", f"Created job {made}"),
        }.get(owner["kind"], ("SuccessfulCreate", f"Created pod: {made}"))
        self.add_event(owner, reason, message, component=f"{owner['kind'].lower()}-controller")
        return created

    async def _run_workload(self, rt: ResourceType, namespace: str, name: str, uid: str) -> None:
        """The Deployment, ReplicaSet, StatefulSet and Job controllers: the objects they make,
        named, labelled and owned as the real ones do (statuses are not kept)."""
        await self._step()
        owner = self._live(rt.plural, namespace, name, uid)
        if owner is None:
            return
        spec = owner["spec"]
        template = copy.deepcopy(spec.get("template") or {})
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        pods_rt = self.resource_type("pods")
        pods: list[tuple[str, Obj]] = []  # (generateName or name, labels)
        if rt.kind == "Deployment":
            digest = _template_hash(template)
            rs_labels = {**labels, "pod-template-hash": digest}
            selector = copy.deepcopy(spec.get("selector") or {})
            selector.setdefault("matchLabels", {})["pod-template-hash"] = digest
            template.setdefault("metadata", {})["labels"] = rs_labels
            rs_rt = self.resource_type("replicasets")
            replicaset = self._create_owned(
                rs_rt,
                owner,
                {
                    "metadata": {"name": f"{name}-{digest}", "labels": rs_labels},
                    "spec": {
                        "replicas": spec.get("replicas", 1),
                        "selector": selector,
                        "template": template,
                    },
                },
            )
            if replicaset is not None:
                meta = replicaset["metadata"]
                self._spawn(self._run_workload(rs_rt, namespace, meta["name"], meta["uid"]))
            return
        if rt.kind == "ReplicaSet":
            pods = [(f"{name}-", labels) for _ in range(int(spec.get("replicas", 1)))]
        elif rt.kind == "Job":
            pods = [(f"{name}-", labels) for _ in range(int(spec.get("parallelism", 1)))]
        else:  # StatefulSet
            revision = f"{name}-{_template_hash(template)}"
            for ordinal in range(int(spec.get("replicas", 1))):
                pod_labels = {
                    **labels,
                    "apps.kubernetes.io/pod-index": str(ordinal),
                    "controller-revision-hash": revision,
                    "statefulset.kubernetes.io/pod-name": f"{name}-{ordinal}",
                }
                pods.append((f"{name}-{ordinal}", pod_labels))
        for pod_name, pod_labels in pods:
            key = "generateName" if pod_name.endswith("-") else "name"
            pod_spec = copy.deepcopy(template.get("spec") or {})
            if rt.kind == "StatefulSet":
                pod_spec.setdefault("hostname", pod_name)
                if spec.get("serviceName"):
                    pod_spec.setdefault("subdomain", spec["serviceName"])
            pod: Obj = {
                "metadata": {
                    key: pod_name,
                    "labels": pod_labels,
                    "annotations": dict((template.get("metadata") or {}).get("annotations") or {}),
                },
                "spec": pod_spec,
            }
            created = self._create_owned(pods_rt, owner, pod)
            if created is None:
                return
            self._spawn(
                self._run_pod(namespace, created["metadata"]["name"], created["metadata"]["uid"])
            )

    def run_cronjob(self, namespace: str, name: str, *, scheduled: datetime | None = None) -> Obj:
        """The CronJob's schedule fires now (tests say when): its Job, named
        ``<cronjob>-<minutes since the epoch>`` and owned by it, as the CronJob controller
        makes it; with ``run_controllers``, the Job's pods follow."""
        cronjobs = self.resource_type("cronjobs")
        cronjob = self._require(cronjobs, namespace, name)
        when = scheduled or datetime.now(UTC)
        template = copy.deepcopy(cronjob["spec"]["jobTemplate"])
        job_meta = template.get("metadata") or {}
        job: Obj = {
            "metadata": {
                "name": f"{name}-{int(when.timestamp()) // 60}",
                "labels": dict(job_meta.get("labels") or {}),
                "annotations": {
                    **(job_meta.get("annotations") or {}),
                    "batch.kubernetes.io/cronjob-scheduled-timestamp": when.strftime(
                        "%Y-%m-%dT%H:%M:%SZ"
                    ),
                },
            },
            "spec": template["spec"],
        }
        jobs = self.resource_type("jobs")
        created = self._create_owned(jobs, cronjob, job)
        if created is None:
            raise ApiError(403, "Forbidden", f"namespace {namespace} refuses the Job")
        updated = copy.deepcopy(cronjob)
        updated["status"] = {
            "active": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": created["metadata"]["name"],
                    "namespace": namespace,
                    "uid": created["metadata"]["uid"],
                    "resourceVersion": created["metadata"]["resourceVersion"],
                }
            ],
            "lastScheduleTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        self._replace(cronjobs, updated)
        self._on_created(jobs, created)
        return copy.deepcopy(created)

    def _live(self, kind: str, namespace: str, name: str, uid: str) -> Obj | None:
        found = self._find(self.resource_type(kind), namespace, name)
        if found is None or found["metadata"].get("uid") != uid:
            return None
        return found

    async def _run_daemonset(self, namespace: str, name: str, uid: str) -> None:
        await self._step()
        ds = self._live("daemonsets", namespace, name, uid)
        if ds is None:
            return
        template = ds["spec"].get("template", {})
        template_meta = template.get("metadata", {})
        revision = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        pods_rt = self.resource_type("pods")
        created: list[Obj] = []
        for node in self._matching_nodes(template.get("spec", {})):
            pod: Obj = {
                "metadata": {
                    "generateName": f"{name}-",
                    "labels": {
                        **(template_meta.get("labels") or {}),
                        "controller-revision-hash": revision,
                        "pod-template-generation": str(ds["metadata"].get("generation", 1)),
                    },
                    "annotations": dict(template_meta.get("annotations") or {}),
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "DaemonSet",
                            "name": name,
                            "uid": uid,
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": {**copy.deepcopy(template.get("spec", {})), "nodeName": node},
            }
            try:
                admitted = self._admit_create(pods_rt, namespace, pod)
            except ApiError:
                return  # the namespace went away under us
            created.append(self._insert(pods_rt, admitted, "controller"))
            self.add_event(
                ds,
                "SuccessfulCreate",
                f"Created pod: {admitted['metadata']['name']}",
                component="daemonset-controller",
            )
        self._refresh_daemonset(ds)
        for pod in created:
            meta = pod["metadata"]
            self._spawn(self._run_pod(namespace, meta["name"], meta["uid"]))

    async def _run_pod(self, namespace: str, name: str, uid: str) -> None:
        await self._step()
        pod = self._live("pods", namespace, name, uid)
        if pod is None:
            return
        pod = copy.deepcopy(pod)
        rt = self.resource_type("pods")
        outcome = self._outcome_for(pod)
        node = pod["spec"].get("nodeName")
        if node is None:
            nodes = self._matching_nodes(pod["spec"])
            if not nodes:
                total = len(self._items(self.resource_type("nodes")))
                self.add_event(
                    pod,
                    "FailedScheduling",
                    f"0/{total} nodes are available: no node matches the pod.",
                    event_type="Warning",
                    component="default-scheduler",
                )
                pod["status"]["conditions"] = [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "lastProbeTime": None,
                        "lastTransitionTime": _now(),
                    }
                ]
                self._replace(rt, pod)
                return
            node = nodes[0]
            pod["spec"]["nodeName"] = node
        self.add_event(
            pod,
            "Scheduled",
            f"Successfully assigned {namespace}/{name} to {node}",
            component="default-scheduler",
        )
        pod["status"] = self._pod_status(pod, PodOutcome.pending())
        self._replace(rt, pod)
        self._refresh_owner(pod)
        await self._step()
        pod = self._live("pods", namespace, name, uid)
        if pod is None:
            return
        pod = copy.deepcopy(pod)
        for container in pod["spec"].get("containers") or []:
            image, cname = container.get("image", ""), container.get("name", "")
            fmt = {"image": image, "container": cname, "pod": name}
            path = f"spec.containers{{{cname}}}"

            def event(kind: str, reason: str, message: str, path: str = path) -> None:
                self.add_event(pod, reason, message, event_type=kind, host=node, field_path=path)

            if outcome.waiting_reason in ("ImagePullBackOff", "ErrImagePull"):
                event("Normal", "Pulling", f'Pulling image "{image}"')
                event(
                    "Warning",
                    "Failed",
                    f'Failed to pull image "{image}": {outcome.pull_error.format(**fmt)}',
                )
                event("Warning", "Failed", "Error: ErrImagePull")
                event("Normal", "BackOff", f'Back-off pulling image "{image}"')
                event("Warning", "Failed", f"Error: {outcome.waiting_reason}")
            elif outcome.waiting_reason == "ContainerCreating":
                pass
            else:
                event("Normal", "Pulled", f'Container image "{image}" already present on machine')
                event("Normal", "Created", f"Created container: {cname}")
                event("Normal", "Started", f"Started container {cname}")
                if outcome.waiting_reason == "CrashLoopBackOff":
                    event("Warning", "BackOff", (outcome.waiting_message or "").format(**fmt))
                elif not outcome.ready:
                    event("Warning", "Unhealthy", "Readiness probe failed: connection refused")
            if outcome.logs:
                self._logs[(namespace, name, cname)] = outcome.logs
        for kind, reason, message in outcome.events:
            self.add_event(pod, reason, message, event_type=kind, host=node)
        pod["status"] = self._pod_status(pod, outcome)
        self._replace(rt, pod)
        self._refresh_owner(pod)

    def _refresh_owner(self, pod: Obj) -> None:
        meta = pod["metadata"]
        namespace = self._find(self.resource_type("namespaces"), None, meta.get("namespace", ""))
        if namespace is None or namespace.get("status", {}).get("phase") == "Terminating":
            return
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") == "DaemonSet":
                ds = self._live("daemonsets", meta.get("namespace", ""), ref["name"], ref["uid"])
                if ds is not None:
                    self._refresh_daemonset(ds)

    def _refresh_daemonset(self, ds: Obj) -> None:
        meta = ds["metadata"]
        pods = [
            p
            for p in self._items(self.resource_type("pods"), meta["namespace"])
            if meta["uid"] in _owner_uids(p)
        ]
        desired = len(self._matching_nodes(ds["spec"].get("template", {}).get("spec", {})))
        ready = sum(1 for p in pods if _condition_true(p, "Ready"))
        scheduled = sum(1 for p in pods if p["spec"].get("nodeName"))
        self.set_daemonset_status(
            meta["namespace"],
            meta["name"],
            desired=desired,
            ready=ready,
            current=scheduled,
            updated=len(pods),
        )

    # ---------------------------------------------------------------- admission

    def _check_namespace(self, rt: ResourceType, namespace: str, name: str) -> None:
        ns = self._find(self.resource_type("namespaces"), None, namespace)
        if ns is None:
            raise ApiError(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                {"name": namespace, "kind": "namespaces"},
            )
        if ns.get("status", {}).get("phase") == "Terminating":
            message = (
                f"unable to create new content in namespace {namespace} "
                "because it is being terminated"
            )
            raise ApiError(
                403,
                "Forbidden",
                f'{rt.group_resource} "{name}" is forbidden: {message}',
                {
                    "name": name,
                    "group": rt.group,
                    "kind": rt.plural,
                    "causes": [
                        {
                            "reason": "NamespaceTerminating",
                            "message": message,
                            "field": "metadata.namespace",
                        }
                    ],
                },
            )

    def _admit_create(self, rt: ResourceType, namespace: str | None, body: Obj) -> Obj:
        """Validate and default a new object (not stored yet)."""
        obj = copy.deepcopy(body)
        for attr, expected in (("apiVersion", rt.api_version), ("kind", rt.kind)):
            given = obj.get(attr)
            if given not in (None, "", expected):
                raise _bad_request(
                    f"the {'API version' if attr == 'apiVersion' else 'kind'} in the data "
                    f"({given}) does not match the expected "
                    f"{'API version' if attr == 'apiVersion' else 'kind'} ({expected})"
                )
            obj[attr] = expected
        meta = _meta(obj)
        name = meta.get("name")
        if not name and meta.get("generateName"):
            suffix = "".join(secrets.choice(_SAFE_ALPHABET) for _ in range(5))
            name = meta["name"] = f"{meta['generateName']}{suffix}"
        if not name:
            raise _invalid(
                rt, "", "metadata.name", "Required value: name or generateName is required"
            )
        if rt.group != _RBAC and (len(name) > 253 or not _DNS_SUBDOMAIN.match(name)):
            raise _invalid(
                rt,
                name,
                "metadata.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of '
                "lower case alphanumeric characters, '-' or '.', and must start and end with "
                "an alphanumeric character",
            )
        if rt.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise _bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            assert namespace is not None
            self._check_namespace(rt, namespace, name)
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if self._find(rt, namespace, name) is not None:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{rt.group_resource} "{name}" already exists',
                {"name": name, "group": rt.group, "kind": rt.plural}
                if rt.group
                else {"name": name, "kind": rt.plural},
            )
        self._validate_and_default(rt, obj, name)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        for transient in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(transient, None)
        if rt.kind in _WORKLOAD_KINDS or rt.kind in ("Job", "CronJob"):
            meta["generation"] = 1
        if rt.kind == "Job" and not (obj["spec"].get("manualSelector")):
            # The Job's own selector and pod labels, from its uid.
            job_labels = {
                "batch.kubernetes.io/controller-uid": meta["uid"],
                "batch.kubernetes.io/job-name": name,
                "controller-uid": meta["uid"],
                "job-name": name,
            }
            obj["spec"]["selector"] = {
                "matchLabels": {"batch.kubernetes.io/controller-uid": meta["uid"]}
            }
            template_meta = obj["spec"]["template"].setdefault("metadata", {})
            template_meta["labels"] = {**(template_meta.get("labels") or {}), **job_labels}
        return obj

    def _validate_and_default(self, rt: ResourceType, obj: Obj, name: str) -> None:
        spec = obj.get("spec")
        if rt.kind == "Namespace":
            _meta(obj).setdefault("labels", {})["kubernetes.io/metadata.name"] = name
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
        elif rt.kind == "Pod":
            if not isinstance(spec, dict) or not spec.get("containers"):
                raise _invalid(rt, name, "spec.containers", "Required value")
            for container in spec["containers"]:
                if not container.get("name") or not container.get("image"):
                    raise _invalid(rt, name, "spec.containers", "name and image are required")
                image = container["image"]
                tagged = ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")
                container.setdefault("imagePullPolicy", "IfNotPresent" if tagged else "Always")
                container.setdefault("terminationMessagePath", "/dev/termination-log")
                container.setdefault("terminationMessagePolicy", "File")
                container.setdefault("resources", {})
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("serviceAccountName", spec.get("serviceAccount", "default"))
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("securityContext", {})
            has_resources = any(c["resources"] for c in spec["containers"])
            obj["status"] = {
                "phase": "Pending",
                "qosClass": "Burstable" if has_resources else "BestEffort",
            }
        elif rt.kind == "Service":
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            for port in spec.get("ports") or []:
                if "port" not in port:
                    raise _invalid(rt, name, "spec.ports[0].port", "Required value")
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port["port"])
            if spec["type"] != "ExternalName" and spec.get("clusterIP") != "None":
                if not spec.get("clusterIP"):
                    spec["clusterIP"] = f"198.19.255.{next(self._ips) % 250 + 2}"
                spec["clusterIPs"] = [spec["clusterIP"]]
                spec.setdefault("ipFamilies", ["IPv4"])
                spec.setdefault("ipFamilyPolicy", "SingleStack")
            obj["status"] = {"loadBalancer": {}}
        elif rt.kind == "Secret":
            data = obj.setdefault("data", {})
            for key, value in (obj.pop("stringData", None) or {}).items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            obj.setdefault("type", "Opaque")
            if obj["type"] == SERVICE_ACCOUNT_TOKEN_TYPE:
                self._fill_service_account_token(rt, obj, name)
        elif rt.kind in _WORKLOAD_KINDS:
            if not isinstance(spec, dict):
                raise _invalid(rt, name, "spec", "Required value")
            selector = (spec.get("selector") or {}).get("matchLabels")
            template_labels = spec.get("template", {}).get("metadata", {}).get("labels") or {}
            if not selector and not (spec.get("selector") or {}).get("matchExpressions"):
                raise _invalid(rt, name, "spec.selector", "Required value")
            if selector and any(template_labels.get(k) != v for k, v in selector.items()):
                raise _invalid(
                    rt,
                    name,
                    "spec.template.metadata.labels",
                    f"Invalid value: {template_labels}: `selector` does not match template "
                    "`labels`",
                )
            if not spec.get("template", {}).get("spec", {}).get("containers"):
                raise _invalid(rt, name, "spec.template.spec.containers", "Required value")
            spec.setdefault("revisionHistoryLimit", 10)
            if rt.kind == "DaemonSet":
                spec.setdefault(
                    "updateStrategy",
                    {
                        "type": "RollingUpdate",
                        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
                    },
                )
                obj["status"] = {
                    "currentNumberScheduled": 0,
                    "desiredNumberScheduled": 0,
                    "numberMisscheduled": 0,
                    "numberReady": 0,
                }
            elif rt.kind == "Deployment":
                spec.setdefault("replicas", 1)
                obj["status"] = {}
            else:
                spec.setdefault("replicas", 1)
                obj["status"] = {"replicas": 0}
        elif rt.kind == "Job":
            self._validate_pod_template(rt, name, spec, "spec.template")
            assert isinstance(spec, dict)
            for key, value in (
                ("parallelism", 1),
                ("completions", 1),
                ("backoffLimit", 6),
                ("completionMode", "NonIndexed"),
                ("suspend", False),
            ):
                spec.setdefault(key, value)
            obj["status"] = {}
        elif rt.kind == "CronJob":
            if not isinstance(spec, dict) or not spec.get("schedule"):
                raise _invalid(rt, name, "spec.schedule", "Required value")
            job_spec = (spec.get("jobTemplate") or {}).get("spec")
            self._validate_pod_template(rt, name, job_spec, "spec.jobTemplate.spec.template")
            for key, value in (
                ("concurrencyPolicy", "Allow"),
                ("suspend", False),
                ("successfulJobsHistoryLimit", 3),
                ("failedJobsHistoryLimit", 1),
            ):
                spec.setdefault(key, value)
            obj["status"] = {}
        elif rt.kind in ("ClusterRoleBinding", "RoleBinding"):
            if not obj.get("roleRef"):
                raise _invalid(rt, name, "roleRef", "Required value")
            kind = obj["roleRef"].get("kind")
            allowed = (
                ("ClusterRole",) if rt.kind == "ClusterRoleBinding" else ("Role", "ClusterRole")
            )
            if kind not in allowed:
                supported = ", ".join(f'"{k}"' for k in allowed)
                raise _invalid(
                    rt,
                    name,
                    "roleRef.kind",
                    f'Unsupported value: "{kind}": supported values: {supported}',
                )

    @staticmethod
    def _validate_pod_template(rt: ResourceType, name: str, spec: Any, where: str) -> None:
        """A Job's pod template: containers, and restartPolicy OnFailure or Never."""
        template_spec = (
            ((spec or {}).get("template") or {}).get("spec") if isinstance(spec, dict) else None
        )
        if not isinstance(template_spec, dict) or not template_spec.get("containers"):
            raise _invalid(rt, name, f"{where}.spec.containers", "Required value")
        policy = template_spec.setdefault("restartPolicy", "Always")
        if policy not in ("OnFailure", "Never"):
            raise _invalid(
                rt,
                name,
                f"{where}.spec.restartPolicy",
                f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"',
            )

    def _fill_service_account_token(self, rt: ResourceType, secret: Obj, name: str) -> None:
        """What the token controller does for a ``kubernetes.io/service-account-token``
        Secret: a token of the ServiceAccount its annotation names, in ``data.token``
        (valid while the Secret and the ServiceAccount exist)."""
        annotations = _meta(secret).setdefault("annotations", {})
        account = annotations.get("kubernetes.io/service-account.name")
        field_path = "metadata.annotations[kubernetes.io/service-account.name]"
        if not account:
            raise _invalid(rt, name, field_path, "Required value")
        namespace = _meta(secret).get("namespace", "")
        found = self._find(self.resource_type("serviceaccounts"), namespace, account)
        if found is None:
            return  # the real token controller never fills it (and deletes the Secret)
        annotations["kubernetes.io/service-account.uid"] = found["metadata"]["uid"]
        token = f"sa-{secrets.token_urlsafe(18)}"
        self.tokens[token] = service_account_user(namespace, account)
        self._sa_tokens[token] = (namespace, account, name)
        data = secret["data"]
        data["token"] = base64.b64encode(token.encode()).decode()
        data["namespace"] = base64.b64encode(namespace.encode()).decode()

    # ---------------------------------------------------------------- HTTP

    def _authenticate(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            token = header[len("Bearer ") :].strip()
            user = self.tokens.get(token)
            if user is not None and (token not in self._sa_tokens or self._sa_token_valid(token)):
                return user
            raise ApiError(401, "Unauthorized", "Unauthorized")
        if self.require_auth:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return "system:anonymous"

    def _parse(self, path: str) -> _Target | Obj:
        """A resource target, or the body of a discovery answer."""
        parts = [p for p in path.split("/") if p]
        if parts == ["version"]:
            return SERVER_VERSION
        if parts == ["api"]:
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self._port}"}
                ],
            }
        if parts == ["apis"]:
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": self._groups()}
        if len(parts) == 2 and parts[0] == "apis":
            for found in self._groups():
                if found["name"] == parts[1]:
                    return {"kind": "APIGroup", "apiVersion": "v1", **found}
            raise _server_not_found()
        if len(parts) >= 2 and parts[0] == "api" and parts[1] == "v1":
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise _server_not_found()
        if not rest:
            return self._resource_list(group, version)
        if len(rest) >= 3 and rest[0] == "namespaces":
            rt = self._lookup(group, version, rest[2])
            if rt is not None and rt.namespaced and len(rest) <= 5:
                return self._target(rt, rest[1], rest[3:])
        rt = self._lookup(group, version, rest[0])
        if rt is None or len(rest) > 3 or (rt.namespaced and len(rest) > 1):
            raise _server_not_found()
        return self._target(rt, None, rest[1:])

    @staticmethod
    def _target(rt: ResourceType, namespace: str | None, rest: list[str]) -> _Target:
        name = rest[0] if rest else None
        sub = rest[1] if len(rest) > 1 else None
        if sub is not None and sub not in rt.subresources:
            raise _server_not_found()
        return _Target(rt, namespace, name, sub)

    def _groups(self) -> list[Obj]:
        groups: dict[str, list[str]] = {}
        for rt in self._types:
            if rt.group:
                versions = groups.setdefault(rt.group, [])
                if rt.version not in versions:
                    versions.append(rt.version)
        return [
            {
                "name": name,
                "versions": [{"groupVersion": f"{name}/{v}", "version": v} for v in versions],
                "preferredVersion": {
                    "groupVersion": f"{name}/{versions[0]}",
                    "version": versions[0],
                },
            }
            for name, versions in groups.items()
        ]

    def _resource_list(self, group: str, version: str) -> Obj:
        resources: list[Obj] = []
        for rt in self._types:
            if (rt.group, rt.version) != (group, version):
                continue
            resources.append(
                {
                    "name": rt.plural,
                    "singularName": rt.singular,
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": list(rt.verbs),
                    "shortNames": list(rt.short_names),
                }
            )
            for sub in rt.subresources:
                resources.append(
                    {
                        "name": f"{rt.plural}/{sub}",
                        "singularName": "",
                        "namespaced": rt.namespaced,
                        "kind": _SUBRESOURCE_KIND.get(sub, rt.kind),
                        "verbs": list(_SUBRESOURCE_VERBS.get(sub, ("get",))),
                    }
                )
        if not resources:
            raise _server_not_found()
        api_version = f"{group}/{version}" if group else version
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": api_version,
            "resources": resources,
        }

    @staticmethod
    def _verb(method: str, target: _Target, watch: bool) -> str:
        if method == "GET":
            if target.name is not None:
                return "get"
            return "watch" if watch else "list"
        if method == "POST":
            return "create"
        if method == "PUT":
            return "update"
        if method == "PATCH":
            return "patch"
        if method == "DELETE":
            return "delete" if target.name is not None else "deletecollection"
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    def request_attributes(
        self, user: str, verb: str, target: _Target, query: dict[str, str] | None = None
    ) -> Attributes:
        """The authorizer's view of a request (see :class:`Attributes`)."""
        namespace, name = target.namespace or "", target.name or ""
        if target.rt.kind == "Namespace" and target.name:
            namespace = target.name  # a real server's RequestInfo does the same
        if verb in ("list", "watch"):
            name = _exact_name((query or {}).get("fieldSelector"))
        return Attributes(
            user,
            user_groups(user),
            verb,
            target.rt.group,
            target.rt.plural,
            target.sub or "",
            namespace,
            name,
        )

    def rbac_enforced(self, user: str) -> bool:
        """Whether ``user``'s requests go through RBAC: ServiceAccounts and ``rbac_users``."""
        return user.startswith(SERVICE_ACCOUNT_PREFIX) or user in self.rbac_users

    def authorize(self, attrs: Attributes) -> tuple[bool, str]:
        """The RBAC authorizer's answer for a resource request: (allowed, reason).

        ClusterRoleBindings first, then the RoleBindings of the request's namespace; for each
        binding, the first subject that names the user (User, Group, or ServiceAccount whose
        namespace defaults to the binding's) brings the rules of its Role or ClusterRole. The
        reason says which binding allowed, or (denied) which role could not be found.
        """
        errors: list[str] = []
        cluster_bindings = self._items(self.resource_type("clusterrolebindings"))
        scopes = [("ClusterRoleBinding", cluster_bindings, "")]
        if attrs.namespace:
            rolebindings = self._items(self.resource_type("rolebindings"), attrs.namespace)
            scopes.append(("RoleBinding", rolebindings, attrs.namespace))
        for kind, bindings, namespace in scopes:
            for binding in bindings:
                subject = next(
                    (
                        s
                        for s in binding.get("subjects") or []
                        if _subject_applies(s, attrs.user, attrs.groups, namespace)
                    ),
                    None,
                )
                if subject is None:
                    continue
                ref = binding.get("roleRef") or {}
                rules, error = self._role_rules(ref, namespace)
                if error:
                    errors.append(error)
                if any(rule_allows(rule, attrs) for rule in rules):
                    name = binding["metadata"]["name"]
                    if namespace:
                        name = f"{name}/{namespace}"
                    return True, (
                        f'RBAC: allowed by {kind} "{name}" of {ref.get("kind")} '
                        f'"{ref.get("name")}" to {_describe_subject(subject, namespace)}'
                    )
        if not errors:
            return False, ""
        return False, "RBAC: " + (errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]")

    def authorize_path(self, user: str, verb: str, path: str) -> tuple[bool, str]:
        """The RBAC answer for a non-resource URL (``/version``, ``/healthz``...)."""
        if any(
            non_resource_rule_allows({"verbs": ["get"], "nonResourceURLs": [url]}, verb, path)
            for url in _BOOTSTRAP_PATHS
        ):
            return True, (
                'RBAC: allowed by ClusterRoleBinding "system:discovery" of ClusterRole '
                '"system:discovery" to Group "system:authenticated"'
            )
        groups = user_groups(user)
        for binding in self._items(self.resource_type("clusterrolebindings")):
            subject = next(
                (s for s in binding.get("subjects") or [] if _subject_applies(s, user, groups, "")),
                None,
            )
            if subject is None:
                continue
            ref = binding.get("roleRef") or {}
            rules, _ = self._role_rules(ref, "")
            if any(non_resource_rule_allows(rule, verb, path) for rule in rules):
                return True, (
                    f'RBAC: allowed by ClusterRoleBinding "{binding["metadata"]["name"]}" of '
                    f'{ref.get("kind")} "{ref.get("name")}" to {_describe_subject(subject, "")}'
                )
        return False, ""

    def _role_rules(self, ref: Obj, namespace: str) -> tuple[list[Obj], str]:
        """The rules a roleRef points at, or an error as the real authorizer words it."""
        kind, name = ref.get("kind"), ref.get("name", "")
        role: Obj | None
        if kind == "ClusterRole":
            role = self._find(self.resource_type("clusterroles"), None, name)
        elif kind == "Role" and namespace:
            role = self._find(self.resource_type("roles"), namespace, name)
        else:
            return [], f'unsupported role reference kind: "{kind}"'
        if role is None:
            return [], f'{str(kind).lower()}.{_RBAC} "{name}" not found'
        return [r for r in role.get("rules") or [] if isinstance(r, dict)], ""

    def _authorize(
        self, user: str, verb: str, target: _Target, query: dict[str, str] | None = None
    ) -> None:
        if target.rt.plural in _NOT_STORED:
            return  # everyone may ask what they may do (system:basic-user)
        verbs: tuple[str, ...] = (verb,)
        if target.sub == "portforward":
            # WebSocket upgrades are GETs; newer servers also require "create".
            verbs = ("get", "create")
        for checked in verbs:
            attrs = self.request_attributes(user, checked, target, query)
            denial = next(
                (
                    d
                    for d in self._denials
                    if d.matches(user, checked, target.rt.group, target.resource, target.namespace)
                ),
                None,
            )
            if denial is not None:
                raise attrs.forbidden(denial.reason)
            if self.rbac_enforced(user):
                allowed, reason = self.authorize(attrs)
                if not allowed:
                    raise attrs.forbidden(reason)

    def _injected(self, verb: str, target: _Target) -> ApiError | None:
        for failure in self._failures:
            if (
                failure.verb in ("*", verb)
                and failure.resource in ("*", target.resource)
                and (failure.namespace is None or failure.namespace == target.namespace)
                and (failure.name is None or failure.name == target.name)
            ):
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.remove(failure)
                reason = failure.reason or STATUS_REASONS.get(failure.code, "InternalError")
                message = failure.message or (
                    f"injected failure: {verb} {target.resource} answered {failure.code}"
                )
                return ApiError(failure.code, reason, message)
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            user = self._authenticate(request)
            parsed = self._parse(request.path)
            if not isinstance(parsed, _Target):
                if request.method != "GET":
                    raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
                return web.json_response(parsed)
            target = parsed
        except ApiError as error:
            return error.response()
        query = {k: request.query[k] for k in request.query}
        try:
            verb = self._verb(request.method, target, _truthy(query.get("watch")))
        except ApiError as error:
            return error.response()
        raw = await request.read()
        record = RequestRecord(
            verb,
            target.rt.group,
            target.rt.version,
            target.resource,
            target.namespace,
            target.name,
            user,
            query,
        )
        self.requests.append(record)
        try:
            allowed = _SUBRESOURCE_VERBS.get(target.sub, ()) if target.sub else target.rt.verbs
            if verb not in allowed:
                raise ApiError(
                    405, "MethodNotAllowed", f"{verb} is not supported on {target.resource}"
                )
            self._authorize(user, verb, target, query)
            injected = self._injected(verb, target)
            if injected is not None:
                if verb == "watch" and injected.code == 410:
                    record.code = 200
                    return await self._watch(request, target, query, expired=injected)
                raise injected
            try:
                body = json.loads(raw) if raw else None
            except ValueError as exc:
                raise _bad_request(
                    f"the body of the request was in an unknown format: {exc}"
                ) from None
            response = await self._dispatch(request, verb, target, query, body, user, record)
        except ApiError as error:
            record.code = error.code
            self._notify()  # wait_for() may be waiting for this answer
            return error.response()
        if record.code == 0:
            record.code = response.status
        self._notify()
        return response

    async def _dispatch(
        self,
        request: web.Request,
        verb: str,
        target: _Target,
        query: dict[str, str],
        body: Any,
        user: str,
        record: RequestRecord,
    ) -> web.StreamResponse:
        rt = target.rt
        if target.sub == "portforward":
            return await self._portforward(request, target, record)
        if target.sub == "log":
            return await self._log(request, target, query)
        if verb == "watch":
            record.code = 200
            return await self._watch(request, target, query)
        if verb == "list":
            return web.json_response(self._list(target, query))
        if verb == "create":
            if target.name is not None or (rt.namespaced and target.namespace is None):
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
            if not isinstance(body, dict):
                raise _bad_request("the body of the request must be an object")
            if rt.kind == "SelfSubjectAccessReview":
                return web.json_response(self._review(body, user), status=201)
            created = self._insert(rt, self._admit_create(rt, target.namespace, body), "client")
            record.name = created["metadata"]["name"]
            self._on_created(rt, created)
            return web.json_response(created, status=201)
        if verb == "deletecollection":
            return web.json_response(self._delete_collection(target, query, body))
        assert target.name is not None
        current = self._find(rt, target.namespace, target.name)
        applying = request.content_type == "application/apply-patch+yaml"
        if verb == "patch" and current is None and applying:
            if not isinstance(body, dict):
                raise _bad_request("the body of the request must be an object")
            body.setdefault("metadata", {}).setdefault("name", target.name)
            created = self._insert(rt, self._admit_create(rt, target.namespace, body), "client")
            self._on_created(rt, created)
            return web.json_response(created, status=201)
        if current is None:
            raise _not_found(rt, target.name)
        if verb == "get":
            return web.json_response(current)
        if verb == "delete":
            return web.json_response(self._delete_one(rt, current, query, body))
        if verb == "update":
            if not isinstance(body, dict):
                raise _bad_request("the body of the request must be an object")
            updated = self._update(target, current, body)
        else:
            updated = self._patch(target, current, body, request.content_type)
        return web.json_response(self._replace(rt, updated))

    # ---------------------------------------------------------------- verbs

    def _list(self, target: _Target, query: dict[str, str]) -> Obj:
        rt = target.rt
        try:
            labels = parse_label_selector(query.get("labelSelector"))
            fields = parse_field_selector(rt, query.get("fieldSelector"))
        except ValueError as exc:
            raise _bad_request(str(exc)) from None
        items = [
            obj for obj in self._items(rt, target.namespace) if labels(_labels(obj)) and fields(obj)
        ]
        start = 0
        if query.get("continue"):
            try:
                token = json.loads(base64.b64decode(query["continue"]))
                start, token_rv = int(token["start"]), int(token["rv"])
            except (ValueError, KeyError, TypeError):
                raise _bad_request("continue key is not valid") from None
            if token_rv < self._compacted_rv:
                raise ApiError(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter.",
                )
        metadata: Obj = {"resourceVersion": str(self._rv)}
        limit = int(query.get("limit") or 0)
        page = items[start:]
        if limit > 0 and len(page) > limit:
            page = page[:limit]
            metadata["continue"] = base64.b64encode(
                json.dumps({"rv": self._rv, "start": start + limit}).encode()
            ).decode()
            metadata["remainingItemCount"] = len(items) - start - limit
        out_items = []
        for obj in page:
            item = copy.deepcopy(obj)
            item.pop("kind", None)
            item.pop("apiVersion", None)
            out_items.append(item)
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": metadata,
            "items": out_items,
        }

    @staticmethod
    def _delete_options(query: dict[str, str], body: Any) -> Obj:
        options = dict(body) if isinstance(body, dict) else {}
        if "propagationPolicy" in query:
            options["propagationPolicy"] = query["propagationPolicy"]
        if _truthy(query.get("orphanDependents")) or options.get("orphanDependents"):
            options["propagationPolicy"] = "Orphan"
        return options

    def _delete_one(self, rt: ResourceType, current: Obj, query: dict[str, str], body: Any) -> Obj:
        options = self._delete_options(query, body)
        meta = current["metadata"]
        preconditions = options.get("preconditions") or {}
        for field_name in ("uid", "resourceVersion"):
            wanted = preconditions.get(field_name)
            if wanted and wanted != meta.get(field_name):
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {rt.group_resource} "{meta["name"]}": '
                    f"Precondition failed: {field_name} in precondition: {wanted}, "
                    f"{field_name} in object meta: {meta.get(field_name)}",
                    {"name": meta["name"], "group": rt.group, "kind": rt.plural},
                )
        if rt.kind == "Namespace":
            if current.get("status", {}).get("phase") == "Terminating":
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on namespaces "{meta["name"]}": The system '
                    "is ensuring all content is removed from this namespace.  Upon completion, "
                    "this namespace will automatically be purged by the system.",
                    {"name": meta["name"], "kind": "namespaces"},
                )
            if self.namespace_deletion_delay != 0:
                return self._terminate_namespace(rt, current)
        gone = self._delete(rt, current, options.get("propagationPolicy"))
        if rt.kind in ("Pod", "Namespace"):
            return next(o for o in gone if o is current)
        details: Obj = {"name": meta["name"], "kind": rt.plural, "uid": meta.get("uid")}
        if rt.group:
            details["group"] = rt.group
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }

    def finish_namespace_deletion(self, name: str) -> None:
        """The namespace (Terminating or not) goes now, with whatever is still in it."""
        rt = self.resource_type("namespaces")
        self._delete(rt, self._require(rt, None, name), "Background")

    def _delete_collection(self, target: _Target, query: dict[str, str], body: Any) -> Obj:
        rt = target.rt
        listed = self._list(target, {k: v for k, v in query.items() if k != "limit"})
        propagation = self._delete_options(query, body).get("propagationPolicy")
        deleted = []
        for item in listed["items"]:
            current = self._find(rt, item["metadata"].get("namespace"), item["metadata"]["name"])
            if current is not None:
                self._delete(rt, current, propagation)
                deleted.append(item)
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": deleted,
        }

    def _check_update(self, target: _Target, current: Obj, updated: Obj) -> Obj:
        rt = target.rt
        meta = _meta(updated)
        if meta.get("name") not in (None, target.name):
            raise _bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the "
                f"URL ({target.name})"
            )
        if rt.namespaced and meta.get("namespace") not in (None, "", target.namespace):
            raise _bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        wanted = meta.get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rt.group_resource} "{target.name}": the '
                "object has been modified; please apply your changes to the latest version "
                "and try again",
                {"name": target.name, "group": rt.group, "kind": rt.plural},
            )
        if target.sub == "status":
            result = copy.deepcopy(current)
            if "status" in updated:
                result["status"] = updated["status"]
            return result
        result = copy.deepcopy(updated)
        result_meta = _meta(result)
        for kept in (
            "name",
            "uid",
            "creationTimestamp",
            "namespace",
            "generation",
            "deletionTimestamp",
        ):
            if kept in current["metadata"]:
                result_meta[kept] = current["metadata"][kept]
            else:
                result_meta.pop(kept, None)
        result["apiVersion"], result["kind"] = rt.api_version, rt.kind
        if "status" in rt.subresources and "status" in current:
            result["status"] = copy.deepcopy(current["status"])
        if rt.kind == "Service":
            for ip_field in ("clusterIP", "clusterIPs"):
                if ip_field in current.get("spec", {}):
                    result.setdefault("spec", {})[ip_field] = current["spec"][ip_field]
        return result

    def _update(self, target: _Target, current: Obj, body: Obj) -> Obj:
        return self._check_update(target, current, body)

    def _patch(self, target: _Target, current: Obj, body: Any, content_type: str) -> Obj:
        if content_type == "application/json-patch+json":
            if not isinstance(body, list):
                raise _bad_request("a JSON patch must be a list of operations")
            try:
                patched = json_patch(current, body)
            except (KeyError, IndexError, ValueError, TypeError) as exc:
                raise ApiError(
                    422, "Invalid", f"the JSON patch could not be applied: {exc}"
                ) from None
        elif not isinstance(body, dict):
            raise _bad_request("the body of the request must be an object")
        elif content_type == "application/strategic-merge-patch+json":
            patched = strategic_merge_patch(current, body)
        elif content_type in ("application/merge-patch+json", "application/apply-patch+yaml"):
            patched = merge_patch(current, body)
        else:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - {content_type}",
            )
        wanted = body.get("metadata", {}).get("resourceVersion") if isinstance(body, dict) else None
        if not wanted:
            _meta(patched)["resourceVersion"] = current["metadata"]["resourceVersion"]
        return self._check_update(target, current, patched)

    def _review(self, body: Obj, user: str) -> Obj:
        """A SelfSubjectAccessReview: the test's denials first, then (for the users RBAC
        applies to) what the bindings allow; everything else is allowed."""
        spec = body.get("spec") or {}
        attrs = spec.get("resourceAttributes")
        paths = spec.get("nonResourceAttributes")
        status: Obj = {"allowed": True}
        if attrs:
            resource = attrs.get("resource", "")
            if attrs.get("subresource"):
                resource = f"{resource}/{attrs['subresource']}"
            denial = next(
                (
                    d
                    for d in self._denials
                    if d.matches(
                        user,
                        attrs.get("verb", ""),
                        attrs.get("group", ""),
                        resource,
                        attrs.get("namespace") or None,
                    )
                ),
                None,
            )
            if denial is not None:
                status = {"allowed": False}
                if denial.reason:
                    status["reason"] = denial.reason
            elif self.rbac_enforced(user):
                allowed, reason = self.authorize(
                    Attributes(
                        user,
                        user_groups(user),
                        attrs.get("verb", ""),
                        attrs.get("group", ""),
                        attrs.get("resource", ""),
                        attrs.get("subresource", "") or "",
                        attrs.get("namespace", "") or "",
                        attrs.get("name", "") or "",
                    )
                )
                status = {"allowed": allowed}
                if reason:
                    status["reason"] = reason
        elif paths and self.rbac_enforced(user):
            allowed, reason = self.authorize_path(
                user, paths.get("verb", ""), paths.get("path", "")
            )
            status = {"allowed": allowed}
            if reason:
                status["reason"] = reason
        return {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": status,
        }

    # ---------------------------------------------------------------- streaming verbs

    def _watch_view(self, stream: _Stream, change: _Change) -> tuple[str, Obj] | None:
        target = stream.target
        assert target is not None and stream.labels is not None and stream.fields is not None
        if change.rt != target.rt:
            return None
        namespace = change.obj["metadata"].get("namespace")
        if target.namespace is not None and namespace != target.namespace:
            return None

        def matches(obj: Obj | None) -> bool:
            assert stream.labels is not None and stream.fields is not None
            return obj is not None and stream.labels(_labels(obj)) and stream.fields(obj)

        new, old = matches(change.obj), matches(change.old)
        if change.type == "MODIFIED":
            if new and old:
                return ("MODIFIED", change.obj)
            if new:
                return ("ADDED", change.obj)
            if old:
                return ("DELETED", change.obj)
            return None
        return (change.type, change.obj) if new else None

    async def _watch(
        self,
        request: web.Request,
        target: _Target,
        query: dict[str, str],
        *,
        expired: ApiError | None = None,
    ) -> web.StreamResponse:
        try:
            labels = parse_label_selector(query.get("labelSelector"))
            fields = parse_field_selector(target.rt, query.get("fieldSelector"))
        except ValueError as exc:
            raise _bad_request(str(exc)) from None
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        stream = _Stream(
            "watch", request, target, labels, fields, _truthy(query.get("allowWatchBookmarks"))
        )
        requested = query.get("resourceVersion") or ""
        initial: list[tuple[str, Obj]] = []
        if expired is None and requested in ("", "0"):
            initial = [
                ("ADDED", copy.deepcopy(obj))
                for obj in self._items(target.rt, target.namespace)
                if labels(_labels(obj)) and fields(obj)
            ]
        elif expired is None:
            try:
                since = int(requested)
            except ValueError:
                raise _bad_request(f"invalid resource version: {requested}") from None
            if since < self._compacted_rv:
                expired = ApiError(
                    410, "Expired", f"too old resource version: {since} ({self._compacted_rv})"
                )
            else:
                for change in self._history:
                    if change.rv > since and (view := self._watch_view(stream, change)):
                        initial.append(view)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        self._open_stream(stream)
        try:
            await response.prepare(request)
            if expired is not None:
                await self._write_event(response, "ERROR", expired.body())
                await response.write_eof()
                return response
            for event_type, obj in initial:
                await self._write_event(response, event_type, obj)
            loop = asyncio.get_running_loop()
            deadline = None if timeout is None else loop.time() + timeout
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(stream.queue.get(), remaining)
                except TimeoutError:
                    break
                if item is None or stream.dropped:
                    return response
                if isinstance(item, _Change):
                    view = self._watch_view(stream, item)
                    if view is not None:
                        await self._write_event(response, *view)
                else:
                    await self._write_event(response, item["type"], item["object"])
            await response.write_eof()
        except ConnectionError:
            pass
        finally:
            self._close_stream(stream)
        return response

    @staticmethod
    async def _write_event(response: web.StreamResponse, event_type: str, obj: Obj) -> None:
        line = json.dumps({"type": event_type, "object": obj}, separators=(",", ":"))
        await response.write(line.encode() + b"\n")

    async def _log(
        self, request: web.Request, target: _Target, query: dict[str, str]
    ) -> web.StreamResponse:
        assert target.name is not None and target.namespace is not None
        pod = self._find(target.rt, target.namespace, target.name)
        if pod is None:
            raise _not_found(target.rt, target.name)
        uid = pod["metadata"]["uid"]
        containers = [c["name"] for c in pod["spec"].get("containers") or []]
        containers += [c["name"] for c in pod["spec"].get("initContainers") or []]
        container = query.get("container")
        if not container:
            if len(pod["spec"].get("containers") or []) != 1:
                raise _bad_request(
                    f"a container name must be specified for pod {target.name}, choose one "
                    f"of: [{' '.join(containers)}]"
                )
            container = containers[0]
        if container not in containers:
            raise _bad_request(f"container {container} is not valid for pod {target.name}")
        key = (target.namespace, target.name, container)
        if key not in self._logs:
            for cstatus in pod.get("status", {}).get("containerStatuses") or []:
                waiting = cstatus.get("state", {}).get("waiting")
                if cstatus.get("name") == container and waiting:
                    reason = waiting.get("reason", "")
                    if reason in ("ImagePullBackOff", "ErrImagePull"):
                        reason = "trying and failing to pull image"
                    raise _bad_request(
                        f'container "{container}" in pod "{target.name}" is waiting to start: '
                        f"{reason}"
                    )
        text = self._logs.get(key, "")
        if query.get("tailLines"):
            lines = text.splitlines(keepends=True)
            tail = int(query["tailLines"])
            text = "".join(lines[-tail:]) if tail > 0 else ""
        if query.get("limitBytes"):
            text = text.encode()[: int(query["limitBytes"])].decode(errors="ignore")
        if not _truthy(query.get("follow")):
            return web.Response(text=text, content_type="text/plain")
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        stream = _Stream("log", request)
        self._open_stream(stream)
        sent = len(self._logs.get(key, ""))
        try:
            await response.prepare(request)
            if text:
                await response.write(text.encode())
            while not stream.dropped:
                changed = self._change
                current = self._logs.get(key, "")
                if len(current) > sent:
                    await response.write(current[sent:].encode())
                    sent = len(current)
                    continue
                if (
                    key in self._logs_ended
                    or self._live("pods", target.namespace, target.name, uid) is None
                ):
                    break
                await changed.wait()
            if not stream.dropped:
                await response.write_eof()
        except ConnectionError:
            pass
        finally:
            self._close_stream(stream)
        return response

    async def _portforward(
        self, request: web.Request, target: _Target, record: RequestRecord
    ) -> web.StreamResponse:
        assert target.name is not None and target.namespace is not None
        pod = self._find(target.rt, target.namespace, target.name)
        if pod is None:
            raise _not_found(target.rt, target.name)
        if not pod["spec"].get("nodeName"):
            raise _bad_request(f"pod {target.name} does not have a host assigned")
        ports: list[int] = []
        for value in request.query.getall("ports", []):
            for part in value.split(","):
                try:
                    port = int(part.strip())
                except ValueError:
                    raise _bad_request(f'unable to parse "{part}" as a port') from None
                if not 0 < port < 65536:
                    raise _bad_request(f"port {port} must be > 0 and < 65536")
                ports.append(port)
        if not ports:
            raise _bad_request('query parameter "port" is required')
        ws = web.WebSocketResponse(protocols=PORTFORWARD_PROTOCOLS)
        if not ws.can_prepare(request).ok:
            raise _bad_request("Upgrade request required")
        await ws.prepare(request)
        record.code = 101
        stream = _Stream("portforward", request)
        self._open_stream(stream)
        writers: dict[int, asyncio.StreamWriter] = {}
        pumps: list[asyncio.Task[None]] = []

        async def pump(index: int, reader: asyncio.StreamReader) -> None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                while chunk := await reader.read(65536):
                    await ws.send_bytes(bytes([2 * index]) + chunk)
            await ws.close()

        try:
            for index, port in enumerate(ports):
                header = port.to_bytes(2, "little")
                await ws.send_bytes(bytes([2 * index]) + header)
                await ws.send_bytes(bytes([2 * index + 1]) + header)
            for index, port in enumerate(ports):
                where = self._forwards.get((target.namespace, target.name, port))
                try:
                    if where is None:
                        raise ConnectionRefusedError("connect: connection refused")
                    reader, writer = await asyncio.open_connection(*where)
                except OSError as exc:
                    message = (
                        f"error forwarding port {port} to pod {pod['metadata']['uid']}, "
                        f"uid : failed to execute portforward in network namespace: "
                        f"dial tcp4 127.0.0.1:{port}: {exc}"
                    )
                    await ws.send_bytes(bytes([2 * index + 1]) + message.encode())
                    await ws.close()
                    return ws
                writers[index] = writer
                pumps.append(asyncio.get_running_loop().create_task(pump(index, reader)))
            async for frame in ws:
                if frame.type != WSMsgType.BINARY or not frame.data:
                    continue
                channel, data = frame.data[0], frame.data[1:]
                destination = writers.get(channel // 2)
                if channel % 2 == 0 and destination is not None and data:
                    destination.write(data)
                    await destination.drain()
        except (ConnectionError, RuntimeError):
            pass
        finally:
            self._close_stream(stream)
            for task in pumps:
                task.cancel()
            for writer in writers.values():
                writer.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()
        return ws
