"""Kept callback events: processing steps and the internal API over them."""
