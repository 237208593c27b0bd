"""Datapath benchmark: iperf3 TCP across a lab veth with no agent, with a flows-only capture,
and with every feature on (drops, DNS, RTT/retransmits/resets).

Rounds alternate (baseline, flows, all, baseline, ...) so that drift on the machine affects
every mode alike; reports the median throughput of each and its ratio to the baseline.
Target: each capture keeps at least 0.97 of the baseline. Run as root.

    python tests/bench/bench_datapath.py [--rounds 6] [--seconds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from netobserv_tui.lab import Lab

READY_MARK = "Capturing flows on"


def iperf(lab: Lab, seconds: float) -> float:
    client, server = lab.pod("pod-a"), lab.pod("pod-b")
    srv = subprocess.Popen(
        ["ip", "netns", "exec", server.netns, "iperf3", "-s", "-1", "-B", server.v4],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            out = subprocess.run(
                ["ip", "netns", "exec", client.netns, "iperf3", "-c", server.v4, "-t",
                 str(seconds), "-J"], capture_output=True, text=True,
            )
            result = json.loads(out.stdout) if out.stdout.strip().startswith("{") else {}
            if out.returncode == 0 and "sum_received" in result.get("end", {}):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"iperf3 failed: {out.stdout[-500:]} {out.stderr[-500:]}")
            time.sleep(0.2)  # the server is not listening yet
        return float(result["end"]["sum_received"]["bits_per_second"])
    finally:
        srv.kill()
        srv.wait()


class Capture:
    def __init__(self, output: Path, extra: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "netobserv_tui", "flows", "--local", "--no-tui",
             "--interfaces=nobs-*", "--output", str(output), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stderr
        for line in self.proc.stderr:
            if READY_MARK in line:
                break
        else:
            raise SystemExit("the capture did not start")

    def stop(self) -> None:
        self.proc.send_signal(2)
        self.proc.communicate(timeout=120)


MODES: dict[str, list[str] | None] = {
    "no agent": None,
    "flows only": [],
    "all features": ["--enable_all=true"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=4)
    args = parser.parse_args()
    results: dict[str, list[float]] = {mode: [] for mode in MODES}
    with Lab(2) as lab, tempfile.TemporaryDirectory() as tmp:
        iperf(lab, 1)  # warm up
        for _ in range(args.rounds):
            for mode, extra in MODES.items():
                if extra is None:
                    results[mode].append(iperf(lab, args.seconds))
                    continue
                cap = Capture(Path(tmp), extra)
                try:
                    results[mode].append(iperf(lab, args.seconds))
                finally:
                    cap.stop()
    base = statistics.median(results["no agent"])
    summary = {}
    for mode, values in results.items():
        median = statistics.median(values)
        summary[mode] = {"bps": values, "median_bps": median, "ratio": round(median / base, 4)}
        print(f"datapath {mode:>13}: {median / 1e9:6.2f} Gbit/s, ratio {median / base:.3f}")
    worst = min(v["ratio"] for v in summary.values())
    print(json.dumps({"bench": "datapath", "modes": summary, "target_met": worst >= 0.97}))


if __name__ == "__main__":
    main()
