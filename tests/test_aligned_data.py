"""Paired (pix2pix), single-folder (dcgan) data and --aux-classifier label CSVs."""

import numpy as np
import pytest
import torch
from PIL import Image

from fastcycle.data.aligned import find_pairs, open_aligned
from fastcycle.data.labels import load_domain_labels, read_labels
from fastcycle.data.plan import item_plan
from fastcycle.data.scan import scan_domain
from fastcycle.data.single import open_single
from fastcycle.data.transforms import to_uint8
from fastcycle.errors import UserError
from tests.conftest import write_images

CPU = torch.device("cpu")


def pair_arrays(n, size=(40, 40), seed=0):
    """n (A, B) pairs of (h, w, 3) uint8 arrays with B = 255 - A."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        out.append((a, 255 - a))
    return out


def write_side_by_side(root, pairs, names=None):
    (root / "train").mkdir(parents=True, exist_ok=True)
    for i, (a, b) in enumerate(pairs):
        name = names[i] if names else f"p{i:02d}"
        Image.fromarray(np.concatenate([a, b], axis=1)).save(root / "train" / f"{name}.png")


def write_two_folders(root, pairs, names=None, ext_B="bmp"):
    (root / "trainA").mkdir(parents=True, exist_ok=True)
    (root / "trainB").mkdir(parents=True, exist_ok=True)
    for i, (a, b) in enumerate(pairs):
        name = names[i] if names else f"p{i:02d}"
        Image.fromarray(a).save(root / "trainA" / f"{name}.png")
        Image.fromarray(b).save(root / "trainB" / f"{name}.{ext_B}")


def aligned(root, **kw):
    args = {
        "direction": "AtoB",
        "policy": "resize_and_crop",
        "load_size": 40,
        "crop_size": 32,
        "flip": True,
        "serial_batches": False,
        "seed": 3,
        "batch_size": 2,
        "device": CPU,
        "channels_last": False,
        "num_workers": 0,
    } | kw
    return open_aligned(root, **args)


def single(root, **kw):
    args = {
        "policy": "resize_and_crop",
        "load_size": 36,
        "crop_size": 32,
        "flip": True,
        "serial_batches": False,
        "seed": 3,
        "batch_size": 2,
        "device": CPU,
        "channels_last": False,
        "num_workers": 0,
    } | kw
    return open_single(root, **args)


def batches(loader, epoch=0, start_step=0):
    out = []
    for b in loader.epoch(epoch, start_step):
        B = None if b.B is None else to_uint8(b.B)
        out.append((to_uint8(b.A), B, b.index_A.clone(), list(b.skipped)))
    return out


def same(x, y):
    assert len(x) == len(y)
    for (a1, b1, i1, _), (a2, b2, i2, _) in zip(x, y, strict=True):
        assert torch.equal(a1, a2) and torch.equal(i1, i2)
        assert (b1 is None and b2 is None) or torch.equal(b1, b2)


# --- pix2pix pairs ------------------------------------------------------------------------------------


def test_both_layouts_give_the_same_pairs(tmp_path):
    pairs = pair_arrays(6)
    write_side_by_side(tmp_path / "ab", pairs)
    write_two_folders(tmp_path / "sep", pairs)
    # load_size 44: both layouts resize each 40x40 side to 44x44 before the crop.
    one, two = aligned(tmp_path / "ab", load_size=44), aligned(tmp_path / "sep", load_size=44)
    assert one.spec.pairs == two.spec.pairs == 6 and one.spec.steps_per_epoch == 3
    assert "train/" in one.note and "6 pairs" in one.note and "trainA/ + trainB/" in two.note
    for epoch in (0, 1):
        x, y = batches(one, epoch), batches(two, epoch)
        same(x, y)
        assert sorted(torch.cat([i for _, _, i, _ in x]).tolist()) == list(range(6))  # each pair once
        assert x[0][0].shape == (2, 3, 32, 32) and x[0][1].shape == (2, 3, 32, 32)


@pytest.mark.parametrize("layout", ["train", "two"])
@pytest.mark.parametrize(("policy", "load_size"), [("crop", 40), ("resize_and_crop", 44)])
def test_both_halves_get_the_identical_crop_and_flip(tmp_path, layout, policy, load_size):
    # resize_and_crop does not resize a load_size square, so B = 255 - A holds exactly after the crop.
    pairs = pair_arrays(8, size=(48, 40) if policy == "crop" else (load_size, load_size))
    (write_side_by_side if layout == "train" else write_two_folders)(tmp_path, pairs)
    loader = aligned(tmp_path, policy=policy, load_size=load_size, batch_size=4)
    flips = []
    for epoch in range(3):
        for A, B, index, _ in batches(loader, epoch):
            assert torch.equal(B, 255 - A)
            for a, i in zip(
                A, index.tolist(), strict=True
            ):  # the crop is where the plan says, maybe mirrored
                src = torch.from_numpy(pairs[i][0]).permute(2, 0, 1)
                found = [
                    (y, x, f)
                    for f in (False, True)
                    for y in range(src.shape[1] - 31)
                    for x in range(src.shape[2] - 31)
                    if torch.equal((a.flip(-1) if f else a), src[:, y : y + 32, x : x + 32])
                ]
                assert len(found) == 1
                flips.append(found[0][2])
    assert 0 < sum(flips) < len(flips)  # both flipped and unflipped pairs


def test_sides_of_different_sizes_are_resized_to_the_A_side(tmp_path):
    # Smooth A, B = 255 - A at twice the size: B is resized to A's prepared size, then cropped alike.
    y, x = np.mgrid[0:40, 0:48]
    pairs = []
    for i in range(4):
        a = np.stack([np.full_like(x, 20 * i), 4 * x, 5 * y], -1).astype(np.uint8)
        b = np.asarray(Image.fromarray(255 - a).resize((96, 80), Image.Resampling.NEAREST))
        pairs.append((a, b))
    write_two_folders(tmp_path, pairs)
    loader = aligned(tmp_path, policy="crop", batch_size=2)
    for A, B, _, _ in batches(loader):
        assert A.shape == B.shape == (2, 3, 32, 32)
        assert (B.float() - (255 - A).float()).abs().mean() < 3


def test_an_odd_width_side_by_side_image_gives_equal_sides(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "train").mkdir()
    Image.fromarray(rng.integers(0, 256, (36, 81, 3), dtype=np.uint8)).save(tmp_path / "train" / "x.png")
    loader = aligned(tmp_path, policy="none", batch_size=1)
    (A, B, _, _), *_ = batches(loader)
    assert A.shape == B.shape == (1, 3, 36, 40)


def test_direction_BtoA_swaps_input_and_target(tmp_path):
    write_side_by_side(tmp_path, pair_arrays(4))
    x, y = batches(aligned(tmp_path)), batches(aligned(tmp_path, direction="BtoA"))
    for (a1, b1, i1, _), (a2, b2, i2, _) in zip(x, y, strict=True):
        assert torch.equal(a1, b2) and torch.equal(b1, a2) and torch.equal(i1, i2)
    assert "BtoA" in aligned(tmp_path, direction="BtoA").note


def test_unmatched_files_are_reported_and_left_out(tmp_path):
    pairs = pair_arrays(5)
    write_two_folders(tmp_path, pairs[:4])
    Image.fromarray(pairs[4][0]).save(tmp_path / "trainA" / "only_a.png")
    Image.fromarray(pairs[4][1]).save(tmp_path / "trainB" / "only_b.png")
    (tmp_path / "trainB" / "sub").mkdir()
    Image.fromarray(pairs[4][1]).save(tmp_path / "trainB" / "sub" / "p00.png")  # other folder: no pair
    loader = aligned(tmp_path)
    assert loader.spec.pairs == 4
    assert loader.unmatched == ["trainA/only_a.png", "trainB/only_b.png", "trainB/sub/p00.png"]
    assert "3 unmatched" in loader.note
    assert [s.name for s in loader.scans] == ["trainA", "trainB"]


def test_subfolders_pair_by_relative_path(tmp_path):
    pairs = pair_arrays(4)
    for d in ("trainA/a", "trainA/b", "trainB/a", "trainB/b"):
        (tmp_path / d).mkdir(parents=True)
    for (a, b), name in zip(pairs, ["a/x", "a/y", "b/x", "b/y"], strict=True):
        Image.fromarray(a).save(tmp_path / "trainA" / f"{name}.png")
        Image.fromarray(b).save(tmp_path / "trainB" / f"{name}.png")
    files = find_pairs(tmp_path)
    assert [(p.relative_to(tmp_path).as_posix(), q.relative_to(tmp_path).as_posix()) for p, q in files.pairs][
        :1
    ] == [("trainA/a/x.png", "trainB/a/x.png")]
    assert not files.unmatched
    for A, B, _, _ in batches(aligned(tmp_path, policy="crop")):
        assert torch.equal(B, 255 - A)


def test_train_folder_is_preferred_over_trainA_trainB(tmp_path):
    write_side_by_side(tmp_path, pair_arrays(4, seed=1))
    write_two_folders(tmp_path, pair_arrays(6, seed=2))
    loader = aligned(tmp_path)
    assert loader.spec.pairs == 4 and loader.files.layout == "train"
    assert "ignored" in loader.note and "train/ is preferred" in loader.note


def test_max_dataset_size_caps_the_pairs(tmp_path):
    write_side_by_side(tmp_path / "ab", pair_arrays(6))
    write_two_folders(tmp_path / "sep", pair_arrays(6))
    assert aligned(tmp_path / "ab", max_dataset_size=4).spec.pairs == 4
    assert aligned(tmp_path / "sep", max_dataset_size=4).spec.pairs == 4


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        ("missing", "does not exist"),
        ("neither", "neither train/"),
        ("only_trainA", "found only trainA/"),
        ("empty_train", "holds no images"),
        ("no_match", "has a partner of the same name"),
        ("batch", "exceeds the dataset's 2 pairs"),
        ("direction", "--direction"),
    ],
)
def test_pix2pix_data_errors_are_one_line(tmp_path, make, expect):
    root, kw = tmp_path / "data", {}
    if make == "neither":
        write_images(root / "testA", 2)
    elif make == "only_trainA":
        write_images(root / "trainA", 2)
    elif make == "empty_train":
        (root / "train").mkdir(parents=True)
        (root / "train" / "notes.txt").write_text("x")
    elif make == "no_match":
        write_images(root / "trainA", 2)
        (root / "trainB").mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "trainB" / "other.png")
    elif make == "batch":
        write_side_by_side(root, pair_arrays(2))
        kw = {"batch_size": 2, "world_size": 2}
    elif make == "direction":
        write_side_by_side(root, pair_arrays(2))
        kw = {"direction": "sideways"}
    with pytest.raises(UserError, match=expect) as err:
        aligned(root, **kw)
    assert "\n" not in str(err.value)


def test_unbatchable_sizes_without_a_crop_are_refused(tmp_path):
    write_two_folders(
        tmp_path, pair_arrays(2, size=(40, 40)) + pair_arrays(2, size=(48, 40)), ["a", "b", "c", "d"]
    )
    with pytest.raises(UserError, match="different sizes"):
        aligned(tmp_path, policy="none", batch_size=2)
    assert aligned(tmp_path, policy="none", batch_size=1).spec.pairs == 4


def test_rank_shards_are_disjoint_and_make_up_the_single_process_batches(tmp_path):
    write_side_by_side(tmp_path, pair_arrays(9))
    whole = batches(aligned(tmp_path, batch_size=4))
    shards = [batches(aligned(tmp_path, batch_size=2, rank=r, world_size=2)) for r in range(2)]
    assert len(whole) == len(shards[0]) == len(shards[1]) == 2
    for s, (A, B, index, _) in enumerate(whole):
        assert torch.equal(torch.cat([shards[0][s][0], shards[1][s][0]]), A)
        assert torch.equal(torch.cat([shards[0][s][1], shards[1][s][1]]), B)
        assert torch.equal(torch.cat([shards[0][s][2], shards[1][s][2]]), index)
    seen = [set(torch.cat([b[2] for b in shard]).tolist()) for shard in shards]
    assert not seen[0] & seen[1]


def test_resume_from_a_step_gives_the_remaining_batches(tmp_path):
    write_side_by_side(tmp_path, pair_arrays(8))
    loader = aligned(tmp_path)
    full = batches(loader, epoch=2)
    same(batches(loader, epoch=2, start_step=1), full[1:])
    same(batches(aligned(tmp_path), epoch=2, start_step=3), full[3:])


def test_a_seed_reproduces_the_batches_and_another_does_not(tmp_path):
    write_side_by_side(tmp_path, pair_arrays(6))
    same(batches(aligned(tmp_path, seed=5)), batches(aligned(tmp_path, seed=5)))
    other = batches(aligned(tmp_path, seed=6))
    assert not all(
        torch.equal(a[0], b[0]) for a, b in zip(batches(aligned(tmp_path, seed=5)), other, strict=True)
    )
    assert not np.array_equal(item_plan(5, 0, 6, True).order, item_plan(5, 1, 6, True).order)
    assert np.array_equal(item_plan(5, 0, 6, False).order, np.arange(6))


def test_serial_batches_keep_file_order(tmp_path):
    write_side_by_side(tmp_path, pair_arrays(6))
    index = torch.cat([i for _, _, i, _ in batches(aligned(tmp_path, serial_batches=True))])
    assert index.tolist() == list(range(6))


def test_worker_processes_give_the_same_batches(tmp_path):
    write_two_folders(tmp_path, pair_arrays(6))
    same(batches(aligned(tmp_path, num_workers=2)), batches(aligned(tmp_path, num_workers=0)))


def test_a_pair_unreadable_at_run_time_is_replaced_and_reported(tmp_path):
    write_two_folders(tmp_path, pair_arrays(4))
    loader = aligned(tmp_path, batch_size=4, serial_batches=True)
    (tmp_path / "trainB" / "p01.bmp").write_bytes(b"not an image any more")
    ((A, B, index, skipped),) = batches(loader)
    assert skipped == [str(tmp_path / "trainB" / "p01.bmp")]
    assert index.tolist() == [0, 2, 2, 3]
    assert torch.equal(B, 255 - A)


# --- dcgan: one folder ------------------------------------------------------------------------------


def test_single_folder_shapes_range_and_indices(tmp_path):
    write_images(tmp_path / "faces", 3, size=(40, 36), seed=1)
    write_images(tmp_path / "faces" / "more", 3, size=(50, 30), seed=2, ext="jpg")
    loader = single(tmp_path / "faces", batch_size=2)
    assert loader.name == "torch" and loader.spec.pairs == 6 and loader.spec.steps_per_epoch == 3
    assert "6 images" in loader.note and loader.scans[0].name == "faces"
    got = list(loader.epoch(0))
    assert len(got) == 3
    for b in got:
        assert b.B is None and b.index_B is None
        assert b.A.shape == (2, 3, 32, 32) and b.A.dtype == torch.float32
        assert b.A.min() >= -1.0 and b.A.max() <= 1.0
    assert sorted(torch.cat([b.index_A for b in got]).tolist()) == list(range(6))


def test_single_folder_crops_match_the_indexed_file(tmp_path):
    paths = write_images(tmp_path / "imgs", 5, size=(40, 36), seed=4)
    loader = single(tmp_path / "imgs", policy="crop", batch_size=5, flip=False)
    ((A, _, index, _),) = batches(loader)
    for a, i in zip(A, index.tolist(), strict=True):
        src = torch.from_numpy(np.array(Image.open(paths[i]).convert("RGB"))).permute(2, 0, 1)
        assert any(torch.equal(a, src[:, y : y + 32, x : x + 32]) for y in range(5) for x in range(9))


def test_single_folder_shards_resume_seed_and_workers(tmp_path):
    write_images(tmp_path / "imgs", 9, seed=5)
    root = tmp_path / "imgs"
    whole = batches(single(root, batch_size=4))
    shards = [batches(single(root, batch_size=2, rank=r, world_size=2)) for r in range(2)]
    for s, (A, _, index, _) in enumerate(whole):
        assert torch.equal(torch.cat([shards[0][s][0], shards[1][s][0]]), A)
        assert torch.equal(torch.cat([shards[0][s][2], shards[1][s][2]]), index)
    full = batches(single(root), epoch=1)
    same(batches(single(root), epoch=1, start_step=2), full[2:])
    same(batches(single(root, num_workers=2), epoch=1), full)
    assert not all(
        torch.equal(a[0], b[0]) for a, b in zip(full, batches(single(root, seed=9), 1), strict=True)
    )


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        ("missing", "does not exist"),
        ("empty", "holds no images"),
        ("unreadable", "none of its 1 files is a readable image"),
        ("batch", "exceeds the dataset's 2 images"),
    ],
)
def test_single_folder_errors_are_one_line(tmp_path, make, expect):
    root, kw = tmp_path / "imgs", {}
    if make == "empty":
        root.mkdir()
    elif make == "unreadable":
        root.mkdir()
        (root / "x.png").write_bytes(b"nope")
    elif make == "batch":
        write_images(root, 2)
        kw = {"batch_size": 3}
    with pytest.raises(UserError, match=expect) as err:
        single(root, **kw)
    assert "\n" not in str(err.value)


def test_dataset_relative_path_works(tmp_path, monkeypatch):
    write_images(tmp_path / "imgs", 2)
    monkeypatch.chdir(tmp_path / "imgs")
    assert single(".", batch_size=1).spec.pairs == 2


# --- --aux-classifier labels ---------------------------------------------------------------------------


@pytest.fixture
def two_domains(tmp_path):
    root = tmp_path / "data"
    write_images(root / "trainA", 4, size=(8, 8), seed=1)  # img_000..img_003.png
    write_images(root / "trainA" / "sub", 2, size=(8, 8), seed=2)  # sub/img_000, sub/img_001
    write_images(root / "trainA" / "sub2", 1, size=(8, 8), seed=4)
    (root / "trainA" / "sub2" / "img_000.png").rename(root / "trainA" / "sub2" / "face.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "trainA" / "sub" / "face.png")
    write_images(root / "trainB", 3, size=(8, 8), seed=3)
    return {"A": scan_domain(root, "trainA"), "B": scan_domain(root, "trainB")}


def rel_names(scan):
    return [f.path.relative_to(scan.folder).as_posix() for f in scan.images]


def test_labels_with_header_relative_paths_and_basenames(tmp_path, two_domains):
    csv_A = tmp_path / "a.csv"
    csv_A.write_text(
        "FileName,Label\n"
        "img_002.png,smiling\n"  # a bare name: img_002.png exists only at the top level
        "sub/img_000.png,neutral\n"
        "trainA/img_003.png, smiling \n"
        "\n"
        "img_003.png,smiling\n"  # a repeat with the same label is fine
    )
    csv_B = tmp_path / "b.csv"
    csv_B.write_text("img_001.png,angry\nimg_000.png,neutral\n")
    table = load_domain_labels({"A": csv_A, "B": str(csv_B)}, two_domains)
    assert table.classes == ["angry", "neutral", "smiling"]
    names_A = rel_names(two_domains["A"])
    want_A = {"img_002.png": 2, "sub/img_000.png": 1, "img_003.png": 2}
    assert table.A.dtype == np.int64 and table.A.tolist() == [want_A.get(n, -1) for n in names_A]
    assert table.B.tolist() == [1, 0, -1]
    assert table.unmatched == []
    lines = table.summary().splitlines()
    assert lines[0] == "trainA: 3 of 8 images labelled, 2 classes (neutral 1, smiling 2)"
    assert lines[1] == "trainB: 2 of 3 images labelled, 2 classes (angry 1, neutral 1)"


def test_a_domain_without_csv_is_unlabelled(tmp_path, two_domains):
    csv_A = tmp_path / "a.csv"
    csv_A.write_text("img_000.png,cat\nimg_001.png,dog\n")
    table = load_domain_labels({"A": csv_A, "B": None}, two_domains)
    assert table.B.tolist() == [-1, -1, -1]
    assert "trainB: no labels file" in table.summary()
    classes, labels = read_labels(csv_A, two_domains["A"])
    assert classes == ["cat", "dog"] and labels[:2].tolist() == [0, 1] and (labels[2:] == -1).all()


def test_unknown_names_are_collected_unless_none_match(tmp_path, two_domains):
    csv_A = tmp_path / "a.csv"
    csv_A.write_text("img_000.png,cat\nmissing.png,dog\nimg_001.png,dog\n")
    table = load_domain_labels({"A": csv_A}, {"A": two_domains["A"], "B": two_domains["B"]})
    assert table.unmatched == [f"{csv_A}:2: missing.png"]
    assert "1 label rows name no image" in table.summary()
    csv_A.write_text("x.png,cat\ny.png,dog\n")
    with pytest.raises(UserError, match=r"none of its 2 file names .* \(e\.g\. x\.png, y\.png\)"):
        load_domain_labels({"A": csv_A}, two_domains)


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("img_000.png,cat\nimg_001.png\n", r"a\.csv:2: expected `filename,label`"),
        ("img_000.png,cat,extra\n", r"a\.csv:1: expected"),
        ("filename,label\n", "lists no `filename,label` rows"),
        ("img_000.png,cat\nimg_001.png,cat\n", r"only one class \(cat\)"),
        ("sub/img_000.png,cat\nface.png,dog\n", r"a\.csv:2: face\.png is the name of 2 images"),
        ("img_002.png,cat\nimg_002.png,dog\n", r"a\.csv:2: .* an earlier row labels it cat"),
    ],
)
def test_label_csv_errors_name_file_and_line(tmp_path, two_domains, text, expect):
    csv_A = tmp_path / "a.csv"
    csv_A.write_text(text)
    with pytest.raises(UserError, match=expect) as err:
        load_domain_labels({"A": csv_A, "B": None}, two_domains)
    assert "\n" not in str(err.value)


def test_missing_csv_and_no_labels_at_all(tmp_path, two_domains):
    with pytest.raises(UserError, match="does not exist; fix --labels-B"):
        load_domain_labels({"A": None, "B": tmp_path / "nope.csv"}, two_domains)
    with pytest.raises(UserError, match="no image is labelled"):
        load_domain_labels({"A": None, "B": None}, two_domains)
