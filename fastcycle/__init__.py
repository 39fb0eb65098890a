"""fastcycle: fast CycleGAN training and inference.

The Python API: `fastcycle.load_translator(...)` opens a trained generator on any backend as a
fastcycle.translator.Translator (README, "Translate from Python"). It is imported on first use, so
`import fastcycle` stays free of torch.
"""

from typing import Any

from fastcycle.version import __version__

__all__ = ["__version__", "load_translator"]


def __getattr__(name: str) -> Any:
    if name == "load_translator":
        from fastcycle.export.translator import load_translator

        return load_translator
    raise AttributeError(f"module 'fastcycle' has no attribute {name!r}")
