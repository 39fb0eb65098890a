"""The output side: translated frames to H.264 (libx264) at the input's rate, timestamps, pixel format,
colour tags and rotation, the input's audio packets copied beside them, and each frame as a PNG on request.
Opened at the first translated frame, whose size the whole video takes."""

from __future__ import annotations

import contextlib
import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np

from fastcycle.data.folders import write_image
from fastcycle.errors import UserError
from fastcycle.video.probe import VideoInfo, output_pix_fmt

# crf 18, x264's "visually lossless" level: a translation's fine texture (a zebra's stripes) is what the
# default crf 23 blurs first. Other settings stay libx264's defaults (preset medium, its own threads).
X264_OPTIONS = {"crf": "18"}


class VideoEncoder:
    """One output file. Not thread-safe: the pipeline's encode thread owns it."""

    def __init__(
        self, path: Path, suffix: str, muxer: str, src: Path, info: VideoInfo, frames_dir: Path | None
    ):
        """path: the temporary file; suffix: the output's (for messages); muxer: FFmpeg's format name."""
        self.path, self.suffix, self.muxer, self.src, self.info = path, suffix, muxer, src, info
        self.frames_dir = frames_dir
        self.container: av.container.OutputContainer | None = None
        self.video: av.video.stream.VideoStream | None = None
        self.audio: dict[int, av.audio.stream.AudioStream] = {}  # input stream index -> output stream
        # audio demuxed before the first frame opened the file: (input stream index, packet)
        self.waiting: list[tuple[int, av.Packet]] = []
        self.notes: list[str] = []
        self.size: tuple[int, int] | None = None
        self.frames = 0
        # PNG encoding (~10 ms a 256x256 frame) runs beside libx264 instead of after it; at most
        # `window` frames wait, so memory stays flat.
        self.png_pool = ThreadPoolExecutor(2) if frames_dir is not None else None
        self.png_writes: deque[Future] = deque()
        self.window = 16

    def _open(self, size: tuple[int, int]) -> None:
        """Create the file, its H.264 stream and the audio copies, and write the header. An audio codec
        the container refuses, by its codec list or when the header is written (Opus or FLAC in
        .mov), is dropped with one line on stderr."""
        with av.open(str(self.src)) as inp:
            audio = {i: inp.streams[i] for i in self.info.audio}
            codecs = {i: s.codec_context.codec.canonical_name for i, s in audio.items()}
            try:
                keep = self._start(size, audio)
            except av.error.FFmpegError:
                if not audio:
                    raise
                self._abandon_container()
                keep = self._start(size, {})
        for i, codec in codecs.items():
            if i in keep:
                self.notes.append(f"audio {codec} copied")
            else:
                line = (
                    f"video: {self.suffix} cannot hold the {codec} audio of {self.src.name}; dropped it "
                    "(name the output .mkv to keep it)"
                )
                print(line, file=sys.stderr)
                self.notes.append(line)
        for index, packet in self.waiting:
            self._mux_audio(index, packet)
        self.waiting.clear()

    def _start(self, size: tuple[int, int], audio: dict[int, av.audio.stream.AudioStream]) -> list[int]:
        """Open the container with the video stream and those of `audio` it lists as holdable; returns
        the input indices of the audio streams kept."""
        info = self.info
        self.container = av.open(str(self.path), "w", format=self.muxer)
        v = self.container.add_stream("libx264", rate=info.rate, options=X264_OPTIONS)
        v.width, v.height = size
        v.pix_fmt = output_pix_fmt(info, size)
        # The input's time base for the stream and the encoder: every frame keeps its own pts, so a
        # variable frame rate survives (the muxer may rescale to its own clock, e.g. Matroska's 1 ms).
        v.time_base = info.time_base
        v.codec_context.time_base = info.time_base
        for name in ("colorspace", "color_range", "color_primaries", "color_trc"):
            setattr(v.codec_context, name, getattr(info, name))
        if info.display_matrix is not None:
            v.set_display_matrix(info.display_matrix)  # rotation and flips, as the input has them
        holdable = self.container.supported_codecs
        self.audio = {
            i: self.container.add_stream_from_template(s)
            for i, s in audio.items()
            if s.codec_context.codec.canonical_name in holdable
        }
        self.container.start_encoding()  # the header: where a muxer refuses a stream
        self.video, self.size = v, size
        self.notes.append(f"libx264 {v.pix_fmt} {size[0]}x{size[1]} at {float(info.rate):.3g} fps")
        return list(self.audio)

    def write(self, frames: list[np.ndarray], pts: list[int]) -> None:
        """Encode translated (H, W, 3) uint8 RGB frames with the input frames' pts."""
        for image, t in zip(frames, pts, strict=True):
            size = (image.shape[1], image.shape[0])
            if self.container is None:
                self._open(size)
            elif size != self.size:
                raise UserError(
                    f"{self.src.name}: translated frame {self.frames + 1} is {size[0]}x{size[1]}, the "
                    f"first was {self.size[0]}x{self.size[1]}; a video keeps one size: resize every frame "
                    "alike"
                )
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = t, self.info.time_base
            # RGB -> YUV with the input's matrix and range, so a BT.709 video is not shifted to BT.601.
            frame = frame.reformat(
                format=self.video.pix_fmt,
                dst_colorspace=self.info.colorspace or None,
                dst_color_range=self.info.color_range or None,
            )
            self.container.mux(self.video.encode(frame))
            self.frames += 1
            if self.frames_dir is not None:
                self._png(image, self.frames_dir / f"{self.frames:06d}.png")

    def _png(self, image: np.ndarray, path: Path) -> None:
        self.png_writes.append(self.png_pool.submit(write_image, image, path))
        while len(self.png_writes) > self.window:
            self.png_writes.popleft().result()

    def audio_packet(self, index: int, packet: av.Packet) -> None:
        """A packet of input audio stream `index`, copied as it is."""
        if self.container is None:
            self.waiting.append((index, packet))
        else:
            self._mux_audio(index, packet)

    def _mux_audio(self, index: int, packet: av.Packet) -> None:
        out = self.audio.get(index)
        if out is not None:
            packet.stream = out  # the muxer rescales from the packet's own time base to the stream's
            self.container.mux(packet)

    def finish(self) -> None:
        """Flush libx264's delayed frames and write the container's index."""
        if self.container is None:
            raise UserError(f"{self.src}: no frame was decoded; re-encode it")
        self.container.mux(self.video.encode())
        self.container.close()
        self.container = None
        while self.png_writes:
            self.png_writes.popleft().result()

    def _abandon_container(self) -> None:
        if self.container is not None:
            with contextlib.suppress(av.error.FFmpegError):  # the file is removed or rewritten anyway
                self.container.close()
            self.container = None

    def abandon(self) -> None:
        """Release the file after a failure (the caller removes it)."""
        self._abandon_container()
        if self.png_pool is not None:
            for fut in self.png_writes:
                fut.cancel()
            self.png_pool.shutdown(wait=True)

    def close(self) -> None:
        if self.png_pool is not None:
            self.png_pool.shutdown(wait=True)
