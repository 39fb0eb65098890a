"""What a video file holds, read once before anything is written: its video stream (codec, pixel format,
rate, time base, size, rotation), its audio streams, and the one-line errors for files that cannot be
translated and output names that cannot be written."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from fastcycle.errors import UserError

# Containers FFmpeg demuxes that people keep videos in; a folder's videos are the files with these suffixes.
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")

# Output suffix -> FFmpeg muxer. Only containers that hold H.264 (WebM takes VP8/VP9/AV1 only).
OUTPUT_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}

# The pixel formats libx264 encodes that are kept as they come; any other input is written as yuv420p.
RGB_COLORSPACE = 0  # AVCOL_SPC_RGB: the frames are not YUV at all

KEPT_PIX_FMTS = ("yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le")


def is_video(path: Path) -> bool:
    """A file whose suffix names a video container (by name only: the file is not opened)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass
class VideoInfo:
    codec: str  # FFmpeg decoder name: "h264", "vp9", ...
    pix_fmt: str  # the decoder's pixel format: "yuv420p", "yuv422p10le", ...
    size: tuple[int, int]  # (width, height) as coded, before any rotation
    rate: Fraction  # average frame rate
    time_base: Fraction  # of the video stream: every pts below is in it
    frames: int  # frames the container declares; 0 when it does not say (Matroska, WebM)
    variable_rate: bool  # frame durations differ (read from the first frames' timestamps)
    ordered: bool  # the decoder's pts rise frame after frame (not so in an AVI with B-frames)
    display_matrix: tuple[int, ...] | None  # 9 int32s, FFmpeg's DISPLAYMATRIX layout; None: no rotation
    rotation: int  # degrees counter-clockwise, from display_matrix (0 without one)
    # FFmpeg's colour enums of the first frame (AVColorSpace, AVColorRange, ...): RGB <-> YUV both ways
    # with the input's matrix and range, and the output tagged alike. 2 / 0: unspecified (BT.601, limited).
    colorspace: int = 2
    color_range: int = 0
    color_primaries: int = 2
    color_trc: int = 2
    audio: list[int] = field(default_factory=list)  # indices of the audio streams


def probe(src: Path) -> VideoInfo:
    """Open `src`, decode its first frame and read what the output must keep. UserError for a missing,
    damaged or truncated file, one without a video stream, or a codec this FFmpeg cannot decode."""
    if not src.is_file():
        raise UserError(f"video {src} does not exist")
    try:
        container = av.open(str(src))
    except av.error.FFmpegError as e:
        why = ffmpeg_reason(e)
        raise UserError(f"{src} is damaged or cut short ({why}); re-download or re-encode it") from e
    with container:
        if not container.streams.video:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "nothing"
            raise UserError(f"{src} has no video stream (it holds {kinds}); give a video file")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise UserError(
                f"{src}: its video codec is unknown to this FFmpeg (PyAV {av.__version__}); "
                "re-encode it to H.264, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4"
            )
        first, pts, frames_pts = _first_frame_and_pts(container, stream, src)
        side = first.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
        matrix = tuple(int(v) for v in np.frombuffer(bytes(side), np.int32)) if side is not None else None
        steps = np.diff(np.sort(np.asarray(pts, np.int64)))
        return VideoInfo(
            codec=stream.codec_context.name,
            pix_fmt=first.format.name,
            size=(first.width, first.height),
            rate=stream.average_rate or stream.guessed_rate or Fraction(25),
            time_base=stream.time_base,
            frames=stream.frames,
            # One tick of slack: a millisecond clock (Matroska) rounds 24 fps to steps of 41 and 42.
            variable_rate=len(steps) > 1 and int(steps.max() - steps.min()) > 1,
            ordered=len(pts) == len(frames_pts) and all(a < b for a, b in itertools.pairwise(pts)),
            display_matrix=matrix,
            rotation=first.rotation if matrix is not None else 0,
            # An RGB input (PNG, libx264rgb) is written as YUV: BT.601, limited range, as untagged video.
            colorspace=first.colorspace if first.colorspace != RGB_COLORSPACE else 2,
            color_range=first.color_range if first.colorspace != RGB_COLORSPACE else 0,
            color_primaries=first.color_primaries,
            color_trc=first.color_trc,
            audio=[s.index for s in container.streams.audio if s.codec_context is not None],
        )


def _first_frame_and_pts(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, src: Path
) -> tuple[av.VideoFrame, list[int], list[int | None]]:
    """The first decoded frame, the known pts of the first 16 frames in decoding order, and all their
    pts (None where unknown): enough to tell a variable frame rate from a constant one, and usable
    timestamps from an AVI's guesses."""
    frames: list[av.VideoFrame] = []
    try:
        for frame in container.decode(stream):
            frames.append(frame)
            if len(frames) >= 16:
                break
    except av.error.FFmpegError as e:
        why = ffmpeg_reason(e)
        raise UserError(f"{src} is damaged or cut short ({why}); re-download or re-encode it") from e
    if not frames:
        raise UserError(f"{src}: its video stream has no decodable frame; re-encode it to H.264")
    return frames[0], [f.pts for f in frames if f.pts is not None], [f.pts for f in frames]


def ffmpeg_reason(e: av.error.FFmpegError) -> str:
    """FFmpeg's words without the file name PyAV appends."""
    return (e.strerror or str(e)).rstrip(".")


def check_output(src: Path, dst: Path) -> str:
    """The FFmpeg muxer for `dst`; UserError for a suffix that is not an H.264 container or `dst` being
    `src` (the input would be replaced while it is read)."""
    suffix = dst.suffix.lower()
    if suffix == ".webm":
        raise UserError(f"{dst}: WebM holds VP8/VP9/AV1, not H.264; name the output .mp4, .mkv or .mov")
    if suffix not in OUTPUT_FORMATS:
        raise UserError(
            f"{dst}: '{dst.suffix or '(no suffix)'}' is not a video container fastcycle writes; "
            f"name the output {', '.join(OUTPUT_FORMATS)}"
        )
    if dst.exists() and os.path.samefile(src, dst):
        raise UserError(f"{dst} is the input video; choose another output name")
    return OUTPUT_FORMATS[suffix]


def output_pix_fmt(info: VideoInfo, size: tuple[int, int]) -> str:
    """The input's pixel format where libx264 encodes it, else yuv420p. Chroma subsampled in a direction
    needs an even size in it, so an odd-sized translation (a user's resize) is written 4:4:4."""
    fmt = info.pix_fmt if info.pix_fmt in KEPT_PIX_FMTS else "yuv420p"
    w, h = size
    if (w % 2 and "444" not in fmt) or (h % 2 and "420" in fmt):
        fmt = fmt.replace("420", "444").replace("422", "444")
    return fmt
