"""One base exception with a subclass per area.

Messages say what failed, why, and what to do next; the CLI prints them to stderr and
exits non-zero.
"""

from __future__ import annotations


class NetobservError(Exception):
    """Base of every error the tool reports to the user."""

    exit_code = 1


class UsageError(NetobservError):
    """A flag or argument is invalid."""

    exit_code = 2


class PrivilegeError(NetobservError):
    """The process lacks root or the capabilities eBPF needs."""

    exit_code = 3


class KernelError(NetobservError):
    """The running kernel cannot do what was asked (no BTF, no tracefs, load failure)."""

    exit_code = 4


class CaptureError(NetobservError):
    """A capture could not start or ended abnormally."""


class LabError(NetobservError):
    """The network-namespace lab could not be built or removed."""
