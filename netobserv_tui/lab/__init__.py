"""The lab: network-namespace "pods" on a bridge, with real traffic between them.

Used by the kernel tests and by demos (``netobserv lab up``). Addresses are limited to
``198.18.0.0/24`` and ``fd00:198:18::/64`` inside namespaces the lab creates and removes.
See ``docs/lab.md``.
"""

from __future__ import annotations

from .topology import (
    BRIDGE_NAME,
    HOST_IF_PREFIX,
    LAB_PREFIX,
    LOCK_FD_ENV,
    POD_IFNAME,
    Lab,
    LabStatus,
    Pod,
    cleanup_all,
    is_lab_ifname,
    is_lab_netns,
    iter_lab_pids,
    lab_lock,
    lab_status,
)
from .traffic import (
    IfaceCounters,
    LabTraffic,
    PingResult,
    TcpResult,
    UdpResult,
    iface_counters,
    max_udp_payload,
    ping,
    tcp_transfer,
    udp_frame_bytes,
    udp_send,
)

__all__ = [
    "BRIDGE_NAME",
    "HOST_IF_PREFIX",
    "LAB_PREFIX",
    "LOCK_FD_ENV",
    "POD_IFNAME",
    "IfaceCounters",
    "Lab",
    "LabStatus",
    "LabTraffic",
    "PingResult",
    "Pod",
    "TcpResult",
    "UdpResult",
    "cleanup_all",
    "iface_counters",
    "is_lab_ifname",
    "is_lab_netns",
    "iter_lab_pids",
    "lab_lock",
    "lab_status",
    "max_udp_payload",
    "ping",
    "tcp_transfer",
    "udp_frame_bytes",
    "udp_send",
]
