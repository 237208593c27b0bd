"""Image benchmark: its size, and how long the agent and aggregator take to start in it.

Start time is measured from launch to the process's first line on stdout: the aggregator's
"listening" line, the agent's "ready" event (program compiled and loaded, classifiers on
the lab's interfaces). Each is measured in the container, run as the rendered specs say
(podman with runc, as in tests/kernel/test_image.py), and, as the baseline in the same run,
as the same command on the host. The ratio is the container's cost: podman's set-up, a
cold page cache of the image's files, and the agent's header tree merged anew in the
pod's empty cache volume. The agent is timed without features and with all of them
(pktdrop, dns, rtt), since BCC's compile dominates its start.

Run as root: python tests/bench/bench_image.py [--rounds N] [--tag TAG] [--no-build]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "kernel"))

from pod_specs import container, kubelet_env  # noqa: E402
from test_image import PODMAN, podman_args  # noqa: E402

from netobserv_tui.k8s.manifests import DeployOptions, render  # noqa: E402
from netobserv_tui.lab import Lab  # noqa: E402

TOKEN = "bench-image-token"
PORT = 19993
ALL_FEATURES = "pktdrop,dns,rtt"


def first_line(argv: Sequence[str], env: dict[str, str] | None = None,
               name: str | None = None) -> tuple[float, dict[str, Any], subprocess.Popen[str]]:
    """Seconds from launch to the first stdout line, that line, and the running process."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - started
    if not line:
        raise SystemExit(f"{argv[:3]} printed nothing: {proc.stderr.read()[-2000:]}")
    return elapsed, json.loads(line), proc


def stop(proc: subprocess.Popen[str], name: str | None = None) -> None:
    if name:
        subprocess.run(["podman", "stop", "-t", "30", name], capture_output=True, timeout=60)
    else:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if name:
            subprocess.run(["podman", "rm", "-f", name], capture_output=True)


class Specs:
    def __init__(self, tag: str, features: str) -> None:
        env = {"INTERFACES": "nobs-*"}
        if features:
            env["FEATURES"] = features
        objects = render(DeployOptions(capture_id="bench", token=TOKEN, image=tag,
                                       aggregator_port=PORT, agent_env=env))
        self.secret = next(o for o in objects if o["kind"] == "Secret")["stringData"]
        self.pod, self.agg = container(objects, "Pod")
        self.ds, self.agent = container(objects, "DaemonSet")

    def container_argv(self, tag: str, spec: dict[str, Any], scratch: Path,
                       name: str) -> list[str]:
        cont = spec["containers"][0]
        dirs = {}
        for volume in spec["volumes"]:
            if "emptyDir" in volume:
                path = scratch / volume["name"]
                path.mkdir()
                if spec is self.pod:
                    shutil.chown(path, 65532, 65532)
                dirs[volume["name"]] = path
        return [*PODMAN, "--name", name,
                *podman_args(spec, kubelet_env(cont, self.secret), dirs), tag,
                *cont["command"], *cont.get("args", [])]

    def host_run(self, cont: dict[str, Any], scratch: Path) -> tuple[list[str], dict[str, str]]:
        """The same command and environment on the host, paths of emptyDirs moved under
        ``scratch`` (the agent's state directory stays the node's, as in the pod)."""
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
        moved = {"/output": scratch / "output", "/tmp": scratch / "tmp",
                 "/var/cache/netobserv-tui": scratch / "cache"}
        for path in moved.values():
            path.mkdir(exist_ok=True)
        for key, value in kubelet_env(cont, self.secret).items():
            env[key] = str(moved.get(value, value))
        argv = [sys.executable if w == "python" else str(moved.get(w, w))
                for w in [*cont["command"], *cont.get("args", [])]]
        return argv, env


def measure(tag: str, rounds: int) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    plain, featured = Specs(tag, ""), Specs(tag, ALL_FEATURES)
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="nobs-bench-image-") as tmp:
            scratch = Path(tmp)
            # Aggregator: container, then host; the host one then serves the agents.
            cdir = scratch / "agg-container"
            cdir.mkdir()
            name = f"nobs-bench-{uuid.uuid4().hex[:6]}"
            secs, _, proc = first_line(plain.container_argv(tag, plain.pod, cdir, name))
            stop(proc, name)
            out.setdefault("aggregator", {}).setdefault("container", []).append(secs)
            hdir = scratch / "agg-host"
            hdir.mkdir()
            argv, env = plain.host_run(plain.agg, hdir)
            secs, _, aggregator = first_line(argv, env)
            out["aggregator"].setdefault("host", []).append(secs)
            try:
                for label, specs in (("agent", plain), (f"agent +{ALL_FEATURES}", featured)):
                    cdir = scratch / f"{label}-container".replace(" ", "")
                    cdir.mkdir()
                    name = f"nobs-bench-{uuid.uuid4().hex[:6]}"
                    secs, ready, proc = first_line(
                        specs.container_argv(tag, specs.ds, cdir, name))
                    stop(proc, name)
                    assert ready["event"] == "ready", ready
                    out.setdefault(label, {}).setdefault("container", []).append(secs)
                    hdir = scratch / f"{label}-host".replace(" ", "")
                    hdir.mkdir()
                    argv, env = specs.host_run(specs.agent, hdir)
                    secs, ready, proc = first_line(argv, env)
                    stop(proc)
                    assert ready["event"] == "ready", ready
                    out[label].setdefault("host", []).append(secs)
            finally:
                stop(aggregator)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tag", default="localhost/netobserv-tui:bench")
    parser.add_argument("--no-build", action="store_true", help="use TAG as it is")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_image: run as root (it builds and runs the image)")
    if not args.no_build:
        subprocess.run([str(ROOT / "scripts" / "build-image"), args.tag], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    size = int(subprocess.run(["podman", "image", "inspect", "--format", "{{.Size}}", args.tag],
                              check=True, capture_output=True, text=True).stdout)
    with tempfile.TemporaryDirectory(prefix="nobs-bench-image-") as tmp:
        archive = Path(tmp) / "image.tar"
        subprocess.run(["buildah", "push", "--quiet", args.tag, f"oci-archive:{archive}"],
                       check=True, capture_output=True)
        archived = archive.stat().st_size
        gz = subprocess.run(f"gzip -1 -c {archive} | wc -c", shell=True, check=True,
                            capture_output=True, text=True).stdout
    print(f"image {args.tag}: {size / 1e6:.0f} MB unpacked, OCI archive {archived / 1e6:.0f} "
          f"MB, gzip -1 of it {int(gz) / 1e6:.0f} MB")
    lab = Lab(3)
    lab.up()
    try:
        results = measure(args.tag, args.rounds)
    finally:
        lab.down()
    print(f"start time, launch to first line, median (min) of {args.rounds} rounds:")
    print(f"  {'':28} {'container':>16} {'host (baseline)':>16} {'ratio':>6}")
    for what, runs in results.items():
        c, h = statistics.median(runs["container"]), statistics.median(runs["host"])
        print(f"  {what:28} {c:8.2f}s ({min(runs['container']):.2f}) "
              f"{h:8.2f}s ({min(runs['host']):.2f}) {c / h:6.2f}")
    print(json.dumps({"image_bytes": size, "archive_bytes": archived,
                      "start_seconds": results}))


if __name__ == "__main__":
    main()
