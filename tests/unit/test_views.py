"""Views (Left/Right) and enrichment sets (Page Up/Down) of the flow table."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from netobserv_tui.model.fields import FIELD_NAMES
from netobserv_tui.tui.columns import FLOW_COLUMNS
from netobserv_tui.tui.views import ENRICHMENTS, VIEWS, ViewState

VIEW_NAMES = ["Overview", "Packet drops", "DNS", "RTT", "Top talkers", "Raw", "Findings"]
ENRICHMENT_NAMES = ["Names", "IP & port", "Node", "Namespace", "Owner", "Resource", "Zone",
                    "All"]


def keys(state: ViewState) -> list[str]:
    return [column.key for column in state.columns()]


def state_of(view: str, enrichment: str) -> ViewState:
    return ViewState(
        [v.name for v in VIEWS].index(view), [e.name for e in ENRICHMENTS].index(enrichment)
    )


def test_names_and_order() -> None:
    assert [view.name for view in VIEWS] == VIEW_NAMES
    assert [e.name for e in ENRICHMENTS] == ENRICHMENT_NAMES


def test_default_is_overview_with_endpoints_equal_to_flow_columns() -> None:
    state = ViewState()
    assert (state.view.name, state.enrichment.name) == ("Overview", "IP & port")
    assert state.columns() == FLOW_COLUMNS
    assert state.title() == "Overview · IP & port"


def test_view_cycling_wraps_both_ways() -> None:
    state = ViewState()
    seen = []
    for _ in range(len(VIEWS) + 1):
        seen.append(state.view.name)
        state = state.next_view()
    assert seen == [*VIEW_NAMES, "Overview"]
    state = ViewState()
    backwards = []
    for _ in range(len(VIEWS) + 1):
        backwards.append(state.view.name)
        state = state.prev_view()
    assert backwards == ["Overview", "Findings", "Raw", "Top talkers", "RTT", "DNS",
                         "Packet drops", "Overview"]


def test_enrichment_cycling_wraps_both_ways_and_keeps_the_view() -> None:
    state = ViewState(view_index=2, enrichment_index=0)
    assert state.prev_enrichment().enrichment.name == "All"
    assert state.prev_enrichment().next_enrichment() == state
    forward = []
    for _ in range(len(ENRICHMENTS) + 1):
        forward.append(state.enrichment.name)
        assert state.view.name == "DNS"
        state = state.next_enrichment()
    assert forward == [*ENRICHMENT_NAMES, "Names"]


def test_moves_keep_the_other_index_and_return_new_states() -> None:
    state = ViewState(view_index=3, enrichment_index=4)
    assert state.next_view() == ViewState(4, 4)
    assert state.prev_view() == ViewState(2, 4)
    assert state.next_enrichment() == ViewState(3, 5)
    assert state.prev_enrichment() == ViewState(3, 3)
    assert state == ViewState(3, 4)  # unchanged
    with pytest.raises(AttributeError):
        state.view_index = 0  # type: ignore[misc]


@pytest.mark.parametrize("bad", [(-1, 0), (7, 0), (0, 8), (0, -1)])
def test_out_of_range_indices_are_refused(bad: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="is not in 0.."):
        ViewState(*bad)


def test_each_view_columns_with_names() -> None:
    names = ["src_named", "dst_named"]
    assert keys(state_of("Overview", "Names")) == [
        "time", "interface", "direction", "proto", *names, "bytes", "packets", "flags",
    ]
    assert keys(state_of("Packet drops", "Names")) == [
        "time", "interface", "proto", *names, "PktDropLatestDropCause", "PktDropLatestState",
        "PktDropBytes", "PktDropPackets", "PktDropLatestFlags",
    ]
    assert keys(state_of("DNS", "Names")) == [
        "time", "interface", "proto", *names, "DnsId", "DnsName", "DnsFlagsResponseCode",
        "DnsLatencyMs", "DnsErrno",
    ]
    assert keys(state_of("RTT", "Names")) == [
        "time", "interface", "proto", *names, "TimeFlowRttNs", "TcpRetransmits",
        "TcpResetsSent", "TcpResetsReceived",
    ]
    assert keys(state_of("Raw", "Names")) == list(FIELD_NAMES)


def test_names_show_who_each_end_is_and_the_address_where_none_is_known() -> None:
    state = state_of("Overview", "Names")
    src, dst = (c for c in state.columns() if c.key in ("src_named", "dst_named"))
    pod_to_node = {"SrcK8S_Name": "web-7f9c", "SrcK8S_Namespace": "shop",
                   "DstK8S_Name": "node-a", "SrcAddr": "10.0.0.1", "DstAddr": "10.0.1.1"}
    assert (src.render(pod_to_node), dst.render(pod_to_node)) == ("shop/web-7f9c", "node-a")
    outside = {"SrcAddr": "fd00:198:18::9", "SrcPort": 443, "DstAddr": "198.18.0.7",
               "DstPort": 53}
    assert (src.render(outside), dst.render(outside)) == ("[fd00:198:18::9]:443",
                                                          "198.18.0.7:53")
    assert (src.label, dst.label) == ("Source", "Destination")


def test_enrichment_sets() -> None:
    sets = {e.name: [c.key for c in e.columns] for e in ENRICHMENTS}
    assert sets == {
        "Names": ["src_named", "dst_named"],
        "IP & port": ["src", "dst"],
        "Node": ["SrcK8S_HostName", "DstK8S_HostName"],
        "Namespace": ["SrcK8S_Namespace", "DstK8S_Namespace"],
        "Owner": ["SrcK8S_OwnerName", "SrcK8S_OwnerType", "DstK8S_OwnerName",
                  "DstK8S_OwnerType"],
        "Resource": ["SrcK8S_Name", "SrcK8S_Type", "DstK8S_Name", "DstK8S_Type"],
        "Zone": ["SrcK8S_Zone", "DstK8S_Zone"],
        "All": ["src", "dst", "SrcK8S_HostName", "DstK8S_HostName", "SrcK8S_Namespace",
                "DstK8S_Namespace", "SrcK8S_OwnerName", "SrcK8S_OwnerType", "DstK8S_OwnerName",
                "DstK8S_OwnerType", "SrcK8S_Name", "SrcK8S_Type", "DstK8S_Name", "DstK8S_Type",
                "SrcK8S_Zone", "DstK8S_Zone"],
    }


def test_enrichment_goes_between_lead_and_tail() -> None:
    assert keys(state_of("DNS", "Owner")) == [
        "time", "interface", "proto", "SrcK8S_OwnerName", "SrcK8S_OwnerType", "DstK8S_OwnerName",
        "DstK8S_OwnerType", "DnsId", "DnsName", "DnsFlagsResponseCode", "DnsLatencyMs",
        "DnsErrno",
    ]
    assert keys(state_of("Overview", "Node")) == [
        "time", "interface", "direction", "proto", "SrcK8S_HostName", "DstK8S_HostName",
        "bytes", "packets", "flags",
    ]


def test_raw_view_ignores_enrichment() -> None:
    for enrichment in ENRICHMENT_NAMES:
        state = state_of("Raw", enrichment)
        assert keys(state) == list(FIELD_NAMES)
        assert state.title() == "Raw"


def test_column_keys_are_unique_in_every_combination() -> None:
    for view_index in range(len(VIEWS)):
        for enrichment_index in range(len(ENRICHMENTS)):
            found = keys(ViewState(view_index, enrichment_index))
            assert len(found) == len(set(found)), (view_index, enrichment_index)


def test_empty_hints() -> None:
    hints = {view.name: view.empty_hint for view in VIEWS}
    assert hints["DNS"] == "No DNS data: start the capture with --enable_dns=true"
    assert hints["Packet drops"] == (
        "No packet drop data: start the capture with --enable_pktdrop=true"
    )
    assert hints["RTT"] == "No RTT data: start the capture with --enable_rtt=true"
    assert hints["Overview"].startswith("No flows yet")
    assert hints["Raw"].startswith("No flows yet")


def test_has_data_tells_whether_a_record_carries_the_view_fields() -> None:
    plain = {"SrcAddr": "10.0.0.1", "DnsId": None}
    dns = {"SrcAddr": "10.0.0.1", "DnsId": 4242}
    overview, drops, dns_view, rtt, _talkers, raw, _findings = VIEWS
    assert overview.has_data(plain) and raw.has_data(plain)
    assert not dns_view.has_data(plain)
    assert dns_view.has_data(dns)
    assert not drops.has_data(dns) and not rtt.has_data(dns)
    assert rtt.has_data({"TcpRetransmits": 0})  # 0 is data, NULL is not


RECORD: dict[str, Any] = {
    "TimeFlowEndMs": None,
    "Proto": 17,
    "SrcAddr": "10.129.0.48",
    "SrcPort": 41000,
    "DstAddr": "172.30.0.10",
    "DstPort": 53,
    "DnsId": 58747,
    "DnsName": "nodejs.example.com",
    "DnsFlagsResponseCode": "NXDomain",
    "DnsLatencyMs": 12,
    "DnsErrno": 0,
    "PktDropLatestFlags": 20,
    "TimeFlowRttNs": 121000,
    "SrcK8S_OwnerName": "nodejs-basic",
    "SrcK8S_OwnerType": "Deployment",
    "Interfaces": ["ens5", "br-ex"],
}


def cells(view: str, enrichment: str, record: dict[str, Any]) -> list[object]:
    return [column.render(record) for column in state_of(view, enrichment).columns()]


def test_dns_cells_with_owner() -> None:
    assert cells("DNS", "Owner", RECORD) == [
        "", "", "UDP", "nodejs-basic", "Deployment", "", "", 58747, "nodejs.example.com",
        "NXDomain", 12, 0,
    ]


def test_feature_cells_are_empty_when_absent_and_formatted_when_present() -> None:
    assert cells("RTT", "IP & port", RECORD) == [
        "", "", "UDP", "10.129.0.48:41000", "172.30.0.10:53", "0.121", "", "", "",
    ]
    assert cells("Packet drops", "Names", RECORD) == [
        "", "", "UDP", "10.129.0.48:41000", "172.30.0.10:53", "", "", "", "", "RST,ACK"]


def test_raw_cells_show_values_as_stored() -> None:
    row = dict(zip(FIELD_NAMES, cells("Raw", "Names", RECORD), strict=True))
    assert row["Interfaces"] == "ens5,br-ex"
    assert row["DstPort"] == 53
    assert row["DnsFlagsResponseCode"] == "NXDomain"
    assert row["TimeFlowEndMs"] == ""
    assert row["SrcK8S_Zone"] == ""


def test_numbers_are_right_aligned() -> None:
    justify = {c.key: c.justify for c in state_of("DNS", "Resource").columns()}
    assert justify["DnsId"] == justify["DnsLatencyMs"] == "right"
    assert justify["DnsName"] == justify["SrcK8S_Name"] == "left"


def test_views_and_filtering_import_without_textual() -> None:
    code = (
        "import sys\n"
        "import netobserv_tui.tui.views, netobserv_tui.store.chips\n"
        "import netobserv_tui.tui.view_columns\n"
        "heavy = [m for m in ('textual', 'rich', 'netobserv_tui.tui.widgets', "
        "'netobserv_tui.tui.app') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_findings_view_has_no_flow_columns_and_no_enrichment() -> None:
    state = state_of("Findings", "Owner")
    assert state.view.findings and not state.view.enriched
    assert state.columns() == ()
    assert state.title() == "Findings"
    assert ViewState().prev_view() == state_of("Findings", "IP & port")
