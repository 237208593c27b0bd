"""``python -m netobserv_tui.agent``: the node agent (also the DaemonSet's entry point)."""

import sys

from .main import main

sys.exit(main())
