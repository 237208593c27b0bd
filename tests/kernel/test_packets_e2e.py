"""``netobserv packets`` through the real command line, with lab traffic, read back by tshark.

Numbers come from outside the tool: the datagrams the lab's generator sent and their frame
sizes (payload + UDP + IP + Ethernet headers). A datagram from pod-a to pod-b crosses two
captured interfaces: pod-a's host end (ingress) and pod-b's (egress).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from capture_helpers import NETOBSERV, Capture, credentials, our_tc_objects, sql_totals

from netobserv_tui.lab import Lab
from netobserv_tui.lab.topology import Pod
from netobserv_tui.lab.traffic import ping, udp_send

pytestmark = pytest.mark.kernel

FIELDS = ("frame.time_epoch", "frame.len", "frame.cap_len", "frame.interface_name",
          "frame.interface_description", "udp.dstport", "ip.src", "frame.comment")


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("packet capture needs root (eBPF, TC): run the tests as root")
    if shutil.which("tshark") is None:
        pytest.fail("tshark is missing: scripts/bootstrap installs it (apt package tshark)")


def warnings(stderr: bytes) -> list[str]:
    """tshark's complaints, but for the one it prints whenever it runs as root."""
    return [line for line in stderr.decode().splitlines()
            if line.strip() and not line.startswith('Running as user "root"')]


def tshark(path: Path | str, *extra: str, stdin: bytes | None = None) -> list[list[str]]:
    """tshark's fields per frame; fails on any warning on stderr."""
    argv = ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=|", "-E",
            "occurrence=f", *extra]
    for field in FIELDS:
        argv += ["-e", field]
    done = subprocess.run(argv, input=stdin, capture_output=True, timeout=120)
    assert done.returncode == 0 and not warnings(done.stderr), done.stderr.decode()
    return [line.split("|") for line in done.stdout.decode().splitlines()]


def test_the_file_holds_exactly_the_matching_packets(lab: Lab, tmp_path: Path) -> None:
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    with Capture(tmp_path, "udp,7101", command="packets") as cap:
        started = time.time_ns()
        small = udp_send(lab, a, b, 40, 100, dst_port=7101, src_port=47101)
        large = udp_send(lab, a, b, 20, 1400, dst_port=7101, src_port=47102)
        v6 = udp_send(lab, a, b, 10, 300, dst_port=7101, src_port=47103, family=6)
        udp_send(lab, a, b, 30, 100, dst_port=7102, src_port=47104)  # not matched
        ended = time.time_ns()
        assert cap.stop() == 0, cap.stderr_lines
    files = cap.files()
    pcap = files["pcapng"]
    assert pcap.parent == tmp_path / "pcap" and pcap.stem == files["db"].stem
    assert stat.S_IMODE(pcap.stat().st_mode) == 0o600
    frames = tshark(pcap)
    # Every datagram, once per interface it crossed, and nothing else.
    assert all(f[5] == "7101" for f in frames), {f[5] for f in frames}
    host = socket.gethostname()
    expected = {}
    for sent in (small, large, v6):
        assert sent.sent == sent.received
        for ifname, direction in ((a.host_ifname, "ingress"), (b.host_ifname, "egress")):
            expected[(ifname, sent.frame_bytes)] = sent.sent
            matching = [f for f in frames if f[3] == ifname and int(f[1]) == sent.frame_bytes]
            assert len(matching) == sent.sent
            for f in matching:
                assert f[2] == f[1]  # whole frames: captured length = frame length
                assert f[4] == f"{ifname} on {host}"
                assert f"Host={host}; Interface={ifname}; Direction={direction}" in f[7]
    assert len(frames) == 2 * (small.sent + large.sent + v6.sent) == 140
    # Nanosecond timestamps, within the send window, increasing per interface.
    for ifname in (a.host_ifname, b.host_ifname):
        stamps = [f[0] for f in frames if f[3] == ifname]
        assert all(len(s.partition(".")[2]) == 9 for s in stamps), stamps[:3]
        ns = [int(s.replace(".", "")) for s in stamps]
        assert ns == sorted(ns) and started <= ns[0] and ns[-1] <= ended
    # The flows of the same capture agree with the packets.
    flows = sql_totals(files["db"], DstPort=7101)
    assert sum(p for p, _ in flows.values()) == len(frames)
    assert "written to the packet file" in "\n".join(cap.stderr_lines)
    assert "140 packets" in "\n".join(cap.stderr_lines)
    assert our_tc_objects() == []


def test_snaplen_keeps_the_first_bytes_and_the_length(lab: Lab, tmp_path: Path) -> None:
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    with Capture(tmp_path, "udp,7111", "--snaplen=64", command="packets") as cap:
        sent = udp_send(lab, a, b, 25, 1000, dst_port=7111)
        assert cap.stop() == 0, cap.stderr_lines
    frames = tshark(cap.files()["pcapng"])
    assert len(frames) == 2 * sent.sent
    assert {(f[1], f[2]) for f in frames} == {(str(sent.frame_bytes), "64")}


def test_live_stream_to_tshark_on_stdout(lab: Lab, tmp_path: Path) -> None:
    """``-w - | tshark -r -``: the stream carries every packet; messages go to stderr."""
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    argv = [*NETOBSERV, "packets", "udp,7121", "--local", "--interfaces=nobs-*",
            "--output", str(tmp_path), "-w", "-"]
    reader = subprocess.Popen(["tshark", "-l", "-r", "-", "-T", "fields", "-e", "frame.len",
                               "-e", "frame.interface_name"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    assert reader.stdin is not None
    proc = subprocess.Popen(argv, stdout=reader.stdin, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    reader.stdin.close()  # the capture holds the pipe now
    try:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "Capturing packets on" in line:
                break
        else:
            pytest.fail("the capture did not start:\n" + "".join(lines))
        sent = udp_send(lab, a, b, 30, 200, dst_port=7121)
        proc.send_signal(signal.SIGINT)
        err = proc.stderr.read()
        assert proc.wait(120) == 0, err
        assert reader.stdout is not None and reader.stderr is not None
        out, tshark_err = reader.stdout.read(), reader.stderr.read()
        reader.wait(120)
    finally:
        for p in (proc, reader):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert reader.returncode == 0 and not warnings(tshark_err), tshark_err
    rows = [line.split("\t") for line in out.decode().splitlines()]
    assert len(rows) == 2 * sent.sent
    assert {r[0] for r in rows} == {str(sent.frame_bytes)}
    assert {r[1] for r in rows} == {a.host_ifname, b.host_ifname}
    assert "packets (" in err and str(tmp_path / "pcap") in err  # the paths go to stderr
    (saved,) = (tmp_path / "pcap").glob("*.pcapng")
    assert len(tshark(saved)) == 2 * sent.sent


def exchange(server_pod: Pod, server: list[str], client_pod: Pod, client: list[str]) -> str:
    """Run a one-request Python server in one lab pod and its client in another; the
    client's output. The server says "ready" once it listens, and exits after one answer."""
    proc = subprocess.Popen(["ip", "netns", "exec", server_pod.netns, sys.executable, "-c",
                             *server], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        done = subprocess.run(["ip", "netns", "exec", client_pod.netns, sys.executable, "-c",
                               *client], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return done.stdout.strip()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_tls_keylog_makes_tshark_decrypt_with_no_setting(
    lab: Lab, tmp_path: Path, version: str
) -> None:
    """HTTPS between two lab pods with OpenSSL's own tools: `openssl s_server -www` in
    pod-b, `openssl s_client -keylogfile` in pod-a (the key log file an application
    writes, as with SSLKEYLOGFILE). With --tls-keylog, tshark decrypts the request from the
    pcapng alone."""
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    cert, key, keylog = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "keys.log"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=lab", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    out = tmp_path / "out"
    with Capture(out, "tcp,443", f"--tls-keylog={keylog}", command="packets") as cap:
        server = subprocess.Popen(
            ["ip", "netns", "exec", b.netns, "openssl", "s_server", "-accept", f"{b.v4}:443",
             "-cert", str(cert), "-key", str(key), "-www", "-naccept", "1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        try:
            assert server.stdout is not None
            for line in server.stdout:  # "ACCEPT" once it listens
                if line.strip() == "ACCEPT":
                    break
            client = subprocess.run(
                ["ip", "netns", "exec", a.netns, "openssl", "s_client", "-connect",
                 f"{b.v4}:443", "-keylogfile", str(keylog), f"-tls{version.replace('.', '_')}",
                 "-ign_eof", "-quiet"],
                input="GET /netobserv-secret-path HTTP/1.0\r\nHost: lab\r\n\r\n",
                capture_output=True, text=True, timeout=60)
            assert server.wait(30) == 0
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        assert client.stdout.startswith("HTTP/1.0 200 ok"), client.stdout[:200]
        protocol = f"TLSv{version}"
        assert protocol in client.stdout, client.stdout[-500:]  # the status page says so
        assert cap.stop() == 0, cap.stderr_lines
    pcap = cap.files()["pcapng"]
    raw = pcap.read_bytes()
    assert b"netobserv-secret-path" not in raw  # on the wire, only ciphertext
    assert keylog.read_bytes() in raw  # the secrets travel in the file
    done = subprocess.run(["tshark", "-r", str(pcap), "-Y", "http.request", "-T", "fields",
                           "-e", "http.request.uri", "-e", "frame.interface_name",
                           "-e", "tls.record.version"],
                          capture_output=True, text=True, timeout=120)
    assert not warnings(done.stderr.encode()), done.stderr
    # Decrypted where the request was first seen, pod-a's host end (tshark takes the copy
    # from pod-b's for a retransmission of the same TCP stream).
    assert [line.split("\t")[:2] for line in done.stdout.splitlines()] == [
        ["/netobserv-secret-path", a.host_ifname]]


HTTP_SERVER = """
import socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], 80))
srv.listen()
print("ready", flush=True)
conn, _ = srv.accept()
conn.recv(4096)
conn.sendall(b"HTTP/1.1 204 No Content\\r\\nConnection: close\\r\\n\\r\\n")
conn.close()
"""

HTTP_CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], 80), timeout=10) as c:
    c.sendall(b"GET /orders/42?lab=1 HTTP/1.1\\r\\nHost: lab\\r\\n\\r\\n")
    print(c.recv(4096).decode().split("\\r\\n")[0], flush=True)
"""


def test_an_http_request_on_port_80_is_decoded(lab: Lab, tmp_path: Path) -> None:
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    with Capture(tmp_path, "tcp,80", command="packets") as cap:
        answer = exchange(b, [HTTP_SERVER, b.v4], a, [HTTP_CLIENT, b.v4])
        assert answer == "HTTP/1.1 204 No Content"
        assert cap.stop() == 0, cap.stderr_lines
    done = subprocess.run(["tshark", "-r", str(cap.files()["pcapng"]), "-Y", "http.request",
                           "-T", "fields", "-e", "http.request.uri"],
                          capture_output=True, text=True, timeout=60)
    assert not warnings(done.stderr.encode()), done.stderr
    assert done.stdout.splitlines() == ["/orders/42?lab=1"]


@pytest.mark.parametrize(
    ("flags", "kept", "dropped"),
    [
        (["udp,7161", "or", "--protocol=udp", "--dport=7162"], [7161, 7162], [7163]),
        (["--enable_filter=true", "--protocol=udp", "--port_range=7164-7165"], [7164, 7165],
         [7166]),
        (["--enable_filter=true", "--action=Reject", "--dport=7167"], [7168], [7167]),
        (["--enable_filter=true", "--protocol=icmp"], [], [7169]),
    ],
)
def test_traffic_outside_the_filter_is_absent(
    lab: Lab, tmp_path: Path, flags: list[str], kept: list[int], dropped: list[int]
) -> None:
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    with Capture(tmp_path, *flags, command="packets") as cap:
        sent = {port: udp_send(lab, a, b, 12, 80, dst_port=port) for port in kept + dropped}
        echoes = ping(lab, a, b, count=4, interval=0.05) if "--protocol=icmp" in flags else None
        assert cap.stop() == 0, cap.stderr_lines
    frames = tshark(cap.files()["pcapng"])
    ports = [int(f[5]) for f in frames if f[5]]
    for port in kept:
        assert ports.count(port) == 2 * sent[port].sent
    for port in dropped:
        assert ports.count(port) == 0
    if echoes is not None:  # requests and replies, each on both host ends
        assert echoes.received == echoes.transmitted == 4
        assert len(frames) == 4 * 4 and not ports
    elif "--action=Reject" not in flags:
        assert len(frames) == len(ports)  # nothing but the kept datagrams


def test_loss_is_counted_and_shown(lab: Lab, tmp_path: Path) -> None:
    """A one-page kernel ring (4 KiB) cannot hold a burst of 1400-byte frames: what is not
    in the file is in the reported loss, exactly."""
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    with Capture(tmp_path, "udp,7181", command="packets",
                 env={"PACKET_RING_PAGES": "1"}) as cap:
        sent = udp_send(lab, a, b, 3000, 1400, dst_port=7181)
        assert cap.stop() == 0, cap.stderr_lines
    written = len(tshark(cap.files()["pcapng"]))
    err = "\n".join(cap.stderr_lines)
    lost = next(int(line.split()[1]) for line in cap.stderr_lines
                if "did not fit in the kernel's packet ring buffer" in line)
    assert lost > 0 and written + lost == 2 * sent.sent, err
    assert f"{written} packets (" in err


def test_all_takes_every_packet(lab: Lab, tmp_path: Path) -> None:
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    with Capture(tmp_path, "--all", command="packets") as cap:
        sent = [udp_send(lab, a, b, 9, 50, dst_port=port) for port in (7191, 7192)]
        assert cap.stop() == 0, cap.stderr_lines
    ports = [f[5] for f in tshark(cap.files()["pcapng"])]
    assert ports.count("7191") == ports.count("7192") == 2 * sent[0].sent == 18


def test_files_are_private_and_given_to_the_sudo_user(lab: Lab, tmp_path: Path) -> None:
    """Run as `sudo netobserv packets ...` by uid 65534: the aggregator runs as that user;
    every folder the capture made is 0700, every file 0600, and all of them belong to that
    user, not to root; the database is out of WAL mode (no -wal file left)."""
    a, b = lab.pod("pod-a"), lab.pod("pod-b")
    out = tmp_path / "mine" / "out"
    sudo = {"SUDO_UID": "65534", "SUDO_GID": "65534", "SUDO_USER": "nobody"}
    with Capture(out, "udp,7141", command="packets", env=sudo) as cap:
        # The aggregator runs as that user, with none of root's groups.
        assert credentials(cap.child("netobserv_tui.aggregator")) == (
            (65534,) * 4, (65534,) * 4, "")
        sent = udp_send(lab, a, b, 10, 100, dst_port=7141)
        assert cap.stop() == 0, cap.stderr_lines
    files = cap.files()
    assert len(tshark(files["pcapng"])) == 2 * sent.sent
    made = [tmp_path / "mine", out, out / "flow", out / "pcap"]
    kept = [files["db"], files["json"], files["pcapng"]]
    assert sorted(p.name for p in (out / "flow").iterdir()) == sorted(
        [files["db"].name, files["json"].name])
    for path in made + kept:
        info = path.stat()
        assert (info.st_uid, info.st_gid) == (65534, 65534), path
        assert stat.S_IMODE(info.st_mode) == (0o700 if path.is_dir() else 0o600), path
    assert tmp_path.stat().st_uid == 0  # what existed before the capture is left alone
