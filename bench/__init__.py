"""Benchmarks: `python -m bench.run` compares reindexer with rattler-index on a generated channel."""
