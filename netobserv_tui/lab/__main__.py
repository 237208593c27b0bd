"""``python -m netobserv_tui.lab up|down|status|traffic`` (same as ``netobserv lab ...``)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
