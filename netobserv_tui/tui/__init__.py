"""Terminal UI.

``stream`` (live-stream client) and ``columns`` (formatters) are plain Python; ``app``,
``messages`` and ``widgets`` use Textual, which is imported nowhere else in the project.
Importing this package imports neither.
"""
