"""Command-line parsing: the article's spellings, dashed aliases, clear refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from netobserv_tui import __version__, clidoc
from netobserv_tui.cli import build_parser, main
from netobserv_tui.model.errors import UsageError
from netobserv_tui.model.units import parse_duration, parse_size

ROOT = Path(__file__).resolve().parents[2]


def test_cli_reference_is_generated_from_the_parser() -> None:
    assert (ROOT / "docs" / "cli.md").read_text() == clidoc.render(), (
        "docs/cli.md is stale: run `python -m netobserv_tui.clidoc > docs/cli.md`"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["flows", "--max_time=30s", "--max-bytes=5MB", "--no-tui"],
        ["flows", "--max-time", "30s", "--max_bytes", "5MB", "--no_tui"],
    ],
)
def test_underscore_and_dashed_spellings_are_the_same(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.max_time, args.max_bytes, args.no_tui) == ("30s", "5MB", True)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("250ms", 0.25), ("2", 2.0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "size"), [("1000", 1000), ("50MB", 50_000_000),
                                             ("2GiB", 2 * 1024**3), ("10k", 10_000)])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "-5s", "0", "5 minutes", "1d"])
def test_bad_duration_names_the_flag_and_the_forms(bad: str) -> None:
    with pytest.raises(UsageError, match="--max-time.*30s, 5m"):
        parse_duration(bad, "--max-time")


def test_bad_max_time_is_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["flows", "--local", "--max-time=soon", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--max-time" in err and "'soon'" in err
    assert not (tmp_path / "flow").exists()


def test_version_and_help() -> None:
    out = subprocess.run([sys.executable, "-m", "netobserv_tui", "version"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == f"netobserv-tui version {__version__}"
    out = subprocess.run([sys.executable, "-m", "netobserv_tui", "help"],
                         capture_output=True, text=True)
    assert "flows" in out.stdout and "cleanup" in out.stdout and out.returncode == 0


def test_packets_says_it_is_not_available_yet(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["packets", "tcp,80"]) == 2
    assert "not available in this version" in capsys.readouterr().err
