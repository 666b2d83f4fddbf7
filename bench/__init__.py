"""Benchmarks: each prints figures (and ratios to a baseline run in the same invocation).

Run all with `make bench` (python -m bench), or one with `python -m bench.ingest` etc.
They never assert a time; the figures go into docs/benchmarks.md and the issue notes.
"""
