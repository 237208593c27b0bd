"""Render the ``deploy/`` manifests for one capture, with Python only (no sed, yq or templates).

The YAML files in ``deploy/`` are complete, valid manifests with default values; they are the
single source of every object the tool creates. :func:`render` loads them with
``yaml.safe_load_all``, deep-copies them and sets the fields that :class:`DeployOptions`
changes: names and namespaces, the capture label, image and pull policy, the token, the
aggregator's address and port, the agents' extra environment and node selector, and (with
``openshift``) the SecurityContextConstraints and its RBAC "use" rule.

The files are found in the source tree first (``deploy/`` next to the package), then in the
copy an installed wheel carries (``netobserv_tui/_deploy``).
"""

from __future__ import annotations

import copy
import functools
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, cast

import yaml

from .. import __version__

__all__ = [
    "AGENT_NAME",
    "AGGREGATOR_NAME",
    "CAPTURE_LABEL",
    "DEFAULT_IMAGE",
    "DEFAULT_NAMESPACE",
    "MANAGED_BY",
    "PULL_POLICIES",
    "SECRET_NAME",
    "SERVICE_ACCOUNT_NAME",
    "SERVICE_NAME",
    "DeployOptions",
    "aggregator_address",
    "cluster_scoped_name",
    "delete_order",
    "deploy_dir",
    "options_from_env",
    "render",
    "to_yaml",
]


def _image_tag(version: str) -> str:
    """The image tag of a package version: ``latest`` for development builds, else the version."""
    if "dev" in version or "+" in version:
        return "latest"
    return version


DEFAULT_NAMESPACE: Final = "netobserv-cli"
DEFAULT_IMAGE: Final = f"quay.io/netobserv/netobserv-tui:{_image_tag(__version__)}"
#: On every object the tool creates.
MANAGED_BY: Final[Mapping[str, str]] = {"app.kubernetes.io/managed-by": "netobserv-tui"}
#: On every object the tool creates; the value is the capture id.
CAPTURE_LABEL: Final = "netobserv.io/capture"

AGGREGATOR_NAME: Final = "netobserv-aggregator"
SERVICE_NAME: Final = "netobserv-aggregator"
AGENT_NAME: Final = "netobserv-agent"
SERVICE_ACCOUNT_NAME: Final = "netobserv-tui"
SECRET_NAME: Final = "netobserv-tui-token"
#: The key of the token in the Secret.
SECRET_KEY: Final = "token"
#: Names of the containers in the aggregator pod and the agent pods.
AGGREGATOR_CONTAINER: Final = "aggregator"
AGENT_CONTAINER: Final = "agent"

PULL_POLICIES: Final = ("Always", "IfNotPresent", "Never")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
MAX_CAPTURE_ID: Final = 20
#: Agent environment variables the manifests set themselves; ``agent_env`` may not set them.
RESERVED_AGENT_ENV: Final = frozenset({
    "NETOBSERV_AGGREGATOR", "NETOBSERV_TOKEN", "AGENT_IP", "NODE_NAME", "LOG_LEVEL",
    "NETOBSERV_CACHE", "NETOBSERV_STATE_DIR",
})
#: Namespaces a capture must not use: deleting the capture deletes its namespace.
PROTECTED_NAMESPACES: Final = frozenset({
    "default", "kube-system", "kube-public", "kube-node-lease",
})
#: OpenShift only: the agent's SELinux type (see deploy/openshift-scc.yaml).
OPENSHIFT_SELINUX_TYPE: Final = "spc_t"

ENV_IMAGE: Final = "NETOBSERV_IMAGE"
ENV_IMAGE_ALIAS: Final = "NETOBSERV_AGENT_IMAGE"
ENV_NAMESPACE: Final = "NETOBSERV_NAMESPACE"
ENV_PULL_POLICY: Final = "NETOBSERV_PULL_POLICY"

#: The files of deploy/ that hold objects, and the kinds each holds.
_FILES: Final = {
    "namespace.yaml": ("Namespace",),
    "rbac.yaml": ("ServiceAccount", "ClusterRole", "ClusterRoleBinding"),
    "secret.yaml": ("Secret",),
    "openshift-scc.yaml": ("SecurityContextConstraints",),
    "aggregator.yaml": ("Service", "Pod"),
    "agent.yaml": ("DaemonSet",),
}
#: Apply order: what others refer to comes first.
_APPLY_ORDER: Final = (
    "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Secret",
    "SecurityContextConstraints", "Service", "Pod", "DaemonSet",
)
#: Delete order: the workloads first (the agents detach, then the aggregator closes its
#: files), then what they used; the namespace last.
_DELETE_ORDER: Final = (
    "DaemonSet", "Pod", "Service", "Secret", "ClusterRoleBinding", "ClusterRole",
    "SecurityContextConstraints", "ServiceAccount", "Namespace",
)
_CLUSTER_SCOPED: Final = frozenset({
    "Namespace", "ClusterRole", "ClusterRoleBinding", "SecurityContextConstraints",
})
_SCC_API_GROUP: Final = "security.openshift.io"

_CAPTURE_ID_RE: Final = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_DNS_LABEL_RE: Final = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_ENV_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LABEL_NAME_RE: Final = re.compile(r"([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)")
_LABEL_PREFIX_RE: Final = re.compile(
    r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
)
_LABEL_VALUE_RE: Final = re.compile(r"([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?")


def _bad(option: str, value: object, accepted: str) -> ValueError:
    return ValueError(f"{option}: {value!r} is not valid; {accepted}")


def _valid_label_key(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _LABEL_PREFIX_RE.fullmatch(prefix)):
        return False
    return bool(_LABEL_NAME_RE.fullmatch(name))


@dataclass(frozen=True)
class DeployOptions:
    """What one capture's manifests depend on; every field is checked on construction."""

    capture_id: str
    token: str
    namespace: str = DEFAULT_NAMESPACE
    image: str = DEFAULT_IMAGE
    pull_policy: str = "IfNotPresent"
    #: Extra agent environment: FEATURES, FLOW_FILTER_RULES, SAMPLING, CACHE_MAX_FLOWS, ...
    agent_env: Mapping[str, str] = field(default_factory=dict)
    #: Run agents only on nodes with these labels.
    node_selector: Mapping[str, str] = field(default_factory=dict)
    #: Add the SecurityContextConstraints (and its RBAC "use" rule) for OpenShift.
    openshift: bool = False
    aggregator_port: int = 9990
    log_level: str = "info"
    #: Extra aggregator arguments (the workload selection: --workload-namespace ...).
    aggregator_args: tuple[str, ...] = ()
    #: Grant the agents SYS_RESOURCE: some node runs a kernel before 5.11, where BPF maps
    #: count against RLIMIT_MEMLOCK and raising it needs that capability (see
    #: :func:`needs_memlock`). True unless the nodes are known: a manifest that omits it
    #: fails on such a kernel, one that has it fails only where the runtime refuses it.
    memlock: bool = True

    def __post_init__(self) -> None:
        cid = self.capture_id
        if (not isinstance(cid, str) or len(cid) > MAX_CAPTURE_ID
                or not _CAPTURE_ID_RE.fullmatch(cid)):
            raise _bad("capture_id", cid,
                       f"use 1 to {MAX_CAPTURE_ID} characters of a-z, 0-9 and '-', starting "
                       "and ending with a letter or digit (it is a label value)")
        if not isinstance(self.token, str) or not self.token or self.token != self.token.strip():
            raise ValueError("token: the capture token must be a non-empty string without "
                             "surrounding whitespace")
        ns = self.namespace
        if not isinstance(ns, str) or not _DNS_LABEL_RE.fullmatch(ns):
            raise _bad("namespace", ns,
                       "use a DNS label: 1 to 63 characters of a-z, 0-9 and '-', starting and "
                       "ending with a letter or digit")
        if ns in PROTECTED_NAMESPACES or ns.startswith(("openshift-", "kube-")):
            raise _bad("namespace", ns,
                       "choose a namespace of its own (default netobserv-cli): cleanup deletes "
                       "the capture's namespace, so default, kube-* and openshift-* are refused")
        image = self.image
        if not isinstance(image, str) or not image or any(c.isspace() for c in image):
            raise _bad("image", image, "give an image reference such as " + DEFAULT_IMAGE)
        # Both are taken in any case and kept in their canonical spelling.
        policies = {policy.lower(): policy for policy in PULL_POLICIES}
        policy = self.pull_policy
        if not isinstance(policy, str) or policy.lower() not in policies:
            raise _bad("pull_policy", policy, "accepted values are " + ", ".join(PULL_POLICIES))
        object.__setattr__(self, "pull_policy", policies[policy.lower()])
        level = self.log_level
        if not isinstance(level, str) or level.lower() not in LOG_LEVELS:
            raise _bad("log_level", level, "accepted values are " + ", ".join(LOG_LEVELS))
        object.__setattr__(self, "log_level", level.lower())
        for arg in self.aggregator_args:
            if not isinstance(arg, str) or not arg or "\n" in arg:
                raise _bad("aggregator_args", arg, "arguments are non-empty one-line strings")
        port = self.aggregator_port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise _bad("aggregator_port", port, "use a TCP port from 1 to 65535")
        if not isinstance(self.openshift, bool):
            raise _bad("openshift", self.openshift, "use True or False")
        # Private read-only copies: the caller's dicts may change after this.
        object.__setattr__(self, "agent_env", MappingProxyType(dict(self.agent_env)))
        object.__setattr__(self, "node_selector", MappingProxyType(dict(self.node_selector)))
        for name, value in self.agent_env.items():
            if not isinstance(name, str) or not _ENV_NAME_RE.fullmatch(name):
                raise _bad("agent_env", name,
                           "variable names are letters, digits and '_', not starting with a "
                           "digit")
            if name in RESERVED_AGENT_ENV:
                raise _bad("agent_env", name,
                           "the manifests set " + ", ".join(sorted(RESERVED_AGENT_ENV))
                           + " themselves (use log_level for LOG_LEVEL)")
            if not isinstance(value, str):
                raise _bad(f"agent_env[{name}]", value, "values are strings")
        for key, value in self.node_selector.items():
            if not isinstance(key, str) or not _valid_label_key(key):
                raise _bad("node_selector", key,
                           "keys are label keys: [prefix/]name, the name 1 to 63 characters "
                           "of letters, digits, '-', '_' and '.'")
            if not isinstance(value, str) or not _LABEL_VALUE_RE.fullmatch(value):
                raise _bad(f"node_selector[{key}]", value,
                           "values are label values: up to 63 characters of letters, digits, "
                           "'-', '_' and '.', starting and ending with a letter or digit")


def options_from_env(
    environ: Mapping[str, str] | None = None, /, **overrides: Any
) -> DeployOptions:
    """:class:`DeployOptions` from the environment, then ``overrides`` (flags) on top.

    ``NETOBSERV_IMAGE`` (or its alias ``NETOBSERV_AGENT_IMAGE``, as netobserv's CLI spells
    it; ``NETOBSERV_IMAGE`` wins when both are set), ``NETOBSERV_NAMESPACE`` and
    ``NETOBSERV_PULL_POLICY``. Empty variables and overrides that are ``None`` count as
    unset, so that flag values can be passed straight through. ``capture_id`` and ``token``
    come from the overrides.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    image = env.get(ENV_IMAGE) or env.get(ENV_IMAGE_ALIAS)
    if image:
        values["image"] = image
    if env.get(ENV_NAMESPACE):
        values["namespace"] = env[ENV_NAMESPACE]
    if env.get(ENV_PULL_POLICY):
        values["pull_policy"] = env[ENV_PULL_POLICY]
    values.update({key: value for key, value in overrides.items() if value is not None})
    return DeployOptions(**values)


# -- files --------------------------------------------------------------------------------


def deploy_dir() -> Path:
    """``deploy/`` of a source checkout, else the copy inside the installed package."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package.parent / "deploy", package / "_deploy"):
        if all((candidate / name).is_file() for name in _FILES):
            return candidate
    raise FileNotFoundError(
        f"the deploy manifests ({', '.join(_FILES)}) are missing from this installation "
        f"(looked in {package.parent / 'deploy'} and {package / '_deploy'}); reinstall")


@functools.cache
def _templates() -> dict[str, dict[str, Any]]:
    """Every object of deploy/, by kind (each kind appears exactly once)."""
    base = deploy_dir()
    found: dict[str, dict[str, Any]] = {}
    for name, kinds in _FILES.items():
        with open(base / name, encoding="utf-8") as stream:
            docs = [doc for doc in yaml.safe_load_all(stream) if doc is not None]
        got = tuple(sorted(str(doc.get("kind")) for doc in docs))
        if got != tuple(sorted(kinds)):
            raise RuntimeError(f"{base / name}: expected the kinds {', '.join(kinds)}, "
                               f"found {', '.join(got) or 'nothing'}")
        for doc in docs:
            found[doc["kind"]] = doc
    return found


# -- rendering ----------------------------------------------------------------------------


#: The first kernel that charges BPF maps to the memory cgroup instead of RLIMIT_MEMLOCK.
MEMCG_BPF_KERNEL: Final = (5, 11)
MEMLOCK_CAPABILITY: Final = "SYS_RESOURCE"


def kernel_release(text: str) -> tuple[int, int] | None:
    """(major, minor) of a kernel release string (``5.10.0-28-amd64`` -> (5, 10)); None
    when it does not start with two numbers."""
    match = re.match(r"\s*(\d+)\.(\d+)", text or "")
    return (int(match[1]), int(match[2])) if match else None


def needs_memlock(kernel_versions: Iterable[str]) -> bool:
    """Whether agents on nodes with these ``status.nodeInfo.kernelVersion`` values need
    SYS_RESOURCE: some kernel is older than 5.11 or cannot be read (then it might be)."""
    for text in kernel_versions:
        release = kernel_release(text)
        if release is None or release < MEMCG_BPF_KERNEL:
            return True
    return False


def cluster_scoped_name(namespace: str) -> str:
    """The name of the ClusterRole, its binding and the SCC: unique per namespace."""
    return f"netobserv-tui-{namespace}"


def aggregator_address(options: DeployOptions) -> str:
    """HOST:PORT of the aggregator's Service, as the agents reach it."""
    return f"{SERVICE_NAME}.{options.namespace}.svc:{options.aggregator_port}"


def _container(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    for container in pod_spec["containers"]:
        if container["name"] == name:
            return cast(dict[str, Any], container)
    raise RuntimeError(f"the manifests have no container named {name!r}")


def _set_env(container: dict[str, Any], name: str, value: str) -> None:
    env: list[dict[str, Any]] = container.setdefault("env", [])
    for entry in env:
        if entry["name"] == name:
            entry.pop("valueFrom", None)
            entry["value"] = value
            return
    env.append({"name": name, "value": value})


def _label(obj: dict[str, Any], capture_id: str) -> None:
    labels: dict[str, str] = obj["metadata"].setdefault("labels", {})
    labels.update(MANAGED_BY)
    labels[CAPTURE_LABEL] = capture_id


def _secret_ref(env: list[dict[str, Any]]) -> None:
    for entry in env:
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            ref["name"] = SECRET_NAME


def render(options: DeployOptions) -> list[dict[str, Any]]:
    """Every object of one capture, in apply order (Namespace first, DaemonSet last)."""
    t = copy.deepcopy(_templates())
    ns, cid = options.namespace, options.capture_id
    cluster_name = cluster_scoped_name(ns)

    t["Namespace"]["metadata"]["name"] = ns

    t["ServiceAccount"]["metadata"]["name"] = SERVICE_ACCOUNT_NAME

    role = t["ClusterRole"]
    role["metadata"]["name"] = cluster_name
    rules = []
    for rule in role["rules"]:
        if _SCC_API_GROUP in rule.get("apiGroups", ()):
            if not options.openshift:
                continue
            rule["resourceNames"] = [cluster_name]
        rules.append(rule)
    role["rules"] = rules

    binding = t["ClusterRoleBinding"]
    binding["metadata"]["name"] = cluster_name
    binding["roleRef"]["name"] = cluster_name
    binding["subjects"] = [
        {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT_NAME, "namespace": ns}
    ]

    secret = t["Secret"]
    secret["metadata"]["name"] = SECRET_NAME
    secret["stringData"] = {SECRET_KEY: options.token}

    t["SecurityContextConstraints"]["metadata"]["name"] = cluster_name

    service = t["Service"]
    service["metadata"]["name"] = SERVICE_NAME
    service["spec"]["selector"][CAPTURE_LABEL] = cid
    service["spec"]["ports"][0]["port"] = options.aggregator_port

    pod = t["Pod"]
    pod["metadata"]["name"] = AGGREGATOR_NAME
    pod["spec"]["serviceAccountName"] = SERVICE_ACCOUNT_NAME
    aggregator = _container(pod["spec"], AGGREGATOR_CONTAINER)
    aggregator["image"] = options.image
    aggregator["imagePullPolicy"] = options.pull_policy
    args: list[str] = aggregator["args"]
    args[args.index("--listen") + 1] = f"*:{options.aggregator_port}"
    args[args.index("--log-level") + 1] = options.log_level.upper()
    args.extend(options.aggregator_args)
    aggregator["ports"][0]["containerPort"] = options.aggregator_port
    _secret_ref(aggregator["env"])

    daemonset = t["DaemonSet"]
    daemonset["metadata"]["name"] = AGENT_NAME
    daemonset["spec"]["selector"]["matchLabels"][CAPTURE_LABEL] = cid
    template = daemonset["spec"]["template"]
    _label(template, cid)
    pod_spec = template["spec"]
    pod_spec["serviceAccountName"] = SERVICE_ACCOUNT_NAME
    if options.node_selector:
        pod_spec["nodeSelector"] = {**pod_spec.get("nodeSelector", {}),
                                    **options.node_selector}
    agent = _container(pod_spec, AGENT_CONTAINER)
    if not options.memlock:
        added = agent["securityContext"]["capabilities"]["add"]
        added.remove(MEMLOCK_CAPABILITY)
        scc = t["SecurityContextConstraints"]
        scc["allowedCapabilities"].remove(MEMLOCK_CAPABILITY)
    agent["image"] = options.image
    agent["imagePullPolicy"] = options.pull_policy
    _set_env(agent, "NETOBSERV_AGGREGATOR", aggregator_address(options))
    _set_env(agent, "LOG_LEVEL", options.log_level)
    for name in sorted(options.agent_env):
        _set_env(agent, name, options.agent_env[name])
    _secret_ref(agent["env"])
    if options.openshift:
        agent["securityContext"]["seLinuxOptions"] = {"type": OPENSHIFT_SELINUX_TYPE}

    objects = []
    for kind in _APPLY_ORDER:
        if kind == "SecurityContextConstraints" and not options.openshift:
            continue
        obj = t[kind]
        if kind not in _CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = ns
        _label(obj, cid)
        objects.append(obj)
    return objects


def delete_order(objects: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The same objects in the order to delete them: workloads first, the Namespace last.

    Cluster-scoped objects are included (deleting the namespace would not remove them).
    Kinds this module does not create keep their relative order, before the Namespace.
    """
    rank = {kind: i for i, kind in enumerate(_DELETE_ORDER)}
    last = rank["Namespace"]
    items = [dict(obj) for obj in objects]
    return sorted(items, key=lambda obj: rank.get(str(obj.get("kind")), last - 0.5))


#: Keys written first, in this order; all others follow sorted.
_FIRST_KEYS: Final = ("apiVersion", "kind", "metadata", "name")


def _ordered(value: Any) -> Any:
    """A stable key order at every level: _FIRST_KEYS first, then the others sorted."""
    if isinstance(value, Mapping):
        first = [key for key in _FIRST_KEYS if key in value]
        rest = sorted((key for key in value if key not in _FIRST_KEYS), key=str)
        return {key: _ordered(value[key]) for key in [*first, *rest]}
    if isinstance(value, list):
        return [_ordered(item) for item in value]
    return value


def to_yaml(objects: Iterable[Mapping[str, Any]]) -> str:
    """One multi-document YAML file of ``objects``, with a header saying how to delete them."""
    items = [dict(obj) for obj in objects]
    captures = sorted({
        str(obj.get("metadata", {}).get("labels", {})[CAPTURE_LABEL])
        for obj in items
        if CAPTURE_LABEL in obj.get("metadata", {}).get("labels", {})
    })
    capture = captures[0] if len(captures) == 1 else "<capture id>"
    kinds = list(dict.fromkeys(str(obj.get("kind", "")).lower()
                               for obj in delete_order(items)))
    header = [
        f"# netobserv-tui {__version__}: every object of one capture, in apply order.",
        "# Written by `netobserv flows|packets ... --yaml`; apply it with `kubectl apply -f`.",
        "# Delete it with `netobserv cleanup`, or (workloads first, the namespace last):",
        f"#   kubectl delete -A -l {CAPTURE_LABEL}={capture} {','.join(kinds) or 'all'}",
    ]
    documents = [
        yaml.safe_dump(_ordered(obj), sort_keys=False, default_flow_style=False,
                       allow_unicode=True, width=1000)
        for obj in items
    ]
    return "\n".join(header) + "\n---\n" + "---\n".join(documents)
