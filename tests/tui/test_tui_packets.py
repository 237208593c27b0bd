"""The packet capture's app (``netobserv open FILE.pcapng``, ``netobserv packets``), Pilot-driven.

Files are written by the aggregator's own :class:`PcapngWriter` with real frames built by
dpkt and read back by the real :class:`PacketFile`; the live test follows a file while it
grows and a real TCP live stream (``FakeAggregator``) for the STATS.  No mocks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import dpkt
from textual.pilot import Pilot
from textual.widgets import DataTable
from tui_helpers import TOKEN, FakeAggregator, wait_until

from netobserv_tui.aggregator.pcapng import PcapngWriter
from netobserv_tui.store.pcap import PacketFile
from netobserv_tui.tui.packets import (
    HELP_KEYS,
    PacketHeader,
    PacketsApp,
    PacketScreen,
    PacketsHelpScreen,
    PacketTable,
)
from netobserv_tui.tui.widgets.filter_bar import FilterBar

SIZE = (160, 40)
APP = "netobserv-tui test"
T0 = 1_700_000_000_000_000_000

WEB = bytes([10, 1, 0, 5])
API = bytes([10, 96, 0, 10])
DNS = bytes([10, 96, 0, 53])
NAMES = ("SrcK8S_Namespace=shop; SrcK8S_Name=web-1; SrcK8S_Type=Pod; SrcK8S_OwnerName=web; "
         "SrcK8S_OwnerType=Deployment; SrcK8S_HostName=node1; DstK8S_Namespace=shop; "
         "DstK8S_Name=api-0; DstK8S_Type=Pod")
REPLY_NAMES = ("SrcK8S_Namespace=shop; SrcK8S_Name=api-0; SrcK8S_Type=Pod; "
               "DstK8S_Namespace=shop; DstK8S_Name=web-1; DstK8S_Type=Pod")


def tcp(src: bytes, dst: bytes, sport: int, dport: int, flags: int, payload: bytes = b"",
        seq: int = 1000, ack: int = 0) -> bytes:
    segment = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, win=502,
                           data=payload)
    ip = dpkt.ip.IP(src=src, dst=dst, p=6, ttl=64, data=segment)
    return bytes(dpkt.ethernet.Ethernet(src=bytes.fromhex("020000000001"),
                                        dst=bytes.fromhex("020000000002"), type=0x0800,
                                        data=ip))


def udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    datagram = dpkt.udp.UDP(sport=sport, dport=dport, ulen=8 + len(payload), data=payload)
    ip = dpkt.ip.IP(src=src, dst=dst, p=17, ttl=64, data=datagram)
    return bytes(dpkt.ethernet.Ethernet(src=bytes.fromhex("020000000001"),
                                        dst=bytes.fromhex("020000000002"), type=0x0800,
                                        data=ip))


class Sent(NamedTuple):
    node: str
    ifname: str
    direction: int
    frame: bytes
    comment: str


SYN, ACK, FIN, PSH = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_FIN, dpkt.tcp.TH_PUSH
#: Three conversations, in file order (oldest first):
#: web→api TCP 40000→80: 54 + 154 + 54 = 262 bytes in 3 packets (egress, node1 eth0);
#: api→web TCP 80→40000: 54 + 1054 = 1108 bytes in 2 packets (ingress, node1 eth0);
#: web→dns UDP 53000→53: 62 bytes in 1 packet (egress, node2 veth9, no names).
PACKETS = [
    Sent("node1", "eth0", 1, tcp(WEB, API, 40000, 80, SYN),
         f"Host=node1; Interface=eth0; Direction=egress; {NAMES}"),
    Sent("node1", "eth0", 0, tcp(API, WEB, 80, 40000, SYN | ACK, seq=5000, ack=1001),
         f"Host=node1; Interface=eth0; Direction=ingress; {REPLY_NAMES}"),
    Sent("node1", "eth0", 1, tcp(WEB, API, 40000, 80, PSH | ACK, b"g" * 100, seq=1001,
                                 ack=5001),
         f"Host=node1; Interface=eth0; Direction=egress; {NAMES}"),
    Sent("node1", "eth0", 0, tcp(API, WEB, 80, 40000, PSH | ACK, b"r" * 1000, seq=5001,
                                 ack=1101),
         f"Host=node1; Interface=eth0; Direction=ingress; {REPLY_NAMES}"),
    Sent("node2", "veth9", 1, udp(WEB, DNS, 53000, 53, b"q" * 20),
         "Host=node2; Interface=veth9; Direction=egress"),
    Sent("node1", "eth0", 1, tcp(WEB, API, 40000, 80, FIN | ACK, seq=1101, ack=6001),
         f"Host=node1; Interface=eth0; Direction=egress; {NAMES}"),
]


def write(writer: PcapngWriter, packets: list[Sent], first: int = 0) -> None:
    """``packets`` with timestamps T0 + n ms + n µs (n = first + i: ``HH:MM:20.00n00n``
    local time), flushed."""
    for i, sent in enumerate(packets, first):
        iface = writer.interface(sent.node, sent.ifname)
        writer.packet(iface, T0 + i * 1_001_000, sent.frame, len(sent.frame),
                      direction=sent.direction, comment=sent.comment)
    writer.flush()


def saved(path: Path, packets: list[Sent] = PACKETS) -> Path:
    writer = PcapngWriter.create(path, application=APP)
    write(writer, packets)
    writer.close()
    return path


def column(app: PacketsApp, label: str) -> list[str]:
    """A column's cells, top to bottom, by its label (the first with that label)."""
    table = app.query_one(PacketTable)
    labels = [c.label.plain for c in table.ordered_columns]
    index = labels.index(label)
    return [row[index] for row in app.rows()]


async def loaded(pilot: Pilot[Any], app: PacketsApp, count: int) -> None:
    await wait_until(pilot, lambda: len(app.rows()) == count, f"{count} rows")


async def fitting(pilot: Pilot[Any], app: PacketsApp) -> int:
    """Rows that fit the table, once it is laid out."""
    table = app.query_one(PacketTable)
    await wait_until(pilot, lambda: table.size.height > 1, "the table's layout")
    return table.size.height - 1


def header_text(app: PacketsApp) -> str:
    return app.query_one(PacketHeader).text()


async def test_open_conversations_packets_columns_and_chips(tmp_path: Path) -> None:
    path = saved(tmp_path / "capture.pcapng")
    app = PacketsApp(PacketFile(path), {"output": str(path)}, refresh_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, app, 6)
        # Packets, newest first, with microseconds.
        assert column(app, "Info") == [
            "FIN ACK seq=1101 ack=6001 win=502 len=0",
            "len=20",
            "PSH ACK seq=5001 ack=1101 win=502 len=1000",
            "PSH ACK seq=1001 ack=5001 win=502 len=100",
            "SYN ACK seq=5000 ack=1001 win=502 len=0",
            "SYN seq=1000 win=502 len=0",
        ]
        assert [t[-9:] for t in column(app, "Time")] == [
            "20.005005", "20.004004", "20.003003", "20.002002", "20.001001", "20.000000"]
        assert column(app, "Length") == ["54", "62", "1054", "154", "54", "54"]
        assert column(app, "Source")[:2] == ["10.1.0.5:40000", "10.1.0.5:53000"]
        assert "6 of 6 packets shown, newest first" in app.status_text()
        header = header_text(app)
        assert "packets 6" in header and "interfaces 2" in header and path.name in header

        # Conversations: exact packets and bytes per 5-tuple, most bytes first.
        await pilot.press("right")
        await loaded(pilot, app, 3)
        assert [(r[0], r[1], r[2], r[3], r[4]) for r in app.rows()] == [
            ("TCP", "10.96.0.10:80", "10.1.0.5:40000", "2", "1108"),
            ("TCP", "10.1.0.5:40000", "10.96.0.10:80", "3", "262"),
            ("UDP", "10.1.0.5:53000", "10.96.0.53:53", "1", "62"),
        ]
        assert column(app, "First seen")[1][-6:] == "20.000"
        assert column(app, "Last seen")[1][-6:] == "20.005"
        assert column(app, "Duration") == ["0.002s", "0.005s", "0.000s"]
        assert "3 of 3 conversations shown, most bytes first" in app.status_text()

        # Page Down: the names from the comments, the address where there is none.
        await pilot.press("pagedown")
        assert app.title_text() == "Conversations · Names"
        assert column(app, "Source") == ["shop/api-0:80", "shop/web-1:40000",
                                          "10.1.0.5:53000"]
        assert column(app, "Destination") == ["shop/web-1:40000", "shop/api-0:80",
                                               "10.96.0.53:53"]
        await pilot.press("pagedown")  # Interface
        assert column(app, "Node") == ["node1", "node1", "node2"]
        assert column(app, "Interface") == ["eth0", "eth0", "veth9"]
        assert column(app, "Dir") == ["ingress", "egress", "egress"]
        await pilot.press("pageup", "pageup")
        assert app.title_text() == "Conversations · IP & port"

        # Chips: keywords of the row's text, every one must match.
        await pilot.press("left")
        await loaded(pilot, app, 6)
        await pilot.press("slash")
        assert app.focused is app.query_one(FilterBar).input
        await pilot.press(*"syn", "enter")
        await loaded(pilot, app, 2)
        assert app.focused is app.query_one("#packets")
        await pilot.press("slash", *"ACK", "enter")
        await loaded(pilot, app, 1)
        assert column(app, "Info") == ["SYN ACK seq=5000 ack=1001 win=502 len=0"]
        assert app.query_one(FilterBar).chips_text() == "filter:  syn   ACK "
        assert "1 of 6 packets match" in app.status_text()
        await pilot.press("backspace")  # in the table: the last chip goes
        await loaded(pilot, app, 2)
        await pilot.press("escape")  # every chip goes
        await loaded(pilot, app, 6)
        app.add_filter("shop/web-1")  # a name matches in every column set
        await loaded(pilot, app, 5)
        app.add_filter("node2")
        await loaded(pilot, app, 0)
        assert "0 of 6 packets match" in app.status_text()
        await pilot.press("slash", "backspace")  # on the empty filter line, as in flows
        await loaded(pilot, app, 5)
        await pilot.press("escape")
        await loaded(pilot, app, 6)

        # Enter on a conversation: its packets, by an exact 5-tuple chip.
        await pilot.press("right")
        await loaded(pilot, app, 3)
        await pilot.press("down", "enter")
        await loaded(pilot, app, 3)
        assert app.title_text().startswith("Packets")
        assert app.query_one(FilterBar).chips_text() == (
            "filter:  TCP 10.1.0.5:40000 → 10.96.0.10:80 ")
        assert column(app, "Length") == ["54", "154", "54"]
        await pilot.press("right")  # the same chip narrows the conversations too
        await loaded(pilot, app, 1)
        assert app.rows()[0][3:5] == ["3", "262"]
        await pilot.press("backspace")
        await loaded(pilot, app, 3)
        app.add_filter("10.1.0.5")  # a keyword chip stays with the conversation's
        await loaded(pilot, app, 3)
        await pilot.press("down", "down", "enter")
        await loaded(pilot, app, 1)
        assert app.query_one(FilterBar).chips_text() == (
            "filter:  10.1.0.5   UDP 10.1.0.5:53000 → 10.96.0.53:53 ")
        assert column(app, "Info") == ["len=20"]
        await pilot.press("escape")
        await loaded(pilot, app, 6)
        await pilot.press("q")  # nothing bound: still running
        assert app.is_running
        await pilot.press("ctrl+c")
    assert app.return_value == "stopped"


async def test_enter_on_a_packet_shows_its_layers_and_bytes(tmp_path: Path) -> None:
    path = saved(tmp_path / "capture.pcapng")
    app = PacketsApp(PacketFile(path), {"output": str(path)}, refresh_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, app, 6)
        await pilot.press("down", "down", "down", "enter")  # the 154-byte request
        await wait_until(pilot, lambda: isinstance(app.screen, PacketScreen), "the packet")
        screen = app.screen
        assert isinstance(screen, PacketScreen)
        assert screen.title_text.startswith("Packet 3 of 6 · ")
        assert screen.title_text.endswith(" · eth0 on node1 · egress · 154 bytes")
        lines = screen.layer_lines
        assert [line for line in lines if not line.startswith(" ")] == [
            "Ethernet", "IPv4", "TCP", "Payload"]
        assert "    Source: 10.1.0.5" in lines and "    Destination port: 80" in lines
        assert "    Flags: PSH ACK" in lines and "    Length: 100 bytes" in lines
        assert len(screen.hex_lines) == 10  # 154 bytes, 16 a line
        assert screen.hex_lines[0].startswith("0000  02 00 00 00 00 02 02 00 00 00 00 01 "
                                              "08 00 45 00")
        assert screen.hex_lines[-1].endswith("gggggggggg")
        body = screen.query_one("#packet-layers").render()
        assert "Destination port: 80" in str(body)
        assert "shop/web-1" not in str(body)  # the comment has its own line
        assert "SrcK8S_Name=web-1" in str(screen.query_one("#packet-comment").render())
        await pilot.press("escape")
        assert not isinstance(app.screen, PacketScreen)
        await pilot.press("question_mark")
        assert isinstance(app.screen, PacketsHelpScreen)
        keys = app.screen.query_one("#help-keys", DataTable)
        assert keys.row_count == len(HELP_KEYS)  # the packets keys only, not the flows keys
        await pilot.press("escape")
        assert not isinstance(app.screen, PacketsHelpScreen)


async def test_open_mode_has_no_pause_and_up_down_set_the_rows(tmp_path: Path) -> None:
    path = saved(tmp_path / "capture.pcapng", PACKETS * 10)
    app = PacketsApp(PacketFile(path), {"output": str(path)}, refresh_interval=0.05)
    async with app.run_test(size=(160, 30)) as pilot:
        fit = await fitting(pilot, app)
        await loaded(pilot, app, fit)
        actions = {b.binding.action for b in app.active_bindings.values()}
        assert "toggle_pause" not in actions and "stop" not in actions
        assert "close_file" in actions
        await pilot.press("p")
        assert not app.paused
        await pilot.press("minus", "minus")
        await loaded(pilot, app, fit - 2)
        await pilot.press("slash", "up", "up", "up")  # on the filter line, as in flows
        await loaded(pilot, app, fit + 1)
        assert f"{fit + 1} of 60 packets shown, newest first (limit {fit + 1}, +/-)" in (
            app.status_text())
        await pilot.press(*"pap", "enter")  # typed, not a pause
        assert app.query_one(FilterBar).chips_text() == "filter:  pap "
        assert not app.paused


async def test_a_larger_file_builds_only_the_rows_shown_and_chips_search_it_all(
    tmp_path: Path,
) -> None:
    path = saved(tmp_path / "capture.pcapng", PACKETS * 200)
    app = PacketsApp(PacketFile(path), {"output": str(path)}, max_rows=25,
                     refresh_interval=0.05)
    async with app.run_test(size=(160, 40)) as pilot:
        shown = min(await fitting(pilot, app), 25)
        await loaded(pilot, app, shown)
        assert f"{shown} of 1,200 packets shown" in app.status_text()
        await pilot.press("right")
        await loaded(pilot, app, 3)
        assert [r[3:5] for r in app.rows()] == [
            ["400", f"{1108 * 200}"], ["600", f"{262 * 200}"], ["200", f"{62 * 200}"]]
        await pilot.press("left")
        # The oldest packet is far beyond the rows kept: the chip tries every packet.
        app.add_filter("20.000000")
        await loaded(pilot, app, 1)
        assert column(app, "Info") == ["SYN seq=1000 win=502 len=0"]
        await pilot.press("escape")
        app.add_filter("syn seq=1000")
        await wait_until(pilot, lambda: "200 of 1,200 packets match" in app.status_text(),
                         "every SYN counted")
        assert len(app.rows()) == shown


async def test_live_capture_follows_the_growing_file_and_the_stats(
    tmp_path: Path, aggregator: FakeAggregator
) -> None:
    path = tmp_path / "pcap" / "capture.pcapng"  # not yet written when the app attaches
    app = PacketsApp(None, {"target": "local host", "capture": "packets"}, starting=True,
                     refresh_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        assert "Starting the capture" in app.status_text()
        assert "stop" in {b.binding.action for b in app.active_bindings.values()}
        app.show_progress("agent on node1: ready")
        assert "agent on node1: ready" in str(app.query_one("#progress").render())
        app.attach(("127.0.0.1", aggregator.port, TOKEN), str(path),
                   {"target": "local host", "capture": "packets on eth0",
                    "output": str(tmp_path)})
        await wait_until(pilot, lambda: app.connected, "the live stream")
        await wait_until(pilot, lambda: app.reads >= 2, "two reads")
        assert "Waiting for the packet file" in app.status_text()

        writer = PcapngWriter.create(path, application=APP)
        write(writer, PACKETS[:3])
        await loaded(pilot, app, 3)
        assert column(app, "Length") == ["154", "54", "54"]
        write(writer, PACKETS[3:], first=3)
        await loaded(pilot, app, 6)
        assert column(app, "Length")[:3] == ["54", "62", "1054"]

        # STATS from the stream: packets written, bytes, agents, and the loss in red.
        # A packet capture's STATS frame, as the aggregator sends it (agent_stats summed).
        stats: dict[str, Any] = {"captured_packets": 6, "captured_bytes": 1432, "agents": 2,
                                 "agent_stats": {"packets_lost": 3, "export_lost_packets": 2,
                                                 "sent_packets": 6}}
        await aggregator.send_stats(**stats)
        await wait_until(pilot, lambda: app.stats.get("captured_packets") == 6, "STATS")
        header = app.query_one(PacketHeader)
        text = header_text(app)
        assert "written 6 packets" in text and "1.4 kB" in text and "agents 2" in text
        assert "LOST 5 packets" in text
        content = header.render()
        lost_at = content.plain.index("LOST 5 packets")
        assert any("red" in str(span.style) and span.start <= lost_at < span.end
                   for span in content.spans)
        app.update_stats({"captured_packets": 7, "captured_bytes": 1500, "agents": 2,
                          "agent_stats": {"packets_lost": 0, "export_lost_packets": 0}})
        assert "lost 0" in header_text(app) and "written 7 packets" in header_text(app)

        # Pause: the rows stay while packets arrive; resume shows them.
        await pilot.press("p")
        assert app.paused and "PAUSED" in app.status_text()
        write(writer, PACKETS[:1], first=6)
        await wait_until(pilot, lambda: app.packets_read == 7, "the 7th packet read")
        await pilot.pause(0.15)
        assert len(app.rows()) == 6
        await pilot.press("p")
        await loaded(pilot, app, 7)
        assert column(app, "Info")[0] == "SYN seq=1000 win=502 len=0"

        # Conversations keep counting the new packets only.
        await pilot.press("right")
        await loaded(pilot, app, 3)
        assert [r[3:5] for r in app.rows()] == [["2", "1108"], ["4", "316"], ["1", "62"]]
        write(writer, PACKETS[1:2], first=7)
        await wait_until(pilot, lambda: app.rows()[0][3:5] == ["3", "1162"], "a new packet "
                         "counted in its conversation")
        writer.close()
        await pilot.press("ctrl+c")
    assert app.return_value == "stopped"


async def test_request_stop_returns_its_reason(tmp_path: Path) -> None:
    app = PacketsApp(None, {"target": "local host"}, starting=True, refresh_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        app.request_stop("time limit reached")
        await pilot.pause()
    assert app.return_value == "time limit reached"


def test_the_app_needs_a_file_or_a_start() -> None:
    try:
        PacketsApp(None, {})
    except ValueError as exc:
        assert "starting=True" in str(exc)
    else:
        raise AssertionError("PacketsApp(None, {}) did not raise")


async def test_brackets_in_chips_and_messages_are_text_not_markup(tmp_path: Path) -> None:
    """Packet chips are keywords: ``[/`` is searched as typed; and a message quoting data
    (an interface or file name with brackets) is shown as is, never parsed as markup."""
    path = saved(tmp_path / "capture.pcapng")
    app = PacketsApp(PacketFile(path), {"output": str(path)}, refresh_interval=0.05)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await loaded(pilot, app, 6)
        bar = app.query_one(FilterBar)
        bar.input.focus()
        bar.input.value = "/[/"
        await pilot.press("enter")
        await wait_until(pilot, lambda: bar.chips_text() == "filter:  /[/ ", "the chip")
        app.notify("cannot read [/x] [b]eth0[/b]", title="Packet file", severity="error")
        for _ in range(5):
            await pilot.pause(0.05)
        assert app.is_running
        (note,) = list(app._notifications)
        assert note.message == "cannot read [/x] [b]eth0[/b]" and not note.markup
