"""Packet capture benchmark: the highest loss-free rate into a file, netobserv against tcpdump.

Both capture the same lab veth (pod-a's host end, ingress) in the same run, with the same
filter (UDP to one port), while trafgen (netsniff-ng's packet generator, C) sends a paced
burst of identical UDP frames from pod-a to pod-b. trafgen runs on the first CPU, where the
kernel also runs both tools' capture hooks (the veth delivers on the sender's CPU); each
tool's user space (tcpdump; netobserv's controller, agent and aggregator) is pinned to the
second CPU, so both get the same budget and neither slows the generator. For each rate of a
ladder, a tool passes when its file holds every frame sent (counted by tshark, never by the
tool; the veth's own counter must agree with trafgen's count); a tool's ladder ends at its
first loss. Rates alternate between the tools so that drift affects both alike. The rate
reported is the one trafgen reached; when it falls well short of the rate asked, trafgen
(one CPU) is the limit and the line says so. Also reports netobserv's agent and aggregator
CPU per 100k packets and their peak memory at its highest loss-free rate, and the same CPU
figure for tcpdump. Target: netobserv's loss-free rate >= 1.0x tcpdump's. Run as root, on a
machine with two CPUs or more.

    python tests/bench/bench_packets.py [--seconds 2] [--size 200]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from netobserv_tui.lab import Lab
from netobserv_tui.lab.traffic import iface_counters

RATES = (100_000, 200_000, 300_000, 400_000, 500_000, 600_000, 800_000, 1_000_000, 1_300_000)
#: The generator's CPU (and the capture hooks'), and the tools' user space CPU.
GENERATOR_CPU, TOOL_CPU = "0", "1"
PORT = 7301


def packets_in(path: Path) -> int:
    done = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.number"],
                          capture_output=True, text=True, timeout=300)
    return len(done.stdout.splitlines())


@dataclass
class Sent:
    sent: int
    seconds: float


def trafgen(lab: Lab, rate: int, count: int, size: int, work: Path) -> Sent:
    """``count`` UDP frames (``size`` payload bytes) from pod-a to pod-b at ``rate``
    frames/s, by trafgen on pod-a's eth0 (one CPU); their count is checked against the
    host-end veth's receive counter."""
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    conf = work / "udp.cfg"
    conf.write_text(
        f"{{ eth(da={b.mac}, sa={a.mac}, type=0x0800), ipv4(saddr={a.v4}, daddr={b.v4}, "
        f"ttl=64), udp(sp=40000, dp={PORT}), fill(0x00, {size}) }}\n")
    before = iface_counters(a.host_ifname)
    began = time.monotonic()
    subprocess.run(["taskset", "-c", GENERATOR_CPU, "ip", "netns", "exec", a.netns, "trafgen",
                    "--dev", a.ifname, "--conf",
                    str(conf), "--num", str(count), "--rate", f"{rate}pps", "--cpus", "1",
                    "--no-sock-mem"],
                   check=True, capture_output=True, timeout=count / rate + 60)
    took = time.monotonic() - began
    time.sleep(0.2)
    arrived = (iface_counters(a.host_ifname) - before).rx_packets
    if arrived < count:
        raise SystemExit(f"trafgen said {count} frames but the veth received {arrived}")
    return Sent(count, took)


def with_netobserv(lab: Lab, rate: int, count: int, size: int, out: Path) -> dict[str, float]:
    ifname = lab.pod("pod-a").host_ifname
    proc = subprocess.Popen(
        ["taskset", "-c", TOOL_CPU, sys.executable, "-m", "netobserv_tui", "packets",
         f"udp,{PORT}", "--local", "--no-tui",
         f"--interfaces={ifname}", "--output", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stderr is not None and proc.stdout is not None
    for line in proc.stderr:
        if "Capturing packets on" in line:
            break
    else:
        raise SystemExit("netobserv did not start")
    children = psutil.Process(proc.pid).children(recursive=True)
    before = {c.pid: sum(c.cpu_times()[:2]) for c in children}
    sent = trafgen(lab, rate, count, size, out)
    took = sent.seconds
    time.sleep(1.5)  # one eviction and a ring drain
    cpu = {}
    for c in children:
        name = "agent" if "netobserv_tui.agent" in " ".join(c.cmdline()) else "aggregator"
        cpu[name] = sum(c.cpu_times()[:2]) - before[c.pid]
    proc.send_signal(signal.SIGINT)
    err = proc.stderr.read()
    proc.wait(120)
    (path,) = (out / "pcap").glob("*.pcapng")
    peak = dict(re.findall(r"(agent|aggregator) (\d+) MiB", err))
    return {"sent": sent.sent, "got": packets_in(path), "pps": sent.sent / took,
            "agent_cpu": cpu.get("agent", 0.0),
            "aggregator_cpu": cpu.get("aggregator", 0.0),
            "agent_mib": float(peak.get("agent", 0)),
            "aggregator_mib": float(peak.get("aggregator", 0))}


def with_tcpdump(lab: Lab, rate: int, count: int, size: int, out: Path) -> dict[str, float]:
    ifname = lab.pod("pod-a").host_ifname
    path = out / "tcpdump.pcap"
    proc = subprocess.Popen(["taskset", "-c", TOOL_CPU, "tcpdump", "-i", ifname, "-Q", "in",
                             "-n", "-s", "0", "-w", str(path), "--time-stamp-precision=nano",
                             "udp", "dst", "port", str(PORT)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    proc.stderr.readline()  # "listening on ..."
    cpu_before = sum(psutil.Process(proc.pid).cpu_times()[:2])
    sent = trafgen(lab, rate, count, size, out)
    took = sent.seconds
    cpu = sum(psutil.Process(proc.pid).cpu_times()[:2]) - cpu_before
    # libpcap hands over a ring block when it is full or after its 1 s timeout; on SIGINT
    # tcpdump stops without reading a partly filled block, so wait out the timeout first.
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
    return {"sent": sent.sent, "got": packets_in(path), "pps": sent.sent / took, "cpu": cpu}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="burst length per rate")
    parser.add_argument("--size", type=int, default=200, help="UDP payload bytes")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (eBPF, TC, tcpdump)")
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs two CPUs: one for the generator, one for the tool measured")
    best = {"netobserv": 0, "tcpdump": 0}
    last: dict[str, float] = {}
    last_tcpdump: dict[str, float] = {}
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="nobs-bench-pk-") as tmp:
        lost: set[str] = set()
        for rate in RATES:
            if len(lost) == 2:
                break
            count = int(rate * args.seconds)
            short = 0  # tools for which trafgen fell short of this rate
            for tool, run in (("tcpdump", with_tcpdump), ("netobserv", with_netobserv)):
                if tool in lost:
                    continue
                out = Path(tmp) / f"{tool}-{rate}"
                out.mkdir()
                result = run(lab, rate, count, args.size, out)
                ok = result["got"] == result["sent"]
                achieved = int(result["pps"])
                limit = " (trafgen's limit)" if achieved < 0.9 * rate else ""
                short += bool(limit)
                print(f"{tool:9} asked {rate:>9,} pkt/s, sent {achieved:>9,} pkt/s{limit}: "
                      f"{int(result['got']):>9,} of {int(result['sent']):,} in the file "
                      f"{'ok' if ok else 'LOSS'}", flush=True)
                if not ok:
                    lost.add(tool)
                if ok and achieved > best[tool]:
                    best[tool] = achieved
                if tool == "netobserv" and ok:
                    last = {**result, "rate": achieved}
                if tool == "tcpdump" and ok:
                    last_tcpdump = result
            if short == 2:
                break  # higher rates would only measure the generator again
    def state(tool: str) -> str:
        return "lost at the next rate" if tool in lost else "never lost"

    print(f"loss-free rate: netobserv {best['netobserv']:,} pkt/s ({state('netobserv')}), "
          f"tcpdump {best['tcpdump']:,} pkt/s ({state('tcpdump')}), ratio "
          f"{best['netobserv'] / best['tcpdump'] if best['tcpdump'] else float('nan'):.2f}x "
          "(target >= 1.0x)")
    if not lost:
        print("neither tool lost a packet at any rate trafgen reached: both rates are the "
              "generator's (one CPU), not the tools' limits")
    if last:
        per = 100_000 / last["sent"]
        print(f"at {int(last['rate']):,} pkt/s: agent {last['agent_cpu'] * per:.2f} CPU-s and "
              f"aggregator {last['aggregator_cpu'] * per:.2f} CPU-s per 100k packets; peak "
              f"memory agent {last['agent_mib']:.0f} MiB, aggregator "
              f"{last['aggregator_mib']:.0f} MiB")
    if last_tcpdump:
        print(f"tcpdump: {last_tcpdump['cpu'] * 100_000 / last_tcpdump['sent']:.2f} CPU-s per "
              "100k packets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
