"""The Findings view: what it lists for a saved lab capture, Enter filters the flows to a
finding, the header's line; live, from the capture's SQLite file as it grows, and from the
latest flows when the app has no file (a cluster capture's stream); a cluster capture
searched through its aggregator gets the whole capture's from the aggregator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fixture_capture import DEMO_FIXTURE, fixture_capture, fixture_records
from live_helpers import TOKEN, base_record, live_capture
from textual.pilot import Pilot
from tui_helpers import FakeAggregator, wait_until

from netobserv_tui.lab.demo import SLOW_DNS_MS
from netobserv_tui.store import RemoteStore, open_store
from netobserv_tui.store.remote import ReportRefused
from netobserv_tui.tui.app import FlowsApp
from netobserv_tui.tui.findings import FindingsList
from netobserv_tui.tui.widgets import CaptureHeader, FlowTable

SIZE = (160, 40)

LAB_TITLES = [
    "NXDOMAIN: 1 answer for 1 name (missing.lab.test)",
    "SYN unanswered: 3 connection attempts to 1 destination (198.18.0.11:8081)",
    "Drops NETFILTER_DROP: 3 packets in 3 flows",
    "Drops NO_SOCKET: 16 packets in 2 flows (ping replies, taken by ping's "
    "raw socket: normal)",
    "Drops QUEUE_PURGE: 8 packets in 8 flows (a closing socket's queues "
    "purged: normal)",
    "Slowest RTT: 0.067 ms to 198.18.0.11:8080",
    "Slowest DNS answer: 1 ms for missing.lab.test from 198.18.0.12",
]
NETFILTER = "SKB_DROP_REASON_NETFILTER_DROP"
LAB_LINE = "3 findings: NXDOMAIN 1 name · 3 SYN unanswered · drops NETFILTER_DROP"


def header_text(app: FlowsApp) -> str:
    return app.query_one(CaptureHeader).render().plain


def listed(app: FlowsApp) -> list[str]:
    return [finding.title for finding in app.query_one(FindingsList).findings]


def shown_rows(app: FlowsApp) -> list[str]:
    table = app.query_one(FlowTable)
    return [" ".join(cell.plain for cell in table.get_row_at(row))
            for row in range(table.row_count)]


async def open_findings(pilot: Pilot[str], app: FlowsApp) -> None:
    await wait_until(pilot, lambda: app.findings_runs > 0, "the findings")
    await pilot.press("left")  # Overview -> Findings
    assert app.view_state.title() == "Findings"


async def test_saved_capture_lists_its_findings_and_announces_them(tmp_path: Path) -> None:
    db = fixture_capture(tmp_path).db_path
    app = FlowsApp(None, {"output": "lab.db"}, store=open_store(db), refresh_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.findings_runs > 0, "the findings")
        assert f"{LAB_LINE} (← to the Findings view)" in header_text(app)
        await open_findings(pilot, app)
        assert listed(app) == LAB_TITLES
        findings_list = app.query_one(FindingsList)
        assert findings_list.display and not app.query_one(FlowTable).display
        assert findings_list.has_focus
        # Each finding is one row: its title over its evidence, then its chips (one a line).
        first = [cell.plain for cell in findings_list.get_row_at(0)]
        assert first == [
            "NXDOMAIN: 1 answer for 1 name (missing.lab.test)\n"
            "  missing.lab.test  1 answer · asked by 198.18.0.10",
            "DnsFlagsResponseCode=NXDomain\nDnsName=missing.lab.test"]
        assert app.status_text() == (
            "Findings · 7 findings in the whole capture; Enter filters the flows to the one "
            "selected")
        await pilot.press("right")
        assert app.view_state.title() == "Overview · IP & port"
        assert app.query_one(FlowTable).display


async def test_enter_filters_the_table_to_the_finding(tmp_path: Path) -> None:
    db = fixture_capture(tmp_path).db_path
    app = FlowsApp(None, {"output": "lab.db"}, store=open_store(db), refresh_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await open_findings(pilot, app)
        await pilot.press("down", "enter")  # the unanswered SYNs
        assert app.chips.texts == ("Proto=6", "DstAddr=198.18.0.11", "DstPort=8081", "Flags=2")
        assert app.view_state.title() == "Overview · IP & port"
        table = app.query_one(FlowTable)
        await wait_until(pilot, lambda: table.row_count == 6 and table.matched == 6, "the SYNs")
        assert all("198.18.0.11:8081" in row for row in shown_rows(app))
        # Back in the Findings view, the empty filter line's Enter chooses too.
        await pilot.press("left")
        app.query_one(FindingsList).move_cursor(row=2)  # NETFILTER_DROP
        app.query_one("#filter-input").focus()
        await pilot.press("enter")
        assert app.chips.texts == ("PktDropLatestDropCause=SKB_DROP_REASON_NETFILTER_DROP",)
        await wait_until(pilot, lambda: table.row_count == 3 and table.matched == 3,
                         "the dropped SYNs")


async def test_json_capture_has_the_same_findings(tmp_path: Path) -> None:
    json_path = fixture_capture(tmp_path).json_path
    app = FlowsApp(None, {"output": "lab.json"}, store=open_store(json_path),
                   refresh_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await open_findings(pilot, app)
        assert listed(app) == LAB_TITLES


SYN_DROP = base_record(
    0, DstPort=8081, Bytes=74, Packets=1, Flags=2, PktDropPackets=1, PktDropBytes=60,
    PktDropLatestDropCause="SKB_DROP_REASON_NETFILTER_DROP",
)


async def test_live_findings_follow_the_sqlite_file(tmp_path: Path) -> None:
    async with live_capture(tmp_path) as capture:
        app = capture.app(refresh_interval=0.05, findings_interval=0.1)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.connected, "the live stream")
            await open_findings(pilot, app)
            assert listed(app) == []
            assert "findings:" not in header_text(app)
            await capture.send([SYN_DROP])
            await wait_until(pilot, lambda: len(listed(app)) == 2, "the live findings")
            assert listed(app) == [
                "SYN unanswered: 1 connection attempt to 1 destination (198.18.0.20:8081)",
                "Drops NETFILTER_DROP: 1 packet in 1 flow"]
            assert ("2 findings: 1 SYN unanswered · drops NETFILTER_DROP"
                    in header_text(app))


async def test_without_a_file_findings_come_from_the_latest_flows(tmp_path: Path) -> None:
    aggregator = FakeAggregator()
    await aggregator.start()
    try:
        app = FlowsApp(("127.0.0.1", aggregator.port, "s3cret"), {"target": "cluster"},
                       refresh_interval=0.05, findings_interval=0.1)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.connected, "the live stream")
            await aggregator.send_flows([SYN_DROP])
            await open_findings(pilot, app)
            await wait_until(pilot, lambda: len(listed(app)) == 2, "the findings")
            assert app.status_text() == (
                "Findings · 2 findings in the latest 1 flow held here (the whole "
                "capture's come with its SQLite file: netobserv open); Enter filters the "
                "flows to the one selected")
    finally:
        await aggregator.close()


#: Connection attempts nobody answered, from four clients: more than the table holds.
UNANSWERED = [base_record(i, DstPort=8081, Flags=2) for i in range(12)]


async def test_a_cluster_capture_gets_the_whole_captures_findings_from_its_aggregator(
    tmp_path: Path,
) -> None:
    async with live_capture(tmp_path) as capture:
        store = RemoteStore("127.0.0.1", capture.aggregator.port, TOKEN)
        app = capture.app(store=store, max_rows=5, refresh_interval=0.05,
                          findings_interval=0.1)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.connected, "the live stream")
            await open_findings(pilot, app)
            await capture.send(UNANSWERED)
            await wait_until(pilot, lambda: len(listed(app)) == 1, "the findings")
            assert listed(app) == [
                "SYN unanswered: 12 connection attempts to 1 destination (198.18.0.20:8081)"]
            assert app.query_one(FindingsList).findings[0].evidence == (
                "198.18.0.20:8081  12 attempts from 198.18.0.10, 198.18.0.11, 198.18.0.12, "
                "…",)
            # The table holds the latest 5; the findings are still the whole capture's.
            await wait_until(pilot, lambda: len(app.query_one(FlowTable).ring()) == 5,
                             "the latest flows")
            runs = app.findings_runs
            await wait_until(pilot, lambda: app.findings_runs > runs, "one more computation")
            assert len(listed(app)) == 1 and listed(app)[0].startswith(
                "SYN unanswered: 12 connection attempts")
            assert app.status_text() == (
                "Findings · 1 findings in the whole capture; Enter filters the flows to the "
                "one selected")
            assert "1 finding: 12 SYN unanswered" in header_text(app)
        store.close()


async def test_an_aggregator_without_reports_gives_the_latest_flows_findings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def older(self: RemoteStore, name: str) -> list[dict[str, object]]:
        raise ReportRefused(f"the aggregator at {self.path} does not compute reports")

    monkeypatch.setattr(RemoteStore, "report", older)
    async with live_capture(tmp_path) as capture:
        store = RemoteStore("127.0.0.1", capture.aggregator.port, TOKEN)
        app = capture.app(store=store, max_rows=5, refresh_interval=0.05,
                          findings_interval=0.1)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.connected, "the live stream")
            await open_findings(pilot, app)
            await capture.send(UNANSWERED)
            await wait_until(pilot, lambda: listed(app) == [
                "SYN unanswered: 5 connection attempts to 1 destination (198.18.0.20:8081)"],
                "the latest flows' findings")
            assert app.status_text() == (
                "Findings · 1 findings in the latest 5 flows held here (the whole capture's "
                "come with its SQLite file: netobserv open); Enter filters the flows to the "
                "one selected")
        store.close()


def _count(records: list[dict[str, Any]], **where: Any) -> int:
    return sum(all(r.get(k) == v for k, v in where.items()) for r in records)


async def test_the_lab_demo_shows_each_problem_the_lab_makes(tmp_path: Path) -> None:
    """The README's main job, recorded (fixtures/lab-demo-capture.json): the lab's name
    that does not exist, its port with no listener behind an iptables DROP and its slow DNS
    server are findings with the numbers the records give (counted here from the JSON,
    not by the findings' SQL), and Enter filters the flows to each one's records."""
    records = fixture_records(DEMO_FIXTURE)
    nx = {(r["DnsId"], r["SrcAddr"], r["SrcPort"], r["DstAddr"], r["DstPort"])
          for r in records if r.get("DnsFlagsResponseCode") == "NXDomain"}
    attempts = {(r["SrcAddr"], r["SrcPort"]) for r in records
                if r["DstPort"] == 8081 and r["Flags"] == 2}
    fw = [r for r in records if r.get("PktDropLatestDropCause") == NETFILTER]
    latency = {name: max(r["DnsLatencyMs"] for r in records if r.get("DnsName") == name
                         and r.get("DnsLatencyMs") is not None)
               for name in ("slow.lab.test", "web.lab.test", "missing.lab.test")}
    assert latency["slow.lab.test"] >= SLOW_DNS_MS > 2 * max(latency["web.lab.test"],
                                                             latency["missing.lab.test"])
    expected = {
        "nxdomain": f"NXDOMAIN: {len(nx)} answers for 1 name (missing.lab.test)",
        "syn_unanswered": f"SYN unanswered: {len(attempts)} connection attempts to 1 "
                          "destination (198.18.0.11:8081)",
        "drop": f"Drops NETFILTER_DROP: {sum(r['PktDropPackets'] for r in fw)} packets in "
                f"{len(fw)} flows",
        "dns_latency": f"Slowest DNS answer: {latency['slow.lab.test']} ms for slow.lab.test "
                       "from 198.18.0.12",
    }
    rows = {  # the records each finding's Enter shows
        "nxdomain": _count(records, DnsFlagsResponseCode="NXDomain",
                           DnsName="missing.lab.test"),
        "syn_unanswered": _count(records, Proto=6, DstAddr="198.18.0.11", DstPort=8081,
                                 Flags=2),
        "drop": len(fw),
        "dns_latency": _count(records, DnsName="slow.lab.test"),
    }
    assert min(rows.values()) > 0 and len(nx) > 1 and len(attempts) > 1
    db = fixture_capture(tmp_path, DEMO_FIXTURE).db_path
    app = FlowsApp(None, {"output": "demo.db"}, store=open_store(db), refresh_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await open_findings(pilot, app)
        titles = listed(app)
        table = app.query_one(FlowTable)
        for kind, title in expected.items():
            assert title in titles, (title, titles)
            if app.view_state.title() != "Findings":
                await pilot.press("left")  # Overview -> Findings
            app.query_one(FindingsList).move_cursor(row=titles.index(title))
            await pilot.press("enter")
            assert app.view_state.title() == "Overview · IP & port", kind
            await wait_until(pilot, lambda kind=kind: table.matched == rows[kind]
                             and table.row_count == rows[kind], f"the flows of {kind}")
            await pilot.press("escape")
