"""Fixtures for kernel tests: a real network-namespace lab, and a check that none is left.

These tests need root (namespaces, veth pairs, a bridge). Without it they are skipped with the
reason. The lab lock (``/run/netobserv-lab.lock``) serializes labs between concurrent test runs
on the same machine, so two runs wait for each other instead of colliding.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from netobserv_tui.lab import Lab, cleanup_all, iter_lab_pids, lab_lock, lab_status
from netobserv_tui.lab._proc import worker_pids
from netobserv_tui.model.errors import KernelError, LabError


def lab_skip_reason() -> str | None:
    """Why the lab cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, veth pairs, a bridge): run pytest as root"
    missing = [tool for tool in ("ip", "bridge", "sysctl") if shutil.which(tool) is None]
    if missing:
        return f"the lab needs {', '.join(missing)} (apt-get install iproute2 procps)"
    if not Path("/proc/sys/net/ipv6").is_dir():
        return "IPv6 is not available in this kernel; the lab needs it"
    return None


def _build(pods: int) -> Iterator[Lab]:
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)
    lab = Lab(pods)
    lab.up()
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture
def lab_host() -> None:
    """Skip the test unless this host can build a lab (root, iproute2, IPv6)."""
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A fresh 3-pod lab for one test, removed afterwards even if the test fails."""
    yield from _build(3)


@pytest.fixture(scope="module")
def module_lab() -> Iterator[Lab]:
    """A 3-pod lab shared by the tests of one module (cheaper; tests must not modify it).

    Only one lab exists at a time: tests of the same module that build their own lab (or use
    the CLI) cannot run while it is up; use :func:`class_lab` in such modules.
    """
    yield from _build(3)


@pytest.fixture(scope="class")
def class_lab() -> Iterator[Lab]:
    """A 3-pod lab shared by the tests of one class, removed when the class is done."""
    yield from _build(3)


def _remove_lab_leftovers() -> tuple[list[str], list[int], list[int]] | None:
    """Remove every lab namespace, interface and worker; return what there was.

    Returns None (with a warning) if the lab lock stays taken by another run.
    """
    try:
        with lab_lock(timeout=60.0):
            status = lab_status()
            pids = [pid for _, pid in iter_lab_pids()]
            workers = worker_pids()
    except LabError as exc:
        warnings.warn(f"lab leftovers not checked: {exc}", stacklevel=1)
        return None
    leftovers = [*status.namespaces, *status.host_ifnames]
    if status.bridge:
        leftovers.append(status.bridge)
    if leftovers or pids or workers:
        for pid in workers:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        cleanup_all()
    return leftovers, pids, workers


@pytest.fixture(scope="session", autouse=True)
def no_lab_leftovers() -> Iterator[None]:
    """Start without a lab, and assert at the end that no lab namespace, interface or worker
    remains.

    A run that was killed (a CI timeout, a lost machine) cannot remove its lab, and every lab
    test of the next run would then fail on "a lab already exists". So a lab found before the
    first test, with no other run holding the lab lock, is removed with a warning naming it.
    Only names the lab owns are checked (``nobs-lab-*`` namespaces, ``nobs-br0``,
    ``nobs-pod-*``): other tools on a shared machine may use ``nobs-`` names of their own.
    Leftovers at the end are removed before the assertion fails, so the machine stays clean.
    """
    if not lab_skip_reason():
        found = _remove_lab_leftovers()
        if found and any(found):
            warnings.warn(
                f"removed a lab left by an earlier run: objects {found[0]}, processes in its "
                f"namespaces {found[1]}, workers {found[2]}",
                stacklevel=1,
            )
    yield
    if lab_skip_reason():
        return
    found = _remove_lab_leftovers()
    if found is None:
        return
    leftovers, pids, workers = found
    assert not leftovers, f"lab objects left behind after the tests: {leftovers}"
    assert not pids, f"processes left inside lab namespaces: {pids}"
    assert not workers, f"lab worker processes left running: {workers}"


@pytest.fixture(scope="module")
def bcc_ready() -> None:
    """Skip, with the reason, where BCC cannot compile programs (no root, no headers)."""
    if os.geteuid() != 0:
        pytest.skip("loading eBPF programs needs root: run the kernel tests as root")
    from netobserv_tui.agent.kernel import prepare_bcc

    try:
        import bcc  # noqa: F401

        prepare_bcc()
    except (ImportError, KernelError) as exc:
        pytest.skip(f"BCC cannot compile programs here: {exc}")


#: The tag the image tests build and use.
IMAGE_TAG = "localhost/netobserv-tui:test"


def _image_ids() -> set[str]:
    """Every image in the host's containers-storage (none before buildah is installed)."""
    if shutil.which("buildah") is None:
        return set()
    done = subprocess.run(["buildah", "images", "--all", "--quiet", "--no-trunc"],
                          capture_output=True, text=True, timeout=120)
    return set(done.stdout.split()) if done.returncode == 0 else set()


@pytest.fixture(scope="session")
def image() -> Iterator[str]:
    """The image, built from deploy/Containerfile by scripts/build-image (once per run; a
    few minutes, the Debian base included). When the run ends, the images it made are
    removed (the tag, its build's cache layers, a base image it made): about 1 GB a run
    otherwise. Images that were there before are left alone."""
    if os.geteuid() != 0:
        pytest.skip("building and running the image needs root")
    root = Path(__file__).resolve().parents[2]
    before = _image_ids()
    try:
        done = subprocess.run([str(root / "scripts" / "build-image"), IMAGE_TAG], cwd=root,
                              capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, done.stderr[-3000:]
        yield IMAGE_TAG
    finally:
        made = sorted(_image_ids() - before)
        if shutil.which("buildah") is not None:
            subprocess.run(["buildah", "rmi", "--force", IMAGE_TAG, *made],
                           capture_output=True, timeout=600)
        left = _image_ids() & set(made)
        if left:
            warnings.warn(f"images the test run made are still there: {sorted(left)}",
                          stacklevel=1)
