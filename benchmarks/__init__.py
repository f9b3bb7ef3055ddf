"""Benchmarks of ``register`` on public data read from ``../shared/data`` (never copied here)."""
