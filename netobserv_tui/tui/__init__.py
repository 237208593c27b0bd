"""Terminal UI: the Textual app, its widgets, views and messages.

Textual is imported only in this package (an import contract in pyproject.toml). ``columns``,
``views`` and ``view_columns`` are plain Python; ``app``, ``messages``, ``screens`` and
``widgets`` use Textual.  Importing this package imports neither.  Captures are read and
searched through :mod:`netobserv_tui.store`; the live stream is :mod:`netobserv_tui.model.stream`.
"""

import os as _os

#: Screen updates per second at most.  Textual's default, 60, makes an update that follows
#: another within 16.7 ms wait for the next slot: a keystroke's search result, then the rows'
#: measured widths, each paint late by up to one slot.  At 120 a slot is 8.3 ms; the screen
#: is still only painted when something changed.  Textual reads ``TEXTUAL_FPS`` once, when it
#: is first imported, which in ``netobserv`` happens through this package; a value in the
#: environment wins.
FPS = 120
_os.environ.setdefault("TEXTUAL_FPS", str(FPS))
