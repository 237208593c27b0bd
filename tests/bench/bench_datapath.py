"""Datapath benchmark: iperf3 TCP across a lab veth, without and with a running capture.

Runs alternate (baseline, capture, baseline, capture, ...) so that drift on the machine
affects both sides alike; reports the median throughput of each and their ratio.
Target: the capture keeps at least 0.97 of the baseline. Run as root.

    python tests/bench/bench_datapath.py [--rounds 3] [--seconds 5]
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    base: list[float] = []
    captured: list[float] = []
    with Lab(2) as lab, tempfile.TemporaryDirectory() as tmp:
        iperf(lab, 1)  # warm up
        for _ in range(args.rounds):
            base.append(iperf(lab, args.seconds))
            cap = Capture(Path(tmp), [])
            try:
                captured.append(iperf(lab, args.seconds))
            finally:
                cap.stop()
    b, c = statistics.median(base), statistics.median(captured)
    ratio = c / b
    print(f"datapath: no agent {b / 1e9:.2f} Gbit/s, flows capture {c / 1e9:.2f} Gbit/s, "
          f"ratio {ratio:.3f} (target >= 0.97)")
    print(json.dumps({"bench": "datapath", "baseline_bps": base, "capture_bps": captured,
                      "ratio": round(ratio, 4), "target_met": ratio >= 0.97}))


if __name__ == "__main__":
    main()
