"""`fastcycle serve` under load: K concurrent clients x N requests each, over loopback HTTP.

    python -m benchmarks.bench_serve                       # resnet_9blocks ngf 64, 256x256, 4 clients x 8
    python -m benchmarks.bench_serve --device cuda --clients 16 --requests 64 --size 256
    python -m benchmarks.bench_serve --checkpoint runs/x   # a trained run instead of random weights
    python -m benchmarks.bench_serve --url 127.0.0.1:8000  # a server already running

Without --checkpoint or --url it starts `fastcycle serve` on a generator with random weights (the
reference's init, seed 0; speed does not depend on what the weights learned), saved as .safetensors in
a temporary folder, on free loopback ports. Each client thread has its own HTTP connection and sends
its own distinct random images (uint8 arrays to the `AtoB` model, or PNG bytes to `AtoB_encoded` with
--encoded), one request at a time, after one untimed warm-up request per client. Printed and written
(--out, JSON): throughput (images/s over the timed wall time), p50 and p99 latency of the timed
requests, and the batch sizes Triton formed during them (its statistics API: the model's batch_stats,
after minus before, as {batch size: executions}).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

READY = "ready"  # the word of `fastcycle serve`'s ready line
START_TIMEOUT_S = 180  # torch import, the checkpoint, tritonserver and one Python stub per model instance
COMPILE_TIMEOUT_S = 1200  # --compile: Inductor builds two graphs per generator before the ready line


def free_ports(n: int) -> list[int]:
    """n loopback ports free now: bound together to port 0, so the kernel gives n different ones."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class ServeProcess:
    """`python -m fastcycle serve` on loopback with free ports, its stdout and stderr in files in `logs`
    (a pipe nobody reads would block the server once full)."""

    def __init__(self, args: list[str], logs: Path, env: dict[str, str] | None = None):
        self.args = args
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        ports = [
            "--http-port",
            self.http_port,
            "--grpc-port",
            self.grpc_port,
            "--metrics-port",
            self.metrics_port,
        ]
        cmd = [sys.executable, "-m", "fastcycle", "serve", "--address", "127.0.0.1", *map(str, ports), *args]
        logs.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = logs / "serve.out", logs / "serve.err"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        self.ready_line = self._wait_ready()

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def _wait_ready(self) -> str:
        deadline = time.monotonic() + (COMPILE_TIMEOUT_S if "--compile" in self.args else START_TIMEOUT_S)
        while time.monotonic() < deadline:
            for line in self.out_path.read_text(errors="replace").splitlines():
                if line.startswith("fastcycle serve:") and READY in line:
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"fastcycle serve did not start (exit {self.proc.returncode}):\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        return (
            self.out_path.read_text(errors="replace")[-chars:]
            + self.err_path.read_text(errors="replace")[-chars:]
        )

    def pids(self) -> list[int]:
        """The server's process and all its descendants (tritonserver, one Python stub per instance),
        each parent before its children."""
        from fastcycle.export.serve import descendants

        return [self.proc.pid, *descendants(self.proc.pid)]

    def rss_bytes(self) -> int:
        """VmRSS summed over pids()."""
        total = 0
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            total += next(
                (int(x.split()[1]) * 1024 for x in status.splitlines() if x.startswith("VmRSS:")), 0
            )
        return total

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then its exit status (SIGKILL after `timeout` seconds: a hang is then a failure)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        for pid in reversed(self.pids()):  # tritonserver and its stubs too, should the server hang
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()


def batch_stats(url: str, model: str) -> dict[int, int]:
    """{batch size: executions} of `model` so far, from Triton's statistics API."""
    import tritonclient.http as httpclient

    with httpclient.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics(model)["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}


def request_inputs(image: np.ndarray, encoded: bool) -> list:
    """The tritonclient HTTP inputs of one request: a (1, H, W, C) uint8 array, or PNG bytes."""
    import tritonclient.http as httpclient

    if encoded:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(buf, "PNG")
        x = httpclient.InferInput("image", [1], "BYTES")
        x.set_data_from_numpy(np.array([buf.getvalue()], dtype=np.object_))
    else:
        x = httpclient.InferInput("image", [1, *image.shape], "UINT8")
        x.set_data_from_numpy(image[None])
    return [x]


def load(url: str, clients: int, requests: int, size: int, encoded: bool = False) -> dict:
    """K client threads x N timed requests each (after one warm-up each); the figures as a dict."""
    import tritonclient.http as httpclient

    model = "AtoB_encoded" if encoded else "AtoB"
    latencies: list[float] = []
    errors: list[str] = []
    lock, start = threading.Lock(), threading.Barrier(clients + 1)

    def client(k: int) -> None:
        rng = np.random.default_rng(k)
        with httpclient.InferenceServerClient(url, network_timeout=600) as c:
            c.infer(model, request_inputs(rng.integers(0, 256, (size, size, 3), np.uint8), encoded))
            start.wait()
            for _ in range(requests):
                inputs = request_inputs(rng.integers(0, 256, (size, size, 3), np.uint8), encoded)
                t0 = time.perf_counter()
                try:
                    c.infer(model, inputs)
                except Exception as e:  # counted and shown: a load test reports failures, it does not stop
                    with lock:
                        errors.append(str(e).splitlines()[0])
                    continue
                with lock:
                    latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    start.wait()  # every client warmed up: the clock starts now
    before, t0 = batch_stats(url, "AtoB"), time.perf_counter()
    for t in threads:
        t.join()
    wall, after = time.perf_counter() - t0, batch_stats(url, "AtoB")
    formed = {b: after.get(b, 0) - before.get(b, 0) for b in sorted(after)}
    ms = np.array(latencies) * 1000
    return {
        "model": model,
        "clients": clients,
        "requests_per_client": requests,
        "size": size,
        "ok": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "wall_s": round(wall, 3),
        "images_per_s": round(len(latencies) / wall, 2),
        "latency_ms": {q: round(float(np.percentile(ms, p)), 1) for q, p in (("p50", 50), ("p99", 99))}
        if len(ms)
        else None,
        "batch_sizes": {b: n for b, n in formed.items() if n},  # arrays only: *_encoded is not batched
    }


def random_generator(folder: Path, netG: str, ngf: int) -> Path:
    """A generator with the reference's random init (seed 0) as a .safetensors file."""
    import torch

    from fastcycle.models import build_generator
    from fastcycle.trained import architecture, save_generator

    torch.manual_seed(0)
    net = build_generator(netG, ngf=ngf)
    return save_generator(
        net, folder / f"{netG}_ngf{ngf}.safetensors", architecture({"netG": netG, "ngf": ngf}), "AtoB"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser("python -m benchmarks.bench_serve", description=__doc__.splitlines()[0])
    p.add_argument("--url", help="an already running server's HTTP host:port (else one is started)")
    p.add_argument("--checkpoint", help="serve this run or file (default: a random-weight generator)")
    p.add_argument("--netG", default="resnet_9blocks")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--size", type=int, default=256, help="image side (square, random pixels)")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--requests", type=int, default=8, help="timed requests per client")
    p.add_argument("--encoded", action="store_true", help="PNG bytes to AtoB_encoded instead of arrays")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action="store_true", help="serve with --amp (bf16 autocast)")
    p.add_argument("--compile", action="store_true", help="serve with --compile (Inductor, before ready)")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--max-queue-delay-us", type=int, default=1000)
    p.add_argument("--out", default="bench_serve.json", help="JSON file to write")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        server = None
        if not args.url:
            checkpoint = args.checkpoint or str(random_generator(Path(tmp), args.netG, args.ngf))
            flags = ["--checkpoint", checkpoint, "--device", args.device, "--direction", "AtoB"]
            flags += ["--amp"] * args.amp + ["--compile"] * args.compile
            flags += [
                "--max-batch",
                str(args.max_batch),
                "--max-queue-delay-us",
                str(args.max_queue_delay_us),
            ]
            server = ServeProcess(flags, Path(tmp) / "logs")
            print(server.ready_line)
        try:
            figures = load(args.url or server.url, args.clients, args.requests, args.size, args.encoded)
        finally:
            status = server.stop() if server else None
    figures |= {"server": "started" if server else args.url, "server_exit_status": status}
    figures |= {"checkpoint": args.checkpoint or f"random {args.netG} ngf {args.ngf}", "device": args.device}
    figures |= {"amp": args.amp, "compile": args.compile}
    from fastcycle.atomic import write_atomic

    write_atomic(args.out, lambda tmp: Path(tmp).write_text(json.dumps(figures, indent=1) + "\n"))
    print(json.dumps(figures))
    return 1 if figures["errors"] or status not in (None, 0) else 0


if __name__ == "__main__":
    raise SystemExit(main())
