"""The three loaders (torch, gpu-cache, dali): same shapes, ranges, sizes, distributions and shards.

DALI runs here with CPU operators (device_id=None) unless the tests run on a CUDA machine.
"""

import numpy as np
import pytest
import torch
from PIL import Image

import fastcycle.data.dali_loader as dali_loader
from fastcycle.config import DataConfig
from fastcycle.data.contract import LoaderSpec
from fastcycle.data.loader import build_loader
from fastcycle.data.plan import epoch_plan, rank_positions
from fastcycle.data.scan import scan_domain
from fastcycle.data.transforms import to_uint8
from fastcycle.errors import UserError
from tests.conftest import DEVICE, write_images

LOADERS = ("torch", "gpu-cache", "dali")


def make_loader(root, loader, tmp_path, state=None, **kw):
    """A loader over root/trainA, root/trainB; keyword arguments override LoaderSpec and DataConfig."""
    data_kw = {k: kw.pop(k) for k in ("cache_budget_gb", "prefetch") if k in kw}
    spec_kw = {
        "policy": "resize_and_crop",
        "load_size": 36,
        "crop_size": 32,
        "flip": True,
        "serial_batches": False,
        "seed": 7,
        "batch_size": 2,
        "device": DEVICE,
        "channels_last": False,
    } | kw
    scans = [scan_domain(root, d) for d in ("trainA", "trainB")]
    cfg = DataConfig(data=str(root), loader=loader, num_workers=0, **data_kw)
    built, _ = build_loader(cfg, LoaderSpec(*scans, **spec_kw), tmp_path / "work", state)
    return built


def batches(loader, epoch=0, start_step=0):
    return [(b.A.cpu(), b.B.cpu()) for b in loader.epoch(epoch, start_step)]


def coded_images(folder, n, size=(40, 36), step=9):
    """Image i: red = 9 * i everywhere, green = 6 * x, blue = 6 * y, so a crop tells which file it came
    from (red), its offset (green, blue at the top-left) and whether it was mirrored (green falls)."""
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    for i in range(n):
        arr = np.stack([np.full((h, w), step * i), 6 * x, 6 * y], -1).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"img_{i:03d}.png")


def decode_coded(x: torch.Tensor):
    """(N, 3, h, w) float batch of coded crops -> (file index, x offset, y offset, mirrored) per image."""
    u = to_uint8(x).long()
    index = (u[:, 0].float().mean((1, 2)) / 9).round().long()
    left, right = u[:, 1, 0, 0], u[:, 1, 0, -1]
    mirrored = left > right
    x0 = torch.where(mirrored, right, left) // 6
    return index, x0, u[:, 2, 0, 0] // 6, mirrored


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize(
    ("policy", "size", "expected"),
    [
        ("resize_and_crop", (50, 30), (32, 32)),
        ("crop", (50, 30), (32, 32)),  # smaller than the crop in height: scaled up first
        ("scale_width", (60, 30), (32, 36)),  # width 36, height max(36 * 30/60, 32) = 32 -> (h, w) (32, 36)
        ("scale_width_and_crop", (60, 30), (32, 32)),
        ("none", (50, 30), (32, 48)),  # round(w / 4) * 4 with Python rounding (12.5 -> 12), as the reference
    ],
)
def test_every_loader_gives_the_policys_shapes_in_range(tmp_path, loader, policy, size, expected):
    write_images(tmp_path / "trainA", 3, size=size, seed=1)
    write_images(tmp_path / "trainB", 2, size=size, seed=2, ext="jpg")
    data = make_loader(tmp_path, loader, tmp_path, policy=policy, channels_last=True)
    out = batches(data)
    assert len(out) == 1  # 3 pairs (the larger domain), batch 2, the remainder dropped
    for x in out[0]:
        assert x.shape == (2, 3, *expected) and x.dtype == torch.float32
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert x.min() >= -1.0 and x.max() <= 1.0
        assert x.max() - x.min() > 1.0  # real image content, not a constant


@pytest.mark.parametrize("loader", LOADERS)
def test_a_seed_reproduces_every_loader_and_another_seed_does_not(dataset, tmp_path, loader):
    first = batches(make_loader(dataset, loader, tmp_path / "1"))
    again = batches(make_loader(dataset, loader, tmp_path / "2"))
    other = batches(make_loader(dataset, loader, tmp_path / "3", seed=8))
    assert len(first) == 3
    assert all(
        torch.equal(a, b) for p, q in zip(first, again, strict=True) for a, b in zip(p, q, strict=True)
    )
    assert not all(torch.equal(p[0], q[0]) for p, q in zip(first, other, strict=True))


def test_gpu_cache_gives_the_torch_loaders_exact_batches(dataset, tmp_path):
    # Same PIL resize, same plan: the cache changes where pixels live, not which pixels.
    for epoch in (0, 1):
        ref = batches(make_loader(dataset, "torch", tmp_path), epoch)
        got = batches(make_loader(dataset, "gpu-cache", tmp_path), epoch)
        assert all(
            torch.equal(a, b) for p, q in zip(ref, got, strict=True) for a, b in zip(p, q, strict=True)
        )


def smooth_images(root) -> None:
    """Three smooth 61x45 images per domain (real photos are smooth at this scale), A as PNG, B as JPEG."""
    yy, xx = np.mgrid[0:45, 0:61]
    for d, ext in (("trainA", "png"), ("trainB", "jpg")):
        (root / d).mkdir()
        for i in range(3):
            arr = np.stack([127 + 90 * np.sin(xx / (6 + i) + yy / 9), 127 + 90 * np.cos(yy / 5), 4 * xx], -1)
            Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(root / d / f"{i}.{ext}")


@pytest.mark.parametrize("policy", ["resize_and_crop", "scale_width", "none"])
def test_loaders_agree_on_deterministic_preprocessing(tmp_path, policy):
    # Serial order, no flip, and a crop as large as the resized image, so nothing random is left.
    smooth_images(tmp_path)
    kw = {"policy": policy, "load_size": 32, "crop_size": 32, "flip": False, "serial_batches": True}
    kw["batch_size"] = 1
    out = {name: batches(make_loader(tmp_path, name, tmp_path / name, **kw)) for name in LOADERS}
    for name in ("gpu-cache", "dali"):
        for p, q in zip(out["torch"], out[name], strict=True):
            for a, b in zip(p, q, strict=True):
                assert a.shape == b.shape
                diff = (to_uint8(a).int() - to_uint8(b).int()).abs()
                # DALI's and PIL's bicubic filters round differently (measured max 2, mean 0.17 levels).
                assert diff.max() <= 3 and diff.float().mean() <= 0.5, (name, diff.max(), diff.float().mean())
                if name == "gpu-cache":
                    assert diff.max() == 0


@pytest.mark.parametrize("loader", LOADERS)
def test_crop_offsets_are_uniform_and_flips_fair(tmp_path, loader):
    # 40x36 images, crop 32 without resizing: x offsets 0..8, y offsets 0..4.
    coded_images(tmp_path / "trainA", 25)
    coded_images(tmp_path / "trainB", 25)
    data = make_loader(tmp_path, loader, tmp_path, policy="crop", batch_size=5)
    xs, ys, flips = [], [], []
    for epoch in range(8):  # 8 epochs x 25 positions x 2 domains = 400 crops
        for A, B in batches(data, epoch):
            for x in (A, B):
                _, x0, y0, m = decode_coded(x)
                xs += x0.tolist()
                ys += y0.tolist()
                flips += m.tolist()
    n = len(xs)
    assert n == 400
    for values, k in ((xs, 9), (ys, 5)):
        counts = np.bincount(values, minlength=k)
        assert len(counts) == k  # nothing outside [0, extent - crop]
        # Each count is Binomial(400, 1/k): within 4.5 sigma of its mean.
        sigma = (n * (1 / k) * (1 - 1 / k)) ** 0.5
        assert np.all(np.abs(counts - n / k) <= 4.5 * sigma), counts
    assert 155 <= sum(flips) <= 245  # Binomial(400, 1/2) within 4.5 sigma


@pytest.mark.parametrize("loader", LOADERS)
def test_no_flip_never_mirrors(tmp_path, loader):
    coded_images(tmp_path / "trainA", 6)
    coded_images(tmp_path / "trainB", 6)
    data = make_loader(tmp_path, loader, tmp_path, policy="crop", flip=False)
    assert not any(decode_coded(x)[3].any() for p in batches(data) for x in p)


@pytest.mark.parametrize("loader", LOADERS)
def test_ranks_see_disjoint_shards_of_each_pass(tmp_path, loader):
    coded_images(tmp_path / "trainA", 24)
    coded_images(tmp_path / "trainB", 12)  # the smaller domain wraps: one pass per half epoch
    seen = []
    for rank in (0, 1):
        data = make_loader(tmp_path, loader, tmp_path / str(rank), policy="crop", rank=rank, world_size=2)
        assert data.spec.steps_per_epoch == 6  # 24 pairs / (batch 2 x 2 ranks)
        A = torch.cat([decode_coded(a)[0] for a, _ in batches(data)]).tolist()
        B = torch.cat([decode_coded(b)[0] for _, b in batches(data)]).tolist()
        seen.append((A, B))
    (A0, B0), (A1, B1) = seen
    assert sorted(A0 + A1) == list(range(24))  # every A exactly once across the two ranks
    # B: 12 files, 24 positions: each rank's first pass shard is disjoint from the other's.
    assert not set(B0[:6]) & set(B1[:6]) and sorted(B0[:6] + B1[:6]) == list(range(12))


def test_sharded_batches_are_the_single_process_batches_split(dataset):
    # What DDP parity rests on: 2 ranks at batch b see one process's batch-2b positions, in rank order.
    one = rank_positions(6, 2, 0, 1)
    two = [rank_positions(6, 1, r, 2) for r in (0, 1)]
    assert np.array_equal(np.concatenate(two, axis=1), one)
    plan = epoch_plan(7, 0, 6, 5, True)
    assert sorted(plan.a.tolist()) == list(range(6)) and sorted(plan.b[:5].tolist()) == list(range(5))


@pytest.mark.parametrize("loader", LOADERS)
def test_resume_mid_epoch_continues_with_the_same_batches(dataset, tmp_path, loader):
    full = batches(make_loader(dataset, loader, tmp_path / "a"))
    first = make_loader(dataset, loader, tmp_path / "b")
    it = first.epoch(0)
    next(it)  # one step done, then the run is saved and stops
    state = first.state_dict()
    resumed = make_loader(dataset, loader, tmp_path / "c", state=state)
    rest = batches(resumed, 0, start_step=1)
    assert all(
        torch.equal(a, b) for p, q in zip(full[1:], rest, strict=True) for a, b in zip(p, q, strict=True)
    )


def test_dali_says_when_it_cannot_resume_the_saved_reader_positions(dataset, tmp_path, capsys):
    first = make_loader(dataset, "dali", tmp_path / "a")
    next(first.epoch(0))
    state = first.state_dict()
    capsys.readouterr()
    make_loader(dataset, "dali", tmp_path / "b", state=state)  # the same data and shard: resumed exactly
    assert "DALI reader positions" not in capsys.readouterr().out
    make_loader(dataset, "dali", tmp_path / "c", state=state, batch_size=1)  # other batches: started afresh
    said = capsys.readouterr().out.strip()
    assert "no DALI reader positions for this data and shard (batch_size 2 -> 1)" in said
    assert "resume does not see the batches an uninterrupted run would" in said and "\n" not in said
    make_loader(dataset, "dali", tmp_path / "d", state={})  # a checkpoint of a torch or gpu-cache run
    assert "(it was written with another --loader)" in capsys.readouterr().out


def test_gpu_cache_refuses_a_dataset_over_budget(dataset, tmp_path):
    with pytest.raises(
        UserError, match=r"gpu-cache needs 0\.00 GiB for 11 images .* over the 0\.00 GiB budget"
    ):
        make_loader(dataset, "gpu-cache", tmp_path, cache_budget_gb=1e-6)


def test_auto_picks_torch_without_cuda(dataset, tmp_path):
    if DEVICE.type == "cuda":
        pytest.skip("auto picks gpu-cache or dali on CUDA; test_train covers that path on the GPU")
    scans = [scan_domain(dataset, d) for d in ("trainA", "trainB")]
    spec = LoaderSpec(*scans, "resize_and_crop", 36, 32, True, False, 0, 2, DEVICE, False)
    loader, note = build_loader(DataConfig(data=str(dataset), num_workers=0), spec, tmp_path)
    assert loader.name == "torch" and note == "loader torch (no CUDA device)"


def test_unbatchable_sizes_are_refused_before_decoding(tmp_path):
    write_images(tmp_path / "trainA", 2, size=(40, 36))
    write_images(tmp_path / "trainB", 1, size=(44, 36))
    write_images(tmp_path / "trainB", 1, size=(40, 36), seed=5, ext="jpg")
    with pytest.raises(UserError, match=r"none leaves trainB at 2 different sizes .* use --batch-size 1"):
        make_loader(tmp_path, "torch", tmp_path, policy="none")


def test_dali_missing_is_one_clear_error(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(dali_loader, "fn", None)
    with pytest.raises(UserError, match=r"--loader dali needs NVIDIA DALI: pip install 'fastcycle\[dali\]'"):
        make_loader(dataset, "dali", tmp_path)


@pytest.mark.parametrize("loader", LOADERS)
def test_batches_name_the_file_of_every_image(tmp_path, loader):
    """Batch.index_A/index_B (the class labels of --aux-classifier are looked up by them) must be the
    scanned index of the file each image was cut from, read back here from the image's coded red."""
    coded_images(tmp_path / "trainA", 5)
    coded_images(tmp_path / "trainB", 3)
    built = make_loader(tmp_path, loader, tmp_path)
    seen = 0
    for epoch in (0, 1):
        for b in built.epoch(epoch):
            for x, index in ((b.A, b.index_A), (b.B, b.index_B)):
                assert torch.equal(decode_coded(x.cpu())[0], index.cpu().long())
                seen += len(index)
    assert seen == 2 * 2 * 4  # 2 epochs x 2 steps of batch 2 x both domains
