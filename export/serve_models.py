"""What `fastcycle serve` does with a request: one generator direction as two Triton models.

`<direction>` (e.g. `AtoB`) takes uint8 (H, W, C) arrays and answers arrays; Triton's dynamic batcher
hands it batches of requests of one shape (it batches only equal shapes), which run as one Translator
call. `<direction>_encoded` takes PNG or JPEG bytes and answers PNG bytes, one request per execution: a
corrupt file is only found by decoding it, and a PyTriton model answers a batch with responses for all
of its requests or one error for all of them, so an encoded request batched with others could fail
them too. Every check on an array request is a check of its shape, so a refused array request is only
ever batched with requests refused for the same reason.

A refused request raises BadRequestError, whose message ends the error the client receives (PyTriton sends
the traceback of the exception with it); the server goes on serving.
"""

from __future__ import annotations

import io
import itertools
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fastcycle.translator import Translator

INPUT, OUTPUT = "image", "image"  # the tensor names of both models, in and out
ENCODED_SUFFIX = "_encoded"  # `AtoB_encoded`: the bytes model of direction AtoB
CHANNELS = (1, 3)  # what a request may carry: gray or RGB, converted to the generator's input_nc
# PNG's fastest zlib level: level 6 (the default) takes several times longer for a few per cent fewer
# bytes, and a response is read once.
PNG_LEVEL = 1


class BadRequestError(ValueError):
    """A request the server refuses; the message names the problem and what the client should send.

    PyTriton sends the client the exception formatted with its traceback (traceback.format_exception
    of the exception and its __traceback__). A refused request's traceback is this server's business,
    not the client's: reading __traceback__ gives None, so the client reads `BadRequestError: <problem>`
    instead of a dozen frames. `raise` still records the frames (it writes the C field, not this
    attribute), so sys.exc_info() and logging see them.
    """

    __module__ = "builtins"  # formatted as `BadRequestError: ...`, not with this module's path

    @property  # type: ignore[override]
    def __traceback__(self) -> None:
        return None

    @__traceback__.setter
    def __traceback__(self, tb: Any) -> None:
        pass


@dataclass
class ServeLimits:
    """What a request may hold (`fastcycle serve --max-pixels`)."""

    max_pixels: int  # refuse images with more pixels than this (H x W)


class DirectionModels:
    """The two Triton models of one direction over one Translator.

    lock: one Translator call at a time, across both models and their instances. Concurrent calls would
    each start the intra-op thread pool on the same cores (a CPU) or queue on one stream (a GPU); with
    the lock, decoding and encoding in the other instances overlap the running batch instead.
    """

    def __init__(self, name: str, translator: Translator, limits: ServeLimits):
        self.name, self.translator, self.limits = name, translator, limits
        self.lock = threading.Lock()

    @property
    def encoded_name(self) -> str:
        return self.name + ENCODED_SUFFIX

    def infer_arrays(self, requests: list[Any]) -> list[dict[str, np.ndarray]]:
        """PyTriton requests, each {"image": (n, H, W, C) uint8} (n: the client's own batch, usually 1)
        -> {"image": (n, H, W, output_nc)}; all of them one Translator call."""
        counts = [len(r[INPUT]) for r in requests]
        out = self._translate([self._checked(a) for r in requests for a in r[INPUT]])
        starts = np.cumsum([0, *counts])
        return [{OUTPUT: np.stack(out[a:b])} for a, b in itertools.pairwise(starts)]

    def infer_encoded(self, requests: list[Any]) -> list[dict[str, np.ndarray]]:
        """PyTriton requests, each {"image": (1,) bytes of a PNG or JPEG} -> {"image": (1,) PNG bytes}."""
        images = [self._checked(decode(_one_bytes(r[INPUT]), self.limits)) for r in requests]
        return [{OUTPUT: np.array([encode_png(y)], dtype=np.object_)} for y in self._translate(images)]

    def _checked(self, a: np.ndarray) -> np.ndarray:
        """An (H, W, C) uint8 request image, or BadRequestError naming what is wrong with it."""
        if a.ndim != 3:
            raise BadRequestError(f"an image is (H, W, C) uint8, not {a.ndim}-dimensional {tuple(a.shape)}")
        h, w, c = a.shape
        if h == 0 or w == 0:
            raise BadRequestError(f"the image is empty ({h}x{w} pixels)")
        if c not in CHANNELS:
            raise BadRequestError(
                f"the image has {c} channels; {self.name} takes 1 (gray) or 3 (RGB), channels last (H, W, C)"
            )
        _check_pixels(h, w, self.limits)
        return a

    def _translate(self, images: list[np.ndarray]) -> list[np.ndarray]:
        with self.lock:
            return self.translator.translate_arrays(images)


def _check_pixels(h: int, w: int, limits: ServeLimits) -> None:
    if h * w > limits.max_pixels:
        raise BadRequestError(
            f"the image is {w}x{h} = {h * w} pixels, more than this server's limit of "
            f"{limits.max_pixels} (--max-pixels); send a smaller image"
        )


def _one_bytes(value: np.ndarray) -> bytes:
    if value.size != 1:
        raise BadRequestError(
            f"an encoded request holds one image's bytes, shape [1], not {list(value.shape)}"
        )
    data = value.reshape(-1)[0]
    if not isinstance(data, bytes) or not data:
        raise BadRequestError("the request holds no image bytes; send the bytes of one PNG or JPEG file")
    return data


def decode(data: bytes, limits: ServeLimits) -> np.ndarray:
    """PNG/JPEG (anything PIL reads) bytes -> (H, W, 1 or 3) uint8; the size checked from the header,
    before any pixel is decoded, so a small file claiming a huge image costs nothing."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadRequestError(
            f"the {len(data)} bytes sent are not an image file PIL can read; send a PNG or JPEG file"
        ) from None
    except Exception as e:  # DecompressionBombError and the other header errors
        raise BadRequestError(f"the image bytes cannot be read: {e}") from None
    w, h = img.size
    _check_pixels(h, w, limits)
    try:
        img.load()
    except Exception as e:  # truncated or corrupt pixel data: OSError, SyntaxError, ValueError, ...
        raise BadRequestError(
            f"the {img.format} image is truncated or corrupt ({e}); send the whole file"
        ) from None
    return _pixels(img)


def _pixels(img: Any) -> np.ndarray:
    """A PIL image -> (H, W, 1 or 3) uint8: gray stays gray, 16-bit gray is scaled to 8 bits (not
    clipped), anything else (palette, RGBA, CMYK) becomes RGB."""
    if img.mode == "L":
        return np.asarray(img)[..., None]
    if img.mode.startswith("I;16") or img.mode == "I":
        from fastcycle.data.folders import to_8bit

        return to_8bit(np.asarray(img).astype(np.uint16))[0][..., None]
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))


def encode_png(a: np.ndarray) -> bytes:
    """(H, W, 1 or 3) uint8 -> PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a[..., 0] if a.shape[2] == 1 else a).save(buf, "PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()


def reporting(name: str, infer: Callable[[list[Any]], list[dict]]) -> Callable[[list[Any]], list[dict]]:
    """infer, with any error that is not the client's (not a BadRequestError: a bug, an out-of-memory)
    printed with its traceback on the server's stderr before it is sent to the client; BadRequests are
    the client's to read and print nothing."""

    def infer_reporting(requests: list[Any]) -> list[dict]:
        try:
            return infer(requests)
        except BadRequestError:
            raise
        except Exception:
            print(f"fastcycle serve: {name} failed on {len(requests)} requests:", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            raise

    return infer_reporting
