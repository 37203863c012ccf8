"""Benchmarks behind `make bench`: they measure the numbers DESIGN.md sets and report them.

Timings are reported in docs/benchmarks.md and as JSON, never asserted: a slow machine makes a
slow number, not a failed build.
"""
