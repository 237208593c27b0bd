"""netobserv-tui: on-demand network observability from eBPF agents to a terminal UI."""

__version__ = "0.1.0.dev0"
