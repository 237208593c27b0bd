"""The node agent: load the flow program, follow interfaces, evict, export, always detach.

Run as ``python -m netobserv_tui.agent --aggregator HOST:PORT`` with the capture token in
the environment (``NETOBSERV_TOKEN``). It prints one JSON line to stdout when it is
attached (``{"event": "ready", ...}``) and one when it is done (``{"event": "done", ...}``);
logs go to stderr. SIGTERM and SIGINT end it the same way: take the programs off every
interface first (so nothing is counted after), drain the last partial interval, deliver it,
then exit.

With ``--workload-filter`` (``WORKLOAD_FILTER=1``) the kernel counts only packets with an end
in the address set the aggregator sends in WORKLOAD frames; until the first one, nothing.

Threads: there is one. The exporter handles frames from the aggregator inside ``connect()``
and ``pump()``, which only this loop calls, between evictions; so a WORKLOAD frame updates
the kernel map (``FlowProgram.set_workload``) while no drain runs, and the classifiers see
each address appear or go at once (hash map updates are atomic per entry).
"""

from __future__ import annotations

import argparse
import ctypes as ct
import json
import logging
import math
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TextIO

from .. import __version__
from ..model.errors import KernelError, NetobservError
from ..model.memory import peak_rss_kib
from ..model.units import parse_duration
from . import kernel
from .bpf import FlowProgram
from .exporter import Exporter, TokenRejected
from .features import ALL_FEATURES, PKTDROP, FeatureSet, Joiner, collect_tables
from .interfaces import LinkWatcher, Selector
from .records import FLOW_ID, ROW_COLUMNS, InterfaceLinker, RowBuilder, merge_overflow
from .tc import TcAttacher, cleanup_leftovers

log = logging.getLogger(__name__)

#: Entries of each feature map (drops, TCP events, DNS); see ebpf/kernel_events.h.
EVENT_MAX_FLOWS = 16384


#: Packet capture: the ring is read at most this often (seconds). Each read becomes one
#: PACKETS batch, and each batch costs both ends a fixed amount (a frame, an ACK, a write):
#: read on every wakeup, 200k packets/s came in batches of a few dozen and cost the agent
#: and the aggregator three times the CPU. The default 8 MiB ring holds 150 ms of
#: 266-byte packets at 200k/s and 65 ms of 1 Gbit/s, well over this.
PACKET_READ_INTERVAL = 0.02


@dataclass
class AgentConfig:
    aggregator: tuple[str, int]
    token: str
    selector: Selector = field(default_factory=Selector)
    max_flows: int = 100_000
    interval: float = 1.0
    agent_ip: str | None = None
    connect_timeout: float = 30.0
    finish_timeout: float = 30.0
    features: FeatureSet = field(default_factory=FeatureSet)
    sampling: int = 0
    #: Extra -D switches for flows.c from the filter rules (see model/filters.py).
    filter_defines: dict[str, int | str | None] = field(default_factory=dict)
    #: Packed rules to write into the filter_rules map after loading.
    filter_rules: list[bytes] = field(default_factory=list)
    #: Count only flows with an end in the aggregator's WORKLOAD set (ebpf/workload.h).
    workload: bool = False
    #: Packet capture: copy every counted packet (its first ``snaplen`` bytes) and send it.
    packets: bool = False
    snaplen: int = 65535
    #: Pages of the kernel's packet ring buffer (a power of two; None: 2048, 8 MiB).
    packet_ring_pages: int | None = None


@dataclass
class AgentStats:
    evictions: int = 0
    evicted_flows: int = 0
    overflow_flows: int = 0
    last_eviction_ms: float = 0.0
    interfaces: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.stats = AgentStats()
        self._stop = False
        self._overflow: dict[bytes, list[Any]] = {}
        self._join: Joiner | None = None
        #: Which interface counts first for each flow seen on several (see records.py).
        self._linker = InterfaceLinker()
        #: Where the current eviction window began, epoch ms (None before the first).
        self._window_start_ms: int | None = None
        #: The loaded program while its classifiers may run; None before and after.
        self._prog: FlowProgram | None = None
        #: A WORKLOAD set that arrived before the program was loaded (it comes with WELCOME).
        self._workload_pending: list[str] | None = None
        #: Kernel header trees to try, best first, and the one the program was built with.
        self._headers: list[kernel.Headers] = []
        self.headers: kernel.Headers | None = None

    def request_stop(self, *_args: object) -> None:
        self._stop = True

    # -- pieces -------------------------------------------------------------------------

    def _sync_links(self, watcher: LinkWatcher, attacher: TcAttacher) -> None:
        appeared, vanished = watcher.refresh()
        for ifindex in vanished:
            attacher.forget(ifindex)
        for ifindex, name in appeared.items():
            if self.config.selector.wants(name):
                attacher.attach(ifindex, name, l3=ifindex in watcher.l3)
        self.stats.interfaces = len(attacher.attached)

    def _evict(self, prog: FlowProgram, builder: RowBuilder, exporter: Exporter,
               last: bool = False) -> int:
        self._collect_overflow(prog)
        drained = prog.drain()
        now_ms = time.time_ns() // 1_000_000
        window = (self._window_start_ms or now_ms, now_ms)
        self._window_start_ms = now_ms
        features = self.config.features
        tables = (
            collect_tables(prog.bpf, features, EVENT_MAX_FLOWS, _drain_dns)
            if features.on
            else {}
        )
        offset = time.time_ns() - time.monotonic_ns()
        rows = list(builder.rows(drained.keys, drained.values, offset))
        overflow, self._overflow = self._overflow, {}
        for key, value in overflow.items():
            rows.append(builder.row(FLOW_ID.unpack(key), tuple(value), offset))
        # Every row's key, in row order: the drained ones, then overflow's.
        keys = b"".join([drained.keys.tobytes(), *overflow])
        self._linker.link(rows, keys)  # before the join: rows of its own keep one interface
        if tables or features.only_drops:
            joiner = self._joiner(builder)
            joiner.own = frozenset([exporter.peer]) if exporter.peer else frozenset()
            rows = joiner.join(keys, FLOW_ID.size, rows, tables, window)
            if last:
                rows += joiner.flush(window)
        self.stats.evictions += 1
        self.stats.evicted_flows += drained.count
        self.stats.overflow_flows += len(overflow)
        self.stats.last_eviction_ms = drained.seconds * 1000
        if rows:
            exporter.submit(self._columns, rows)
        counters = prog.counters()
        extra: dict[str, Any] = {"workload_ips": prog.workload_ips} if prog.workload else {}
        if "dns" in features.on:
            extra["dns_map_full"] = _dns_counters(prog.bpf)["dns_flows_full"]
        if self._join is not None:
            extra["drops_excluded"] = self._join.excluded_drops
            extra["own_events_excluded"] = self._join.excluded_own
        if prog.packet_ring is not None:
            extra.update({"packets_lost": counters["packets_lost"],
                             "export_lost_packets": exporter.lost_packets,
                             "sent_packets": exporter.sent_packets})
        exporter.send_stats(
            {
                **extra,
                "evictions": self.stats.evictions,
                "evicted_flows": self.stats.evicted_flows,
                "overflow_flows": self.stats.overflow_flows,
                "map_full_packets": counters["map_full"],
                "overflow_lost_packets": counters["overflow_lost"],
                "event_map_full": counters["events_full"],
                "export_lost_flows": exporter.lost_rows,
                "interfaces": self.stats.interfaces,
                "last_eviction_ms": round(self.stats.last_eviction_ms, 3),
            }
        )
        if counters["map_full"]:
            log.warning(
                "The flow map (%d entries) was full: %d packets went through the overflow "
                "ring, %d of them lost; raise --cache-max-flows or shorten the eviction "
                "interval.",
                self.config.max_flows,
                counters["map_full"],
                counters["overflow_lost"],
            )
        return len(rows)

    @staticmethod
    def _send_packets(prog: FlowProgram, exporter: Exporter) -> None:
        """Hand the packets the kernel copied so far to the exporter (packet capture)."""
        if prog.packet_ring is not None:
            captured = prog.packet_ring.take_captured()
            if captured.chunks:
                exporter.submit_packets(captured)

    def _on_workload(self, ips: list[str]) -> None:
        """The exporter's WORKLOAD callback (on this thread, see the module docstring)."""
        prog = self._prog
        if prog is None:
            self._workload_pending = ips
            return
        try:
            added, removed = prog.set_workload(ips)
        except Exception as exc:  # BCC raises plain Exception for a failed map update
            log.error("Could not apply the workload set (%d addresses): %s; the kernel holds "
                      "%d of them.", len(ips), exc, prog.workload_ips)
            return
        if prog.workload_ips:
            log.info("Workload set: %d addresses (%d added, %d removed).",
                     prog.workload_ips, added, removed)
        else:
            log.warning("The workload set is empty: nothing is captured until it changes.")

    def _joiner(self, builder: RowBuilder) -> Joiner:
        if self._join is None or self._join.agent_ip != builder.agent_ip:
            self._join = Joiner(ROW_COLUMNS, self.config.features, builder.agent_ip,
                                ifname=builder.ifname, wants=self.config.selector.wants)
        return self._join

    @property
    def _columns(self) -> tuple[str, ...]:
        return ROW_COLUMNS + self.config.features.columns()

    def _load(self) -> FlowProgram:
        """Load with the best kernel header tree that compiles the program: when one cannot,
        say so and try the next (a node's old or broken headers, then the image's)."""
        features = self.config.features
        features.detect()
        if not self._headers:  # BCC finds headers itself (prepare_bcc was not called)
            return self._load_features()
        detected_off = dict(features.off)
        first_error: KernelError | None = None
        for index, headers in enumerate(self._headers):
            if index:
                headers.prepare()
                log.info("Kernel headers for BCC: %s.", headers.describe())
            try:
                prog = self._load_features()
            except KernelError as exc:
                first_error = first_error or exc
                features.off.clear()
                features.off.update(detected_off)
                if index + 1 < len(self._headers):
                    log.warning("Kernel headers %s could not build the flow program (%s); "
                                "trying the next header tree.", headers.detail,
                                exc.__cause__ or exc)
                continue
            self.headers = headers
            return prog
        assert first_error is not None
        raise first_error

    def _load_features(self) -> FlowProgram:
        """Load with every enabled feature; a feature that cannot load is switched off."""
        features = self.config.features
        base = {**self.config.filter_defines, "SAMPLING": self.config.sampling}
        try:
            return self._program({**base, **features.defines()})
        except KernelError:
            if not features.on:
                raise
        # Without any feature the program must load, or the trouble is not a feature's
        # (headers, verifier): then this raises.
        self._program({**base, **features.defines(())}).close()
        for feature in features.on:
            try:
                self._program({**base, **features.defines([feature])}).close()
            except KernelError as exc:
                features.off[feature] = f"its hooks did not load ({exc.__cause__ or exc})"
        return self._program({**base, **features.defines()})

    def _program(self, defines: dict[str, int | str | None]) -> FlowProgram:
        prog = FlowProgram(
            max_flows=self.config.max_flows, defines=defines, workload=self.config.workload,
            packets=self.config.packets, snaplen=self.config.snaplen,
            packet_ring_pages=self.config.packet_ring_pages,
        ).load()
        if self.config.filter_rules:
            table = prog.bpf[b"filter_rules"]
            for index, rule in enumerate(self.config.filter_rules):
                table[ct.c_int(index)] = table.Leaf.from_buffer_copy(rule)
        return prog

    def _collect_overflow(self, prog: FlowProgram) -> None:
        records = prog.take_overflow()
        if records:
            merge_overflow(self._overflow, records)

    # -- lifecycle ----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        kernel.check_privileges()
        self._headers = kernel.prepare_bcc()
        leftovers = cleanup_leftovers()
        if leftovers:
            log.warning("Removed leftovers of an earlier agent: %s.", ", ".join(leftovers))
        host, port = self.config.aggregator
        watcher = LinkWatcher()
        agent_ip = self.config.agent_ip or watcher.primary_ip()
        # In a pod, the Service's address from the environment comes first: no DNS needed.
        service = service_address(host, port, os.environ)
        first, fallbacks = (service, [(host, port)]) if service else ((host, port), [])
        exporter = Exporter(
            *first,
            self.config.token,
            {"ip": agent_ip, "hostname": socket.gethostname(), "version": __version__},
            fallbacks=fallbacks,
        )
        if self.config.workload:
            # Set before connecting: the first set comes right after WELCOME.
            exporter.on_workload = self._on_workload
        self._connect(exporter)
        with self._load() as prog:
            for feature, why in self.config.features.off.items():
                log.warning("Feature %s is off: %s.", feature, why)
            if prog.packet_ring is not None:
                prog.packet_ring.ifname = watcher.name
            attacher = TcAttacher(prog.fds["nobs_tc_ingress"], prog.fds["nobs_tc_egress"],
                                  (prog.fds["nobs_tc_ingress_l3"], prog.fds["nobs_tc_egress_l3"]))
            try:
                if self.config.workload:
                    self._prog = prog
                    pending, self._workload_pending = self._workload_pending, None
                    if pending is not None:
                        self._on_workload(pending)
                    else:
                        log.warning("Workload filter on: nothing is captured until the "
                                    "aggregator sends the workload's addresses.")
                self._sync_links(watcher, attacher)
                builder = RowBuilder(
                    agent_ip, watcher.name, watcher.local_addrs.__contains__,
                    sampling=self.config.sampling,
                )
                _emit(
                    {
                        "event": "ready",
                        "pid": os.getpid(),
                        "interfaces": sorted(attacher.attached.values()),
                        "features": self.config.features.status(),
                        "workload": self.config.workload,
                        "kernel_headers": self.headers.as_dict() if self.headers else None,
                    }
                )
                self._loop(prog, watcher, attacher, builder, exporter)
            finally:
                # Detach first: nothing is counted after this, so the drain below is final.
                attacher.close()
                self._prog = None  # WORKLOAD frames from now on change nothing
            builder.is_local = watcher.local_addrs.__contains__
            self._send_packets(prog, exporter)
            self._evict(prog, builder, exporter, last=True)
        delivered = exporter.finish(self.config.finish_timeout)
        watcher.close()
        summary = {
            "event": "done",
            "delivered": delivered,
            "flows": exporter.acked_rows,
            "lost_flows": exporter.lost_rows,
            "packets": exporter.acked_packets,
            "lost_packets": exporter.lost_packets,
            "evictions": self.stats.evictions,
            "max_rss_kib": peak_rss_kib(),
        }
        _emit(summary)
        return summary

    def _connect(self, exporter: Exporter) -> None:
        deadline = time.monotonic() + self.config.connect_timeout
        while True:
            try:
                exporter.connect()
                return
            except TokenRejected:
                raise
            except OSError as exc:
                left = deadline - time.monotonic()
                if self._stop or left < 0:
                    raise NetobservError(
                        f"cannot reach the aggregator ({exc}); check that it runs and that "
                        "the address is right (on a cluster: the aggregator's Service, "
                        "NetworkPolicies, and cluster DNS if the address is a name)"
                    ) from None
                exporter.warn_unreachable(exc, f"trying again for {left:.0f} s")
                time.sleep(0.5)

    def _loop(
        self,
        prog: FlowProgram,
        watcher: LinkWatcher,
        attacher: TcAttacher,
        builder: RowBuilder,
        exporter: Exporter,
    ) -> None:
        interval = self.config.interval
        next_evict = time.monotonic() + interval
        # With packet capture the loop also wakes when the kernel's packet ring has records
        # (at most every PACKET_READ_INTERVAL): at 200k packets/s an 8 MiB ring fills in
        # about 150 ms, so a fixed 100 ms sleep (plus an eviction) lost packets.
        waits: list[Any] = [watcher]
        if prog.packet_ring is not None:
            waits.append(prog.packet_ring)
        # Packets that find the flow map full come in bursts through the overflow ring:
        # read it as they land too, not only every 100 ms.
        if (overflow := prog.overflow_fileno()) >= 0:
            waits.append(overflow)
        # Between two reads of the packet ring, wait on everything else (without a ring:
        # never a packet read, never a shorter timeout).
        resting = [w for w in waits if w is not prog.packet_ring]
        next_take = 0.0 if prog.packet_ring is not None else math.inf
        while not self._stop:
            now = time.monotonic()
            timeout = max(0.0, min(0.1, next_evict - now))
            # Also wake when the aggregator's socket takes more of what waits to be sent.
            writes = [exporter] if exporter.wants_write else []
            ready = waits
            if now < next_take:  # the packet ring waits for its next read
                ready = resting
                timeout = min(timeout, next_take - now)
            try:
                readable, _, _ = select.select(ready, writes, [], timeout)
            except InterruptedError:
                readable = []
            if watcher in readable and watcher.drain_events():
                self._sync_links(watcher, attacher)
                builder.is_local = watcher.local_addrs.__contains__
            self._collect_overflow(prog)
            now = time.monotonic()
            if now >= next_take:
                self._send_packets(prog, exporter)
                next_take = now + PACKET_READ_INTERVAL
            if now >= next_evict:
                self._evict(prog, builder, exporter)
                watcher.forget_departed()
                next_evict = max(next_evict + interval, now + interval / 2)
            exporter.pump(0.0)


def _dns_counters(bpf: Any) -> dict[str, int]:
    from .dns import dns_counters

    return dns_counters(bpf)


def _drain_dns(bpf: Any) -> dict[bytes, dict[str, Any]]:
    from .dns import drain_dns  # written with ebpf/dns.h

    result: dict[bytes, dict[str, Any]] = drain_dns(bpf)
    return result


#: Where the JSON events go: stdout, or its private copy once ``_claim_stdout`` ran.
_events: TextIO | None = None


def _emit(event: dict[str, Any]) -> None:
    out = _events or sys.stdout
    out.write(json.dumps(event) + "\n")
    out.flush()


def _claim_stdout() -> None:
    """Keep standard output for the JSON events alone. BCC's C++ code prints some messages
    (such as "Unable to find kernel headers") on file descriptor 1, which would corrupt
    them: fd 1 becomes a copy of stderr, and events go to a private copy of the original."""
    global _events
    sys.stdout.flush()
    _events = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)


def service_address(host: str, port: int,
                    environ: Mapping[str, str]) -> tuple[str, int] | None:
    """The ClusterIP and port of the Service that ``host`` names (``<service>.<namespace>
    .svc[...]``), from the variables the kubelet sets in pods created after the Service
    (``<SERVICE>_SERVICE_HOST``/``_PORT``); None when ``host`` is no such name or the
    variables are not set. An agent that uses it needs no cluster DNS."""
    labels = host.split(".")
    if len(labels) < 3 or labels[2] != "svc" or not labels[0]:
        return None
    prefix = labels[0].upper().replace("-", "_")
    address = environ.get(f"{prefix}_SERVICE_HOST", "").strip()
    if not address:
        return None
    try:
        service_port = int(environ.get(f"{prefix}_SERVICE_PORT", port))
    except ValueError:
        service_port = port
    return address, service_port


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="python -m netobserv_tui.agent",
        description="Node agent: capture flows with eBPF and push them to the aggregator. "
        "The capture token is read from $NETOBSERV_TOKEN.",
    )
    p.add_argument("--aggregator", type=_address, default=env("NETOBSERV_AGGREGATOR"),
                   required=env("NETOBSERV_AGGREGATOR") is None, help="HOST:PORT of the aggregator")
    # A pod passes them as INTERFACES / EXCLUDE_INTERFACES (comma-separated), like the
    # other settings; flags add to them.
    p.add_argument("--interfaces", action="append",
                   default=[v] if (v := env("INTERFACES")) else [],
                   help="only these interfaces (names or patterns, comma-separated)")
    p.add_argument("--exclude_interfaces", "--exclude-interfaces", action="append",
                   default=[v] if (v := env("EXCLUDE_INTERFACES")) else [],
                   help="skip these interfaces (default: lo)")
    p.add_argument("--cache-max-flows", type=int, default=int(env("CACHE_MAX_FLOWS", "100000")),
                   help="size of the kernel flow map (default 100000)")
    p.add_argument("--cache-active-timeout", default=env("CACHE_ACTIVE_TIMEOUT", "1s"),
                   help="eviction interval (default 1s)")
    p.add_argument("--agent-ip", default=env("AGENT_IP"), help="address reported as AgentIP")
    p.add_argument("--features", default=env("FEATURES", ""),
                   help="comma-separated: pktdrop, dns, rtt (RTT, retransmits, resets)")
    p.add_argument("--dns-port", type=int, default=int(env("DNS_TRACKING_PORT", "53")))
    p.add_argument("--sampling", type=int, default=int(env("SAMPLING", "0")))
    p.add_argument("--filters", default=env("FLOW_FILTER_RULES"),
                   help="filter rules as JSON (made by `netobserv flows`)")
    p.add_argument("--workload-filter", action="store_true",
                   default=env("WORKLOAD_FILTER", "").strip().lower() in ("1", "true"),
                   help="count only flows with an end in the address set the aggregator "
                        "sends (WORKLOAD frames); nothing until the first set")
    p.add_argument("--packets", action="store_true",
                   default=env("PACKETS", "").strip().lower() in ("1", "true"),
                   help="packet capture: also copy every packet counted and send it")
    p.add_argument("--snaplen", type=int, default=int(env("SNAPLEN", "65535")),
                   help="with --packets: bytes kept of each packet, 1 to 65535 (default)")
    p.add_argument("--packet-ring-pages", type=int,
                   default=int(v) if (v := env("PACKET_RING_PAGES")) else None,
                   help="with --packets: pages of the kernel's packet ring buffer, a power "
                        "of two (default 2048: 8 MiB); what does not fit is counted as lost")
    p.add_argument("--print-c", action="store_true", help="print the eBPF C source and exit")
    p.add_argument("--log-level", default=env("LOG_LEVEL", "info"))
    return p


def filter_setup(
    rules_json: str | None, features: FeatureSet
) -> tuple[dict[str, int | str | None], list[bytes], int]:
    """-D switches, packed rules and the sampling rate from the controller's filter JSON."""
    if not rules_json:
        return {}, [], 0
    from ..model.filters import FilterSet
    from .filter_rules import defines, pack_rules

    filters = FilterSet.from_json(rules_json)
    if filters.needs_drops:
        # --drops rules can only match in the drop hook: turn it on.
        if PKTDROP not in features.requested:
            features.requested = (*features.requested, PKTDROP)
        features.only_drops = True
    return defines(filters), pack_rules(filters) if filters.enabled else [], filters.sampling


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s agent %(levelname)s %(message)s",
    )
    if args.print_c:
        prog = FlowProgram(max_flows=args.cache_max_flows, workload=args.workload_filter)
        print("// cflags: " + " ".join(prog.cflags))
        print(prog.source())
        return 0
    token = os.environ.get("NETOBSERV_TOKEN")
    if not token:
        print("error: set the capture token in $NETOBSERV_TOKEN", file=sys.stderr)
        return 2
    _claim_stdout()
    try:
        features = FeatureSet(
            requested=tuple(f for f in args.features.split(",") if f),
            dns_port=args.dns_port,
        )
        unknown = set(features.requested) - set(ALL_FEATURES)
        if unknown:
            print(f"error: unknown feature(s) {', '.join(sorted(unknown))}; use "
                  f"{', '.join(ALL_FEATURES)}", file=sys.stderr)
            return 2
        filter_defines, filter_rules, sampling = filter_setup(args.filters, features)
        config = AgentConfig(
            aggregator=args.aggregator,
            token=token,
            selector=Selector.from_flags(args.interfaces, args.exclude_interfaces),
            max_flows=args.cache_max_flows,
            interval=parse_duration(args.cache_active_timeout, "--cache-active-timeout"),
            agent_ip=args.agent_ip,
            features=features,
            sampling=sampling or args.sampling,
            filter_defines=filter_defines,
            filter_rules=filter_rules,
            workload=args.workload_filter,
            packets=args.packets,
            snaplen=args.snaplen,
            packet_ring_pages=args.packet_ring_pages,
        )
        if not 0 < args.snaplen <= 65535:
            print(f"error: --snaplen {args.snaplen}: use 1 to 65535", file=sys.stderr)
            return 2
        pages = args.packet_ring_pages
        if pages is not None and (pages < 1 or pages & (pages - 1)):
            print(f"error: --packet-ring-pages {pages}: use a power of two such as 2048",
                  file=sys.stderr)
            return 2
        agent = Agent(config)

        def _on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("Received %s: stopping.", signal.Signals(signum).name)
            agent.request_stop()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        summary = agent.run()
    except NetobservError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0 if summary["delivered"] else 1
