"""Metrics and the benchmark evaluation command (``python -m pipeline.evaluation``)."""
