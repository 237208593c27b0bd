"""Terminal UI: the Textual app, its widgets, views and messages.

Textual is imported only in this package (an import contract in pyproject.toml). ``columns``,
``views`` and ``view_columns`` are plain Python; ``app``, ``messages``, ``screens`` and
``widgets`` use Textual.  Importing this package imports neither.  Captures are read and
searched through :mod:`netobserv_tui.store`; the live stream is :mod:`netobserv_tui.model.stream`.
"""
