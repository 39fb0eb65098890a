"""Where decoded frames come from: PyAV (FFmpeg's software decoders, every codec FFmpeg knows) or NVIDIA
DALI (NVDEC on a CUDA GPU; on a CPU its FFmpeg decoders for VP8, VP9 and MJPEG only), and the audio
packets that are copied beside them. Each source yields ((H, W, 3) uint8 RGB, pts) in display order,
pts in the video stream's time base."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import torch

from fastcycle.errors import UserError
from fastcycle.video.probe import VideoInfo, ffmpeg_reason

# What DALI's decoders take (fn.decoders.video's documentation, DALI 2.4): the mixed (NVDEC) backend
# decodes these codecs, the CPU backend only the last three (DALI's FFmpeg leaves out the patented ones).
NVDEC_CODECS = ("h264", "hevc", "av1", "mpeg4", "vp8", "vp9", "mjpeg")
DALI_CPU_CODECS = ("vp8", "vp9", "mjpeg")
# NVDEC decodes H.264 in 8-bit 4:2:0 only; the other chroma layouts and depths are left to FFmpeg for
# every codec, so that one rule holds whatever GPU generation runs it.
NVDEC_PIX_FMTS = ("yuv420p", "yuvj420p", "nv12")


def choose_decoder(
    loader: str, info: VideoInfo, src: Path, device: torch.device | None
) -> tuple[str, str | None]:
    """("pyav" | "dali-cpu" | "dali-gpu", a log line when --loader dali falls back to PyAV, else None)."""
    if loader == "pyav":
        return "pyav", None
    if loader != "dali":
        raise UserError(f"unknown video loader {loader!r}; use pyav or dali")
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as e:
        raise UserError(
            "--loader dali needs NVIDIA DALI: pip install 'fastcycle[dali]' (nvidia-dali-cuda130), "
            "or use --loader pyav"
        ) from e
    gpu = torch.cuda.is_available() and (device is None or device.type == "cuda")
    why = None
    if info.variable_rate:
        # DALI's file video reader refuses variable-rate streams (its skip_vfr_check); the frames
        # would still pair with PyAV's timestamps here, but that path is untested on a GPU.
        why = "it has a variable frame rate"
    elif gpu and info.codec not in NVDEC_CODECS:
        why = f"NVDEC does not decode {info.codec}"
    elif gpu and info.pix_fmt not in NVDEC_PIX_FMTS:
        why = f"NVDEC decodes 8-bit 4:2:0 only and this video is {info.pix_fmt}"
    elif not gpu and info.codec not in DALI_CPU_CODECS:
        why = f"without CUDA DALI decodes only {', '.join(DALI_CPU_CODECS)}, not {info.codec}"
    if why is not None:
        return "pyav", f"video: {src.name}: DALI cannot decode it ({why}); decoding with PyAV"
    return ("dali-gpu" if gpu else "dali-cpu"), None


def pyav_frames(src: Path, info: VideoInfo) -> Iterator[tuple[np.ndarray, int]]:
    """Every frame, decoded by FFmpeg with its own threads; UserError when the file ends early or a
    packet cannot be decoded. Frames of a video whose timestamps are out of order (info.ordered) are
    stamped at the nominal rate instead."""
    n = 0
    with av.open(str(src)) as container:
        stream = container.streams.video[0]
        # Frame and slice threads inside FFmpeg: decoding one stream is otherwise one core's work.
        stream.thread_type = "AUTO"
        last = -1
        try:
            for frame in container.decode(stream):
                pts = frame.pts if info.ordered and frame.pts is not None else _nominal_pts(n, info)
                pts = max(pts, last + 1)  # H.264 needs rising pts: a damaged stamp cannot stop the video
                last = pts
                # The frame's own range: PyAV would read an unstated one as limited (16-235).
                rgb = frame.to_ndarray(format="rgb24", src_color_range=frame.color_range or None)
                yield rgb, pts  # (H, W, 3) uint8
                n += 1
        except av.error.FFmpegError as e:
            raise UserError(
                f"{src} is damaged after frame {n} ({ffmpeg_reason(e)}); re-download or re-encode it"
            ) from e
    if info.frames and n < info.frames:
        raise UserError(
            f"{src} is cut short: {n} of its {info.frames} frames could be read; re-download or re-encode it"
        )


def _nominal_pts(n: int, info: VideoInfo) -> int:
    """Frame n's time at the nominal rate, in the stream's time base (for containers without pts)."""
    return round(n / info.rate / info.time_base)


def video_pts(src: Path) -> list[int]:
    """Every video packet's pts, sorted: the frames' timestamps in display order, read without decoding
    (DALI's decoders hand out frames only). One int per frame: memory stays small on long videos."""
    with av.open(str(src)) as container:
        stream = container.streams.video[0]
        return sorted(p.pts for p in container.demux(stream) if p.pts is not None)


def dali_frames(
    src: Path, info: VideoInfo, batch_size: int, device: torch.device | None, gpu: bool
) -> Iterator[tuple[np.ndarray, int]]:
    """Every frame, decoded by DALI's fn.experimental.inputs.video: the encoded file is fed once and each
    pipeline run decodes the next `batch_size` frames, so memory holds one batch, not the whole video.
    gpu: the mixed backend (NVDEC) on `device`; else the CPU backend (device_id=None)."""
    import nvidia.dali.fn as fn
    from nvidia.dali import pipeline_def

    pts = video_pts(src)
    device_id = None
    if gpu:
        device_id = device.index if device is not None and device.index is not None else 0

    @pipeline_def(batch_size=1, num_threads=2, device_id=device_id, prefetch_queue_depth=1)
    def decode():
        return fn.experimental.inputs.video(
            name="video", sequence_length=batch_size, device="mixed" if gpu else "cpu"
        )

    pipe = decode()
    pipe.build()
    pipe.feed_input("video", [np.fromfile(src, np.uint8)])
    n = 0
    while n < len(pts):
        try:
            (out,) = pipe.run()
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(
                f"{src}: DALI stopped at frame {n} of {len(pts)} ({first}); use --loader pyav"
            ) from e
        if gpu:
            out = out.as_cpu()  # the translate callable takes host arrays
        for frame in np.asarray(out[0])[: len(pts) - n]:  # (F, H, W, 3) uint8
            yield frame, pts[n]
            n += 1


def audio_packets(src: Path, streams: list[int]) -> Iterator[tuple[int, av.Packet]]:
    """(input stream index, packet) of the given audio streams, in file order, for copying unchanged.
    The index is read here: a packet's .stream dangles once this file is closed, which happens while
    the encoder may still hold packets (their data and time base are the packet's own)."""
    if not streams:
        return
    with av.open(str(src)) as container:
        packets = container.demux([container.streams[i] for i in streams])
        while True:
            try:
                packet = next(packets, None)
            except av.error.FFmpegError as e:
                why = ffmpeg_reason(e)
                raise UserError(f"{src}: its audio is damaged ({why}); re-download or re-encode it") from e
            if packet is None:
                return
            if packet.dts is not None:  # None: the demuxer's empty end-of-stream packet
                yield packet.stream.index, packet
