"""Getting the image to a cluster with scripts/build-image: pushed to a registry by name,
written as an OCI archive, imported into containerd's k8s.io namespace (the kubelet's);
each copy is then pulled or run back and checked against the built image.

The registry and containerd are real (Debian's packages, see daemons.py), private to each
test. Needs root, like building the image.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from daemons import containerd, registry, remove_tree

from netobserv_tui import __version__

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def build_image(*args: str, path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if path:
        env["PATH"] = f"{path}:{env['PATH']}"
    done = subprocess.run([str(ROOT / "scripts" / "build-image"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def image_facts(tag: str) -> dict[str, Any]:
    out = subprocess.run(["podman", "image", "inspect", tag], check=True,
                         capture_output=True, text=True).stdout
    return dict(json.loads(out)[0])


def get(url: str, accept: str = "*/*") -> tuple[bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read(), dict(response.headers)


def revision() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_push_names_the_image_by_digest_and_it_pulls_and_runs_back(
    image: str, tmp_path: Path
) -> None:
    with registry() as host:
        ref = f"{host}/netobserv/netobserv-tui:ci"
        done = build_image(image, "--push", ref, "--tls-verify=false")
        said = re.search(r"use it with: netobserv flows --image (\S+)", done.stderr)
        assert said, done.stderr
        by_digest = said.group(1)
        name, digest = by_digest.split("@")
        assert name == f"{host}/netobserv/netobserv-tui"

        # The registry has the tag, and the manifest under that digest, with our labels.
        tags, _ = get(f"http://{host}/v2/netobserv/netobserv-tui/tags/list")
        assert json.loads(tags)["tags"] == ["ci"]
        body, headers = get(f"http://{host}/v2/netobserv/netobserv-tui/manifests/ci",
                            OCI_MANIFEST)
        assert headers["Docker-Content-Digest"] == digest
        manifest = json.loads(body)
        config, _ = get(f"http://{host}/v2/netobserv/netobserv-tui/blobs/"
                        + manifest["config"]["digest"])
        labels = json.loads(config)["config"]["Labels"]
        assert labels["org.opencontainers.image.version"] == __version__
        assert labels["org.opencontainers.image.revision"] == revision()
        assert len(manifest["layers"]) == len(image_facts(image)["RootFS"]["Layers"])

        # Pulled by digest into a separate store (a node's), it runs. (podman wants a short
        # run root: under /tmp, not the test's directory.)
        work = Path(tempfile.mkdtemp(prefix="nobs-store-", dir="/tmp"))
        store = ["podman", "--root", str(work / "root"), "--runroot", str(work / "run")]
        try:
            pulled = subprocess.run([*store, "pull", "--quiet", "--tls-verify=false",
                                     by_digest], capture_output=True, text=True, timeout=600)
            assert pulled.returncode == 0, pulled.stderr
            ran = subprocess.run([*store, "run", "--rm", "--runtime=runc", "--network=host",
                                  "--ulimit", "nofile=1024:1024", "--ulimit",
                                  "nproc=4096:4096", by_digest, "netobserv", "version"],
                                 capture_output=True, text=True, timeout=120)
        finally:
            subprocess.run([*store, "rmi", "--all", "--force"], capture_output=True,
                           timeout=120)
            left = remove_tree(work)
        assert not left, f"the pulled image left mounts behind: {left}"
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == f"netobserv-tui version {__version__}"

    # And the Kubernetes mode runs that very reference in both pods.
    yaml_run = subprocess.run(
        ["python", "-m", "netobserv_tui", "flows", "--yaml", "--image", by_digest,
         "--output", str(tmp_path / "out")],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={"PATH": str(ROOT / ".venv" / "bin") + ":/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert yaml_run.returncode == 0, yaml_run.stderr
    (written,) = (tmp_path / "out").glob("netobserv-*.yaml")
    images = re.findall(r"^\s+image: (\S+)$", written.read_text(), re.M)
    assert images == [by_digest, by_digest]


def test_oci_archive_loads_into_containerd_for_the_kubelet_and_runs(
    image: str, tmp_path: Path
) -> None:
    archive = tmp_path / "netobserv-tui.tar"
    with containerd() as ctrd:
        build_image(image, "--oci-archive", str(archive), "--load", f"containerd={ctrd.socket}",
                    path=ctrd.bindir)

        # The archive: an OCI layout whose one manifest carries the tag.
        with tarfile.open(archive) as tar:
            layout = json.load(tar.extractfile("oci-layout"))  # type: ignore[arg-type]
            index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        assert layout == {"imageLayoutVersion": "1.0.0"}
        (entry,) = index["manifests"]
        assert entry["mediaType"] == OCI_MANIFEST
        assert entry["annotations"]["org.opencontainers.image.ref.name"] == image

        # containerd has it under its name in the k8s.io namespace, same digest.
        listed = ctrd.ctr("images", "list")
        row = next(line.split() for line in listed.splitlines() if line.startswith(image + " "))
        assert row[2] == entry["digest"]

        # And runs it, as the aggregator's user by default.
        script = "import os, bcc, netobserv_tui as n; print(os.getuid(), n.__version__)"
        out = ctrd.ctr("run", "--rm", "--net-host", image, "nobs-delivery-test", "python",
                       "-c", script)
        assert out.split() == ["65532", __version__]
