"""Top talkers: who sends and receives the most bytes, computed in SQL over a capture's whole
``flow`` table (the TUI's Top talkers view, and the aggregator's ``talkers`` report for the
TUI of a cluster capture: :mod:`.reports`).

Plain Python and :mod:`sqlite3`, no Textual.  :func:`talkers` takes an open connection or a
path (opened read-only) and returns the top :class:`Talker` by bytes, largest first.

Who a talker is
    By workload (``namespace/owner``, from the ``K8S`` columns) when the capture has
    Kubernetes names, else by address (``by="auto"``).  By workload, an end that the cluster
    does not know (no owner) is its address.  ``by="address"`` or ``by="workload"`` forces
    the choice.
What is counted
    A talker's bytes and packets are those of every flow it is an end of, sent or received
    (so the shares of all talkers add up to twice the whole, less the flows a talker has
    with itself).  A flow is a 5-tuple; the records of a flow seen at several places (two
    interfaces of a host, the nodes of both ends) are counted once: per 5-tuple, the largest
    sum seen at one place (``AgentIP`` and ``Interface``).  Records with a ``Sampling`` rate
    above 1 are scaled by it.
Peers
    The ends it exchanged the most bytes with, :data:`PEERS` of them.
Chips
    Filter chips (:mod:`.chips` language) that show its flows in the table.  The language
    has no "or", so an end's value is matched in any field: ``/^198\\.18\\.0\\.10$/``, or for a
    workload ``/^namespace$/`` and ``/^owner$/``.  When that also matches other flows (the
    address is also the records' ``AgentIP``, the owner is a node name that other records
    hold as their host), an address falls back to its ``addr:port`` text, which only the
    ends have (``/^198\\.18\\.0\\.10:[0-9]+$/``; flows without a port then drop out).
    :attr:`Talker.exact` says whether the chips show exactly the talker's records, as far as
    the text columns go.

:func:`talkers_from_records` gives the same answer for records in memory (a JSON file, the
latest flows of a cluster capture).  :meth:`Talker.to_json` and :meth:`Talker.from_json`
turn a talker into a dict of plain values and back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

from netobserv_tui.model.fields import FIELDS

from .chips import endpoint
from .tables import read_only, records_table

By: TypeAlias = Literal["auto", "workload", "address"]
Kind: TypeAlias = Literal["workload", "address"]

#: Talkers returned by default.
LIMIT: Final = 10
#: Peers kept per talker.
PEERS: Final = 3

#: Where else an address may be found: columns that hold addresses.
_ADDR_COLUMNS: Final = tuple(f.name for f in FIELDS if f.kind is str
                             and f.name.endswith(("Addr", "IP")))
#: Where else a namespace or an owner may be found: the Kubernetes columns, DNS names.
_NAME_COLUMNS: Final = tuple(f.name for f in FIELDS if f.kind is str
                             and ("K8S_" in f.name or f.name == "DnsName")
                             and not f.name.endswith("IP"))
#: One text per end: grouping and matching compare one value instead of three.
_KEY: Final = "coalesce({ns}, '') || '/' || coalesce({owner}, '') || '|' || coalesce({addr}, '')"
_K8S_COLUMNS: Final = frozenset(
    {"SrcK8S_Namespace", "SrcK8S_OwnerName", "DstK8S_Namespace", "DstK8S_OwnerName"})
#: Characters that a regex chip must escape (``-``, ``:`` and ``/`` are plain outside a
#: class, and the filter's own regex reader keeps literals that it knows).
_REGEX_SPECIAL: Final = frozenset("\\.^$*+?{}[]|()")


@dataclass(frozen=True, slots=True)
class Talker:
    """One end of the capture's flows and what went through it."""

    #: ``namespace/owner`` (or the owner alone, for a node), or an address.
    name: str
    kind: Kind
    bytes: int
    packets: int
    #: Distinct 5-tuples it is an end of.
    flows: int
    #: ``bytes`` over the capture's bytes (0.0 to 1.0).
    share: float
    #: ``(name, bytes)`` of the ends it exchanged the most bytes with, largest first.
    peers: tuple[tuple[str, int], ...]
    #: Filter chip texts that show its flows.
    chips: tuple[str, ...]
    #: True when the chips show exactly its records (see the module).
    exact: bool = True

    def to_json(self) -> dict[str, Any]:
        """A dict of str, int, float, bool and lists, as JSON carries it."""
        return {"name": self.name, "kind": self.kind, "bytes": self.bytes,
                "packets": self.packets, "flows": self.flows, "share": self.share,
                "peers": [[name, count] for name, count in self.peers],
                "chips": list(self.chips), "exact": self.exact}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Talker:
        """The talker :meth:`to_json` gave (``ValueError`` when ``data`` is not one)."""
        try:
            kind = data["kind"]
            if kind not in ("workload", "address"):
                raise ValueError(f"talker kind {kind!r} is neither workload nor address")
            return cls(
                str(data["name"]), kind, int(data["bytes"]), int(data["packets"]),
                int(data["flows"]), float(data["share"]),
                tuple((str(name), int(count)) for name, count in data["peers"]),
                tuple(str(chip) for chip in data["chips"]), bool(data.get("exact", True)))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a talker: {exc!r} in {dict(data)!r}") from None


def talkers(source: sqlite3.Connection | str | Path, limit: int = LIMIT,
            by: By = "auto") -> list[Talker]:
    """The top ``limit`` talkers of the capture in ``source`` (a connection, or a file
    opened read-only) by bytes, largest first.  No table yet: none."""
    with read_only(source) as conn:
        return _talkers(conn, limit, by)


def talkers_from_records(records: Iterable[Mapping[str, Any]], limit: int = LIMIT,
                         by: By = "auto") -> list[Talker]:
    """The top talkers of ``records`` (dicts of fields, as the stores and the live stream
    give them), by the same SQL in a table in memory."""
    with records_table(records) as conn:
        return _talkers(conn, limit, by)


# -- the SQL -----------------------------------------------------------------------------


def _talkers(conn: sqlite3.Connection, limit: int, by: By) -> list[Talker]:
    columns = {row[1] for row in conn.execute("PRAGMA table_info(flow)")}
    if not {"SrcAddr", "DstAddr", "Bytes"} <= columns:
        return []

    def col(name: str) -> str:
        return name if name in columns else "NULL"

    if not _K8S_COLUMNS <= columns:
        by = "address"
    elif by == "auto":
        by = "workload" if _has_owners(conn, columns) else "address"
    scale = "(CASE WHEN Sampling > 1 THEN Sampling ELSE 1 END)" if "Sampling" in columns \
        else "1"
    names = []
    for side in ("Src", "Dst"):
        if by == "workload":
            names.append((col(f"{side}K8S_Namespace"), col(f"{side}K8S_OwnerName")))
        else:
            names.append(("NULL", "NULL"))
    (sns, sown), (dns, down) = names
    # Per 5-tuple and place, then per 5-tuple its largest place; per pair of ends, then
    # each pair twice, once per end (once when both ends are the same talker).  An end's
    # key is one text, so that grouping and matching sort one value, not three.
    rows = conn.execute(f"""
        WITH place AS (
            SELECT SrcAddr AS sa, {col("SrcPort")} AS sp, DstAddr AS da,
                   {col("DstPort")} AS dp, {col("Proto")} AS proto,
                   max({sns}) AS sns, max({sown}) AS sown, max({dns}) AS dns,
                   max({down}) AS down,
                   sum(coalesce(Bytes, 0) * {scale}) AS b,
                   sum(coalesce({col("Packets")}, 0) * {scale}) AS p
            FROM flow NOT INDEXED
            GROUP BY sa, sp, da, dp, proto, {col("AgentIP")}, {col("Interface")}
        ), tuple AS (
            SELECT max(sns) AS sns, max(sown) AS sown, sa, sp,
                   max(dns) AS dns, max(down) AS down, da, dp, max(b) AS b, max(p) AS p
            FROM place GROUP BY sa, sp, da, dp, proto
        ), pair AS MATERIALIZED (
            SELECT sns, sown, CASE WHEN sown IS NULL THEN sa END AS saddr,
                   dns, down, CASE WHEN down IS NULL THEN da END AS daddr,
                   sum(b) AS b, sum(p) AS p, count(*) AS flows,
                   sum(coalesce(sp, 0) = 0) AS sportless, sum(coalesce(dp, 0) = 0) AS dportless
            FROM tuple GROUP BY 1, 2, 3, 4, 5, 6
        ), keyed AS (
            SELECT *, {_KEY.format(ns="sns", owner="sown", addr="saddr")} AS skey,
                   {_KEY.format(ns="dns", owner="down", addr="daddr")} AS dkey FROM pair
        ), ends AS MATERIALIZED (
            SELECT skey AS key, sns AS ns, sown AS owner, saddr AS addr,
                   dns AS pns, down AS powner, daddr AS paddr, b, p, flows,
                   sportless AS portless FROM keyed
            UNION ALL
            SELECT dkey, dns, down, daddr, sns, sown, saddr, b, p, flows, dportless
            FROM keyed WHERE dkey != skey
        ), top AS (
            SELECT key, ns, owner, addr, sum(b) AS bytes, sum(p) AS packets,
                   sum(flows) AS flows, sum(portless) AS portless
            FROM ends GROUP BY key ORDER BY bytes DESC, key LIMIT ?
        ), ranked AS (
            SELECT key, pns, powner, paddr, bytes,
                   row_number() OVER (PARTITION BY key ORDER BY bytes DESC, pkey) AS rank
            FROM (SELECT key, pns, powner, paddr, sum(b) AS bytes,
                         {_KEY.format(ns="pns", owner="powner", addr="paddr")} AS pkey
                  FROM ends WHERE key IN (SELECT key FROM top) GROUP BY key, pkey)
        )
        SELECT 0, key, ns, owner, addr, bytes, packets, flows, portless FROM top
        UNION ALL
        SELECT 1, key, pns, powner, paddr, bytes, NULL, NULL, rank FROM ranked
        WHERE rank <= ?
        UNION ALL
        SELECT 2, NULL, NULL, NULL, NULL, coalesce(sum(b), 0), NULL, NULL, NULL FROM pair
    """, (limit, PEERS)).fetchall()
    total = next(row[5] for row in rows if row[0] == 2)
    peers: dict[str, list[tuple[int, str, int]]] = {}
    for part, key, ns, owner, addr, bytes_, _, _, rank in rows:
        if part == 1:
            peers.setdefault(key, []).append((rank, _name(ns, owner, addr), int(bytes_)))
    top = sorted((row for row in rows if row[0] == 0),
                 key=lambda row: (-row[5], _name(*row[2:5])))
    ends = [(ns, owner, addr) for _, _, ns, owner, addr, *_ in top]
    chips = _chips(conn, columns, ends, [row[8] for row in top], by == "workload")
    return [
        Talker(_name(ns, owner, addr), "workload" if owner is not None else "address",
               int(bytes_), int(packets), int(flows), bytes_ / total if total else 0.0,
               tuple((name, count) for _, name, count in sorted(peers.get(key, []))),
               *chips[i])
        for i, (_, key, ns, owner, addr, bytes_, packets, flows, _) in enumerate(top)]


def _has_owners(conn: sqlite3.Connection, columns: set[str]) -> bool:
    owners = [name for name in ("SrcK8S_OwnerName", "DstK8S_OwnerName") if name in columns]
    if not owners:
        return False
    found = conn.execute(f"SELECT EXISTS (SELECT 1 FROM flow WHERE "
                         f"{' OR '.join(f'{name} IS NOT NULL' for name in owners)})")
    return bool(found.fetchone()[0])


def _name(ns: Any, owner: Any, addr: Any) -> str:
    if owner is not None:
        return f"{ns}/{owner}" if ns else str(owner)
    return str(addr) if addr is not None else "?"


# -- chips -------------------------------------------------------------------------------


def _regex_literal(text: str) -> str:
    return "".join(f"\\{c}" if c in _REGEX_SPECIAL else c for c in text)


def _chips(conn: sqlite3.Connection, columns: set[str], ends: list[tuple[Any, Any, Any]],
           portless: list[int], by_workload: bool) -> list[tuple[tuple[str, ...], bool]]:
    """Per end ``(namespace, owner, address)``: its chips, and whether they are exact."""
    values = [[str(v) for v in ((ns, owner) if owner is not None else (addr,)) if v]
              for ns, owner, addr in ends]
    elsewhere = _found_elsewhere(conn, columns, ends, values, by_workload)
    result: list[tuple[tuple[str, ...], bool]] = []
    for (_, owner, addr), texts, other, no_port in zip(ends, values, elsewhere, portless,
                                                       strict=True):
        chips = tuple(f"/^{_regex_literal(text)}$/" for text in texts)
        if not other or owner is not None or not texts:
            result.append((chips, bool(texts) and not other))
            continue
        # The address is also in other fields of other records: its addr:port text is
        # only in the ends' (those with a port).
        host = endpoint(str(addr), 1).removesuffix(":1")
        result.append(((f"/^{_regex_literal(host)}:[0-9]+$/",), no_port == 0))
    return result


def _found_elsewhere(conn: sqlite3.Connection, columns: set[str],
                     ends: list[tuple[Any, Any, Any]], values: list[list[str]],
                     by_workload: bool) -> list[bool]:
    """Per end: whether a record that is not the end's holds every one of its ``values``
    in a column where its ``/^value$/`` chips would find them (one scan for all)."""
    if not ends:
        return []
    checks: list[str] = []
    params: list[Any] = []
    for (ns, owner, addr), texts in zip(ends, values, strict=True):
        where = [name for name in (_NAME_COLUMNS if owner is not None else _ADDR_COLUMNS)
                 if name in columns]
        if not texts or not where:
            checks.append("0")
            continue
        found = " AND ".join(f"? COLLATE NOCASE IN ({', '.join(where)})" for _ in texts)
        params.extend(texts)
        if owner is not None:
            mine = ("(SrcK8S_Namespace IS ? AND SrcK8S_OwnerName = ?) OR "
                    "(DstK8S_Namespace IS ? AND DstK8S_OwnerName = ?)")
            params.extend((ns, owner, ns, owner))
        elif by_workload:
            mine = ("(SrcAddr = ? AND SrcK8S_OwnerName IS NULL) OR "
                    "(DstAddr = ? AND DstK8S_OwnerName IS NULL)")
            params.extend((addr, addr))
        else:
            mine = "SrcAddr = ? OR DstAddr = ?"
            params.extend((addr, addr))
        checks.append(f"max({found} AND NOT ({mine}))")
    row = conn.execute(f"SELECT {', '.join(checks)} FROM flow NOT INDEXED", params).fetchone()
    return [bool(value) for value in row]
