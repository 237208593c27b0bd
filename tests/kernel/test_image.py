"""The image, built from deploy/Containerfile, runs the agent and the aggregator exactly as the
rendered DaemonSet and Pod specs say (user, capabilities, seccomp, read-only root, mounts,
environment, command), under podman with runc on this host; lab traffic arrives with exact
counts, and stopping the containers leaves no classifier behind.

Building takes about a minute with warm caches (several on a fresh machine); it runs in CI.
Only what a cluster supplies is supplied: the Secret's token, the downward API values, the
Service's address (127.0.0.1 here) and a directory for each emptyDir.
"""

from __future__ import annotations

import asyncio
import json
import platform
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from capture_helpers import json_records, our_tc_objects, sql_totals
from pod_specs import SERVICE_HOST, container, kubelet_env

from netobserv_tui.k8s.manifests import DeployOptions, render
from netobserv_tui.lab import Lab
from netobserv_tui.lab.traffic import udp_send
from netobserv_tui.model.fetch import finish_and_fetch

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

TOKEN = "image-test-token"
PORT = 19992
#: podman's default rlimits fail where root lacks CAP_SYS_RESOURCE, as here.
PODMAN = ["podman", "run", "--rm", "--runtime=runc", "--network=host",
          "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]


def bounding_caps() -> set[str]:
    """Those of the specs' capabilities this host's root may hand to a container (root
    here lacks CAP_SYS_RESOURCE, which the agent only needs on kernels before 5.11)."""
    mask = int(next(line.split()[1] for line in Path("/proc/self/status").read_text()
                    .splitlines() if line.startswith("CapBnd:")), 16)
    names = {21: "SYS_ADMIN", 24: "SYS_RESOURCE", 12: "NET_ADMIN", 38: "PERFMON", 39: "BPF"}
    return {name for bit, name in names.items() if mask >> bit & 1}


def podman_args(spec: dict[str, Any], env: dict[str, str], dirs: dict[str, Path],
                node: dict[str, Path] | None = None) -> list[str]:
    """The container's security context, mounts and environment as podman flags; ``dirs``
    holds the emptyDirs, ``node`` stands in for hostPath volumes (by volume name)."""
    cont = spec["containers"][0]
    sc = {**(spec.get("securityContext") or {}), **(cont.get("securityContext") or {})}
    args = ["--user", f"{sc.get('runAsUser', 0)}:{sc.get('runAsGroup', sc.get('runAsUser', 0))}"]
    caps = sc.get("capabilities", {})
    if "ALL" in caps.get("drop", []):
        args.append("--cap-drop=ALL")
    for cap in caps.get("add", []):
        if cap in bounding_caps():
            args.append(f"--cap-add={cap}")
    if sc.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    if sc.get("seccompProfile", {}).get("type") == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for mount in cont.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if mount["name"] in (node or {}):
            source = str((node or {})[mount["name"]])
        elif "hostPath" in volume:
            source = volume["hostPath"]["path"]
        else:
            source = str(dirs[mount["name"]])
        if "hostPath" in volume and volume["hostPath"].get("type") == "DirectoryOrCreate":
            Path(source).mkdir(parents=True, exist_ok=True)
        ro = ":ro" if mount.get("readOnly") else ""
        args += ["-v", f"{source}:{mount['mountPath']}{ro}"]
    for name, value in env.items():
        args += ["-e", f"{name}={value}"]
    return args


@dataclass
class ContainerRun:
    ready: dict[str, Any]
    agent_log: str
    sent: Any
    pods: tuple[Any, Any]
    files: dict[str, str]


def run_containers(image: str, lab: Lab, tmp_path: Path,
                   node: dict[str, Path] | None = None,
                   service_ip: str | None = None) -> ContainerRun:
    """Aggregator and agent containers as the specs say; 400 lab datagrams; SIGTERM to the
    agent as the kubelet does; the files fetched through FINISH/FETCH. The agent reaches
    the aggregator at 127.0.0.1, or with ``service_ip`` by the Service's DNS name, which its
    /etc/hosts resolves to that address."""
    objects = render(DeployOptions(capture_id="image", token=TOKEN, image=image,
                                   aggregator_port=PORT, agent_env={"INTERFACES": "nobs-*"}))
    secret = next(o for o in objects if o["kind"] == "Secret")["stringData"]
    pod, _ = container(objects, "Pod")
    agent, _ = container(objects, "DaemonSet")
    dirs = {}
    for spec, prefix in ((pod, "agg"), (agent, "agent")):
        for volume in spec["volumes"]:
            if "emptyDir" in volume:
                path = tmp_path / f"{prefix}-{volume['name']}"
                path.mkdir()
                if prefix == "agg":  # the aggregator runs as 65532 (fsGroup in a cluster)
                    shutil.chown(path, 65532, 65532)
                dirs[(prefix, volume["name"])] = path
    agg_dirs = {name: p for (prefix, name), p in dirs.items() if prefix == "agg"}
    agent_dirs = {name: p for (prefix, name), p in dirs.items() if prefix == "agent"}
    name = f"nobs-test-{uuid.uuid4().hex[:6]}"

    def podman_run(spec: dict[str, Any], cdirs: dict[str, Path], role: str) -> list[str]:
        cont = spec["containers"][0]
        env = kubelet_env(cont, secret, service_by_name=service_ip is not None)
        hosts = ["--add-host", f"{SERVICE_HOST}:{service_ip}"] if service_ip else []
        return [*PODMAN, "--name", f"{name}-{role}", *hosts,
                *podman_args(spec, env, cdirs, node if role == "agent" else None), image,
                *cont["command"], *cont.get("args", [])]

    aggregator = subprocess.Popen(podman_run(pod, agg_dirs, "agg"), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
    agent_proc: subprocess.Popen[str] | None = None
    agent_log = ""
    try:
        assert aggregator.stdout is not None
        line = aggregator.stdout.readline()
        assert line, aggregator.stderr.read() if aggregator.stderr else ""
        assert json.loads(line)["port"] == PORT
        agent_proc = subprocess.Popen(podman_run(agent, agent_dirs, "agent"),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert agent_proc.stdout is not None and agent_proc.stderr is not None
        line = agent_proc.stdout.readline()
        assert line, agent_proc.stderr.read()
        ready = json.loads(line)
        assert ready["event"] == "ready"
        assert sorted(ready["interfaces"]) == sorted(
            ["nobs-br0", *(p.host_ifname for p in lab.pods)])

        a, b = lab.pod("pod-a"), lab.pod("pod-b")
        assert lab.wait_quiet()
        sent = udp_send(lab, a, b, 400, 100, dst_port=7201, src_port=42001)
        assert sent.sent == sent.received == 400

        subprocess.run(["podman", "stop", "-t", "60", f"{name}-agent"], check=True,
                       capture_output=True, timeout=120)  # SIGTERM, as the kubelet does
        assert agent_proc.wait(60) == 0
        agent_log = agent_proc.stderr.read()
        summary = asyncio.run(finish_and_fetch("127.0.0.1", PORT, TOKEN, tmp_path / "here"))
        assert aggregator.wait(60) == 0
    finally:
        for role in ("agent", "agg"):
            subprocess.run(["podman", "rm", "-f", f"{name}-{role}"], capture_output=True)
        for proc in (agent_proc, aggregator):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert our_tc_objects() == []
    return ContainerRun(ready, agent_log, sent, (a, b), summary["local_files"])


def assert_exact_counts(run: ContainerRun) -> None:
    """Every datagram, at both veths, in SQLite; the node's address in JSON."""
    a, b = run.pods
    expected = (400, 400 * run.sent.frame_bytes)
    totals = sql_totals(Path(run.files["db"]), SrcPort=42001, DstPort=7201)
    assert totals[(a.host_ifname, 0)] == expected
    assert totals[(b.host_ifname, 1)] == expected
    records = json_records(Path(run.files["json"]))
    assert {r["AgentIP"] for r in records} == {"198.18.0.254"}


def test_the_image_runs_as_the_specs_say_and_counts_exactly(
    image: str, lab: Lab, tmp_path: Path
) -> None:
    # As in an IPv6-only cluster: the agent finds the aggregator by the Service's name,
    # which resolves to an IPv6 address (::1 here); the test itself fetches over IPv4.
    run = run_containers(image, lab, tmp_path, service_ip="::1")
    assert_exact_counts(run)
    assert f"Connected to the aggregator at {SERVICE_HOST}:{PORT} ([::1]:{PORT})" in run.agent_log
    # This host has Debian's 6.1 headers in /usr/src, not the running kernel's: the node's
    # come first all the same, and the agent says so.
    headers = run.ready["kernel_headers"]
    assert headers["origin"] == "node"
    assert headers["detail"].endswith("(+ -common) in /usr/src")
    assert headers["matching"] is False
    assert "Kernel headers for BCC: node headers: linux-headers-" in run.agent_log


def test_on_a_node_without_headers_the_images_own_are_used(
    image: str, lab: Lab, tmp_path: Path
) -> None:
    """Empty /lib/modules and /usr/src on the node: the image's generic tree, which does
    not match this kernel (struct layouts come from BTF), compiles the program."""
    empty = {"modules": tmp_path / "modules", "usr-src": tmp_path / "usr-src"}
    for path in empty.values():
        path.mkdir()
    run = run_containers(image, lab, tmp_path, empty)
    assert_exact_counts(run)
    headers = run.ready["kernel_headers"]
    assert headers["origin"] == "image"
    assert headers["path"].startswith("/opt/netobserv-tui/kernel-headers/linux-headers-")
    assert headers["matching"] is False
    assert "Kernel headers for BCC: image headers: linux-headers-" in run.agent_log


def test_headers_that_cannot_build_the_program_give_way_to_the_next(
    image: str, lab: Lab, tmp_path: Path
) -> None:
    """A node whose /lib/modules/<release>/build is broken (here: an empty include tree):
    the agent says so and builds with the next tree, the node's /usr/src pair."""
    modules = tmp_path / "modules"
    (modules / platform.release() / "build" / "include").mkdir(parents=True)
    run = run_containers(image, lab, tmp_path, {"modules": modules})
    assert_exact_counts(run)
    assert "could not build the flow program" in run.agent_log
    assert run.ready["kernel_headers"]["origin"] == "node"
    assert run.ready["kernel_headers"]["detail"].endswith("(+ -common) in /usr/src")


def test_by_default_the_image_runs_the_aggregator_as_its_own_user(image: str) -> None:
    name = f"nobs-test-{uuid.uuid4().hex[:6]}"
    proc = subprocess.Popen([*PODMAN, "--name", name, "-e", f"NETOBSERV_TOKEN={TOKEN}",
                             "--read-only", image], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        assert json.loads(line)["port"] == 9990
        user = subprocess.run(["podman", "exec", name, "id", "-u"], capture_output=True,
                              text=True, timeout=60)
        assert user.stdout.strip() == "65532"
    finally:
        subprocess.run(["podman", "stop", "-t", "10", name], capture_output=True, timeout=60)
        subprocess.run(["podman", "rm", "-f", name], capture_output=True)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    # Without a token it says what to set, and exits with the usage code.
    done = subprocess.run([*PODMAN, image], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "the capture token is not set: export it in $NETOBSERV_TOKEN" in done.stderr
