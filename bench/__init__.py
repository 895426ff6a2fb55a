"""Benchmarks: `make bench` (python -m bench) runs every bench_*.py and prints one table.

Each module defines `run() -> list[Result]`. Ratios compare our instrumented code with plain
transformers measured in the same run, so a noisy machine affects both sides alike.
"""
