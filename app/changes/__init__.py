"""The change feed: every change of a registration's answer, in the order it became visible, and
the outbox that gives each change its deliveries in the statement that numbers it."""
