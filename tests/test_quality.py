"""FID and KID (fastcycle.quality) against torch-fidelity on the same weights and images, and the
properties that make them trustworthy: zero for a set against itself (singular covariances too), rising
with distortion, the graph's resize, the weights' hash check and their one-line errors.

The images are real photographs (scikit-image's), cut into 96x96 crops, so the features are those of
natural images; sets are small (the Inception net is ~5.7 GFLOP per image) and shared per module."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
import skimage
import torch
from PIL import Image
from scipy import ndimage

from fastcycle.errors import UserError
from fastcycle.quality import distances, features, realsets, weights
from fastcycle.quality.inception import SIZE, resize_tf1

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")
CROP = 96  # not 299: the resize is part of what is compared


def _crops(n: int, offset: int) -> list[np.ndarray]:
    """n CROPxCROP crops of the photographs, on a grid shifted by `offset` (another offset, other crops)."""
    out = []
    for name in PHOTOS:
        photo = np.asarray(Image.open(f"{skimage.data_dir}/{name}").convert("RGB"))
        for y in range(offset, photo.shape[0] - CROP, 2 * CROP):
            for x in range(offset, photo.shape[1] - CROP, 2 * CROP):
                out.append(np.ascontiguousarray(photo[y : y + CROP, x : x + CROP]))
    return out[:: max(1, len(out) // n)][:n]


def _blur(images, sigma):
    return [ndimage.gaussian_filter(im, (sigma, sigma, 0)) for im in images]


def _noise(images, std, seed=0):
    rng = np.random.default_rng(seed)
    return [np.clip(im + rng.normal(0, std, im.shape), 0, 255).astype(np.uint8) for im in images]


@pytest.fixture(scope="module")
def net():
    return weights.load_inception()


@pytest.fixture(scope="module")
def real(net):
    images = _crops(12, 0)
    return images, features.inception_features(images, net)


@pytest.fixture(scope="module")
def fidelity_extractor(tmp_path_factory):
    """torch-fidelity's own Inception module, loaded with the same weights converted to its names."""
    from torch_fidelity import feature_extractor_inceptionv3 as tf_inception

    cls = tf_inception.FeatureExtractorInceptionV3
    load, fetch = cls.load_state_dict, tf_inception.load_state_dict_from_url
    try:  # its names and shapes, without its download
        cls.load_state_dict, tf_inception.load_state_dict_from_url = (
            (lambda *a, **k: None),
            (lambda *a, **k: {}),
        )
        template = cls("inception-v3-compat", ["2048"]).state_dict()
    finally:
        cls.load_state_dict, tf_inception.load_state_dict_from_url = load, fetch
    path = tmp_path_factory.mktemp("fidelity") / "weights.pth"
    torch.save(weights.to_pytorch_fid(weights.graph_state(weights.find()), template), path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))


def test_fid_and_kid_equal_torch_fidelitys(net, real, fidelity_extractor):
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    real_images, ours_real = real
    fake_images = _noise(_blur(_crops(12, CROP), 1.5), 8)
    ours_fake = features.inception_features(fake_images, net)
    with torch.no_grad():
        theirs_real, theirs_fake = (
            fidelity_extractor(torch.from_numpy(np.stack(s)).permute(0, 3, 1, 2))[0].double()
            for s in (real_images, fake_images)
        )
    # Features: the same graph, resize and weights; float32 sums in another order (oneDNN's blocking,
    # the folded batch norm): ~1e-6 relative, where a misplaced weight or another resize is >1e-2.
    scale = theirs_real.abs().max().item()
    assert np.abs(ours_real - theirs_real.numpy()).max() / scale < 1e-4
    assert np.abs(ours_fake - theirs_fake.numpy()).max() / scale < 1e-4

    kid_args = {"kid_subsets": 50, "kid_subset_size": 10, "rng_seed": 2020, "verbose": False}
    theirs_fid = fid_statistics_to_metric(
        fid_features_to_statistics(theirs_fake), fid_features_to_statistics(theirs_real), False
    )["frechet_inception_distance"]
    theirs_kid = kid_features_to_metric(theirs_fake, theirs_real, **kid_args)
    ours_fid = distances.fid(distances.statistics(ours_fake), distances.statistics(ours_real))
    ours_kid, ours_std, size = distances.kid(ours_fake, ours_real, subsets=50, subset_size=10)
    assert size == 10 and theirs_fid > 50  # distinct sets: a large distance to be matched
    # The issue's tolerances; the features' 1e-6 moves FID by about that relative and KID by ~1e-8.
    assert abs(ours_fid - theirs_fid) / theirs_fid < 1e-3
    assert abs(ours_kid - theirs_kid["kernel_inception_distance_mean"]) < 1e-4
    assert abs(ours_std - theirs_kid["kernel_inception_distance_std"]) < 1e-4


def test_fid_of_a_set_against_itself_is_zero(real):
    _, f = real  # 12 images, 2048 features: a covariance of rank 11
    assert abs(distances.fid(distances.statistics(f), distances.statistics(f))) < 1e-3
    # More images than features: the eigendecomposition branch (synthetic features of Inception's scale,
    # 256 of them: the branch is the same at any width).
    many = np.random.default_rng(0).gamma(0.5, 0.6, (300, 256)).astype(np.float32)
    assert abs(distances.fid(distances.statistics(many), distances.statistics(many))) < 1e-3


def test_fid_agrees_with_scipys_square_root_on_full_rank_covariances():
    import scipy.linalg

    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, (300, 64)), rng.normal(0.1, 1.2, (280, 64))  # n > d: full rank
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    diff = a.mean(0) - b.mean(0)
    reference = diff @ diff + np.trace(sa) + np.trace(sb) - 2 * np.trace(scipy.linalg.sqrtm(sa @ sb).real)
    ours = distances.fid(distances.statistics(a), distances.statistics(b))
    assert abs(ours - reference) / reference < 1e-9  # float64 on a well-conditioned product


def test_fid_rises_with_distortion(net, real):
    images, clean = real
    ref = distances.statistics(clean)
    for distort, levels in ((_blur, (1.0, 2.5)), (_noise, (10.0, 40.0))):
        fids = [
            distances.fid(ref, distances.statistics(features.inception_features(distort(images, s), net)))
            for s in levels
        ]
        # strictly rising, each level well above the last (a broken extractor, e.g. constant features,
        # gives 0s; one blind to blur or noise gives a flat curve)
        assert 1.0 < fids[0] < 0.8 * fids[1], (distort.__name__, fids)


def test_kid_per_subset_path_equals_the_full_kernel_path(monkeypatch):
    rng = np.random.default_rng(2)
    x, y = rng.gamma(0.5, 0.6, (40, 2048)), rng.gamma(0.55, 0.6, (36, 2048))
    full = distances.kid(x, y, subsets=20, subset_size=30)
    monkeypatch.setattr(distances, "_FULL_KERNEL_MAX", 10)
    assert np.allclose(distances.kid(x, y, subsets=20, subset_size=30), full, rtol=1e-10, atol=0)


def test_resize_is_tensorflow1s_bilinear():
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    x = torch.rand(2, 3, 37, 53) * 255
    big = torch.rand(1, 3, 400, 350) * 255
    for image in (x, big):
        theirs = interpolate_bilinear_2d_like_tensorflow1x(image, size=(SIZE, SIZE), align_corners=False)
        # the same float32 operations (elementwise, IEEE, no reductions) in the same order: bit-exact
        assert torch.equal(resize_tf1(image), theirs)
    # not pytorch-fid's half-pixel resize: the two differ by whole pixel levels
    half_pixel = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    assert (resize_tf1(x) - half_pixel).abs().max() > 1


def test_to_rgb8_converts_gray_alpha_and_16_bits():
    gray16 = np.array([[0, 257, 65535, 128]], np.uint16)
    out = features.to_rgb8(gray16)
    assert out.shape == (1, 4, 3) and out.dtype == np.uint8
    assert out[0, :, 0].tolist() == [0, 1, 255, 0]  # round(x * 255 / 65535): 128 -> 0.498 -> 0
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 3] = 255
    assert features.to_rgb8(rgba).shape == (2, 2, 3) and features.to_rgb8(rgba).max() == 0
    with pytest.raises(ValueError, match="uint8 or uint16"):
        features.to_rgb8(np.zeros((2, 2, 3), np.float32))


def test_exact_fp32_turns_tf32_off_and_restores_it():
    conv = torch.backends.cudnn.conv
    before = conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    with features.exact_fp32(torch.device("cpu")):
        assert (conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision) == ("ieee", "ieee")
        assert not torch.is_autocast_enabled("cpu")
    assert (conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision) == before


def test_weights_with_another_hash_are_refused(tmp_path):
    fake = tmp_path / "inception.pt"
    fake.write_bytes(b"not the weights")
    with pytest.raises(UserError, match="not a known copy of the 2015-12-05 Inception weights") as e:
        weights.check(fake)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="no such file"):
        weights.find(tmp_path / "missing.pt")


def test_the_packaged_weights_are_found_and_hash_checked():
    w = weights.find()
    assert w.path.name == weights.FID_HELPER_FILE and w.layout == "torchscript"
    assert hashlib.sha1(w.path.read_bytes()).hexdigest() == weights.FID_HELPER_SHA1


def test_no_weights_anywhere_is_one_line_naming_where_to_put_them(monkeypatch, tmp_path):
    monkeypatch.delenv(weights.ENV, raising=False)
    monkeypatch.setattr(weights, "_packaged", lambda: None)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(url, dst, hash_prefix=None, progress=True):
        assert url == weights.PYTORCH_FID_URL and hash_prefix == weights.PYTORCH_FID_SHA256_PREFIX
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(UserError) as e:
        weights.find()
    message = str(e.value)
    assert "download failed" in message and "--inception-weights" in message and "\n" not in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert not (tmp_path / "hub" / "checkpoints" / weights.PYTORCH_FID_NAME).exists()


def test_pytorch_fid_names_round_trip_to_the_graphs(fidelity_extractor):
    graph = weights.graph_state(weights.find())
    theirs = weights.to_pytorch_fid(graph, fidelity_extractor.state_dict())
    back = weights.from_pytorch_fid(theirs)
    assert back.keys() == graph.keys()
    assert all(torch.equal(back[k], graph[k]) for k in graph)


def test_real_features_are_cached_by_content(net, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTCYCLE_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "real"
    folder.mkdir()
    for i, im in enumerate(_crops(3, 0)):
        Image.fromarray(im).save(folder / f"{i}.png")
    paths = realsets.images_in(folder)
    sha = weights.find().sha256
    first, cached = realsets.real_features(paths, net, sha)
    again, cached_again = realsets.real_features(paths, net, sha)
    assert (cached, cached_again) == (False, True) and np.array_equal(first, again)
    Image.fromarray(_crops(3, CROP)[0]).save(paths[0])  # another image under the same name: a new key
    changed, cached_changed = realsets.real_features(paths, net, sha)
    assert not cached_changed and not np.array_equal(changed[0], first[0])
    assert np.array_equal(changed[1:], first[1:])
    with pytest.raises(UserError, match="at least 2"):
        realsets.images_in(tmp_path / "cache")  # no images there
