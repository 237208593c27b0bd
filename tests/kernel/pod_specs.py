"""What a kubelet would supply to the rendered pod specs, for tests that run them here."""

from __future__ import annotations

from typing import Any

#: Downward API values of a pod on a node of this host.
DOWNWARD = {"status.hostIP": "198.18.0.254", "spec.nodeName": "node-a",
            "metadata.namespace": "netobserv-cli"}
#: The aggregator's Service name, reached on this host at 127.0.0.1.
SERVICE_HOST = "netobserv-aggregator.netobserv-cli.svc"


def container(objects: list[dict[str, Any]], kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pod spec and first container of the Pod or DaemonSet among ``objects``."""
    obj = next(o for o in objects if o["kind"] == kind)
    spec = obj["spec"] if kind == "Pod" else obj["spec"]["template"]["spec"]
    return spec, spec["containers"][0]


def kubelet_env(cont: dict[str, Any], secret: dict[str, str],
                service_by_name: bool = False) -> dict[str, str]:
    """The container's env as set by the kubelet: values, the Secret's keys, the downward
    API, with the Service's name mapped to this host (kept as a name with
    ``service_by_name``, for a container that resolves it itself)."""
    env = {}
    for item in cont["env"]:
        if "value" in item:
            value = item["value"]
        elif "secretKeyRef" in item["valueFrom"]:
            value = secret[item["valueFrom"]["secretKeyRef"]["key"]]
        else:
            value = DOWNWARD[item["valueFrom"]["fieldRef"]["fieldPath"]]
        env[item["name"]] = value if service_by_name else value.replace(SERVICE_HOST,
                                                                         "127.0.0.1")
    return env
