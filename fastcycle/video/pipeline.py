"""translate_video: decode thread -> the caller's translate (on the calling thread, in batches) -> encode
thread, joined by bounded queues.

Decoding runs ahead of the model and encoding behind it, so while the model works on batch k, FFmpeg
decodes batch k+1 and encodes batch k-1: the time of a video is about the slowest stage's, not the sum
of the three, and at most a few batches of frames are held whatever the video's length. The output is
written beside `dst` and renamed over it only once complete (fastcycle.atomic.write_atomic).
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from tqdm import tqdm

from fastcycle.atomic import write_atomic, write_folder_atomic
from fastcycle.errors import UserError
from fastcycle.video.encode import VideoEncoder
from fastcycle.video.probe import VideoInfo, check_output, probe
from fastcycle.video.sources import audio_packets, choose_decoder, dali_frames, pyav_frames

Translate = Callable[[list[np.ndarray]], list[np.ndarray]]
_END = object()  # the last item of a queue


@dataclass
class VideoReport:
    frames: int  # frames written
    seconds: float  # wall time of the whole video, open to rename
    fps: float  # frames / seconds achieved
    audio: bool  # an audio stream was copied
    size: tuple[int, int]  # (width, height) of the output
    note: str  # one line: decoder, encoder, pixel format, audio


def translate_video(
    src: Path,
    dst: Path,
    translate: Translate,
    *,
    batch_size: int = 8,
    frames_dir: Path | None = None,
    loader: str = "pyav",
    device: torch.device | None = None,
    progress: bool = True,
) -> VideoReport:
    """Translate every frame of `src` with `translate` and write `dst` (H.264 in .mp4/.mkv/.mov/.avi).

    translate: same-size (H, W, 3) uint8 RGB frames -> translated frames of one size, as many.
    frames_dir: also write each translated frame as <frames_dir>/<src stem>/000001.png, ...
    loader: "pyav" (FFmpeg) or "dali" (NVDEC on a CUDA `device`; falls back to PyAV, with a line on
    stderr, for what DALI cannot decode). UserError for a bad input or output name; on any failure
    `dst` is left as it was."""
    src, dst = Path(src), Path(dst)
    if batch_size <= 0:
        raise UserError(f"--batch-size must be positive, got {batch_size}")
    muxer = check_output(src, dst)
    info = probe(src)
    decoder, line = choose_decoder(loader, info, src, device)
    lines = [line] if line is not None else []
    if not info.ordered:
        lines.append(
            f"video: {src.name}: its timestamps are out of order (an AVI with B-frames?); "
            f"frames are written at its nominal {float(info.rate):.3g} fps"
        )
    for line in lines:
        print(line, file=sys.stderr)
    t0 = time.perf_counter()
    done: dict[str, VideoEncoder] = {}

    def run(tmp: Path, png_dir: Path | None) -> None:
        done["encoder"] = _run(
            src, tmp, dst.suffix, muxer, info, translate, batch_size, png_dir, decoder, device, progress
        )

    if frames_dir is None:
        write_atomic(dst, lambda tmp: run(tmp, None))
    else:
        # The PNG folder, too, appears whole or not at all (and a frames_dir made for it goes with it).
        frames_dir = Path(frames_dir)
        made = not frames_dir.exists()
        try:
            write_atomic(dst, lambda tmp: write_folder_atomic(frames_dir / src.stem, lambda d: run(tmp, d)))
        except BaseException:
            if made:
                with contextlib.suppress(OSError):
                    frames_dir.rmdir()
            raise
    enc = done["encoder"]
    seconds = time.perf_counter() - t0
    notes = [f"{src.name}: {decoder} decode", *enc.notes, *lines]
    return VideoReport(enc.frames, seconds, enc.frames / seconds, bool(enc.audio), enc.size, "; ".join(notes))


class _Stages:
    """The stages of one video and what joins them: frames (and audio packets) decoded ahead in one
    bounded queue, translated batches behind in another, and a stop flag that a failing stage sets so
    that the others stop waiting on it."""

    def __init__(self, src, info, decoder, batch_size, device, encoder: VideoEncoder):
        self.src, self.info, self.decoder, self.device = src, info, decoder, device
        self.batch_size, self.encoder = batch_size, encoder
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.decoded: queue.Queue = queue.Queue(maxsize=2 * batch_size)  # frames (and audio packets) ahead
        self.batches: queue.Queue = queue.Queue(maxsize=2)  # translated batches behind

    def guarded(self, work: Callable[[], None], out: queue.Queue | None) -> None:
        """A thread's body: `work`, then the end marker into `out`; an error is kept and stops the rest."""
        try:
            work()
            if out is not None:
                _put(out, _END, self.stop)
        except BaseException as e:
            self.errors.append(e)
            self.stop.set()

    def decode(self) -> None:
        for item in _interleaved(self.src, self.info, self.decoder, self.batch_size, self.device):
            if not _put(self.decoded, item, self.stop):
                return

    def encode(self) -> None:
        while (item := _get(self.batches, self.stop)) is not _END and item is not None:
            frames, pts, audio = item
            self.encoder.write(frames, pts)
            for index, packet in audio:
                self.encoder.audio_packet(index, packet)
        if item is _END:
            self.encoder.finish()

    def model(self, translate: Translate, bar: tqdm) -> None:
        """The calling thread's stage: same-size frames gathered into batches (one generator call each),
        translated, and queued for the encoder with the audio packets that came between them."""
        frames: list[np.ndarray] = []
        pts: list[int] = []
        audio: list[tuple[int, av.Packet]] = []  # (input stream index, packet)

        def flush() -> bool:
            """Translate the frames gathered so far and queue them; False once stopped."""
            if not frames and not audio:
                return True
            out = translate(list(frames)) if frames else []
            if len(out) != len(frames):
                raise ValueError(f"translate returned {len(out)} frames for {len(frames)}")
            sent = _put(self.batches, (out, list(pts), list(audio)), self.stop)
            bar.update(len(frames))
            frames.clear(), pts.clear(), audio.clear()
            return sent

        while (item := _get(self.decoded, self.stop)) is not None:  # None: a stage failed
            if item is _END:
                if flush():
                    _put(self.batches, _END, self.stop)
                return
            image, value = item
            if image is None:
                audio.append(value)
                continue
            full = len(frames) == self.batch_size or (frames and image.shape != frames[0].shape)
            if full and not flush():
                return
            frames.append(image)
            pts.append(value)


def _run(
    src: Path,
    tmp: Path,
    suffix: str,
    muxer: str,
    info: VideoInfo,
    translate: Translate,
    batch_size: int,
    png_dir: Path | None,
    decoder: str,
    device: torch.device | None,
    progress: bool,
) -> VideoEncoder:
    encoder = VideoEncoder(tmp, suffix, muxer, src, info, png_dir)
    stages = _Stages(src, info, decoder, batch_size, device, encoder)
    threads = [
        threading.Thread(target=stages.guarded, args=(stages.decode, stages.decoded), name="video-decode"),
        threading.Thread(target=stages.guarded, args=(stages.encode, None), name="video-encode"),
    ]
    for t in threads:
        t.daemon = True
    bar = tqdm(
        total=info.frames or None,
        unit="frame",
        desc=src.name,
        file=sys.stderr,
        dynamic_ncols=True,
        disable=None if progress else True,
    )
    for t in threads:
        t.start()
    finished = False
    try:
        stages.model(translate, bar)
        threads[1].join()
        finished = not stages.errors
    finally:
        stages.stop.set()  # a stage still running (after a failure here) stops at its next queue operation
        for t in threads:
            t.join()
        bar.close()
        if finished:
            encoder.close()
        else:
            encoder.abandon()
    if stages.errors:
        raise stages.errors[0]
    return encoder


def _interleaved(
    src: Path, info: VideoInfo, decoder: str, batch_size: int, device: torch.device | None
) -> Iterator[tuple[np.ndarray | None, object]]:
    """(frame, pts) in display order, with (None, (stream index, packet)) for each audio packet placed
    before the first
    frame that is not earlier than it: the file's order, so neither stream waits long for the other."""
    if decoder == "pyav":
        frames = pyav_frames(src, info)
    else:
        frames = dali_frames(src, info, batch_size, device, gpu=decoder == "dali-gpu")
    audio = audio_packets(src, info.audio)
    packet = next(audio, None)
    for frame, pts in frames:
        t = pts * info.time_base
        while packet is not None and _seconds(packet[1]) <= t:
            yield None, packet
            packet = next(audio, None)
        yield frame, pts
    while packet is not None:
        yield None, packet
        packet = next(audio, None)


def _seconds(packet: av.Packet) -> float:
    ts = packet.pts if packet.pts is not None else packet.dts
    return ts * packet.time_base


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """q.put that gives up (False) once `stop` is set, so a failed stage never leaves another blocked."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event) -> object | None:
    """q.get that gives up (None) once `stop` is set and the queue is empty."""
    while True:
        try:
            return q.get(timeout=0.05)
        except queue.Empty:
            if stop.is_set():
                return None
