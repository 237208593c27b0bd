"""``python -m netobserv_tui.aggregator``: run one capture's aggregator until SIGTERM/SIGINT,
or until a FINISH session (see :mod:`..model.protocol`) has taken the closed files away.

stdout carries exactly two JSON lines for the process that started us (the capture
lifecycle), each flushed at once::

    {"event": "ready", "host": H, "port": P, "capture": C, "files": {"json": J, "db": D}}
    {"event": "closed", "capture": C, "files": {...}, "flows": N, "bytes": N, ...}

Logs go to stderr.  The capture token is read from an environment variable, never from the
command line, where ``ps`` would show it to every user of the node.

With ``--enrich kubernetes`` the flows get Kubernetes metadata (see :mod:`.enrich`): the
API server is reached with the pod's service account (or ``--kubeconfig``), and pods,
services, nodes, replicasets and jobs are listed before the aggregator listens, so the first batch
is enriched already.  If the API server cannot be reached (or the lists do not complete
within ``--enrich-timeout``), a warning is logged and the capture runs without enrichment.

``--workload-namespace``, ``--workload-pod`` and ``--workload-selector`` (which need
``--enrich kubernetes``) narrow the capture to a workload (see :mod:`.workload`): its pods'
addresses are computed from the first lists, before the aggregator listens, sent to every
agent right after its WELCOME, and sent again whenever pod changes change the set.  Without
the inventory there is no set: the process then exits 1 rather than capture every flow.

``--user UID:GID`` (a local capture, started as root) gives up root once the socket and the
files are open (see :mod:`.privileges`); "ready" then says the ``uid`` it runs as.

Exit codes: 0 after a clean stop; 1 if the aggregator cannot bind, create its files or
write a batch (the files keep everything written before the failure); 2 for bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from ..model.errors import CaptureError, NetobservError, UsageError
from ..model.memory import peak_rss_kib
from .privileges import become, parse_user
from .server import Aggregator

if TYPE_CHECKING:
    from kubernetes_asyncio import client

    from .enrich import InventoryWatch
    from .workload import WorkloadSelector

log = logging.getLogger("netobserv_tui.aggregator")


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT``, or ``*:PORT`` / ``:PORT`` (every address, IPv6 and
    IPv4) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9999 "
                         "(port 0 picks a free port)")
    host = host.removeprefix("[").removesuffix("]")
    return host or "*", int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m netobserv_tui.aggregator",
        description="Receive flow batches from netobserv-tui agents, write "
                    "<output>/flow/<UTC time>.json and .db, serve the live stream.")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT",
                        help="address to listen on: *:PORT is every address, IPv6 and IPv4 "
                             "(the pod's); port 0 picks a free port")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="output directory; files go to DIR/flow/")
    parser.add_argument("--token-env", default="NETOBSERV_TOKEN", metavar="NAME",
                        help="environment variable holding the capture token "
                             "(default: NETOBSERV_TOKEN)")
    parser.add_argument("--files-wait", type=float, default=300.0, metavar="SECONDS",
                        help="when a FINISH session breaks off before the files are all "
                             "taken, how long to keep them on offer for another "
                             "(default: 300)")
    parser.add_argument("--grace", type=float, default=5.0, metavar="SECONDS",
                        help="on stop, how long to wait for agents to finish (default: 5)")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--packets", action="store_true",
                        default=os.environ.get("PACKETS", "").lower() in ("1", "true"),
                        help="a packet capture: agents also send packets, written to "
                             "DIR/pcap/<UTC time>.pcapng")
    parser.add_argument("--snaplen", type=int, default=int(os.environ.get("SNAPLEN", 65535)),
                        metavar="BYTES",
                        help="the snapshot length the packet file declares (default 65535)")
    parser.add_argument("--user", default=None, metavar="UID:GID",
                        help="once the socket and the files are open, run as this user "
                             "(no supplementary groups); the database is then left in WAL "
                             "mode for the caller to settle (settle_wal)")
    parser.add_argument("--enrich", choices=["kubernetes"], default=None,
                        help="add metadata to the flows: 'kubernetes' watches pods, services, "
                             "nodes, replicasets and jobs (in-cluster service account by "
                             "default)")
    parser.add_argument("--kubeconfig", metavar="PATH", default=None,
                        help="with --enrich kubernetes: use this kubeconfig (its current "
                             "context) instead of the in-cluster service account")
    parser.add_argument("--enrich-timeout", type=float, default=20.0, metavar="SECONDS",
                        help="how long to wait for the first Kubernetes lists before running "
                             "without enrichment (default: 20)")
    parser.add_argument("--workload-namespace", action="append", default=[], metavar="NS",
                        help="with --enrich kubernetes: keep only flows of pods of this "
                             "namespace (repeatable), kept current as pods come and go")
    parser.add_argument("--workload-pod", action="append", default=[],
                        metavar="NAME|NS/NAME",
                        help="with --enrich kubernetes: keep only flows of this pod "
                             "(repeatable)")
    parser.add_argument("--workload-selector", default="", metavar="SELECTOR",
                        help="with --enrich kubernetes: keep only flows of the pods matching "
                             "this label selector (Kubernetes syntax, e.g. 'app=web,tier!=db')")
    return parser


def workload_from_args(args: argparse.Namespace) -> WorkloadSelector | None:
    """The workload the flags ask for, or None; :class:`UsageError` if they are wrong."""
    namespaces = getattr(args, "workload_namespace", None) or []
    pods = getattr(args, "workload_pod", None) or []
    selector = getattr(args, "workload_selector", None) or ""
    if not (namespaces or pods or selector):
        return None
    if args.enrich != "kubernetes":
        raise UsageError("--workload-namespace, --workload-pod and --workload-selector need "
                         "--enrich kubernetes: the pods' addresses come from the Kubernetes "
                         "inventory")
    from .workload import WorkloadSelector

    try:
        return WorkloadSelector(namespaces, pods, selector)
    except ValueError as exc:
        raise UsageError(f"workload: {exc}") from None


def emit(event: str, **fields: Any) -> None:
    """One JSON line on stdout, flushed: the parent process waits for it."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def run(args: argparse.Namespace, token: str) -> int:
    host, port = parse_listen(args.listen)
    workload = workload_from_args(args)
    watch = await start_enrichment(args) if args.enrich == "kubernetes" else None
    try:
        if workload is not None and watch is None:
            raise CaptureError("cannot narrow the capture to the workload without the "
                               "Kubernetes inventory (see the warning above); not capturing "
                               "every flow instead")
        enricher = None
        if watch is not None:
            from .enrich import INFRA_PREFIXES, Enricher

            # Our own namespace is infrastructure, as netobserv's is for netobserv.
            own = os.environ.get("POD_NAMESPACE", "")
            enricher = Enricher(watch.inventory, infra_prefixes=(*INFRA_PREFIXES, own))
        aggregator = Aggregator(args.output, token, host=host, port=port, enricher=enricher,
                                files_wait=args.files_wait, packets=args.packets,
                                snaplen=args.snaplen,
                                lookup=watch.inventory.lookup if watch is not None else None,
                                keep_wal=args.user is not None)
        if workload is None or watch is None:
            return await _serve(aggregator, args)
        from .workload import WorkloadUpdater

        # The set is known before the aggregator listens: every agent gets it after WELCOME.
        updater = WorkloadUpdater(workload, watch.inventory, aggregator.set_workload)
        updater.start()
        try:
            return await _serve(aggregator, args)
        finally:
            await updater.stop()
    finally:
        if watch is not None:
            await watch.stop()
            await watch.api_client.close()


async def start_enrichment(args: argparse.Namespace) -> InventoryWatch | None:
    """The running Kubernetes watch once every kind is listed, or None (warning logged)."""
    from .enrich import InventoryWatch

    try:
        api = await _api_client(args.kubeconfig)
    except Exception as exc:  # ConfigException (not in a pod), an unreadable file...
        log.warning("Kubernetes enrichment off: no API server configuration (%s)", exc)
        return None
    watch = InventoryWatch(api)
    watch.start()
    if await watch.wait_ready(args.enrich_timeout):
        log.info("Kubernetes enrichment on: %s", ", ".join(
            f"{n} {kind.lower()}(s)" for kind, n in watch.inventory.counts().items()))
        return watch
    await watch.stop()
    await api.close()
    log.warning("Kubernetes enrichment off: the objects could not be listed within %g s (%s)",
                args.enrich_timeout, watch.problem or "no answer")
    return None


async def _api_client(kubeconfig: str | None) -> client.ApiClient:
    from kubernetes_asyncio import client, config

    if kubeconfig:
        return await config.new_client_from_config(config_file=kubeconfig)
    configuration = client.Configuration()
    config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration=configuration)


async def _serve(aggregator: Aggregator, args: argparse.Namespace) -> int:
    await aggregator.start()
    if args.user is not None:
        try:
            become(*args.user)
        except OSError as exc:
            await aggregator.stop(grace=0)
            raise CaptureError(f"cannot run as uid {args.user[0]}: {exc.strerror or exc}; "
                               "start the aggregator as root for --user") from None
    emit("ready", host=aggregator.host, port=aggregator.port, capture=aggregator.capture,
         files=aggregator.files, **({"uid": os.getuid()} if args.user is not None else {}))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, signum, stop)
    # A signal, or a FINISH session (which closes the files itself) that has ended.
    finished = asyncio.create_task(aggregator.finished.wait())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({finished, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finished.cancel()
    stopped.cancel()
    summary = await aggregator.stop(grace=args.grace)
    emit("closed", **summary, max_rss_kib=peak_rss_kib())
    if summary["write_errors"]:
        log.error("%d batch(es) could not be written; see the errors above",
                  summary["write_errors"])
        return 1
    return 0


def _on_signal(signum: int, stop: asyncio.Event) -> None:
    if stop.is_set():
        log.warning("Already stopping; waiting for the files to be closed")
        return
    log.info("Received %s: stopping", signal.Signals(signum).name)
    stop.set()


def _tune_gc() -> None:
    """Flow records are lists of atoms with no reference cycles, yet each batch allocates
    thousands of containers, which makes the default cyclic collector run (and re-scan the
    queued batches) hundreds of times a second.  Fewer, larger generation-0 collections keep
    cycle collection for the event loop's own garbage at a fraction of the cost."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The files hold flows, DNS names and packets: readable by their owner only (0600, in
    # 0700 folders), whoever started this process and whatever its umask was.
    os.umask(0o077)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token = os.environ.get(args.token_env, "")
    try:
        if not token:
            raise UsageError(f"the capture token is not set: export it in ${args.token_env} "
                             "(it is not taken on the command line, where ps would show it)")
        if args.user is not None:
            args.user = parse_user(args.user)
        _tune_gc()
        return asyncio.run(run(args, token))
    except NetobservError as exc:
        print(f"netobserv aggregator: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # a signal before the handlers were installed
        return 130


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
