"""The deploy/ manifests as rendered for every option combination the CLI offers.

Each rendered object is validated against the Kubernetes OpenAPI schema of two Kubernetes
versions (kubernetes-validate, strict: unknown fields are errors), except OpenShift's
SecurityContextConstraints, which is not part of that schema: it is checked against the
required fields and types of OpenShift's CRD (transcribed below) and field by field.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from netobserv_tui.k8s import manifests as m
from netobserv_tui.k8s.manifests import CAPTURE_LABEL, MANAGED_BY, DeployOptions
from netobserv_tui.model.filters import FilterSet

TOKEN = "tok-3f9a0c1e5b7d42a8"
CID = "cap-1"
LATEST = ".".join(kubernetes_validate.latest_version().split(".")[:2])
#: Kubernetes 1.30, 1.33 and the newest release the installed kubernetes-validate knows.
VERSIONS = tuple(dict.fromkeys(("1.30", "1.33", LATEST)))

FILTER_JSON = FilterSet.parse(
    ["--enable_filter=true", "--protocol=tcp", "--port=80", "--cidr=10.0.0.0/8"]
)[0].to_json()

#: Every option combination the CLI can produce (flags, environment, features, filters).
COMBOS: dict[str, DeployOptions] = {
    "defaults": DeployOptions(capture_id=CID, token=TOKEN),
    "custom namespace, image, pull policy": DeployOptions(
        capture_id=CID, token=TOKEN, namespace="team-net", image="registry.example:5000/n/t:v1",
        pull_policy="Always"),
    "via environment": m.options_from_env(
        {"NETOBSERV_IMAGE": "localhost/netobserv-tui:dev", "NETOBSERV_NAMESPACE": "obs",
         "NETOBSERV_PULL_POLICY": "Never"},
        capture_id=CID, token=TOKEN),
    "via environment, agent image alias": m.options_from_env(
        {"NETOBSERV_AGENT_IMAGE": "quay.io/me/netobserv-tui:pr-7"}, capture_id=CID, token=TOKEN),
    "node selector": DeployOptions(
        capture_id=CID, token=TOKEN,
        node_selector={"kubernetes.io/hostname": "worker-1", "node-role.kubernetes.io/infra": ""}),
    "openshift": DeployOptions(capture_id=CID, token=TOKEN, openshift=True),
    "nodes on 5.11 or later": DeployOptions(capture_id=CID, token=TOKEN, memlock=False),
    "openshift, nodes on 5.11 or later": DeployOptions(capture_id=CID, token=TOKEN,
                                                       openshift=True, memlock=False),
    "features and filters": DeployOptions(
        capture_id=CID, token=TOKEN,
        agent_env={"FEATURES": "pktdrop,dns,rtt", "DNS_TRACKING_PORT": "5353",
                   "FLOW_FILTER_RULES": FILTER_JSON, "SAMPLING": "50",
                   "CACHE_MAX_FLOWS": "50000", "CACHE_ACTIVE_TIMEOUT": "2s"}),
    "port and log level": DeployOptions(
        capture_id=CID, token=TOKEN, aggregator_port=31000, log_level="debug"),
    **{f"pull policy {policy}": DeployOptions(capture_id=CID, token=TOKEN, pull_policy=policy)
       for policy in m.PULL_POLICIES},
    "everything": DeployOptions(
        capture_id="x" * 20, token=TOKEN, namespace="n" * 63, image="img@sha256:" + "a" * 64,
        pull_policy="Never", agent_env={"FEATURES": "pktdrop", "FLOW_FILTER_RULES": FILTER_JSON},
        node_selector={"pool": "net"}, openshift=True, aggregator_port=1, log_level="error"),
}

BASE_RULES = [
    {"apiGroups": [""], "resources": ["pods", "services", "nodes"], "verbs": ["list", "watch"]},
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["list", "watch"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list", "watch"]},
]

#: OpenShift's SecurityContextConstraints CRD (security.openshift.io/v1), transcribed: its
#: required fields and the type of every field. kubernetes-validate does not know it.
_STRATEGY = {"type": ["object", "null"], "properties": {"type": {"type": "string"}}}
_STRINGS = {"type": ["array", "null"], "items": {"type": "string"}}
SCC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "allowHostDirVolumePlugin", "allowHostIPC", "allowHostNetwork", "allowHostPID",
        "allowHostPorts", "allowPrivilegedContainer", "allowedCapabilities",
        "defaultAddCapabilities", "priority", "readOnlyRootFilesystem",
        "requiredDropCapabilities", "volumes",
    ],
    "properties": {
        "apiVersion": {"const": "security.openshift.io/v1"},
        "kind": {"const": "SecurityContextConstraints"},
        "metadata": {"type": "object", "required": ["name"]},
        **{name: {"type": "boolean"} for name in (
            "allowHostDirVolumePlugin", "allowHostIPC", "allowHostNetwork", "allowHostPID",
            "allowHostPorts", "allowPrivilegedContainer", "readOnlyRootFilesystem")},
        "allowPrivilegeEscalation": {"type": ["boolean", "null"]},
        "defaultAllowPrivilegeEscalation": {"type": ["boolean", "null"]},
        **{name: _STRINGS for name in (
            "allowedCapabilities", "defaultAddCapabilities", "requiredDropCapabilities",
            "volumes", "seccompProfiles", "users", "groups", "allowedUnsafeSysctls",
            "forbiddenSysctls")},
        "priority": {"type": ["integer", "null"]},
        "runAsUser": _STRATEGY, "seLinuxContext": _STRATEGY, "fsGroup": _STRATEGY,
        "supplementalGroups": _STRATEGY,
    },
}


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [obj["kind"] for obj in objects]
    assert len(kinds) == len(set(kinds)), kinds
    return {obj["kind"]: obj for obj in objects}


def walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


def container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod_spec["containers"]
    assert isinstance(only, dict)
    return only


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    names = [e["name"] for e in c["env"]]
    assert len(names) == len(set(names)), names
    return {e["name"]: e for e in c["env"]}


@pytest.fixture(scope="module", params=list(COMBOS), ids=list(COMBOS))
def combo(request: pytest.FixtureRequest) -> tuple[DeployOptions, list[dict[str, Any]]]:
    options = COMBOS[request.param]
    return options, m.render(options)


# -- schema -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_validates_against_the_kubernetes_schema(
    combo: tuple[DeployOptions, list[dict[str, Any]]], version: str
) -> None:
    _, objects = combo
    checked = 0
    for obj in objects:
        if obj["kind"] == "SecurityContextConstraints":
            continue
        kubernetes_validate.validate(obj, version, strict=True)
        checked += 1
    assert checked == 8


def test_the_openshift_scc_has_the_crd_required_fields_and_types(
    combo: tuple[DeployOptions, list[dict[str, Any]]]
) -> None:
    options, objects = combo
    kinds = by_kind(objects)
    if not options.openshift:
        assert "SecurityContextConstraints" not in kinds
        return
    scc = kinds["SecurityContextConstraints"]
    jsonschema.validate(scc, SCC_SCHEMA)
    agent = container(kinds["DaemonSet"]["spec"]["template"]["spec"])
    # It admits exactly what the pods ask for.
    assert scc["allowedCapabilities"] == agent["securityContext"]["capabilities"]["add"]
    assert scc["requiredDropCapabilities"] == ["ALL"]
    assert scc["allowPrivilegedContainer"] is False
    assert scc["allowHostNetwork"] is True and scc["allowHostDirVolumePlugin"] is True
    assert not (scc["allowHostPID"] or scc["allowHostIPC"] or scc["allowHostPorts"])
    assert scc["seccompProfiles"] == ["runtime/default", "unconfined"]
    volume_kinds = {
        key for pod in (kinds["Pod"]["spec"], kinds["DaemonSet"]["spec"]["template"]["spec"])
        for volume in pod["volumes"] for key in volume if key != "name"
    }
    assert volume_kinds | {"projected"} == set(scc["volumes"])
    assert agent["securityContext"]["seLinuxOptions"] == {"type": "spc_t"}
    assert scc["metadata"]["name"] == f"netobserv-tui-{options.namespace}"


def test_the_scc_check_itself_catches_a_missing_field() -> None:
    scc = by_kind(m.render(COMBOS["openshift"]))["SecurityContextConstraints"]
    broken = {k: v for k, v in scc.items() if k != "allowHostPorts"}
    with pytest.raises(jsonschema.ValidationError, match="allowHostPorts"):
        jsonschema.validate(broken, SCC_SCHEMA)


@pytest.mark.parametrize(("kernels", "needed"), [
    (["6.1.0-18-amd64", "5.11.0"], False),
    (["6.8.0-45-generic", "5.10.0-28-amd64"], True),  # one old node is enough
    (["4.18.0-553.el8_10.x86_64"], True),
    (["6.1.0", ""], True),  # unknown: it may be old
    (["weird"], True),
    ([], False),  # no node selected: nothing to run, nothing to grant
])
def test_sys_resource_follows_the_oldest_kernel(kernels: list[str], needed: bool) -> None:
    assert m.needs_memlock(kernels) is needed


def test_kubernetes_validate_is_strict_about_unknown_fields() -> None:
    pod = copy.deepcopy(by_kind(m.render(COMBOS["defaults"]))["Pod"])
    pod["spec"]["containers"][0]["securityContext"]["privilegd"] = False
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, LATEST, strict=True)


# -- what every capture gets -----------------------------------------------------------------


def test_apply_order_and_delete_order(combo: tuple[DeployOptions, list[dict[str, Any]]]) -> None:
    options, objects = combo
    scc = ["SecurityContextConstraints"] if options.openshift else []
    assert [o["kind"] for o in objects] == [
        "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Secret", *scc,
        "Service", "Pod", "DaemonSet"]
    assert [o["kind"] for o in m.delete_order(objects)] == [
        "DaemonSet", "Pod", "Service", "Secret", "ClusterRoleBinding", "ClusterRole", *scc,
        "ServiceAccount", "Namespace"]
    assert [o["kind"] for o in m.delete_order(list(reversed(objects)))] == \
        [o["kind"] for o in m.delete_order(objects)]


def test_every_object_carries_both_labels_and_the_namespace(
    combo: tuple[DeployOptions, list[dict[str, Any]]]
) -> None:
    options, objects = combo
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels[CAPTURE_LABEL] == options.capture_id, obj["kind"]
        for key, value in MANAGED_BY.items():
            assert labels[key] == value, obj["kind"]
        if obj["kind"] in ("Namespace", "ClusterRole", "ClusterRoleBinding",
                           "SecurityContextConstraints"):
            assert "namespace" not in obj["metadata"]
        else:
            assert obj["metadata"]["namespace"] == options.namespace, obj["kind"]
    kinds = by_kind(objects)
    assert kinds["Namespace"]["metadata"]["name"] == options.namespace
    pod_labels = kinds["DaemonSet"]["spec"]["template"]["metadata"]["labels"]
    assert pod_labels[CAPTURE_LABEL] == options.capture_id
    assert MANAGED_BY.items() <= pod_labels.items()


def test_namespace_admits_the_agents() -> None:
    labels = by_kind(m.render(COMBOS["defaults"]))["Namespace"]["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "privileged"


def test_cluster_scoped_names_include_the_namespace() -> None:
    a = by_kind(m.render(DeployOptions(capture_id=CID, token=TOKEN, namespace="one",
                                       openshift=True)))
    b = by_kind(m.render(DeployOptions(capture_id=CID, token=TOKEN, namespace="two",
                                       openshift=True)))
    for kind in ("ClusterRole", "ClusterRoleBinding", "SecurityContextConstraints"):
        assert a[kind]["metadata"]["name"] == "netobserv-tui-one"
        assert b[kind]["metadata"]["name"] == "netobserv-tui-two"
    assert a["ClusterRoleBinding"]["roleRef"]["name"] == "netobserv-tui-one"
    assert a["ClusterRoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": m.SERVICE_ACCOUNT_NAME, "namespace": "one"}]


def test_rbac_rules_are_exactly_the_enrichment_ones(
    combo: tuple[DeployOptions, list[dict[str, Any]]]
) -> None:
    options, objects = combo
    rules = by_kind(objects)["ClusterRole"]["rules"]
    if options.openshift:
        assert rules == [*BASE_RULES, {
            "apiGroups": ["security.openshift.io"],
            "resources": ["securitycontextconstraints"],
            "resourceNames": [f"netobserv-tui-{options.namespace}"],
            "verbs": ["use"]}]
    else:
        assert rules == BASE_RULES


# -- the token ----------------------------------------------------------------------------


def test_the_token_is_only_in_the_secret_and_read_through_secret_key_refs(
    combo: tuple[DeployOptions, list[dict[str, Any]]]
) -> None:
    options, objects = combo
    for obj in objects:
        holders = [v for v in walk(obj) if isinstance(v, str) and options.token in v]
        if obj["kind"] == "Secret":
            assert obj["stringData"] == {"token": options.token}
            assert holders == [options.token]
        else:
            assert holders == [], obj["kind"]
    kinds = by_kind(objects)
    for pod_spec in (kinds["Pod"]["spec"], kinds["DaemonSet"]["spec"]["template"]["spec"]):
        c = container(pod_spec)
        assert env_of(c)["NETOBSERV_TOKEN"]["valueFrom"] == {
            "secretKeyRef": {"name": m.SECRET_NAME, "key": "token"}}
    assert "--token-env" in container(kinds["Pod"]["spec"])["args"]


# -- aggregator ---------------------------------------------------------------------------


def test_agents_point_at_the_aggregator_service(
    combo: tuple[DeployOptions, list[dict[str, Any]]]
) -> None:
    options, objects = combo
    kinds = by_kind(objects)
    service, pod = kinds["Service"], kinds["Pod"]
    agent = container(kinds["DaemonSet"]["spec"]["template"]["spec"])
    (port,) = service["spec"]["ports"]
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert env_of(agent)["NETOBSERV_AGGREGATOR"] == {
        "name": "NETOBSERV_AGGREGATOR", "value": f"{host}:{port['port']}"}
    assert m.aggregator_address(options) == f"{host}:{options.aggregator_port}"
    assert port["port"] == options.aggregator_port
    # The Service selects exactly this capture's aggregator pod, on its listening port.
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["selector"][CAPTURE_LABEL] == options.capture_id
    agg = container(pod["spec"])
    (cport,) = agg["ports"]
    assert cport["name"] == port["targetPort"] and cport["containerPort"] == port["port"]
    args = agg["args"]
    # Every address of both families: IPv6-only and IPv4-only pod networks alike.
    assert args[args.index("--listen") + 1] == f"*:{options.aggregator_port}"
    assert args[args.index("--log-level") + 1] == options.log_level.upper()
    assert agg["command"] == ["python", "-m", "netobserv_tui.aggregator"]


def test_aggregator_runs_without_privilege(
    combo: tuple[DeployOptions, list[dict[str, Any]]]
) -> None:
    _, objects = combo
    spec = by_kind(objects)["Pod"]["spec"]
    sc = container(spec)["securityContext"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec.get("hostNetwork", False) is False
    mounts = {v["mountPath"]: v["name"] for v in container(spec)["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert set(mounts) == {"/output", "/tmp"}
    assert all(volumes[name]["emptyDir"] == {} for name in mounts.values())
    assert spec["automountServiceAccountToken"] is True
    assert spec["serviceAccountName"] == m.SERVICE_ACCOUNT_NAME


# -- agents -------------------------------------------------------------------------------


def test_agents_run_on_every_node_in_the_host_network(
    combo: tuple[DeployOptions, list[dict[str, Any]]]
) -> None:
    options, objects = combo
    ds = by_kind(objects)["DaemonSet"]
    spec = ds["spec"]["template"]["spec"]
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert spec["enableServiceLinks"] is True  # the Service's address without DNS
    assert spec["automountServiceAccountToken"] is False
    assert spec["terminationGracePeriodSeconds"] >= 45
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux", **options.node_selector}
    selector = ds["spec"]["selector"]["matchLabels"]
    assert selector.items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert selector[CAPTURE_LABEL] == options.capture_id


def test_agent_privileges_are_root_plus_four_capabilities(
    combo: tuple[DeployOptions, list[dict[str, Any]]]
) -> None:
    options, objects = combo
    agent = container(by_kind(objects)["DaemonSet"]["spec"]["template"]["spec"])
    sc = agent["securityContext"]
    assert sc["runAsUser"] == 0
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    # SYS_RESOURCE only for kernels before 5.11 (RLIMIT_MEMLOCK), as the SCC allows.
    memlock = ["SYS_RESOURCE"] if options.memlock else []
    assert sc["capabilities"] == {"drop": ["ALL"],
                                  "add": ["BPF", "PERFMON", "NET_ADMIN", *memlock]}
    scc = by_kind(m.render(dataclasses.replace(options, openshift=True)))[
        "SecurityContextConstraints"]
    assert scc["allowedCapabilities"] == ["BPF", "PERFMON", "NET_ADMIN", *memlock]
    # CRI-O's default seccomp profile refuses bpf(2) without CAP_SYS_ADMIN (see agent.yaml).
    assert sc["seccompProfile"] == {"type": "Unconfined"}
    assert ("seLinuxOptions" in sc) is options.openshift


def test_agent_mounts(combo: tuple[DeployOptions, list[dict[str, Any]]]) -> None:
    _, objects = combo
    spec = by_kind(objects)["DaemonSet"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {v["mountPath"]: v for v in container(spec)["volumeMounts"]}
    # tracefs and BTF are required (the pod fails at start without them); kernel headers
    # are not: the image has its own.
    required = {"/sys/kernel/tracing", "/sys/kernel/btf"}
    for path in required | {"/lib/modules", "/usr/src"}:
        assert mounts[path]["readOnly"] is True
        expected = {"path": path, "type": "Directory"} if path in required else {"path": path}
        assert volumes[mounts[path]["name"]]["hostPath"] == expected
    state = mounts["/run/netobserv-tui"]
    assert not state.get("readOnly", False)
    assert volumes[state["name"]]["hostPath"] == {
        "path": "/run/netobserv-tui", "type": "DirectoryOrCreate"}
    env = env_of(container(spec))
    # The header cache the agent writes (agent/kernel.py) and its scratch space: emptyDir.
    for path in (env["NETOBSERV_CACHE"]["value"], "/tmp"):
        assert volumes[mounts[path]["name"]]["emptyDir"] == {}
    assert env["NETOBSERV_STATE_DIR"]["value"] == "/run/netobserv-tui"
    assert set(mounts) == required | {"/lib/modules", "/usr/src",
        "/run/netobserv-tui", "/var/cache/netobserv-tui", "/tmp"}
    assert "/sys/kernel/debug" not in mounts


def test_agent_environment(combo: tuple[DeployOptions, list[dict[str, Any]]]) -> None:
    options, objects = combo
    agent = container(by_kind(objects)["DaemonSet"]["spec"]["template"]["spec"])
    env = env_of(agent)
    assert env["AGENT_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["LOG_LEVEL"]["value"] == options.log_level
    for name, value in options.agent_env.items():
        assert env[name] == {"name": name, "value": value}
    assert set(env) == m.RESERVED_AGENT_ENV | set(options.agent_env)
    assert agent["command"] == ["python", "-m", "netobserv_tui.agent"]
    assert agent["image"] == options.image
    assert agent["imagePullPolicy"] == options.pull_policy
    agg = container(by_kind(objects)["Pod"]["spec"])
    assert agg["image"] == options.image and agg["imagePullPolicy"] == options.pull_policy


def test_filter_json_reaches_the_agent_intact() -> None:
    agent = container(by_kind(m.render(COMBOS["features and filters"]))["DaemonSet"]
                      ["spec"]["template"]["spec"])
    rules = env_of(agent)["FLOW_FILTER_RULES"]["value"]
    assert rules == FILTER_JSON
    assert FilterSet.from_json(rules).to_json() == FILTER_JSON
    assert json.loads(rules)["rules"][0]["protocol"] == 6


# -- options ------------------------------------------------------------------------------


def test_defaults() -> None:
    options = DeployOptions(capture_id=CID, token=TOKEN)
    assert options.namespace == m.DEFAULT_NAMESPACE == "netobserv-cli"
    assert options.image == m.DEFAULT_IMAGE
    assert m.DEFAULT_IMAGE.startswith("quay.io/netobserv/netobserv-tui:")
    assert m.DEFAULT_IMAGE.endswith(":latest")  # a development version
    assert m._image_tag("1.2.0") == "1.2.0" and m._image_tag("1.2.0.dev3") == "latest"
    assert options.pull_policy == "IfNotPresent"
    assert (options.openshift, options.aggregator_port, options.log_level) == (False, 9990,
                                                                               "info")


def test_options_from_env_and_precedence() -> None:
    env = {"NETOBSERV_IMAGE": "a/b:1", "NETOBSERV_AGENT_IMAGE": "c/d:2",
           "NETOBSERV_NAMESPACE": "env-ns", "NETOBSERV_PULL_POLICY": "Always"}
    options = m.options_from_env(env, capture_id=CID, token=TOKEN)
    assert (options.image, options.namespace, options.pull_policy) == ("a/b:1", "env-ns",
                                                                       "Always")
    # Flags win over the environment; None means "flag not given".
    options = m.options_from_env(env, capture_id=CID, token=TOKEN, image="flag/img:3",
                                 namespace=None, pull_policy="Never")
    assert (options.image, options.namespace, options.pull_policy) == ("flag/img:3", "env-ns",
                                                                       "Never")
    # Empty variables count as unset.
    options = m.options_from_env({"NETOBSERV_IMAGE": "", "NETOBSERV_NAMESPACE": ""},
                                 capture_id=CID, token=TOKEN)
    assert (options.image, options.namespace) == (m.DEFAULT_IMAGE, m.DEFAULT_NAMESPACE)


def test_options_from_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETOBSERV_AGENT_IMAGE", "alias/img:4")
    monkeypatch.delenv("NETOBSERV_IMAGE", raising=False)
    monkeypatch.setenv("NETOBSERV_PULL_POLICY", "never")
    options = m.options_from_env(capture_id=CID, token=TOKEN)
    assert options.image == "alias/img:4"
    assert options.pull_policy == "Never"  # any case, canonical spelling


@pytest.mark.parametrize(
    ("kwargs", "option", "accepted"),
    [
        ({"capture_id": "Cap_1"}, "capture_id", "a-z, 0-9 and '-'"),
        ({"capture_id": "x" * 21}, "capture_id", "1 to 20 characters"),
        ({"capture_id": "-x"}, "capture_id", "starting and ending"),
        ({"capture_id": ""}, "capture_id", "a-z, 0-9"),
        ({"token": ""}, "token", "non-empty"),
        ({"namespace": "Bad_NS"}, "namespace", "DNS label"),
        ({"namespace": "n" * 64}, "namespace", "1 to 63"),
        ({"namespace": "kube-system"}, "namespace", "default, kube-* and openshift-*"),
        ({"namespace": "default"}, "namespace", "default, kube-* and openshift-*"),
        ({"namespace": "openshift-monitoring"}, "namespace", "openshift-*"),
        ({"image": ""}, "image", "image reference"),
        ({"image": "a b"}, "image", "image reference"),
        ({"pull_policy": "Sometimes"}, "pull_policy", "Always, IfNotPresent, Never"),
        ({"log_level": "verbose"}, "log_level", "debug, info, warning, error"),
        ({"aggregator_port": 0}, "aggregator_port", "1 to 65535"),
        ({"aggregator_port": 65536}, "aggregator_port", "1 to 65535"),
        ({"agent_env": {"1BAD": "x"}}, "agent_env", "letters, digits and '_'"),
        ({"agent_env": {"NETOBSERV_TOKEN": "x"}}, "agent_env", "NETOBSERV_AGGREGATOR"),
        ({"agent_env": {"LOG_LEVEL": "debug"}}, "agent_env", "use log_level"),
        ({"agent_env": {"SAMPLING": 5}}, "agent_env[SAMPLING]", "strings"),
        ({"node_selector": {"bad key!": "x"}}, "node_selector", "label keys"),
        ({"node_selector": {"pool": "-x"}}, "node_selector[pool]", "label values"),
    ],
)
def test_bad_options_name_the_option_and_what_is_accepted(
    kwargs: dict[str, Any], option: str, accepted: str
) -> None:
    values: dict[str, Any] = {"capture_id": CID, "token": TOKEN, **kwargs}
    with pytest.raises(ValueError) as info:
        DeployOptions(**values)
    message = str(info.value)
    assert message.startswith(option + ":"), message
    assert accepted in message, message


def test_bad_environment_is_refused_like_a_flag() -> None:
    with pytest.raises(ValueError, match=r"^pull_policy: .*Always, IfNotPresent, Never"):
        m.options_from_env({"NETOBSERV_PULL_POLICY": "Maybe"}, capture_id=CID, token=TOKEN)


# -- rendering is pure -------------------------------------------------------------------


def test_render_does_not_leak_between_captures() -> None:
    first = m.render(COMBOS["everything"])
    plain = m.render(COMBOS["defaults"])
    assert plain == m.render(COMBOS["defaults"])
    assert first != plain
    first[0]["metadata"]["name"] = "mutated"
    assert m.render(COMBOS["defaults"]) == plain


def test_options_keep_their_own_copy_of_the_mappings() -> None:
    env = {"FEATURES": "dns"}
    options = DeployOptions(capture_id=CID, token=TOKEN, agent_env=env)
    env["FEATURES"] = "pktdrop"
    assert options.agent_env == {"FEATURES": "dns"}
    with pytest.raises(TypeError):
        options.agent_env["FEATURES"] = "rtt"  # type: ignore[index]


def test_the_plain_files_are_valid_manifests_too() -> None:
    """deploy/*.yaml apply as they are (with the default namespace and a placeholder id)."""
    for path in sorted(m.deploy_dir().glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] != "SecurityContextConstraints":
                kubernetes_validate.validate(doc, LATEST, strict=True)
            else:
                jsonschema.validate(doc, SCC_SCHEMA)


def test_manifests_come_from_the_source_tree_and_ship_in_the_wheel() -> None:
    repo = Path(__file__).resolve().parents[2]
    assert m.deploy_dir() == repo / "deploy"
    pyproject = (repo / "pyproject.toml").read_text()
    assert '"deploy" = "netobserv_tui/_deploy"' in pyproject
    for name in ("Containerfile", "README.md", "krew/netobserv.yaml"):
        assert (repo / "deploy" / name).is_file()


# -- YAML output ----------------------------------------------------------------------------


def test_to_yaml_round_trips(combo: tuple[DeployOptions, list[dict[str, Any]]]) -> None:
    options, objects = combo
    text = m.to_yaml(objects)
    assert list(yaml.safe_load_all(text)) == objects
    assert text == m.to_yaml(copy.deepcopy(objects))  # stable
    header = text.split("\n---\n", 1)[0]
    assert all(line.startswith("#") for line in header.splitlines())
    assert f"kubectl delete -A -l {CAPTURE_LABEL}={options.capture_id} " in header
    assert "netobserv cleanup" in header
    delete_kinds = header.rsplit(" ", 1)[1].split(",")
    assert delete_kinds[0] == "daemonset" and delete_kinds[-1] == "namespace"
    assert len(delete_kinds) == len(objects)


def test_to_yaml_key_order() -> None:
    text = m.to_yaml(m.render(COMBOS["openshift"]))
    for doc in text.split("\n---\n")[1:]:
        assert doc.startswith("apiVersion: "), doc[:80]
        assert doc.splitlines()[1].startswith("kind: ")
        assert doc.splitlines()[2] == "metadata:"
        assert doc.splitlines()[3].startswith("  name: ")


def test_krew_manifest() -> None:
    plugin = yaml.safe_load((m.deploy_dir() / "krew" / "netobserv.yaml").read_text())
    assert plugin["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert plugin["kind"] == "Plugin" and plugin["metadata"]["name"] == "netobserv"
    platforms = plugin["spec"]["platforms"]
    assert {p["selector"]["matchLabels"]["arch"] for p in platforms} == {"amd64", "arm64"}
    for p in platforms:
        assert p["selector"]["matchLabels"]["os"] == "linux"
        assert p["bin"] == "kubectl-netobserv"
        assert p["uri"].endswith(f"-linux-{p['selector']['matchLabels']['arch']}.tar.gz")
        assert plugin["spec"]["version"] in p["uri"]
        assert len(p["sha256"]) == 64
