"""``python -m netobserv_tui.aggregator``: run one capture's aggregator until SIGTERM/SIGINT,
or until a FINISH session (see :mod:`..model.protocol`) has taken the closed files away.

stdout carries exactly two JSON lines for the process that started us (the capture
lifecycle), each flushed at once::

    {"event": "ready", "host": H, "port": P, "capture": C, "files": {"json": J, "db": D}}
    {"event": "closed", "capture": C, "files": {...}, "flows": N, "bytes": N, ...}

Logs go to stderr.  The capture token is read from an environment variable, never from the
command line, where ``ps`` would show it to every user of the node.

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
from typing import Any

from ..model.errors import NetobservError, UsageError
from ..model.memory import peak_rss_kib
from .server import Aggregator

log = logging.getLogger("netobserv_tui.aggregator")


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (all interfaces) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9999 "
                         "(port 0 picks a free port)")
    host = host.removeprefix("[").removesuffix("]")
    return host or "0.0.0.0", int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m netobserv_tui.aggregator",
        description="Receive flow batches from netobserv-tui agents, write "
                    "<output>/flow/<UTC time>.json and .db, serve the live stream.")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT",
                        help="address to listen on; port 0 picks a free port")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="output directory; files go to DIR/flow/")
    parser.add_argument("--token-env", default="NETOBSERV_TOKEN", metavar="NAME",
                        help="environment variable holding the capture token "
                             "(default: NETOBSERV_TOKEN)")
    parser.add_argument("--grace", type=float, default=5.0, metavar="SECONDS",
                        help="on stop, how long to wait for agents to finish (default: 5)")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def emit(event: str, **fields: Any) -> None:
    """One JSON line on stdout, flushed: the parent process waits for it."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def run(args: argparse.Namespace, token: str) -> int:
    host, port = parse_listen(args.listen)
    aggregator = Aggregator(args.output, token, host=host, port=port)
    await aggregator.start()
    emit("ready", host=aggregator.host, port=aggregator.port, capture=aggregator.capture,
         files=aggregator.files)
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
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token = os.environ.get(args.token_env, "")
    try:
        if not token:
            raise UsageError(f"the capture token is not set: export it in ${args.token_env} "
                             "(it is not taken on the command line, where ps would show it)")
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
