"""Formatters of the flows table."""

from __future__ import annotations

from datetime import datetime

from netobserv_tui.model.units import human_bytes
from netobserv_tui.tui.columns import (
    FLOW_COLUMNS,
    duration,
    endpoint,
    proto_name,
    tcp_flags,
)


def test_endpoint() -> None:
    assert endpoint("10.0.0.1", 80) == "10.0.0.1:80"
    assert endpoint("fd00::1", 53) == "[fd00::1]:53"
    assert endpoint("10.0.0.1", 0) == "10.0.0.1"
    assert endpoint("fd00::1", None) == "fd00::1"
    assert endpoint(None, 80) == ""


def test_tcp_flags() -> None:
    assert tcp_flags(0) == ""
    assert tcp_flags(None) == ""
    assert tcp_flags(2) == "SYN"
    assert tcp_flags(18) == "SYN,ACK"
    assert tcp_flags(17 | 0x200) == "FIN,ACK,0x200"


def test_proto_name() -> None:
    assert proto_name(6) == "TCP"
    assert proto_name(58) == "ICMPv6"
    assert proto_name(47) == "47"
    assert proto_name(None) == ""


def test_duration_and_bytes() -> None:
    assert duration(0) == "0:00:00"
    assert duration(65.9) == "0:01:05"
    assert duration(3600 * 26 + 1) == "26:00:01"
    assert human_bytes(999) == "999 B"
    assert human_bytes(1500) == "1.5 kB"
    assert human_bytes(50_000_000) == "50.0 MB"


def test_flow_columns_render_a_record_with_missing_fields() -> None:
    record = {"TimeFlowEndMs": 1709741962111, "SrcAddr": "10.0.0.1", "Bytes": 561}
    cells = [column.render(record) for column in FLOW_COLUMNS]
    clock = datetime.fromtimestamp(1709741962.111).strftime("%H:%M:%S.%f")[:-3]
    assert cells == [clock, "", "", "", "10.0.0.1", "", 561, "", ""]
