"""Kubernetes enrichment in the aggregator: who is behind each flow's source and destination.

Three parts, each usable alone:

* :class:`Inventory`: pure state (no I/O) built from Kubernetes objects as the API serves them
  (JSON dicts, camelCase; a client model goes through ``sanitize_for_serialization``): pods,
  services, nodes, replicasets and jobs, indexed by IP address.  :meth:`Inventory.lookup` answers
  a :class:`Meta` for an address.
* :class:`Enricher`: adds the ``SrcK8S_*``, ``DstK8S_*`` and ``K8S_FlowLayer`` columns to a
  validated :class:`~.batch.Batch`, in place, looking each distinct address up once per batch.
* :class:`InventoryWatch`: keeps an inventory up to date from the API server: per kind, a list
  (paged) then a watch from the list's resourceVersion; a 410 Gone relists, anything else
  (a dropped connection, a refused one, a 403) retries with backoff, logged once per outage.

The rules follow netobserv's flowlogs-pipeline (``pkg/pipeline/transform/kubernetes``:
``informers/informers.go`` and ``enrich.go``) and its operator's configuration of them:

* An address is looked up among pods first, then nodes, then services.
* A pod's addresses are ``status.podIPs`` (both families), except those equal to its
  ``status.hostIP``: a host-network pod shares its node's addresses, and netobserv ignores
  them ("ignoring host-networked Pod IPs"), so such an address resolves to the **Node**.  We
  also drop every address of a pod with ``spec.hostNetwork`` (a dual-stack node has two, and
  ``status.hostIP`` names only one).
* A pod's owner is its (controller) owner reference, followed one step up for the two kinds
  that controllers make on behalf of another: a ReplicaSet is replaced by its own owner (the
  Deployment) and a Job by its own owner (the CronJob), when the ReplicaSet or Job is known
  and has an owner; a pod without owner is its own owner (type Pod).  DaemonSet and
  StatefulSet owners stay as they are, and so do a ReplicaSet or a Job made by hand.
* A node's addresses are those of ``status.addresses`` that are IP addresses (InternalIP,
  ExternalIP); it is its own owner and its own host (name, first InternalIP), its zone is its
  ``topology.kubernetes.io/zone`` label.  A pod's zone is its node's.  A service (every
  ``spec.clusterIPs`` but ``None``) is its own owner and has no host nor zone.
* ``K8S_FlowLayer`` is ``app`` when either end has a namespace that is not infrastructure, else
  ``infra`` (netobserv's ``EnrichLayer``): infra to infra, node to node, node to external and
  external to external flows are ``infra``; a flow with an application pod or service at
  either end is ``app``.  Infrastructure namespaces are those starting with a prefix of
  :data:`INFRA_PREFIXES` (netobserv's operator uses ``openshift`` and its own namespace; we add
  ``kube-``, since plain Kubernetes runs DNS and kube-proxy in ``kube-system``), and the
  ``default/kubernetes`` and ``default/openshift`` services are infrastructure too.

Deliberate differences from netobserv: when several pods claim an address (an address reused
while the old pod still exists, e.g. terminating or completed), a running pod wins over a
finished (Succeeded/Failed) one, then the latest claimant wins; netobserv takes whichever the
index returns first.  Values are ``None`` (NULL in SQLite, absent from the JSON) when unknown.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import random
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Final, NamedTuple

import aiohttp
import orjson
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from .batch import Batch

log = logging.getLogger(__name__)

#: The kinds the inventory is built from (what the aggregator's ClusterRole lets it list and
#: watch, and nothing more: see deploy/rbac.yaml).
KINDS: Final = ("Pod", "Service", "Node", "ReplicaSet", "Job")
#: The kinds of pod owners that controllers make for another owner (a Deployment's
#: ReplicaSets, a CronJob's Jobs): a pod's owner of these kinds is followed one step up.
_OWNED_OWNERS: Final = frozenset({"ReplicaSet", "Job"})
ZONE_LABEL: Final = "topology.kubernetes.io/zone"
#: Namespace prefixes of infrastructure (see the module docstring).
INFRA_PREFIXES: Final = ("openshift", "kube-", "netobserv")
#: Objects that are infrastructure whatever their namespace: (namespace, name).
INFRA_REFS: Final = frozenset({("default", "kubernetes"), ("default", "openshift")})
#: The columns :class:`Enricher` adds, in this order (the fields' canonical order).
K8S_SUFFIXES: Final = ("Name", "Namespace", "Type", "OwnerName", "OwnerType", "HostName",
                       "HostIP", "Zone")
K8S_COLUMNS: Final[tuple[str, ...]] = (
    *(f"SrcK8S_{s}" for s in K8S_SUFFIXES), *(f"DstK8S_{s}" for s in K8S_SUFFIXES),
    "K8S_FlowLayer")
_FINISHED: Final = frozenset({"Succeeded", "Failed"})
_EVENTS: Final = frozenset({"ADDED", "MODIFIED", "DELETED"})


class Meta(NamedTuple):
    """What Kubernetes says about one address: the values of the ``SrcK8S_*`` (or
    ``DstK8S_*``) columns, in :data:`K8S_SUFFIXES` order (a tuple: cheap to build)."""

    name: str
    namespace: str | None
    #: Pod, Service or Node.
    type: str
    owner_name: str
    owner_type: str
    host_name: str | None = None
    host_ip: str | None = None
    zone: str | None = None


@dataclass(frozen=True, slots=True)
class Pod:
    """What the inventory keeps of a pod (see :meth:`Inventory.pods`); do not mutate."""

    name: str
    namespace: str
    #: Its own addresses, normalized: none for a host-network pod (see the module docstring).
    ips: tuple[str, ...]
    owner_type: str
    owner_name: str
    node: str | None
    host_ip: str | None
    #: Succeeded or Failed.
    finished: bool
    labels: Mapping[str, str] = field(default_factory=dict)
    host_network: bool = False


@dataclass(frozen=True, slots=True)
class _Node:
    name: str
    ips: tuple[str, ...]
    host_ip: str | None
    zone: str | None


@dataclass(frozen=True, slots=True)
class _Service:
    name: str
    namespace: str
    ips: tuple[str, ...]


def normalize_ip(text: Any) -> str | None:
    """``text`` as the agents write addresses (``inet_ntop``), or None if it is not an IP."""
    if not isinstance(text, str) or not text:
        return None
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, text))
    except (OSError, ValueError):
        return None


def _ips(values: Iterable[Any]) -> tuple[str, ...]:
    """Normalized distinct addresses, in order."""
    return tuple(dict.fromkeys(ip for ip in map(normalize_ip, values) if ip is not None))


def _owner(meta: Mapping[str, Any]) -> tuple[str, str] | None:
    """(kind, name) of the controller owner reference, else of the first one."""
    refs = [r for r in meta.get("ownerReferences") or () if isinstance(r, dict)]
    if not refs:
        return None
    ref = next((r for r in refs if r.get("controller")), refs[0])
    kind, name = ref.get("kind"), ref.get("name")
    if isinstance(kind, str) and isinstance(name, str) and kind and name:
        return kind, name
    return None


def _meta(obj: Mapping[str, Any]) -> tuple[Mapping[str, Any], str, str]:
    meta = obj.get("metadata") or {}
    return meta, str(meta.get("namespace") or ""), str(meta.get("name") or "")


class _Index:
    """IP -> the keys of the objects that claim it (oldest claim first), and the winner.

    ``pick`` chooses the winner among the claimants, latest first; it is re-chosen for the
    addresses an update touches, so a lookup is one dict access.
    """

    __slots__ = ("claims", "best", "pick")

    def __init__(self, pick: Callable[[list[Any]], Any] = operator.itemgetter(0)) -> None:
        self.claims: dict[str, dict[Any, None]] = {}
        self.best: dict[str, Any] = {}
        self.pick = pick

    def update(self, key: Any, old: tuple[str, ...], new: tuple[str, ...]) -> None:
        claims = self.claims
        touched = [ip for ip in old if ip not in new]
        for ip in touched:
            owners = claims.get(ip)
            if owners is not None:
                owners.pop(key, None)
        for ip in new:
            # An existing claim keeps its place; a new one goes last (the latest).
            claims.setdefault(ip, {})[key] = None
        for ip in (*touched, *new):
            owners = claims.get(ip)
            if owners:
                self.best[ip] = next(iter(owners)) if len(owners) == 1 else self.pick(
                    list(reversed(owners)))
            else:
                claims.pop(ip, None)
                self.best.pop(ip, None)

    def clear(self) -> None:
        self.claims.clear()
        self.best.clear()


class Inventory:
    """Pods, services, nodes, replicasets and jobs by address; no I/O (see the module
    docstring).

    Feed it with :meth:`apply` (watch events) and :meth:`replace` (a list); ask with
    :meth:`lookup`, or list :meth:`pods` (with their labels and phase: see :mod:`.workload`);
    :attr:`on_change` is told of every change.  Not thread-safe: use it from one thread (the
    event loop).
    """

    def __init__(self) -> None:
        self._pods: dict[tuple[str, str], Pod] = {}
        self._nodes: dict[str, _Node] = {}
        self._services: dict[tuple[str, str], _Service] = {}
        #: Per kind of owner that has an owner itself (ReplicaSet, Job): (namespace, name) ->
        #: (its owner's kind, name), or None without owner.
        self._owners: dict[str, dict[tuple[str, str], tuple[str, str] | None]] = {
            kind: {} for kind in _OWNED_OWNERS}
        # Among pods claiming an address: the latest running one, else the latest.
        self._pod_ips = _Index(lambda keys: next(
            (k for k in keys if not self._pods[k].finished), keys[0]))
        self._node_ips = _Index()
        self._service_ips = _Index()
        #: Bumped on every change: a cache of lookups is valid while it stays the same.
        self.generation = 0
        #: Called with the kind after each event or relist is applied (on the caller's
        #: thread, so keep it short: debounce there).  If it raises, the error is logged and
        #: the inventory goes on.
        self.on_change: Callable[[str], None] | None = None
        self._on_change_failed = False

    # ----------------------------------------------------------------- updates

    def apply(self, kind: str, event_type: str, obj: Mapping[str, Any]) -> None:
        """One watch event (ADDED, MODIFIED or DELETED; others are ignored) of ``kind``."""
        if event_type not in _EVENTS:
            return
        handler = self._handlers().get(kind)
        if handler is None:
            raise ValueError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
        handler(obj, event_type == "DELETED")
        self.generation += 1
        self._changed(kind)

    def replace(self, kind: str, objects: Iterable[Mapping[str, Any]]) -> None:
        """The whole set of ``kind`` objects (a relist): what is not in it is forgotten."""
        handler = self._handlers().get(kind)
        if handler is None:
            raise ValueError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
        if kind == "Pod":
            self._pods.clear()
            self._pod_ips.clear()
        elif kind == "Node":
            self._nodes.clear()
            self._node_ips.clear()
        elif kind == "Service":
            self._services.clear()
            self._service_ips.clear()
        else:
            self._owners[kind].clear()
        for obj in objects:
            handler(obj, False)
        self.generation += 1
        self._changed(kind)

    def _changed(self, kind: str) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(kind)
        except Exception:  # a listener's failure must not stop the watch
            if not self._on_change_failed:
                self._on_change_failed = True
                log.exception("Inventory change listener failed (logged once)")

    def _handlers(self) -> dict[str, Callable[[Mapping[str, Any], bool], None]]:
        return {"Pod": self._pod, "Service": self._service, "Node": self._node,
                "ReplicaSet": self._replicaset, "Job": self._job}

    def _pod(self, obj: Mapping[str, Any], deleted: bool) -> None:
        meta, namespace, name = _meta(obj)
        key = (namespace, name)
        old = self._pods.pop(key, None)
        new: Pod | None = None
        if not deleted:
            spec = obj.get("spec") or {}
            status = obj.get("status") or {}
            host_ips = set(_ips([status.get("hostIP"),
                                 *(h.get("ip") for h in status.get("hostIPs") or ()
                                   if isinstance(h, dict))]))
            listed = [p.get("ip") for p in status.get("podIPs") or () if isinstance(p, dict)]
            ips: tuple[str, ...] = ()
            if not spec.get("hostNetwork"):
                ips = tuple(ip for ip in _ips(listed or [status.get("podIP")])
                            if ip not in host_ips)
            owner = _owner(meta) or ("Pod", name)
            node = spec.get("nodeName")
            labels = meta.get("labels")
            new = Pod(name, namespace, ips, owner[0], owner[1],
                      node if isinstance(node, str) and node else None,
                      normalize_ip(status.get("hostIP")), status.get("phase") in _FINISHED,
                      {k: v for k, v in labels.items() if isinstance(k, str)
                       and isinstance(v, str)} if isinstance(labels, dict) else {},
                      bool(spec.get("hostNetwork")))
            self._pods[key] = new
        self._pod_ips.update(key, old.ips if old else (), new.ips if new else ())

    def _node(self, obj: Mapping[str, Any], deleted: bool) -> None:
        meta, _, name = _meta(obj)
        old = self._nodes.pop(name, None)
        new: _Node | None = None
        if not deleted:
            addresses = [a for a in (obj.get("status") or {}).get("addresses") or ()
                         if isinstance(a, dict)]
            ips = _ips(a.get("address") for a in addresses)
            internal = _ips(a.get("address") for a in addresses if a.get("type") == "InternalIP")
            zone = (meta.get("labels") or {}).get(ZONE_LABEL)
            new = _Node(name, ips, (internal or ips or (None,))[0],
                        zone if isinstance(zone, str) and zone else None)
            self._nodes[name] = new
        self._node_ips.update(name, old.ips if old else (), new.ips if new else ())

    def _service(self, obj: Mapping[str, Any], deleted: bool) -> None:
        _, namespace, name = _meta(obj)
        key = (namespace, name)
        old = self._services.pop(key, None)
        new: _Service | None = None
        if not deleted:
            spec = obj.get("spec") or {}
            # "None" (headless) and "" are not addresses: normalize_ip drops them.
            ips = _ips(spec.get("clusterIPs") or [spec.get("clusterIP")])
            new = _Service(name, namespace, ips)
            self._services[key] = new
        self._service_ips.update(key, old.ips if old else (), new.ips if new else ())

    def _replicaset(self, obj: Mapping[str, Any], deleted: bool) -> None:
        self._owned_owner("ReplicaSet", obj, deleted)

    def _job(self, obj: Mapping[str, Any], deleted: bool) -> None:
        self._owned_owner("Job", obj, deleted)

    def _owned_owner(self, kind: str, obj: Mapping[str, Any], deleted: bool) -> None:
        meta, namespace, name = _meta(obj)
        if deleted:
            self._owners[kind].pop((namespace, name), None)
        else:
            self._owners[kind][namespace, name] = _owner(meta)

    # ----------------------------------------------------------------- queries

    def lookup(self, ip: str) -> Meta | None:
        """Who has address ``ip`` (as the agents write it): a pod, else a node, else a service."""
        key = self._pod_ips.best.get(ip)
        if key is not None:
            return self._pod_meta(self._pods[key])
        name = self._node_ips.best.get(ip)
        if name is not None:
            return self._node_meta(self._nodes[name])
        key = self._service_ips.best.get(ip)
        if key is not None:
            svc = self._services[key]
            return Meta(svc.name, svc.namespace or None, "Service", svc.name, "Service")
        return None

    def _pod_meta(self, pod: Pod) -> Meta:
        owner_type, owner_name = pod.owner_type, pod.owner_name
        owners = self._owners.get(owner_type)
        if owners is not None:
            parent = owners.get((pod.namespace, owner_name))
            if parent is not None:
                owner_type, owner_name = parent
        node = self._nodes.get(pod.node) if pod.node else None
        if node is None and pod.host_ip is not None:
            # The node may be known only by its address (or be listed after the pod).
            name = self._node_ips.best.get(pod.host_ip)
            if name is not None:
                node = self._nodes[name]
        host_name = pod.node or (node.name if node else None)
        host_ip = pod.host_ip or (node.host_ip if node else None)
        return Meta(pod.name, pod.namespace or None, "Pod", owner_name, owner_type, host_name,
                    host_ip, node.zone if node else None)

    @staticmethod
    def _node_meta(node: _Node) -> Meta:
        return Meta(node.name, None, "Node", node.name, "Node", node.name, node.host_ip,
                    node.zone)

    def pods(self) -> Iterator[Pod]:
        """Every pod known (a snapshot: the inventory may change while it is consumed)."""
        return iter(list(self._pods.values()))

    def counts(self) -> dict[str, int]:
        """How many objects of each kind are known."""
        return {"Pod": len(self._pods), "Service": len(self._services),
                "Node": len(self._nodes), "ReplicaSet": len(self._owners["ReplicaSet"]),
                "Job": len(self._owners["Job"])}


# --------------------------------------------------------------------------------- enricher

_UNKNOWN: Final = (None,) * len(K8S_SUFFIXES)
_LAYER: Final = {False: "infra", True: "app"}
_FIRST: Final = operator.itemgetter(0)
_SECOND: Final = operator.itemgetter(1)


class Enricher:
    """Adds the Kubernetes columns to validated batches, in place (a callable on a Batch).

    Per batch, each distinct address is looked up once; the columns are then built by
    ``map``/``zip`` in C, so the per-row cost is a few dict lookups' worth.  Columns
    :data:`K8S_COLUMNS` are always all appended (a batch that already had some loses them:
    the aggregator's view is the reference), ``None`` where an address is unknown;
    ``K8S_FlowLayer`` is never ``None``.
    """

    def __init__(self, inventory: Inventory, *,
                 infra_prefixes: Iterable[str] = INFRA_PREFIXES,
                 infra_refs: Iterable[tuple[str, str]] = INFRA_REFS) -> None:
        self.inventory = inventory
        self.infra_prefixes = tuple(p for p in infra_prefixes if p)
        self.infra_refs = frozenset(infra_refs)

    def __call__(self, batch: Batch) -> None:
        self.enrich(batch)

    def is_app(self, meta: Meta | None) -> bool:
        """An application end (netobserv's ``objectIsApp``): it has a namespace that is not
        infrastructure and is not an infrastructure object."""
        if meta is None or not meta.namespace:
            return False
        return not (meta.namespace.startswith(self.infra_prefixes)
                    or (meta.namespace, meta.name) in self.infra_refs)

    def enrich(self, batch: Batch) -> None:
        """Append the :data:`K8S_COLUMNS` to ``batch`` (see the class docstring)."""
        n = batch.nrows
        if not n:
            return
        columns, values = batch.columns, batch.values
        nullable, plain_idx = batch.nullable, batch.plain
        if not K8S_COLUMNS_SET.isdisjoint(columns):
            columns, values, nullable, plain_idx = _without(batch, K8S_COLUMNS_SET)
        none_col = (None,) * n
        src = values[columns.index("SrcAddr")] if "SrcAddr" in columns else none_col
        dst = values[columns.index("DstAddr")] if "DstAddr" in columns else none_col
        src_set, dst_set = set(src), set(dst)
        lookup, is_app = self.inventory.lookup, self.is_app
        # Each distinct address once: (its column values, whether it is an application end).
        known: dict[Any, tuple[tuple[str | None, ...], bool]] = {}
        for ip in src_set.union(dst_set):
            meta = lookup(ip) if isinstance(ip, str) and ip else None
            known[ip] = (_UNKNOWN, False) if meta is None else (meta, is_app(meta))
        # Rows -> per-row entries -> columns, all in C (map, zip).
        get = known.__getitem__
        src_known = list(map(get, src))
        dst_known = list(map(get, dst))
        new_cols: list[tuple[Any, ...]] = [
            *zip(*map(_FIRST, src_known), strict=True),
            *zip(*map(_FIRST, dst_known), strict=True),
            tuple(map(_LAYER.__getitem__, map(operator.or_, map(_SECOND, src_known),
                                              map(_SECOND, dst_known)))),
        ]
        # Which columns hold a None, from the distinct entries rather than the rows.
        has_none = [
            *(None in col for col in zip(*set(map(_FIRST, map(get, src_set))), strict=True)),
            *(None in col for col in zip(*set(map(_FIRST, map(get, dst_set))), strict=True)),
            False]
        # Real names, kinds, addresses and zones never need JSON escaping: one C check.
        text = "".join(filter(None, chain.from_iterable(map(_FIRST, known.values()))))
        plain = '"' not in text and "\\" not in text and text.isprintable()
        first = len(columns)
        nullable = nullable | {first + i for i, none in enumerate(has_none) if none}
        if plain:
            plain_idx = plain_idx | {first + i for i, none in enumerate(has_none) if not none}
        # Only assignments from here: a failure above leaves the batch as it was.
        batch.columns = (*columns, *K8S_COLUMNS)
        batch.values = [*values, *new_cols]
        batch.nullable = nullable
        batch.plain = plain_idx


K8S_COLUMNS_SET: Final = frozenset(K8S_COLUMNS)


def _without(batch: Batch, names: frozenset[str]) -> tuple[
        tuple[str, ...], list[tuple[Any, ...]], frozenset[int], frozenset[int]]:
    """``batch``'s columns, values, nullable and plain index sets without ``names``."""
    keep = [i for i, c in enumerate(batch.columns) if c not in names]
    where = {old: new for new, old in enumerate(keep)}
    return (tuple(batch.columns[i] for i in keep), [batch.values[i] for i in keep],
            frozenset(where[i] for i in batch.nullable if i in where),
            frozenset(where[i] for i in batch.plain if i in where))


# --------------------------------------------------------------------------------- watch


class _Gone(Exception):
    """410 Gone: the resourceVersion is too old; relist."""


def _listers(api_client: client.ApiClient) -> dict[str, Callable[..., Any]]:
    core = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)
    batch = client.BatchV1Api(api_client)
    return {"Pod": core.list_pod_for_all_namespaces,
            "Service": core.list_service_for_all_namespaces,
            "Node": core.list_node,
            "ReplicaSet": apps.list_replica_set_for_all_namespaces,
            "Job": batch.list_job_for_all_namespaces}


def _status_error(status: int, body: bytes) -> ApiException:
    try:
        message = str(orjson.loads(body).get("message") or "")
    except (ValueError, AttributeError):
        message = body[:200].decode("utf-8", "replace")
    return ApiException(status=status, reason=message or f"HTTP {status}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status}: {exc.reason}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class InventoryWatch:
    """Keeps an :class:`Inventory` up to date from the API server (one task per kind).

    Per kind: list (in pages of ``page_size``) and replace the inventory's objects of that
    kind, then watch from the list's resourceVersion (with bookmarks, ``watch_timeout``
    seconds at a time, resumed from the last resourceVersion seen).  A 410 Gone, as a status
    or as an ERROR event, relists.  A watch cut while streaming is resumed at once; any
    failure (connection refused, a timeout, a 403...) retries after a backoff growing from
    ``backoff`` to ``max_backoff`` seconds, resuming the watch where it was.  An outage is
    logged once when it starts and once when every kind is back.  Nothing it meets makes it
    stop: only :meth:`stop` does.

    ``ready`` is set once every kind has been listed once.
    """

    def __init__(self, api_client: client.ApiClient, inventory: Inventory | None = None, *,
                 watch_timeout: int = 290, backoff: float = 0.5, max_backoff: float = 30.0,
                 page_size: int = 500, request_timeout: float = 60.0) -> None:
        self.api_client = api_client
        self.inventory = inventory if inventory is not None else Inventory()
        self.watch_timeout = watch_timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.page_size = page_size
        self.request_timeout = request_timeout
        self.ready = asyncio.Event()
        #: Completed lists per kind (the first one, then every relist).
        self.lists: dict[str, int] = dict.fromkeys(KINDS, 0)
        #: Watch events applied, and failures retried, per kind.
        self.events: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.failures: dict[str, int] = dict.fromkeys(KINDS, 0)
        #: Watches cut while streaming (resumed at once, not counted as failures).
        self.drops: dict[str, int] = dict.fromkeys(KINDS, 0)
        self._listers = _listers(api_client)
        self._listed: set[str] = set()
        self._down: dict[str, str] = {}
        self._outage_started = 0.0
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the per-kind tasks (idempotent)."""
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run(kind), name=f"k8s-watch-{kind}")
                           for kind in KINDS]

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the first list of every kind."""
        try:
            async with asyncio.timeout(timeout):
                await self.ready.wait()
        except TimeoutError:
            return False
        return True

    @property
    def problem(self) -> str | None:
        """The latest failure of a kind that is still failing, if any."""
        return next(iter(self._down.values()), None)

    async def stop(self) -> None:
        """Cancel the tasks and wait for them (idempotent)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> InventoryWatch:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ----------------------------------------------------------------- per kind

    async def _run(self, kind: str) -> None:
        rv: str | None = None
        delay = self.backoff
        gone = before = 0  # gone: 410s in a row without an event in between
        while True:
            try:
                if rv is None:
                    rv = await self._list(kind)
                    self._up(kind)
                started = time.monotonic()
                before = self.events[kind]
                rv = await self._watch(kind, rv)
                delay, gone = self.backoff, 0
                if time.monotonic() - started < 1.0 and self.events[kind] == before:
                    # A watch that ends at once with nothing in it: do not spin.
                    await asyncio.sleep(self.backoff)
            except _Gone:
                gone = 0 if self.events[kind] != before else gone + 1
                log.info("Kubernetes %s watch: resourceVersion %s expired (410); relisting",
                         kind, rv)
                rv = None
                if gone > 1:  # a fresh list's version expired at once: do not hammer lists
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.max_backoff)
            except Exception as exc:  # never let the aggregator down
                self.failures[kind] += 1
                self._failed(kind, exc)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.max_backoff)

    async def _list(self, kind: str) -> str:
        lister = self._listers[kind]
        items: list[Any] = []
        cont: str | None = None
        while True:
            resp = await lister(limit=self.page_size, _continue=cont, _preload_content=False,
                                _request_timeout=aiohttp.ClientTimeout(
                                    total=self.request_timeout, sock_connect=10))
            async with resp:
                body = await resp.read()
            if resp.status == 410 and cont is not None:  # the continue token expired
                items, cont = [], None
                continue
            if resp.status != 200:
                raise _status_error(resp.status, body)
            data = orjson.loads(body)
            items.extend(data.get("items") or ())
            meta = data.get("metadata") or {}
            cont = meta.get("continue") or None
            if cont is None:
                break
        self.inventory.replace(kind, items)
        self.lists[kind] += 1
        if kind not in self._listed:
            self._listed.add(kind)
            if len(self._listed) == len(KINDS):
                self.ready.set()
        log.debug("Listed %d %s(s) at resourceVersion %s", len(items), kind,
                  meta.get("resourceVersion"))
        return str(meta.get("resourceVersion") or "")

    async def _watch(self, kind: str, rv: str) -> str:
        """Watch from ``rv`` until the server ends the watch; returns the last version seen."""
        resp = await self._listers[kind](
            watch=True, resource_version=rv or None, allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout, _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(sock_connect=10,
                                                   sock_read=self.watch_timeout + 30))
        async with resp:
            if resp.status == 410:
                raise _Gone
            if resp.status != 200:
                raise _status_error(resp.status, await resp.read())
            self._up(kind)
            buf = bytearray()
            try:
                async for chunk in resp.content.iter_any():
                    buf += chunk
                    start = 0
                    while (end := buf.find(b"\n", start)) >= 0:
                        line = bytes(buf[start:end])
                        start = end + 1
                        if line.strip():
                            rv = self._event(kind, line) or rv
                    del buf[:start]
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
                # The connection was cut (an API server restart, a load balancer): resume at
                # once; if the API server is really gone, reconnecting fails and says so.
                self.drops[kind] += 1
                log.debug("Kubernetes %s watch cut (%s); resuming from %s", kind,
                          _describe(exc), rv)
                return rv
            if buf.strip():
                rv = self._event(kind, bytes(buf)) or rv
        return rv

    def _event(self, kind: str, line: bytes) -> str | None:
        event = orjson.loads(line)
        etype = event.get("type")
        obj = event.get("object") or {}
        if etype == "ERROR":
            if obj.get("code") == 410:
                raise _Gone
            raise ApiException(status=obj.get("code"),
                               reason=f"{obj.get('reason')}: {obj.get('message')}")
        if etype in _EVENTS:
            self.inventory.apply(kind, etype, obj)
            self.events[kind] += 1
        version = (obj.get("metadata") or {}).get("resourceVersion")
        return str(version) if version else None

    def _failed(self, kind: str, exc: Exception) -> None:
        what = _describe(exc)
        if not self._down:
            self._outage_started = time.monotonic()
            log.warning("Kubernetes enrichment: cannot watch %ss (%s); retrying, flows keep "
                        "the metadata known so far", kind, what)
        else:
            log.debug("Kubernetes %s watch failed again: %s", kind, what)
        self._down[kind] = f"{kind}: {what}"

    def _up(self, kind: str) -> None:
        if self._down.pop(kind, None) is not None and not self._down:
            log.info("Kubernetes enrichment: the API server answers again (after %.1f s)",
                        time.monotonic() - self._outage_started)
