"""fastcycle.video on real files: clips made here with PyAV (H.264 + AAC, with and without audio, rotated,
variable-rate, other pixel formats), translated by a real generator, decoded back and compared."""

from __future__ import annotations

import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from fastcycle.data.transforms import to_model_range, to_uint8
from fastcycle.errors import UserError
from fastcycle.models import build_generator
from fastcycle.runner import TorchRunner, run_padded
from fastcycle.video import VIDEO_EXTENSIONS, is_video, translate_video
from fastcycle.video.encode import X264_OPTIONS

W, H = 64, 48


def pattern(i: int, w: int = W, h: int = H) -> np.ndarray:
    """Frame i: smooth gradients (a codec keeps them well) and a red square that moves, so neighbouring
    frames differ. (h, w, 3) uint8."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 128)], -1).astype(np.uint8)
    s = h // 4
    x0, y0 = (i * 3) % (w - s), (i * 2) % (h - s)
    img[y0 : y0 + s, x0 : x0 + s] = (230, 40, 40)
    return img


def make_clip(
    path: Path,
    n: int = 24,
    size: tuple[int, int] = (W, H),
    audio: str | None = "aac",
    rotate: int | None = None,
    durations: list[int] | None = None,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    colour: tuple[int, int] | None = None,
) -> Path:
    """An n-frame clip at 24 fps (or with per-frame `durations` in 1/1000 s: variable rate), plus a 440 Hz
    mono sine over the same time in the `audio` codec (None: no audio). colour: (AVColorSpace,
    AVColorRange) to convert with and tag, e.g. (1, 2): BT.709 full range."""
    with av.open(str(path), "w") as c:
        v = c.add_stream(codec, rate=24)
        v.width, v.height, v.pix_fmt = *size, pix_fmt
        if durations is not None:
            v.time_base = v.codec_context.time_base = Fraction(1, 1000)
        if rotate is not None:
            v.set_display_rotation(rotate)
        if colour is not None:
            v.codec_context.colorspace, v.codec_context.color_range = colour
        a = None
        if audio is not None:  # every stream exists before the first packet is written
            a = c.add_stream(audio, rate=48000 if audio == "libopus" else 16000)
            a.layout = "mono"
        pts = 0
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(pattern(i, *size), format="rgb24")
            if durations is not None:
                frame.pts, frame.time_base = pts, v.time_base
                pts += durations[i]
            else:
                frame.pts = i
            if colour is not None:
                frame = frame.reformat(format=pix_fmt, dst_colorspace=colour[0], dst_color_range=colour[1])
            c.mux(v.encode(frame))
        c.mux(v.encode())
        if a is not None:
            rate, step = a.codec_context.sample_rate, a.codec_context.frame_size or 1024
            t = np.arange(int(rate * n / 24)) / rate
            sine = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]  # (1, samples)
            for k in range(0, sine.shape[1] - step + 1, step):
                layout = "fltp" if audio == "aac" else "flt"
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(sine[:, k : k + step]), layout, "mono"
                )
                frame.sample_rate, frame.pts = rate, k
                c.mux(a.encode(frame))
            c.mux(a.encode())
    return path


def decode(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as c:
        return list(c.decode(video=0))


def rgb(frames: list[av.VideoFrame]) -> list[np.ndarray]:
    return [f.to_ndarray(format="rgb24") for f in frames]


def audio_packets(path: Path) -> list[tuple[bytes, Fraction]]:
    with av.open(str(path)) as c:
        return [(bytes(p), p.pts * p.time_base) for p in c.demux(audio=0) if p.dts is not None]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float(10 * np.log10(255**2 / max(mse, 1e-10)))


@pytest.fixture(scope="module")
def generator():
    """A real (random) resnet_6blocks at ngf 4 as the translate callable: uint8 frames -> uint8 frames."""
    torch.manual_seed(0)
    runner = TorchRunner(build_generator("resnet_6blocks", ngf=4), torch.device("cpu"))

    def translate(frames: list[np.ndarray]) -> list[np.ndarray]:
        x = to_model_range(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2))  # (N, 3, H, W)
        y = run_padded(runner, x, runner.size_multiple)
        return list(to_uint8(y).permute(0, 2, 3, 1).numpy())

    return translate


def identity(frames: list[np.ndarray]) -> list[np.ndarray]:
    return frames


def test_frames_rate_timestamps_audio_and_pngs(tmp_path, generator):
    src = make_clip(tmp_path / "clip.mp4")
    dst, pngs = tmp_path / "out" / "clip.mp4", tmp_path / "frames"
    report = translate_video(src, dst, generator, batch_size=5, frames_dir=pngs, progress=False)

    inp, out = decode(src), decode(dst)
    assert report.frames == len(out) == len(inp) == 24 and report.audio and report.size == (W, H)
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        assert b.streams.video[0].average_rate == a.streams.video[0].average_rate == 24
    assert [f.pts * f.time_base for f in out] == [f.pts * f.time_base for f in inp]
    assert out[0].format.name == "yuv420p" and (out[0].width, out[0].height) == (W, H)
    assert audio_packets(dst) == audio_packets(src) and len(audio_packets(src)) > 5  # copied, not re-encoded

    # The PNGs are the translated frames before the codec: exactly the generator on each decoded frame,
    # batched as the pipeline batches them (5 at a time), so even the float rounding is the same.
    decoded = rgb(inp)
    expected = [y for k in range(0, 24, 5) for y in generator(decoded[k : k + 5])]
    files = sorted((pngs / "clip").iterdir())
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(1, 25)]
    for f, want in zip(files, expected, strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(f)), want)

    # The video's frames: the same translations through libx264. Its loss is measured here on exactly
    # those frames, encoded by a plain PyAV loop with the same options, and each output frame must be
    # within 0.5 dB of it (the pipeline adds no loss of its own: no resampling, no colour shift; the
    # 0.5 dB is x264's own wobble when handed other timestamps, measured within 0.05 dB).
    baseline = tmp_path / "baseline.mp4"
    with av.open(str(baseline), "w") as c:
        v = c.add_stream("libx264", rate=24, options=X264_OPTIONS)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        for i, image in enumerate(expected):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            c.mux(v.encode(frame))
        c.mux(v.encode())
    codec_psnr = [psnr(a, b) for a, b in zip(rgb(decode(baseline)), expected, strict=True)]
    got = [psnr(a, b) for a, b in zip(rgb(out), expected, strict=True)]
    assert min(g - c for g, c in zip(got, codec_psnr, strict=True)) > -0.5, (got, codec_psnr)
    # and each frame sits at its own time: against its neighbour's translation it scores lower (by
    # 1.1 dB on average here: the random generator's texture dominates both).
    shifted = [psnr(a, b) for a, b in zip(rgb(out)[1:], expected, strict=False)]
    assert np.mean(got[1:]) > np.mean(shifted) + 0.3


def test_rotation_kept_and_no_audio(tmp_path):
    src = make_clip(tmp_path / "rot.mp4", n=16, audio=None, rotate=90)
    report = translate_video(src, tmp_path / "rot.mkv", identity, progress=False)
    out = decode(tmp_path / "rot.mkv")
    assert not report.audio and len(out) == 16
    assert out[0].rotation == decode(src)[0].rotation == 90
    with av.open(str(tmp_path / "rot.mkv")) as c:
        assert [s.type for s in c.streams] == ["video"]


def test_variable_frame_rate_keeps_each_timestamp(tmp_path):
    durations = [40, 60, 20, 80] * 5  # ms: 25, 16.7, 50 and 12.5 fps in turn
    src = make_clip(tmp_path / "vfr.mp4", n=20, audio=None, durations=durations)
    translate_video(src, tmp_path / "out.mp4", identity, batch_size=3, progress=False)
    times = [f.pts * f.time_base for f in decode(tmp_path / "out.mp4")]
    assert times == [f.pts * f.time_base for f in decode(src)]
    assert times[:5] == [0, Fraction(40, 1000), Fraction(100, 1000), Fraction(120, 1000), Fraction(200, 1000)]


@pytest.mark.parametrize(
    ("codec", "pix_fmt", "suffix", "written"),
    [
        ("libx264", "yuv422p", ".mp4", "yuv422p"),
        ("libx264", "yuv444p10le", ".mp4", "yuv444p10le"),
        ("png", "rgb24", ".mov", "yuv420p"),  # libx264 has no RGB input: the fallback
    ],
)
def test_pixel_format_kept_where_libx264_can(tmp_path, codec, pix_fmt, suffix, written):
    src = make_clip(tmp_path / f"in{suffix}", n=8, audio=None, codec=codec, pix_fmt=pix_fmt)
    translate_video(src, tmp_path / "out.mp4", identity, progress=False)
    assert decode(tmp_path / "out.mp4")[0].format.name == written


@pytest.mark.parametrize("colour", [(1, 1), (1, 2)], ids=["bt709-limited", "bt709-full"])
def test_colour_matrix_and_range_kept(tmp_path, colour):
    src = make_clip(tmp_path / "in.mp4", n=8, audio=None, colour=colour)
    translate_video(src, tmp_path / "out.mp4", identity, progress=False)
    inp, out = decode(src), decode(tmp_path / "out.mp4")
    assert (out[0].colorspace, out[0].color_range) == (inp[0].colorspace, inp[0].color_range) == colour

    def as_tagged(f):
        return f.to_ndarray(format="rgb24", src_color_range=f.color_range)

    # 35 dB: libx264's own loss on this clip is 38-39 dB; converting with BT.601 where the tags say
    # BT.709 (or the other range) costs ~10 dB more (measured 28 dB).
    assert min(psnr(as_tagged(a), as_tagged(b)) for a, b in zip(inp, out, strict=True)) > 35


def test_audio_the_output_cannot_hold_is_dropped_with_a_line(tmp_path, capsys):
    src = make_clip(tmp_path / "opus.mkv", n=12, audio="libopus")
    kept = translate_video(src, tmp_path / "kept.mkv", identity, progress=False)
    dropped = translate_video(src, tmp_path / "dropped.mov", identity, progress=False)
    assert kept.audio and audio_packets(tmp_path / "kept.mkv") == audio_packets(src)
    line = "video: .mov cannot hold the opus audio of opus.mkv; dropped it (name the output .mkv to keep it)"
    assert (
        not dropped.audio and line in capsys.readouterr().err and len(decode(tmp_path / "dropped.mov")) == 12
    )


def test_avi_with_b_frames_is_stamped_at_its_nominal_rate(tmp_path, capsys):
    """AVI stores no presentation times: FFmpeg's guesses for B-frames come out of order."""
    src = make_clip(tmp_path / "clip.avi", n=12)
    report = translate_video(src, tmp_path / "out.mp4", identity, progress=False)
    assert "timestamps are out of order" in capsys.readouterr().err and report.audio
    assert [f.pts * f.time_base for f in decode(tmp_path / "out.mp4")] == [Fraction(i, 24) for i in range(12)]


def test_decode_and_encode_overlap_the_model(tmp_path):
    """With translate as slow as decoding and encoding together, a serial loop would take the sum of
    the two; the pipeline hides most of the I/O behind the model."""
    src = make_clip(tmp_path / "big.mp4", n=96, size=(320, 240), audio=None)
    runs = dict(batch_size=4, progress=False)
    io = min(translate_video(src, tmp_path / "a.mp4", identity, **runs).seconds for _ in range(2))

    def slow(frames):
        time.sleep(2 * io / 24)  # 24 batches: 2x the I/O time in all
        return frames

    total = min(translate_video(src, tmp_path / "b.mp4", slow, **runs).seconds for _ in range(2))
    hidden = (3 * io - total) / io  # share of the I/O time that ran during the model: 0 when serial
    # 0.4: opening, probing, x264's flush of its lookahead and the final fsync cannot overlap (measured:
    # 0.67-0.78 on the 2-core development machine).
    assert hidden > 0.4, f"I/O {io:.3f} s, model {2 * io:.3f} s, total {total:.3f} s"


def _no_leftovers(folder: Path, *keep: str) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(keep)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("truncated", "damaged or cut short"),
        ("truncated-faststart", "is cut short: "),
        ("no-video", "has no video stream"),
        ("undecodable", "video codec is unknown"),
        ("webm-output", "WebM holds VP8/VP9/AV1"),
        ("gif-output", "is not a video container"),
    ],
)
def test_bad_input_is_one_line_and_keeps_the_old_output(tmp_path, case, message):
    (tmp_path / "src").mkdir()
    clip = make_clip(tmp_path / "src" / "clip.mp4")
    raw = clip.read_bytes()
    bad, dst = tmp_path / "bad.mp4", tmp_path / "out" / "out.mp4"
    if case == "truncated":  # the index (moov) is at the end: cut, the file does not open
        bad.write_bytes(raw[: len(raw) // 2])
    elif case == "truncated-faststart":  # index first: it opens, and ends frames early
        with av.open(str(clip)) as i, av.open(str(bad), "w", options={"movflags": "faststart"}) as o:
            streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
            for p in i.demux():
                if p.dts is not None:
                    p.stream = streams[p.stream.index]
                    o.mux(p)
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size * 9 // 10])
    elif case == "no-video":
        bad = tmp_path / "sound.m4a"
        with av.open(str(clip)) as i, av.open(str(bad), "w") as o:
            a = o.add_stream_from_template(i.streams.audio[0])
            for p in i.demux(audio=0):
                if p.dts is not None:
                    p.stream = a
                    o.mux(p)
    elif case == "undecodable":  # H.264's sample entry renamed: FFmpeg knows no such codec
        bad.write_bytes(raw.replace(b"avc1", b"zzzz"))
    else:
        bad = clip
        dst = tmp_path / "out" / ("out.webm" if case == "webm-output" else "out.gif")
    dst.parent.mkdir()
    dst.write_bytes(b"a good earlier result")
    with pytest.raises(UserError, match=message) as e:
        translate_video(bad, dst, identity, progress=False, frames_dir=tmp_path / "out" / "frames")
    assert "\n" not in str(e.value) and "; " in str(e.value)
    assert dst.read_bytes() == b"a good earlier result"
    _no_leftovers(dst.parent, dst.name)


def test_interrupted_or_failing_run_leaves_nothing(tmp_path):
    src = make_clip(tmp_path / "clip.mp4")
    dst = tmp_path / "out" / "clip.mp4"
    dst.parent.mkdir()
    dst.write_bytes(b"old")
    threads = threading.active_count()
    calls = []

    def interrupted(frames):
        calls.append(len(frames))
        if len(calls) == 3:  # after two batches reached the encoder
            raise KeyboardInterrupt
        return frames

    with pytest.raises(KeyboardInterrupt):
        translate_video(src, dst, interrupted, batch_size=4, frames_dir=dst.parent / "f", progress=False)

    def resized(frames):  # the third batch at another size
        calls.append(len(frames))
        return [f[:32] for f in frames] if len(calls) == 3 else frames

    calls.clear()
    with pytest.raises(UserError, match="a video keeps one size"):
        translate_video(src, dst, resized, batch_size=4, progress=False)
    assert dst.read_bytes() == b"old"
    _no_leftovers(dst.parent, "clip.mp4")
    assert threading.active_count() == threads  # the decode and encode threads are gone


def test_is_video_and_extensions():
    assert is_video(Path("a/B.MP4")) and is_video(Path("x.mkv")) and not is_video(Path("x.png"))
    assert {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"} <= set(VIDEO_EXTENSIONS)


def _same_fidelity(dali_dir: Path, pyav_dir: Path) -> None:
    """Each frame DALI decoded is about as close to the clip's source frame as FFmpeg's decode of it,
    and far closer than to the neighbouring source frames (so it is the right frame)."""
    dali = sorted((dali_dir / "clip").iterdir())
    pyav = sorted((pyav_dir / "clip").iterdir())
    assert len(dali) == len(pyav) > 2
    for i, (x, y) in enumerate(zip(dali, pyav, strict=True)):
        got, ref = (psnr(np.asarray(Image.open(p)), pattern(i)) for p in (x, y))
        # 5 dB: DALI upsamples chroma with its own kernel, up to ~4 dB below FFmpeg's at the red
        # square's sharp colour edges (measured 0-4 dB on this clip); the neighbours score ~10 dB lower.
        assert got > ref - 5.0, (x.name, got, ref)
        neighbours = [psnr(np.asarray(Image.open(x)), pattern(j)) for j in (i - 1, i + 1) if j >= 0]
        assert got > max(neighbours) + 5.0, (x.name, got, neighbours)


def test_dali_cpu_decodes_vp9_like_pyav(tmp_path):
    """DALI 2.4 decodes VP8/VP9/MJPEG on the CPU (device_id=None): that path runs here for real."""
    pytest.importorskip("nvidia.dali")
    if torch.cuda.is_available():
        pytest.skip("with CUDA, loader='dali' takes NVDEC: test_dali_nvdec_decodes_h264_like_pyav")
    src = make_clip(tmp_path / "clip.webm", n=20, audio=None, codec="libvpx-vp9")
    a = translate_video(src, tmp_path / "dali.mkv", identity, loader="dali", frames_dir=tmp_path / "d")
    b = translate_video(src, tmp_path / "pyav.mkv", identity, loader="pyav", frames_dir=tmp_path / "p")
    assert "dali-cpu decode" in a.note and "pyav decode" in b.note and a.frames == b.frames == 20
    times = [[f.pts * f.time_base for f in decode(tmp_path / n)] for n in ("dali.mkv", "pyav.mkv")]
    assert times[0] == times[1]
    _same_fidelity(tmp_path / "d", tmp_path / "p")


def test_dali_falls_back_to_pyav_with_a_line(tmp_path, capsys):
    pytest.importorskip("nvidia.dali")
    if torch.cuda.is_available():
        pytest.skip("H.264 is NVDEC's: no fallback on a CUDA machine")
    src = make_clip(tmp_path / "clip.mp4", n=8, audio=None)
    report = translate_video(src, tmp_path / "o.mp4", identity, loader="dali", progress=False)
    line = (
        "DALI cannot decode it (without CUDA DALI decodes only vp8, vp9, mjpeg, not h264); decoding with PyAV"
    )
    assert line in capsys.readouterr().err and "pyav decode" in report.note and report.frames == 8


@pytest.mark.gpu
def test_dali_nvdec_decodes_h264_like_pyav(tmp_path):
    pytest.importorskip("nvidia.dali")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (NVDEC)")
    src = make_clip(tmp_path / "clip.mp4", n=20)
    a = translate_video(src, tmp_path / "dali.mp4", identity, loader="dali", frames_dir=tmp_path / "d")
    b = translate_video(src, tmp_path / "pyav.mp4", identity, loader="pyav", frames_dir=tmp_path / "p")
    assert "dali-gpu decode" in a.note and a.frames == b.frames == 20 and a.audio
    _same_fidelity(tmp_path / "d", tmp_path / "p")
