"""Check every file of a domain folder once, before training: what is usable, what needs converting.

Real folders hold truncated downloads, zero-byte files, `.DS_Store`, 16-bit and palette PNGs, CMYK
JPEGs and the odd 20,000-pixel panorama. Finding them here, once, means no loader meets a bad file in
the middle of an epoch, every loader trains on the same list, and the run log names each skipped file.

The check decodes each file (JPEGs at 1/8 scale through libjpeg's DCT scaling, which still reads the
whole entropy-coded stream, so truncation is caught at a fraction of a full decode) on a thread pool:
PIL releases the GIL while decoding.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from fastcycle.data.folders import (
    GRAY_TO_RGB,
    IMG_EXTENSIONS,
    RGB_TO_GRAY,
    TO_8_BITS,
    check_pixels,
    png_header,
    read_image,
)
from fastcycle.errors import UserError


@dataclass(frozen=True)
class ImageFile:
    path: Path
    size: tuple[int, int]  # (width, height) as stored, no EXIF rotation (the reference ignores EXIF)
    # Empty when a GPU decoder reads the file as-is (8-bit RGB or grayscale JPEG/PNG); else what PIL
    # converts ("CMYK", "16-bit", "palette", "RGBA", "TIFF" ...), which the DALI loader pre-converts.
    convert: str = ""
    channels: int = 3  # as read_image returns it: 1 (grayscale) or 3 (RGB)
    # What decoding for training does to it before the channel conversion: read_image's notes
    # ("RGBA to RGB (alpha dropped)", "palette to RGB", ...) and "16 to 8 bits".
    notes: tuple[str, ...] = ()

    def conversions(self, nc: int) -> tuple[str, ...]:
        """Everything decoding it into an 8-bit, `nc`-channel training image does, for the run log."""
        channel = {(1, 3): GRAY_TO_RGB, (3, 1): RGB_TO_GRAY}.get((self.channels, nc))
        return (*self.notes, channel) if channel else self.notes


@dataclass
class DomainScan:
    name: str  # "trainA"
    folder: Path
    images: list[ImageFile] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, why)

    @property
    def converted(self) -> list[ImageFile]:
        return [f for f in self.images if f.convert]

    def conversion_counts(self, nc: int) -> dict[str, int]:
        """Each conversion decoding to `nc` channels applies -> how many of the images it applies to."""
        counts: dict[str, int] = {}
        for f in self.images:
            for note in f.conversions(nc):
                counts[note] = counts.get(note, 0) + 1
        return counts

    def summary(self) -> str:
        """The folder in one line; what decoding converts is counted per kind by conversion_counts."""
        line = f"{self.name}: {len(self.images):,} images"
        if self.skipped:
            line += f", {len(self.skipped)} skipped (listed in the run log)"
        return line


def inspect(path: Path) -> ImageFile | str:
    """An ImageFile, or the reason the file cannot be used."""
    if path.suffix.lower() not in IMG_EXTENSIONS:
        return "not an image file (by extension)"
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as img:
            check_pixels(img, path)
            fmt, mode, size = img.format, img.mode, img.size
            has_alpha = "transparency" in img.info
            if fmt == "JPEG":  # JPEGs are 8-bit gray, RGB or CMYK: the mode says what decoding does
                img.draft(mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
                img.load()
                notes, channels = (("CMYK to RGB",) if mode == "CMYK" else ()), 1 if mode == "L" else 3
        if fmt != "JPEG":  # the decode training will do, so what it converts is known
            arr, read_notes = read_image(path)
            channels = arr.shape[2]
            notes = (*read_notes, TO_8_BITS) if arr.dtype != "uint8" else tuple(read_notes)
    except UnidentifiedImageError:
        return "not an image PIL can read"
    except Image.DecompressionBombError as e:  # PIL's own check (over twice the limit) or check_pixels
        return f"too large: {e}"
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data; PIL's message says which
        return f"unreadable: {e}"
    if fmt == "JPEG":
        convert = "" if mode in ("RGB", "L") else mode
    elif fmt == "PNG":
        depth, colour = png_header(path)
        convert = {3: "palette", 4: "grayscale+alpha", 6: "RGBA"}.get(colour, "")
        convert = convert or ("16-bit" if depth != 8 else "") or ("transparency" if has_alpha else "")
    else:
        convert = fmt or "unknown format"
    return ImageFile(path, size, convert, channels, notes)


def scan_domain(data_root: str | os.PathLike, domain: str, max_size: int = 0) -> DomainScan:
    """Check `<data_root>/<domain>`; a UserError if it is missing or holds no usable image."""
    root, folder = Path(data_root), Path(data_root) / domain
    if not root.is_dir():
        raise UserError(f"dataset folder {root} does not exist; pass --data DIR with trainA/ and trainB/")
    if not folder.is_dir():
        raise UserError(f"{folder} is missing; a dataset needs {domain}/ beside the other domain's folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if max_size:
        # --max-dataset-size counts images, as the reference does, not stray files.
        images = [p for p in files if p.suffix.lower() in IMG_EXTENSIONS][:max_size]
        files = [p for p in files if p.suffix.lower() not in IMG_EXTENSIONS] + images
    if not any(p.suffix.lower() in IMG_EXTENSIONS for p in files):
        raise UserError(f"{folder} holds no images ({', '.join(IMG_EXTENSIONS)}); add images or fix --data")
    scan = DomainScan(domain, folder)
    with ThreadPoolExecutor(min(32, os.cpu_count() or 1)) as pool:
        for path, result in zip(files, pool.map(inspect, files), strict=True):
            if isinstance(result, str):
                scan.skipped.append((path, result))
            else:
                scan.images.append(result)
    scan.images.sort(key=lambda f: f.path)
    if not scan.images:
        raise UserError(
            f"{folder}: none of its {len(files)} files is a readable image (e.g. {scan.skipped[0][0].name}: "
            f"{scan.skipped[0][1]}); fix or replace the files"
        )
    return scan
