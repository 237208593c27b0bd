"""Widgets of the flows app."""

from .capture_header import CaptureHeader
from .flow_table import FlowTable

__all__ = ["CaptureHeader", "FlowTable"]
