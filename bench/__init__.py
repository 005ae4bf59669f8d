"""Benchmarks and performance budgets (``make bench`` → ``bench/results.json``, docs/performance.md).

Every figure is measured against a floor measured in the same run, on the same machine, so that a
slow or busy laptop moves both and the ratio stays meaningful.
"""
