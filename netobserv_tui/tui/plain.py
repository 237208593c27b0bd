"""Notifications as plain text, for both apps.

Textual reads a notification's message as markup by default. Ours hold what the user typed
(a filter such as ``/[/`` or ``Foo=[x]``) and data from the network (DNS names, interface
names, an aggregator's error): as markup, ``[/`` ends the app with a ``MarkupError`` and
``[x]`` vanishes from the message. :class:`PlainNotifications` makes ``markup=False`` the
default for every ``notify`` of an app that mixes it in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from textual.app import App
    from textual.notifications import SeverityLevel

    _Base = App[Any]
else:
    _Base = object


class PlainNotifications(_Base):
    """Mix in before ``App``: ``notify`` shows its message as it is, never as markup."""

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)
