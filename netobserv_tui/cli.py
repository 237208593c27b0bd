"""Command line: seed-compatible parsing and dispatch, nothing else.

The article's spellings work as written (``--enable_filter=true``, ``--max-time=30s``);
every underscore option also has a dashed alias. ``netobserv``, ``kubectl netobserv`` and
``oc netobserv`` are the same program; its usage and messages name it as it was run
(:func:`program_name`, :func:`spell`).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from . import __version__
from .model.errors import NetobservError, UsageError
from .model.filters import PROTOCOLS, FilterSet, add_filter_arguments
from .model.units import human_bytes, parse_duration, parse_size

if TYPE_CHECKING:
    from .capture.run import PacketOptions
    from .store import FlowStore

log = logging.getLogger("netobserv_tui")

#: The program's name in every text of the code, and the executables that make it a kubectl
#: or oc plugin (krew installs ``kubectl-netobserv``), with the command users type for them.
NAME: Final = "netobserv"
PLUGINS: Final = {"kubectl-netobserv": "kubectl netobserv", "oc-netobserv": "oc netobserv"}
#: ``netobserv`` naming a command: at a word's start, followed by a command or the list of
#: them (not ``netobserv-cli``, ``netobserv created``, nor an already spelled plugin).
_COMMAND: Final = re.compile(
    r"(?<![\w./-])(?<!kubectl )(?<!oc )netobserv"
    r"(?= (?:\[|(?:flows|packets|open|cleanup|lab|version|help)\b))")


def program_name(argv0: str | None = None) -> str:
    """How the user runs this program: ``kubectl netobserv`` when it was started as
    ``kubectl-netobserv`` (kubectl and krew run a plugin by its path, which argv[0] holds),
    ``oc netobserv`` as ``oc-netobserv``, else ``netobserv``."""
    name = Path(sys.argv[0] if argv0 is None else argv0).name
    for executable, spoken in PLUGINS.items():
        if name == executable or name.startswith(executable + "."):  # kubectl-netobserv.pyz
            return spoken
    return NAME


def spell(text: str, program: str | None = None) -> str:
    """``text`` with the commands it names (`netobserv cleanup`, ``usage: netobserv
    flows``) as ``program`` (default: :func:`program_name`) is run."""
    program = program_name() if program is None else program
    return text if program == NAME else _COMMAND.sub(program, text)


USAGE = """\
netobserv captures network flows with eBPF, on a Kubernetes cluster or on this host.

Syntax: netobserv [flows|packets|open|cleanup|lab|version|help] [options]

commands:
  flows      Capture flows; shows them live and writes output/flow/<time>.json and .db.
  packets    Capture packets matching filters, such as `netobserv packets tcp,80`; shows
             them live and writes output/pcap/<time>.pcapng (and the flows, as flows does).
  open       Browse a saved capture (.db, .json or .pcapng; default the newest .db)
             with the same views and filters; needs no root and no agent.
  cleanup    Remove anything an interrupted capture left behind (TC programs).
  lab        The network-namespace lab on its own: lab up|down|status|traffic.
  version    Print the version (also --version).
  help       Show this help; `netobserv flows --help` lists the flow options.
"""


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean; use true or false")


def _add(p: argparse._ActionsContainer, name: str, *args: Any, **kwargs: Any) -> None:
    """An option spelled as in the article (underscores) plus its dashed alias."""
    names = [name]
    dashed = name.replace("_", "-")
    if dashed != name:
        names.append(dashed)
    p.add_argument(*names, *args, **kwargs)


def _capture_parser(sub: Any, command: str, program: str = NAME) -> argparse.ArgumentParser:
    """``flows`` and ``packets``: the same options, plus the packet capture's own."""
    if command == "flows":
        p: argparse.ArgumentParser = sub.add_parser(
            "flows",
            allow_abbrev=False,
            help="capture flows",
            description="Capture flows on every node (or this host), show them live, and "
            "keep JSON and SQLite files under <output>/flow/.",
        )
    else:
        p = sub.add_parser(
            "packets",
            allow_abbrev=False,
            help="capture packets",
            usage=f"{program} packets [PROTOCOL,PORT] [options] [filters]",
            description="Capture whole packets matching the filters on every node (or this "
            "host), show them live, and keep <output>/pcap/<time>.pcapng (with the flows "
            "under <output>/flow/). PROTOCOL,PORT (such as tcp,80) is short for "
            "--enable_filter=true --protocol=tcp --port=80; every filter flag of flows "
            "works too. An unfiltered capture needs --all.",
        )
        p.add_argument("filter", nargs="?", metavar="PROTOCOL,PORT",
                       help="a protocol and a port, such as tcp,80 or udp,53")
        pk = p.add_argument_group("packets")
        pk.add_argument("--all", action="store_true",
                        help="capture every packet when no filter is given (costly: each "
                        "packet is copied from the kernel and written whole)")
        pk.add_argument("--snaplen", type=int, default=65535, metavar="BYTES",
                        help="bytes kept of each packet, 1 to 65535 (default 65535: the "
                        "whole packet)")
        pk.add_argument("--tls-keylog", "--tls_keylog", type=Path, metavar="FILE",
                        help="an NSS key log file (SSLKEYLOGFILE) whose secrets are put in "
                        "the pcapng, so Wireshark and tshark decrypt TLS with no setting; "
                        "read when the capture ends, and followed while it runs for -w -")
        pk.add_argument("-w", dest="write", metavar="FILE",
                        help="'-': also write the pcapng stream to stdout while capturing "
                        f"(implies --no-tui), e.g. `{program} packets tcp,80 -w - | "
                        "wireshark -k -i -`")
        _add(pk, "--pcap_stdout", action="store_true", help="the same as -w -")
    target = p.add_argument_group("target")
    target.add_argument("--local", action="store_true",
                        help="capture on this host even when a kubeconfig is present")
    target.add_argument("--lab", action="store_true",
                        help="build the network-namespace lab with live traffic for the "
                        "duration of the capture (a demo that needs no cluster)")
    cluster = p.add_argument_group(
        "cluster", "used when a kubeconfig is present and --local is not given")
    cluster.add_argument("--kubeconfig", metavar="PATH",
                         help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
    cluster.add_argument("--context", metavar="NAME",
                         help="kubeconfig context (default: the current context)")
    _add(cluster, "--netobserv_namespace", metavar="NAME",
         help="namespace the capture creates and deletes (default netobserv-cli, or "
         "$NETOBSERV_NAMESPACE)")
    cluster.add_argument("--image", metavar="REF",
                         help="agent and aggregator image (default: $NETOBSERV_IMAGE, "
                         "then this version's image)")
    _add(cluster, "--pull_policy", metavar="POLICY",
         choices=["Always", "IfNotPresent", "Never"],
         help="image pull policy (default IfNotPresent, or $NETOBSERV_PULL_POLICY)")
    _add(cluster, "--node_selector", action="append", default=[], metavar="KEY=VALUE",
         help="run agents only on nodes with this label (repeatable)")
    _add(cluster, "--rollout_timeout", default="3m", metavar="DURATION",
         help="how long agents and aggregator may take to be ready (default 3m)")
    cluster.add_argument("--openshift", type=_bool, nargs="?", const=True, default=None,
                         metavar="BOOL",
                         help="add the OpenShift SecurityContextConstraints (default: "
                         "detected)")
    work = p.add_argument_group(
        "workload (cluster only)",
        "keep only the flows of these pods; followed as pods come and go")
    work.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                      help="pods of this namespace (repeatable)")
    work.add_argument("--pod", action="append", default=[], metavar="NAME|NS/NAME",
                      help="this pod (repeatable)")
    work.add_argument("--selector", "-l", default="", metavar="SELECTOR",
                      help="pods with these labels, as kubectl: app=web,tier!=db")
    cluster.add_argument("--copy", type=_bool, nargs="?", const=True, default=True,
                         metavar="BOOL",
                         help="copy the files out of the cluster at the end (default true; "
                         "false discards the capture)")
    cluster.add_argument("--yaml", action="store_true",
                         help="write every manifest the capture would apply to "
                         "<output>/netobserv-<id>.yaml and exit; no cluster is contacted")
    feat = p.add_argument_group(
        "features", "opt-in (on by default in a flows capture with --lab, whose traffic "
        "has drops, DNS and TCP); each accepts =true/=false, and alone means true"
    )
    for name, text in (
        ("--enable_pktdrop", "packet drops with the kernel's drop cause"),
        ("--enable_dns", "DNS id, response code, latency and name"),
        ("--enable_rtt", "TCP round-trip time, plus retransmissions and resets"),
        ("--enable_all", "all of the above"),
    ):
        _add(feat, name, type=_bool, nargs="?", const=True, default=None, metavar="BOOL",
             help=f"{text} (default: false; true with --lab)")
    _add(feat, "--dns_port", type=int, default=53, metavar="PORT",
         help="port DNS tracking looks at (default 53)")
    add_filter_arguments(p.add_argument_group(
        "filters (in the kernel)",
        "several rules are separated by the argument `or`; see docs/filters.md",
    ))
    cap = p.add_argument_group("capture")
    _add(cap, "--interfaces", action="append", default=[], metavar="LIST",
         help="interfaces to monitor (comma-separated names or patterns such as 'eth*')")
    _add(cap, "--exclude_interfaces", action="append", default=[], metavar="LIST",
         help="interfaces to skip (default: lo)")
    _add(cap, "--cache_max_flows", type=int, default=100_000, metavar="N",
         help="kernel flow map size per agent (default 100000)")
    _add(cap, "--cache_active_timeout", default="1s", metavar="DURATION",
         help="how often flows are evicted from the kernel (default 1s)")
    lim = p.add_argument_group("limits and output")
    _add(lim, "--max_time", metavar="DURATION", help="stop after this long, e.g. 30s, 5m")
    _add(lim, "--max_bytes", metavar="SIZE", help="stop once this many bytes were captured")
    lim.add_argument("--output", type=Path, default=Path("output"), metavar="DIR",
                     help="where files are written (default ./output)")
    _add(lim, "--no_tui", action="store_true",
         help="no terminal UI: run in the foreground, progress on stderr")
    _add(lim, "--log_level", default="warning", choices=["debug", "info", "warning", "error"],
         help="what the terminal shows of the tool's log (default: warning); "
         "<output>/netobserv.log keeps info and above, and debug also makes the agent "
         "log each step")
    return p


def build_parser(program: str = NAME) -> argparse.ArgumentParser:
    """The parser; its usage and errors name the program ``program``."""
    parser = argparse.ArgumentParser(prog=program, add_help=False)
    sub = parser.add_subparsers(dest="command")
    _capture_parser(sub, "flows", program)
    _capture_parser(sub, "packets", program)
    opener = sub.add_parser(
        "open", help="browse a saved capture (.db, .json or .pcapng) in the terminal UI",
        description="Browse a saved capture with the views, filters and details of the "
        "live UI. Needs no root and starts no agent.",
    )
    opener.add_argument("file", type=Path, nargs="?",
                        help="a capture's .db, .json or .pcapng file (default: the newest "
                        ".db in ./output/flow that holds flows)")
    opener.add_argument("--list", action="store_true",
                        help="list the captures in ./output/flow (start, duration, flows, "
                        "size), newest last, and exit")
    _add(opener, "--max_rows", type=int, default=1000, metavar="N",
         help="records the table keeps, newest first (default 1000)")
    cleaner = sub.add_parser(
        "cleanup", help="remove leftovers of an interrupted capture",
        description="Delete every object netobserv created in the cluster (found by its "
        "labels) when a kubeconfig is present, and remove TC programs left on this host "
        "(as root). Safe to run any number of times.")
    cleaner.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig file")
    cleaner.add_argument("--context", metavar="NAME", help="kubeconfig context")
    cleaner.add_argument("--local", action="store_true",
                         help="this host only, even when a kubeconfig is present")
    lab = sub.add_parser("lab", help="network-namespace lab", add_help=False)
    lab.add_argument("lab_args", nargs=argparse.REMAINDER)
    sub.add_parser("version", help="print the version")
    sub.add_parser("help", help="show help")
    return parser


def _kubeconfig_present() -> bool:
    paths = os.environ.get("KUBECONFIG", "")
    candidates = [Path(p) for p in paths.split(os.pathsep) if p] or [Path.home() / ".kube/config"]
    return any(p.is_file() for p in candidates)


def packets_shorthand(text: str, enable: bool = True) -> list[str]:
    """``tcp,80`` -> ``--enable_filter=true --protocol=TCP --port=80``: the article's form,
    a protocol and a port, as filter flags for the first rule (without --enable_filter when
    the command line has it already: ``enable`` False)."""
    proto, sep, port = text.partition(",")
    names = {name.lower(): name for name in PROTOCOLS}
    if not sep or proto.lower() not in names or not port.isdigit() \
            or not 0 < int(port) < 65536:
        raise UsageError(f"packets: {text!r} is not PROTOCOL,PORT; write it as tcp,80 or "
                         f"udp,53 (protocols: {', '.join(sorted(names))}), or use the filter "
                         "flags (see `netobserv packets --help`)")
    flags = [f"--protocol={names[proto.lower()]}", f"--port={port}"]
    return ["--enable_filter=true", *flags] if enable else flags


def _flows(args: argparse.Namespace, filters: FilterSet, program: str = NAME) -> int:
    from .capture.cluster import ClusterOptions
    from .capture.run import FlowsRequest, run_flows
    from .capture.session import Limits
    from .capture.target import CaptureOptions

    # What was not said follows --enable_all, else the lab demo's default: every feature
    # on, so that each view has rows at once (its traffic has drops, DNS and TCP).
    unsaid = args.enable_all if args.enable_all is not None else (
        args.lab and args.command == "flows")
    features = [
        name
        for name, flag in (("pktdrop", args.enable_pktdrop), ("dns", args.enable_dns),
                           ("rtt", args.enable_rtt))
        if (unsaid if flag is None else flag)
    ]
    if not 0 < args.dns_port < 65536:
        raise UsageError(f"--dns-port: {args.dns_port} is not a port; use 1 to 65535")
    packets = _packet_options(args, filters) if args.command == "packets" else None
    if packets is not None and not filters.rules:  # --all: no filter program at all
        filters = FilterSet(rules=(), sampling=filters.sampling, enabled=False)
    capture = CaptureOptions(
        output=args.output,
        interfaces=args.interfaces,
        exclude_interfaces=args.exclude_interfaces,
        cache_max_flows=args.cache_max_flows,
        cache_active_timeout=args.cache_active_timeout,
        log_level="debug" if args.log_level == "debug" else "info",
        features=features,
        dns_port=args.dns_port,
        filters_json=filters.to_json() if filters.enabled or filters.sampling else None,
        packets=packets is not None,
        snaplen=packets.snaplen if packets else 65535,
    )
    limits = Limits(
        max_time=parse_duration(args.max_time, "--max-time") if args.max_time else None,
        max_bytes=parse_size(args.max_bytes, "--max-bytes") if args.max_bytes else None,
    )
    cluster = ClusterOptions(
        kubeconfig=args.kubeconfig, context=args.context, namespace=args.netobserv_namespace,
        image=args.image, pull_policy=args.pull_policy,
        node_selector=_key_values(args.node_selector, "--node-selector"),
        rollout_timeout=parse_duration(args.rollout_timeout, "--rollout-timeout"),
        openshift=args.openshift, copy=args.copy,
        workload_namespaces=tuple(args.namespace), workload_pods=tuple(args.pod),
        workload_selector=args.selector,
    )
    if args.yaml:
        from .capture.cluster import output_yaml, yaml_token_hint

        path = output_yaml(capture, cluster)
        print(path)
        print(yaml_token_hint(path, cluster.namespace), file=sys.stderr)
        return 0
    in_cluster = not args.local and not args.lab and (
        bool(args.kubeconfig or args.context) or _kubeconfig_present())
    if cluster.workload and not in_cluster:
        raise UsageError("-n/--namespace, --pod and --selector choose Kubernetes pods, so "
                         "they need a cluster (a kubeconfig, without --local); on this host "
                         "narrow the capture with --interfaces or the kernel filters "
                         "(--peer_ip, --cidr, ...)")
    request = FlowsRequest(capture, limits, tui=not args.no_tui and not (
                               packets and packets.stdout), lab=args.lab,
                           cluster=cluster if in_cluster else None, packets=packets,
                           spell=functools.partial(spell, program=program))
    if args.cache_max_flows < 1:
        raise UsageError("--cache-max-flows must be a positive number of flows")
    parse_duration(args.cache_active_timeout, "--cache-active-timeout")
    return asyncio.run(run_flows(request))


def _packet_options(args: argparse.Namespace, filters: FilterSet) -> PacketOptions:
    """What ``packets`` adds, checked: a filter or --all, the snapshot length, -w, the keys."""
    from .capture.run import PacketOptions

    if not filters.rules and not args.all:
        raise UsageError(
            "packets: no filter was given, so every packet on every interface would be "
            "copied out of the kernel and written whole (a busy node makes gigabytes a "
            "minute); give one, such as `netobserv packets tcp,80` or --protocol, --port, "
            "--cidr, --peer_ip (see docs/filters.md), or add --all to capture everything")
    if not 0 < args.snaplen <= 65535:
        raise UsageError(f"--snaplen {args.snaplen}: keep 1 to 65535 bytes of each packet "
                         "(65535, the default, keeps them whole)")
    if args.write not in (None, "-"):
        raise UsageError(f"-w {args.write}: only '-' (stdout) is supported; the file is "
                         f"always written under --output ({args.output / 'pcap'})")
    keylog = args.tls_keylog
    if keylog is not None and keylog.exists() and not keylog.is_file():
        raise UsageError(f"--tls-keylog {keylog}: not a file; give the file your "
                         "application writes its TLS keys to (its SSLKEYLOGFILE)")
    return PacketOptions(snaplen=args.snaplen, stdout=args.write == "-" or args.pcap_stdout,
                         tls_keylog=keylog.resolve() if keylog else None)


@dataclass(frozen=True)
class SavedCapture:
    """One capture's database under ``output/flow``, summed up for ``open``."""

    path: Path
    flows: int
    first_ms: int | None
    last_ms: int | None
    size: int


def _saved_captures(output: Path) -> list[SavedCapture]:
    """The databases of ``output/flow``, oldest first (their names are their UTC start);
    one that cannot be read counts as empty."""
    from .store import StoreError, open_store

    found = []
    for path in sorted((output / "flow").glob("*.db")):
        try:
            store = open_store(path)
            try:
                totals = store.totals()
            finally:
                store.close()
            flows, first, last = totals.flows, totals.first_ms, totals.last_ms
        except (StoreError, OSError):
            flows, first, last = 0, None, None
        found.append(SavedCapture(path, flows, first, last, path.stat().st_size))
    return found


def _newest_capture(output: Path) -> Path:
    """The newest capture with flows (saying so when it skipped newer empty ones)."""
    captures = _saved_captures(output)
    if not captures:
        raise UsageError(f"no capture in {output / 'flow'}: give the file to open, as in "
                         "`netobserv open path/to/<time>.db`")
    with_flows = [c for c in captures if c.flows]
    chosen = with_flows[-1] if with_flows else captures[-1]
    if chosen is not captures[-1]:
        print(f"{captures[-1].path} (the newest) holds no flow; opening {chosen.path} "
              f"({chosen.flows:,} flows). `netobserv open --list` shows every capture.",
              file=sys.stderr)
    return chosen.path


def _list_captures(output: Path) -> int:

    captures = _saved_captures(output)
    if not captures:
        print(f"no capture in {output / 'flow'}", file=sys.stderr)
        return 1
    print(f"{'started (UTC)':<20} {'duration':>9} {'flows':>10} {'size':>9}  file")
    for c in captures:
        started = (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(c.first_ms / 1000))
                   if c.first_ms is not None else "-")
        span = ("-" if c.first_ms is None or c.last_ms is None
                else _span(max(0, c.last_ms - c.first_ms) / 1000))
        print(f"{started:<20} {span:>9} {c.flows:>10,} {human_bytes(c.size):>9}  {c.path}")
    return 0


def _span(seconds: float) -> str:
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _open(args: argparse.Namespace) -> int:
    from .store import open_store

    if args.max_rows < 1:
        raise UsageError("--max-rows must be a positive number of rows")
    if args.list:
        return _list_captures(Path("output"))
    if args.file is not None and args.file.suffix == ".pcapng":
        return _open_packets(args.file, args.max_rows)
    store = open_store(args.file or _newest_capture(Path("output")))
    try:
        if not sys.stdin.isatty() or not sys.stdout.isatty():
            raise UsageError(f"open needs a terminal: run it in an interactive shell, or "
                             f"query the file with sqlite3 or jq ({store.path})")
        from .tui.app import FlowsApp
        from .tui.collector import quiet_collector
        from .tui.terminal import sized_from_terminal

        header = {"output": str(store.path)}
        with sized_from_terminal(), quiet_collector():
            FlowsApp(None, header, store=store, max_rows=args.max_rows,
                     names_first=_has_names(store)).run()
    finally:
        store.close()
    return 0


def _has_names(store: FlowStore, sample: int = 500) -> bool:
    """Whether the newest flows of a saved capture carry Kubernetes names (a cluster
    capture: the table then starts with the Names columns)."""
    newest = store.search(None, sample).records
    return any(record.get("SrcK8S_Name") or record.get("DstK8S_Name") for record in newest)


def _open_packets(path: Path, max_rows: int) -> int:
    """``netobserv open FILE.pcapng``: a saved packet capture in the packets UI."""
    from .store.pcap import PacketFile

    pcap = PacketFile(path)  # StoreError (a NetobservError) says what is wrong
    if not sys.stdin.isatty() or not sys.stdout.isatty():
        pcap.close()
        raise UsageError(f"open needs a terminal: run it in an interactive shell, or read "
                         f"the file with tshark or wireshark ({path})")
    from .tui.collector import quiet_collector
    from .tui.packets import PacketsApp
    from .tui.terminal import sized_from_terminal

    with sized_from_terminal(), quiet_collector():
        PacketsApp(pcap, {"output": str(path)}, max_rows=max_rows).run()
    return 0


def _key_values(items: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} {item!r}: expected KEY=VALUE, such as "
                             "kubernetes.io/hostname=node-1")
        pairs[key] = value
    return pairs


def _cleanup(args: argparse.Namespace) -> int:
    """The cluster's objects (by label) when a kubeconfig is there, then this host's TC
    leftovers (root only; skipped with a note for a user cleaning a cluster)."""
    in_cluster = not args.local and (bool(args.kubeconfig or args.context)
                                     or _kubeconfig_present())
    if in_cluster:
        from .capture.cluster import cleanup_cluster

        deleted = asyncio.run(cleanup_cluster(args.kubeconfig, args.context, print))
        if not deleted:
            print("nothing to clean up in the cluster")
    if os.geteuid() != 0 and in_cluster:
        print("this host's TC programs were not checked (that needs root)")
        return 0
    from .agent.kernel import check_privileges
    from .agent.tc import cleanup_leftovers

    check_privileges()
    removed = cleanup_leftovers()
    for item in removed:
        print(f"removed {item}")
    if not removed:
        print("nothing to clean up on this host")
    return 0


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args``, except that an unknown option of a command is reported with
    that command's usage (``netobserv flows --bogus`` shows the flows usage, not the list
    of commands)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        commands = next(action for action in parser._actions
                        if isinstance(action, argparse._SubParsersAction))
        command = commands.choices.get(str(getattr(args, "command", "")), parser)
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    program = program_name()
    parser = build_parser(program)
    if not argv or argv[0] in ("help", "-h", "--help"):
        print(spell(USAGE, program))
        return 0
    if argv[0] in ("--version", "-V"):
        argv[0] = "version"
    if argv[0] == "lab":
        from .lab.cli import main as lab_main

        return lab_main(argv[1:])
    filters = FilterSet(rules=(), sampling=0, enabled=False)
    if argv[0] in ("flows", "packets"):
        try:
            # A packet capture filters by default (with no rule, it would take everything,
            # which needs --all): `packets udp,53 or --dport=5353` needs no --enable_filter.
            given = {a.split("=")[0] for a in argv[1:]}
            pre = ["--enable_filter=true"] if argv[0] == "packets" and not (
                given & {"--enable_filter", "--enable-filter"}) else []
            filters, rest = FilterSet.parse([*pre, *argv[1:]])
            args = _parse(parser, [argv[0], *rest])
            if argv[0] == "packets" and args.filter is not None:
                # PROTOCOL,PORT joins the first rule's flags, wherever it was written.
                shorthand = packets_shorthand(args.filter, enable=not filters.enabled)
                filters, _ = FilterSet.parse([*pre, *shorthand, *argv[1:]])
        except UsageError as exc:
            print(f"error: {spell(str(exc), program)}", file=sys.stderr)
            return exc.exit_code
    else:
        args = _parse(parser, argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "warning").upper(),
        stream=sys.stderr,
        format="%(levelname)s %(message)s",
    )
    try:
        if args.command == "version":
            print(f"netobserv-tui version {__version__}")
            return 0
        if args.command in ("flows", "packets"):
            return _flows(args, filters, program)
        if args.command == "open":
            return _open(args)
        if args.command == "cleanup":
            return _cleanup(args)
        print(spell(USAGE, program))
        return 2
    except NetobservError as exc:
        print(f"error: {spell(str(exc), program)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
