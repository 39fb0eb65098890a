"""`fastcycle serve`: a run's generators behind Triton Inference Server, through NVIDIA PyTriton.

PyTriton starts the tritonserver binary its wheel ships; each Triton model is a Python-backend stub that
hands request batches to this process, where fastcycle.export.serve_models runs them on a Translator
(load_translator: any backend, any image size). Per direction two models: `AtoB` (uint8 arrays,
dynamically batched) and `AtoB_encoded` (PNG/JPEG bytes in, PNG out); a CycleGAN run serves `AtoB` and
`BtoA`, any other generator `AtoB` (or --direction's). Triton's HTTP and gRPC endpoints, its health and
readiness endpoints, its statistics and its Prometheus metrics are Triton's own.

SIGTERM or SIGINT: Triton stops taking connections, finishes the requests it holds (waiting at most
--exit-timeout seconds, which also covers clients' idle keep-alive connections), and the command exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import sysconfig
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastcycle.choices import DIRECTIONS
from fastcycle.errors import UserError
from fastcycle.export.serve_models import INPUT, OUTPUT, DirectionModels, ServeLimits, reporting

# Triton endpoints a client may not reach without the token PyTriton makes at start (and never shows):
# loading, unloading and reconfiguring models, shared-memory regions, tracing and logging settings. The
# statistics stay open: they are read-only, and the load test reads the batch sizes Triton formed there.
RESTRICTED_ENDPOINTS = ["shared-memory", "model-repository", "trace", "logging"]
ALL_INTERFACES = ("0.0.0.0", "::")


@dataclass
class ServeRequest:
    """`fastcycle serve`'s flags (their help: fastcycle.cli)."""

    checkpoint: str  # a run, checkpoint, reference .pth or .safetensors, or an exported .onnx/.plan/.pt2
    backend: str = "auto"  # auto, torch, onnxruntime, tensorrt or aoti
    direction: str | None = None  # serve only this direction (None: all of the run's)
    device: str = "auto"  # cuda, cuda:N, cpu or auto
    amp: bool = False  # bf16 autocast where the device runs it fast (torch)
    compile: bool = False  # torch.compile the torch backend's generators (Inductor, dynamic shapes)
    kernels: str = "auto"  # auto, torch or triton (torch backend)
    max_batch: int = 8  # largest batch Triton's dynamic batcher forms (array requests of one shape)
    max_queue_delay_us: int = 1000  # how long a request may wait in Triton's queue for others to join
    max_pixels: int = 4096 * 4096  # refuse images with more pixels (H x W) than this
    encoded_instances: int = 2  # instances of each *_encoded model: requests decoded/encoded at once
    address: str = "0.0.0.0"  # where the HTTP, gRPC and metrics endpoints listen
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    exit_timeout: int = 20  # seconds a stop waits for requests in flight and open connections
    generator_kw: dict[str, Any] = field(default_factory=dict)  # a reference .pth's architecture

    @property
    def local_host(self) -> str:
        """Where a client on this machine reaches the endpoints."""
        return "localhost" if self.address in ALL_INTERFACES else self.address

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_pixels", "encoded_instances"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.max_queue_delay_us < 0:
            raise UserError(f"--max-queue-delay-us must be >= 0, got {self.max_queue_delay_us}")
        if not 0 <= self.exit_timeout <= 25:
            # PyTriton kills tritonserver 30 s after asking it to stop; past that nothing is waited for.
            raise UserError(f"--exit-timeout must be between 0 and 25 seconds, got {self.exit_timeout}")


def run_serve(req: ServeRequest, say: Callable[[str], None] = print) -> int:
    """Serve until SIGTERM or SIGINT; `say` gets the ready line and the stop line. Returns 0 after a
    stop; UserError for what the user can fix (PyTriton missing, a port taken, a bad checkpoint)."""
    _check_pytriton()
    _check_ports(req)
    stop = threading.Event()
    # Handlers before anything starts: a signal during the start then stops the server once it is up.
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        models = open_models(req)
        if req.compile:
            _compile_now(models)
        triton = start_triton(req, models)
        say(ready_line(req, models))
        _wait(triton, stop)
        started = descendants(os.getpid())
        triton.stop()  # Triton drains (at most --exit-timeout), then the model proxies close
        _end_stuck(started)
        say("fastcycle serve: stopped")
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _check_pytriton() -> None:
    try:
        import pytriton.triton  # noqa: F401
    except ImportError:
        raise UserError(
            "fastcycle serve needs NVIDIA PyTriton: pip install 'fastcycle[serve]' (Linux, x86-64 or arm64)"
        ) from None


def _check_ports(req: ServeRequest) -> None:
    """A taken port, found before Triton starts: PyTriton would wait two minutes for a server that exited."""
    ports = {"--http-port": req.http_port, "--grpc-port": req.grpc_port, "--metrics-port": req.metrics_port}
    if len(set(ports.values())) < len(ports):
        raise UserError(f"the three ports must differ: {', '.join(f'{k} {v}' for k, v in ports.items())}")
    family = socket.AF_INET6 if ":" in req.address else socket.AF_INET
    for flag, port in ports.items():
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Triton binds: TIME_WAIT is free
            try:
                s.bind((req.address, port))
            except OSError as e:
                raise UserError(
                    f"cannot listen on {req.address}:{port} ({e.strerror}); pass another {flag}"
                ) from None


def open_models(req: ServeRequest, say: Callable[[str], None] | None = None) -> list[DirectionModels]:
    """One DirectionModels per served direction: a CycleGAN run's two, any other generator's one (AtoB,
    or --direction's); the checkpoint read once for the torch backend."""
    from fastcycle.export.backends import is_exported, resolve_backend
    from fastcycle.export.translator import load_translator
    from fastcycle.trained import read_generator_file

    backend = resolve_backend(req.backend, req.checkpoint)
    exported = not os.path.isdir(req.checkpoint) and is_exported(req.checkpoint)
    source: Any = req.checkpoint
    directions = [req.direction] if req.direction else ["AtoB"]
    if not exported:
        read = read_generator_file(req.checkpoint, req.direction or "AtoB", req.generator_kw)
        if read.model == "cycle_gan" and not req.direction:
            directions = list(DIRECTIONS)
        if backend == "torch":
            source = read
    limits = ServeLimits(req.max_pixels)
    common = {
        "device": req.device,
        "amp": req.amp,
        "compile": req.compile,
        "kernels": req.kernels,
        "say": say,
    }
    return [
        DirectionModels(
            d,
            load_translator(
                source, d, backend, architecture=req.generator_kw, max_batch=req.max_batch, **common
            ),
            limits,
        )
        for d in directions
    ]


def _compile_now(models: list[DirectionModels]) -> None:
    """Compile each generator before the server is ready rather than in its first client's request: one
    graph for a batch of one image and one for larger batches (torch specializes a dimension of 1), each
    for every image size (dynamic shapes). Not square: torch would trace equal H and W as one size (duck
    shaping) and compile again at the first request that is not square."""
    import numpy as np

    for m in models:
        print(f"fastcycle serve: compiling {m.name} (minutes on a CPU)", file=sys.stderr, flush=True)
        image = np.zeros((64, 48, m.translator.runner.input_nc), np.uint8)
        for batch in (1, 2):
            m.translator.translate_arrays([image] * batch)


def start_triton(req: ServeRequest, models: list[DirectionModels]) -> Any:
    """A started pytriton.triton.Triton serving `models` (two Triton models each)."""
    import numpy as np
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    _loader_path_for_tritonserver()
    # PyTriton logs every failed batch with its traceback; a refused request is the client's to read
    # (fastcycle.export.serve_models.reporting prints the server's own failures).
    logging.getLogger("pytriton.proxy.inference").setLevel(logging.ERROR)
    config = TritonConfig(
        http_address=req.address,
        grpc_address=req.address,
        metrics_address=req.address,
        http_port=req.http_port,
        grpc_port=req.grpc_port,
        metrics_port=req.metrics_port,
        exit_timeout_secs=req.exit_timeout,
    )
    triton = Triton(
        config=config, security_config=TritonSecurityConfig(restricted_endpoints=RESTRICTED_ENDPOINTS)
    )
    array = [Tensor(name=INPUT, dtype=np.uint8, shape=(-1, -1, -1))]  # (H, W, C) after the batch dim
    encoded = [Tensor(name=INPUT, dtype=bytes, shape=(1,))]
    for m in models:
        batcher = DynamicBatcher(max_queue_delay_microseconds=req.max_queue_delay_us)
        triton.bind(
            m.name,
            reporting(m.name, m.infer_arrays),
            inputs=array,
            outputs=[Tensor(name=OUTPUT, dtype=np.uint8, shape=(-1, -1, -1))],
            config=ModelConfig(max_batch_size=req.max_batch, batcher=batcher),
        )
        triton.bind(
            m.encoded_name,
            [reporting(m.encoded_name, m.infer_encoded)] * req.encoded_instances,
            inputs=encoded,
            outputs=[Tensor(name=OUTPUT, dtype=bytes, shape=(1,))],
            config=ModelConfig(batching=False),
        )
    try:
        triton.run()
    except TimeoutError:
        triton.stop()
        raise UserError("Triton Inference Server did not become ready; its log is above") from None
    _no_error_line_per_request(req, triton)
    return triton


def _no_error_line_per_request(req: ServeRequest, triton: Any) -> None:
    """Turn Triton's error log off once the models are up. Triton logs every failed request (the Python
    backend's ~400-byte "Failed to process the request(s)" line), and PyTriton keeps all of tritonserver's
    output in one string it extends line by line: memory and time that grow with every refused request
    (measured: 1,000 refused requests took 13 s, the fourth 1,000 33 s). The start's errors are logged
    before this; the server's own failures are printed by serve_models.reporting."""
    import tritonclient.http
    from pytriton.triton import TRITON_ACCESS_HEADER

    with tritonclient.http.InferenceServerClient(f"{req.local_host}:{req.http_port}") as client:
        client.update_log_settings(
            {"log_error": False}, headers={TRITON_ACCESS_HEADER: triton.get_access_token()}
        )


def _loader_path_for_tritonserver() -> None:
    """LD_LIBRARY_PATH for tritonserver and its Python-backend stubs (they inherit this environment).

    First this interpreter's library directory: the stub links libpython3.X.so by name, and may
    otherwise load another build of the same version (e.g. the distribution's in /lib) under this
    interpreter's standard library, and fail on the first lock it makes. Last, the wheel's own
    libraries (nvidia_pytriton.libs beside the package) when PyTriton looks elsewhere: it takes an
    install that is not in site.getsitepackages() (one reached through a .pth file or PYTHONPATH) for
    a source checkout, and tritonserver then misses its bundled libcudart."""
    from pytriton.utils.distribution import get_libs_path, get_root_module_path

    libdir = sysconfig.get_config_var("LIBDIR")
    wheel_libs = get_root_module_path().parent / "nvidia_pytriton.libs"
    path = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if libdir and libdir not in path:
        path.insert(0, libdir)
    if not get_libs_path().is_dir() and wheel_libs.is_dir() and str(wheel_libs) not in path:
        path.append(str(wheel_libs))
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(path)


def ready_line(req: ServeRequest, models: list[DirectionModels]) -> str:
    host = req.local_host
    names = ", ".join(n for m in models for n in (m.name, m.encoded_name))
    where = " (all interfaces)" if req.address in ALL_INTERFACES else ""
    return (
        f"fastcycle serve: {names} ready ({models[0].translator.note}) at http://{host}:{req.http_port}, "
        f"gRPC {host}:{req.grpc_port}, metrics http://{host}:{req.metrics_port}/metrics{where}; "
        "SIGTERM or Ctrl-C stops"
    )


def _wait(triton: Any, stop: threading.Event) -> None:
    """Until `stop` is set; UserError if Triton dies first. The main thread waits here because the
    signal handlers run on it, and because tritonserver dies with the thread that started it (PyTriton
    sets PR_SET_PDEATHSIG)."""
    while not stop.wait(0.5):
        if not triton.is_alive():
            triton.stop()
            raise UserError("Triton Inference Server exited unexpectedly; its log is above")
    print("fastcycle serve: stopping: finishing the requests in flight", file=sys.stderr, flush=True)


def descendants(pid: int) -> dict[int, str]:
    """pid's descendant processes (tritonserver, its stubs and theirs) -> each one's start time."""
    read = ((int(p.parent.name), _stat(int(p.parent.name))) for p in Path("/proc").glob("[0-9]*/stat"))
    stats = {child: fields for child, fields in read if fields}  # read once; gone ones left out
    children: dict[int, list[int]] = {}
    for child, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(child)
    found: dict[int, str] = {}
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found[child] = stats[child][19]  # starttime: with the pid, one process and not a later one
        todo += children.get(child, [])
    return found


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (state, ppid, ...), or None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _end_stuck(started: dict[int, str]) -> None:
    """SIGKILL what is left of the server's processes after the stop, and remove the shared memory
    they held. tritonserver exits at --exit-timeout even with requests still running, and a
    Python-backend stub running one then waits for its answer forever, re-parented to init (seen after
    SIGTERM under load); killed, it leaves its /dev/shm files: the Python backend's region (named with
    this process's id by PyTriton) and PyTriton's tensor blocks (those it had mapped)."""
    left: list[Path] = []
    for pid, start in started.items():
        fields = _stat(pid)
        if fields and fields[19] == start and fields[0] != "Z":
            left += _shared_memory(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if left:
        left += Path("/dev/shm").glob(f"pytrtion{os.getpid()}-*")
    for path in set(left):
        path.unlink(missing_ok=True)


def _shared_memory(pid: int) -> list[Path]:
    """The /dev/shm files process `pid` has mapped."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return []
    return [
        Path(line.split(None, 5)[5]) for line in maps if "/dev/shm/" in line and len(line.split(None, 5)) == 6
    ]
