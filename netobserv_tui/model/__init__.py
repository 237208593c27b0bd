"""Shared, dependency-light model: record fields, wire protocol, errors, small parsers."""
