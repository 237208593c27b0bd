"""The live filter's chip language: typed keywords become chips, and a record must match all.
Serves the TUI's filter line (which shows the chips) and every store's search, the
aggregator's SEARCH sessions included (through :class:`~netobserv_tui.store.query.Query`).

Plain Python without Textual.  Each chip is parsed and compiled once, when it is added; a
parse error comes back as a message and leaves the chips unchanged (nothing raises).

Chip forms, for the text the user typed (surrounding spaces stripped):

``/regex/``
    Python regular expression, case-insensitive, searched in the text of every field.
    The fields are joined one per line and ``re.MULTILINE`` is on, so ``^`` and ``$``
    anchor at a field's start and end: ``/^10\\.129\\./`` finds an address prefix.
    Run by the ``regex`` module (the syntax of ``re``, version 0), which can stop a match:
    a pattern that backtracks without end (``/(a+)+$/``) gets :data:`REGEX_TIMEOUT` per
    record, then the search fails with :class:`RegexTimeout` and a message saying why.
    It also lets go of the GIL while it matches, so a search thread in the aggregator
    never holds up ingest or FINISH.
``Field=value``
    Exact match on one field of ``model.fields``; the name is case-insensitive
    (``dstport=53``).  Numeric fields compare as numbers (``Proto=17``, ``Proto=017``,
    ``Proto=0x11`` and ``Proto=udp`` all mean 17); text fields compare case-insensitively
    (``DnsFlagsResponseCode=nxdomain``); list fields (``Interfaces``) match when any element
    does.  A record without the field does not match.  An unknown name is an error that
    suggests the nearest field names.
anything else
    Keyword: case-insensitive substring of the text of any field.

The text of a field is its value as the Raw view shows it (``str``, lists comma-joined); a
NULL field has no text.  A record also has the texts the flow table shows that no single
field holds: ``Proto``'s name (``TCP``), so the keyword ``tcp`` finds TCP flows, and each
endpoint as the Source and Destination columns show it, address and port together
(:func:`endpoint`: ``198.18.0.12:53``, ``[fd00:198:18::12]:53``; only when the port is not
0), so a keyword copied from the table finds its rows.  A chip is one line, so a keyword
matches inside one of these texts, never across two; a regex's ``^`` and ``$`` anchor at
the start and end of each.

Speed: in Python, field chips cost a dict lookup per record; keyword and regex chips share
one text per record, built only when such a chip exists.  0.3-0.45 s per 100,000 records of
37 fields with text chips, 20 ms with field chips only (CPython 3.11).  A capture's SQLite
file answers the chips without a Python test per record (:mod:`.textsearch`), with exactly
these semantics.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

import regex

from netobserv_tui.model.fields import BY_NAME, PROTO_NAMES

from .base import StoreError

Record: TypeAlias = Mapping[str, Any]
Predicate: TypeAlias = Callable[[Record], bool]
ChipKind: TypeAlias = Literal["keyword", "field", "regex"]

_FIELD_BY_LOWER: Final = {name.lower(): name for name in BY_NAME}
#: Seconds one regex chip may spend on one record's text (a few hundred characters: a sane
#: pattern takes microseconds).
REGEX_TIMEOUT: Final = 0.2
#: How every regex chip is compiled (a regex literal prefilter uses the same).
REGEX_FLAGS: Final = regex.IGNORECASE | regex.MULTILINE | regex.VERSION0


class RegexTimeout(StoreError):
    """A regex chip took longer than :data:`REGEX_TIMEOUT` on one record."""


def regex_search(pattern: regex.Pattern[str], text: str) -> bool:
    """Whether a regex chip's ``pattern`` is found in ``text``, within :data:`REGEX_TIMEOUT`
    (else :class:`RegexTimeout`).  The GIL is let go while it matches."""
    try:
        return pattern.search(text, timeout=REGEX_TIMEOUT, concurrent=True) is not None
    except TimeoutError:
        raise RegexTimeout(
            f"/{pattern.pattern}/ ran over {REGEX_TIMEOUT:g} s on one flow and was "
            "stopped: it backtracks too much (nested repeats such as (a+)+ do); "
            "remove it with Backspace and try a simpler one") from None


_PROTO_BY_NAME: Final = {name.lower(): number for number, name in PROTO_NAMES.items()}


def endpoint(addr: str | None, port: int | None) -> str:
    """An address and its port as the flow table shows them: ``10.0.0.1:80``,
    ``[fd00::1]:53``; the bare address when the port is 0 or absent; ``""`` without an
    address.  The TUI's Source and Destination columns and the chips' text share it."""
    if not addr:
        return ""
    host = f"[{addr}]" if ":" in addr else addr
    return f"{host}:{port}" if port else addr


#: ``(address field, port field)`` of the endpoints a record's text shows as ``addr:port``.
ENDPOINTS: Final = (("SrcAddr", "SrcPort"), ("DstAddr", "DstPort"))


def field_text(value: Any) -> str:
    """The text of one non-NULL field value: ``str``, a list's elements comma-joined."""
    if type(value) is list:
        return ",".join(map(str, value))
    return str(value)


def shown_endpoint(addr: Any, port: Any) -> str | None:
    """The ``addr:port`` text a record's endpoint adds to its text, or None when the table
    shows the bare address (port 0 or absent: the address field's own text) or nothing."""
    if type(addr) is not str or not addr or type(port) is not int or not port:
        return None
    return endpoint(addr, port)


def record_text(record: Record) -> str:
    """The text every keyword and regex chip searches: one line per non-NULL field, then
    the protocol's name and the ``addr:port`` endpoints (see the module)."""
    parts = []
    for value in record.values():
        if value is None:
            continue
        if type(value) is list:
            parts.append(",".join(map(str, value)))
        else:
            parts.append(str(value))
    proto = record.get("Proto")
    if proto is not None:
        name = PROTO_NAMES.get(proto)
        if name is not None:
            parts.append(name)
    for addr_name, port_name in ENDPOINTS:
        shown = shown_endpoint(record.get(addr_name), record.get(port_name))
        if shown is not None:
            parts.append(shown)
    return "\n".join(parts)


@dataclass(frozen=True, slots=True)
class Chip:
    """One parsed filter term; ``text`` is what the user typed, shown on the chip."""

    text: str
    kind: ChipKind
    #: Lower-cased keyword (keyword chips).
    keyword: str = ""
    #: Compiled expression (regex chips).
    pattern: regex.Pattern[str] | None = None
    #: Field test (field chips).
    predicate: Predicate | None = field(default=None, compare=False)
    #: ``(field, number)`` of an integer field chip: what a store may check in SQL.
    equals: tuple[str, int] | None = None
    #: The field a field chip tests (field chips).
    field_name: str = ""


def parse_chip(text: str) -> tuple[Chip | None, str | None]:
    """``(chip, None)`` or ``(None, message)``; never raises."""
    text = text.strip()
    if not text:
        return None, "empty filter: type a keyword, Field=value or /regex/"
    if "\n" in text or "\r" in text:
        return None, f"{text!r}: a chip is one line; press Enter after each keyword"
    if text.startswith("/"):
        return _parse_regex(text)
    if "=" in text:
        return _parse_field(text)
    return Chip(text, "keyword", keyword=text.lower()), None


def _parse_regex(text: str) -> tuple[Chip | None, str | None]:
    if len(text) < 2 or not text.endswith("/"):
        return None, f"{text!r}: a regular expression ends with '/', as in /^10\\.129\\./"
    source = text[1:-1]
    if not source:
        return None, f"{text!r}: empty regular expression"
    try:
        pattern = regex.compile(source, REGEX_FLAGS)
    except (regex.error, ValueError, OverflowError) as exc:
        return None, f"{text!r}: invalid regular expression: {exc}"
    return Chip(text, "regex", pattern=pattern), None


def _parse_field(text: str) -> tuple[Chip | None, str | None]:
    raw_name, _, raw_value = text.partition("=")
    name_typed = raw_name.strip()
    value = raw_value.strip()
    if not name_typed:
        return None, f"{text!r}: a field name goes before '=', as in DstPort=53"
    name = _FIELD_BY_LOWER.get(name_typed.lower())
    if name is None:
        close = difflib.get_close_matches(name_typed, BY_NAME, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "the Raw view lists them all"
        return None, f"{text!r}: unknown field {name_typed!r}; {hint}"
    if not value:
        return None, f"{text!r}: a value goes after '=', as in {name}=..."
    kind = BY_NAME[name].kind
    if kind is int:
        number = _parse_number(name, value)
        if number is None:
            example = "6 or tcp" if name == "Proto" else "53"
            return None, f"{text!r}: {name} is a number, as in {name}={example}"
        return Chip(text, "field", predicate=_number_equals(name, number),
                    equals=(name, number), field_name=name), None
    if kind is list:
        return Chip(text, "field", predicate=_any_element_equals(name, value.lower()),
                    field_name=name), None
    return Chip(text, "field", predicate=_text_equals(name, value.lower()), field_name=name), None


def _parse_number(name: str, value: str) -> int | None:
    if name == "Proto" and value.lower() in _PROTO_BY_NAME:
        return _PROTO_BY_NAME[value.lower()]
    for base in (10, 0):  # 053 is 53; 0x35 is 53 too
        try:
            return int(value, base)
        except ValueError:
            pass
    return None


def _number_equals(name: str, number: int) -> Predicate:
    def test(record: Record) -> bool:
        return bool(record.get(name) == number)

    return test


def _text_equals(name: str, target: str) -> Predicate:
    def test(record: Record) -> bool:
        value = record.get(name)
        return isinstance(value, str) and value.lower() == target

    return test


def _any_element_equals(name: str, target: str) -> Predicate:
    def test(record: Record) -> bool:
        value = record.get(name)
        if not isinstance(value, list | tuple):
            return False
        return any(str(item).lower() == target for item in value)

    return test


@dataclass(frozen=True, slots=True)
class FilterChips:
    """The chips in the order typed; a record matches when every chip matches (AND)."""

    chips: tuple[Chip, ...] = ()
    _predicates: tuple[Predicate, ...] = field(init=False, repr=False, compare=False)
    _keywords: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _patterns: tuple[regex.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Precompiled, by kind: field tests are cheapest and run first; the record's text
        # is built only when a keyword or regex chip needs it, once for all of them.
        predicates = tuple(c.predicate for c in self.chips if c.predicate is not None)
        object.__setattr__(self, "_predicates", predicates)
        keywords = tuple(c.keyword for c in self.chips if c.kind == "keyword")
        object.__setattr__(self, "_keywords", keywords)
        patterns = tuple(c.pattern for c in self.chips if c.pattern is not None)
        object.__setattr__(self, "_patterns", patterns)

    def __len__(self) -> int:
        return len(self.chips)

    @property
    def texts(self) -> tuple[str, ...]:
        """What the user typed, one string per chip, for display."""
        return tuple(chip.text for chip in self.chips)

    def add(self, text: str) -> tuple[FilterChips, str | None]:
        """A new set with ``text`` as its last chip, or ``(self, message)`` if it is invalid."""
        chip, error = parse_chip(text)
        if chip is None:
            return self, error
        return FilterChips((*self.chips, chip)), None

    def equalities(self) -> tuple[tuple[str, int], ...]:
        """``(field, number)`` of every integer field chip: exact conditions a store can
        check before building records (``store.Narrowing``)."""
        return tuple(chip.equals for chip in self.chips if chip.equals is not None)

    def only_equalities(self) -> bool:
        """True when every chip is an integer ``Field=value`` chip (or there is none): then
        :meth:`equalities` say all that :meth:`matches` checks."""
        return all(chip.equals is not None for chip in self.chips)

    def remove_last(self) -> FilterChips:
        """Without the last chip (Backspace on an empty input); unchanged when empty."""
        return FilterChips(self.chips[:-1]) if self.chips else self

    def clear(self) -> FilterChips:
        return FilterChips() if self.chips else self

    def matches(self, record: Record) -> bool:
        for predicate in self._predicates:
            if not predicate(record):
                return False
        if not self._keywords and not self._patterns:
            return True
        text = record_text(record)
        if self._keywords:
            lowered = text.lower()
            for keyword in self._keywords:
                if keyword not in lowered:
                    return False
        for pattern in self._patterns:
            if not regex_search(pattern, text):
                return False
        return True

    def filter(self, records: Iterable[Record]) -> list[Record]:
        """The records that match, in their order; all of them when there is no chip."""
        if not self.chips:
            return list(records)
        return [record for record in records if self.matches(record)]
