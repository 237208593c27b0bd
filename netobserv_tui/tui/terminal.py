"""Make Textual size its screen from the real terminal, whatever the environment says."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

#: Environment variables that override the terminal size in ``shutil.get_terminal_size``.
SIZE_VARIABLES = ("COLUMNS", "LINES")


@contextlib.contextmanager
def sized_from_terminal() -> Iterator[None]:
    """While the TUI runs: fd 1 on the terminal, and no COLUMNS/LINES in the environment.

    Textual sizes the screen with ``shutil.get_terminal_size``, which trusts ``COLUMNS`` and
    ``LINES`` first (shells, tmux and test runners may export stale ones: the screen then
    stays 80x24 and ignores resizes), and otherwise asks stdout.  The file paths go to stdout
    so that ``netobserv flows > paths.txt`` works; redirected, stdout cannot be asked, so
    fd 1 points at the terminal (stderr) meanwhile.  Nothing is written to stdout while the
    TUI runs.  Both are restored on exit.
    """
    saved_env = {name: os.environ.pop(name) for name in SIZE_VARIABLES if name in os.environ}
    redirect = not sys.stdout.isatty() and sys.stderr.isatty()
    saved_fd = -1
    if redirect:
        sys.stdout.flush()
        saved_fd = os.dup(1)
        os.dup2(2, 1)
    try:
        yield
    finally:
        if redirect:
            sys.stdout.flush()
            os.dup2(saved_fd, 1)
            os.close(saved_fd)
        os.environ.update(saved_env)
