"""Metrics of a model's predictions and of its cost (params, FLOPs, bytes, latency, throughput)."""
