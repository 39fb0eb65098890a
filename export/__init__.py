"""fastcycle.export: ONNX, ONNX Runtime, TensorRT and AOTInductor export of trained generators.

Installed as `fastcycle.export` (pyproject's package-dir mapping). Imports fastcycle.models, never
fastcycle.train. The exporters land here with issue 5.
"""
