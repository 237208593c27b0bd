"""``python -m netobserv_tui`` is the ``netobserv`` command."""

import sys

from .cli import main

sys.exit(main())
