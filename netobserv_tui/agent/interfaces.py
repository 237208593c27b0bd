"""Which interfaces to capture, and noticing the ones that come and go.

A netlink socket subscribed to link events wakes us up; we then re-read the link list and
compute the difference. Re-reading instead of decoding each event keeps the logic simple
and self-healing (a missed or coalesced event cannot leave us out of step).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from pyroute2 import IPRoute

log = logging.getLogger(__name__)

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100


@dataclass(frozen=True)
class Selector:
    """``--interfaces`` / ``--exclude_interfaces``: names or shell patterns (``veth*``)."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ("lo",)

    def wants(self, name: str) -> bool:
        if any(fnmatch.fnmatchcase(name, pat) for pat in self.exclude):
            return False
        if not self.include:
            return True
        return any(fnmatch.fnmatchcase(name, pat) for pat in self.include)

    @classmethod
    def from_flags(cls, include: Sequence[str], exclude: Sequence[str]) -> Selector:
        inc = tuple(p for item in include for p in item.split(",") if p)
        exc = tuple(p for item in exclude for p in item.split(",") if p)
        return cls(inc, exc if exc else ("lo",))


#: Link types (ARPHRD_*, include/uapi/linux/if_arp.h) of devices without a link-layer
#: header: their packets start with the IP header, and they get the *_l3 programs.
#: ipip (TUNNEL), ip6tnl (TUNNEL6), sit, gre (IPGRE), ip6gre, raw IP (RAWIP), and NONE:
#: tun, wireguard. Loopback and gretap carry an Ethernet header.
L3_LINK_TYPES: Final = frozenset({768, 769, 776, 778, 823, 519, 65534})


class LinkWatcher:
    """Current links, local addresses, and a file descriptor that turns readable on change."""

    def __init__(self) -> None:
        self.sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE
        )
        self.sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        self.ipr = IPRoute()
        self.names: dict[int, str] = {}
        #: Interfaces whose packets start with the IP header (see :data:`L3_LINK_TYPES`).
        self.l3: frozenset[int] = frozenset()
        self.local_addrs: frozenset[str] = frozenset()
        #: Names of interfaces that disappeared, kept so late records still get a name.
        self._departed: dict[int, str] = {}

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain_events(self) -> bool:
        """Read pending notifications; True if there were any."""
        seen = False
        while True:
            try:
                if not self.sock.recv(65536):
                    break
                seen = True
            except BlockingIOError:
                break
        return seen

    def refresh(self) -> tuple[dict[int, str], dict[int, str]]:
        """Re-read links and addresses; returns (appeared, vanished) as index -> name."""
        links = self.ipr.get_links()
        current = {link["index"]: link.get_attr("IFLA_IFNAME") for link in links}
        self.l3 = frozenset(link["index"] for link in links
                            if link.get("ifi_type") in L3_LINK_TYPES)
        appeared = {i: n for i, n in current.items() if self.names.get(i) != n}
        vanished = {i: n for i, n in self.names.items() if current.get(i) != n}
        self._departed.update(vanished)
        self.names = current
        addrs = set()
        for msg in self.ipr.get_addr():
            addr = msg.get_attr("IFA_ADDRESS")
            if addr:
                addrs.add(str(ipaddress.ip_address(addr)))
        self.local_addrs = frozenset(addrs)
        return appeared, vanished

    def name(self, ifindex: int) -> str:
        return self.names.get(ifindex) or self._departed.get(ifindex) or str(ifindex)

    def forget_departed(self) -> None:
        self._departed.clear()

    def primary_ip(self) -> str:
        """A global address of this host to report as AgentIP (IPv4 preferred)."""
        best: str | None = None
        for msg in self.ipr.get_addr():
            addr = msg.get_attr("IFA_ADDRESS")
            if not addr:
                continue
            ip = ipaddress.ip_address(addr)
            if ip.is_loopback or ip.is_link_local:
                continue
            if ip.version == 4:
                return str(ip)
            best = best or str(ip)
        return best or "127.0.0.1"

    def close(self) -> None:
        self.sock.close()
        self.ipr.close()
