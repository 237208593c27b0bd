"""Live-filter chips answered without a Python test per row, over a capture's SQLite file,
with the semantics of :mod:`.chips` exactly: the rows the Python test of every record keeps.

The index is the reader's: ingest pays nothing for it.  (A column holding each row's
displayed text, written with the row, costs the writer more than half of its throughput:
``tests/bench/bench_filter.py`` measures it.)  :class:`TextIndex` keeps, per column of the
file, its distinct values with their texts (:func:`.chips.field_text`, lower-cased) and
the ids of the rows holding each, read by the first query and then from the new rows only,
as :class:`.sqlite.SqliteStore` keeps its column counts.  A chip is tested once per
distinct value of each column, in Python (most columns hold few: addresses, servers'
ports, names, interfaces, DNS codes; a C string search over all the lowered texts of a
column finds those that hold a keyword); the rows are then the union and intersection of
the values' row ids, or SQL finds them by value (``"DstAddr" IN (...)``) and counts and
pages them.

A record's text is one line per field, plus the protocol's name and the ``addr:port``
endpoints (:mod:`.chips`), and lower-casing works line by line (no character's lower case
depends on a newline next to it): a keyword is in the text exactly when it is in one line.
Per chip:

* keyword: the values of any column whose text holds it; the protocol numbers whose name
  holds it; for an endpoint, the addresses whose ``addr:`` or ``[addr]:`` holds it, or ends
  with its part up to a ``:`` while the port's text starts with the rest -- only for
  keywords with ``:``, ``[`` or ``]``, as any other is in an endpoint's text only if it is
  in its address's or its port's.  An integer's text holds digits and ``-`` only: integer
  columns are skipped for other keywords (once sure that they hold integers only:
  ``typeof``, or a file the aggregator wrote, :data:`~.base.TYPED_APPLICATION_ID`).  One
  with too many distinct values to list (timestamps, byte counts, clients' ports) keeps
  its values' texts side by side in one string (:class:`_Digits`, built by SQL with the
  distinct values), where the C string search finds a keyword of digits, up to
  :data:`DIGITS_MAX_ROWS` rows; past them, SQL's ``instr`` row by row.
* ``Field=value``: integers with ``=``, as before; texts and lists: the values for which
  the chip's own test is true.
* ``/regex/`` (:func:`analyze`): when every match lies within one line (nothing in the
  pattern matches a newline or looks around, each alternative has a literal), the pattern
  runs once per distinct value that holds its literals, like a keyword, with its
  :data:`~.chips.REGEX_TIMEOUT`, and on the endpoints that hold them (``:`` and a port at
  the end, ``/:53$/``, is the endpoints with that port: no regex runs on them).  Else the literals
  it requires select the rows (each found like a keyword, but compared the regex engine's
  case-insensitive way), and the regex runs in Python on those rows only; without a
  literal (when unsure, there is none), on every row, as before.

A column with more distinct values than :data:`TEXT_VALUES_CAP` (:data:`INT_VALUES_CAP`),
or with values SQL cannot compare the Python way (floats, blobs: files from elsewhere), is
tested row by row: by ``LIKE`` (SQLite folds the case of ASCII letters only, so it is exact
but for texts holding İ, ı, ſ or K, which go to Python) or by a Python function registered
with SQLite.  Past :data:`POSTINGS_MAX_ROWS` rows the row ids are dropped and SQL scans
answer alone (about a row per 0.2 us).
"""

from __future__ import annotations

import json
import re
import sqlite3
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

import regex

from netobserv_tui.model.fields import BY_NAME, PROTO_NAMES

from .base import TYPED_APPLICATION_ID
from .chips import (
    ENDPOINTS,
    REGEX_FLAGS,
    Chip,
    RegexTimeout,
    field_text,
    regex_search,
    shown_endpoint,
)
from .query import Query

try:
    import orjson

    _loads: Callable[[bytes | str], Any] = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency; json is the fallback
    _loads = json.loads

#: Distinct values kept per text or list column; past it the column is tested per row.
TEXT_VALUES_CAP: Final = 65_536
#: The same for integer columns (clients' ports, timestamps and byte counts pass it soon:
#: those are tested with ``instr``).
INT_VALUES_CAP: Final = 4_096
#: Values written into the SQL as parameters; a longer list is one JSON parameter.
INLINE_VALUES: Final = 32
#: A regex that may match an endpoint's text runs on every endpoint an address and a port
#: make, when there are at most so many and so many ports; else on the rows.
ENDPOINT_PAIRS: Final = 16_384
ENDPOINT_PORTS: Final = 64
#: Row ids are kept per distinct value (for the queries they answer without SQL) while the
#: file has at most so many rows: 4 bytes per row and column used.
POSTINGS_MAX_ROWS: Final = 500_000
#: An integer column with too many values to list keeps its values' texts, side by side in
#: one string (:class:`_Digits`), while the file has at most so many rows: a keyword of
#: digits is then found by the C string search, not by SQL converting every value.
DIGITS_MAX_ROWS: Final = 200_000
#: Rows read per ``fetchmany`` when reading the rows of each value.
ROWS_CHUNK: Final = 4096
#: A regex that may match an endpoint runs on the endpoints of at most so many rows, read by
#: id (those whose address may hold its literals); past it, on a scan of the rows.
ENDPOINT_ROWS: Final = 20_000
ENDPOINT_ROWS_CHUNK: Final = 5_000
#: Endpoints whose regex result a search remembers (the regex runs once per endpoint).
ENDPOINTS_SEEN: Final = 65_536
#: SQL scans a query answered from the kept row ids may need (one per group of parts the
#: ids cannot say); past it, SQL answers it alone, in one scan.
MAX_SCANS: Final = 2
#: An ``IN`` may use an index when it selects at most one row in this many.
INDEX_FRACTION: Final = 20
#: Literals of each alternative of a regex used to select rows (the longest ones).
LITERALS_PER_ALTERNATIVE: Final = 2

TABLE: Final = "flow"
INT64_MAX: Final = 2**63 - 1
_INT_TEXT: Final = frozenset("0123456789-")
#: What an endpoint's text has that its address and port texts do not.
_ENDPOINT_CHARS: Final = ":[]"
#: Texts where a keyword with k or i may be found that SQLite's ASCII ``lower`` misses.
_KEYWORD_GLOB: Final = "*[\u212a\u0130]*"
#: The same for a regex literal with i, s or k (İ, ı, ſ, K match them ignoring case).
_LITERAL_GLOB: Final = "*[\u0130\u0131\u017f\u212a]*"
_FOLDING: Final = ("\u0130", "\u0131", "\u017f", "\u212a")

ColumnKind: TypeAlias = Literal["int", "list", "text"]
_SPECIAL: Final = re.compile(r"[\[\]:]")
#: A regex that is ':' and a port number at the end of the text (``/:53$/``): in an
#: endpoint's text, exactly the endpoints with that port.
_PORT_AT_END: Final = re.compile(r":([1-9][0-9]{0,4})\$")
_REFRESHED_INTS: Final = frozenset({"Proto", *(port for _, port in ENDPOINTS)})


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# -- what a keyword or a regex literal looks for ---------------------------------------


class _Needle:
    """A keyword, or a literal a regex requires: what is looked for in one text."""

    #: The needle as it can stand in an integer's text; None when it cannot.
    integer: str | None
    chars: frozenset[str]
    #: :func:`_heads` of this needle, per address column (read once per query).
    heads: dict[tuple[str, bool], tuple[list[Any], dict[str, list[Any]]]]

    def found(self, text: str, lowered: str) -> bool:
        raise NotImplementedError

    def matching(self, column: _Column, values: Values) -> list[Any]:
        """``column``'s values (``values``) whose text holds the needle."""
        raise NotImplementedError

    def like(self) -> tuple[str, str | None] | None:
        """For texts tested row by row in SQL: ``(needle, glob)``: the needle is in a text
        when ``text LIKE '%needle%'`` (SQLite folds the case of ASCII letters only); else,
        if the text matches ``glob`` (it holds a character that folds to an ASCII letter),
        maybe; else not.  None when the needle is not ASCII."""
        raise NotImplementedError

    def plain_text(self) -> str | None:
        """The needle as a substring of lowered ASCII texts (None when it is not one)."""
        raise NotImplementedError

    def port_prefixes(self, head: str, lowered: str) -> list[str]:
        """For an endpoint ``head + port`` (``head`` is ``addr:`` or ``[addr]:``): what the
        port's text must start with for the needle to straddle the last ``:``."""
        raise NotImplementedError


class _Keyword(_Needle):
    """A keyword chip: a substring of the lower-cased text (``chip.keyword`` is lowered)."""

    def __init__(self, keyword: str) -> None:
        self.heads = {}
        self.keyword = keyword
        self.chars = frozenset(keyword)
        self.integer = keyword if self.chars <= _INT_TEXT else None
        #: Ways to straddle an endpoint's last ':': (the part up to it, the rest).
        self._splits = [(keyword[:j], keyword[j:]) for j in range(1, len(keyword))
                        if keyword[j - 1] == ":" and set(keyword[j:]) <= _INT_TEXT]

    def found(self, text: str, lowered: str) -> bool:
        return self.keyword in lowered

    def matching(self, column: _Column, values: Values) -> list[Any]:
        return column.containing(self.keyword)

    def plain_text(self) -> str | None:
        return self.keyword

    def like(self) -> tuple[str, str | None] | None:
        # Only two characters outside ASCII lower to ASCII with str.lower: K and İ.
        if not self.keyword.isascii():
            return None
        return self.keyword, (_KEYWORD_GLOB if self.chars & set("ki") else None)

    def port_prefixes(self, head: str, lowered: str) -> list[str]:
        return [rest for part, rest in self._splits if lowered.endswith(part)]


class _Literal(_Needle):
    """A literal a regex requires, compared as the regex compares it (its case-insensitive
    matching is the regex engine's, not ``str.lower``'s: ``s`` matches ``ſ``)."""

    def __init__(self, literal: str) -> None:
        self.heads = {}
        self.literal = literal
        self.chars = frozenset(literal)
        self.pattern = regex.compile(regex.escape(literal), REGEX_FLAGS)
        self.integer = literal if self.chars <= _INT_TEXT else None
        #: Lowered, when ASCII: in an ASCII text the regex finds it exactly where the
        #: lowered text holds it (ASCII letters fold to ASCII letters only).
        self.plain = literal.lower() if literal.isascii() else None
        #: Ways to straddle an endpoint's last ':': (length of the part up to it, that part
        #: as a pattern, the rest, which the port's text must start with).
        self._splits = [(j, regex.compile(regex.escape(literal[:j]), REGEX_FLAGS), literal[j:])
                        for j in range(1, len(literal))
                        if literal[j - 1] == ":" and set(literal[j:]) <= _INT_TEXT]

    def found(self, text: str, lowered: str) -> bool:
        if self.plain is not None and text.isascii():
            return self.plain in lowered
        return self.pattern.search(text) is not None

    def plain_text(self) -> str | None:
        return self.plain

    def matching(self, column: _Column, values: Values) -> list[Any]:
        if self.plain is not None and not column.folding:
            return column.containing(self.plain)
        return [raw for raw, (text, lowered, _) in values.items() if self.found(text, lowered)]

    def like(self) -> tuple[str, str | None] | None:
        # Regex case folding pairs i, s, k with four characters outside ASCII.
        if not self.literal.isascii():
            return None
        lowered = self.literal.lower()
        return lowered, (_LITERAL_GLOB if set(lowered) & set("isk") else None)

    def port_prefixes(self, head: str, lowered: str) -> list[str]:
        # Without full case folding (VERSION0) characters pair one to one, and ':' and the
        # digits have no other case: the split is where it seems.
        if self.plain is not None and head.isascii():
            return [rest for j, part, rest in self._splits
                    if lowered.endswith(self.plain[:j])]
        return [rest for j, part, rest in self._splits
                if j <= len(head) and part.fullmatch(head, len(head) - j)]


# -- what a regex requires --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegexShape:
    """What :func:`analyze` tells of a regex chip's pattern."""

    #: Per top-level alternative, literal strings every match of it contains (none holds a
    #: newline); None when unsure.
    literals: tuple[tuple[str, ...], ...] | None
    #: Every match lies within one line and depends on nothing outside it but through
    #: ``^``, ``$``, ``\\b`` and ``\\B`` (which see a newline as a line's edge): the regex
    #: matches a text exactly when it matches one of its lines.
    line_local: bool
    #: Some part of the pattern can match ``:``, ``[`` or ``]``.
    endpoint_chars: bool


UNSURE: Final = RegexShape(None, False, True)

#: Escapes that stand for one character (class) or position and read nothing after them.
_SIMPLE_ESCAPES: Final = frozenset("dDwWsSbBAZntrfva")
#: Groups read as groups; any other ``(?`` (inline flags such as ``(?x)`` or ``(?f)``,
#: conditionals, recursion, branch reset...) is unsure.
_GROUPS: Final = ("(?:", "(?>", "(?P<")
_LOOKAROUNDS: Final = ("(?=", "(?!", "(?<=", "(?<!")
_COUNTED: Final = regex.compile(r"\{(?:(\d+)(?:,\d*)?|,\d+)\}")


class _Unsure(Exception):
    pass


class _Analysis:
    """A small reader of the regex module's VERSION0 syntax, for :func:`analyze`: what it
    does not know for sure (a ``{`` that is not a plain counted repeat, as the module reads
    ``{e<=1}`` as fuzzy matching; inline flags; escapes that read more characters) makes
    the whole pattern unsure.  Each character class or class escape is asked of the regex
    engine itself (does it match a newline? ``:``?)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.line_local = True
        self.endpoint_chars = False

    def atom(self, source: str) -> None:
        """A part that matches one character."""
        pattern = regex.compile(source, REGEX_FLAGS)
        if pattern.fullmatch("\n"):
            self.line_local = False
        if any(pattern.fullmatch(c) for c in _ENDPOINT_CHARS):
            self.endpoint_chars = True

    def char(self, c: str) -> None:
        """A literal character (never a newline: a chip is one line)."""
        if c in _ENDPOINT_CHARS:
            self.endpoint_chars = True

    def sequence(self, i: int, group: bool) -> tuple[list[list[str]], int]:
        """Read from ``i`` to the end (or the ``)`` closing a group): the literal runs of
        each alternative, and where it stopped."""
        s, n = self.source, len(self.source)
        alternatives: list[list[str]] = [[]]
        run: list[str] = []
        last: Literal["none", "char", "item"] = "none"

        def close() -> None:
            if run:
                alternatives[-1].append("".join(run))
                run.clear()

        while i < n:
            c = s[i]
            if c == "\\":
                if i + 1 >= n:
                    raise _Unsure
                d = s[i + 1]
                if not d.isascii():
                    raise _Unsure
                if d.isalnum():
                    if d not in _SIMPLE_ESCAPES:
                        raise _Unsure
                    close()
                    if d in "AZ":
                        self.line_local = False
                    elif d not in "bB":
                        self.atom(s[i:i + 2])
                    last = "item"
                else:
                    self.char(d)
                    run.append(d)
                    last = "char"
                i += 2
            elif c == "(":
                close()
                i, last = self.group(i), "item"
            elif c == ")":
                if not group:
                    raise _Unsure
                break
            elif c == "[":
                end = _class_end(s, i)
                close()
                self.atom(s[i:end + 1])
                i, last = end + 1, "item"
            elif c == "|":
                close()
                alternatives.append([])
                i, last = i + 1, "none"
            elif c in "^$":
                close()
                i, last = i + 1, "item"
            elif c == ".":
                close()
                self.atom(".")
                i, last = i + 1, "item"
            elif c in "*+?{":
                if last == "none":
                    raise _Unsure
                if c == "{":
                    counted = _COUNTED.match(s, i)
                    if counted is None:
                        raise _Unsure  # maybe fuzzy matching, {e<=1}
                    least = int(counted.group(1) or 0)
                    i = counted.end()
                else:
                    least = 1 if c == "+" else 0
                    i += 1
                if last == "char":
                    if not least:
                        run.pop()
                    close()
                if i < n and s[i] in "?+":  # lazy or possessive
                    i += 1
                last = "item"
            else:
                self.char(c)
                run.append(c)
                i, last = i + 1, "char"
        close()
        return alternatives, i

    def group(self, i: int) -> int:
        """Read the group opened at ``i`` (its literals are not kept); after its ``)``."""
        s = self.source
        if s.startswith(_LOOKAROUNDS, i):
            self.line_local = False  # it may look at the next or the previous line
            start = s.index("(", i) + (4 if s.startswith(("(?<=", "(?<!"), i) else 3)
        elif s.startswith("(?P<", i):
            close = s.find(">", i)
            if close < 0:
                raise _Unsure
            start = close + 1
        elif s.startswith(_GROUPS, i):
            start = i + 3
        elif s.startswith("(?", i):
            raise _Unsure
        else:
            start = i + 1
        _, end = self.sequence(start, group=True)
        if end >= len(s) or s[end] != ")":
            raise _Unsure
        return end + 1


def analyze(source: str) -> RegexShape:
    """What the regex ``source`` (a chip's pattern, flags :data:`~.chips.REGEX_FLAGS`)
    requires and where it can match; :data:`UNSURE` when unsure.  A run of literal
    characters ends at anything else; a character made optional (``?``, ``*``, ``{0,n}``)
    leaves it, a repeated one (``+``, ``{n,m}``) ends it; groups and classes only end runs.
    """
    analysis = _Analysis(source)
    try:
        alternatives, end = analysis.sequence(0, group=False)
    except _Unsure:
        return UNSURE
    if end != len(source):
        return UNSURE
    if not all(alternatives):
        return RegexShape(None, False, analysis.endpoint_chars)
    literals = tuple(tuple(alternative) for alternative in alternatives)
    return RegexShape(literals, analysis.line_local, analysis.endpoint_chars)


def required_literals(source: str) -> tuple[tuple[str, ...], ...] | None:
    """Per top-level alternative of the regex ``source``, literal strings all its matches
    contain; None when unsure (see :func:`analyze`)."""
    return analyze(source).literals


def _class_end(source: str, i: int) -> int:
    """Index of the ``]`` closing the class opened at ``i``."""
    j, n = i + 1, len(source)
    if j < n and source[j] == "^":
        j += 1
    if j < n and source[j] == "]":  # a leading ']' is a literal
        j += 1
    while j < n:
        c = source[j]
        if c == "\\":
            j += 2
        elif c == "[":  # only POSIX classes, [:alpha:], are known here
            if not source.startswith("[:", j):
                raise _Unsure
            end = source.find(":]", j + 2)
            if end < 0:
                raise _Unsure
            j = end + 2
        elif c == "]":
            return j
        else:
            j += 1
    raise _Unsure


# -- the index -----------------------------------------------------------------------------

#: Row ids after ``after`` -> a set of them.
Rows: TypeAlias = Callable[[int], set[int]]


class _Part:
    """A condition on rows: SQL (with its parameters), and, when the row ids kept per
    value can say it, the rows that meet it (``scans``: how many SQL scans that takes, for
    the parts the kept ids cannot say)."""

    __slots__ = ("sql", "params", "rows", "scans")

    def __init__(self, sql: str, params: Sequence[Any] = (), rows: Rows | None = None,
                 scans: int = 0) -> None:
        self.sql = sql
        self.params = list(params)
        self.rows = rows
        self.scans = scans


FALSE: Final = _Part("0", rows=lambda after: set())


#: One distinct value of a column: its text, the text lowered, and whether it holds İ, ı, ſ
#: or K (the lowered text may not say where a regex literal is).  A plain tuple of a str,
#: a str and a bool, which the garbage collector stops tracking: a full collection then
#: does not walk the index's 100,000 values (a NamedTuple or an array stays tracked; with
#: them a full collection of the TUI took ~40 ms).  The rows holding a value are apart,
#: as bytes (:attr:`_Column.postings`), for the same reason.
_Value: TypeAlias = tuple[str, str, bool]


def _value(text: str) -> _Value:
    lowered = text.lower()
    return (text, text if lowered == text else lowered,
            not text.isascii() and any(c in text for c in _FOLDING))


def _ids(postings: bytes) -> memoryview:
    """The ascending row ids of a value's postings (32-bit, native order)."""
    return memoryview(postings).cast("I")


Values: TypeAlias = dict[Any, _Value]


@dataclass(slots=True)
class _Column:
    name: str
    sql: str
    kind: ColumnKind
    #: Rows with ``rowid <= upto`` are in ``values``.
    upto: int = 0
    #: Distinct non-NULL value -> its text and rows; None once there are too many, or one
    #: SQL cannot compare as Python does.
    values: Values | None = field(default_factory=dict)
    #: Rows holding a value (columns without ``values``), rows <= ``present_upto``.
    present: array[int] | None = None
    present_upto: int = 0
    #: The values' rows are read up to this row (0: not read).
    rows_upto: int = 0
    #: Distinct value -> the ids of the rows holding it, ascending, as 32-bit integers
    #: (:func:`_ids`); None until a query first needs them (:meth:`TextIndex.rows`) or
    #: when they are not kept.  A value without rows yet is not in it.
    postings: dict[Any, bytes] | None = None
    #: The lowered texts of ``values``, a newline between two (a needle without newline is
    #: in one of them exactly when it is in this), in pieces joined when asked.
    pieces: list[str] = field(default_factory=list)
    #: Some value holds İ, ı, ſ or K (see :data:`_Value`).
    folding: bool = False
    #: The values in the order of :meth:`joined`, where each starts, its length.
    order: list[Any] = field(default_factory=list)
    starts: array[int] = field(default_factory=lambda: array("q"))
    length: int = 0

    def joined(self) -> str:
        if len(self.pieces) > 1:
            self.pieces[:] = ["\n".join(self.pieces)]
        return self.pieces[0] if self.pieces else ""

    def add(self, raw: Any, lowered: str) -> None:
        if self.order:
            self.length += 1  # the newline before it
        self.starts.append(self.length)
        self.length += len(lowered)
        self.order.append(raw)

    def containing(self, needle: str) -> list[Any]:
        """The values whose lowered text holds ``needle`` (no newline in it): found in
        :meth:`joined` by the C string search, skipping the values without it."""
        joined, starts, order = self.joined(), self.starts, self.order
        found: list[Any] = []
        position = joined.find(needle)
        while position >= 0:
            i = bisect_right(starts, position) - 1
            found.append(order[i])
            if i + 1 == len(starts):
                break
            position = joined.find(needle, starts[i + 1])
        return found


@dataclass(frozen=True, slots=True)
class SqlFilter:
    """A query as SQL over ``flow``: what to append to ``WHERE rowid > ? AND rowid <= ?``."""

    #: ``" AND ..."`` (or ``""``), for the rows that may match.
    condition: str
    params: tuple[Any, ...]
    #: The condition is the whole query: every row it selects matches, no Python test.
    exact: bool
    #: No row can match.
    never: bool = False
    #: The ids of the rows after a given one that the condition selects (the matches when
    #: ``exact``), from the ids kept per value and at most :data:`MAX_SCANS` scans; None
    #: when that takes more.
    rows: Rows | None = None
    #: What a Python function called by SQLite raised (a regex out of time), if any.
    failures: list[BaseException] = field(default_factory=list, compare=False)

    def raise_failure(self) -> None:
        """Raise what a Python function called by SQLite raised (SQLite only says that one
        raised), if one did."""
        if self.failures:
            raise self.failures[0]


NEVER: Final = SqlFilter("", (), True, never=True)


class _Digits:
    """The texts of the values of integer columns with too many values to list, one string
    per column: each row's text right-aligned with spaces in a field of the column's width
    (wider than its longest, so that a space parts two values; a NULL is spaces only), the
    rows in the order of :attr:`ids`.  Which rows' texts hold a string of digits and ``-``
    is then where the C string search finds it.  Built and extended by SQL, one pass over
    the new rows for every column (no Python per row); built again, from the first row,
    when a column joins or a value is longer than its field."""

    __slots__ = ("widths", "texts", "pieces", "ids", "upto")

    def __init__(self) -> None:
        self.widths: dict[str, int] = {}
        self.texts: dict[str, str] = {}
        #: Per column, texts of rows added since :attr:`texts` was joined.
        self.pieces: dict[str, list[str]] = {}
        self.ids = array("I")
        self.upto = 0

    def update(self, conn: sqlite3.Connection, columns: Sequence[_Column], last_id: int) -> None:
        """Bring the texts of ``columns`` up to row ``last_id``."""
        names = [column.name for column in columns]
        if not names or (self.upto >= last_id and list(self.widths) == names):
            return
        sqls = [column.sql for column in columns]
        if list(self.widths) != names:
            self.__init__()  # type: ignore[misc]
        longest = conn.execute(
            f"SELECT {', '.join(f'max(length({sql}))' for sql in sqls)} FROM {TABLE} "
            "WHERE rowid > ? AND rowid <= ?", (self.upto, last_id)).fetchone()
        if any((length or 0) >= self.widths.get(name, 0)
               for name, length in zip(names, longest, strict=True)):
            # The first reading, or values longer than a field: from the first row, with
            # fields wide enough for the longest so far.
            widths = {name: max(length or 0, self.widths.get(name, 1) - 1)
                      for name, length in zip(names, longest, strict=True)}
            self.__init__()  # type: ignore[misc]
            self.widths = {name: width + 1 + (width >> 2) for name, width in widths.items()}
        texts = ", ".join(f"group_concat(printf('%*s', {self.widths[name]}, {sql}), '')"
                          for name, sql in zip(names, sqls, strict=True))
        ids, *found = conn.execute(
            f"SELECT json_group_array(rowid), {texts} FROM (SELECT rowid, "
            f"{', '.join(sqls)} FROM {TABLE} WHERE rowid > ? AND rowid <= ? ORDER BY rowid)",
            (self.upto, last_id)).fetchone()
        self.ids.extend(_loads(ids))
        for name, text in zip(names, found, strict=True):
            if text:
                self.pieces.setdefault(name, []).append(text)
        self.upto = last_id

    def rows(self, name: str, needle: str, after: int) -> set[int] | None:
        """The ids above ``after`` of the rows whose value of ``name`` holds ``needle``
        (digits, ``-``); None when the column's texts are not kept."""
        width = self.widths.get(name)
        if width is None:
            return None
        pieces = self.pieces.pop(name, None)
        if pieces:
            self.texts[name] = "".join([self.texts.get(name, ""), *pieces])
        text, ids = self.texts.get(name, ""), self.ids
        found: set[int] = set()
        add = found.add
        position = text.find(needle, bisect_right(ids, after) * width)
        while position >= 0:
            line = position // width
            add(ids[line])
            position = text.find(needle, (line + 1) * width)
        return found


class TextIndex:
    """Distinct values of a capture file's columns, and the rows of each, read as the file
    grows; and the SQL that answers a :class:`~.query.Query` with them (see the module).
    Used by one store, one call at a time."""

    def __init__(self, columns: Sequence[str], list_columns: frozenset[str],
                 decode: Callable[[Any], Any]) -> None:
        self.columns = tuple(_Column(name, _quote(name), _kind(name, list_columns))
                             for name in columns)
        self._by_name = {column.name: column for column in self.columns}
        self._decode = decode
        #: Per column: its values of another type than its kind's (``typeof``: not integers
        #: in an integer column, not texts in another), rows <= upto.
        self._odd = dict.fromkeys((column.name for column in self.columns), 0)
        self._odd_upto = 0
        #: Per column: rows holding a character that ASCII case folding misses, rows <= upto.
        self._special: dict[str, tuple[int, int]] = {}
        #: Per integer column: its largest value, rows <= upto.
        self._largest: dict[str, tuple[int, int]] = {}
        #: The integer columns with too many values to list: their values' texts.
        self.digits = _Digits()
        #: Columns an index of the file starts with (the writer adds them at close).
        self.indexed: frozenset[str] = frozenset()
        #: SQLite's ``lower`` changes ASCII letters only (no ICU): see :meth:`_Needle.like`.
        self.ascii_lower: bool | None = None
        #: Row ids are kept (the file is small enough).
        self.postings = True
        #: Columns holding a value in some row (the store's counts, given to compile).
        self.present_columns: frozenset[str] = frozenset()
        #: Written by the aggregator (:data:`~.base.TYPED_APPLICATION_ID`): no odd value.
        self.typed: bool | None = None

    def compile(self, conn: sqlite3.Connection, query: Query, after: int, last_id: int,
                present: Iterable[str]) -> SqlFilter | None:
        """The SQL for ``query`` over the rows ``after < rowid <= last_id`` (``present``: the
        columns holding a value in one of them at least), or None when the query does not
        parse; the Python functions it calls are registered on ``conn``.  Raises
        :class:`~.chips.RegexTimeout` as the chips do."""
        try:
            chips = query.parse()
        except ValueError:
            return None
        if not chips.chips and not query.fields:
            return SqlFilter("", (), True)
        self.prepare(conn, last_id, present)
        build = _Build(self, conn, after, last_id)
        parts: list[_Part] = []
        exact = True
        if query.fields:
            shown = [self._by_name[name] for name in query.fields if name in self._by_name]
            if not shown:
                return NEVER
            parts.append(_or([build.present(column) for column in shown], build.scan))
        for chip in chips.chips:
            part: _Part | None
            if chip.kind == "keyword":
                part = _or(build.text(_Keyword(chip.keyword)), build.scan)
            elif chip.kind == "field":
                part = build.field(chip)
            else:
                assert chip.pattern is not None
                shape = analyze(chip.pattern.pattern)
                if shape.line_local:
                    part = _or(build.line_regex(chip.pattern, shape), build.scan)
                else:
                    exact = False  # the regex runs in Python on what SQL selects
                    part = build.literals(shape)
                    if part is None:
                        continue
            if part is None or part is FALSE or part.sql == FALSE.sql:
                return NEVER
            parts.append(part)
        rows = None
        if parts:
            whole = _and(parts, build.scan)
            if whole.scans <= MAX_SCANS:
                rows = whole.rows
        return SqlFilter("".join(f" AND {part.sql}" for part in parts),
                         tuple(p for part in parts for p in part.params), exact,
                         rows=rows, failures=build.failures)

    def prepare(self, conn: sqlite3.Connection, last_id: int, present: Iterable[str]) -> None:
        """Read what queries read, up to ``last_id`` (the new rows only, after the first
        time): :meth:`compile` does it first, and a reader may do it ahead, before anyone
        types (:meth:`.sqlite.SqliteStore.prepare_search`)."""
        self.present_columns = frozenset(present)
        self._prepare(conn, last_id)
        self._refresh(conn, last_id)

    def _prepare(self, conn: sqlite3.Connection, last_id: int) -> None:
        if self.typed is None:
            (application_id,) = conn.execute("PRAGMA application_id").fetchone()
            self.typed = application_id == TYPED_APPLICATION_ID
        if self.ascii_lower is None:
            self.ascii_lower = conn.execute(
                "SELECT lower('\u00c9\u212aA') = '\u00c9\u212aa'").fetchone()[0] == 1
        self.indexed = frozenset(
            row[2] for index in conn.execute(f"PRAGMA index_list({TABLE})").fetchall()
            for row in conn.execute(f"PRAGMA index_info({_quote(index[1])})").fetchall()
            if row[0] == 0)
        if last_id > DIGITS_MAX_ROWS and self.digits.upto:
            self.digits = _Digits()  # let the memory go: SQL's instr from now on
        if self.postings and last_id > POSTINGS_MAX_ROWS:
            self.postings = False  # let the memory go: SQL answers alone from now on
            for column in self.columns:
                column.present, column.rows_upto, column.postings = None, 0, None

    def _refresh(self, conn: sqlite3.Connection, last_id: int) -> None:
        """Bring what queries read up to ``last_id``: the first query reads it all, the next
        ones the new rows only, so that no later query waits for it.  The values of every
        text and list column, of the protocol and of the ports (asked by a keyword such as
        ``tcp`` or ``10.0.0.1:53``), and their rows (one ``DISTINCT`` per column, one scan
        for the rows of all); up to :data:`DIGITS_MAX_ROWS` rows, the values of the other
        integer columns too, and the texts of those with too many values to list
        (:class:`_Digits`, one scan, for keywords of digits).  Past that, an integer
        column's values are read when a query first needs them."""
        texts = [column for column in self.columns
                 if column.kind != "int" or column.name in _REFRESHED_INTS]
        for column in texts:
            self.values(conn, column, last_id)
        if not (self.postings and last_id <= DIGITS_MAX_ROWS):
            self.rows(conn, texts, last_id)
        else:
            # The other integer columns' values and their rows, in the same scan: the first
            # search of a view (the DNS view's DnsLatencyMs, DnsFlagsResponseCode) read
            # them otherwise, ~100 ms per 100,000 rows on the way to its repaint.  And the
            # texts of those with too many values to list, for keywords of digits.
            ints = [column for column in self.columns if column.kind == "int"
                    and column.name in self.present_columns]
            for column in ints:
                self.values(conn, column, last_id)
            self.rows(conn, [*texts, *(c for c in ints if c.values is not None)], last_id)
            odd = self.odd(conn, last_id)
            self.digits.update(conn, [column for column in ints if column.values is None
                                      and not odd[column.name]], last_id)

    def values(self, conn: sqlite3.Connection, column: _Column, last_id: int) -> Values | None:
        """``column``'s distinct values up to ``last_id`` (reading the new rows), or None."""
        values = column.values
        if values is None or column.upto >= last_id:
            return values
        if column.name not in self.present_columns:  # NULL in every row so far
            column.upto = last_id
            return values
        cap = INT_VALUES_CAP if column.kind == "int" else TEXT_VALUES_CAP
        rows = conn.execute(f"SELECT DISTINCT {column.sql} FROM {TABLE} WHERE rowid > ? AND "
                            f"rowid <= ? AND {column.sql} IS NOT NULL LIMIT ?",
                            (column.upto, last_id, cap + 1)).fetchall()
        decode = self.decoder(column)
        added: list[str] = []
        for (raw,) in rows:
            if raw in values:
                continue
            if type(raw) is not str and type(raw) is not int:
                column.values = None  # SQL has 1.0 = 1, their texts differ
                return None
            # Its rows come with the next reading of them, if they are read.
            _, lowered, folding = values[raw] = _value(field_text(decode(raw)))
            added.append(lowered)
            column.add(raw, lowered)
            column.folding = column.folding or folding
        if len(values) > cap:
            column.values = None
            return None
        if added:
            column.pieces.append("\n".join(added))
        column.upto = last_id
        return values

    def rows(self, conn: sqlite3.Connection, columns: Iterable[_Column], last_id: int) -> bool:
        """Read the ids of the rows up to ``last_id`` holding each value of ``columns``
        (their :meth:`values`, up to date), in one scan for all of them; False when they
        are not kept."""
        if not self.postings:
            return False
        todo: dict[int, list[_Column]] = {}
        for column in {id(column): column for column in columns}.values():
            if column.values is not None and column.rows_upto < last_id:
                todo.setdefault(column.rows_upto, []).append(column)
        for start, group in todo.items():
            cursor = conn.execute(f"SELECT rowid, {', '.join(c.sql for c in group)} FROM "
                                  f"{TABLE} WHERE rowid > ? AND rowid <= ?", (start, last_id))
            # The new ids of each value, joined to its postings once at the end.
            new: list[dict[Any, array[int]]] = [{} for _ in group]
            while chunk := cursor.fetchmany(ROWS_CHUNK):
                ids, *cells = zip(*chunk, strict=True)
                for added, column_cells in zip(new, cells, strict=True):
                    for rowid, raw in zip(ids, column_cells, strict=True):
                        if raw is not None:
                            kept = added.get(raw)
                            if kept is None:
                                kept = added[raw] = array("I")
                            kept.append(rowid)
            for column, added in zip(group, new, strict=True):
                postings = column.postings = column.postings or {}
                for raw, kept in added.items():
                    postings[raw] = postings.get(raw, b"") + kept.tobytes()
                column.rows_upto = last_id
        return True

    def present(self, conn: sqlite3.Connection, column: _Column, last_id: int) -> array[int]:
        """Ascending ids of the rows up to ``last_id`` where ``column`` is not NULL."""
        if column.present is None:
            column.present, column.present_upto = array("I"), 0
        if column.present_upto < last_id:
            (ids,) = conn.execute(
                f"SELECT json_group_array(rowid) FROM (SELECT rowid FROM {TABLE} WHERE "
                f"rowid > ? AND rowid <= ? AND {column.sql} IS NOT NULL ORDER BY rowid)",
                (column.present_upto, last_id)).fetchone()
            column.present.extend(_loads(ids))
            column.present_upto = last_id
        return column.present

    def odd(self, conn: sqlite3.Connection, last_id: int) -> dict[str, int]:
        """Per column, its values of another type than its kind's, up to ``last_id``."""
        columns = [c for c in self.columns if c.name in self.present_columns]
        if self._odd_upto < last_id and columns and not self.typed:
            sql = ", ".join(
                f"total(typeof({c.sql}) NOT IN "
                f"('{'integer' if c.kind == 'int' else 'text'}', 'null'))" for c in columns)
            row = conn.execute(f"SELECT {sql} FROM {TABLE} WHERE rowid > ? AND rowid <= ?",
                               (self._odd_upto, last_id)).fetchone()
            for column, count in zip(columns, row, strict=True):
                self._odd[column.name] += int(count)
        self._odd_upto = max(self._odd_upto, last_id)
        return self._odd

    def special(self, conn: sqlite3.Connection, column: _Column, last_id: int) -> int:
        """Rows up to ``last_id`` whose ``column`` holds İ, ı, ſ or K (see
        :meth:`_Needle.like`)."""
        count, upto = self._special.get(column.name, (0, 0))
        if upto < last_id:
            found = " OR ".join(f"instr({column.sql}, ?)" for _ in _FOLDING)
            (more,) = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE rowid > ? AND "
                                   f"rowid <= ? AND ({found})",
                                   (upto, last_id, *_FOLDING)).fetchone()
            count += more
            self._special[column.name] = (count, last_id)
        return count

    def largest(self, conn: sqlite3.Connection, column: _Column, last_id: int) -> int:
        """The largest value of an integer column up to ``last_id`` (-1 without any)."""
        top, upto = self._largest.get(column.name, (-1, 0))
        if upto < last_id:
            (more,) = conn.execute(f"SELECT max({column.sql}) FROM {TABLE} WHERE rowid > ? "
                                   "AND rowid <= ?", (upto, last_id)).fetchone()
            if type(more) is int:
                top = max(top, more)
            self._largest[column.name] = (top, last_id)
        return top

    def column(self, name: str) -> _Column | None:
        return self._by_name.get(name)

    def decoder(self, column: _Column) -> Callable[[Any], Any]:
        """How a raw value of ``column`` becomes the record's value (lists are JSON text)."""
        return self._decode if column.kind == "list" else _same


def _kind(name: str, list_columns: frozenset[str]) -> ColumnKind:
    if name in list_columns:
        return "list"
    spec = BY_NAME.get(name)
    return "int" if spec is not None and spec.kind is int else "text"


def _same(value: Any) -> Any:
    return value


def _tail(ids: array[int] | memoryview, after: int) -> Iterable[int]:
    """The ids above ``after`` of an ascending array (or :func:`_ids`)."""
    return ids[bisect_right(ids, after):] if after else ids


class _Build:
    """SQL for the chips of one query, on one connection (which gets its functions)."""

    def __init__(self, index: TextIndex, conn: sqlite3.Connection, after: int,
                 last_id: int) -> None:
        self.index, self.conn, self.after, self.last_id = index, conn, after, last_id
        self.functions = 0
        self.failures: list[BaseException] = []
        #: Columns whose rows per value the query may read.
        self.needs_rows: list[_Column] = []

    def function(self, test: Callable[..., bool], arguments: int) -> str:
        """Register ``test`` on the connection for SQL to call per row; its SQL name."""
        name = f"netobserv_test_{self.functions}"
        self.functions += 1
        failures = self.failures

        def call(*values: Any) -> int:
            try:
                return 1 if test(*values) else 0
            except RegexTimeout as exc:
                failures.append(exc)
                raise

        self.conn.create_function(name, arguments, call, deterministic=True)
        return name

    def values(self, column: _Column) -> Values | None:
        return self.index.values(self.conn, column, self.last_id)

    def scan(self, sql: str, params: list[Any]) -> Rows:
        """The rows meeting SQL that the kept ids cannot answer: a scan, when called."""
        conn, last_id = self.conn, self.last_id

        def rows(after: int) -> set[int]:
            cursor = conn.execute(f"SELECT rowid FROM {TABLE} WHERE rowid > ? AND rowid <= ? "
                                  f"AND {sql}", (after, last_id, *params))
            return {rowid for (rowid,) in cursor}

        return rows

    def odd(self) -> dict[str, int]:
        return self.index.odd(self.conn, self.last_id)

    def among(self, column: _Column, values: Values, matching: list[Any]) -> _Part | None:
        """``column IN (matching)``, ``matching`` being some of its distinct ``values``; None
        when it is none of them.  All of them is ``IS NOT NULL``, most of them ``NOT IN``
        the others.  SQLite reads an index of the column for an ``IN`` if it has one, which
        costs a lookup per row found: worth it for a few rows only.  SQLite cannot tell; the
        rows kept per value can (else their number), so a column holding more is written
        ``+column``, which SQLite reads row by row."""
        if not matching:
            return None
        sql = column.sql
        if column.name in self.index.indexed:
            if self.index.rows(self.conn, [column], self.last_id):
                postings = column.postings or {}
                many = (sum(len(postings.get(raw, b"")) for raw in matching) // 4
                        * INDEX_FRACTION > self.last_id)
            else:
                many = len(matching) * INDEX_FRACTION > len(values)
            if many:
                sql = f"+{sql}"
        rows = self._rows(column, values, matching) if self.index.postings else None
        if len(matching) == len(values):
            return _Part(f"{sql} IS NOT NULL", rows=rows)
        if len(matching) * 2 > len(values):
            chosen = set(matching)
            marks, params = _list([raw for raw in values if raw not in chosen])
            return _Part(f"({sql} IS NOT NULL AND {sql} NOT IN {marks})", params, rows)
        marks, params = _list(matching)
        return _Part(f"{sql} IN {marks}", params, rows)

    def _rows(self, column: _Column, values: Values, matching: list[Any]) -> Rows:
        """The rows holding ``matching`` values, read when first asked (with those of every
        column the query needs, in one scan)."""
        index, conn, last_id, needed = self.index, self.conn, self.last_id, self.needs_rows
        needed.append(column)

        def rows(after: int) -> set[int]:
            index.rows(conn, needed, last_id)
            found: set[int] = set()
            postings = column.postings or {}
            for raw in matching:
                kept = postings.get(raw)
                if kept:
                    found.update(_tail(_ids(kept), after))
            return found

        return rows

    def present(self, column: _Column) -> _Part:
        """Rows where ``column`` is not NULL (a view's field)."""
        values = self.values(column)
        if values is not None:
            return self.among(column, values, list(values)) or FALSE
        rows: Rows | None = None
        if self.index.postings:
            ids = self.index.present(self.conn, column, self.last_id)
            rows = _union([ids])
        return _Part(f"{column.sql} IS NOT NULL", rows=rows)

    def field(self, chip: Chip) -> _Part | None:
        """A ``Field=value`` chip; None when no row can match."""
        column = self.index.column(chip.field_name)
        if column is None:
            return None
        if chip.equals is not None:  # SQLite compares integers fast (with an index, faster)
            return _Part(f"{column.sql} = ?", [chip.equals[1]])
        test, name = chip.predicate, chip.field_name
        assert test is not None
        decode = self.index.decoder(column)
        values = self.values(column)
        if values is None:
            function = self.function(
                lambda raw: raw is not None and test({name: decode(raw)}), 1)
            return _Part(f"{function}({column.sql})")
        return self.among(column, values, [raw for raw in values if test({name: decode(raw)})])

    def _per_row(self, column: _Column, found: Callable[[str, str], bool]) -> str:
        """SQL calling ``found`` on the text of a row's value of ``column`` (not NULL)."""
        decode = self.index.decoder(column)

        def test(raw: Any) -> bool:
            if raw is None:
                return False
            text = field_text(decode(raw))
            return found(text, text.lower())

        return f"{self.function(test, 1)}({column.sql})"

    def _like(self, column: _Column, needle: _Needle) -> _Part | None:
        """SQL for a text where ``needle`` may be (exactly when no glob is given, see
        :meth:`_Needle.like`), or None."""
        like = needle.like() if column.kind == "text" and self.index.ascii_lower else None
        if like is None:
            return None
        lowered, glob = like
        if glob is not None and not self.index.special(self.conn, column, self.last_id):
            glob = None  # no such character in the column: LIKE says it alone
        # LIKE ignores the case of ASCII letters only, as SQLite's lower does; cheaper.
        pattern = "%" + lowered.replace("\\", "\\\\").replace("%", "\\%").replace(
            "_", "\\_") + "%"
        sql, params = f"{column.sql} LIKE ? ESCAPE '\\'", [pattern]
        if glob is not None:
            sql, params = f"({sql} OR {column.sql} GLOB ?)", [pattern, glob]
        return _Part(sql, params)

    def _text_wide(self, column: _Column, needle: _Needle) -> _Part:
        """Rows where ``needle`` is in the text of a column with too many values to list."""
        udf = self._per_row(column, needle.found)
        like = self._like(column, needle)
        if like is None:
            return _Part(udf)
        found = like.sql
        if "GLOB" in found:  # LIKE finds it for sure; else, in a text with İ or K, maybe
            found = found.replace(" GLOB ?)", f" GLOB ? AND {udf})")
        if not self.odd()[column.name]:  # texts only
            return _Part(found, like.params)
        return _Part(f"((typeof({column.sql}) = 'text' AND {found}) OR "
                     f"(typeof({column.sql}) NOT IN ('text', 'null') AND {udf}))", like.params)

    def _regex_wide(self, column: _Column, found: Callable[[str, str], bool],
                    alternatives: list[list[_Literal]]) -> _Part:
        """Rows of a column with too many values to list whose value's text a line-local
        regex (``found``) matches: tested in Python on the rows where SQL finds all the
        literals of one of its ``alternatives``."""
        udf = self._per_row(column, found)
        ors: list[_Part] = []
        for alternative in alternatives:
            ands = [like for literal in alternative
                    if (like := self._like(column, literal)) is not None]
            if not ands:
                return _Part(udf)  # an alternative SQL cannot narrow
            ors.append(_and(ands, self.scan))
        if not self.odd()[column.name]:  # texts only
            return _and([_or(ors, self.scan), _Part(udf)], self.scan)
        return _or([_and([_Part(f"typeof({column.sql}) = 'text'"), _or(ors, self.scan),
                          _Part(udf)], self.scan),
                    _Part(f"(typeof({column.sql}) NOT IN ('text', 'null') AND {udf})")],
                   self.scan)

    # -- a keyword, or a literal of a regex: in one line of the text --------------------

    def text(self, needle: _Needle) -> list[_Part]:
        """Rows where ``needle`` is in one line of the text: OR over these (none: no row)."""
        parts: list[_Part] = []
        odd = self.odd()
        for column in self.index.columns:
            if column.kind == "int" and not odd[column.name] and needle.integer is None:
                continue  # an integer's text holds digits and '-' only
            values = self.values(column)
            part: _Part | None
            if values is not None:
                part = self.among(column, values, needle.matching(column, values))
            elif column.kind == "int" and not odd[column.name]:
                assert needle.integer is not None  # skipped above otherwise
                part = self._digits_part(column, needle.integer)
            else:
                part = self._text_wide(column, needle)
            if part is not None:
                parts.append(part)
        parts.extend(self._proto(needle.found))
        if needle.chars & set(_ENDPOINT_CHARS):
            for addr_name, port_name in ENDPOINTS:
                parts.extend(self._endpoint_needle(needle, addr_name, port_name,
                                                   skip_own=True))
        return parts

    def _digits_part(self, column: _Column, integer: str) -> _Part:
        """Rows of an integer column with too many values to list whose text holds
        ``integer`` (digits and ``-``): ``instr`` for SQL, and the rows found in the column's
        texts (:class:`_Digits`) while the file is small enough."""
        sql = f"instr({column.sql}, ?)"
        digits = self.index.digits
        if (not self.index.postings or digits.upto < self.last_id
                or column.name not in digits.widths):
            return _Part(sql, [integer])
        name = column.name

        def rows(after: int) -> set[int]:
            found = digits.rows(name, integer, after)
            assert found is not None
            return found

        return _Part(sql, [integer], rows)

    def _proto(self, found: Callable[[str, str], bool]) -> list[_Part]:
        proto = self.index.column("Proto")
        if proto is None:
            return []
        numbers = [number for number, name in PROTO_NAMES.items()
                   if found(name, name.lower())]
        if not numbers:
            return []
        values = self.values(proto)
        if values is not None:
            part = self.among(proto, values, [n for n in numbers if n in values])
            return [part] if part is not None else []
        marks, params = _list(numbers)
        return [_Part(f"+{proto.sql} IN {marks}", params)]

    def _endpoint_needle(self, needle: _Needle, addr_name: str, port_name: str, *,
                         skip_own: bool) -> list[_Part]:
        """Rows whose endpoint text holds ``needle`` (``skip_own``: leaving out the rows whose
        address text holds it, found already)."""
        addr, port = self.index.column(addr_name), self.index.column(port_name)
        if addr is None or port is None:
            return []
        values = self.values(addr)
        if values is None:
            def test(raw_addr: Any, raw_port: Any) -> bool:
                text = shown_endpoint(raw_addr, raw_port)
                return text is not None and needle.found(text, text.lower())

            return [_Part(f"{self.function(test, 2)}({addr.sql}, {port.sql})")]
        always, by_prefix = _heads(needle, addr, values, skip_own)
        parts: list[_Part] = []
        for prefix, addrs in [("", always), *by_prefix.items()]:
            in_addrs = self.among(addr, values, addrs)
            ports = self._port(port, prefix)
            if in_addrs is not None and ports is not None:
                parts.append(_and([in_addrs, ports], self.scan))
        ports = self._port(port, "")
        if not skip_own and needle.integer is not None and ports is not None:
            parts.append(_and([ports, _Part(f"instr({port.sql}, ?)", [needle.integer])],
                              self.scan))
        return parts

    def _port(self, port: _Column, prefix: str) -> _Part | None:
        """Rows whose port shows in their endpoint (an integer, not 0) and whose text starts
        with ``prefix``; None when none can."""
        values = self.values(port)
        if values is not None:
            return self.among(port, values, [raw for raw in values if type(raw) is int and raw
                                             and str(raw).startswith(prefix)])
        if port.kind != "int" or self.odd()[port.name]:
            shown = f"typeof({port.sql}) = 'integer' AND {port.sql} <> 0"
            if prefix:
                return _Part(f"({shown} AND substr({port.sql}, 1, ?) = ?)",
                             [len(prefix), prefix])
            return _Part(f"({shown})")
        if not prefix:
            return _Part(f"+{port.sql} <> 0")
        if prefix[0] == "0":  # only 0 is written with a leading 0
            return None
        if prefix[0] == "-":
            return _Part(f"substr({port.sql}, 1, ?) = ?", [len(prefix), prefix])
        # The integers written with this prefix: ranges, cheaper than writing each out, up
        # to the column's largest value.
        top = self.index.largest(self.conn, port, self.last_id)
        ranges: list[_Part] = []
        low = int(prefix)
        span = 1
        while low <= min(top, INT64_MAX):
            ranges.append(_Part(f"+{port.sql} BETWEEN ? AND ?",
                                [low, min(low + span - 1, INT64_MAX)]))
            low, span = low * 10, span * 10
        return _or(ranges, self.scan)

    # -- a regex --------------------------------------------------------------------------

    def _chosen(self, shape: RegexShape) -> list[list[_Literal]]:
        assert shape.literals is not None
        return [[_Literal(lit) for lit in sorted(alternative, key=len,
                                                 reverse=True)[:LITERALS_PER_ALTERNATIVE]]
                for alternative in shape.literals]

    def literals(self, shape: RegexShape) -> _Part | None:
        """Rows holding, in some line, the literals of one alternative of a regex: a
        selection for the regex to run on.  None without literals (every row)."""
        if shape.literals is None:
            return None
        ors: list[_Part] = []
        for alternative in self._chosen(shape):
            ands = [_or(self.text(literal), self.scan) for literal in alternative]
            if all(part.sql != FALSE.sql for part in ands):
                ors.append(_and(ands, self.scan))
        return _or(ors, self.scan)

    def line_regex(self, pattern: regex.Pattern[str], shape: RegexShape) -> list[_Part]:
        """Rows where the line-local regex ``pattern`` matches one line: OR over these."""

        def found(text: str, lowered: str) -> bool:
            return regex_search(pattern, text)

        alternatives = self._chosen(shape)
        may_match = _may_match(alternatives)
        plain = [[like[0] for lit in alt if (like := lit.like()) is not None]
                 for alt in alternatives]
        if any(len(lits) != len(alt) for lits, alt in zip(plain, alternatives, strict=True)):
            plain = []  # a literal outside ASCII: no column is skipped

        # A match in an integer's text holds all the literals of one alternative.
        in_integers = [alt for alt in alternatives
                       if all(lit.integer is not None for lit in alt)]
        parts: list[_Part] = []
        odd = self.odd()
        for column in self.index.columns:
            integers = column.kind == "int" and not odd[column.name]
            if integers and not in_integers:
                continue
            values = self.values(column)
            if values is not None:
                if plain and not column.folding:  # the values holding a literal of each
                    candidates: Iterable[Any] = dict.fromkeys(
                        raw for lits in plain for raw in column.containing(max(lits, key=len)))
                else:
                    candidates = values
                part = self.among(column, values, [
                    raw for raw in candidates
                    if may_match(value := values[raw]) and found(value[0], value[1])])
                if part is not None:
                    parts.append(part)
            elif integers:
                ors = [_and([_Part(f"instr({column.sql}, ?)", [lit.integer]) for lit in alt])
                       for alt in in_integers]
                parts.append(_and([_or(ors, self.scan), _Part(self._per_row(column, found))],
                                  self.scan))
            else:
                parts.append(self._regex_wide(column, found, alternatives))
        parts.extend(self._proto(found))
        if shape.endpoint_chars:  # else a match in an endpoint is one in its address or port
            for addr_name, port_name in ENDPOINTS:
                parts.extend(self._endpoint_regex(pattern, alternatives, addr_name,
                                                  port_name))
        return parts

    def _endpoint_port(self, addr: _Column, port: _Column, number: int) -> list[_Part]:
        """Rows whose endpoint text ends with ``:number``: the port's text follows the
        endpoint's last ':', so those whose port is ``number`` and whose address shows (a
        text, not empty); no regex runs."""
        ports = self.values(port)
        port_part: _Part | None
        if ports is not None:
            port_part = self.among(port, ports, [number] if number in ports else [])
        else:
            port_part = _Part(f"({port.sql} = ? AND typeof({port.sql}) = 'integer')", [number])
        if port_part is None:
            return []
        addrs = self.values(addr)
        addr_part: _Part | None
        if addrs is not None:
            addr_part = self.among(addr, addrs, [raw for raw in addrs
                                                 if type(raw) is str and raw])
        else:
            addr_part = _Part(f"(typeof({addr.sql}) = 'text' AND {addr.sql} <> '')")
        if addr_part is None:
            return []
        return [_and([port_part, addr_part], self.scan)]

    def _endpoint_regex(self, pattern: regex.Pattern[str], alternatives: list[list[_Literal]],
                        addr_name: str, port_name: str) -> list[_Part]:
        """Rows whose endpoint text the regex matches: by value when there are few
        endpoints, else the rows holding the literals of one alternative, tested in Python."""
        addr, port = self.index.column(addr_name), self.index.column(port_name)
        if addr is None or port is None:
            return []
        exact = _PORT_AT_END.fullmatch(pattern.pattern)
        if exact is not None:
            return self._endpoint_port(addr, port, int(exact.group(1)))
        addrs, ports = self.values(addr), self.values(port)
        pairs = (_endpoint_pairs(alternatives, addr, addrs, ports)
                 if addrs is not None and ports is not None else None)
        if pairs is not None and addrs is not None and ports is not None:
            # Few endpoints can hold the literals: the regex runs on each, SQL (or the row
            # ids kept) finds them by value.
            by_port: dict[Any, list[Any]] = {}
            for raw_addr, raw_port in pairs:
                text = shown_endpoint(raw_addr, raw_port)
                if text is not None and regex_search(pattern, text):
                    by_port.setdefault(raw_port, []).append(raw_addr)
            parts: list[_Part] = []
            for raw_port, matching in by_port.items():
                in_addrs = self.among(addr, addrs, matching)
                if in_addrs is not None:
                    parts.append(_and([in_addrs, self.among(port, ports, [raw_port]) or FALSE],
                                      self.scan))
            return parts
        ors: list[_Part] = []
        for alternative in alternatives:
            ands = [_or(self._endpoint_needle(literal, addr_name, port_name, skip_own=False),
                        self.scan) for literal in alternative]
            if all(part.sql != FALSE.sql for part in ands):
                ors.append(_and(ands, self.scan))
        if not ors:
            return []
        seen: dict[tuple[Any, Any], bool] = {}

        def test(raw_addr: Any, raw_port: Any) -> bool:
            """The regex on the endpoint's text, once per distinct endpoint."""
            key = (raw_addr, raw_port)
            found = seen.get(key)
            if found is None:
                if len(seen) >= ENDPOINTS_SEEN:
                    seen.clear()
                text = shown_endpoint(raw_addr, raw_port)
                found = seen[key] = text is not None and regex_search(pattern, text)
            return found

        whole = _and([_or(ors), _Part(f"{self.function(test, 2)}({addr.sql}, {port.sql})")])
        scan = self.scan(whole.sql, whole.params)
        if addrs is None or not self.index.postings:
            return [_Part(whole.sql, whole.params, scan, 1)]
        # The rows of the addresses that may hold the literals (whatever their port), then
        # the regex once per endpoint among them: by row id, not a scan.
        candidates = _candidate_addresses(alternatives, addr, addrs)
        if not candidates:
            return []
        in_addrs = self.among(addr, addrs, candidates)
        if in_addrs is None or in_addrs.rows is None:
            return [_Part(whole.sql, whole.params, scan, 1)]
        among_rows, conn = in_addrs.rows, self.conn

        def rows(after: int) -> set[int]:
            ids = among_rows(after)
            if len(ids) > ENDPOINT_ROWS:
                return scan(after)
            found: set[int] = set()
            for chunk in _chunks(sorted(ids), ENDPOINT_ROWS_CHUNK):
                for rowid, raw_addr, raw_port in conn.execute(
                        f"SELECT rowid, {addr.sql}, {port.sql} FROM {TABLE} WHERE rowid IN "
                        "(SELECT value FROM json_each(?))", (json.dumps(chunk),)):
                    if test(raw_addr, raw_port):
                        found.add(rowid)
            return found

        return [_Part(whole.sql, whole.params, rows)]


def _candidate_addresses(alternatives: list[list[_Literal]], column: _Column,
                         addrs: Values) -> list[Any]:
    """The addresses whose endpoint text may hold the literals of one alternative, with
    some port (those of a literal that may stand in a port's text: all of them)."""
    found: dict[Any, None] = {}
    for alternative in alternatives:
        common: set[Any] | None = None
        for literal in alternative:
            if literal.integer is not None:
                continue  # maybe in any port's text
            always, by_prefix = _heads(literal, column, addrs, skip_own=False)
            heads = set(always).union(*by_prefix.values())
            common = heads if common is None else common & heads
        if common is None:  # every literal may be in a port's text
            common = {raw for raw in addrs if type(raw) is str and raw}
        found.update(dict.fromkeys(common))
    return list(found)


def _chunks(ids: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


def _heads(needle: _Needle, column: _Column, values: Values,
           skip_own: bool) -> tuple[list[Any], dict[str, list[Any]]]:
    """The addresses (of an address ``column``, its ``values``) whose endpoint text holds
    ``needle`` whatever the port (not 0), and, per text a port's must start with, those
    whose endpoint holds it with such a port.  ``skip_own``: not those whose own text
    holds it."""
    known = needle.heads.get((column.name, skip_own))
    if known is not None:
        return known
    always: list[Any] = []
    by_prefix: dict[str, list[Any]] = {}
    candidates: Iterable[Any] = values
    plain = needle.plain_text()
    if (plain is not None and not column.folding and len(plain) > 1 and plain[0] == ":"
            and set(plain[1:]) <= _INT_TEXT):
        # ':' and a port's beginning (":53"): in an endpoint's text exactly when in the
        # address's own (a head ends with its only ':' unless bracketed), else with a port
        # starting with the rest; no Python per address.
        inside = set(column.containing(plain))
        if not skip_own:
            always = [raw for raw in values if raw in inside]
        others = [raw for raw in values if type(raw) is str and raw and raw not in inside]
        if others:
            by_prefix[plain[1:]] = others
        needle.heads[column.name, skip_own] = always, by_prefix
        return always, by_prefix
    if plain is not None and not column.folding:
        # The needle's pieces between ':', '[' and ']' lie in the address (but what follows
        # its last ':', which may be in the port): the longest finds the candidates.
        before = plain[:plain.rfind(":")] if ":" in plain else plain
        longest = max(_SPECIAL.split(before), key=len)
        if longest:
            candidates = column.containing(longest)
    for raw in candidates:
        text, lowered, _ = values[raw]
        if type(raw) is not str or not raw:
            continue  # no endpoint text
        if skip_own and needle.found(text, lowered):
            continue
        head = f"[{raw}]:" if ":" in raw else f"{raw}:"
        head_lowered = head.lower()
        if needle.found(head, head_lowered):
            always.append(raw)
            continue
        for prefix in needle.port_prefixes(head, head_lowered):
            by_prefix.setdefault(prefix, []).append(raw)
    needle.heads[column.name, skip_own] = always, by_prefix
    return always, by_prefix


def _endpoint_pairs(alternatives: list[list[_Literal]], column: _Column, addrs: Values,
                    ports: Values) -> set[tuple[Any, Any]] | None:
    """The (address, port) pairs, of the columns' distinct values, whose endpoint text holds
    the literals of one alternative; None when there may be more than
    :data:`ENDPOINT_PAIRS` (or ports than :data:`ENDPOINT_PORTS`)."""
    shown = [raw for raw in ports if type(raw) is int and raw]
    if len(shown) > ENDPOINT_PORTS:
        return None
    found: set[tuple[Any, Any]] = set()
    for alternative in alternatives:
        common: set[tuple[Any, Any]] | None = None
        for literal in alternative:
            always, by_prefix = _heads(literal, column, addrs, skip_own=False)
            groups = [(always, shown)]
            groups += [(heads, [p for p in shown if str(p).startswith(prefix)])
                       for prefix, heads in by_prefix.items()]
            if literal.integer is not None:  # within the port's text
                groups.append(([raw for raw in addrs if type(raw) is str and raw],
                               [p for p in shown if literal.integer in str(p)]))
            if sum(len(a) * len(p) for a, p in groups) > ENDPOINT_PAIRS:
                return None
            pairs = {(a, p) for heads, matching in groups for a in heads for p in matching}
            common = pairs if common is None else common & pairs
        found |= common or set()
        if len(found) > ENDPOINT_PAIRS:
            return None
    return found


def _may_match(alternatives: list[list[_Literal]]) -> Callable[[_Value], bool]:
    """Whether a value's text holds the literals of one alternative, compared as the regex
    compares: the values worth running the regex on.  An ASCII literal is in the lowered
    text exactly when the regex finds it, unless the text holds İ, ı, ſ or K (see
    :meth:`_Needle.like`).  Runs once per distinct value, so the usual shapes get a test
    without loops."""
    def exact(value: _Value) -> bool:
        text, lowered, _ = value
        return any(all(lit.found(text, lowered) for lit in alt) for alt in alternatives)

    plain = [[like[0] for lit in alt if (like := lit.like()) is not None] for alt in alternatives]
    if any(len(lowered) != len(alt) for lowered, alt in zip(plain, alternatives, strict=True)):
        return exact  # a literal outside ASCII
    if len(plain) == 1 and len(plain[0]) == 1:
        (one,) = plain[0]

        def quick(value: _Value) -> bool:
            return one in value[1]
    elif len(plain) == 1 and len(plain[0]) == 2:
        first, second = plain[0]

        def quick(value: _Value) -> bool:
            return first in value[1] and second in value[1]
    else:
        def quick(value: _Value) -> bool:
            return any(all(p in value[1] for p in ps) for ps in plain)

    return lambda value: exact(value) if value[2] else quick(value)


def _union(ids: list[array[int]]) -> Rows:
    def rows(after: int) -> set[int]:
        found: set[int] = set()
        for one in ids:
            found.update(_tail(one, after))
        return found

    return rows


def _or(parts: list[_Part], scan: Callable[[str, list[Any]], Rows] | None = None) -> _Part:
    """``(a OR b ...)``; :data:`FALSE` when there is none.  Its rows: the union of the
    parts' rows; those of the parts without any found by one ``scan`` of their SQL (if
    given), or of the whole when the others need scans too."""
    if not parts:
        return FALSE
    if len(parts) == 1:
        return parts[0]
    sql = "(" + " OR ".join(part.sql for part in parts) + ")"
    params = [p for part in parts for p in part.params]
    rest = [part for part in parts if part.rows is None]
    each = [part.rows for part in parts if part.rows is not None]
    if rest:
        if scan is None:
            return _Part(sql, params)
        if any(part.scans for part in parts):
            return _Part(sql, params, scan(sql, params), 1)
        others = _or(rest)
        each.append(scan(others.sql, others.params))

    def rows(after: int) -> set[int]:
        found: set[int] = set()
        for one in each:
            found |= one(after)
        return found

    return _Part(sql, params, rows, 1 if rest else sum(part.scans for part in parts))


def _and(parts: list[_Part], scan: Callable[[str, list[Any]], Rows] | None = None) -> _Part:
    """``(a AND b ...)`` (the parts are not empty).  Its rows: the intersection of the
    parts' rows, or one ``scan`` of the whole (if given) when a part has none or needs a
    scan itself."""
    if len(parts) == 1:
        return parts[0]
    sql = "(" + " AND ".join(part.sql for part in parts) + ")"
    params = [p for part in parts for p in part.params]
    if any(part.rows is None or part.scans for part in parts):
        # One scan of the whole: SQL tests the cheap conditions first, row by row.
        if scan is None:
            return _Part(sql, params)
        return _Part(sql, params, scan(sql, params), 1)
    each = [part.rows for part in parts if part.rows is not None]

    def rows(after: int) -> set[int]:
        sets = sorted((one(after) for one in each), key=len)
        return sets[0].intersection(*sets[1:])

    return _Part(sql, params, rows, sum(part.scans for part in parts))


def _list(values: list[Any]) -> tuple[str, list[Any]]:
    """``(?, ?)`` for a few values, a JSON array read by ``json_each`` for more."""
    if len(values) <= INLINE_VALUES:
        return "(" + ", ".join("?" * len(values)) + ")", list(values)
    return "(SELECT value FROM json_each(?))", [json.dumps(values)]
