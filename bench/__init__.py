"""Benchmarks of the service, run as modules from the repository root (see bench/README.md)."""
