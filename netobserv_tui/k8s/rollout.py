"""Wait for a capture's pods to be ready, with progress; say why when they are not.

The aggregator pod must be Ready and the agent DaemonSet must have every scheduled pod
ready (and at least one).  Until the deadline, :func:`wait_ready` polls once a second and
reports ``"agents 2/3 ready, aggregator Running"``; at the deadline, or as soon as a pod
is stuck in a state that will not resolve by itself (ImagePullBackOff, ErrImagePull,
CrashLoopBackOff, CreateContainerConfigError, InvalidImageName...), it raises
:class:`RolloutError` with the diagnostics a person would gather by hand: each pod's phase
and container states, the namespace's recent events about them, and their last log lines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from ..model.errors import CaptureError
from .manifests import AGENT_NAME, AGGREGATOR_NAME, CAPTURE_LABEL
from .objects import call

#: Waiting reasons that will not go away by waiting.
STUCK: Final = frozenset({
    "ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff", "CreateContainerConfigError",
    "CreateContainerError", "InvalidImageName", "ErrImageNeverPull", "RunContainerError",
})
#: Log lines kept per container in the diagnostics.
LOG_LINES: Final = 10
#: Events kept in the diagnostics (the most recent).
EVENTS: Final = 15


class RolloutError(CaptureError):
    """The pods did not become ready; the message holds the diagnostics."""


async def wait_ready(api_client: client.ApiClient, namespace: str, capture_id: str,
                     timeout: float, progress: Callable[[str], None] = lambda _t: None,
                     *, interval: float = 1.0) -> None:
    """Return once the aggregator and every agent are ready; else :class:`RolloutError`."""
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        ds = await call("cannot read the agents' DaemonSet",
                        apps.read_namespaced_daemon_set(AGENT_NAME, namespace))
        pods = await call("cannot list the capture's pods", core.list_namespaced_pod(
            namespace, label_selector=f"{CAPTURE_LABEL}={capture_id}"))
        aggregator = next((p for p in pods.items if p.metadata.name == AGGREGATOR_NAME), None)
        desired = (ds.status.desired_number_scheduled or 0) if ds.status else 0
        ready = (ds.status.number_ready or 0) if ds.status else 0
        agg_state = _pod_state(aggregator)
        text = f"agents {ready}/{desired} ready, aggregator {agg_state}"
        if text != last:
            progress(text)
            last = text
        if desired > 0 and ready >= desired and agg_state == "Ready":
            return
        stuck = [f"{p.metadata.name}: {reason}" for p in pods.items
                 for reason in _stuck_reasons(p)]
        timed_out = time.monotonic() >= deadline
        if stuck or timed_out:
            why = ("pods cannot start: " + "; ".join(stuck)) if stuck else (
                f"not ready after {timeout:g}s ({text})")
            if desired == 0 and not stuck:
                why += "; no node can run an agent (check --node-selector and node taints)"
            raise RolloutError(f"the capture did not start: {why}\n"
                               + await diagnose(api_client, namespace, capture_id))
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def _pod_state(pod: Any) -> str:
    if pod is None:
        return "not created yet"
    status = pod.status
    if status is None:
        return "Pending"
    for condition in status.conditions or []:
        if condition.type == "Ready" and condition.status == "True":
            return "Ready"
    for cs in status.container_statuses or []:
        waiting = cs.state.waiting if cs.state else None
        if waiting is not None and waiting.reason:
            return str(waiting.reason)
    return str(status.phase or "Pending")


def _stuck_reasons(pod: Any) -> list[str]:
    statuses = (pod.status.container_statuses or []) if pod.status else []
    found = []
    for cs in statuses:
        waiting = cs.state.waiting if cs.state else None
        if waiting is not None and waiting.reason in STUCK:
            found.append(f"{waiting.reason}" + (f" ({waiting.message})" if waiting.message
                                                else ""))
    return found


async def diagnose(api_client: client.ApiClient, namespace: str, capture_id: str) -> str:
    """Pods with their container states, recent events about them, and last log lines."""
    core = client.CoreV1Api(api_client)
    lines: list[str] = []
    try:
        pods = (await core.list_namespaced_pod(
            namespace, label_selector=f"{CAPTURE_LABEL}={capture_id}")).items
    except ApiException as exc:
        return f"(could not list the pods: {exc.status} {exc.reason})"
    names = {p.metadata.name for p in pods}
    for pod in pods:
        node = pod.spec.node_name if pod.spec else None
        lines.append(f"pod {pod.metadata.name}"
                     + (f" on {node}" if node else "") + f": {_pod_state(pod)}")
        for cs in (pod.status.container_statuses or []) if pod.status else []:
            lines.append(f"  container {cs.name}: {_container_state(cs)}")
    try:
        events = (await core.list_namespaced_event(namespace)).items
    except ApiException as exc:
        events = []
        lines.append(f"(could not list events: {exc.status} {exc.reason})")
    ours = [e for e in events if e.involved_object and (
        e.involved_object.name in names or e.involved_object.name == AGENT_NAME)]
    ours.sort(key=lambda e: str(e.last_timestamp or e.event_time or e.metadata.creation_timestamp
                                or ""))
    # Warnings say what went wrong: all of them first (up to EVENTS), then the latest others.
    warnings = [e for e in ours if e.type == "Warning"][-EVENTS:]
    others = [e for e in ours if e.type != "Warning"][-(EVENTS - len(warnings)):] \
        if len(warnings) < EVENTS else []
    if ours:
        lines.append("recent events:")
        for event in [*warnings, *others]:
            lines.append(f"  {event.type or ''} {event.reason or ''} "
                         f"{event.involved_object.kind}/{event.involved_object.name}: "
                         f"{(event.message or '').strip()}")
    for pod in pods:
        for cs in (pod.status.container_statuses or []) if pod.status else []:
            if not (cs.state and (cs.state.running or cs.state.terminated)) and not (
                    cs.last_state and cs.last_state.terminated):
                continue  # never started: no log
            text = await _log_tail(core, namespace, pod.metadata.name, cs.name)
            if text:
                lines.append(f"last log lines of {pod.metadata.name}/{cs.name}:")
                lines.extend(f"  {line}" for line in text.splitlines()[-LOG_LINES:])
    return "\n".join(lines)


def _container_state(cs: Any) -> str:
    state = cs.state
    if state is None:
        return "unknown"
    if state.waiting is not None:
        return f"waiting: {state.waiting.reason or ''} {state.waiting.message or ''}".rstrip()
    if state.terminated is not None:
        t = state.terminated
        return f"terminated: {t.reason or ''} exit code {t.exit_code} {t.message or ''}".rstrip()
    return "running" + (" (ready)" if cs.ready else " (not ready)")


async def _log_tail(core: client.CoreV1Api, namespace: str, pod: str, container: str) -> str:
    try:
        # Not preloaded: the client would parse a log that looks like JSON as JSON.
        response: Any = await core.read_namespaced_pod_log(
            pod, namespace, container=container, tail_lines=LOG_LINES,
            _preload_content=False)
        data = await response.read()
        response.release()
    except ApiException:
        return ""
    return str(data.decode("utf-8", "replace"))
