"""Benchmarks: `pipeline bench` and the scripts behind it."""
