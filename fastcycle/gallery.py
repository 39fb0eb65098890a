"""An HTML results page, like the reference's results/<name>/test_latest/index.html.

    write_gallery(out, [("horse1", ["a/horse1.png", "fake/horse1.png"])], ["input", "output"], "horse2zebra")

writes `<out>/index.html`: a table with one row per image and one column per label, each cell a
thumbnail linking to the full-size image. Images larger than `thumb` pixels on a side get a downscaled
JPEG under `<out>/thumbs/<column>/`; smaller ones are shown as they are. Links are relative to the
page, so the folder can be moved or served as it is. `GalleryWriter` collects the rows while results
are still being written (its `add` may be called from worker threads) and writes the page on close().
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

from fastcycle.atomic import write_atomic

# (href of the full image, src of the thumbnail) of one cell, or None for an empty cell
Cell = tuple[str, str] | None


def _href(path: Path, out_dir: Path) -> str:
    """`path` as a URL relative to a page in `out_dir`."""
    try:
        rel = os.path.relpath(path.resolve(), out_dir.resolve())
    except ValueError:  # another drive (Windows): no relative path exists
        return path.resolve().as_uri()
    return quote(Path(rel).as_posix())


def _thumbnail(src: Path, out_dir: Path, column: str, size: int) -> Path:
    """A copy of `src` at most `size` pixels on a side, or `src` itself when it is no larger."""
    from PIL import Image

    try:
        with Image.open(src) as im:
            if max(im.size) <= size:
                return src
            digest = hashlib.sha1(str(src.resolve()).encode()).hexdigest()[:10]
            safe_column = re.sub(r"[^\w.-]+", "_", column) or "_"
            dst = out_dir / "thumbs" / safe_column / f"{src.stem}-{digest}.jpg"
            if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
                return dst  # made by an earlier page for the same, unchanged image
            if im.mode in ("I", "F") or im.mode.startswith("I;16"):
                # 16- and 32-bit gray: PIL's convert would clip every value over 255 to white.
                from fastcycle.data.folders import convert_channels, read_image, to_8bit

                small = Image.fromarray(to_8bit(convert_channels(read_image(src)[0], 3)[0])[0])
            else:
                im.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, much faster
                small = im.convert("RGB")
            small.thumbnail((size, size), Image.Resampling.LANCZOS)
    except OSError:  # unreadable or not an image: link it as it is, the browser may still show it
        return src
    write_atomic(dst, lambda tmp: small.save(tmp, format="JPEG", quality=90), durable=False)
    return dst


def _cell(src: str | Path | None, out_dir: Path, column: str, thumb: int) -> Cell:
    if src is None:
        return None
    src = Path(src)
    return _href(src, out_dir), _href(_thumbnail(src, out_dir, column, thumb), out_dir)


def _page(title: str, columns: Sequence[str], rows: Iterable[tuple[str, Sequence[Cell]]], thumb: int) -> str:
    esc = html.escape
    rows = list(rows)
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for name, cells in rows:
        tds = []
        for column, cell in zip(columns, cells, strict=True):
            if cell is None:
                tds.append("<td></td>")
                continue
            href, src = cell
            alt = esc(f"{name} {column}")
            tds.append(
                f'<td><a href="{esc(href)}"><img src="{esc(src)}" alt="{alt}" loading="lazy"></a></td>'
            )
        body.append(f"<tr><th>{esc(name)}</th>{''.join(tds)}</tr>")
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{esc(title)}</title>",
            "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
            "th,td{padding:4px;border:1px solid #ddd;vertical-align:middle}tbody th{text-align:left}"
            f"img{{max-width:{thumb}px;max-height:{thumb}px;display:block}}</style>",
            "</head><body>",
            f"<h1>{esc(title)}</h1>",
            f"<p>{len(rows)} image{'s' if len(rows) != 1 else ''}; click one for full size.</p>",
            f"<table><thead><tr><th>name</th>{head}</tr></thead><tbody>",
            *body,
            "</tbody></table></body></html>",
            "",
        ]
    )


def write_gallery(
    out_dir: str | Path,
    rows: Sequence[tuple[str, Sequence[str | Path | None]]],
    columns: Sequence[str],
    title: str,
    thumb: int = 256,
) -> Path:
    """Write `<out_dir>/index.html` for `rows` of (name, [image path per column, or None]); its path."""
    out_dir = Path(out_dir)
    columns = list(columns)
    cells = []
    for name, paths in rows:
        if len(paths) != len(columns):
            raise ValueError(f"row {name!r} has {len(paths)} images for {len(columns)} columns")
        cells.append((name, [_cell(p, out_dir, c, thumb) for c, p in zip(columns, paths, strict=True)]))
    page = out_dir / "index.html"
    text = _page(title, columns, cells, thumb)
    write_atomic(page, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return page


class GalleryWriter:
    """Collects rows while results are written and writes the page on close() (or at the end of a
    `with` block). add() is thread-safe and makes the thumbnails in the caller's thread; adding a
    name again fills in or replaces its cells. Rows are listed by name; columns in the order given,
    or, with columns=None, in the order they first appear."""

    def __init__(
        self, out_dir: str | Path, title: str, columns: Sequence[str] | None = None, thumb: int = 256
    ) -> None:
        self.out_dir, self.title, self.thumb = Path(out_dir), title, thumb
        self._fixed = columns is not None
        self._columns: list[str] = list(columns or [])
        self._rows: dict[str, dict[str, Cell]] = {}
        self._lock = threading.Lock()

    def add(self, name: str, images: Mapping[str, str | Path]) -> None:
        if self._fixed and (unknown := set(images) - set(self._columns)):
            raise ValueError(f"unknown column(s) {sorted(unknown)}; the gallery has {self._columns}")
        cells = {column: _cell(path, self.out_dir, column, self.thumb) for column, path in images.items()}
        with self._lock:
            for column in images:
                if column not in self._columns:
                    self._columns.append(column)
            self._rows.setdefault(name, {}).update(cells)

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def close(self) -> Path:
        """Write `<out_dir>/index.html` with every row added so far (may be called again); its path."""
        with self._lock:
            columns = list(self._columns)
            rows = [(n, [self._rows[n].get(c) for c in columns]) for n in sorted(self._rows)]
        page = self.out_dir / "index.html"
        text = _page(self.title, columns, rows, self.thumb)
        write_atomic(page, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return page

    def __enter__(self) -> GalleryWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # a partial page is still worth having after an error
