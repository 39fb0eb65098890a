"""benchmarks: the pytest-benchmark suites behind `pytest benchmarks/` (see DESIGN.md).

Not installed with the package: benchmarks run from a checkout. The training-step, kernel, loader and
inference benchmarks, the results files under benchmarks/results/ and the report land with issue 6.
"""
