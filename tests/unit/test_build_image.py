"""scripts/build-image refuses bad options at once, saying what it wants, before it
installs or builds anything (the building itself is tested in tests/kernel)."""

from __future__ import annotations

import subprocess
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
