"""Counts the console and /metrics show, kept by the database as they change (docs/counting.md)."""
