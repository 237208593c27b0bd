"""The live filter as data, compiled: :class:`Query` carries the chips as typed and the
view's fields, and :meth:`Query.compile` turns them into the predicate and the narrowing a
store applies.  The TUI compiles it for a local file; the aggregator's SEARCH sessions
compile the same query received over the wire, so both ends apply exactly the same rules
(the chip language is :mod:`.chips`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .base import Match, Narrowing
from .chips import FilterChips


@dataclass(frozen=True, slots=True)
class Query:
    """A live filter as data: the chips as typed and the view's fields (a record must carry
    one of them).  :meth:`compile` gives the predicate and the narrowing, so the TUI and an
    aggregator searching for it apply exactly the same rules."""

    chips: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()

    def parse(self) -> FilterChips:
        """The chips parsed; ValueError names a chip that does not parse."""
        chips = FilterChips()
        for text in self.chips:
            chips, error = chips.add(text)
            if error is not None:
                raise ValueError(error)
        return chips

    def compile(self) -> tuple[Match | None, Narrowing]:
        """``(predicate or None when everything matches, narrowing)``; ValueError names
        a chip that does not parse."""
        chips = self.parse()
        fields = self.fields
        narrowing = Narrowing(fields, chips.equalities(), complete=chips.only_equalities())

        def has_data(record: Mapping[str, Any]) -> bool:
            return any(record.get(name) is not None for name in fields)

        if not fields:
            return (chips.matches if chips else None), narrowing
        if not chips:
            return has_data, narrowing
        matches = chips.matches
        return (lambda record: has_data(record) and matches(record)), narrowing

    def to_json(self) -> dict[str, Any]:
        return {"chips": list(self.chips), "fields": list(self.fields)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Query:
        chips, fields = data.get("chips", []), data.get("fields", [])
        if not (isinstance(chips, list) and all(isinstance(c, str) for c in chips)
                and isinstance(fields, list) and all(isinstance(f, str) for f in fields)):
            raise ValueError("a query is {\"chips\": [str], \"fields\": [str]}")
        return cls(tuple(chips), tuple(fields))
