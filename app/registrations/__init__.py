"""Registrations: the state machine, the decision, and the local copy."""
