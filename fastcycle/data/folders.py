"""Image files: listing, checking, decoding at full precision (8 or 16 bits, gray or RGB), channel
conversion, and atomic writes.

Pillow decodes every 8-bit format and 16-bit grayscale PNG, but reads a 48-bit (16-bit RGB) PNG as
8 bits and cannot write one. 16-bit PNGs therefore go through imagecodecs (libpng) and TIFFs through
tifffile (by the same author; it reads 16-bit RGB and gray TIFFs natively). Measured on a 2048x2048
16-bit RGB image (2-core CPU): imagecodecs decodes in 230 ms and encodes in 630 ms (zlib level 1),
OpenCV in 221 / 660 ms: the same libpng and zlib. imagecodecs is a 26 MB wheel, OpenCV's headless
one 64 MB; pypng is small but undoes PNG's row filters in pure Python (not measured), and a numpy +
zlib codec cannot vectorise the Average and Paeth filters. So imagecodecs it is.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from fastcycle.atomic import write_atomic

# PIL only warns between MAX_IMAGE_PIXELS and twice that; check_pixels refuses those files instead.
# (warnings.catch_warnings is not thread-safe, and decoding runs in threads.)
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DEEP_SUFFIXES = (".png", ".tif", ".tiff")  # where write_image may put 16 bits per sample
# zlib level 1 for 16-bit PNGs: 2.6x faster to encode than level 6 (630 vs 1,640 ms at 2048x2048),
# and as small there (17.1 MiB both): the low bits of 16-bit samples are noise zlib cannot shrink.
PNG16_LEVEL = 1

# PIL modes converted on reading -> (the mode they become, the note for the run log)
_PIL_CONVERSIONS = {
    "RGBA": ("RGB", "RGBA to RGB (alpha dropped)"),
    "LA": ("L", "LA to L (alpha dropped)"),
    "P": ("RGB", "palette to RGB"),
    "PA": ("RGB", "palette to RGB"),
    "CMYK": ("RGB", "CMYK to RGB"),
    "1": ("L", "1-bit to 8 bits"),
}
GRAY_TO_RGB, RGB_TO_GRAY, TO_8_BITS = "grayscale to RGB", "RGB to grayscale", "16 to 8 bits"


def list_images(
    folder: str | os.PathLike, max_size: int = 0, extensions: tuple[str, ...] = IMG_EXTENSIONS
) -> list[Path]:
    """All image files (or files of other `extensions`) under `folder`, recursively, sorted so that runs
    are reproducible."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in extensions and p.is_file())
    return files[:max_size] if max_size else files


def check_pixels(img: Image.Image, path: Path) -> None:
    """A decompression-bomb-sized file is not a training image: refuse it before decoding."""
    _check_size(*img.size)


def _check_size(w: int, h: int) -> None:
    if w * h > Image.MAX_IMAGE_PIXELS:
        raise Image.DecompressionBombError(
            f"{w}x{h} pixels is over the {Image.MAX_IMAGE_PIXELS:,}-pixel limit"
        )


def png_header(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR chunk, None for another format; PIL hides 16-bit RGB
    behind mode "RGB"."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return head[24], head[25]


def _drop_alpha(arr: np.ndarray, notes: list[str]) -> np.ndarray:
    """(H, W, 2 or 4) -> (H, W, 1 or 3), naming the drop; other channel counts pass."""
    if arr.shape[2] == 4:
        notes.append(_PIL_CONVERSIONS["RGBA"][1])
        return arr[..., :3]
    if arr.shape[2] == 2:
        notes.append(_PIL_CONVERSIONS["LA"][1])
        return arr[..., :1]
    return arr


def _to_16(arr: np.ndarray, notes: list[str]) -> np.ndarray:
    """Any sample type -> uint8 or uint16: 1-bit to 0/255, wider integers and floats to 16 bits
    (integers clipped to 0..65535, as the values a 16-bit file holds; floats as [0, 1])."""
    if arr.dtype in (np.uint8, np.uint16):
        return arr
    if arr.dtype == np.bool_:
        notes.append("1-bit to 8 bits")
        return arr.astype(np.uint8) * 255
    notes.append(f"{arr.dtype.itemsize * 8}-bit to 16 bits")
    if arr.dtype.kind == "f":
        return (np.nan_to_num(arr.astype(np.float64)).clip(0, 1) * 65535 + 0.5).astype(np.uint16)
    return arr.clip(0, 65535).astype(np.uint16)


def _shaped(arr: np.ndarray, notes: list[str]) -> np.ndarray:
    arr = arr[..., None] if arr.ndim == 2 else arr
    return _to_16(_drop_alpha(arr, notes), notes)


def _read_png16(path: Path) -> np.ndarray:
    import imagecodecs

    return imagecodecs.png_decode(path.read_bytes())  # (H, W) or (H, W, C) uint16


def _read_tiff(path: Path) -> np.ndarray | None:
    """The first page as (H, W[, C]) when it is plain gray or RGB(A) samples, else None (PIL's turn:
    CMYK, palette, YCbCr)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        photometric = tifffile.PHOTOMETRIC
        plain = page.photometric in (photometric.MINISBLACK, photometric.RGB) and page.axes in ("YX", "YXS")
        if not plain:
            return None
        _check_size(page.imagewidth, page.imagelength)
        return page.asarray()


def _is_png16(img: Image.Image) -> bool:
    """A 16-bit PNG other than plain gray (which PIL reads whole, as "I;16"): its raw mode says so."""
    return img.format == "PNG" and bool(img.tile) and ";16" in str(img.tile[0].args) and img.mode != "I;16"


def read_image(path: Path) -> tuple[np.ndarray, list[str]]:
    """(H, W, C) as stored, C = 1 (grayscale) or 3 (RGB), uint8 or uint16 (16-bit PNG, gray or RGB;
    16-bit TIFF), and the conversions applied, named for the run log ("RGBA to RGB (alpha dropped)",
    "palette to RGB", "CMYK to RGB", "32-bit to 16 bits"). OSError when unreadable or too large."""
    path = Path(path)
    notes: list[str] = []
    try:
        suffix = path.suffix.lower()
        if suffix in (".tif", ".tiff"):
            try:
                arr = _read_tiff(path)
            except Image.DecompressionBombError:
                raise
            except Exception:  # not a TIFF tifffile reads (or a compression it lacks): PIL's turn
                arr = None
            if arr is not None:
                return _shaped(arr, notes), notes
        with Image.open(path) as img:
            check_pixels(img, path)
            if _is_png16(img):
                return _shaped(_read_png16(path), notes), notes
            mode = img.mode
            if mode in _PIL_CONVERSIONS:
                target, note = _PIL_CONVERSIONS[mode]
                notes.append(note)
                img = img.convert(target)
            elif mode.startswith("I;16"):
                return np.asarray(img).astype(np.uint16)[..., None], notes  # native byte order
            elif mode in ("I", "F"):
                return _shaped(np.asarray(img), notes), notes
            elif mode not in ("L", "RGB"):
                notes.append(f"{mode} to RGB")
                img = img.convert("RGB")
            return _shaped(np.asarray(img), notes), notes
    except (Image.DecompressionBombError, ValueError, RuntimeError) as e:
        raise OSError(f"{path}: {e}") from e


def convert_channels(arr: np.ndarray, nc: int) -> tuple[np.ndarray, str | None]:
    """(H, W, C) -> (H, W, nc), C and nc 1 or 3: 1 -> 3 replicates the gray; 3 -> 1 is the luminance
    L = (19595 R + 38470 G + 7471 B + 2**15) >> 16 (ITU-R 601-2 in PIL's fixed point, so 8-bit results
    equal PIL's "L" exactly); the note for the run log, or None when nothing changed."""
    c = arr.shape[2]
    if c == nc:
        return arr, None
    if (c, nc) == (1, 3):
        return np.repeat(arr, 3, axis=2), GRAY_TO_RGB
    if (c, nc) == (3, 1):
        rgb = arr.astype(np.uint64)  # 65535 x 65536 overflows nothing in 64 bits
        y = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
        return y.astype(arr.dtype)[..., None], RGB_TO_GRAY
    raise ValueError(f"cannot convert {c} channels to {nc}; images have 1 (gray) or 3 (RGB)")


def to_8bit(arr: np.ndarray) -> tuple[np.ndarray, str | None]:
    """uint16 -> uint8 scaled (65535 -> 255, rounded) rather than clipped; uint8 passes."""
    if arr.dtype == np.uint8:
        return arr, None
    return (arr.astype(np.float32) * (255 / 65535) + 0.5).astype(np.uint8), TO_8_BITS


def load_image(path: Path, nc: int = 3) -> Image.Image:
    """A training image: 8-bit, mode "L" (nc 1) or "RGB" (nc 3), for PIL's resizes. OSError if
    unreadable."""
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):  # PIL shows 16-bit RGB TIFFs as "RGB"
        try:
            with Image.open(path) as img:
                # Already what training needs (most JPEGs and PNGs): PIL's image as decoded, without
                # read_image's two array copies (0.2 ms of a 1.6 ms 512x512 PNG decode).
                if img.mode == ("L" if nc == 1 else "RGB") and not _is_png16(img):
                    check_pixels(img, path)
                    img.load()
                    return img
        except (Image.DecompressionBombError, ValueError, RuntimeError) as e:
            raise OSError(f"{path}: {e}") from e
    arr, _ = read_image(path)
    arr, _ = convert_channels(arr, nc)
    arr, _ = to_8bit(arr)
    return Image.fromarray(arr[..., 0] if nc == 1 else arr, "L" if nc == 1 else "RGB")


def write_image(arr: np.ndarray, path: Path) -> None:
    """Write an (H, W, C) image, C 1 or 3, uint8 or uint16 (the latter to .png, .tif or .tiff only),
    atomically: a temporary file renamed over `path` once complete."""
    path = Path(path)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3) or arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_image takes (H, W, 1 or 3) uint8 or uint16, got {arr.dtype} {arr.shape}")
    suffix = path.suffix.lower()
    arr = np.ascontiguousarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    if arr.dtype == np.uint16:
        if suffix not in DEEP_SUFFIXES:
            raise ValueError(
                f"16-bit images are written to {', '.join(DEEP_SUFFIXES)}, not {suffix or 'no suffix'}"
            )
        if suffix == ".png":
            import imagecodecs

            data = imagecodecs.png_encode(arr, level=PNG16_LEVEL)
            write_atomic(path, lambda tmp: Path(tmp).write_bytes(data), durable=False)
        else:
            import tifffile

            photometric = "minisblack" if arr.ndim == 2 else "rgb"
            write_atomic(path, lambda tmp: tifffile.imwrite(tmp, arr, photometric=photometric), durable=False)
        return
    fmt = Image.registered_extensions().get(suffix, "PNG")
    write_atomic(path, lambda tmp: Image.fromarray(arr).save(tmp, format=fmt), durable=False)
