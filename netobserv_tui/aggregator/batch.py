"""A validated batch of flow records, stored column-wise.

Validation runs on every record the aggregator receives, so it is written against whole
columns: ``zip(*rows)`` transposes in C, then each column is checked by one C call that
fails on any value of the wrong kind: ``"".join(column)`` for strings, ``array("q",
column)`` for integers (which also enforces the 64-bit range; booleans pass it, so the
caller says whether the payload text can hold any).  A column that fails it, or holds nulls,
is checked by the reference rules (``set(map(type, column))``...), which give the reason:
the verdict and the reason are the same either way.  The same column-major data then feeds
the writers (SQLite rows are rebuilt with ``zip``; JSON objects are formatted column by
column) and the live stream, so the rows are transposed once.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any, Final

from ..model.fields import BY_NAME

#: SQLite stores signed 64-bit integers; anything wider would fail at insert time.
INT64_MAX: Final = 2**63 - 1
INT64_MIN: Final = -(2**63)
_NONE: Final = type(None)
_INT_OK: Final = frozenset({int, _NONE})
_STR_OK: Final = frozenset({str, _NONE})
_LIST_OK: Final = frozenset({list, _NONE})
_ELEMENT_OK: Final = frozenset({str, int})
_ALLOWED: Final = {int: _INT_OK, str: _STR_OK, list: _LIST_OK}


class BatchError(ValueError):
    """A FLOWS payload breaks a validation rule; the message is sent back in the NACK."""


@dataclass(slots=True)
class Batch:
    """Rows of one FLOWS frame, column-major: ``values[i]`` holds column ``columns[i]``."""

    columns: tuple[str, ...]
    values: list[tuple[Any, ...]]
    nrows: int
    #: Indexes of the columns that hold at least one ``None``.
    nullable: frozenset[int]
    #: Indexes of string columns without nulls whose values need no JSON escaping (no
    #: ``"``, ``\\`` nor control character): the JSON writer copies them as they are.
    plain: frozenset[int] = frozenset()

    @classmethod
    def from_rows(cls, columns: Any, rows: Any, *, no_bools: bool = False) -> Batch:
        """Validate ``columns``/``rows`` as received on the wire; raises :class:`BatchError`.

        ``no_bools`` is the caller's promise that no value is a boolean (the payload text
        holds neither ``true`` nor ``false``): integer columns are then checked in one C call.
        """
        cols = _check_columns(columns)
        if not isinstance(rows, list):
            raise BatchError("rows must be a JSON array of arrays")
        if not rows:
            return cls(cols, [() for _ in cols], 0, frozenset())
        if set(map(type, rows)) != {list}:
            raise BatchError("every row must be a JSON array")
        lengths = set(map(len, rows))
        if lengths != {len(cols)}:
            bad = min(lengths - {len(cols)})
            raise BatchError(f"a row has {bad} values for {len(cols)} columns")
        values = list(zip(*rows, strict=True))
        nullable: list[int] = []
        plain: list[int] = []
        for i, (name, col) in enumerate(zip(cols, values, strict=True)):
            kind = BY_NAME[name].kind
            if kind is str:
                try:
                    text = "".join(col)  # TypeError on any value that is not a string
                except TypeError:
                    pass
                else:
                    if '"' not in text and "\\" not in text and text.isprintable():
                        plain.append(i)
                    continue
            elif kind is int and no_bools:
                try:
                    array("q", col)  # only integers (or booleans) within signed 64 bits
                except (TypeError, OverflowError):
                    pass
                else:
                    continue
            if _check_column(name, col):
                nullable.append(i)
        return cls(cols, values, len(rows), frozenset(nullable), frozenset(plain))

    def rows(self, last: int | None = None) -> list[tuple[Any, ...]]:
        """Rows as tuples (optionally only the ``last`` ones), rebuilt in C by ``zip``."""
        if last is not None and last < self.nrows:
            return list(zip(*(col[self.nrows - last:] for col in self.values), strict=True))
        return list(zip(*self.values, strict=True))

    def with_column(self, name: str, value: Any) -> Batch:
        """The batch with ``name`` set to ``value`` on every row (added or replaced)."""
        filled = (value,) * self.nrows
        if name in self.columns:
            i = self.columns.index(name)
            values = [*self.values[:i], filled, *self.values[i + 1:]]
            return Batch(self.columns, values, self.nrows, self.nullable - {i},
                         self.plain - {i})
        return Batch((*self.columns, name), [*self.values, filled], self.nrows, self.nullable,
                     self.plain)

    def total(self, name: str) -> int:
        """Sum of an integer column, 0 if absent (``filter(None, ...)`` skips None and 0)."""
        if name not in self.columns:
            return 0
        return sum(filter(None, self.values[self.columns.index(name)]))

    def total_once(self, name: str) -> int:
        """Sum of an integer column over the records that count each packet once: a flow
        seen on several interfaces in one interval has one record per interface, and each
        lists all of them in ``Interfaces``/``IfDirections``, the first seen first (the
        agent's :func:`~netobserv_tui.agent.records.link_interfaces`). Only the record of
        that first interface counts; a record without those lists counts."""
        if name not in self.columns:
            return 0
        index = self.columns.index
        try:
            where = [self.values[index(c)] for c in
                     ("Interface", "IfDirection", "Interfaces", "IfDirections")]
        except ValueError:
            return self.total(name)
        total = 0
        for value, iface, ifdir, ifaces, ifdirs in zip(self.values[index(name)], *where,
                                                       strict=True):
            if value and (not ifaces or not ifdirs or len(ifaces) == 1
                          or (ifaces[0] == iface and ifdirs[0] == ifdir)):
                total += value
        return total


def _check_columns(columns: Any) -> tuple[str, ...]:
    if not isinstance(columns, list) or not columns:
        raise BatchError("columns must be a non-empty JSON array of field names")
    if set(map(type, columns)) != {str}:
        raise BatchError("every column name must be a string")
    unknown = [c for c in columns if c not in BY_NAME]
    if unknown:
        raise BatchError(f"unknown column {unknown[0]!r}")
    if len(set(columns)) != len(columns):
        dup = next(c for c in columns if columns.count(c) > 1)
        raise BatchError(f"column {dup!r} appears twice")
    return tuple(columns)


def _check_column(name: str, col: tuple[Any, ...]) -> bool:
    """Check one column's values against its field kind; returns whether it holds None."""
    kind = BY_NAME[name].kind
    types = set(map(type, col))
    if not types <= _ALLOWED[kind]:
        bad = next(iter(types - _ALLOWED[kind]))
        raise BatchError(f"column {name!r}: a value is {_json_kind(bad)}, expected "
                         f"{_json_kind(kind)} or null")
    if kind is int and int in types:
        ints = list(filter(None, col))  # without the nulls (and zeros)
        if ints and (max(ints) > INT64_MAX or min(ints) < INT64_MIN):
            raise BatchError(f"column {name!r}: a value does not fit in 64 bits")
    if kind is list and list in types:
        elements = set(map(type, chain.from_iterable(filter(None, col))))
        if not elements <= _ELEMENT_OK:
            raise BatchError(f"column {name!r}: list elements must be strings or integers, "
                             f"not {_json_kind(next(iter(elements - _ELEMENT_OK)))}")
    return _NONE in types


def _json_kind(kind: type) -> str:
    names = {int: "an integer", str: "a string", list: "an array", bool: "a boolean",
             float: "a number with a fraction", dict: "an object", _NONE: "null"}
    return names.get(kind, kind.__name__)


def parse_flows(payload: Mapping[str, Any], *, no_bools: bool = False) -> tuple[int, Batch]:
    """Validate a FLOWS payload; returns ``(seq, batch)`` or raises :class:`BatchError`.

    ``BatchError.seq`` is not needed: the caller reads ``seq`` first with :func:`flows_seq`.
    ``no_bools``: see :meth:`Batch.from_rows`.
    """
    seq = flows_seq(payload)
    if seq is None:
        raise BatchError("seq must be an integer")
    return seq, Batch.from_rows(payload.get("columns"), payload.get("rows"), no_bools=no_bools)


def flows_seq(payload: Mapping[str, Any]) -> int | None:
    """The batch's ``seq`` if it is an integer (not a boolean), else ``None``."""
    seq = payload.get("seq")
    return seq if type(seq) is int else None
