"""The workload filter (ebpf/workload.h): only flows with an end in the aggregator's set.

Two levels. The classifier on hand-built frames with BPF_PROG_TEST_RUN (as
test_filter_program.py does): what is counted for a given set, live updates, the interplay
with the filter rules, and the per-packet cost. Then end to end in the lab: the real agent
(``python -m netobserv_tui.agent`` with WORKLOAD_FILTER=1) talking to a small aggregator
written here that ACKs every batch and sends WORKLOAD frames when told to; ground truth comes
from the traffic generators and from an iptables counter.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from capture_helpers import our_tc_objects, totals
from test_filter_program import VERIFIER_LIMIT, Pkt, load_rules, prog_test_run, verified_insns

from netobserv_tui.agent.bpf import WORKLOAD_MAX_IPS, FlowProgram, workload_key
from netobserv_tui.agent.exporter import Exporter
from netobserv_tui.agent.filter_rules import defines as filter_defines
from netobserv_tui.aggregator.connection import AuthError, TokenCheck
from netobserv_tui.lab import Lab, Pod
from netobserv_tui.lab.traffic import udp_send
from netobserv_tui.model.errors import KernelError
from netobserv_tui.model.filters import MAX_RULES, FilterSet
from netobserv_tui.model.protocol import (
    HEADER_SIZE,
    FrameType,
    decode_header,
    decode_payload,
    encode,
)

pytestmark = pytest.mark.kernel

TOKEN = "workload-test-token"
A4, B4, C4, D4 = "10.0.0.1", "10.1.0.2", "10.2.0.3", "10.3.0.4"
A6, B6, C6, D6 = "fd00:a::1", "fd00:b::2", "fd00:c::3", "fd00:d::4"


# -- the classifier ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def prog(bcc_ready: None) -> Iterator[FlowProgram]:
    loaded = FlowProgram(max_flows=64, workload=True).load()
    try:
        yield loaded
    finally:
        loaded.close()


def recorded(prog: FlowProgram, packets: list[Pkt]) -> list[bool]:
    """For each packet, whether the classifier counted it (the map is drained between)."""
    names = ("nobs_tc_ingress", "nobs_tc_egress")
    prog.drain()
    out = []
    for pkt in packets:
        retval, _ = prog_test_run(prog.fds[names[pkt.direction]], pkt.frame())
        assert retval == 0, "the classifier must always return TC_ACT_OK"
        drained = prog.drain()
        assert drained.count <= 1
        out.append(drained.count == 1)
    return out


def check(prog: FlowProgram, expected: dict[Pkt, bool]) -> None:
    got = dict(zip(expected, recorded(prog, list(expected)), strict=True))
    wrong = {pkt: got[pkt] for pkt in expected if got[pkt] != expected[pkt]}
    assert not wrong, f"counted when it should not be, or the reverse: {wrong}"


def udp(src: str, dst: str, direction: int = 0) -> Pkt:
    return Pkt(src, dst, "udp", 40000, 7000, direction=direction)


def arp_frame() -> bytes:
    return (b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x06" +
            bytes.fromhex("0001080006040001") + b"\x02\x00\x00\x00\x00\x01" +
            bytes([10, 0, 0, 1]) + bytes(6) + bytes([10, 1, 0, 2]) + bytes(18))


def test_empty_set_counts_nothing(prog: FlowProgram) -> None:
    assert prog.set_workload([]) == (0, 0)
    check(prog, {udp(A4, B4): False, udp(B4, A4, 1): False, udp(A6, B6): False,
                 Pkt(A4, B4, "tcp", 1, 80): False, Pkt(A4, B4, "icmp"): False})


def test_either_end_in_the_set_is_counted(prog: FlowProgram) -> None:
    assert prog.set_workload([A4, A6]) == (2, 0)
    check(prog, {
        udp(A4, B4): True, udp(B4, A4): True, udp(B4, A4, 1): True, udp(C4, D4): False,
        udp(A6, B6): True, udp(B6, A6, 1): True, udp(C6, D6): False,
        Pkt(B4, A4, "tcp", 80, 40000): True, Pkt(A4, C4, "icmp"): True,
        Pkt(C6, D6, "icmpv6", icmp=(128, 0)): False,
        # The key is flow_id's layout: an IPv4 set entry is ::ffff:a.b.c.d, never fd00:a::1.
        udp(f"::ffff:{C4}", D6): False,
    })
    prog.set_workload([])


def test_non_ip_frames_are_never_counted(prog: FlowProgram) -> None:
    prog.set_workload([A4, B4])
    prog.drain()
    retval, _ = prog_test_run(prog.fds["nobs_tc_ingress"], arp_frame())
    assert retval == 0
    assert prog.drain().count == 0
    # Without the workload filter the same frame makes a flow.
    plain = FlowProgram(max_flows=64).load()
    try:
        prog_test_run(plain.fds["nobs_tc_ingress"], arp_frame())
        assert plain.drain().count == 1
    finally:
        plain.close()
    prog.set_workload([])


def test_live_update_without_reloading(prog: FlowProgram) -> None:
    fds = dict(prog.fds)
    assert prog.set_workload([A4, A6, B4]) == (3, 0)
    check(prog, {udp(A4, B4): True, udp(C4, D4): False, udp(A6, B6): True, udp(C6, D6): False})
    # A goes, C comes, B stays: only the difference is written.
    assert prog.set_workload([C4, C6, B4]) == (2, 2)
    assert prog.workload_ips == 3
    check(prog, {udp(A4, D4): False, udp(A6, B6): False, udp(C4, D4): True,
                 udp(D6, C6, 1): True, udp(A4, B4): True, udp(D4, A4): False})
    assert prog.set_workload([C4, C6, B4]) == (0, 0)
    assert prog.fds == fds
    keys = {bytes(k.ip) for k in prog.bpf[b"workload_ips"].keys()}
    assert keys == {workload_key(C4), workload_key(C6), workload_key(B4)}
    assert prog.set_workload([]) == (0, 3)
    assert list(prog.bpf[b"workload_ips"].keys()) == []
    check(prog, {udp(C4, D4): False})


def test_invalid_addresses_are_logged_and_skipped(
    prog: FlowProgram, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        added = prog.set_workload(["not-an-ip", A4, "", "::", "10.0.0.256", A4, f" {A6} ",
                                   f"::ffff:{A4}"])
    # A4 given three ways (and IPv4-mapped) is one key; A6 with spaces is fine.
    assert added == (2, 0)
    assert "invalid" in caplog.text and "not-an-ip" in caplog.text
    assert workload_key("::") is None and workload_key("0.0.0.0") is not None
    assert workload_key(f"::ffff:{A4}") == workload_key(A4) == bytes(10) + b"\xff\xff" + \
        bytes([10, 0, 0, 1])
    prog.set_workload([])


def test_the_filter_rules_still_apply(bcc_ready: None) -> None:
    filters, rest = FilterSet.parse(["--enable_filter=true", "--protocol=tcp"])
    assert rest == []
    prog = FlowProgram(max_flows=64, defines=filter_defines(filters), workload=True).load()
    try:
        load_rules(prog, filters)
        prog.set_workload([A4])
        check(prog, {Pkt(A4, B4, "tcp", 1, 80): True, Pkt(B4, A4, "tcp", 80, 1): True,
                     udp(A4, B4): False, Pkt(C4, D4, "tcp", 1, 80): False})
    finally:
        prog.close()


def test_a_full_set_is_replaced_by_another_full_set(bcc_ready: None) -> None:
    prog = FlowProgram(max_flows=64, workload=True, workload_max_ips=256).load()
    try:
        first = [f"10.9.0.{i}" for i in range(256)]
        second = [f"fd00:9::{i:x}" for i in range(256)]
        assert prog.set_workload(first) == (256, 0)
        assert prog.set_workload(second) == (256, 256)  # deletions first: it always fits
        check(prog, {udp("10.9.0.7", D4): False, udp(D6, "fd00:9::7"): True})
        assert prog.set_workload([*second, "fd00:9::1000", "fd00:9::1001"]) == (0, 0)
        assert prog.workload_ips == 256  # the two extra addresses are logged, not captured
    finally:
        prog.close()


def test_every_hook_compiles_and_verifies_with_the_workload(bcc_ready: None) -> None:
    """workload_has() on every parse path, with the largest rule set and every feature."""
    from netobserv_tui.agent.features import ALL_FEATURES, FeatureSet
    from netobserv_tui.model.filters import FilterRule

    features = FeatureSet(requested=ALL_FEATURES)
    features.detect()
    try:
        defines = features.defines()
    except KernelError as exc:
        pytest.skip(f"feature hooks unavailable: {exc}")
    filters = FilterSet(tuple(FilterRule() for _ in range(MAX_RULES)), 0, True)
    prog = FlowProgram(max_flows=64, defines={**defines, **filter_defines(filters)},
                       workload=True).load()
    try:
        for name in ("nobs_tc_ingress", "nobs_tc_egress"):
            count = verified_insns(prog.fds[name])
            assert count < VERIFIER_LIMIT // 4, f"{name}: {count} instructions verified"
        print(f"\nfeatures on: {features.on}; verified: "
              f"{verified_insns(prog.fds['nobs_tc_ingress'])} instructions")
    finally:
        prog.close()


def test_cost_per_packet(bcc_ready: None) -> None:
    """Printed, not asserted (run with -s): ns per packet of an existing IPv4 flow."""
    repeat = 100_000

    def cost(prog: FlowProgram, pkt: Pkt) -> int:
        prog.drain()
        fd = prog.fds["nobs_tc_ingress"]
        prog_test_run(fd, pkt.frame())  # the flow exists from now on
        return min(prog_test_run(fd, pkt.frame(), repeat)[1] for _ in range(3))

    plain = FlowProgram(max_flows=64).load()
    prog = FlowProgram(max_flows=64, workload=True).load()
    try:
        src_hit, dst_hit, miss = udp(A4, B4), udp(B4, A4), udp(C4, D4)
        lines = [("no workload filter (counted)", cost(plain, src_hit))]
        prog.set_workload([])
        lines.append(("0 entries (not counted)", cost(prog, miss)))
        prog.set_workload([A4])
        lines += [("1 entry, source matches (1 lookup)", cost(prog, src_hit)),
                  ("1 entry, destination matches (2 lookups)", cost(prog, dst_hit)),
                  ("1 entry, no match (not counted)", cost(prog, miss))]
        full = [A4, *(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
                      for i in range(1 << 20, (1 << 20) + WORKLOAD_MAX_IPS - 1))]
        started = time.perf_counter()
        assert prog.set_workload(full) == (WORKLOAD_MAX_IPS - 1, 0)
        fill_ms = (time.perf_counter() - started) * 1000
        lines += [(f"{WORKLOAD_MAX_IPS} entries, source matches", cost(prog, src_hit)),
                  (f"{WORKLOAD_MAX_IPS} entries, destination matches", cost(prog, dst_hit)),
                  (f"{WORKLOAD_MAX_IPS} entries, no match (not counted)", cost(prog, miss))]
        started = time.perf_counter()
        prog.set_workload([])
        clear_ms = (time.perf_counter() - started) * 1000
        print(f"\nns per packet, BPF_PROG_TEST_RUN x{repeat}, best of 3:")
        for label, ns in lines:
            print(f"  {label:<48} {ns:>5} ns")
        print(f"  set_workload: {WORKLOAD_MAX_IPS - 1} additions {fill_ms:.0f} ms, "
              f"{WORKLOAD_MAX_IPS} deletions {clear_ms:.0f} ms")
    finally:
        plain.close()
        prog.close()


# -- the exporter ------------------------------------------------------------------------

def test_exporter_delivers_workload_frames_even_with_welcome(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    got: list[list[str]] = []
    first_seen = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            _read_frame(conn)  # HELLO
            # WELCOME and the first set in one segment, as an aggregator may well send them.
            conn.sendall(encode(FrameType.WELCOME, {"capture": "c"}) +
                         encode(FrameType.WORKLOAD, {"ips": [A4, A6]}))
            first_seen.wait(10)  # the rest only once connect() has returned
            conn.sendall(encode(FrameType.WORKLOAD, {"ips": "10.0.0.1"}) +
                         encode(FrameType.WORKLOAD, {"ips": [A4, 5]}) +
                         encode(FrameType.WORKLOAD, {}) +
                         encode(FrameType.WORKLOAD, {"ips": [C4]}))
            _read_frame(conn)  # BYE

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    exporter = Exporter("127.0.0.1", server.getsockname()[1], TOKEN, {"ip": "x"})
    exporter.on_workload = got.append
    with caplog.at_level(logging.ERROR):
        exporter.connect()
        assert got == [[A4, A6]]
        first_seen.set()
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            exporter.pump(0.1)
    assert got == [[A4, A6], [C4]]
    assert caplog.text.count("WORKLOAD frame without a list of addresses") == 3
    assert exporter.finish(2)
    thread.join(5)
    server.close()


# -- end to end --------------------------------------------------------------------------

def _recv_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _read_frame(conn: socket.socket) -> tuple[FrameType, dict[str, Any]]:
    kind, length = decode_header(_recv_exact(conn, HEADER_SIZE))
    return kind, decode_payload(_recv_exact(conn, length))


class WorkloadAggregator:
    """Just enough of an aggregator for one agent: WELCOME followed by the current WORKLOAD
    set (none while ``ips`` is None), an ACK for every FLOWS batch (rows kept in memory), the
    latest STATS, and :meth:`send_workload` to change the set while the agent runs."""

    def __init__(self, ips: list[str] | None) -> None:
        self.ips = ips
        self.rows: list[dict[str, Any]] = []
        self.stats: dict[str, Any] = {}
        self.byes = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._conn: socket.socket | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _send(self, data: bytes) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.sendall(data)

    def send_workload(self, ips: list[str]) -> None:
        self.ips = ips
        self._send(encode(FrameType.WORKLOAD, {"ips": ips}))

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            try:
                self._session(conn)
            except (OSError, ConnectionError):
                pass
            finally:
                with self._lock:
                    self._conn = None
                conn.close()

    def _session(self, conn: socket.socket) -> None:
        kind, hello = _read_frame(conn)
        try:
            TokenCheck(TOKEN)(hello, FrameType.HELLO)
            accepted = True
        except AuthError:
            accepted = False
        if kind is not FrameType.HELLO or not accepted:
            conn.sendall(encode(FrameType.ERROR, {"reason": "wrong capture token"}))
            return
        with self._lock:
            self._conn = conn
            # In one segment: the agent must not lose a frame that came with WELCOME.
            conn.sendall(encode(FrameType.WELCOME, {"capture": "workload-test"}) + (
                encode(FrameType.WORKLOAD, {"ips": self.ips}) if self.ips is not None else b""))
        while True:
            kind, payload = _read_frame(conn)
            if kind is FrameType.FLOWS:
                columns = payload["columns"]
                self.rows += [dict(zip(columns, row, strict=True)) for row in payload["rows"]]
                self._send(encode(FrameType.ACK, {"seq": payload["seq"]}))
            elif kind is FrameType.STATS:
                self.stats = payload
            elif kind is FrameType.BYE:
                self.byes += 1
                return

    def close(self) -> None:
        self._listener.close()


class AgentProcess:
    """``python -m netobserv_tui.agent`` as a child, its stderr kept line by line."""

    def __init__(self, port: int, **env: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "netobserv_tui.agent", "--cache-active-timeout", "0.5s"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "WORKLOAD_FILTER": "1",
                 "INTERFACES": "nobs-*", "NETOBSERV_AGGREGATOR": f"127.0.0.1:{port}",
                 "NETOBSERV_TOKEN": TOKEN, **env},
        )
        self.stderr: list[str] = []
        self._stdout: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump_stderr, daemon=True).start()
        threading.Thread(target=self._pump_stdout, daemon=True).start()

    def _pump_stderr(self) -> None:
        assert self.proc.stderr
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))

    def _pump_stdout(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self._stdout.put(line)
        self._stdout.put(None)

    def event(self, timeout: float = 120) -> dict[str, Any]:
        try:
            line = self._stdout.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event from the agent; stderr:\n{self.log()}") from None
        assert line is not None, f"the agent exited; stderr:\n{self.log()}"
        event: dict[str, Any] = json.loads(line)
        return event

    def log(self) -> str:
        return "\n".join(self.stderr)

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        done = self.event(60)
        assert self.proc.wait(60) == 0, self.log()
        return done

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def wait_until(predicate: Callable[[], bool], what: str, agent: AgentProcess,
               timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; agent stderr:\n{agent.log()}")
        time.sleep(0.05)


def both(pod: Pod) -> list[str]:
    return [pod.addr(4), pod.addr(6)]


def in_pod(pod: Pod, *argv: str) -> None:
    subprocess.run(["ip", "netns", "exec", pod.netns, *argv], capture_output=True, text=True,
                   check=True)


SEND = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("{src}", {sport}))
for _ in range({count}):
    s.sendto(b"x" * 32, ("{dst}", {dport}))
"""


def iptables_packets(pod: Pod, port: int) -> int:
    out = subprocess.run(["ip", "netns", "exec", pod.netns, "iptables", "-L", "INPUT", "-v",
                          "-x", "-n"], capture_output=True, text=True, check=True).stdout
    return sum(int(line.split()[0]) for line in out.splitlines() if f"dpt:{port}" in line)


def test_agent_follows_the_workload_set(lab: Lab) -> None:
    a, b, c = lab.pod("pod-a"), lab.pod("pod-b"), lab.pod("pod-c")
    # Datagrams to b:8082 are dropped by b's firewall: the drop hook sees them on its own.
    in_pod(b, "iptables", "-A", "INPUT", "-p", "udp", "--dport", "8082", "-j", "DROP")
    server = WorkloadAggregator(both(a))
    agent = AgentProcess(server.port, FEATURES="pktdrop")
    try:
        ready = agent.event()
        assert ready["event"] == "ready" and ready["workload"] is True, ready
        assert ready["features"] == {"pktdrop": "on"}, ready
        wait_until(lambda: server.stats.get("workload_ips") == 2, "workload_ips == 2", agent)
        assert "Workload set: 2 addresses (2 added, 0 removed)." in agent.log()
        assert lab.wait_quiet()

        # pod-a is the workload: a -> b is counted exactly, c -> b not at all.
        count = 300
        sent4 = udp_send(lab, a, b, count, 200, dst_port=7101, family=4, src_port=40101)
        sent6 = udp_send(lab, a, b, count, 200, dst_port=7102, family=6, src_port=40102)
        other = udp_send(lab, c, b, count, 200, dst_port=7103, family=4, src_port=40103)
        assert sent4.received == sent6.received == other.received == count
        in_pod(a, sys.executable, "-c", SEND.format(src=a.v4, sport=45001, count=20,
                                                    dst=b.v4, dport=8082))
        in_pod(c, sys.executable, "-c", SEND.format(src=c.v4, sport=45002, count=20,
                                                    dst=b.v4, dport=8082))
        assert iptables_packets(b, 8082) == 40

        # Now pod-c is the workload: fresh traffic, the other way round.
        server.send_workload(both(c))
        wait_until(lambda: any("2 added, 2 removed" in line for line in agent.stderr),
                   "the new set to be applied", agent)
        assert lab.wait_quiet()
        after_a = udp_send(lab, a, b, count, 200, dst_port=7104, family=4, src_port=40104)
        after_c = udp_send(lab, c, b, count, 200, dst_port=7105, family=6, src_port=40105)
        reply_c = udp_send(lab, b, c, count, 100, dst_port=7106, family=4, src_port=40106)
        assert after_a.received == after_c.received == reply_c.received == count

        done = agent.stop()
        assert done["event"] == "done" and done["delivered"] is True, done
    finally:
        agent.kill()
        server.close()
    assert our_tc_objects() == []
    assert server.byes == 1

    def flow(sent: Any, src: Pod, dst: Pod, family: int) -> dict[tuple[str, int], tuple[int,
                                                                                       int]]:
        return totals(server.rows, SrcAddr=src.addr(family), DstAddr=dst.addr(family),
                      SrcPort=sent.src_port, DstPort=sent.dst_port, Proto=17)

    def exact(sent: Any, src: Pod, dst: Pod) -> dict[tuple[str, int], tuple[int, int]]:
        size = (count, count * sent.frame_bytes)
        return {(src.host_ifname, 0): size, (dst.host_ifname, 1): size}

    assert flow(sent4, a, b, 4) == exact(sent4, a, b)
    assert flow(sent6, a, b, 6) == exact(sent6, a, b)
    assert flow(other, c, b, 4) == {}
    assert flow(after_a, a, b, 4) == {}
    assert flow(after_c, c, b, 6) == exact(after_c, c, b)
    assert flow(reply_c, b, c, 4) == exact(reply_c, b, c)
    # Nothing else was counted: every record has an end in the set of its time.
    workload = set(both(a)) | set(both(c))
    strays = [r for r in server.rows if not {r["SrcAddr"], r["DstAddr"]} & workload]
    assert strays == []
    # Drops: a's are recorded (joined to its flow), c's create no record of their own.
    drops = {(r["SrcAddr"], r["SrcPort"]): 0 for r in server.rows if r.get("PktDropPackets")}
    for r in server.rows:
        if r.get("PktDropPackets"):
            drops[(r["SrcAddr"], r["SrcPort"])] += r["PktDropPackets"]
    assert drops == {(a.v4, 45001): 20}
    assert not any(r["SrcPort"] == 45002 for r in server.rows)


def test_a_set_larger_than_the_map_is_cut_and_said(
    bcc_ready: None, caplog: pytest.LogCaptureFixture
) -> None:
    prog = FlowProgram(max_flows=64, workload=True, workload_max_ips=4).load()
    try:
        assert prog.set_workload([A4, B4, C4, D4, A6, B6]) == (4, 0)
        assert prog.workload_ips == 4
        # What is in the kernel stays when the set is still too large.
        kept = {bytes(k.ip) for k in prog.bpf[b"workload_ips"].keys()}
        assert prog.set_workload([A4, B4, C4, D4, A6, B6, C6]) == (0, 0)
        assert {bytes(k.ip) for k in prog.bpf[b"workload_ips"].keys()} == kept
        assert "more than the 4 the kernel map holds" in caplog.text
    finally:
        prog.close()


def test_set_workload_needs_the_filter_compiled_in(bcc_ready: None) -> None:
    prog = FlowProgram(max_flows=64)
    with pytest.raises(RuntimeError):
        prog.set_workload([A4])
    assert "-DENABLE_WORKLOAD" not in prog.cflags
    assert "-DENABLE_WORKLOAD" in FlowProgram(max_flows=64, workload=True).cflags



def test_nothing_is_captured_until_the_first_set(lab: Lab) -> None:
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    server = WorkloadAggregator(None)
    agent = AgentProcess(server.port)
    try:
        ready = agent.event()
        assert ready["workload"] is True
        assert "nothing is captured until the aggregator sends" in agent.log()
        wait_until(lambda: server.stats.get("workload_ips") == 0, "a STATS frame", agent)
        before = udp_send(lab, a, b, 100, 64, dst_port=7201, src_port=40201)
        server.send_workload([b.v4])  # arrives while the programs run
        wait_until(lambda: server.stats.get("workload_ips") == 1, "workload_ips == 1", agent)
        after = udp_send(lab, a, b, 100, 64, dst_port=7202, src_port=40202)
        done = agent.stop()
        assert done["delivered"] is True
    finally:
        agent.kill()
        server.close()
    assert our_tc_objects() == []
    assert before.received == after.received == 100
    assert not any(r["DstPort"] == 7201 for r in server.rows)
    size = (100, 100 * after.frame_bytes)
    assert totals(server.rows, SrcPort=40202, DstPort=7202) == {
        (a.host_ifname, 0): size, (b.host_ifname, 1): size}
