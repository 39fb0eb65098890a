"""`fastcycle serve`: a real Triton Inference Server (PyTriton's tritonserver) on loopback serving a tiny
CycleGAN's two generators, answering arrays and encoded images over HTTP and gRPC with the translation
of each request's own image, alone or batched with others, with its health, statistics and metrics
endpoints. One server for the module (it takes seconds to start); its faults: test_serve_faults.py."""

import io
import json
import threading
import urllib.request

import numpy as np
import pytest
from PIL import Image

from benchmarks.bench_serve import ServeProcess, batch_stats
from fastcycle.export.translator import load_translator
from fastcycle.train import train
from tests.conftest import write_images
from tests.test_train import tiny

tritonclient_http = pytest.importorskip("tritonclient.http")
pytest.importorskip("pytriton")

# Batching can change the float order of the generator's sums (another batch size, another convolution
# algorithm), so an 8-bit pixel may round the other way: one level. Distinct random images translate
# far more apart than that (checked in _distinct), so a response given the wrong request cannot pass.
PIXEL_TOL = 1
SIZES = [(32, 32), (40, 36), (33, 47)]  # (H, W): the generator's multiple (4), and two that need padding
DELAY_US = 50_000  # long enough that concurrent requests of one shape meet in Triton's queue


def tiny_cyclegan(root):
    """A tiny CycleGAN (ngf 8) after one training step, in root/run: two generators, AtoB and BtoA."""
    write_images(root / "data" / "trainA", 2, seed=1)
    write_images(root / "data" / "trainB", 2, seed=2)
    train(tiny(data=str(root / "data"), out=str(root / "run"), ngf=8, max_steps=1))
    return root / "run"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_cyclegan(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def server(run, tmp_path_factory):
    flags = ["--checkpoint", str(run), "--device", "cpu", "--max-batch", "8"]
    proc = ServeProcess([*flags, "--max-queue-delay-us", str(DELAY_US)], tmp_path_factory.mktemp("logs"))
    yield proc
    assert proc.stop() == 0, proc.log_tail()


@pytest.fixture(scope="module")
def translators(run):
    """The single-image references: each direction's Translator in this process, one image per call."""
    return {d: load_translator(run, d, "torch", device="cpu", say=lambda _: None) for d in ("AtoB", "BtoA")}


def _image(seed: int, h: int, w: int, c: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def infer(url: str, model: str, image: np.ndarray, encoded: bool = False) -> np.ndarray:
    """One HTTP request; the translated (H, W, C) array (decoded from the PNG for an encoded one)."""
    from benchmarks.bench_serve import request_inputs

    with tritonclient_http.InferenceServerClient(url, network_timeout=60) as client:
        result = client.infer(model + "_encoded" * encoded, request_inputs(image, encoded)).as_numpy("image")
    if encoded:
        out = np.asarray(Image.open(io.BytesIO(result[0])))
        return out if out.ndim == 3 else out[..., None]
    return result[0]


def _close(got: np.ndarray, want: np.ndarray) -> bool:
    return got.shape == want.shape and int(np.abs(got.astype(int) - want.astype(int)).max()) <= PIXEL_TOL


def _distinct(references: list[np.ndarray]) -> None:
    """No two references of one shape within the tolerance: a mixed-up response would be caught."""
    for i, a in enumerate(references):
        for b in references[i + 1 :]:
            assert a.shape != b.shape or not _close(a, b)


def test_ready_line_health_statistics_and_metrics(server):
    for model in ("AtoB", "AtoB_encoded", "BtoA", "BtoA_encoded"):
        assert model in server.ready_line
    assert f"http://127.0.0.1:{server.http_port}" in server.ready_line
    base = f"http://{server.url}"
    for path in (
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/AtoB/ready",
        "/v2/models/BtoA_encoded/ready",
    ):
        assert urllib.request.urlopen(base + path, timeout=10).status == 200, path
    config = json.load(urllib.request.urlopen(base + "/v2/models/AtoB/config", timeout=10))
    assert config["max_batch_size"] == 8 and "dynamic_batching" in config
    assert config["input"][0]["data_type"] == "TYPE_UINT8" and [
        int(d) for d in config["input"][0]["dims"]
    ] == [-1, -1, -1]
    infer(server.url, "AtoB", _image(0, 32, 32))  # so that the counters below have something to count
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read()
    assert b'nv_inference_request_success{model="AtoB"' in metrics
    assert sum(batch_stats(server.url, "AtoB").values()) >= 1


@pytest.mark.parametrize("direction", ["AtoB", "BtoA"])
def test_arrays_and_png_bytes_give_the_single_image_translation(server, translators, direction):
    """Each size, as an array and as PNG bytes, and a gray image (converted as translate converts it)."""
    images = [_image(10 + i, h, w) for i, (h, w) in enumerate(SIZES)] + [_image(20, 36, 40, c=1)]
    for image in images:
        want = translators[direction].translate_arrays([image])[0]
        assert _close(infer(server.url, direction, image), want), image.shape
        assert _close(infer(server.url, direction, image, encoded=True), want), image.shape


def test_a_request_of_several_images_gets_each_ones_translation(server, translators):
    """A client's own batch, (2, H, W, C): two answers, in order."""
    images = np.stack([_image(40, 32, 32), _image(41, 32, 32)])
    x = tritonclient_http.InferInput("image", list(images.shape), "UINT8")
    x.set_data_from_numpy(images)
    with tritonclient_http.InferenceServerClient(server.url) as client:
        got = client.infer("AtoB", [x]).as_numpy("image")
    want = [translators["AtoB"].translate_arrays([a])[0] for a in images]
    _distinct(want)
    assert len(got) == 2 and all(_close(g, w) for g, w in zip(got, want, strict=True))


def test_grpc_answers_like_http(server, translators):
    import tritonclient.grpc as grpcclient

    image = _image(30, 40, 36)
    x = grpcclient.InferInput("image", [1, *image.shape], "UINT8")
    x.set_data_from_numpy(image[None])
    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as client:
        got = client.infer("BtoA", [x]).as_numpy("image")[0]
    assert _close(got, translators["BtoA"].translate_arrays([image])[0])


def test_concurrent_requests_each_get_their_own_translation(server, translators):
    """8 threads, 4 requests each: distinct images, mostly of one shape (so that Triton batches them),
    some of the other sizes, arrays and PNG bytes mixed; every answer is its own image's translation."""
    jobs = [
        (k, j, _image(100 + 8 * k + j, *(SIZES[0] if j % 4 else SIZES[k % 3])))
        for k in range(8)
        for j in range(4)
    ]
    references = [translators["AtoB"].translate_arrays([image])[0] for *_, image in jobs]
    _distinct(references)
    answers: dict[tuple[int, int], np.ndarray] = {}
    start = threading.Barrier(8)
    before = batch_stats(server.url, "AtoB")

    def client(k: int) -> None:
        start.wait()
        for kk, j, image in jobs:
            if kk == k:
                answers[k, j] = infer(server.url, "AtoB", image, encoded=(j == 3))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(answers) == len(jobs)
    for (k, j, _), want in zip(jobs, references, strict=True):
        assert _close(answers[k, j], want), (k, j)
    after = batch_stats(server.url, "AtoB")
    formed = {b: n - before.get(b, 0) for b, n in after.items() if n > before.get(b, 0)}
    # 8 clients released together with same-shape arrays, a 50 ms queue delay: batches of several form.
    assert max(formed) > 1, formed


def test_bench_serve_against_this_server(server, tmp_path):
    """The load test's own code path, tiny: 2 clients x 3 requests, its JSON written."""
    from benchmarks.bench_serve import main

    out = tmp_path / "bench.json"
    assert (
        main(["--url", server.url, "--clients", "2", "--requests", "3", "--size", "32", "--out", str(out)])
        == 0
    )
    figures = json.loads(out.read_text())
    assert figures["ok"] == 6 and figures["errors"] == 0
    assert figures["images_per_s"] > 0 and figures["latency_ms"]["p99"] >= figures["latency_ms"]["p50"] > 0
    assert sum(int(b) * n for b, n in figures["batch_sizes"].items()) == 6  # every timed image, once
