"""The flows app: a header, the flows table, the filter line, a status line.

Fed by the aggregator's live stream during a capture, or by a saved capture's file
(``netobserv open``)::

    app = FlowsApp((host, port, token), {"target": "local host", "capture": "flows",
                                         "output": "output/flow", "max_time": "60"},
                   store=SqliteStore(db_path))   # optional: filters search the whole file
    reason = await app.run_async()     # "stopped" (ctrl+c / ctrl+q), or request_stop's reason

    app = FlowsApp(None, {"target": "file"}, store=open_store("capture.db"))  # browse a file

``request_stop(reason)`` may be called from the app's loop or from another thread.

What the table shows: with no filter chip and a view that shows every flow (Overview, Raw),
the latest records of the stream (a ring of ``max_rows``).  Otherwise the records that match
the view and every chip, searched in a worker thread over everything the capture has seen
(the store: the SQLite file being written, or the file opened), then kept current by
searching only the rows added since.  Without a store, the ring is all there is to search.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Input, Static
from textual.worker import Worker, WorkerState

from ..model.stream import FlowBatch, LiveStream, StatsUpdate, StreamError
from ..store import FlowStore, JsonStore, Narrowing, Query, SearchResult, SqliteStore, StoreError
from ..store.chips import FilterChips, RegexTimeout
from ..store.findings import Finding, findings, findings_from_records, summary_line
from ..store.remote import RemoteStore
from ..store.talkers import Talker, talkers, talkers_from_records
from .columns import Record
from .findings import FindingsList
from .messages import FlowsReceived, StatsReceived, StopRequested, StreamConnected, StreamLost
from .plain import PlainNotifications
from .rate import ByteRate
from .screens import DetailsScreen, HelpScreen
from .talkers import TalkersList
from .views import NAMES_ENRICHMENT, VIEWS, ViewState
from .widgets import CaptureHeader, FlowTable
from .widgets.filter_bar import FilterBar, FilterInput
from .widgets.lists import ReportList, TypingTable

#: Seconds between two reads ahead of the store's search while a filter is typed.
PREPARE_EVERY = 1.0

#: Return value of ``run_async`` when the user stops the capture (or closes the file).
STOPPED = "stopped"
#: Lines of start progress kept on screen.
PROGRESS_LINES = 12
#: Seconds between two computations of a live capture's findings.
FINDINGS_INTERVAL = 3.0
#: Seconds between two computations of a live capture's top talkers (while shown).
TALKERS_INTERVAL = 3.0

Predicate = Callable[[Mapping[str, Any]], bool]
#: A finding or a talker.
ReportItem = TypeVar("ReportItem", Finding, Talker)


class FlowsApp(PlainNotifications, App[str]):
    """Live view of a flow capture, or of a saved one.  Returns ``"stopped"`` or the reason
    given to ``request_stop``."""

    CSS_PATH = "app.tcss"
    TITLE = "netobserv"
    ENABLE_COMMAND_PALETTE = False

    BINDINGS: ClassVar[list[BindingType]] = [
        # Recent Textual binds ctrl+c to copy and ctrl+q to quit; both stop the capture here.
        Binding("ctrl+c,ctrl+q", "stop", "Stop capture", id="stop", priority=True),
        # The same keys when browsing a file (netobserv open): only one of the two is enabled.
        Binding("ctrl+c,ctrl+q", "close_file", "Quit", id="close_file", priority=True),
        Binding("ctrl+p", "toggle_pause", "Pause", id="pause", priority=True),
        Binding("f1,question_mark", "help", "Help", id="help", key_display="?"),
        # Not in the footer, which must keep "Stop capture" visible on an 80-column
        # terminal; the help screen lists them and the status line names the view.
        Binding("right", "next_view", "Next view", id="next_view", priority=True, show=False),
        Binding("left", "prev_view", "Previous view", id="prev_view", priority=True,
                show=False),
        Binding("pagedown", "next_enrichment", "More columns", id="next_enrichment",
                priority=True, show=False),
        Binding("pageup", "prev_enrichment", "Fewer columns", id="prev_enrichment",
                priority=True, show=False),
        # Reached only when the focused widget does not use them: the filter line.  In the
        # table they move the row cursor.
        Binding("up", "more_rows", "More rows", id="more_rows", show=False),
        Binding("down", "fewer_rows", "Fewer rows", id="fewer_rows", show=False),
    ]

    def __init__(
        self,
        stream: tuple[str, int, str] | None,
        header: Mapping[str, str],
        *,
        store: FlowStore | None = None,
        max_rows: int = 1000,
        refresh_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        starting: bool = False,
        names_first: bool = False,
        findings_interval: float = FINDINGS_INTERVAL,
        talkers_interval: float = TALKERS_INTERVAL,
    ) -> None:
        super().__init__()
        if stream is None and store is None and not starting:
            raise ValueError("FlowsApp needs a live stream, a store, or both")
        #: Shown while the capture starts (progress lines); ``attach`` brings the stream.
        self.starting = starting
        self._progress_lines: deque[str] = deque(maxlen=PROGRESS_LINES)
        self._progress = Static("", id="progress", markup=False)
        self._stream = LiveStream(*stream) if stream is not None else None
        self._store = store
        self._store_lock = threading.Lock()
        # Held, not queried: messages still queued while the app shuts down must not fail.
        self._header_info = dict(header)
        self._header = CaptureHeader(header, clock=clock, id="header")
        self._table = FlowTable(max_rows=max_rows, refresh_interval=refresh_interval, id="flows")
        self._filter_bar = FilterBar(id="filter")
        self._findings_list = FindingsList(id="findings")
        self._findings_interval = findings_interval
        self._finding = False
        #: What the findings were computed from ("the whole capture", "the latest N flows").
        self._findings_scope = ""
        self._findings_line = ""
        #: Not before this time (monotonic) is the next computation started.
        self._findings_next = 0.0
        #: Completed computations of the findings, for tests.
        self.findings_runs = 0
        self._talkers_list = TalkersList(id="talkers")
        self._talkers_interval = talkers_interval
        self._talking = False
        #: What the talkers were computed from, and by what ("by address in ...").
        self._talkers_scope = ""
        self._talkers_next = 0.0
        #: Completed computations of the top talkers, for tests.
        self.talkers_runs = 0
        #: A read ahead of the store's search is running, or when the last one ended.
        self._preparing = False
        self._prepared_at = -PREPARE_EVERY
        #: Completed reads ahead (prepare_search), for tests.
        self.searches_prepared = 0
        #: Bytes per second from the aggregator's counters: the header's sparkline.
        self._byte_rate = ByteRate()
        self._rate_clock = clock
        self._status = Static("Waiting for flows…", id="status", markup=False)
        # A cluster's flows are read by who the ends are; IP & port is one Page Down away.
        self.view_state = ViewState(enrichment_index=NAMES_ENRICHMENT) if names_first \
            else ViewState()
        self.chips = FilterChips()
        #: Bumped on every change of view or chips: late search results of an older
        #: filter are dropped.
        self._generation = 0
        self._last_id = 0
        self._searching = False
        #: A search of a new filter is running: the status line says "searching…" (the
        #: periodic searches of newer rows do not).
        self._first_search = False
        #: The table asked for more rows while a search ran (see on_flow_table_more_wanted).
        self._more_wanted = False
        #: Completed store searches, for tests and benchmarks.
        self.searches = 0
        #: The aggregator accepted the live stream (WELCOME received).
        self.connected = False

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Ctrl+C and Ctrl+Q stop a capture, or close a file: the footer says which.
        if action == "stop":
            return self._stream is not None or self.starting
        if action == "close_file":
            return self._stream is None and not self.starting
        if action == "toggle_pause":  # a saved file does not change: nothing to pause
            return self._stream is not None or self.starting
        return super().check_action(action, parameters)

    def compose(self) -> ComposeResult:
        yield self._header
        yield self._progress
        yield self._table
        yield self._findings_list
        yield self._talkers_list
        yield self._filter_bar
        yield self._status
        yield Footer()

    def on_mount(self) -> None:
        self._progress.display = self.starting
        self._findings_list.display = False
        self._talkers_list.display = False
        if self.starting:
            self._header.show_connecting("the capture being started")
            self._status.update(self.status_text())
        self._table.set_columns(self.view_state.columns())
        self.sub_title = self.view_state.title()
        self._filter_bar.input.focus()
        if self._stream is not None:
            self._header.show_connecting(self._stream.address)
            self._follow_stream()
            if self._store is not None:
                self.set_interval(self._table.refresh_interval, self._search_newer)
        elif self._store is not None:
            self._status.update(f"Reading {self._store.path.name}…")
            shown_path = self._header_info.get("output") or str(self._store.path)
            self._header.show_file(_totals_dict(self._store), shown_path)
            self._load_file()
        if self._stream is not None or self.starting:
            self.set_interval(self._findings_interval, self._refresh_findings)
            self.set_interval(self._talkers_interval, self._refresh_talkers)
        if self._stream is not None or self._store is not None:
            self.call_later(self._refresh_findings)

    # -- starting ----------------------------------------------------------------------

    def show_progress(self, text: str) -> None:
        """A line of the start's progress (agents ready out of desired, ...); from the
        app's loop (the capture controller runs in it)."""
        self._progress_lines.append(text)
        if self.is_running:
            self._progress.update("\n".join(self._progress_lines))

    def show_warning(self, text: str) -> None:
        """Lines under the header's progress that the capture wants seen ("" removes
        them); from the app's loop."""
        self._header.show_warning(text)

    def attach(self, stream: tuple[str, int, str], store: FlowStore | None,
               header: Mapping[str, str]) -> None:
        """The capture has started: follow its stream, search its store."""
        self.starting = False
        self._progress.display = False
        self._stream = LiveStream(*stream)
        self._store = store
        self._header.set_info(header)
        self._header.show_connecting(self._stream.address)
        self._status.update("Waiting for flows…")
        self._follow_stream()
        if store is not None:
            # Through the app's queue: attach() is called by the capture's own task, and a
            # timer made there runs without Textual's active app (its first tick raised
            # LookupError, logged as "Task exception was never retrieved").
            self.call_later(self.set_interval, self._table.refresh_interval,
                            self._search_newer)
        self.refresh_bindings()

    # -- views -------------------------------------------------------------------------

    def _show(self, state: ViewState) -> None:
        refilter = state.view != self.view_state.view
        self.view_state = state
        findings_view = state.view.findings
        talkers_view = state.view.talkers
        self._table.display = not (findings_view or talkers_view)
        self._findings_list.display = findings_view
        self._talkers_list.display = talkers_view
        self.sub_title = state.title()
        self._show_findings_line()
        if findings_view:
            self._findings_list.focus()
            self._refresh_findings()
            self._update_status()
            return
        if talkers_view:
            self._talkers_list.focus()
            self._refresh_talkers()
            self._update_status()
            return
        if self._findings_list.has_focus or self._talkers_list.has_focus:
            self._filter_bar.input.focus()
        # A new view shows other rows: no rebuild of the old ones under the new columns.
        self._table.set_columns(state.columns(), rebuild=not refilter)
        self.sub_title = state.title()
        if refilter:
            self._refilter()

    def action_next_view(self) -> None:
        self._show(self.view_state.next_view())

    def action_prev_view(self) -> None:
        self._show(self.view_state.prev_view())

    def action_next_enrichment(self) -> None:
        self._show(self.view_state.next_enrichment())

    def action_prev_enrichment(self) -> None:
        self._show(self.view_state.prev_enrichment())

    # -- rows shown, pause, help, details ----------------------------------------------

    def action_more_rows(self) -> None:
        table = self._table
        table.set_limit((table.limit or table.fit_rows()) + 1)

    def action_fewer_rows(self) -> None:
        table = self._table
        table.set_limit((table.limit or table.fit_rows()) - 1)

    def action_toggle_pause(self) -> None:
        paused = not self._table.paused
        self._table.set_paused(paused)
        self._header.show_paused(paused)
        self._update_status()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def on_filter_input_help_requested(self, _message: FilterInput.HelpRequested) -> None:
        self.action_help()

    def _show_details(self, row: int) -> None:
        record = self._table.record_at(row)
        if record is None:
            self.notify("No flow to show yet", timeout=3)
            return
        self.push_screen(DetailsScreen(record, f"Flow details · row {row + 1}"))

    def on_data_table_row_selected(self, message: DataTable.RowSelected) -> None:
        if message.data_table is self._table:
            self._show_details(message.cursor_row)

    def on_typing_table_left(self, message: TypingTable.Left) -> None:
        """A table (flows, findings, talkers) gives typing back to the filter line."""
        field = self._filter_bar.input
        field.focus()
        if message.character:
            field.insert_text_at_cursor(message.character)

    def on_report_list_chosen(self, message: ReportList.Chosen) -> None:
        """Enter on a finding or a talker: the Overview, filtered to its flows."""
        self._filter_to(message.item.chips)

    # -- findings ----------------------------------------------------------------------

    def _refresh_findings(self) -> None:
        """Timer: compute the findings again, in a thread (one at a time).  From the SQLite
        file when the store is one (the whole capture), from a JSON file's records, from
        the aggregator's report over its file (a cluster capture searched through its
        aggregator), else (or if the aggregator does not compute it) from the latest flows
        held."""
        if self._finding or self.starting:
            return
        # A computation that takes long (a big capture) runs less often: at most a fifth
        # of the time goes to it.
        if time.monotonic() < self._findings_next:
            return
        source = self._report_source(self.findings_runs)
        if source is not None:
            self._finding = True
            self._compute_findings(*source)

    @work(thread=True, group="findings", exit_on_error=False)
    def _compute_findings(self, store: FlowStore | None,
                          records: list[Record] | None) -> None:
        started = time.monotonic()
        try:
            found, scope = self._report(store, records, "findings", findings,
                                        findings_from_records, Finding.from_json)
        except Exception:
            self.call_from_thread(self._findings_failed)
            raise
        self._findings_next = time.monotonic() + 4 * (time.monotonic() - started)
        self.call_from_thread(self._findings_done, found, scope)

    def _report_source(self, runs: int
                       ) -> tuple[FlowStore | None, list[Record] | None] | None:
        """What a report (findings, talkers) is computed from, for :meth:`_report`: a file
        store alone (None once computed, ``runs``, for a saved file: it does not change),
        else the store (an aggregator's, or none) and the latest flows held."""
        store = self._store
        if isinstance(store, SqliteStore | JsonStore):
            return None if self._stream is None and runs else (store, None)
        return store, self._table.ring()

    def _report(self, store: FlowStore | None, records: list[Record] | None, name: str,
                from_file: Callable[[Path], list[ReportItem]],
                from_records: Callable[[Iterable[Mapping[str, Any]]], list[ReportItem]],
                from_json: Callable[[dict[str, Any]], ReportItem],
                ) -> tuple[list[ReportItem], str]:
        """A whole-capture report (findings, talkers) and what it covers, in a worker
        thread: from the SQLite file, a JSON file's records, the aggregator's report
        ``name`` over its file (a cluster capture), else (or when the aggregator does not
        compute it) from ``records``, the latest flows held."""
        if isinstance(store, RemoteStore):
            try:
                with self._store_lock:
                    items = store.report(name)
                return [from_json(item) for item in items], "the whole capture"
            except (StoreError, ValueError):
                pass  # an older aggregator, a broken tunnel: the latest flows held
        elif isinstance(store, SqliteStore):
            return from_file(store.path), "the whole capture"
        elif store is not None:
            with self._store_lock:
                result = store.search(None, 1 << 62)
            return from_records(result.records), "the whole capture"
        rows = records or []
        flows = "flow" if len(rows) == 1 else "flows"
        return from_records(rows), (f"the latest {len(rows):,} {flows} held here (the whole "
                                    "capture's come with its SQLite file: netobserv open)")

    def _findings_failed(self) -> None:
        self._finding = False

    def _findings_done(self, found: list[Finding], scope: str) -> None:
        self._finding = False
        self.findings_runs += 1
        self._findings_scope = scope
        self._findings_list.show(found, f"No findings in {scope}: no NXDOMAIN, unanswered "
                                        "or refused SYN, drop, retransmission, RTT or DNS "
                                        "latency")
        self._findings_line = summary_line(found)
        self._show_findings_line()
        if self.view_state.view.findings:
            self._update_status()

    def _show_findings_line(self) -> None:
        """The header's findings line; outside the Findings view, with the way there."""
        line = self._findings_line
        if line and not self.view_state.view.findings:
            line += f" (← to the {VIEWS[-1].name} view)"
        self._header.show_findings(line)

    def _filter_to(self, texts: tuple[str, ...]) -> None:
        """The Overview, filtered by ``texts`` (which replace the chips)."""
        chips = FilterChips()
        for text in texts:
            chips, error = chips.add(text)
            if error is not None:  # pragma: no cover - findings and talkers make valid chips
                self.notify(error, title="Filter not added", severity="error", timeout=6)
        self.chips = chips
        self._filter_bar.show_chips(chips.texts)
        self._show(ViewState(0, self.view_state.enrichment_index))
        self._filter_bar.input.focus()


    # -- top talkers -------------------------------------------------------------------

    def _refresh_talkers(self) -> None:
        """Timer (and the view shown): compute the top talkers again while their view is
        shown, in a thread (one at a time; at most a fifth of the time goes to it).  From
        the SQLite file or a JSON file's records (the whole capture; a saved file once),
        from the aggregator's report over its file (a cluster capture), else (or if the
        aggregator does not compute it) from the latest flows held."""
        if self._talking or self.starting or not self.view_state.view.talkers:
            return
        if time.monotonic() < self._talkers_next:
            return
        source = self._report_source(self.talkers_runs)
        if source is not None:
            self._talking = True
            self._compute_talkers(*source)

    @work(thread=True, group="talkers", exit_on_error=False)
    def _compute_talkers(self, store: FlowStore | None,
                         records: list[Record] | None) -> None:
        started = time.monotonic()
        try:
            found, scope = self._report(store, records, "talkers", talkers,
                                        talkers_from_records, Talker.from_json)
        except Exception:
            self.call_from_thread(self._talkers_failed)
            raise
        self._talkers_next = time.monotonic() + 4 * (time.monotonic() - started)
        self.call_from_thread(self._talkers_done, found, scope)

    def _talkers_failed(self) -> None:
        self._talking = False

    def _talkers_done(self, found: list[Talker], scope: str) -> None:
        self._talking = False
        self.talkers_runs += 1
        by = "workload" if any(t.kind == "workload" for t in found) else "address"
        self._talkers_scope = f"by {by} in {scope}"
        self._talkers_list.show(found, f"No flows in {scope} yet")
        if self.view_state.view.talkers:
            self._update_status()


    # -- filter chips ------------------------------------------------------------------

    def on_filter_input_entered(self, message: FilterInput.Entered) -> None:
        if not message.value.strip():
            view = self.view_state.view
            if view.findings or view.talkers:
                shown = self._findings_list if view.findings else self._talkers_list
                item = shown.current()
                if item is not None:
                    self._filter_to(item.chips)
                return
            self._show_details(self._table.cursor_row)
            return
        chips, error = self.chips.add(message.value)
        if error is not None:
            self._filter_bar.input.restore(message.value)
            self.notify(error, title="Filter not added", severity="error", timeout=6)
            return
        self._set_chips(chips)

    def on_filter_input_remove_last(self, _message: FilterInput.RemoveLast) -> None:
        self._set_chips(self.chips.remove_last())

    def on_filter_input_clear_all(self, _message: FilterInput.ClearAll) -> None:
        self._set_chips(self.chips.clear())

    def add_filter(self, text: str) -> str | None:
        """Add a chip as if typed; returns the error message, if any (for scripts)."""
        chips, error = self.chips.add(text)
        if error is None:
            self._set_chips(chips)
        return error

    def _set_chips(self, chips: FilterChips) -> None:
        if chips is self.chips:
            return
        self.chips = chips
        self._filter_bar.show_chips(chips.texts)
        self._refilter()

    def _chip_failed(self, error: StoreError) -> None:
        """A chip could not be applied (a regex out of time): say why, drop the last chip."""
        self.notify(str(error), title="Filter removed", severity="error", timeout=10)
        self._set_chips(self.chips.remove_last())

    def _query(self) -> Query:
        """The view and the chips as data (what a remote store searches with)."""
        return Query(self.chips.texts, self.view_state.view.fields)

    def _predicate(self) -> Predicate | None:
        return self._query().compile()[0]


    def _refilter(self) -> None:
        """The view or the chips changed: show what matches, from everything seen."""
        self._generation += 1
        self._more_wanted = False
        query = self._query()
        predicate, narrow = query.compile()
        if predicate is None:
            self._searching = self._first_search = False
            if self._stream is None and self._store is not None and not self._table.ring():
                self._load_file()
            self._table.show_ring()
            return
        if self._store is None:
            try:
                matches = [record for record in self._table.ring() if predicate(record)]
            except StoreError as exc:  # a regex chip that ran out of time
                self._chip_failed(exc)
                return
            self._table.show_results(matches, len(matches))
            return
        self._searching = self._first_search = True
        self._update_status()
        self._search(self._generation, predicate, narrow, query, 0)

    def _search_newer(self) -> None:
        """Timer: bring a live filter's matches up to date with rows added to the store."""
        if self._searching or not self._table.filtered or self._table.paused:
            return
        query = self._query()
        predicate, narrow = query.compile()
        if predicate is None:
            return
        self._searching = True
        self._search(self._generation, predicate, narrow, query, self._last_id)

    def on_flow_table_more_wanted(self, _message: FlowTable.MoreWanted) -> None:
        """More rows to show than the matches held (Up, a taller terminal): read more."""
        if self._store is None:
            return
        if self._searching:
            self._more_wanted = True  # searched for when the running search is done
            return
        self._more_wanted = False
        query = self._query()
        predicate, narrow = query.compile()
        if predicate is None:
            return
        self._searching = True
        self._search(self._generation, predicate, narrow, query, 0)

    @work(thread=True, group="search", exit_on_error=False)
    def _search(self, generation: int, predicate: Predicate, narrow: Narrowing,
                query: Query, after: int) -> None:
        assert self._store is not None
        with self._store_lock:
            if generation != self._generation:
                return  # a newer filter is already waiting
            result = self._store.search(predicate, self._table.fetch_rows(), after=after,
                                        narrow=narrow, query=query)
        self.call_from_thread(self._search_done, generation, after, result)

    def _search_done(self, generation: int, after: int, result: SearchResult) -> None:
        if generation != self._generation:
            return
        self._searching = self._first_search = False
        self.searches += 1
        self._last_id = result.last_id
        if after == 0:
            self._table.show_results(result.records, result.matched)
        else:
            self._table.add_results(result.records, result.matched)
        if self._more_wanted:
            self.on_flow_table_more_wanted(FlowTable.MoreWanted())

    @work(thread=True, group="search", exit_on_error=False)
    def _load_file(self) -> None:
        """File mode, nothing filtered: the file's latest records fill the ring."""
        assert self._store is not None
        with self._store_lock:
            result = self._store.search(None, self._table.max_rows)
        self.call_from_thread(self._file_loaded, result)

    def _file_loaded(self, result: SearchResult) -> None:
        self._table.received = result.matched
        self._table.add_records(reversed(result.records))
        self._table.flush()
        self._prepare_search()

    def on_input_changed(self, message: Input.Changed) -> None:
        """A filter being typed: the store reads ahead what its search will read (a live
        capture's new rows) while the rest is typed."""
        if message.value and message.input is self._filter_bar.input:
            self._prepare_search()

    def _prepare_search(self) -> None:
        """Let the store read ahead what its first search reads (the text index: 1.6-1.8 s
        per 100,000 rows, which the first keystroke waited for), in a worker, at most once
        per :data:`PREPARE_EVERY` seconds; a search meanwhile waits for it (one lock)."""
        if (self._store is None or self._preparing
                or time.monotonic() - self._prepared_at < PREPARE_EVERY):
            return
        self._preparing = True
        self._read_ahead(self._store)

    @work(thread=True, group="prepare", exit_on_error=False)
    def _read_ahead(self, store: FlowStore) -> None:
        try:
            with self._store_lock:
                store.prepare_search()
        finally:
            self.call_from_thread(self._read_ahead_done)

    def _read_ahead_done(self) -> None:
        self._preparing = False
        self._prepared_at = time.monotonic()
        self.searches_prepared += 1

    # -- public API ----------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Exit with ``reason`` as the return value; safe from any thread."""
        self.post_message(StopRequested(reason))

    # -- stream ------------------------------------------------------------------------

    @work(exclusive=True, group="stream", exit_on_error=False)
    async def _follow_stream(self) -> None:
        assert self._stream is not None
        async with self._stream as stream:
            self.post_message(StreamConnected(stream.capture))
            async for frame in stream:
                match frame:
                    case FlowBatch(columns=columns, rows=rows):
                        self.post_message(FlowsReceived(columns, rows))
                    case StatsUpdate(counters=counters):
                        self.post_message(StatsReceived(counters))
                await asyncio.sleep(0)  # keep the UI responsive while a burst is read
        self.post_message(StreamLost(f"the aggregator at {stream.address} closed the stream"))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place where stream and search failures end up."""
        if event.state is not WorkerState.ERROR:
            return
        error = event.worker.error
        if event.worker.group == "findings":
            self.notify(f"{error}", title="Findings failed", severity="error", timeout=10)
            return
        if event.worker.group == "talkers":
            self.notify(f"{error}", title="Top talkers failed", severity="error", timeout=10)
            return
        if event.worker.group == "prepare":
            return  # a read ahead: the search that follows reads the same and says so
        if event.worker.group == "search":
            self._searching = self._first_search = False
            if isinstance(error, RegexTimeout):
                self._chip_failed(error)
                return
            self.notify(f"{error}", title="Search failed", severity="error", timeout=10)
            return
        if event.worker.group != "stream":
            return
        reason = str(error) if isinstance(error, StreamError) else f"internal error: {error!r}"
        self.post_message(StreamLost(reason))

    def on_stream_connected(self, message: StreamConnected) -> None:
        self.connected = True
        self._header.show_live(message.capture)

    def on_flows_received(self, message: FlowsReceived) -> None:
        table = self._table
        table.add_batch(message.columns, message.rows)
        if table.filtered and self._store is None:
            predicate = self._predicate()
            if predicate is not None:
                columns = message.columns
                records = (dict(zip(columns, row, strict=False)) for row in message.rows)
                try:
                    matches = [record for record in records if predicate(record)]
                except StoreError as exc:
                    self._chip_failed(exc)
                    return
                matches.reverse()
                table.add_results(matches, len(matches))

    def on_stats_received(self, message: StatsReceived) -> None:
        self._header.show_stats(message.stats)
        total = message.stats.get("bytes")
        if isinstance(total, int) and not isinstance(total, bool):
            self._byte_rate.add(self._rate_clock(), total)
            self._header.show_rate(self._byte_rate.per_second())

    def on_stream_lost(self, message: StreamLost) -> None:
        self._header.show_lost(message.reason)
        self._byte_rate.clear()  # a stream that is gone has no rate
        self._header.show_rate(())
        self.notify(message.reason, title="Live stream lost", severity="error", timeout=10)

    def on_flow_table_refreshed(self, _message: FlowTable.Refreshed) -> None:
        self._update_status()

    def _update_status(self) -> None:
        self._status.update(self.status_text())

    def status_text(self) -> str:
        """The status line: view, what is shown out of what, the filter's count, pause."""
        if self.starting:
            return "Starting the capture… (Ctrl+C cancels and cleans up)"
        table = self._table
        parts = [self.view_state.title()]
        if self.view_state.view.findings:
            count = len(self._findings_list.findings)
            if not self.findings_runs:
                parts.append("looking for findings…")
            else:
                parts.append(f"{count:,} findings in {self._findings_scope}; Enter filters "
                             "the flows to the one selected")
            return " · ".join(parts)
        if self.view_state.view.talkers:
            count = len(self._talkers_list.talkers)
            if not self.talkers_runs:
                parts.append("counting the talkers…")
            else:
                parts.append(f"top {count:,} {self._talkers_scope}; Enter filters the flows "
                             "to the one selected")
            return " · ".join(parts)
        shown, kept = table.row_count, table.kept
        limit = f" (limit {table.limit}, Up/Down)" if table.limit is not None else ""
        if self._first_search:
            parts.append("searching…")
        elif table.filtered:
            scope = "in the file" if self._stream is None else (
                "seen by this capture" if self._store is not None else "in the latest flows")
            matched = table.matched or 0
            if matched == 0 and self.view_state.view.fields and not self.chips:
                parts.append(self.view_state.view.empty_hint)
            else:
                parts.append(f"{matched:,} flows match {scope}; newest {shown:,} shown{limit}")
        elif self._stream is None:
            parts.append(f"newest {shown:,} of {table.received:,} flows shown{limit}")
        elif kept:
            parts.append(f"{shown:,} latest flows shown, newest first{limit} "
                         f"({table.received:,} received; totals above)")
        else:
            parts.append("Waiting for flows…")
        if table.paused:
            parts.append("PAUSED (Ctrl+P resumes)")
        return " · ".join(parts)

    # -- stopping ------------------------------------------------------------------------

    def action_stop(self) -> None:
        self.exit(STOPPED)

    def action_close_file(self) -> None:
        self.exit(STOPPED)

    async def action_quit(self) -> None:
        self.exit(STOPPED)

    def on_stop_requested(self, message: StopRequested) -> None:
        self.exit(message.reason)


def _totals_dict(store: FlowStore) -> dict[str, Any]:
    totals = store.totals()
    return {"flows": totals.flows, "bytes": totals.bytes, "packets": totals.packets,
            "first_ms": totals.first_ms, "last_ms": totals.last_ms}


__all__ = ["STOPPED", "FlowsApp", "Record"]
