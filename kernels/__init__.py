"""fastcycle.kernels: Triton kernels, each op beside its pure-torch reference.

Installed as `fastcycle.kernels` (pyproject's package-dir mapping). instance_norm.py: fused instance
norm + ReLU + residual add (its Triton programs in instance_norm_kernels.py); reflect_conv.py:
reflection padding folded into a convolution; host.py: what their host code shares (the interpreter
flag, the layout rules). Both ops are torch custom ops (`torch.ops.fastcycle.*`), so torch.compile
traces through them.
"""
