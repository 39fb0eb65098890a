"""fastcycle.export: ONNX, ONNX Runtime, TensorRT and AOTInductor export of trained generators.

Installed as `fastcycle.export` (pyproject's package-dir mapping). It stands above inference: it imports
the generator loader (fastcycle.trained), the runner protocol (fastcycle.runner) and the models, never
fastcycle.train or fastcycle.translate (docs/ARCHITECTURE.md; tests/test_architecture.py checks it).
backends.py opens any inference backend by name for `fastcycle translate`.
"""
