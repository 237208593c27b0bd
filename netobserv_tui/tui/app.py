"""The flows app: a header, the latest flows, a status line; fed by the aggregator's stream.

The capture controller owns the capture; this app only shows it::

    app = FlowsApp((host, port, token), {"target": "local host", "capture": "flows",
                                         "output": "output/flow", "max_time": "60"})
    reason = await app.run_async()     # "stopped" (ctrl+c / ctrl+q), or request_stop's reason

``request_stop(reason)`` may be called from the app's loop or from another thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState

from ..model.stream import FlowBatch, LiveStream, StatsUpdate, StreamError
from .messages import FlowsReceived, StatsReceived, StopRequested, StreamConnected, StreamLost
from .views import ViewState
from .widgets import CaptureHeader, FlowTable

#: Return value of ``run_async`` when the user stops the capture.
STOPPED = "stopped"


class FlowsApp(App[str]):
    """Live view of a flow capture.  Returns ``"stopped"`` or the reason given to
    ``request_stop``."""

    CSS_PATH = "app.tcss"
    TITLE = "netobserv"
    ENABLE_COMMAND_PALETTE = False

    BINDINGS: ClassVar[list[BindingType]] = [
        # Recent Textual binds ctrl+c to copy and ctrl+q to quit; both stop the capture here.
        Binding("ctrl+c,ctrl+q", "stop", "Stop capture", id="stop", priority=True),
        # Not in the footer, which must keep "Stop capture" visible on an 80-column
        # terminal; the status line names the view. (A help screen will list them.)
        Binding("right", "next_view", "Next view", id="next_view", priority=True, show=False),
        Binding("left", "prev_view", "Previous view", id="prev_view", priority=True,
                show=False),
        Binding("pagedown", "next_enrichment", "More columns", id="next_enrichment",
                priority=True, show=False),
        Binding("pageup", "prev_enrichment", "Fewer columns", id="prev_enrichment",
                priority=True, show=False),
    ]

    def __init__(
        self,
        stream: tuple[str, int, str],
        header: Mapping[str, str],
        *,
        max_rows: int = 1000,
        refresh_interval: float = 0.5,
    ) -> None:
        super().__init__()
        self._stream = LiveStream(*stream)
        # Held, not queried: messages still queued while the app shuts down must not fail.
        self._header = CaptureHeader(header, id="header")
        self._table = FlowTable(max_rows=max_rows, refresh_interval=refresh_interval, id="flows")
        self._status = Static("Waiting for flows…", id="status", markup=False)
        self.view_state = ViewState()

    def compose(self) -> ComposeResult:
        yield self._header
        yield self._table
        yield self._status
        yield Footer()

    def on_mount(self) -> None:
        self._header.show_connecting(self._stream.address)
        self._table.set_columns(self.view_state.columns())
        self.sub_title = self.view_state.title()
        self._follow_stream()

    # -- views -------------------------------------------------------------------------

    def _show(self, state: ViewState) -> None:
        self.view_state = state
        self._table.set_columns(state.columns())
        self.sub_title = state.title()

    def action_next_view(self) -> None:
        self._show(self.view_state.next_view())

    def action_prev_view(self) -> None:
        self._show(self.view_state.prev_view())

    def action_next_enrichment(self) -> None:
        self._show(self.view_state.next_enrichment())

    def action_prev_enrichment(self) -> None:
        self._show(self.view_state.prev_enrichment())

    # -- public API ----------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Exit with ``reason`` as the return value; safe from any thread."""
        self.post_message(StopRequested(reason))

    # -- stream ------------------------------------------------------------------------

    @work(exclusive=True, group="stream", exit_on_error=False)
    async def _follow_stream(self) -> None:
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
        """The one place where stream failures end up."""
        if event.worker.group != "stream" or event.state is not WorkerState.ERROR:
            return
        error = event.worker.error
        reason = str(error) if isinstance(error, StreamError) else f"internal error: {error!r}"
        self.post_message(StreamLost(reason))

    def on_stream_connected(self, message: StreamConnected) -> None:
        self._header.show_live(message.capture)

    def on_flows_received(self, message: FlowsReceived) -> None:
        self._table.add_batch(message.columns, message.rows)

    def on_stats_received(self, message: StatsReceived) -> None:
        self._header.show_stats(message.stats)

    def on_stream_lost(self, message: StreamLost) -> None:
        self._header.show_lost(message.reason)
        self.notify(message.reason, title="Live stream lost", severity="error", timeout=10)

    def on_flow_table_refreshed(self, message: FlowTable.Refreshed) -> None:
        self._status.update(
            f"{self.view_state.title()}: {message.shown:,} latest flows shown, newest first "
            f"({message.received:,} received by this view; totals above)"
        )

    # -- stopping ------------------------------------------------------------------------

    def action_stop(self) -> None:
        self.exit(STOPPED)

    async def action_quit(self) -> None:
        self.exit(STOPPED)

    def on_stop_requested(self, message: StopRequested) -> None:
        self.exit(message.reason)
