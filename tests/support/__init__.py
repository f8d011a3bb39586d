"""Helpers shared by the test suite: databases, Redis, servers on loopback."""
