"""The change feed: every change of a registration's answer, in the order it became visible."""
