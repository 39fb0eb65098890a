"""`fastcycle serve` against bad input and bad clients: each bad request gets an error naming its problem
and the server keeps answering; 1,000 bad requests leave its memory where it was; a client that
disconnects mid-request wedges nothing; SIGTERM under load ends every request (answered or refused,
none hangs) and the command exits 0. One server for the module; the SIGTERM test, last, stops it."""

import http.client
import io
import json
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.bench_serve import ServeProcess, free_ports, request_inputs
from fastcycle.cli import main
from fastcycle.export.serve import _stat, descendants
from tests.test_serve import _close, _image, infer, tiny_cyclegan

tritonclient_http = pytest.importorskip("tritonclient.http")
pytest.importorskip("pytriton")
InferenceServerException = pytest.importorskip("tritonclient.utils").InferenceServerException

LIMIT = 64 * 64  # --max-pixels: a 64x64 image is the largest taken
EXIT_TIMEOUT = 3  # --exit-timeout: how long the SIGTERM test's clients keep being answered


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_cyclegan(tmp_path_factory.mktemp("serve-faults"))


@pytest.fixture(scope="module")
def server(run, tmp_path_factory):
    flags = ["--checkpoint", str(run), "--device", "cpu", "--direction", "AtoB", "--encoded-instances", "1"]
    flags += ["--max-pixels", str(LIMIT), "--exit-timeout", str(EXIT_TIMEOUT)]
    proc = ServeProcess(flags, tmp_path_factory.mktemp("logs"))
    yield proc
    if proc.proc.poll() is None:  # the SIGTERM test did not run (-k, or a failure before it)
        proc.kill()


@pytest.fixture(scope="module")
def good(server):
    """A request and its answer, asked again after each bad one."""
    image = _image(1, 32, 32)
    return image, infer(server.url, "AtoB", image)


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def _post(url: str, model: str, header: dict, body: bytes) -> tuple[int, str]:
    """A raw KServe v2 binary request: the JSON header, then `body` as the tensor's bytes."""
    head = json.dumps(header).encode()
    conn = http.client.HTTPConnection(url, timeout=30)
    try:
        conn.request(
            "POST",
            f"/v2/models/{model}/infer",
            head + body,
            {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"},
        )
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def _array_header(shape: list[int], nbytes: int) -> dict:
    inputs = [
        {"name": "image", "shape": shape, "datatype": "UINT8", "parameters": {"binary_data_size": nbytes}}
    ]
    return {"inputs": inputs, "outputs": [{"name": "image", "parameters": {"binary_data": True}}]}


def _error(url: str, model: str, image: np.ndarray | bytes, datatype: str = "UINT8") -> str:
    """The error text of one tritonclient request that must fail."""
    with tritonclient_http.InferenceServerClient(url, network_timeout=30) as client:
        if isinstance(image, bytes):
            x = tritonclient_http.InferInput("image", [1], "BYTES")
            x.set_data_from_numpy(np.array([image], dtype=np.object_))
            inputs = [x]
        elif datatype != "UINT8":
            x = tritonclient_http.InferInput("image", [1, *image.shape], datatype)
            x.set_data_from_numpy(image[None])
            inputs = [x]
        else:
            inputs = request_inputs(image, encoded=False)
        with pytest.raises(Exception) as caught:
            client.infer(model, inputs)
    return str(caught.value)


PNG = _png(_image(2, 32, 32))
BAD = {  # kind: (model, what is sent, a phrase its error must hold)
    "wrong dtype": (
        "AtoB",
        np.zeros((32, 32, 3), np.float32),
        "data-type is 'FP32', but model 'AtoB' expects 'UINT8'",
    ),
    "wrong channel count": (
        "AtoB",
        _image(3, 32, 32, c=4),
        "the image has 4 channels; AtoB takes 1 (gray) or 3 (RGB)",
    ),
    "no channel axis": ("AtoB", np.zeros((32, 32), np.uint8), "unexpected shape for input 'image'"),
    "zero size": ("AtoB", np.zeros((0, 32, 3), np.uint8), "zeros in shape"),
    "larger than the limit": (
        "AtoB",
        _image(4, 65, 64),
        "65 = 4160 pixels, more than this server's limit of 4096",
    ),
    "corrupt image bytes": ("AtoB_encoded", b"\x89PNG\r\n" + bytes(200), "not an image file PIL can read"),
    "truncated image bytes": ("AtoB_encoded", PNG[: len(PNG) // 2], "PNG image is truncated or corrupt"),
    "empty image bytes": ("AtoB_encoded", b"", "holds no image bytes"),
    "too large encoded": ("AtoB_encoded", _png(_image(5, 80, 80)), "80x80 = 6400 pixels, more than"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_request_gets_its_error_and_the_next_good_one_its_answer(server, good, kind):
    model, sent, phrase = BAD[kind]
    datatype = "FP32" if kind == "wrong dtype" else "UINT8"
    assert phrase in _error(server.url, model, sent, datatype)
    assert _close(infer(server.url, "AtoB", good[0]), good[1])


def test_a_truncated_body_is_refused_by_size(server, good):
    """The header promises 32x32x3 bytes, the body holds half: Triton refuses it before any model runs."""
    status, text = _post(server.url, "AtoB", _array_header([1, 32, 32, 3], 3072), bytes(1536))
    assert status == 400 and "unexpected" in text.lower(), (status, text)
    assert _close(infer(server.url, "AtoB", good[0]), good[1])


# The memory test's bad requests, 48-75 KiB each: the data type Triton refuses; the channel count, the
# size and the bytes fastcycle refuses (a truncated file's bytes: the test above, decoded the same).
LEAK_PROBES = [
    ("AtoB", np.zeros((64, 64, 3), np.float32)),  # 48 KiB
    ("AtoB", _image(6, 128, 128, c=4)),  # 64 KiB
    ("AtoB", _image(7, 160, 160)),  # 75 KiB, over the limit
    ("AtoB_encoded", b"\x89PNG\r\n" + bytes(64 * 2**10)),  # 64 KiB of no image
    ("AtoB_encoded", _png(_image(8, 160, 160))),  # 75 KiB, over the limit by its header
]
# Measured after a warm-up of 1,000: 0.4-3.5 MiB a 1,000, without a trend (tritonserver's and the stubs'
# allocators, PyTriton's shared-memory pool; 5.6 MiB after a warm-up of only 200). A server that kept
# any one kind's payloads would grow by at least 200 x 48 KiB = 9.4 MiB.
LEAK_BOUND = 8 * 2**20


def test_memory_does_not_grow_across_1000_bad_requests(server):
    """1,000 bad requests (200 of each LEAK_PROBES kind) over one keep-alive connection, after a
    warm-up of 1,000 (pools, the allocators' arenas and PyTriton's shared-memory blocks reach their
    sizes): the resident memory of the server's processes (fastcycle, tritonserver, the stubs) grows by
    less than LEAK_BOUND."""
    with tritonclient_http.InferenceServerClient(server.url, network_timeout=30) as client:

        def bad(n: int) -> None:
            for i in range(n):
                model, sent = LEAK_PROBES[i % len(LEAK_PROBES)]
                if isinstance(sent, bytes):
                    x = tritonclient_http.InferInput("image", [1], "BYTES")
                    x.set_data_from_numpy(np.array([sent], dtype=np.object_))
                else:
                    dtype = "FP32" if sent.dtype == np.float32 else "UINT8"
                    x = tritonclient_http.InferInput("image", [1, *sent.shape], dtype)
                    x.set_data_from_numpy(sent[None])
                with pytest.raises(InferenceServerException):
                    client.infer(model, [x])

        bad(1000)
        before = server.rss_bytes()
        bad(1000)
        after = server.rss_bytes()
    assert after - before < LEAK_BOUND, f"{(after - before) / 2**20:.1f} MiB more after 1,000 bad requests"


def test_a_client_that_disconnects_mid_request_wedges_nothing(server, good):
    """Half a request body then a closed socket; a whole request closed before its answer; then a good
    request, answered within the timeout of its client (a wedged server would make it time out)."""
    head = json.dumps(_array_header([1, 32, 32, 3], 3072)).encode()
    request = (
        f"POST /v2/models/AtoB/infer HTTP/1.1\r\nHost: x\r\nInference-Header-Content-Length: {len(head)}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(head) + 3072}\r\n\r\n"
    ).encode() + head
    for body in (bytes(1000), bytes(3072)):  # half the tensor; all of it, then gone before the answer
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as s:
            s.sendall(request + body)
    assert _close(infer(server.url, "AtoB", good[0]), good[1])
    assert _close(infer(server.url, "AtoB", good[0], encoded=True), good[1])


def test_without_pytriton_the_error_says_what_to_install(run, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pytriton.triton", None)  # what an import of a missing module meets
    assert main(["serve", "--checkpoint", str(run)]) == 2
    assert capsys.readouterr().err == (
        "fastcycle: error: fastcycle serve needs NVIDIA PyTriton: pip install 'fastcycle[serve]' "
        "(Linux, x86-64 or arm64)\n"
    )


def test_errors_before_the_server_starts_are_one_line(run, capsys):
    """Refused before anything starts: the flags, a port taken, --compile of an engine."""
    (taken,) = free_ports(1)
    cases = [
        (["--compile", "--backend", "onnxruntime"], "--compile compiles the torch backend's generator"),
        (["--max-batch", "0"], "--max-batch must be at least 1"),
        (["--exit-timeout", "60"], "--exit-timeout must be between 0 and 25"),
        (["--http-port", str(taken), "--grpc-port", str(taken)], "the three ports must differ"),
        (["--http-port", str(taken)], f"cannot listen on 127.0.0.1:{taken}"),
    ]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        for flags, phrase in cases:
            assert main(["serve", "--checkpoint", str(run), "--address", "127.0.0.1", *flags]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and phrase in err[0], err


def _alive(processes: dict[int, str]) -> list[int]:
    """Those of `processes` (pid -> start time) still running, after at most 5 s for the kernel."""
    deadline = time.monotonic() + 5
    while True:
        left = [p for p, start in processes.items() if (f := _stat(p)) and f[19] == start and f[0] != "Z"]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def test_sigterm_under_load_answers_or_refuses_every_request_and_exits_0(server, good):
    """4 clients each send requests back to back on their own keep-alive connection; SIGTERM. Triton
    refuses new connections at once and keeps answering the open ones for --exit-timeout seconds, then
    exits; a request still running then gets an error. Every client call returns (none hangs), some
    are answered after the signal, the command exits 0 and none of its processes outlives it."""
    outcomes: list[tuple[str, float]] = []
    stop_at: list[float] = []

    def client(k: int) -> None:
        image = _image(200 + k, 32, 32)
        with tritonclient_http.InferenceServerClient(server.url, network_timeout=30) as c:
            while True:
                try:
                    c.infer("AtoB", request_inputs(image, encoded=False))
                    outcomes.append(("ok", time.monotonic()))
                except Exception as e:
                    outcomes.append((str(e), time.monotonic()))
                    return

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    processes = descendants(server.proc.pid)  # tritonserver and its stubs: none may outlive the stop
    stop_at.append(time.monotonic())
    server.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(EXIT_TIMEOUT + 30)
    assert not any(t.is_alive() for t in threads), "a client call hangs after SIGTERM"
    assert server.proc.wait(30) == 0, server.log_tail()
    assert any(o == "ok" and t > stop_at[0] for o, t in outcomes), "nothing in flight was answered"
    assert sum(o != "ok" for o, _ in outcomes) == 4  # each client ends on its one error
    assert len(processes) >= 3 and not _alive(processes), _alive(processes)
    assert not list(Path("/dev/shm").glob(f"pytrtion{server.proc.pid}-*"))  # the stubs' region, removed
    with pytest.raises(ConnectionError):
        socket.create_connection(("127.0.0.1", server.http_port), timeout=5).close()
