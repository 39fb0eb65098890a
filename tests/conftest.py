import os

import numpy as np
import pytest
import torch
from PIL import Image

# The README's command runs the suite in one pytest-xdist worker per core (`-n logical`); each worker
# takes its share of the cores (at most two) for torch's intra-op threads, and passes that share on to
# the processes its tests start (torch reads OMP_NUM_THREADS at import): threads beyond the cores only
# add contention.
CORES = len(os.sched_getaffinity(0))
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, CORES // WORKERS))
torch.set_num_threads(THREADS)
if WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))

# Without a GPU, Triton kernels run under Triton's CPU interpreter. The variable is read when a kernel
# is defined, so it is set here, before any test imports fastcycle.kernels.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _inductor_cpu_without_simd() -> None:
    """Inductor's C++ (CPU) backend without explicit SIMD, here and in the processes tests start: the
    same graphs, lowering, scheduling and wrapper code, at about 60% of the time per graph on 2 cores,
    as the vectorised kernels are the heavy part to generate and build. test_export_aoti.py builds its
    packages vectorised, as a CPU deployment runs them; the GPU's Triton code is untouched by this."""
    import torch._inductor.config as inductor_config  # after TRITON_INTERPRET: Inductor imports Triton

    os.environ.setdefault("TORCHINDUCTOR_VEC_ISA_OK", "0")
    inductor_config.cpp.vec_isa_ok = {"0": False, "1": True}.get(os.environ["TORCHINDUCTOR_VEC_ISA_OK"])


_inductor_cpu_without_simd()

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def session_env() -> dict[str, str]:
    """This process's environment without pytest-xdist's worker variables, for a `pytest` that a test
    starts: that run is a session of its own (pytest-benchmark turns itself off in an xdist worker)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}


def write_images(folder, n: int, size=(40, 36), seed: int = 0, ext: str = "png") -> list:
    """n random RGB images of (width, height) `size` in `folder`; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        path = folder / f"img_{i:03d}.{ext}"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="session", autouse=True)
def fastcycle_cache(tmp_path_factory):
    """FASTCYCLE_CACHE (the real image sets' Inception features, fastcycle.quality.realsets) in this
    session's temporary folder, here and in the processes tests start: nothing lands in the user's cache
    folder, and a set's features are computed once per session and read back after. The folder is the
    session's, shared by its xdist workers (each under it has a basetemp of its own), whose entries
    are written atomically."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if "PYTEST_XDIST_WORKER" in os.environ else base) / "fastcycle-cache"
    folder.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASTCYCLE_CACHE", str(folder))
        yield


@pytest.fixture
def aot_eager(monkeypatch):
    """`nn.Module.compile` (what --compile calls) with the aot_eager backend: Dynamo and AOTAutograd as
    --compile runs them (fullgraph, the joint graph, its backward) without Inductor's C++ code
    generation, which costs a quarter of a minute per graph on a CPU (tests/test_compile.py tests
    Inductor itself)."""
    compile_ = torch.nn.Module.compile

    def compile_aot_eager(self, *args, **kwargs):
        return compile_(self, *args, **{**kwargs, "backend": "aot_eager"})

    monkeypatch.setattr(torch.nn.Module, "compile", compile_aot_eager)
    yield
    torch._dynamo.reset()  # a fresh process's compile caches, as each `fastcycle train` has


@pytest.fixture
def dataset(tmp_path):
    """A tiny unpaired dataset in the reference layout: 6 A and 5 B images, 2 test images each."""
    root = tmp_path / "data"
    write_images(root / "trainA", 6, seed=1)
    write_images(root / "trainB", 5, seed=2, ext="jpg")
    write_images(root / "testA", 2, seed=3)
    write_images(root / "testB", 2, seed=4)
    return root
