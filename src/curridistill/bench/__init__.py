"""Benchmarks of the tool itself (``curridistill bench``): results are JSON with ratios measured in one run."""
from curridistill.bench.throughput import MODES, print_table, run_throughput

__all__ = ["MODES", "print_table", "run_throughput"]
