"""The live-filter line: what is typed goes here; Enter turns it into a chip.

The chips themselves (parsing, matching) are :class:`~netobserv_tui.store.chips.FilterChips`;
this module is only the keyboard and the display:

* Enter adds the typed text as a chip (an invalid one stays in the line, and the error shows);
* Backspace on an empty line removes the last chip; Escape clears the line and every chip;
* ``?`` on an empty line asks for the help screen (inside a ``/regex/`` it is a character).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Input, Static

PLACEHOLDER = "type to filter: keyword, Field=value or /regex/, then Enter"


class FilterInput(Input):
    """An Input that reports Enter, Backspace on empty text, Escape and ``?`` to the app.

    Those keys are handled as they arrive, not through bindings: Textual runs a widget's
    bindings only once the key has bubbled up to the app, after the keys queued behind it
    were typed into the line (a fast typist, ``tmux send-keys``, a busy app), so "Enter
    then nxdomain" became the chip "DstPort=53nxdomain".
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "clear_filters", "Clear filters", show=False),
    ]

    @dataclass
    class Entered(Message):
        """Enter: ``value`` was in the line, which is now empty (the app puts the text back
        if it is not a valid chip)."""

        value: str

    @dataclass
    class RemoveLast(Message):
        """Backspace with nothing typed: drop the last chip."""

    @dataclass
    class ClearAll(Message):
        """Escape: drop the typed text and every chip."""

    @dataclass
    class HelpRequested(Message):
        """``?`` with nothing typed."""

    def action_delete_left(self) -> None:
        if not self.value:
            self.post_message(self.RemoveLast())
            return
        super().action_delete_left()

    def action_clear_filters(self) -> None:
        self.value = ""
        self.post_message(self.ClearAll())

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            value, self.value = self.value, ""
            self.post_message(self.Entered(value))
            return
        if event.key == "backspace":
            event.stop()
            event.prevent_default()
            self.action_delete_left()
            return
        if event.key == "escape":
            event.stop()
            event.prevent_default()
            self.action_clear_filters()
            return
        if event.character == "?" and not self.value:
            event.stop()
            event.prevent_default()
            self.post_message(self.HelpRequested())
            return
        await super()._on_key(event)

    def restore(self, text: str) -> None:
        """Put back ``text`` (a chip that was refused) before what was typed since."""
        self.value = text + self.value
        self.cursor_position = len(text)


class FilterBar(Horizontal):
    """Chips on the left, the input line on the right; a message line below for errors."""

    DEFAULT_CSS = """
    FilterBar {
        height: auto;
        background: $surface;
    }
    FilterBar #chips {
        width: auto;
        max-width: 60%;
        height: 1;
        padding: 0 1;
        content-align: left middle;
    }
    FilterBar FilterInput {
        width: 1fr;
        height: 1;
        border: none;
        padding: 0 1;
    }
    FilterBar FilterInput:focus {
        border: none;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.input = FilterInput(placeholder=PLACEHOLDER, id="filter-input", select_on_focus=False)
        self._chips_line = Text("filter:")
        self._chips = Static(self._chips_line, id="chips", markup=False)

    def compose(self) -> ComposeResult:
        yield self._chips
        yield self.input

    def show_chips(self, texts: tuple[str, ...]) -> None:
        line = Text("filter:")
        for chip in texts:
            line.append(" ")
            line.append(f" {chip} ", style="reverse")
        self._chips_line = line
        self._chips.update(line)

    def chips_text(self) -> str:
        """The chips as shown (plain text), for tests."""
        return self._chips_line.plain
