"""What the kernels' host code shares: whether Triton runs under its CPU interpreter, and the layout rules.

Layouts: a kernel reads an (N, C, H, W) tensor in place when its H*W positions are evenly spaced
(stride_h == W * stride_w: contiguous NCHW and channels-last both are); anything else is copied once.
Outputs are NCHW or channels-last as the input is. The custom ops' fake implementations (used by
torch.compile) call these same functions, so the strides a compiled graph expects are the ones the
kernels write.
"""

import os

import torch
import triton

# Triton reads this variable when a kernel is defined (tests/conftest.py sets it before any import).
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
# Under the interpreter every program costs milliseconds of Python, so tiles there are few and large;
# the kernel tests switch this off to run the GPU's tile shapes.
FEW_LARGE_TILES = INTERPRETED


def readable(t: torch.Tensor) -> torch.Tensor:
    """t itself when its (H, W) positions are evenly spaced (NCHW or channels-last), else a copy."""
    _, _, H, W = t.shape
    if t.stride(2) == W * t.stride(3) or H == 1:
        return t
    return t.contiguous()


def memory_format(t: torch.Tensor) -> torch.memory_format:
    """channels_last for an NHWC tensor, else contiguous_format: the layout a kernel's output takes."""
    if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _repair_interpreter_loop_bounds() -> None:
    """Let `range(lo, hi, BLOCK)` over runtime scalars run under Triton 3.6's interpreter with NumPy >= 2.4.

    The interpreter holds every scalar (kernel argument, program_id, and anything computed from them) as
    a NumPy array of shape (1,), and 3.6 turns one into a Python int for `range` through
    `tensor.__index__ = int(handle.data)`. Converting an array with ndim > 0 to a scalar was deprecated
    in NumPy 1.25 and is a TypeError from NumPy 2.4 on ("only 0-dimensional arrays can be converted to
    Python scalars"), so every loop over a runtime bound fails there (triton-lang/triton#9171). Later
    Triton (3.8 here) converts the single element instead (`int(data.squeeze())`); this applies the same
    conversion to older versions. Compiled kernels (GPUs) never run this code. The alternative,
    compile-time loop bounds in the kernels, would make the GPU compile a variant per distinct bound
    (per layer shape and batch size) to work around a CPU-only bug.
    """
    from triton.runtime import interpreter

    patch_tensor = getattr(interpreter, "_patch_lang_tensor", None)
    if patch_tensor is None or getattr(patch_tensor, "repaired", False):
        return

    def _patch_lang_tensor(tensor, scope):
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.item()))

    _patch_lang_tensor.repaired = True
    interpreter._patch_lang_tensor = _patch_lang_tensor


if INTERPRETED and tuple(int(v) for v in triton.__version__.split(".")[:2]) < (3, 8):
    _repair_interpreter_loop_bounds()
