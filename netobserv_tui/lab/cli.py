"""``netobserv lab up|down|status|traffic``: build, inspect and remove the lab from a shell.

The project's main CLI dispatches ``netobserv lab ...`` here (``main(argv)`` with the words
after ``lab``); ``python -m netobserv_tui.lab ...`` does the same.

Exit codes: 0 success (for ``status``: the lab is up), 1 a lab error (for ``status``: no lab,
or only part of one), 2 bad usage, 3 not root, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from ..model.errors import LabError, NetobservError, UsageError
from ._proc import require_root
from .topology import BRIDGE_NAME, DEFAULT_PODS, MAX_PODS, Lab, LabStatus, Pod, cleanup_all
from .topology import lab_status as _lab_status
from .traffic import LabTraffic

PROG = "netobserv lab"


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def _pod_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_PODS:
        raise argparse.ArgumentTypeError(f"a lab has 1 to {MAX_PODS} pods, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``netobserv lab`` (also used to generate the CLI reference)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Build a small lab of network-namespace 'pods' on a bridge (nobs-br0) with "
            "addresses in 198.18.0.0/24 and fd00:198:18::/64, so that every view has real "
            "traffic to show. Needs root."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")
    sub = parser.add_subparsers(dest="command", metavar="{up,down,status,traffic}")
    sub.required = True

    up = sub.add_parser("up", help="build the lab and leave it running")
    up.add_argument(
        "--pods", type=_pod_count, default=DEFAULT_PODS,
        help=f"number of pods, 1 to {MAX_PODS} (default {DEFAULT_PODS})",
    )  # fmt: skip
    up.add_argument(
        "--timeout", type=_positive_float, default=15.0,
        help="seconds to wait for the lab to become usable (default 15)",
    )  # fmt: skip
    up.add_argument("--json", action="store_true", help="print the lab as JSON")

    down = sub.add_parser("down", help="remove the lab and any leftovers of a crashed run")
    down.add_argument("--json", action="store_true", help="print what was removed as JSON")

    status = sub.add_parser("status", help="show what exists (exit 0 if the lab is up)")
    status.add_argument("--json", action="store_true", help="print the status as JSON")

    traffic = sub.add_parser(
        "traffic",
        help="send background traffic (HTTP, UDP, ping) between pods until Ctrl+C",
    )
    traffic.add_argument(
        "--duration", type=_positive_float, default=None,
        help="stop after this many seconds (default: run until Ctrl+C)",
    )  # fmt: skip
    traffic.add_argument(
        "--interval", type=_positive_float, default=1.0,
        help="seconds between rounds of requests (default 1)",
    )  # fmt: skip
    traffic.add_argument("--json", action="store_true", help="print the final counters as JSON")
    return parser


def _pod_table(pods: Sequence[Pod]) -> str:
    rows = [("POD", "NAMESPACE", "HOST IF (INDEX)", "IPV4", "IPV6", "MAC")]
    for pod in pods:
        rows.append(
            (
                pod.name,
                pod.netns,
                f"{pod.host_ifname} ({pod.host_ifindex})",
                f"{pod.v4}/24",
                f"{pod.v6}/64",
                pod.mac,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _cmd_up(args: argparse.Namespace) -> int:
    lab = Lab(args.pods, timeout=args.timeout, lock_timeout=5.0)
    lab.up()
    lab.release()  # the lab outlives this command; `netobserv lab down` removes it
    if args.json:
        _print_json(lab.status().to_dict())
    else:
        print(f"Lab up: {len(lab.pods)} pods on bridge {BRIDGE_NAME}.")
        print(_pod_table(lab.pods))
        print(
            "Run a command in a pod with `ip netns exec nobs-lab-pod-a <command>`; "
            "remove the lab with `netobserv lab down`."
        )
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    removed = cleanup_all()
    if args.json:
        _print_json({"removed": removed})
    elif removed:
        print(f"Removed {', '.join(removed)}.")
    else:
        print("No lab to remove.")
    return 0


def _print_status(status: LabStatus) -> None:
    if status.state == "absent":
        print("No lab exists. Build one with `netobserv lab up`.")
        return
    if status.state == "up":
        print(f"Lab up: {len(status.pods)} pods on bridge {status.bridge}.")
    else:
        print("Lab is incomplete (leftovers of a crashed run or a damaged lab):")
        for problem in status.problems:
            print(f"  - {problem}")
        print("Remove it with `netobserv lab down`, then build it again with `netobserv lab up`.")
    if status.pods:
        print(_pod_table(status.pods))


def _cmd_status(args: argparse.Namespace) -> int:
    status = _lab_status()
    if args.json:
        _print_json(status.to_dict())
    else:
        _print_status(status)
    return 0 if status.state == "up" else 1


def _cmd_traffic(args: argparse.Namespace) -> int:
    lab = Lab.attach()
    traffic = LabTraffic(lab, interval=args.interval)
    stats: dict[str, int] = {}
    with traffic:
        if not args.json:
            print(
                f"Sending traffic from {traffic.client_pod.name} (HTTP to "
                f"{traffic.http_pod.name}:{traffic.http_port}, UDP to "
                f"{traffic.udp_pod.name}:{traffic.udp_port}, ping to the other pods); "
                "Ctrl+C to stop.",
                flush=True,
            )
        deadline = None if args.duration is None else time.monotonic() + args.duration
        try:
            while deadline is None or time.monotonic() < deadline:
                traffic.check()
                left = 1.0 if deadline is None else deadline - time.monotonic()
                time.sleep(max(0.0, min(1.0, left)))
        except KeyboardInterrupt:
            pass
        stats = traffic.stop()
    if args.json:
        _print_json(stats)
    else:
        print(", ".join(f"{key} {value}" for key, value in stats.items()))
    return 0


_COMMANDS = {"up": _cmd_up, "down": _cmd_down, "status": _cmd_status, "traffic": _cmd_traffic}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``netobserv lab`` with ``argv`` (the words after ``lab``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse has printed the usage error or the help
        return int(exc.code) if isinstance(exc.code, int) else UsageError.exit_code
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        require_root()
        return _COMMANDS[args.command](args)
    except NetobservError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130


__all__ = ["LabError", "build_parser", "main"]
