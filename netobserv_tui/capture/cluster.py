"""The Kubernetes target: agents as a DaemonSet, the aggregator as a pod, files pulled back.

Same contract as :class:`~.target.LocalTarget` (``start`` gives the live stream's endpoint,
``stop`` completes the files and returns a :class:`~.target.CaptureResult`), so
:func:`~.session.run_capture`, the TUI and ``--no-tui`` work unchanged::

    start: connect (kubeconfig, context) -> preflight -> create the objects -> wait for the
           rollout (progress; diagnostics and cleanup on failure) -> port-forward
    watch: while the capture runs, tell (a Notice) when running agents have not connected
           to the aggregator within ``agents_grace`` seconds, with their logs; and when they
           have, after all
    stop:  delete the DaemonSet (each agent flushes its last flows) -> FINISH/FETCH the files
           through the port-forward into --output -> delete every object of the capture

Every exit path deletes what was created: a failed start cleans up before raising, and
``stop`` cleans up even when the files could not be copied (that is reported).  An agent
that never connected is a problem of the result (a non-zero exit), its files kept.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException
from kubernetes_asyncio.stream import WsApiClient

from ..k8s import manifests
from ..k8s.manifests import (
    AGENT_NAME,
    AGGREGATOR_NAME,
    CAPTURE_LABEL,
    SERVICE_NAME,
    DeployOptions,
    needs_memlock,
)
from ..k8s.objects import apply, cleanup
from ..k8s.portforward import PortForward
from ..k8s.preflight import check_reachable, node_kernels, preflight
from ..k8s.rollout import AgentPod, RolloutError, agent_pods, log_tail, wait_ready
from ..model.errors import CaptureError, UsageError
from ..model.fetch import FetchError, finish_and_fetch
from .session import Notice, Notify
from .target import CaptureOptions, CaptureResult, StreamEndpoint, packet_loss_warnings

log = logging.getLogger(__name__)

#: How long the agents get to flush and exit once their DaemonSet is deleted.
AGENTS_GONE_TIMEOUT = 60.0
#: Seconds a running agent may take to connect to the aggregator before the user is told.
AGENTS_GRACE = 10.0
#: Seconds between two looks at the agents while the capture runs.
AGENTS_CHECK_INTERVAL = 2.0
#: Log lines of each agent that did not connect: on stderr (and in the log), in the header.
AGENT_LOG_LINES = 5
HEADER_LOG_LINES = 2
#: Agents whose log lines the header shows (the others are counted).
HEADER_AGENTS = 3


@dataclass
class ClusterOptions:
    """Where and how to deploy; image, namespace and pull policy also come from the
    environment (``NETOBSERV_IMAGE``, ``NETOBSERV_NAMESPACE``, ``NETOBSERV_PULL_POLICY``)."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    image: str | None = None
    pull_policy: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    rollout_timeout: float = 180.0
    #: None: detected (the security.openshift.io API group is served).
    openshift: bool | None = None
    #: Copy the files out of the cluster at the end (False: the capture is discarded).
    copy: bool = True
    #: Workload: keep only flows of these pods (namespaces, names or ns/name, selector).
    workload_namespaces: tuple[str, ...] = ()
    workload_pods: tuple[str, ...] = ()
    workload_selector: str = ""
    #: Seconds a running agent may take to connect before the user is told; and between
    #: two looks at the agents (module defaults, read when the options are made).
    agents_grace: float = field(default_factory=lambda: AGENTS_GRACE)
    agents_check_interval: float = field(default_factory=lambda: AGENTS_CHECK_INTERVAL)

    @property
    def workload(self) -> bool:
        return bool(self.workload_namespaces or self.workload_pods or self.workload_selector)

    def aggregator_args(self) -> tuple[str, ...]:
        """The aggregator's workload flags (it resolves the pods and tells the agents)."""
        args: list[str] = []
        for ns in self.workload_namespaces:
            args += ["--workload-namespace", ns]
        for pod in self.workload_pods:
            args += ["--workload-pod", pod]
        if self.workload_selector:
            args += ["--workload-selector", self.workload_selector]
        return tuple(args)


def agent_env(options: CaptureOptions, workload: bool = False) -> dict[str, str]:
    """The agents' settings as the environment the DaemonSet gives them."""
    env = {
        "CACHE_MAX_FLOWS": str(options.cache_max_flows),
        "CACHE_ACTIVE_TIMEOUT": options.cache_active_timeout,
    }
    if options.features:
        env["FEATURES"] = ",".join(options.features)
        env["DNS_TRACKING_PORT"] = str(options.dns_port)
    if options.filters_json:
        env["FLOW_FILTER_RULES"] = options.filters_json
    if options.interfaces:
        env["INTERFACES"] = ",".join(options.interfaces)
    if options.exclude_interfaces:
        env["EXCLUDE_INTERFACES"] = ",".join(options.exclude_interfaces)
    if workload:
        env["WORKLOAD_FILTER"] = "1"
    if options.packets:
        env["PACKETS"] = "1"
        env["SNAPLEN"] = str(options.snaplen)
    return env


def packet_args(options: CaptureOptions) -> tuple[str, ...]:
    """The aggregator's flags for a packet capture (none for flows)."""
    return ("--packets", "--snaplen", str(options.snaplen)) if options.packets else ()


def deploy_options(capture: CaptureOptions, cluster: ClusterOptions, capture_id: str,
                   token: str, openshift: bool) -> DeployOptions:
    """The manifests' options: flags over environment over defaults; bad values -> exit 2."""
    try:
        return manifests.options_from_env(
            capture_id=capture_id, token=token, namespace=cluster.namespace,
            image=cluster.image, pull_policy=cluster.pull_policy,
            agent_env=agent_env(capture, cluster.workload),
            node_selector=dict(cluster.node_selector), openshift=openshift,
            log_level=capture.log_level,
            aggregator_args=cluster.aggregator_args() + packet_args(capture))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def new_capture_id() -> str:
    """``c`` and 8 hex digits: a label value, short enough for object names."""
    return "c" + secrets.token_hex(4)


async def connect(kubeconfig: str | None, context: str | None) -> client.ApiClient:
    """An API client for the kubeconfig context; clear errors when there is none."""
    # $KUBECONFIG is read now: kubernetes-asyncio reads it once, when it is imported.
    kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or None
    try:
        return await config.new_client_from_config(config_file=kubeconfig, context=context)
    except ConfigException as exc:
        raise UsageError(f"cannot use the kubeconfig{f' {kubeconfig}' if kubeconfig else ''}"
                         f"{f' (context {context})' if context else ''}: {exc}; fix it, or "
                         "capture on this host with --local") from None
    except OSError as exc:
        raise UsageError(f"cannot read the kubeconfig: {exc}; or capture on this host with "
                         "--local") from None


def current_context(cluster: ClusterOptions) -> str:
    """The kubeconfig's current context name, for the header; "?" if it cannot be read."""
    path = cluster.kubeconfig or os.environ.get("KUBECONFIG") or None
    try:
        _, active = config.list_kube_config_contexts(
            path.split(os.pathsep)[0] if path else None)
    except (ConfigException, OSError, ValueError):
        return "?"
    return str(active.get("name", "?")) if isinstance(active, dict) else "?"


async def serves_openshift(api_client: client.ApiClient) -> bool:
    """True when the cluster serves OpenShift's security API group (SCCs are needed)."""
    try:
        groups = await client.ApisApi(api_client).get_api_versions()
    except ApiException:
        return False
    return any(group.name == "security.openshift.io" for group in groups.groups or [])


def agent_matches(pod: AgentPod, info: Mapping[str, Any]) -> bool:
    """Whether an agent the aggregator knows (its HELLO: ``ip``, the node's address from
    the DaemonSet, and ``hostname``, the node's on the host network) runs in ``pod``."""
    ip, host = str(info.get("ip") or ""), str(info.get("hostname") or "")
    if pod.host_ip and ip == pod.host_ip:
        return True
    # A node named by its FQDN may have a short hostname, and the other way round.
    return bool(host) and host.split(".")[0] == pod.node.split(".")[0]


class ConnectCheck:
    """Which running agents have not connected to the aggregator for ``grace`` seconds.

    Fed with the agent pods and the aggregator's ``per_agent`` STATS at times the caller
    gives (no clock of its own).  ``never`` keeps the pods it reported whose agent never
    connected at all: the capture has nothing from their nodes.
    """

    def __init__(self, grace: float) -> None:
        self.grace = grace
        #: Since when each pod's agent has not been connected (pod name -> time).
        self._since: dict[str, float] = {}
        #: Reported pods whose agent was never seen, by pod name.
        self.never: dict[str, AgentPod] = {}

    def update(self, now: float, pods: Iterable[AgentPod],
               per_agent: Mapping[str, Mapping[str, Any]]) -> list[AgentPod]:
        """The pods whose agent has not been connected for ``grace`` seconds, by node."""
        known = list(per_agent.values())
        connected = [info for info in known if info.get("connected")]
        missing = []
        current = set()
        for pod in pods:
            current.add(pod.name)
            if any(agent_matches(pod, info) for info in known):
                self.never.pop(pod.name, None)
            if any(agent_matches(pod, info) for info in connected):
                self._since.pop(pod.name, None)
                continue
            if now - self._since.setdefault(pod.name, now) >= self.grace:
                missing.append(pod)
                if not any(agent_matches(pod, info) for info in known):
                    self.never[pod.name] = pod
        for gone in set(self._since) - current:
            del self._since[gone]
        for gone in set(self.never) - current:
            del self.never[gone]
        return sorted(missing, key=lambda p: (p.node, p.name))


def not_connected(missing: Sequence[tuple[AgentPod, Sequence[str]]], total: int,
                  grace: float, service: str, *, never: bool = False) -> str:
    """The full text about agents that did not connect: each pod with its node, state and
    last log lines, then what to check (``service``: the aggregator's Service and
    address)."""
    nodes = ", ".join(pod.node for pod, _ in missing)
    if never:
        head = (f"{len(missing)} of {total} agents never connected to the aggregator; the "
                f"capture has no flows from {nodes}:")
    else:
        head = (f"{len(missing)} of {total} agents not connected to the aggregator for "
                f"{grace:g}s or more; no flows come from {nodes}:")
    lines = [head]
    for pod, text in missing:
        where = f"  {pod.name} on {pod.node} ({pod.state})"
        if text:
            lines.append(where + ", last log lines:")
            lines.extend(f"    {line}" for line in text)
        else:
            lines.append(where + ": no log line")
    lines.append(f"Check that the nodes reach the Service {service}, that no NetworkPolicy "
                 "blocks it, and that cluster DNS answers from the host network (the "
                 "agents' fallback).")
    return "\n".join(lines)


def not_connected_brief(missing: Sequence[tuple[AgentPod, Sequence[str]]], total: int,
                        grace: float, service: str, log_file: Path) -> str:
    """The same for the TUI's header: the nodes, the last log lines of the first few
    pods, what to check and where the rest is."""
    nodes = [pod.node for pod, _ in missing]
    more = len(nodes) - HEADER_AGENTS
    lines = [f"⚠ {len(missing)} of {total} agents not connected to the aggregator for "
             f"{grace:g}s: {', '.join(nodes[:HEADER_AGENTS])}"
             + (f" and {more} more" if more > 0 else "")]
    for pod, text in missing[:HEADER_AGENTS]:
        shown = list(text[-HEADER_LOG_LINES:]) or ["(no log line)"]
        lines.append(f"  {pod.node}: {shown[0]}")
        lines.extend(f"  {' ' * len(pod.node)}  {line}" for line in shown[1:])
    lines.append(f"Check the Service {service}, NetworkPolicies and cluster DNS from the "
                 f"host network; details in {log_file}")
    return "\n".join(lines)


class KubernetesTarget:
    """A capture on every node of a cluster (or those of ``--node-selector``)."""

    def __init__(self, options: CaptureOptions, cluster: ClusterOptions,
                 say: Callable[[str], None] = lambda _text: None) -> None:
        self.options = options
        self.cluster = cluster
        self.say = say
        self.capture_id = new_capture_id()
        self.token = secrets.token_urlsafe(24)
        self.description = f"cluster {cluster.context or current_context(cluster)}"
        self.interfaces: list[str] = []
        self.features: dict[str, str] = {f: "on" for f in options.features}
        self.deploy: DeployOptions | None = None
        self._api: client.ApiClient | None = None
        self._ws: WsApiClient | None = None
        self._forward: PortForward | None = None
        self._local: tuple[str, int] = ("127.0.0.1", 0)
        self._created = False
        self._started = 0.0
        self._connect_check = ConnectCheck(cluster.agents_grace)
        #: The latest STATS (set by ``watch``): which agents the aggregator knows.
        self._stats: Callable[[], Mapping[str, Any]] = dict
        #: Running agent pods at the latest look.
        self._agents_running = 0
        self._service = ""

    async def start(self) -> StreamEndpoint:
        try:
            return await self._start()
        except BaseException:
            await self._teardown(problems=[])
            raise

    async def _start(self) -> StreamEndpoint:
        self._api = api = await connect(self.cluster.kubeconfig, self.cluster.context)
        version = await check_reachable(api)
        self.say(f"Cluster {api.configuration.host} (Kubernetes {version}).")
        openshift = self.cluster.openshift
        if openshift is None:
            openshift = await serves_openshift(api)
        self.deploy = deploy = deploy_options(self.options, self.cluster, self.capture_id,
                                              self.token, openshift)
        self.say(f"Checking the cluster and your permissions (namespace {deploy.namespace})...")
        await preflight(api, deploy.namespace, openshift=openshift,
                        timeout=self.cluster.rollout_timeout,
                        progress=lambda text: self.say(f"  {text}"))
        kernels = await node_kernels(api, deploy.node_selector)
        if kernels is not None:
            # SYS_RESOURCE only where a kernel before 5.11 needs it (RLIMIT_MEMLOCK).
            self.deploy = deploy = dataclasses.replace(deploy, memlock=needs_memlock(kernels))
        log.info("Node kernels: %s; agents %s SYS_RESOURCE.",
                 ", ".join(sorted(set(kernels))) if kernels else "unknown (nodes not listed)",
                 "get" if deploy.memlock else "do not get")
        self.say(f"Creating the capture {self.capture_id} in namespace {deploy.namespace} "
                 f"(image {deploy.image})...")

        def created(_obj: Mapping[str, Any]) -> None:
            self._created = True

        await apply(api, manifests.render(deploy), on_created=created)
        self.say(f"Waiting for the agents and the aggregator (up to "
                 f"{self.cluster.rollout_timeout:g}s)...")
        try:
            await wait_ready(api, deploy.namespace, self.capture_id,
                             self.cluster.rollout_timeout,
                             progress=lambda text: self.say(f"  {text}"))
        except RolloutError as exc:
            raise RolloutError(f"{exc}\nEvery pod state, event and log line found: "
                               f"{self.log_file}", exc.details) from None
        self._ws = WsApiClient(configuration=api.configuration)
        self._forward = PortForward(self._ws, deploy.namespace, AGGREGATOR_NAME,
                                    deploy.aggregator_port)
        host, port = self._local = await self._forward.start()
        await self._forward.check()
        self._started = time.monotonic()
        return StreamEndpoint(host, port, self.token)

    @property
    def log_file(self) -> Path:
        """Where the capture's log goes (see ``run.py``)."""
        return self.options.output / "netobserv.log"

    async def watch(self, stats: Callable[[], Mapping[str, Any]], notify: Notify) -> None:
        """While the capture runs: say (``notify``) which running agents have not connected
        to the aggregator ``agents_grace`` seconds on, with their last log lines and what to
        check; say it again when that changes, and when every agent is connected."""
        self._stats = stats
        shown: tuple[str, ...] = ()
        while True:
            await asyncio.sleep(self.cluster.agents_check_interval)
            latest = stats()
            if "per_agent" not in latest or self._api is None or self.deploy is None:
                continue  # no STATS yet (or an aggregator that does not say who is there)
            try:
                pods = await agent_pods(self._api, self.deploy.namespace, self.capture_id)
                missing = self._connect_check.update(time.monotonic(), pods,
                                                     latest.get("per_agent") or {})
                names = tuple(pod.name for pod in missing)
                if names != shown and missing:
                    found = await self._with_logs(missing, AGENT_LOG_LINES)
                    service = await self._service_address()
                    grace = self.cluster.agents_grace
                    notify(Notice(
                        not_connected_brief(found, len(pods), grace, service, self.log_file),
                        not_connected(found, len(pods), grace, service)))
                elif names != shown and pods:
                    done = f"All {len(pods)} agents are connected now."
                    notify(Notice(done, done, cleared=True))
                shown, self._agents_running = names, len(pods)
            except (CaptureError, ApiException, aiohttp.ClientError, OSError,
                    TimeoutError) as exc:
                # Only a look: the capture goes on; the next look may work.
                log.info("Could not check the agents: %s", exc)

    async def _with_logs(self, pods: Iterable[AgentPod],
                         lines: int) -> list[tuple[AgentPod, list[str]]]:
        assert self._api is not None and self.deploy is not None
        core = client.CoreV1Api(self._api)
        return [(pod, await log_tail(core, self.deploy.namespace, pod.name,
                                     manifests.AGENT_CONTAINER, lines)) for pod in pods]

    async def _service_address(self) -> str:
        """``netobserv-cli/netobserv-aggregator (ClusterIP 10.96.0.12, port 9990)``: what
        the agents try to reach."""
        if self._service:
            return self._service
        assert self._api is not None and self.deploy is not None
        ns, port = self.deploy.namespace, self.deploy.aggregator_port
        address = f"port {port}"
        try:
            service = await client.CoreV1Api(self._api).read_namespaced_service(
                SERVICE_NAME, ns)
            if service.spec and service.spec.cluster_ip:
                address = f"ClusterIP {service.spec.cluster_ip}, {address}"
        except ApiException:
            pass
        self._service = f"{ns}/{SERVICE_NAME} ({address})"
        return self._service

    async def _never_connected(self) -> str:
        """The problem of agents that never connected (their logs read now), or ""."""
        per_agent = (self._stats() or {}).get("per_agent") or {}
        never = [pod for pod in self._connect_check.never.values()
                 if not any(agent_matches(pod, info) for info in per_agent.values())]
        if not never:
            return ""
        try:
            found = await self._with_logs(never, AGENT_LOG_LINES)
            service = await self._service_address()
        except (ApiException, aiohttp.ClientError, OSError, TimeoutError):
            found, service = [(pod, []) for pod in never], self._service or SERVICE_NAME
        return not_connected(found, max(self._agents_running, len(found)),
                             self.cluster.agents_grace, service, never=True)

    async def stop(self, say: Callable[[str], None] = lambda _step: None) -> CaptureResult:
        problems: list[str] = []
        summary: dict[str, Any] = {}
        if self._forward is not None and self.deploy is not None and self._api is not None:
            # Before the agents go: their logs go with them.
            never = await self._never_connected()
            if never:
                problems.append(never)
            say("Stopping the agents: each sends its last flows, then detaches...")
            try:
                await self._agents_gone()
            except CaptureError as exc:
                problems.append(str(exc))
            if self.cluster.copy:
                try:
                    host, port = self._local
                    kinds = ("json", "db", "pcapng") if self.options.packets else ("json", "db")
                    summary = await finish_and_fetch(host, port, self.token,
                                                     self.options.output, files=kinds,
                                                     progress=say)
                except FetchError as exc:
                    problems.append(f"the files could not be copied from the cluster: {exc}")
            else:
                say("Not copying the files (--copy=false): they go with the aggregator pod.")
        await self._teardown(problems, say)
        local = summary.get("local_files", {})
        agent_stats = summary.get("agent_stats") or {}
        warnings = []
        if agent_stats.get("export_lost_flows"):
            warnings.append(f"{agent_stats['export_lost_flows']} flows could not be "
                            "delivered by the agents")
        warnings += packet_loss_warnings(agent_stats)
        return CaptureResult(files=dict(local), flows=int(summary.get("flows", 0)),
                             bytes=int(summary.get("bytes", 0)),
                             packets=int(summary.get("packets", 0)),
                             captured_packets=int(summary.get("captured_packets", 0)),
                             captured_bytes=int(summary.get("captured_bytes", 0)),
                             problems=problems, warnings=warnings)

    async def _agents_gone(self) -> None:
        """Delete the DaemonSet and wait until its pods are gone (their agents flushed)."""
        assert self._api is not None and self.deploy is not None
        apps, core = client.AppsV1Api(self._api), client.CoreV1Api(self._api)
        namespace = self.deploy.namespace
        try:
            await apps.delete_namespaced_daemon_set(
                AGENT_NAME, namespace,
                body=client.V1DeleteOptions(propagation_policy="Background"))
        except ApiException as exc:
            if exc.status != 404:
                raise CaptureError(f"cannot delete the agents' DaemonSet: {exc.status} "
                                   f"{exc.reason}") from None
        deadline = time.monotonic() + AGENTS_GONE_TIMEOUT
        wanted = f"{CAPTURE_LABEL}={self.capture_id},app.kubernetes.io/component=agent"
        while time.monotonic() < deadline:
            try:
                pods = await core.list_namespaced_pod(namespace, label_selector=wanted)
            except ApiException as exc:
                raise CaptureError(f"cannot list the agents: {exc.status} {exc.reason}") \
                    from None
            if not pods.items:
                return
            await asyncio.sleep(0.5)
        raise CaptureError(f"the agents did not exit within {AGENTS_GONE_TIMEOUT:g}s; their "
                           "last flows may be missing")

    async def _teardown(self, problems: list[str],
                        say: Callable[[str], None] = lambda _step: None) -> None:
        """Close the port-forward and delete everything this capture created."""
        if self._forward is not None:
            await self._forward.stop()
            self._forward = None
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        if self._api is not None:
            if self._created and self.deploy is not None:
                say(f"Deleting the capture's objects (capture {self.capture_id})...")
                try:
                    await cleanup(self._api, self.capture_id, openshift=self.deploy.openshift)
                    self._created = False
                except CaptureError as exc:
                    problems.append(str(exc))
            await self._api.close()
            self._api = None


async def cleanup_cluster(kubeconfig: str | None, context: str | None,
                          say: Callable[[str], None]) -> list[str]:
    """``netobserv cleanup``: delete every object of every capture of this tool, by label."""
    api = await connect(kubeconfig, context)
    try:
        await check_reachable(api)
        return await cleanup(api, None, openshift=await serves_openshift(api), say=say)
    finally:
        await api.close()


def output_yaml(capture: CaptureOptions, cluster: ClusterOptions) -> Path:
    """``--yaml``: every manifest the capture would apply, in one file under the output
    directory; no cluster is contacted (OpenShift objects only with ``--openshift``).

    The Secret holds a fresh random token, as a real capture's does: a fixed placeholder
    would let anyone who read this code send flows to a hand-applied capture. The file
    holds that token, so it is created readable by its owner only (0600).
    """
    capture_id = new_capture_id()
    deploy = deploy_options(capture, cluster, capture_id, secrets.token_urlsafe(24),
                            bool(cluster.openshift))
    path = capture.output / f"netobserv-{capture_id}.yaml"
    capture.output.mkdir(parents=True, exist_ok=True)
    text = manifests.to_yaml(manifests.render(deploy)).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(text)
    return path


def yaml_token_hint(path: Path, namespace: str | None) -> str:
    """How to read the token of a ``--yaml`` file back, once applied (for stderr)."""
    namespace = namespace or manifests.DEFAULT_NAMESPACE
    return (f"The Secret {manifests.SECRET_NAME} in {path.name} holds a random token made "
            f"for this file. Once applied, read it with: kubectl -n {namespace} get secret "
            f"{manifests.SECRET_NAME} -o jsonpath='{{.data.{manifests.SECRET_KEY}}}' | "
            "base64 -d")
