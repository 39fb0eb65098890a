"""fastcycle's version, in the foundation layer so that any module may record it (checkpoints, exports)."""

__version__ = "0.1.0"
