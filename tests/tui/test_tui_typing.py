"""Whatever a person types into the filter line, the app stays up and answers.

Textual reads notifications as markup by default; a filter such as ``/[/`` used to end the
capture with a MarkupError because the error message quoted it. These tests type the known
culprits, then a few hundred random strings of brackets, slashes, backslashes, quotes,
operators and non-ASCII text (seeded, so a failure repeats), into the app of a live capture.
Each Enter must leave the app running, and either add a chip or show an error that quotes
the text exactly as typed.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from live_helpers import base_record, live_capture
from textual.pilot import Pilot
from tui_helpers import wait_until

from netobserv_tui.tui.app import FlowsApp
from netobserv_tui.tui.widgets.filter_bar import FilterBar

SIZE = (160, 40)
CULPRITS = ["/[/", "Foo=[/x]", "Foo=[x]", "[bold]red", "[/]", "[", "]", "\\", "\\[", "'",
            '"', "SrcAddr=[", "DnsName=[/a]", "/[a-/", "/(/", "=", "~", "!=", "Foo=",
            "[link=x]y[/link]", "@click=quit", "[@click=app.quit]x[/]"]
ALPHABET = "[]/\\'\"=~!<>()*+?.^$|{}:;,@#%& aZ09é中字🙂\u200fא"


def random_texts(count: int, seed: int = 20261206) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 14)))
            for _ in range(count)]


async def type_and_enter(
    pilot: Pilot[Any], app: FlowsApp, text: str, said: list[str]
) -> None:
    bar = app.query_one(FilterBar)
    before_chips = len(app.chips)
    before_notes = len(said)
    bar.input.focus()
    bar.input.value = ""
    bar.input.insert_text_at_cursor(text)
    await pilot.press("enter")
    await wait_until(
        pilot,
        lambda: len(app.chips) != before_chips or len(said) > before_notes,
        f"an answer to {text!r}",
    )
    assert app.is_running, text


async def test_typed_text_never_ends_the_app(tmp_path: Path) -> None:
    async with live_capture(tmp_path) as capture:
        app = capture.app(max_rows=5, refresh_interval=0.05)
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await wait_until(pilot, lambda: app.connected, "the live stream")
            await capture.send([base_record(i) for i in range(5)])
            said: list[str] = []
            notify = app.notify

            def spy(message: str, **kwargs: Any) -> None:
                said.append(message)
                notify(message, **kwargs)

            app.notify = spy  # type: ignore[method-assign]
            texts = CULPRITS + random_texts(200)
            for index, text in enumerate(texts):
                await type_and_enter(pilot, app, text, said)
                if index % 10 == 9:  # keep the chip set small: Escape clears it
                    await pilot.press("escape")
                    await pilot.pause()
            assert app.is_running
            # Every error quoted the text as typed: nothing was eaten as markup.
            assert any("Foo=[x]" in message for message in said), said[:5]
            assert app._notifications and all(not n.markup for n in app._notifications)


async def test_a_runaway_regex_chip_is_removed_with_the_reason(tmp_path: Path) -> None:
    """/(b|b)+$/ on a 'bbbb...!' interface name would backtrack for hours (no other field
    ends in b): the search is stopped after its budget, the chip removed, and the message
    says why; the app stays."""
    async with live_capture(tmp_path) as capture:
        app = capture.app(max_rows=5, refresh_interval=0.05)
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await wait_until(pilot, lambda: app.connected, "the live stream")
            await capture.send([base_record(i, Interface="b" * 32 + "!") for i in range(3)])
            bar = app.query_one(FilterBar)
            bar.input.focus()
            bar.input.insert_text_at_cursor("/(b|b)+$/")
            await pilot.press("enter")
            await wait_until(pilot, lambda: any("ran over" in n.message
                                                for n in app._notifications),
                             "the reason", timeout=10)
            await wait_until(pilot, lambda: len(app.chips) == 0, "the chip removed")
            assert app.is_running and bar.chips_text().strip() == "filter:"
            (note,) = [n for n in app._notifications if "ran over" in n.message]
            assert note.title == "Filter removed"
            assert "/(b|b)+$/ ran over 0.2 s on one flow" in note.message
