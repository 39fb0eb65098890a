"""fastcycle.sample: noise files, sampling, grids, the DCGAN paper's vector arithmetic, and run_sample."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fastcycle.errors import UserError
from fastcycle.noise import load_noise, sample_noise, save_noise, select_noise
from fastcycle.sample import (
    arith_grid,
    arith_vector,
    generate,
    grid,
    parse_arith,
    run_sample,
    term_path,
    write_grid,
)

NZ = 16
SIZE = 8


class TinyG(nn.Module):
    """A stand-in DCGAN generator: (N, nz, 1, 1) -> (N, 3, 8, 8) in [-1, 1]."""

    def __init__(self, nz: int = NZ):
        super().__init__()
        self.nz = nz
        self.net = nn.ConvTranspose2d(nz, 3, SIZE)
        torch.manual_seed(0)
        nn.init.normal_(self.net.weight, std=0.5)

    def forward(self, z):
        return torch.tanh(self.net(z))


@pytest.fixture
def G():
    return TinyG()


def tiles(png, n_rows, n_cols, size=SIZE, border=2):
    """Cut a grid image back into its (n, size, size, 3) tiles."""
    arr = np.asarray(Image.open(png))
    assert arr.shape == (n_rows * (size + border) + border, n_cols * (size + border) + border, 3)
    out = []
    for r in range(n_rows):
        for c in range(n_cols):
            y, x = border + r * (size + border), border + c * (size + border)
            out.append(arr[y : y + size, x : x + size])
    return np.stack(out)


# --- sampling and generation ------------------------------------------------------------------------------


def test_sample_noise_reproducible_by_seed():
    a, b, c = sample_noise(5, NZ, 1), sample_noise(5, NZ, 1), sample_noise(5, NZ, 2)
    assert a.shape == (5, NZ) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(sample_noise(3, NZ, 1), a[:3])  # tile i's noise does not depend on n


@pytest.mark.parametrize(("n", "seed"), [(0, 0), (-1, 0), (2, -1)])
def test_sample_noise_rejects(n, seed):
    with pytest.raises(UserError):
        sample_noise(n, NZ, seed)


def test_generate_batches_and_modes(G):
    z = sample_noise(7, NZ, 0)
    G.train()
    a = generate(G, z, "cpu", batch_size=3)
    assert a.shape == (7, SIZE, SIZE, 3) and a.dtype == np.uint8
    assert G.training  # restored
    np.testing.assert_array_equal(a, generate(G, z, "cpu", batch_size=256))
    with torch.no_grad():
        ref = ((G(torch.from_numpy(z)[:, :, None, None]) + 1) * 127.5).round().permute(0, 2, 3, 1)
    np.testing.assert_array_equal(a, ref.to(torch.uint8).numpy())
    with pytest.raises(ValueError):
        generate(G, sample_noise(2, NZ + 1, 0), "cpu")


# --- noise files ------------------------------------------------------------------------------------------


def test_noise_round_trip(tmp_path):
    z = sample_noise(4, NZ, 3)
    path = save_noise(tmp_path / "deep" / "er" / "z.npy", z)
    assert path.exists() and list(path.parent.iterdir()) == [path]  # no temporary file left
    np.testing.assert_array_equal(load_noise(path, NZ), z)
    save_noise(tmp_path / "one.npy", z[0])  # one vector is a (1, nz) file
    assert load_noise(tmp_path / "one.npy", NZ).shape == (1, NZ)
    np.save(tmp_path / "f64.npy", z.astype(np.float64))
    assert load_noise(tmp_path / "f64.npy", NZ).dtype == np.float32
    np.save(tmp_path / "z4.npy", z[:, :, None, None])  # the generator's own input shape
    np.testing.assert_array_equal(load_noise(tmp_path / "z4.npy", NZ), z)


def _bad_files(tmp_path):
    (tmp_path / "text.npy").write_text("not an array")
    np.save(tmp_path / "trunc.npy", np.zeros((4, NZ), np.float32))
    (tmp_path / "trunc.npy").write_bytes((tmp_path / "trunc.npy").read_bytes()[:100])
    np.save(tmp_path / "flat.npy", np.zeros(NZ, np.float32))
    np.save(tmp_path / "cube.npy", np.zeros((2, NZ, 3), np.float32))
    np.save(tmp_path / "empty.npy", np.zeros((0, NZ), np.float32))
    np.save(tmp_path / "long.npy", np.zeros((2, 128), np.float32))
    z = np.zeros((2, NZ), np.float32)
    z[1, 3] = np.nan
    np.save(tmp_path / "nan.npy", z)
    np.save(tmp_path / "huge.npy", np.full((1, NZ), 1e300))  # inf once float32
    np.save(tmp_path / "words.npy", np.array([["a"] * NZ]))
    np.save(tmp_path / "obj.npy", np.array([[None] * NZ], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "arch.npz", z=z)
    (tmp_path / "dir.npy").mkdir()


@pytest.mark.parametrize(
    ("name", "nz", "message"),
    [
        ("missing.npy", NZ, "does not exist"),
        ("dir.npy", NZ, "is a folder"),
        ("text.npy", NZ, "not a readable .npy"),
        ("trunc.npy", NZ, "not a readable .npy"),
        ("obj.npy", NZ, "not a readable .npy"),
        ("arch.npz", NZ, ".npz archive"),
        ("words.npy", NZ, "not numbers"),
        ("flat.npy", NZ, "shape (16,)"),
        ("cube.npy", NZ, "shape (2, 16, 3)"),
        ("empty.npy", NZ, "k >= 1"),
        ("long.npy", 100, "holds 128-long vectors but this generator takes 100;"),
        ("nan.npy", NZ, "1 non-finite values"),
        ("huge.npy", NZ, "non-finite"),
    ],
)
def test_load_noise_errors(tmp_path, name, nz, message):
    _bad_files(tmp_path)
    with pytest.raises(UserError) as e:
        load_noise(tmp_path / name, nz)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert str(tmp_path / name) in str(e.value)


def test_save_noise_refuses_bad_arrays(tmp_path):
    with pytest.raises(ValueError):
        save_noise(tmp_path / "z.npy", np.zeros((2, 3, 4)))
    with pytest.raises(ValueError):
        save_noise(tmp_path / "z.npy", np.full((1, 3), np.inf))
    assert not list(tmp_path.iterdir())


def test_select_noise():
    z = sample_noise(20, NZ, 0)
    np.testing.assert_array_equal(select_noise(z, "3,7,12"), z[[3, 7, 12]])
    np.testing.assert_array_equal(select_noise(z, " 0 , 19 "), z[[0, 19]])
    for bad in ("", " ", "3,,4", "3;4", "a", "-1", "1.5", "3,"):
        with pytest.raises(UserError, match="give tile numbers"):
            select_noise(z, bad)
    with pytest.raises(UserError, match="tile 20 is out of range; the grid has tiles 0 to 19"):
        select_noise(z, "2,20")


# --- grids ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "ncol", "rows", "cols"), [(1, 8, 1, 1), (5, 8, 1, 5), (8, 8, 1, 8), (10, 4, 3, 4)]
)
def test_grid_geometry(n, ncol, rows, cols):
    imgs = np.random.default_rng(0).integers(1, 256, (n, 5, 7, 3), dtype=np.uint8)
    g = grid(imgs, ncol)
    assert g.shape == (rows * 7 + 2, cols * 9 + 2, 3) and g.dtype == np.uint8
    for i in range(n):
        y, x = 2 + (i // cols) * 7, 2 + (i % cols) * 9
        np.testing.assert_array_equal(g[y : y + 5, x : x + 7], imgs[i])
    assert (g[:2] == 0).all() and (g[:, :2] == 0).all() and (g[-2:] == 0).all() and (g[:, -2:] == 0).all()
    assert (g == 0).sum() == g.size - imgs.size  # borders and empty cells only


def test_write_grid(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    path = write_grid(tmp_path / "new" / "g.png", imgs, 2)
    np.testing.assert_array_equal(tiles(path, 2, 2)[:3], imgs)
    assert sorted(p.name for p in path.parent.iterdir()) == ["g.png"]


# --- vector arithmetic ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "terms"),
    [
        ("a - b + c", [(1, "a"), (-1, "b"), (1, "c")]),
        ("mask_man - man + woman", [(1, "mask_man"), (-1, "man"), (1, "woman")]),
        ("a+b", [(1, "a"), (1, "b")]),
        ("-a + b", [(-1, "a"), (1, "b")]),
        ("+a", [(1, "a")]),
        ("  smile  ", [(1, "smile")]),
        ("a -b", [(1, "a"), (-1, "b")]),
        ("a- b", [(1, "a"), (-1, "b")]),
        ("a-b", [(1, "a-b")]),  # hyphens inside a name are part of it
        ("neutral-woman - x-ray+y", [(1, "neutral-woman"), (-1, "x-ray"), (1, "y")]),
        ("-a-b", [(-1, "a-b")]),
        ("runs/z/smile.npy - neutral", [(1, "runs/z/smile.npy"), (-1, "neutral")]),
        ("concept.v2 + 3", [(1, "concept.v2"), (1, "3")]),
    ],
)
def test_parse_arith(expr, terms):
    assert parse_arith(expr) == terms


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("", "no terms"),
        ("   ", "no terms"),
        ("-", "no terms"),
        ("a-", "dangling '-'"),
        ("a -", "dangling '-'"),
        ("a + b +", "dangling '+'"),
        ("a + - b", "'+' followed by '-'"),
        ("a + + b", "'+' followed by '+'"),
        ("- - a", "'-' followed by '-'"),
        ("a b", "'a' and 'b' need a + or - between them"),
        ("a * b", "'*' at position 2"),
        ("a + (b)", "'(' at position 4"),
        ("a, b", "','"),
        ("smile + 'b'", '"\'"'),
    ],
)
def test_parse_arith_rejects(expr, problem):
    with pytest.raises(UserError) as e:
        parse_arith(expr)
    msg = str(e.value)
    assert msg.startswith(f"--arith {expr!r}: ") and problem in msg and "\n" not in msg
    assert "joined by + and -" in msg


def test_term_path(tmp_path):
    assert term_path("smile", tmp_path) == tmp_path / "smile.npy"
    assert term_path("sub/smile.npy", tmp_path).as_posix() == "sub/smile.npy"


def _concepts(tmp_path):
    rng = np.random.default_rng(5)
    files = {
        "a": rng.standard_normal((3, NZ)),
        "b": rng.standard_normal((2, NZ)),
        "c": rng.standard_normal((1, NZ)),
    }
    for name, z in files.items():
        save_noise(tmp_path / f"{name}.npy", z)
    return {k: v.astype(np.float32) for k, v in files.items()}


def test_arith_vector(tmp_path):
    f = _concepts(tmp_path)
    want = f["a"].mean(0) - f["b"].mean(0) + f["c"].mean(0)
    got = arith_vector(parse_arith("a - b + c"), tmp_path, NZ)
    assert got.shape == (NZ,) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        arith_vector(parse_arith(f"-{tmp_path / 'a.npy'} + {tmp_path / 'c.npy'}"), "nowhere", NZ),
        f["c"][0] - f["a"].mean(0),
        atol=1e-6,
    )
    with pytest.raises(UserError, match="does not exist"):
        arith_vector(parse_arith("a + nope"), tmp_path, NZ)
    with pytest.raises(UserError, match="put spaces around the minus \\('a - b'\\)"):
        arith_vector(parse_arith("a-b"), tmp_path, NZ)
    with pytest.raises(UserError, match="holds 16-long vectors but this generator takes 8"):
        arith_vector(parse_arith("a"), tmp_path, 8)


def test_arith_grid(tmp_path, G):
    f = _concepts(tmp_path)
    images, desc, result = arith_grid(G, "cpu", parse_arith("a - b + c"), tmp_path, n_variants=4, seed=1)
    assert images.shape == (3 + 1 + 4, SIZE, SIZE, 3)
    np.testing.assert_allclose(result, f["a"].mean(0) - f["b"].mean(0) + f["c"].mean(0), atol=1e-6)
    z = np.stack([f["a"].mean(0), f["b"].mean(0), f["c"].mean(0), result])
    np.testing.assert_array_equal(images[:4], generate(G, z, "cpu"))
    assert not np.array_equal(images[4], images[3])  # jittered
    again, _, _ = arith_grid(G, "cpu", parse_arith("a - b + c"), tmp_path, n_variants=4, seed=1)
    np.testing.assert_array_equal(images, again)  # seeded
    assert "a (mean of 3) - b (mean of 2) + c (mean of 1) = result" in desc and "\n" not in desc
    assert "4 variants" in desc and "±0.25" in desc


# --- run_sample -------------------------------------------------------------------------------------------


def test_run_sample_plain(tmp_path, G):
    out = tmp_path / "new" / "samples.png"
    lines = run_sample(G, "cpu", n=10, seed=3, out=out, ncol=4)
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    z = load_noise(out.with_suffix(".npy"), NZ)
    np.testing.assert_array_equal(z, sample_noise(10, NZ, 3))
    np.testing.assert_array_equal(tiles(out, 3, 4)[:10], generate(G, z, "cpu"))
    assert sorted(p.name for p in out.parent.iterdir()) == ["samples.npy", "samples.png"]
    # the same grid again from the saved noise (n and seed unused), and an extra copy of it
    out2 = tmp_path / "again.png"
    run_sample(
        G,
        "cpu",
        n=1,
        seed=99,
        out=out2,
        noise=out.with_suffix(".npy"),
        ncol=4,
        save_noise_to=tmp_path / "c.npy",
    )
    assert out2.read_bytes() == out.read_bytes()
    np.testing.assert_array_equal(load_noise(tmp_path / "c.npy", NZ), z)
    # regenerating beside its own noise file leaves the file as it is
    lines = run_sample(G, "cpu", n=1, seed=0, out=out, noise=out.with_suffix(".npy"))
    assert lines[1].startswith("kept ")
    np.testing.assert_array_equal(load_noise(out.with_suffix(".npy"), NZ), z)


def test_run_sample_select(tmp_path, G):
    out = tmp_path / "samples.png"
    run_sample(G, "cpu", n=12, seed=0, out=out)
    z = load_noise(tmp_path / "samples.npy", NZ)
    lines = run_sample(
        G,
        "cpu",
        n=12,
        seed=0,
        out=out,
        noise=tmp_path / "samples.npy",
        select="3,7,11",
        save_noise_to=tmp_path / "concepts" / "smile.npy",
    )
    assert len(lines) == 2
    np.testing.assert_array_equal(load_noise(tmp_path / "concepts" / "smile.npy", NZ), z[[3, 7, 11]])
    preview = tiles(tmp_path / "concepts" / "smile.png", 1, 3)
    np.testing.assert_array_equal(preview, generate(G, z[[3, 7, 11]], "cpu"))
    # without --noise: the sampled noise of (n, seed), the grid the user saw
    run_sample(G, "cpu", n=12, seed=0, out=out, select="0,1", save_noise_to=tmp_path / "neutral.npy")
    np.testing.assert_array_equal(load_noise(tmp_path / "neutral.npy", NZ), z[[0, 1]])
    with pytest.raises(UserError, match="--select needs --save-noise-to"):
        run_sample(G, "cpu", n=12, seed=0, out=out, select="0")
    with pytest.raises(UserError, match="tile 12 is out of range"):
        run_sample(G, "cpu", n=12, seed=0, out=out, select="12", save_noise_to=tmp_path / "x.npy")
    with pytest.raises(UserError, match="is the --noise file itself"):
        run_sample(
            G,
            "cpu",
            n=1,
            seed=0,
            out=out,
            noise=tmp_path / "samples.npy",
            select="0",
            save_noise_to=tmp_path / "samples.npy",
        )
    assert not (tmp_path / "x.npy").exists() and not (tmp_path / "x.png").exists()


def test_run_sample_arith(tmp_path, G):
    f = _concepts(tmp_path / "concepts")
    out = tmp_path / "arith" / "smile.png"
    lines = run_sample(
        G, "cpu", n=1, seed=0, out=out, arith="a - b + c", noise_dir=tmp_path / "concepts", n_variants=5
    )
    assert len(lines) == 3 and "a (mean of 3) - b (mean of 2) + c (mean of 1) = result" in lines[0]
    images = tiles(out, 1, 3 + 1 + 5)
    result = load_noise(out.with_suffix(".npy"), NZ)
    assert result.shape == (1, NZ)
    np.testing.assert_allclose(result[0], f["a"].mean(0) - f["b"].mean(0) + f["c"].mean(0), atol=1e-6)
    np.testing.assert_array_equal(images[3], generate(G, result, "cpu")[0])
    # the result is a noise file: reusable as a term
    run_sample(
        G,
        "cpu",
        n=1,
        seed=0,
        out=tmp_path / "again.png",
        arith=f"{out.with_suffix('.npy')} - a",
        noise_dir=tmp_path / "concepts",
        n_variants=0,
    )
    assert tiles(tmp_path / "again.png", 1, 3).shape[0] == 3


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"out": "grid"}, "must name an image file"),
        ({"out": "grid.npy"}, "must name an image file"),
        ({"ncol": 0}, "--ncol must be positive"),
        ({"n": 0}, "--n must be positive"),
        ({"arith": "a -"}, "dangling"),
        ({"arith": "a", "noise": "z.npy"}, "--arith and --noise do not go together"),
        ({"arith": "a", "select": "1"}, "--arith and --select do not go together"),
        ({"arith": "a", "n_variants": -1}, "--n-variants must be zero or more"),
        ({"arith": "a", "out": "a.png"}, "would overwrite"),
        ({"arith": "nope"}, "does not exist"),
        ({"noise": "missing.npy"}, "does not exist"),
    ],
)
def test_run_sample_errors_write_nothing(tmp_path, G, monkeypatch, kw, message):
    monkeypatch.chdir(tmp_path)
    save_noise("a.npy", sample_noise(2, NZ, 0))
    before = sorted(p.name for p in tmp_path.iterdir())
    args = {"n": 4, "seed": 0, "out": "o/grid.png"} | kw
    with pytest.raises(UserError, match=message):
        run_sample(G, "cpu", **args)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
