"""Wait for a capture's pods to be ready, with progress; say why when they are not.

The aggregator pod must be Ready and the agent DaemonSet must have every scheduled pod
ready (and at least one).  Until the deadline, :func:`wait_ready` polls once a second and
reports ``"agents 2/3 ready, aggregator Running"``; at the deadline, or as soon as a pod
is stuck in a state that will not resolve by itself (ImagePullBackOff, ErrImagePull,
CrashLoopBackOff, CreateContainerConfigError, InvalidImageName...), it raises
:class:`RolloutError`.

Its message is short: one line per distinct cause, the pods and containers that share it
grouped on that line (three agents that cannot pull the image make one line, with the
registry's error once), and the last log lines of a container that ran, once per cause.
The whole picture a person would gather by hand (each pod's phase and container states,
the namespace's events about them, their last log lines) is logged at INFO and kept in
:attr:`RolloutError.details`.

:func:`agent_pods` and :func:`log_tail` also serve the capture while it runs (which agents
did not connect, and what their logs say).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from ..model.errors import CaptureError
from .manifests import AGENT_NAME, AGGREGATOR_NAME, CAPTURE_LABEL
from .objects import call

log = logging.getLogger(__name__)

#: Waiting reasons that will not go away by waiting.
STUCK: Final = frozenset({
    "ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff", "CreateContainerConfigError",
    "CreateContainerError", "InvalidImageName", "ErrImageNeverPull", "RunContainerError",
})
#: Log lines kept per container in the details.
LOG_LINES: Final = 10
#: Log lines shown with a cause in the short message.
CAUSE_LOG_LINES: Final = 5
#: Nodes named on a cause's line; the others are counted.
NODES_NAMED: Final = 4
#: Reasons that say the same thing, for grouping (a pull fails, then backs off).
_SAME_REASON: Final = {"ErrImagePull": "ImagePullBackOff"}
#: Event and state messages that only restate a reason or a back-off: the cause is
#: elsewhere (another event, the last exit, the log).
_GENERIC: Final = re.compile(r"^(Error: \w+|back-off\b.*)$", re.IGNORECASE | re.DOTALL)
#: The agents of a capture.
AGENT_SELECTOR: Final = "app.kubernetes.io/component=agent"


class RolloutError(CaptureError):
    """The pods did not become ready: the message says why, one line per cause;
    ``details`` holds everything that was found (also logged)."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


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
        stuck = any(_stuck_reasons(p) for p in pods.items)
        timed_out = time.monotonic() >= deadline
        if stuck or timed_out:
            why = f"the pods cannot start ({text})" if stuck else (
                f"not ready after {timeout:g}s ({text})")
            if desired == 0 and not stuck:
                why += "; no node can run an agent (check --node-selector and node taints)"
            found = await _gather(api_client, namespace, capture_id)
            details = found.details()
            log.info("The capture's pods did not become ready: %s\n%s", why, details)
            lines = summarize(found.causes())
            raise RolloutError("the capture did not start: " + why + (":" if lines else "")
                               + "".join(f"\n  {line}" for line in lines), details)
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
    return [cs.state.waiting.reason for cs in statuses
            if cs.state and cs.state.waiting and cs.state.waiting.reason in STUCK]


# -- causes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cause:
    """Why one container (``container`` "" : the pod itself) of one pod is not ready."""

    pod: str
    node: str
    container: str
    reason: str
    detail: str
    #: Its last log lines, when it ran.
    log: tuple[str, ...] = ()

    @property
    def role(self) -> str:
        """``aggregator``, ``agent`` or (an event of the DaemonSet) ``DaemonSet``."""
        if self.pod == AGGREGATOR_NAME:
            return "aggregator"
        return "DaemonSet" if self.pod == AGENT_NAME else "agent"

    def key(self) -> tuple[str, str]:
        """Causes with the same key are one cause: the same reason and message, once the
        pod's and node's own names are taken out of the message."""
        detail = self.detail
        for name in (self.pod, self.node):
            if name:
                detail = detail.replace(name, "<>")
        return (_SAME_REASON.get(self.reason, self.reason), detail)


def summarize(causes: Iterable[Cause]) -> list[str]:
    """One line per distinct cause, naming the pods (by node) and containers that share
    it; under it, the last log lines of its first container that has any."""
    groups: dict[tuple[str, str], list[Cause]] = {}
    for cause in causes:
        groups.setdefault(cause.key(), []).append(cause)
    lines = []
    for (reason, _), members in groups.items():
        detail = members[0].detail
        lines.append(f"{_subject(members)}: {reason}" + (f": {detail}" if detail else ""))
        logged = min((m for m in members if m.log), key=lambda m: (m.node, m.pod), default=None)
        if logged is not None:
            lines.append(f"  last log lines ({_subject([logged])}):")
            lines.extend(f"    {line}" for line in logged.log[-CAUSE_LOG_LINES:])
    return lines


def _subject(members: Sequence[Cause]) -> str:
    """``3 agent pods (node-a, node-b, node-c), container agent``, and so on for each
    role and container of the group, joined by ``; ``."""
    parts: dict[tuple[str, str], list[Cause]] = {}
    for member in members:
        parts.setdefault((member.role, member.container), []).append(member)
    texts = []
    for (role, container), same in parts.items():
        if role == "DaemonSet":
            texts.append(f"DaemonSet {AGENT_NAME}")
            continue
        nodes = sorted({m.node for m in same if m.node})
        where = ", ".join(nodes[:NODES_NAMED]) + (
            f" and {len(nodes) - NODES_NAMED} more" if len(nodes) > NODES_NAMED else "")
        if len(same) == 1:
            text = f"{role} pod" + (f" on {where}" if where else "")
        else:
            text = f"{len(same)} {role} pods" + (f" ({where})" if where else "")
        texts.append(text + (f", container {container}" if container else ""))
    return "; ".join(texts)


@dataclass
class _Found:
    """What the API said about a capture's pods: the pods, the events about them (and the
    DaemonSet's), oldest first, and the last log lines of each container that ran."""

    pods: list[Any]
    events: list[Any]
    logs: dict[tuple[str, str], list[str]]
    problems: list[str]

    def causes(self) -> list[Cause]:
        found = []
        for pod in self.pods:
            if _pod_state(pod) != "Ready":
                found.extend(self._pod_causes(pod))
        seen = set()
        for event in self.events:  # the DaemonSet's own warnings: pods it could not create
            if event.involved_object.name == AGENT_NAME and event.type == "Warning":
                cause = Cause(AGENT_NAME, "", "", event.reason or "Warning",
                              (event.message or "").strip())
                if cause.key() not in seen:
                    seen.add(cause.key())
                    found.append(cause)
        return found

    def _pod_causes(self, pod: Any) -> list[Cause]:
        name = pod.metadata.name
        node = (pod.spec.node_name if pod.spec else None) or ""
        statuses = (pod.status.container_statuses or []) if pod.status else []
        if not statuses:
            reason = str((pod.status.phase if pod.status else None) or "Pending")
            for condition in (pod.status.conditions or []) if pod.status else []:
                if condition.type == "PodScheduled" and condition.status != "True":
                    reason = str(condition.reason or "Unschedulable")
            warnings = self._warnings(name, "")
            return [Cause(name, node, "", reason, warnings[0] if warnings else "")]
        causes = []
        for cs in statuses:
            if cs.ready:
                continue
            reason, candidates = _container_reason(cs)
            warnings = self._warnings(name, cs.name)
            pulling = reason in ("ImagePullBackOff", "ErrImagePull")
            # The registry's answer (an event) says more than the back-off (the state).
            candidates = [*warnings, *candidates] if pulling else [*candidates, *warnings]
            informative = [c for c in candidates if c and not _GENERIC.match(c)]
            # Failing that, a back-off that names the image; never one that names the pod.
            detail = informative[0] if informative else (
                next((c for c in candidates if c), "") if pulling else "")
            causes.append(Cause(name, node, cs.name, reason, detail,
                                tuple(self.logs.get((name, cs.name), ()))))
        return causes

    def _warnings(self, pod: str, container: str) -> list[str]:
        """Messages of the Warning events about the pod (or its container), newest first."""
        path = f"spec.containers{{{container}}}"
        return [(e.message or "").strip() for e in reversed(self.events)
                if e.type == "Warning" and e.involved_object.name == pod
                and (not e.involved_object.field_path or e.involved_object.field_path == path)]

    def details(self) -> str:
        """Everything: each pod and container state, every event, the logs."""
        lines = list(self.problems)
        for pod in self.pods:
            node = pod.spec.node_name if pod.spec else None
            lines.append(f"pod {pod.metadata.name}"
                         + (f" on {node}" if node else "") + f": {_pod_state(pod)}")
            for cs in (pod.status.container_statuses or []) if pod.status else []:
                lines.append(f"  container {cs.name}: {_container_state(cs)}")
        if self.events:
            lines.append("events:")
            for event in self.events:
                count = f" (x{event.count})" if (event.count or 0) > 1 else ""
                lines.append(f"  {event.type or ''} {event.reason or ''} "
                             f"{event.involved_object.kind}/{event.involved_object.name}"
                             f"{count}: {(event.message or '').strip()}")
        for (pod_name, container), text in self.logs.items():
            lines.append(f"last log lines of {pod_name}/{container}:")
            lines.extend(f"  {line}" for line in text)
        return "\n".join(lines)


def _container_reason(cs: Any) -> tuple[str, list[str]]:
    """A container's reason for not being ready, and the messages that may say why."""
    state, last = cs.state, cs.last_state
    exited = (state.terminated if state else None) or (last.terminated if last else None)
    exit_text = ""
    if exited is not None:
        exit_text = f"exited with code {exited.exit_code}" + (
            f" ({exited.reason})" if exited.reason else "") + (
            f": {exited.message.strip()}" if exited.message else "")
    waiting = state.waiting if state else None
    if waiting is not None:
        return str(waiting.reason or "Waiting"), [(waiting.message or "").strip(), exit_text]
    if state is not None and state.terminated is not None:
        return "Terminated", [exit_text]
    return "running, not ready", [exit_text]


async def _gather(api_client: client.ApiClient, namespace: str, capture_id: str) -> _Found:
    core = client.CoreV1Api(api_client)
    found = _Found([], [], {}, [])
    try:
        # The aggregator, then the agents by node: causes come in this order.
        found.pods = sorted((await core.list_namespaced_pod(
            namespace, label_selector=f"{CAPTURE_LABEL}={capture_id}")).items,
            key=lambda p: (p.metadata.name != AGGREGATOR_NAME,
                           str((p.spec.node_name if p.spec else None) or ""),
                           str(p.metadata.name)))
    except ApiException as exc:
        found.problems.append(f"(could not list the pods: {exc.status} {exc.reason})")
    names = {p.metadata.name for p in found.pods} | {AGENT_NAME}
    try:
        events = (await core.list_namespaced_event(namespace)).items
    except ApiException as exc:
        events = []
        found.problems.append(f"(could not list events: {exc.status} {exc.reason})")
    found.events = sorted(
        (e for e in events if e.involved_object and e.involved_object.name in names),
        key=lambda e: str(e.last_timestamp or e.event_time or e.metadata.creation_timestamp
                          or ""))
    for pod in found.pods:
        for cs in (pod.status.container_statuses or []) if pod.status else []:
            if not _ran(cs):
                continue  # never started: no log
            text = await log_tail(core, namespace, pod.metadata.name, cs.name, LOG_LINES)
            if text:
                found.logs[(pod.metadata.name, cs.name)] = text
    return found


def _ran(cs: Any) -> bool:
    state = cs.state
    if state and (state.running or state.terminated):
        return True
    if cs.last_state and cs.last_state.terminated:
        return True
    return bool(state and state.waiting and state.waiting.reason == "CrashLoopBackOff")


async def diagnose(api_client: client.ApiClient, namespace: str, capture_id: str) -> str:
    """Pods with their container states, the events about them, and last log lines."""
    return (await _gather(api_client, namespace, capture_id)).details()


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


# -- the agents while the capture runs -------------------------------------------------


@dataclass(frozen=True)
class AgentPod:
    """An agent pod that runs: where, at which address, and in what state."""

    name: str
    node: str
    #: The node's address (the agents report it as their ``ip``); "" if not known yet.
    host_ip: str
    #: ``Ready``, or why not (``CrashLoopBackOff``...), with its restarts.
    state: str


async def agent_pods(api_client: client.ApiClient, namespace: str,
                     capture_id: str) -> list[AgentPod]:
    """The capture's agent pods that run on a node (phase Running), by node."""
    pods = await call("cannot list the agents", client.CoreV1Api(api_client).list_namespaced_pod(
        namespace, label_selector=f"{CAPTURE_LABEL}={capture_id},{AGENT_SELECTOR}"))
    found = []
    for pod in pods.items:
        status, node = pod.status, pod.spec.node_name if pod.spec else None
        if status is None or status.phase != "Running" or not node:
            continue
        state = _pod_state(pod)
        restarts = sum(cs.restart_count or 0 for cs in status.container_statuses or [])
        if restarts:
            state += f", {restarts} restart" + ("s" if restarts > 1 else "")
        found.append(AgentPod(pod.metadata.name, node, status.host_ip or "", state))
    return sorted(found, key=lambda p: (p.node, p.name))


async def log_tail(core: client.CoreV1Api, namespace: str, pod: str, container: str,
                   lines: int) -> list[str]:
    """The last ``lines`` lines of a container's log ([] when it cannot be read)."""
    try:
        # Not preloaded: the client would parse a log that looks like JSON as JSON.
        response: Any = await core.read_namespaced_pod_log(
            pod, namespace, container=container, tail_lines=lines, _preload_content=False)
        data = await response.read()
        response.release()
    except ApiException:
        return []
    return [line for line in data.decode("utf-8", "replace").splitlines()
            if line.strip()][-lines:]
