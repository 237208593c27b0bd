"""Findings: what a capture says is wrong, computed in SQL over a capture's whole ``flow``
table (the TUI's Findings view and the header line that announces them).

Plain Python and :mod:`sqlite3`, no Textual.  :func:`findings` takes an open connection or a
path (opened read-only) and returns a list of :class:`Finding`, problems first:

``nxdomain``
    DNS answers with the code NXDomain, by queried name: distinct answers (DNS id and
    endpoints; a flow seen on two interfaces counts once), and who asked (the answer's
    destination: its workload when the capture knows it, else its address).
``syn_unanswered`` and ``syn_refused``
    TCP connection attempts: 4-tuples with a SYN and no ACK nor RST, whose reverse 4-tuple
    never sent a SYN+ACK; refused when the reverse sent a RST, unanswered otherwise.  By
    destination (workload and port, else address and port), each with the kernel's drop
    causes of those attempts' packets, either way, and what they most likely mean
    (:data:`ATTEMPT_CAUSES`: ``NETFILTER_DROP`` is a firewall rule): the likely cause of
    the silence or the refusal.
``drops``
    One finding per kernel drop cause: dropped packets and flows, the top flows.  Causes
    that are the kernel's housekeeping rather than trouble (a closing socket's queues
    purged, ping replies offered to a ping socket after a raw socket took them...) are
    informational: :data:`BENIGN_DROPS`.
``retransmits``
    TCP retransmissions by flow (per 4-tuple, the largest count seen on one interface).
``rtt`` and ``dns_latency`` (informational)
    The slowest smoothed TCP RTTs by server (an end that received a SYN in the capture,
    else the end with the lower port: a reply's RTT counts for the server, never for a
    client's ephemeral port), the slowest DNS answers by name and server.

Counts of events (answers, attempts, packets, segments) are multiplied by the ``Sampling``
column when it is above 1 (one packet in N was looked at), and then say "about"; counts
of things seen (names, destinations, flows, records) are not.

A finding's ``chips`` are filter chips (:mod:`.chips` language) that show its flows in the
table.  A column that a capture did not record (its feature off) is NULL in every row: its
finding is simply absent.  Each finding is one or two scans of the table (``NOT INDEXED``:
a live capture's file has no index, and grouping in an index's order reads rows at
random), and the RTTs' queries one more each, for the ends that received a SYN; on
100,000 flows (measured before that scan was added), all of them take about a sixth of
a bare fetchall of the rows for a capture with few problems and half of it for one full
of them (unanswered SYNs, drops, NXDOMAIN, an RTT on every TCP record):
``tests/bench/bench_store.py``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

from netobserv_tui.model.fields import PROTO_NAMES

from .chips import endpoint
from .tables import read_only, records_table

Severity: TypeAlias = Literal["problem", "info"]

#: Evidence rows kept per finding.
TOP: Final = 5
#: Drop causes reported (the most dropped packets first).
MAX_DROP_CAUSES: Final = 5
#: Names, destinations... quoted in a title.
TITLE_NAMES: Final = 3

_SYN: Final = 0x02
_RST: Final = 0x04
_ACK: Final = 0x10
_DNS_RESPONSE: Final = 0x8000
_DROP_PREFIX: Final = "SKB_DROP_REASON_"


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the capture shows, with the numbers behind it."""

    #: ``nxdomain``, ``syn_unanswered``, ``syn_refused``, ``drops``, ``retransmits``,
    #: ``rtt``, ``dns_latency``.
    kind: str
    #: One line with the numbers.
    title: str
    #: The top groups with their counts, one line each.
    evidence: tuple[str, ...]
    #: Filter chip texts that show the finding's flows.
    chips: tuple[str, ...]
    #: A few words for the header line (``NXDOMAIN 2 names``).
    summary: str
    severity: Severity = "problem"

    def to_json(self) -> dict[str, Any]:
        """The finding as a JSON object (the aggregator's ``findings`` report)."""
        return {"kind": self.kind, "title": self.title, "evidence": list(self.evidence),
                "chips": list(self.chips), "summary": self.summary, "severity": self.severity}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Finding:
        """The finding :meth:`to_json` gave; :class:`ValueError` if ``data`` is not one."""
        texts = {key: data.get(key) for key in ("kind", "title", "summary", "severity")}
        lists = {key: data.get(key) for key in ("evidence", "chips")}
        if not (all(isinstance(v, str) for v in texts.values())
                and all(isinstance(v, list) and all(isinstance(x, str) for x in v)
                        for v in lists.values())):
            raise ValueError("a finding is {kind, title, summary, severity: str, "
                             "evidence, chips: [str]}")
        severity = texts["severity"]
        if severity != "problem" and severity != "info":
            raise ValueError(f"unknown finding severity {severity!r}")
        return cls(str(texts["kind"]), str(texts["title"]), tuple(lists["evidence"] or ()),
                   tuple(lists["chips"] or ()), str(texts["summary"]), severity)


def findings(source: sqlite3.Connection | str | Path) -> list[Finding]:
    """Every finding of the capture in ``source`` (a connection, or a file opened read-only);
    problems first, in the order of the module's list.  No table yet: no finding."""
    with read_only(source) as conn:
        return _findings(conn)


def findings_from_records(records: Iterable[Mapping[str, Any]]) -> list[Finding]:
    """The findings of ``records`` (dicts of fields, as the stores and the live stream give
    them), computed by the same SQL in a table in memory: for a capture without its SQLite
    file at hand (a JSON file, the latest flows of a cluster capture)."""
    with records_table(records) as conn:
        return _findings(conn)


def _findings(conn: sqlite3.Connection) -> list[Finding]:
    columns = {row[1] for row in conn.execute("PRAGMA table_info(flow)")}
    if not columns:
        return []
    scale = _SCALE if "Sampling" in columns else "1"
    result: list[Finding] = []
    for needs, compute in _COMPUTE:
        if needs <= columns:
            result.extend(compute(conn, scale))
    result.sort(key=lambda f: f.severity != "problem")
    return result


# -- who: a workload when the capture knows it, else an address ------------------------


def _who_label(namespace: Any, owner: Any, addr: Any, port: Any = None) -> str:
    if owner:
        name = f"{namespace}/{owner}" if namespace else str(owner)
        return f"{name}:{port}" if port else name
    return endpoint(addr, port) or "?"


def _who_chips(side: str, namespace: Any, owner: Any, addr: Any,
               port: Any = None) -> tuple[str, ...]:
    chips: list[str] = []
    if owner:
        if namespace:
            chips.append(f"{side}K8S_Namespace={namespace}")
        chips.append(f"{side}K8S_OwnerName={owner}")
    elif addr:
        chips.append(f"{side}Addr={addr}")
    if port:
        chips.append(f"{side}Port={port}")
    return tuple(chips)


def _plural(count: int, word: str, plural: str | None = None, *, about: bool = False) -> str:
    """``1 answer``, ``3 answers``; ``about 300 answers`` for a count scaled by sampling."""
    text = f"{count:,} {word if count == 1 and not about else (plural or word + 's')}"
    return f"about {text}" if about else text


#: How many packets one seen packet stands for: the sampling rate (0 or 1: every packet).
_SCALE: Final = "(CASE WHEN Sampling > 1 THEN Sampling ELSE 1 END)"


def _names(names: Sequence[str], total: int) -> str:
    shown = ", ".join(names[:TITLE_NAMES])
    return f"{shown}, …" if total > TITLE_NAMES else shown


def _ms_from_ns(ns: float) -> str:
    ms = ns / 1e6
    if ms < 1:
        return f"{ms:.3f} ms"
    if ms < 100:
        return f"{ms:.1f} ms"
    return f"{ms:,.0f} ms"


def _split(text: Any) -> list[str]:
    """The values of ``group_concat(DISTINCT ...)`` (comma-separated), sorted."""
    return sorted(str(text).split(",")) if text else []


def _who_list(text: Any) -> str:
    values = _split(text) or ["?"]
    return _names(values, len(values))


# -- NXDOMAIN ----------------------------------------------------------------------------

#: One DNS answer: a flow seen on several interfaces is one answer.
_ANSWER_KEY: Final = ("DnsId || '|' || SrcAddr || '|' || SrcPort || '|' || DstAddr || '|' "
                      "|| DstPort")
#: Who asked (the answer's destination) / who answered (its source), as one text.
_ASKER: Final = ("CASE WHEN DstK8S_OwnerName IS NOT NULL THEN "
                 "coalesce(DstK8S_Namespace || '/', '') || DstK8S_OwnerName ELSE DstAddr END")
_SERVER: Final = ("CASE WHEN SrcK8S_OwnerName IS NOT NULL THEN "
                  "coalesce(SrcK8S_Namespace || '/', '') || SrcK8S_OwnerName ELSE SrcAddr END")


def _nxdomain(conn: sqlite3.Connection, scale: str) -> list[Finding]:
    # One row per answer (its records' largest sampling rate), then per name.
    groups = conn.execute(f"""
        SELECT name, sum(rate) AS answers, max(rate) > 1, group_concat(askers, ',')
        FROM (SELECT coalesce(DnsName, '?') AS name, max({scale}) AS rate,
                     group_concat(DISTINCT {_ASKER}) AS askers
              FROM flow NOT INDEXED WHERE lower(DnsFlagsResponseCode) = 'nxdomain'
              GROUP BY name, {_ANSWER_KEY})
        GROUP BY name ORDER BY answers DESC, name
    """).fetchall()
    if not groups:
        return []
    total = sum(answers for _, answers, _, _ in groups)
    about = any(scaled for _, _, scaled, _ in groups)
    names = [name for name, _, _, _ in groups]
    evidence = tuple(
        f"{name}  {_plural(answers, 'answer', about=bool(scaled))} · asked by "
        f"{_who_list(','.join(sorted(set(_split(askers)))))}"
        for name, answers, scaled, askers in groups[:TOP])
    chips: tuple[str, ...] = ("DnsFlagsResponseCode=NXDomain",)
    if len(groups) == 1 and names[0] != "?":
        chips += (f"DnsName={names[0]}",)
    return [Finding(
        "nxdomain",
        f"NXDOMAIN: {_plural(total, 'answer', about=about)} for "
        f"{_plural(len(groups), 'name')} ({_names(names, len(names))})",
        evidence, chips, f"NXDOMAIN {_plural(len(groups), 'name')}")]


# -- TCP connection attempts -------------------------------------------------------------

_SOURCE: Final = ("CASE WHEN SrcK8S_OwnerName IS NOT NULL THEN "
                  "coalesce(SrcK8S_Namespace || '/', '') || SrcK8S_OwnerName ELSE SrcAddr END")

#: 4-tuples that sent a SYN without ACK nor RST, and what came back on the reverse 4-tuple:
#: no SYN+ACK and a RST (refused) or nothing (unanswered); by destination.
_ATTEMPTS: Final = f"""
    WITH syn AS MATERIALIZED (
        SELECT SrcAddr, SrcPort, DstAddr, DstPort, {_SOURCE} AS source,
               DstK8S_Namespace AS ns, DstK8S_OwnerName AS owner,
               min(Flags) AS fmin, max(Flags) AS fmax, max({{scale}}) AS rate
        FROM flow NOT INDEXED WHERE Proto = 6 AND (Flags & {_SYN | _ACK | _RST}) = {_SYN}
        GROUP BY SrcAddr, SrcPort, DstAddr, DstPort
    ), back AS (
        SELECT SrcAddr, SrcPort, DstAddr, DstPort,
               max((Flags & {_SYN | _ACK}) = {_SYN | _ACK}) AS synack,
               max((Flags & {_RST}) != 0) AS rst
        FROM flow NOT INDEXED WHERE Proto = 6 AND ((Flags & {_SYN | _ACK}) = {_SYN | _ACK}
                                                   OR (Flags & {_RST}) != 0)
          AND (DstAddr, DstPort, SrcAddr, SrcPort) IN
              (SELECT SrcAddr, SrcPort, DstAddr, DstPort FROM syn)
        GROUP BY SrcAddr, SrcPort, DstAddr, DstPort
    ), {{dropped}}
    SELECT CASE WHEN back.rst THEN 'syn_refused' ELSE 'syn_unanswered' END AS state,
           syn.ns, syn.owner, CASE WHEN syn.owner IS NULL THEN syn.DstAddr END AS addr,
           syn.DstPort AS port, sum(syn.rate) AS attempts, group_concat(DISTINCT syn.source),
           min(syn.fmin), max(syn.fmax), max(syn.rate) > 1,
           coalesce(group_concat(out.causes), '') || ','
           || coalesce(group_concat(back_drop.causes), '')
    FROM syn LEFT JOIN back
      ON back.SrcAddr = syn.DstAddr AND back.SrcPort = syn.DstPort
     AND back.DstAddr = syn.SrcAddr AND back.DstPort = syn.SrcPort
    LEFT JOIN dropped AS out
      ON out.a = syn.SrcAddr AND out.ap = syn.SrcPort
     AND out.b = syn.DstAddr AND out.bp = syn.DstPort
    LEFT JOIN dropped AS back_drop
      ON back_drop.a = syn.DstAddr AND back_drop.ap = syn.DstPort
     AND back_drop.b = syn.SrcAddr AND back_drop.bp = syn.SrcPort
    WHERE coalesce(back.synack, 0) = 0
    GROUP BY state, syn.ns, syn.owner, addr, port
    ORDER BY attempts DESC, addr, syn.owner, port
"""
#: The kernel's drop causes of TCP packets per 4-tuple (joined to the attempts both ways:
#: the SYN, or what came back).
_DROPPED: Final = """dropped AS MATERIALIZED (
        SELECT SrcAddr AS a, SrcPort AS ap, DstAddr AS b, DstPort AS bp,
               group_concat(DISTINCT PktDropLatestDropCause) AS causes
        FROM flow NOT INDEXED WHERE Proto = 6 AND PktDropLatestDropCause IS NOT NULL
        GROUP BY a, ap, b, bp
    )"""
_NOT_DROPPED: Final = ("dropped AS (SELECT NULL AS a, NULL AS ap, NULL AS b, NULL AS bp, "
                       "NULL AS causes WHERE 0)")
#: What a drop cause of a connection attempt's packets most likely is, in a few words (the
#: kernel's ``include/net/dropreason-core.h``); another cause is named alone.
ATTEMPT_CAUSES: Final[Mapping[str, str]] = {
    "SKB_DROP_REASON_NETFILTER_DROP": "firewall rule",
    "SKB_DROP_REASON_NO_SOCKET": "no listener",
    "SKB_DROP_REASON_TCP_LISTEN_OVERFLOW": "accept queue full",
    "SKB_DROP_REASON_SOCKET_BACKLOG": "socket backlog full",
    "SKB_DROP_REASON_IP_INNOROUTES": "no route",
    "SKB_DROP_REASON_IP_OUTNOROUTES": "no route",
    "SKB_DROP_REASON_NEIGH_FAILED": "no ARP/NDP answer",
    "SKB_DROP_REASON_NEIGH_QUEUEFULL": "ARP/NDP queue full",
    "SKB_DROP_REASON_TC_INGRESS": "tc filter",
    "SKB_DROP_REASON_TC_EGRESS": "tc filter",
    "SKB_DROP_REASON_XDP": "XDP program",
}


def _likely(causes: Any) -> str:
    """`` · dropped: NETFILTER_DROP (firewall rule)`` for the causes that ``group_concat``
    joined; "" when none."""
    names = sorted({cause for cause in str(causes or "").split(",") if cause})
    told = [name.removeprefix(_DROP_PREFIX)
            + (f" ({ATTEMPT_CAUSES[name]})" if name in ATTEMPT_CAUSES else "")
            for name in names]
    return " · dropped: " + ", ".join(told) if told else ""


def _attempts(conn: sqlite3.Connection, scale: str) -> list[Finding]:
    columns = {row[1] for row in conn.execute("PRAGMA table_info(flow)")}
    dropped = _DROPPED if "PktDropLatestDropCause" in columns else _NOT_DROPPED
    rows = conn.execute(_ATTEMPTS.format(scale=scale, dropped=dropped)).fetchall()
    result = []
    for kind, what, short in (("syn_unanswered", "SYN unanswered", "SYN unanswered"),
                              ("syn_refused", "SYN refused (RST)", "SYN refused")):
        groups = [row[1:] for row in rows if row[0] == kind]
        if not groups:
            continue
        total = sum(g[4] for g in groups)
        about = any(g[8] for g in groups)
        labels = [_who_label(*g[:4]) for g in groups]
        evidence = tuple(
            f"{label}  {_plural(g[4], 'attempt', about=bool(g[8]))} from {_who_list(g[5])}"
            f"{_likely(g[9])}"
            for label, g in zip(labels[:TOP], groups[:TOP], strict=False))
        chips: tuple[str, ...] = ("Proto=6",)
        if len(groups) == 1:
            chips += _who_chips("Dst", *groups[0][:4])
        if min(g[6] for g in groups) == max(g[7] for g in groups):
            chips += (f"Flags={groups[0][6]}",)
        result.append(Finding(
            kind,
            f"{what}: {_plural(total, 'connection attempt', about=about)} to "
            f"{_plural(len(groups), 'destination')} ({_names(labels, len(labels))})",
            evidence, chips, f"{'about ' if about else ''}{total:,} {short}"))
    return result


# -- drops -------------------------------------------------------------------------------

#: Drop causes that are the kernel's housekeeping, not trouble: their findings are
#: informational, with the reason in the title (``include/net/dropreason-core.h``).
BENIGN_DROPS: Final[Mapping[str, str]] = {
    # A socket's queues thrown away as it closes or is reset: segments that nobody is
    # waiting for any more (its retransmission queue, unread data).
    "SKB_DROP_REASON_QUEUE_PURGE": "a closing socket's queues purged",
    # Packets still in a socket's receive queue when the application closed it.
    "SKB_DROP_REASON_SOCKET_CLOSE": "unread when the socket closed",
    # A frame addressed to another host's MAC address (a promiscuous interface, a bridge,
    # a switch flooding): not this host's to take.
    "SKB_DROP_REASON_OTHERHOST": "frames for another host",
    # Data, or an ACK, that had arrived already: the copy of a spurious retransmission.
    "SKB_DROP_REASON_TCP_OLD_DATA": "data received already",
    "SKB_DROP_REASON_TCP_OLD_ACK": "an ACK received already",
    "SKB_DROP_REASON_TCP_TOO_OLD_ACK": "an ACK received long ago",
    # A fragment that had arrived already.
    "SKB_DROP_REASON_DUP_FRAG": "fragments received already",
    # An application's own socket filter declined the packet (a DHCP client, tcpdump).
    "SKB_DROP_REASON_SOCKET_FILTER": "declined by a socket's own filter",
    # Frames of a protocol this host does not speak (LLDP, STP...) or IPv6 where it is off.
    "SKB_DROP_REASON_UNHANDLED_PROTO": "a protocol this host does not speak",
    "SKB_DROP_REASON_IPV6DISABLED": "IPv6 is disabled on the interface",
}
#: NO_SOCKET is a problem for UDP (a datagram to a port nobody listens on: the sender gets
#: "port unreachable") and for TCP (a segment for no connection nor listener: answered by a
#: RST).  For ICMP it is housekeeping: an echo reply is offered to ping sockets after the
#: raw socket of ``ping`` received its copy, and finding no ping socket counts as a drop.
_NO_SOCKET: Final = "SKB_DROP_REASON_NO_SOCKET"
_ICMP_PROTOS: Final = (1, 58)
_NO_SOCKET_ICMP: Final = "ping replies, taken by ping's raw socket"

#: 1 when a drop record is housekeeping (see :data:`BENIGN_DROPS`), else 0.
_BENIGN_SQL: Final = (
    f"(PktDropLatestDropCause IN ({', '.join(repr(c) for c in sorted(BENIGN_DROPS))}) "
    f"OR (PktDropLatestDropCause = '{_NO_SOCKET}' AND Proto IN {_ICMP_PROTOS}))")


def _drops(conn: sqlite3.Connection, scale: str) -> list[Finding]:
    causes = conn.execute(f"""
        SELECT PktDropLatestDropCause AS cause, {_BENIGN_SQL} AS benign,
               sum(coalesce(PktDropPackets, 0) * {scale}) AS packets,
               count(DISTINCT SrcAddr || '|' || SrcPort || '|' || DstAddr || '|' || DstPort
                     || '|' || Proto) AS flows,
               max({scale}) > 1, min(Proto), max(Proto)
        FROM flow NOT INDEXED WHERE PktDropLatestDropCause IS NOT NULL
        GROUP BY cause, benign ORDER BY benign, packets DESC, cause
    """).fetchall()
    if not causes:
        return []
    top = conn.execute(f"""
        SELECT cause, benign, SrcAddr, SrcPort, DstAddr, DstPort, Proto, packets, scaled FROM (
            SELECT cause, benign, SrcAddr, SrcPort, DstAddr, DstPort, Proto, packets, scaled,
                   row_number() OVER (PARTITION BY cause, benign
                                      ORDER BY packets DESC, SrcAddr, SrcPort) AS rank
            FROM (SELECT PktDropLatestDropCause AS cause, {_BENIGN_SQL} AS benign,
                         SrcAddr, SrcPort, DstAddr, DstPort, Proto,
                         sum(coalesce(PktDropPackets, 0) * {scale}) AS packets,
                         max({scale}) > 1 AS scaled
                  FROM flow NOT INDEXED WHERE PktDropLatestDropCause IS NOT NULL
                  GROUP BY cause, benign, SrcAddr, SrcPort, DstAddr, DstPort, Proto))
        WHERE rank <= ? ORDER BY cause, benign, rank
    """, (TOP,)).fetchall()
    result = []
    for cause, benign, packets, flows, scaled, proto_min, proto_max in \
            causes[:MAX_DROP_CAUSES]:
        evidence = tuple(
            f"{endpoint(src, sport)} → {endpoint(dst, dport)} {_proto(proto)}  "
            f"{_plural(dropped, 'packet', about=bool(flow_scaled))}"
            for c, b, src, sport, dst, dport, proto, dropped, flow_scaled in top
            if (c, b) == (cause, benign))
        short = cause.removeprefix(_DROP_PREFIX)
        chips: tuple[str, ...] = (f"PktDropLatestDropCause={cause}",)
        if cause == _NO_SOCKET and proto_min == proto_max:  # its two halves apart
            chips += (f"Proto={proto_min}",)
        why = BENIGN_DROPS.get(cause, _NO_SOCKET_ICMP) if benign else ""
        result.append(Finding(
            "drops",
            f"Drops {short}: {_plural(packets, 'packet', about=bool(scaled))} in "
            f"{_plural(flows, 'flow')}" + (f" ({why}: normal)" if why else ""),
            evidence, chips, f"drops {short}", "info" if benign else "problem"))
    return result


def _proto(number: Any) -> str:
    return PROTO_NAMES.get(number, str(number)) if number is not None else "?"


# -- retransmissions ---------------------------------------------------------------------


def _retransmits(conn: sqlite3.Connection, scale: str) -> list[Finding]:
    flows = conn.execute(f"""
        SELECT SrcAddr, SrcPort, DstAddr, DstPort, max(segments) AS segments,
               max(scaled) FROM (
            SELECT SrcAddr, SrcPort, DstAddr, DstPort, Interface,
                   sum(TcpRetransmits * {scale}) AS segments, max({scale}) > 1 AS scaled
            FROM flow NOT INDEXED WHERE TcpRetransmits > 0
            GROUP BY SrcAddr, SrcPort, DstAddr, DstPort, Interface)
        GROUP BY SrcAddr, SrcPort, DstAddr, DstPort
        ORDER BY segments DESC, SrcAddr, SrcPort
    """).fetchall()
    if not flows:
        return []
    total = sum(row[4] for row in flows)
    about = any(row[5] for row in flows)
    evidence = tuple(f"{endpoint(src, sport)} → {endpoint(dst, dport)}  "
                     f"{_plural(segments, 'segment', about=bool(scaled))}"
                     for src, sport, dst, dport, segments, scaled in flows[:TOP])
    src, sport, dst, dport, most, most_scaled = flows[0]
    chips = (f"SrcAddr={src}", f"SrcPort={sport}", f"DstAddr={dst}", f"DstPort={dport}")
    return [Finding(
        "retransmits",
        f"Retransmissions: {_plural(total, 'segment', about=about)} in "
        f"{_plural(len(flows), 'flow')} (most: {endpoint(src, sport)} → "
        f"{endpoint(dst, dport)}, {'about ' if most_scaled else ''}{most:,})",
        evidence, chips, f"retransmits {_plural(len(flows), 'flow')}")]


# -- slowest RTT and DNS answers ---------------------------------------------------------


#: Slowest records read to find the slowest destinations (their maxima are exact as long
#: as these records hold :data:`TOP` destinations; else every record is grouped).
SLOWEST_RECORDS: Final = 2000


#: The RTT records by server: ``rtt, ns, owner, addr, port`` of the end that is a server,
#: one that received a SYN (without ACK) in the capture, else of the end with the lower
#: port (a client's is ephemeral, above the well-known and service ports).  A reply's
#: record counts for its server instead of listing the client's port as a destination.
_RTT_BY_SERVER: Final = f"""
    WITH listening AS MATERIALIZED (
        SELECT DISTINCT DstAddr, DstPort FROM flow NOT INDEXED
        WHERE Proto = 6 AND (Flags & {_SYN | _ACK}) = {_SYN}
    ), side AS (
        SELECT *, CASE
            WHEN (DstAddr, DstPort) IN (SELECT * FROM listening) THEN 1
            WHEN (SrcAddr, SrcPort) IN (SELECT * FROM listening) THEN 0
            ELSE coalesce(DstPort, 0) <= coalesce(SrcPort, 0) END AS to_dst
        FROM flow NOT INDEXED WHERE TimeFlowRttNs > 0
    ), rtt AS (
        SELECT TimeFlowRttNs AS rtt,
               iif(to_dst, DstK8S_Namespace, SrcK8S_Namespace) AS ns,
               iif(to_dst, DstK8S_OwnerName, SrcK8S_OwnerName) AS owner,
               iif(to_dst, iif(DstK8S_OwnerName IS NULL, DstAddr, NULL),
                   iif(SrcK8S_OwnerName IS NULL, SrcAddr, NULL)) AS addr,
               iif(to_dst, DstPort, SrcPort) AS port
        FROM side
    )
"""


def _rtt(conn: sqlite3.Connection, _scale: str) -> list[Finding]:
    # Grouping every record by server sorts them all (0.2 s per 100,000); the slowest
    # servers are among the slowest records, and one more scan counts theirs.
    slowest = conn.execute(f"""{_RTT_BY_SERVER}
        SELECT ns, owner, addr, port, rtt FROM rtt ORDER BY rtt DESC LIMIT ?
    """, (SLOWEST_RECORDS,)).fetchall()
    if not slowest:
        return []
    maxima: dict[tuple[Any, ...], int] = {}
    for *key, rtt in slowest:
        maxima.setdefault(tuple(key), rtt)
    if len(maxima) < TOP and len(slowest) == SLOWEST_RECORDS:
        rows = conn.execute(f"""{_RTT_BY_SERVER}
            SELECT ns, owner, addr, port, max(rtt) FROM rtt GROUP BY 1, 2, 3, 4
        """).fetchall()
        maxima = {tuple(key): rtt for *key, rtt in rows}
    keys = sorted(maxima, key=lambda k: (-maxima[k], _who_label(*k)))[:TOP]
    cases = " ".join(f"WHEN ns IS ? AND owner IS ? AND addr IS ? AND port IS ? THEN {i}"
                     for i in range(len(keys)))
    stats = {group: (mean, count) for group, mean, count in conn.execute(f"""{_RTT_BY_SERVER}
        SELECT CASE {cases} END AS grp, avg(rtt), count(*) FROM rtt
        WHERE grp IS NOT NULL GROUP BY grp
    """, [value for key in keys for value in key]).fetchall()}
    labels = [_who_label(*key) for key in keys]
    evidence = tuple(
        f"{label}  max {_ms_from_ns(maxima[key])} · avg {_ms_from_ns(stats[i][0])} · "
        f"{_plural(stats[i][1], 'flow record')}"
        for i, (label, key) in enumerate(zip(labels, keys, strict=True)))
    top = _ms_from_ns(maxima[keys[0]])
    return [Finding("rtt", f"Slowest RTT: {top} to {labels[0]}", evidence,
                    _who_chips("Dst", *keys[0]), f"RTT {top}", "info")]


def _dns_latency(conn: sqlite3.Connection, _scale: str) -> list[Finding]:
    groups = conn.execute(f"""
        SELECT coalesce(DnsName, '?') AS name, {_SERVER} AS server,
               max(DnsLatencyMs) AS slowest, avg(DnsLatencyMs), count(*)
        FROM flow NOT INDEXED WHERE DnsLatencyMs IS NOT NULL AND (DnsFlags & {_DNS_RESPONSE}) != 0
        GROUP BY name, server ORDER BY slowest DESC, name, server LIMIT ?
    """, (TOP,)).fetchall()
    if not groups:
        return []
    evidence = tuple(
        f"{name} from {server}  max {slowest:,} ms · avg {mean:,.1f} ms · "
        f"{_plural(answers, 'answer record')}"
        for name, server, slowest, mean, answers in groups)
    name, server, slowest = groups[0][:3]
    chips = (f"DnsName={name}",) if name != "?" else ()
    return [Finding(
        "dns_latency", f"Slowest DNS answer: {slowest:,} ms for {name} from {server}",
        evidence, chips, f"DNS {slowest:,} ms", "info")]


_COMPUTE: Final = (
    (frozenset({"DnsFlagsResponseCode", "DnsName", "DnsId"}), _nxdomain),
    (frozenset({"Flags", "Proto"}), _attempts),
    (frozenset({"PktDropLatestDropCause", "PktDropPackets"}), _drops),
    (frozenset({"TcpRetransmits"}), _retransmits),
    (frozenset({"TimeFlowRttNs", "Flags", "Proto"}), _rtt),
    (frozenset({"DnsLatencyMs", "DnsFlags", "DnsName"}), _dns_latency),
)


def summary_line(found: Sequence[Finding]) -> str:
    """The header's line: ``3 findings: NXDOMAIN 2 names · 5 SYN unanswered · drops
    NETFILTER_DROP``, problems only (drop causes on one item); "" when there is none."""
    problems = [f for f in found if f.severity == "problem"]
    if not problems:
        return ""
    items: list[str] = []
    drops: list[str] = []
    for finding in problems:
        if finding.kind == "drops":
            if not drops:
                items.append("")  # the drops' place, filled below
            drops.append(finding.summary.removeprefix("drops "))
        else:
            items.append(finding.summary)
    items = [item or f"drops {', '.join(drops)}" for item in items]
    return f"{_plural(len(problems), 'finding')}: {' · '.join(items)}"
