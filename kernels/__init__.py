"""fastcycle.kernels: Triton kernels, each op beside its pure-torch reference (see DESIGN.md).

Installed as `fastcycle.kernels` (pyproject's package-dir mapping). The fused instance-norm + ReLU and
reflection-pad convolution kernels land here with issue 3; until then every model runs the torch path.
"""
