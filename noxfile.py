"""Developer sessions. They run in the project's .venv (made by scripts/bootstrap), because
BCC's Python module comes from the OS and cannot be installed into a fresh nox venv."""

from __future__ import annotations

import sys
from pathlib import Path

import nox

#: The interpreter nox itself runs on: .venv's, whatever PATH says.
PY = sys.executable

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "tests"]


@nox.session
def tests(session: nox.Session) -> None:
    """Every test: unit, kernel (root, eBPF, lab), TUI. Extra args go to pytest."""
    session.run(PY, "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, then the import contracts between packages ([tool.importlinter] in
    pyproject.toml: model imports nothing of ours, agent only model, aggregator only model
    and store, Textual only in tui...)."""
    session.run(PY, "-m", "ruff", "check", "netobserv_tui", "tests", "noxfile.py")
    session.run(str(Path(PY).parent / "lint-imports"), "--no-cache", external=True)


@nox.session
def typecheck(session: nox.Session) -> None:
    session.run(PY, "-m", "mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks with ratios against baselines measured in the same run."""
    session.run(PY, "tests/bench/bench_ingest.py", *session.posargs)
    session.run(PY, "tests/bench/bench_eviction.py")
    session.run(PY, "tests/bench/bench_datapath.py")
    session.run(PY, "tests/bench/bench_packets.py")
    session.run(PY, "tests/bench/bench_filter.py")
    session.run(PY, "tests/bench/bench_store.py")
    session.run(PY, "tests/bench/bench_tui.py")
    session.run(PY, "tests/bench/bench_image.py")


@nox.session
def demo(session: nox.Session) -> None:
    """The embedded default: the local host plus the lab, in the TUI."""
    session.run(PY, "-m", "netobserv_tui", "flows", "--local", "--lab", *session.posargs)


@nox.session
def image(session: nox.Session) -> None:
    """Build the agent and aggregator image from deploy/Containerfile (buildah, as root).
    An argument names the tag (default localhost/netobserv-tui:dev). Not a default session:
    it installs container tools and downloads Debian packages."""
    session.run("scripts/build-image", *session.posargs, external=True)
