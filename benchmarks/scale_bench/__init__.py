"""Pieces of ``benchmarks/scale.py``: models, measurements, the stopping-rule analysis."""
