"""Command-line parsing: the article's spellings, dashed aliases, clear refusals."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest

from netobserv_tui import __version__, clidoc
from netobserv_tui.cli import build_parser, main, program_name, spell
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


@pytest.mark.parametrize(
    ("argv", "rules"),
    [
        (["tcp,80"], [(6, [[80, 80]], None)]),
        (["--max-time=5s", "UDP,53"], [(17, [[53, 53]], None)]),
        (["--enable-filter=true", "--direction=Egress", "sctp,9", "or", "--protocol=udp",
          "--dport=5"], [(132, [[9, 9]], None), (17, None, [[5, 5]])]),
    ],
)
def test_packets_takes_the_articles_protocol_port(
    argv: list[str], rules: list[tuple[int, Any, Any]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    assert main(["packets", *argv, "--yaml", f"--output={tmp_path}"]) == 0
    import yaml

    text = Path(capsys.readouterr().out.strip()).read_text()
    objects = [o for o in yaml.safe_load_all(text) if o]
    agent = next(o for o in objects if o["kind"] == "DaemonSet")
    values = {e["name"]: e.get("value") for e in
              agent["spec"]["template"]["spec"]["containers"][0]["env"]}
    got = json.loads(values["FLOW_FILTER_RULES"])["rules"]
    assert [(r["protocol"], r["port"], r["dport"]) for r in got] == rules


@pytest.mark.parametrize("bad", ["tcp", "tcp,", "tcp,http", "ftp,21", "tcp,0", "tcp,65536",
                                 "80,tcp"])
def test_packets_refuses_a_bad_protocol_port(bad: str, capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    assert main(["packets", bad, "--local", f"--output={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert f"{bad!r} is not PROTOCOL,PORT" in err and "tcp,80" in err
    assert not list(tmp_path.iterdir())


def test_an_unfiltered_packet_capture_needs_all(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    assert main(["packets", "--local", f"--output={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "no filter was given" in err and "--all" in err and "tcp,80" in err
    # Sampling alone is no filter; --enable_filter=true with no rule keeps everything.
    assert main(["packets", "--local", "--sampling=10", f"--output={tmp_path}"]) == 2
    assert main(["packets", "--local", "--enable_filter=true", f"--output={tmp_path}"]) == 2
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--snaplen=0"], "--snaplen 0: keep 1 to 65535"),
     (["--snaplen=65536"], "--snaplen 65536"),
     (["-w", "out.pcapng"], "-w out.pcapng: only '-'")],
)
def test_bad_packet_flags_exit_2_before_anything(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["packets", "--all", "--local", f"--output={tmp_path}", *flags]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_packet_capture_reaches_the_agents_and_aggregator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import kubernetes_validate
    import yaml

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    assert main(["packets", "udp,53", "--yaml", f"--output={tmp_path}", "--snaplen=200"]) == 0
    objects = [o for o in yaml.safe_load_all(Path(capsys.readouterr().out.strip()).read_text())
               if o]
    for obj in objects:
        kubernetes_validate.validate(obj, "1.33", strict=True)
    pod = next(o for o in objects if o["kind"] == "Pod")
    assert pod["spec"]["containers"][0]["args"][-3:] == ["--packets", "--snaplen", "200"]
    agent = next(o for o in objects if o["kind"] == "DaemonSet")
    env = {e["name"]: e.get("value") for e in
           agent["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PACKETS"] == "1" and env["SNAPLEN"] == "200"
    rules = json.loads(env["FLOW_FILTER_RULES"])["rules"]
    assert [(r["protocol"], r["port"]) for r in rules] == [(17, [[53, 53]])]


def test_open_refuses_a_missing_file_with_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["open", str(tmp_path / "nope.db")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope.db" in err and "<output>/flow/" in err


def test_open_refuses_a_file_that_is_not_a_capture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.db"
    subprocess.run(["sqlite3", str(other), "CREATE TABLE t (x)"], check=True)
    assert main(["open", str(other)]) == 2
    assert "not a netobserv capture" in capsys.readouterr().err


def test_open_without_a_terminal_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from netobserv_tui.aggregator.writers import FlowWriter

    writer = FlowWriter(tmp_path)
    db = writer.db_path
    writer.close()
    assert main(["open", str(db)]) == 2  # pytest's stdin is not a terminal
    err = capsys.readouterr().err
    assert "open needs a terminal" in err and str(db) in err


def test_open_rejects_a_bad_max_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["open", "--max-rows=0", str(tmp_path / "x.db")]) == 2
    assert "--max-rows must be a positive number" in capsys.readouterr().err


def test_open_without_a_file_takes_the_newest_capture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from netobserv_tui.aggregator.writers import FlowWriter

    monkeypatch.chdir(tmp_path)
    assert main(["open"]) == 2
    assert "no capture in output/flow" in capsys.readouterr().err
    from datetime import UTC, datetime

    older = FlowWriter(tmp_path / "output", started=datetime(2026, 1, 1, tzinfo=UTC))
    newer = FlowWriter(tmp_path / "output", started=datetime(2026, 2, 1, tzinfo=UTC))
    older.write_batch(["SrcAddr", "Bytes", "Packets"], [["198.18.0.1", 60, 1]])
    newer.write_batch(["SrcAddr", "Bytes", "Packets"], [["198.18.0.1", 60, 1]])
    older.close()
    newer.close()
    assert main(["open"]) == 2  # no terminal here, but the message names the file chosen
    err = capsys.readouterr().err
    assert f"output/flow/{newer.db_path.name}" in err and older.db_path.name not in err


def test_open_skips_a_newest_capture_without_flows_and_lists_them_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 3-second capture that saw nothing is not what `open` should show: it takes the
    newest one with flows, says so, and `--list` shows every capture."""
    from datetime import UTC, datetime

    from netobserv_tui.aggregator.writers import FlowWriter

    monkeypatch.chdir(tmp_path)
    full = FlowWriter(tmp_path / "output", started=datetime(2026, 1, 1, tzinfo=UTC))
    full.write_batch(["SrcAddr", "Bytes", "Packets", "TimeFlowStartMs", "TimeFlowEndMs"],
                     [["198.18.0.1", 60, 1, 1_767_225_600_000 + i * 1000,
                       1_767_225_600_000 + i * 1000 + 500] for i in range(1250)])
    full.close()
    empty = FlowWriter(tmp_path / "output", started=datetime(2026, 2, 1, tzinfo=UTC))
    empty.close()
    assert main(["open"]) == 2  # no terminal: the message names the file chosen
    err = capsys.readouterr().err
    assert err.startswith(f"output/flow/{empty.db_path.name} (the newest) holds no flow; "
                          f"opening output/flow/{full.db_path.name} (1,250 flows). "
                          "`netobserv open --list` shows every capture.\n")
    assert f"open needs a terminal: run it in an interactive shell, or query the file with " \
        f"sqlite3 or jq (output/flow/{full.db_path.name})" in err
    assert main(["open", "--list"]) == 0
    size = full.db_path.stat().st_size
    assert capsys.readouterr().out.splitlines() == [
        "started (UTC)         duration      flows      size  file",
        f"2026-01-01 00:00:00    0:20:50      1,250 {size / 1000:>6.1f} kB  "
        f"output/flow/{full.db_path.name}",
        f"-                            -          0 {empty.db_path.stat().st_size / 1000:>6.1f}"
        f" kB  output/flow/{empty.db_path.name}",
    ]


def test_yaml_writes_every_manifest_and_contacts_no_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import kubernetes_validate
    import yaml

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    argv = ["flows", "--yaml", f"--output={tmp_path}", "--image=registry.test/nobs:2",
            "--netobserv-namespace=obs", "--node-selector=zone=a", "--enable_dns",
            "--interfaces=eth0", "--enable_filter=true", "--protocol=tcp", "--port=80"]
    assert main(argv) == 0
    said = capsys.readouterr()
    path = Path(said.out.strip())
    assert path.parent == tmp_path and path.name.startswith("netobserv-c")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the token
    assert ("kubectl -n obs get secret netobserv-tui-token -o jsonpath='{.data.token}' | "
            "base64 -d") in said.err
    objects = [o for o in yaml.safe_load_all(path.read_text()) if o]
    assert [o["kind"] for o in objects][0] == "Namespace"
    for obj in objects:
        kubernetes_validate.validate(obj, "1.33", strict=True)
        assert obj["metadata"].get("namespace", "obs") == "obs"
    agent = next(o for o in objects if o["kind"] == "DaemonSet")
    spec = agent["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert spec["nodeSelector"]["zone"] == "a"
    assert spec["containers"][0]["image"] == "registry.test/nobs:2"
    assert env["FEATURES"] == "dns" and env["INTERFACES"] == "eth0"
    assert '"protocol": "TCP"' in env["FLOW_FILTER_RULES"] or "tcp" in env["FLOW_FILTER_RULES"]

    # A fresh random token in every file, as a real capture makes: never a fixed string.
    def token(p: Path) -> str:
        secret = next(o for o in yaml.safe_load_all(p.read_text()) if o and o["kind"] == "Secret")
        value: str = secret["stringData"]["token"]
        return value

    assert main(argv) == 0
    second = Path(capsys.readouterr().out.strip())
    assert second != path
    first_token, second_token = token(path), token(second)
    assert first_token != second_token
    assert len(first_token) >= 32 and "<" not in first_token and first_token.isascii()


@pytest.mark.parametrize(
    ("flag", "message"),
    [("--node-selector=zone", "--node-selector 'zone': expected KEY=VALUE"),
     ("--netobserv-namespace=kube-system", "namespace"),
     ("--rollout-timeout=soon", "--rollout-timeout"),
     ("--pull-policy=Sometimes", "invalid choice")],
)
def test_bad_cluster_flags_exit_2_before_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, message: str
) -> None:
    with pytest.raises(SystemExit) if "pull-policy" in flag else nullcontext():
        assert main(["flows", "--yaml", f"--output={tmp_path}", flag]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_kubeconfig_that_reaches_no_cluster_says_to_use_local(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: gone\n"
        "clusters: [{name: gone, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: gone, context: {cluster: gone, user: u}}]\n")
    monkeypatch.setenv("KUBECONFIG", str(config))
    assert main(["flows", "--no-tui", f"--output={tmp_path / 'out'}"]) != 0
    err = capsys.readouterr().err
    assert "cannot reach the cluster" in err and "--local" in err


def test_workload_flags_reach_the_aggregator_and_agents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import kubernetes_validate
    import yaml

    argv = ["flows", "--yaml", f"--output={tmp_path}", "-n", "shop", "--namespace=pay",
            "--pod", "shop/web-1", "-l", "app=web,tier!=db"]
    assert main(argv) == 0
    objects = [o for o in yaml.safe_load_all(Path(capsys.readouterr().out.strip()).read_text())
               if o]
    for obj in objects:
        kubernetes_validate.validate(obj, "1.33", strict=True)
    pod = next(o for o in objects if o["kind"] == "Pod")
    args = pod["spec"]["containers"][0]["args"]
    assert args[-8:] == ["--workload-namespace", "shop", "--workload-namespace", "pay",
                         "--workload-pod", "shop/web-1", "--workload-selector",
                         "app=web,tier!=db"]
    agent = next(o for o in objects if o["kind"] == "DaemonSet")
    env = {e["name"]: e.get("value") for e in
           agent["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["WORKLOAD_FILTER"] == "1"


def test_workload_flags_need_a_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["flows", "--local", "-n", "shop", f"--output={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "need a cluster" in err and "--interfaces" in err
    assert not list(tmp_path.iterdir())


def test_kubectl_and_oc_plugins_are_the_same_program(tmp_path: Path) -> None:
    """krew installs kubectl-netobserv; oc finds oc-netobserv: both are netobserv, and each
    names itself as the user typed it."""
    bindir = Path(sys.executable).parent
    outputs = set()
    for name, spoken in (("netobserv", "netobserv"), ("kubectl-netobserv", "kubectl netobserv"),
                         ("oc-netobserv", "oc netobserv")):
        exe = bindir / name
        assert exe.is_file(), f"{name} is not installed next to {sys.executable}"
        for args in (["version"], ["flows", "--yaml", f"--output={tmp_path / name}",
                                   "--pull-policy=Sometimes"]):
            done = subprocess.run([str(exe), *args], capture_output=True, text=True,
                                  timeout=60)
            if args[0] == "flows":
                assert done.stderr.startswith(f"usage: {spoken} flows [-h]"), done.stderr
            # The usage is wrapped to the name's length: compare the words.
            words = " ".join(done.stderr.replace(f"{spoken} flows", "PROGRAM").split())
            outputs.add((tuple(args[:1]), done.returncode, done.stdout.strip(), words))
    assert len(outputs) == 2, outputs  # one answer per command, whatever the name


@pytest.mark.parametrize(("argv0", "name"), [
    ("/home/u/.krew/bin/kubectl-netobserv", "kubectl netobserv"),  # as kubectl runs it
    ("kubectl-netobserv", "kubectl netobserv"),
    ("/usr/local/bin/oc-netobserv", "oc netobserv"),
    ("/tmp/kubectl-netobserv.pyz", "kubectl netobserv"),  # the release's zipapp, renamed
    ("/usr/bin/netobserv", "netobserv"),
    ("/src/netobserv_tui/__main__.py", "netobserv"),  # python -m netobserv_tui
    ("kubectl-netobserver", "netobserv"),
])
def test_the_program_name_comes_from_argv0(argv0: str, name: str) -> None:
    assert program_name(argv0) == name


def test_spell_names_commands_and_nothing_else() -> None:
    text = ("a capture is already running in namespace netobserv-cli: remove it with "
            "`netobserv cleanup`; see `netobserv flows --help`; objects netobserv created; "
            "usage: netobserv flows [-h]; Syntax: netobserv [flows|packets]; already "
            "`kubectl netobserv open`")
    assert spell(text, "oc netobserv") == (
        "a capture is already running in namespace netobserv-cli: remove it with "
        "`oc netobserv cleanup`; see `oc netobserv flows --help`; objects netobserv created; "
        "usage: oc netobserv flows [-h]; Syntax: oc netobserv [flows|packets]; already "
        "`kubectl netobserv open`")
    assert spell(text, "netobserv") == text


@pytest.fixture
def plugin(tmp_path: Path) -> Path:
    """A kubectl plugin as krew installs one: ``kubectl-netobserv``, a link to the
    program, which kubectl runs by its path."""
    link = tmp_path / "bin" / "kubectl-netobserv"
    link.parent.mkdir()
    link.symlink_to(Path(sys.executable).parent / "netobserv")
    return link


def test_the_plugin_says_kubectl_netobserv_in_usage_and_errors(
    plugin: Path, tmp_path: Path
) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(plugin), *args], capture_output=True, text=True,
                              timeout=60, cwd=tmp_path)

    done = run("help")
    assert done.returncode == 0
    assert done.stdout.splitlines()[2] == (
        "Syntax: kubectl netobserv [flows|packets|open|cleanup|lab|version|help] [options]")
    assert done.stdout.splitlines()[-2] == (
        "  help       Show this help; `kubectl netobserv flows --help` lists the flow options.")
    done = run("flows", "--help")
    assert done.stdout.startswith("usage: kubectl netobserv flows [-h] [--local]")
    done = run("packets", "--help")
    assert done.stdout.startswith(
        "usage: kubectl netobserv packets [PROTOCOL,PORT] [options] [filters]")
    done = run("flows", "--rollout-timeout")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "kubectl netobserv flows: error: argument --rollout_timeout/--rollout-timeout: "
        "expected one argument")
    done = run("open")  # no capture under ./output
    assert done.returncode == 2
    assert done.stderr == ("error: no capture in output/flow: give the file to open, as in "
                           "`kubectl netobserv open path/to/<time>.db`\n")
    done = run("packets", "tcp,http")
    assert done.returncode == 2
    assert done.stderr.endswith("or use the filter flags (see `kubectl netobserv packets "
                                "--help`)\n")


def test_an_error_of_a_capture_names_the_plugin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Messages made deep down (a leftover capture's "remove it with `netobserv cleanup`")
    are printed as the user runs the program."""
    from netobserv_tui.model.errors import CaptureError

    def refuse(request: Any) -> int:
        # What the capture prints itself at its end (problems, warnings) is spelled too.
        assert request.spell("Retry with `netobserv cleanup`.") == (
            "Retry with `oc netobserv cleanup`.")
        raise CaptureError("a capture is already running (or was interrupted) in namespace "
                           "netobserv-cli: stop it, or remove it with `netobserv cleanup`")

    monkeypatch.setattr(sys, "argv", ["/home/u/.krew/bin/oc-netobserv"])
    monkeypatch.setattr("netobserv_tui.capture.run.run_flows", refuse)
    monkeypatch.setattr("asyncio.run", lambda value: value)
    assert main(["flows", "--no-tui", "--local", f"--output={tmp_path}"]) == 1
    assert capsys.readouterr().err == (
        "error: a capture is already running (or was interrupted) in namespace netobserv-cli: "
        "stop it, or remove it with `oc netobserv cleanup`\n")


def test_open_a_packet_capture_checks_the_file_then_needs_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from netobserv_tui.aggregator.pcapng import PcapngWriter

    bad = tmp_path / "bad.pcapng"
    bad.write_bytes(b"not a capture at all")
    assert main(["open", str(bad)]) == 2
    assert "bad.pcapng" in capsys.readouterr().err
    good = tmp_path / "good.pcapng"
    PcapngWriter.create(good, application="test").close()
    assert main(["open", str(good)]) == 2  # pytest's stdin is no terminal
    err = capsys.readouterr().err
    assert "open needs a terminal" in err and "tshark" in err


def test_open_starts_a_cluster_capture_with_names(tmp_path: Path) -> None:
    """``netobserv open`` of a file whose flows carry Kubernetes names starts on the Names
    columns (as the live cluster capture did); a host capture keeps IP & port."""
    from netobserv_tui.aggregator.writers import FlowWriter
    from netobserv_tui.cli import _has_names
    from netobserv_tui.store import open_store

    columns = ["SrcAddr", "DstAddr", "Bytes", "Packets", "SrcK8S_Name", "SrcK8S_Namespace"]
    for name, expected in (("web-1", True), (None, False)):
        writer = FlowWriter(tmp_path / str(expected))
        writer.write_batch(columns, [["198.18.0.1", "198.18.0.2", 60, 1, name,
                                      "shop" if name else None]] * 3)
        writer.close()
        store = open_store(writer.db_path)
        try:
            assert _has_names(store) is expected
        finally:
            store.close()


@pytest.mark.parametrize(("argv", "features"), [
    (["flows", "--local", "--lab"], ["pktdrop", "dns", "rtt"]),
    (["flows", "--local", "--lab", "--enable_dns=false"], ["pktdrop", "rtt"]),
    (["flows", "--local", "--lab", "--enable_all=false"], []),
    (["flows", "--local", "--lab", "--enable_all=false", "--enable_rtt"], ["rtt"]),
    (["flows", "--local"], []),
    (["flows", "--local", "--enable_dns"], ["dns"]),
    (["flows", "--local", "--enable_all", "--enable_pktdrop=false"], ["dns", "rtt"]),
    (["packets", "--local", "--lab", "udp,53"], []),
])
def test_the_lab_demo_turns_every_feature_on_unless_told(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv: list[str], features: list[str]
) -> None:
    """The README's main job (`flows --local --lab`) shows drops, DNS and RTT at once; the
    flags still turn each off. Elsewhere features stay opt-in."""
    seen: list[Any] = []
    monkeypatch.setattr("netobserv_tui.capture.run.run_flows", seen.append)
    monkeypatch.setattr("asyncio.run", lambda value: 0)
    assert main([*argv, "--no-tui", f"--output={tmp_path}"]) == 0
    assert seen[0].capture.features == features


@pytest.mark.parametrize("argv", [["--version"], ["-V"], ["version"]])
def test_version_in_every_usual_spelling(argv: list[str],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    assert capsys.readouterr().out == f"netobserv-tui version {__version__}\n"


@pytest.mark.parametrize(("argv", "command"), [
    (["flows", "--bogus"], "flows"), (["packets", "tcp,80", "--bogus"], "packets"),
    (["open", "--nope"], "open"), (["cleanup", "--nope"], "cleanup")])
def test_an_unknown_option_shows_its_commands_usage(
    argv: list[str], command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: netobserv {command} ")
    assert err.endswith(f"netobserv {command}: error: unrecognized arguments: {argv[-1]}\n")


def test_every_option_of_flows_says_what_it_does(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["flows", "--help"])
    out = capsys.readouterr().out
    assert "--log_level {debug,info,warning,error}, --log-level {debug,info,warning,error}\n" \
        "                        what the terminal shows" in out
    from netobserv_tui.cli import USAGE

    assert "lab up|down|status|traffic" in USAGE
