"""Everything `netobserv flows --lab` shows: a lab whose traffic feeds every view.

On top of :class:`~.traffic.LabTraffic` (HTTP, UDP, ICMP), the demo runs a DNS server in the
last pod that the first pod queries every round for a name that exists, one that does not
(NXDOMAIN) and one whose answer comes :data:`SLOW_DNS_MS` late (the server asks a slow
server on its pod's loopback for it), and a firewall rule in the second pod that drops
connection attempts to one port, so the drops view has a kernel drop cause to show. All of
it lives inside the lab's namespaces and goes away with them.
"""

from __future__ import annotations

import logging
import subprocess
import threading

from ._proc import NsProcess, worker_argv
from ._service import Service
from .dns import LabDns, dig
from .topology import Lab
from .traffic import LabTraffic

log = logging.getLogger(__name__)

DROPPED_PORT = 8081
#: The name answered late, how late, and the port of the slow server on the DNS pod's
#: loopback.
SLOW_NAME = "slow.lab.test"
SLOW_DNS_MS = 60
SLOW_DNS_PORT = 5353


class LabDemo(Service):
    def __init__(self, lab: Lab, interval: float = 2.0) -> None:
        self.lab = lab
        self.interval = interval
        self.client = lab.pods[0]
        self.firewalled = lab.pods[1]
        self.dns: LabDns | None = None
        self.slow_dns: NsProcess | None = None
        self.traffic: LabTraffic | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0

    def start(self) -> LabDemo:
        try:
            self.traffic = LabTraffic(self.lab).start()
            server = self.lab.pods[-1]
            self.slow_dns = NsProcess(server.netns, worker_argv(
                "slow-dns", port=SLOW_DNS_PORT, delay_ms=SLOW_DNS_MS,
                answers={"4": server.v4, "6": server.v6}), label=f"slow DNS in {server.name}")
            self.slow_dns.expect("ready", 10)
            self.dns = LabDns(self.lab, server, forward={SLOW_NAME: SLOW_DNS_PORT})
            self.dns.start()
            subprocess.run(
                ["ip", "netns", "exec", self.firewalled.netns, "iptables", "-A", "INPUT",
                 "-p", "tcp", "--dport", str(DROPPED_PORT), "-j", "DROP"],
                check=True, capture_output=True,
            )  # fmt: skip
            self._thread = threading.Thread(target=self._loop, name="lab-demo", daemon=True)
            self._thread.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _loop(self) -> None:
        server = self.lab.pods[-1]
        names = ("web.lab.test", "missing.lab.test", SLOW_NAME)
        while not self._stop.wait(self.interval):
            try:
                for name in names:
                    dig(self.lab, self.client, server, name,
                        family=4 if self.rounds % 2 == 0 else 6)
                subprocess.run(
                    ["ip", "netns", "exec", self.client.netns, "python3", "-c",
                     "import socket; s = socket.socket(); s.settimeout(0.5)\n"
                     f"try: s.connect(('{self.firewalled.v4}', {DROPPED_PORT}))\n"
                     "except OSError: pass"],
                    capture_output=True, timeout=5,
                )  # fmt: skip
                self.rounds += 1
            except Exception as exc:  # a demo hiccup must not end the capture
                log.warning("Lab demo traffic failed once: %s.", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.dns is not None:
            self.dns.stop()
        if self.slow_dns is not None:
            self.slow_dns.stop()
        if self.traffic is not None:
            self.traffic.stop()
