"""Keep Python's cyclic garbage collector out of the way of keystrokes while the TUI runs.

A repaint allocates tens of thousands of short-lived containers (Textual's strips, segments
and their caches, some of them in reference cycles).  With the default thresholds (700, 10,
10) that makes a young collection every few hundred microseconds of painting and a full one
every second or so, and a full one walks every object the process holds: Textual's modules,
the widget tree, the store, the text index (20-30 ms on two cores, so a keystroke that meets
one repaints late).  While the TUI runs:

* what exists when it starts (modules, the opened store) is moved out of the collector's
  walks (``gc.freeze``): it lives as long as the TUI anyway, and reference counting still
  frees whatever of it is dropped without a cycle;
* the young generation is collected every :data:`YOUNG` allocations instead of 700: a
  repaint's short-lived cycles still die young (a young collection frees them), and the
  older generations are reached ~14 times less often.

Both are restored when the TUI ends (the controller goes on to write and fetch files).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Final

#: Net container allocations between two young collections while the TUI runs.
YOUNG: Final = 10_000


@contextlib.contextmanager
def quiet_collector() -> Iterator[None]:
    """While the TUI runs: fewer, cheaper cyclic collections (see the module)."""
    saved = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, *saved[1:])
    try:
        yield
    finally:
        gc.set_threshold(*saved)
        gc.unfreeze()
