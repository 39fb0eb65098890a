"""benchmarks: the pytest-benchmark suites behind `pytest benchmarks/` (see docs/ARCHITECTURE.md).

Not installed with the package: benchmarks run from a checkout. The ceilings, training-step, kernel,
loader and inference benchmarks write one record per run under benchmarks/results/; report.py reads them.
"""
