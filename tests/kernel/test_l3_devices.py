"""Devices without a link-layer header (tun, wireguard, ipip, gre): packets start with the
IP header. The classifier used to read 14 bytes of "Ethernet" there and wrote junk flows
(Etype from the source address, no addresses). A tun device of our own, in this host's
namespace, with lab addresses only, both ends local: datagrams written into it arrive as
ingress on the device, and the host's ICMP answers leave as egress, and never go further.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from capture_helpers import Capture, sqlite_rows

from netobserv_tui.lab._worker import checksum

pytestmark = pytest.mark.kernel

TUN = "nobs-l3tun"
TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454CA, 0x0001, 0x1000
PEER, LOCAL = "198.18.5.1", "198.18.5.2"
PEER6, LOCAL6 = "fd00:198:18:5::1", "fd00:198:18:5::2"


@pytest.fixture
def tun() -> Iterator[int]:
    """The tun device, up, with lab addresses; removed with its file descriptor."""
    if os.geteuid() != 0:
        pytest.skip("a tun device and a capture need root")
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", TUN.encode(), IFF_TUN | IFF_NO_PI))
        for argv in (["addr", "add", LOCAL, "peer", PEER, "dev", TUN],
                     ["-6", "addr", "add", LOCAL6, "peer", PEER6, "dev", TUN, "nodad"],
                     ["link", "set", TUN, "up"]):
            subprocess.run(["ip", *argv], check=True, capture_output=True)
        yield fd
    finally:
        os.close(fd)  # a tun device that is not persistent goes with its last descriptor
    assert subprocess.run(["ip", "link", "show", TUN], capture_output=True).returncode != 0


def udp4(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                         ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + udp


def udp6(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    s, d = ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed
    length = 8 + len(payload)
    pseudo = s + d + struct.pack("!I3xB", length, 17)
    udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
    udp = udp[:6] + struct.pack("!H", checksum(pseudo + udp) or 0xFFFF) + udp[8:]
    return struct.pack("!IHBB16s16s", 6 << 28, length, 17, 64, s, d) + udp


@pytest.mark.parametrize("family", [4, 6])
def test_flows_on_a_device_without_link_layer_header(
    tun: int, tmp_path: Path, family: int
) -> None:
    count, payload = 20, b"n" * 100
    packet = (udp4(PEER, LOCAL, 40500, 7501, payload) if family == 4
              else udp6(PEER6, LOCAL6, 40500, 7501, payload))
    with Capture(tmp_path, interfaces=TUN) as cap:
        for _ in range(count):
            assert os.write(tun, packet) == len(packet)
        assert cap.stop() == 0, cap.stderr_lines
    rows = sqlite_rows(cap.files()["db"],
                       "SELECT SrcAddr, DstAddr, SrcPort, DstPort, Proto, Etype, Interface, "
                       "IfDirection, SUM(Packets) AS p, SUM(Bytes) AS b, SrcMac FROM flow "
                       "GROUP BY SrcAddr, DstAddr, SrcPort, DstPort, Proto, IfDirection "
                       "ORDER BY IfDirection")
    ours = [r for r in rows if r["DstPort"] == 7501]
    assert ours == [{
        "SrcAddr": PEER if family == 4 else PEER6, "DstAddr": LOCAL if family == 4 else LOCAL6,
        "SrcPort": 40500, "DstPort": 7501, "Proto": 17, "Etype": 0x0800 if family == 4
        else 0x86DD, "Interface": TUN, "IfDirection": 0, "p": count,
        "b": count * len(packet), "SrcMac": "00:00:00:00:00:00"}]
    # Nothing else was made up: every record has real addresses and an IP Etype (the
    # host's answers, ICMP port unreachable, go back out as egress).
    assert all(r["Etype"] in (0x0800, 0x86DD) and r["SrcAddr"] and r["DstAddr"]
               for r in rows), rows
    # The host's own IPv6 chatter on a new device (router solicitations to ff02::2 from its
    # link-local address) is real egress too, not an answer to our datagrams.
    answers = [r for r in rows if r["IfDirection"] == 1 and not r["DstAddr"].startswith("ff")]
    assert all(r["Proto"] in (1, 58) and r["SrcAddr"] in (LOCAL, LOCAL6)
               for r in answers), rows
    if family == 4:  # (IPv6 answers through a peer route are not always sent)
        assert answers, rows
