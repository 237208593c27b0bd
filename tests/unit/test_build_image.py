"""scripts/build-image refuses bad options at once, saying what it wants, before it
installs or builds anything (the building itself is tested in tests/kernel); the build
stage's context builds the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("args", "says"), [
    (["--push", "netobserv-tui"], "--push needs REGISTRY/NAME:TAG"),
    (["--load", "kind"], "--load knows containerd[=SOCKET]"),
    (["--load", "containerd=/nonexistent/containerd.sock"],
     "no containerd socket at /nonexistent/containerd.sock"),
    (["--oci-archive", "/nonexistent/dir/image.tar"], "directory /nonexistent/dir does not"),
    (["--frobnicate"], "unknown option --frobnicate"),
])
def test_bad_options_are_refused_before_building(args: list[str], says: str) -> None:
    done = subprocess.run([str(ROOT / "scripts" / "build-image"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert says in done.stderr
    assert "building" not in done.stderr


def test_help_names_every_option() -> None:
    done = subprocess.run([str(ROOT / "scripts" / "build-image"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for option in ("--push REGISTRY/NAME:TAG", "--tls-verify=false", "--oci-archive PATH",
                   "--load containerd[=SOCK]", "kind load image-archive"):
        assert option in done.stdout


def test_the_images_build_context_builds_the_wheel_with_its_c_speedups(
        tmp_path: Path) -> None:
    """The build stage copies only some paths of the tree (COPY ... /src/...): those alone
    must build the wheel, with the packet capture's C speedups compiled by the build hook
    (a path the hook needs but the stage does not copy failed the image build once)."""
    context = tmp_path / "src"
    context.mkdir()
    for line in (ROOT / "deploy" / "Containerfile").read_text().splitlines():
        words = line.split()
        if words[:1] != ["COPY"] or words[1].startswith("--") or not words[-1].startswith(
                "/src"):
            continue
        *sources, target = words[1:]
        for source in sources:
            into = context / target.removeprefix("/src").lstrip("/")
            if target.endswith("/"):
                into = into / Path(source).name
            if (ROOT / source).is_dir():
                subprocess.run(["cp", "-r", str(ROOT / source), str(into)], check=True)
            else:
                into.parent.mkdir(parents=True, exist_ok=True)
                subprocess.run(["cp", str(ROOT / source), str(into)], check=True)
    for built in (context / "netobserv_tui").rglob("*.so"):
        built.unlink()  # the tree's own build must not stand in for the stage's
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                           str(tmp_path / "dist"), str(context)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    assert "-linux_" in wheel.name, wheel.name  # a platform wheel: it holds compiled code
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert any(name.startswith("netobserv_tui/model/_speedups.") and name.endswith(".so")
               for name in names), names
