"""Load on ``pixelseg serve``: batch size 1 against micro-batching, in one run.

The service runs in its own process on 127.0.0.1 (``pixelseg serve --model model.onnx``,
onnxruntime with ``--threads`` intra-op threads) with the CamVid U-Net (ResNet-18 encoder,
``configs/camvid_unet.yaml``'s model) exported to ONNX: a trained checkpoint when
``--checkpoint`` names one, else the same network freshly initialised (speed does not
depend on the weights; nothing downloads). A load generator in this process keeps
``--concurrency`` requests in flight from as many client threads (one ``httpx.Client``
each), every request a 360x480 PNG drawn from a small pool encoded beforehand, until
``--requests`` are answered or ``--max-seconds`` pass. Modes alternate over ``--rounds``
(batch 1, micro-batching, batch 1, ...), each round on a freshly started service after one
warm-up request, so that machine load hits both alike.

Beside the service, the model alone: images per second of onnxruntime ``session.run`` on
batches of 1 and of ``--batch`` images, alternating, in this process with the service's
threads. That ratio is the most micro-batching can gain on this machine: on a CPU a
forward pass of B images costs about B single passes, so batching can only save the
per-call overhead, unlike a GPU, where one image leaves most of the device idle.

Reported per mode: throughput (answered requests per second of the round), p50/p95/p99
latency as the client sees it, errors (any non-200 answer or transport failure), and the
batch sizes the service ran (from its ``/metrics``). Both processes share the same cores:
on 2 cores the client threads and the service's request handling compete with the forward
passes, which is part of what the figure measures.

Run: ``.venv/bin/python benchmarks/serve_load.py --json runs/serve_load.json``
(needs ../shared/data/camvid for the CamVid class list and colours; ``--help`` for options).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "camvid_unet.yaml"
SIZE = (360, 480)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def camvid_checkpoint(path: Path, data_root: Path) -> Path:
    """A freshly initialised CamVid U-Net checkpoint with CamVid's classes and colours."""
    import torch

    from pixelseg.build import build_datasets, build_model, checkpoint_meta
    from pixelseg.checkpoints import save_checkpoint
    from pixelseg.config import load_config

    config = load_config(CONFIG, [f"data.root={data_root}"])
    bundle = build_datasets(config)
    torch.manual_seed(0)
    model = build_model(config, bundle)
    return save_checkpoint({"model": model.state_dict(), **checkpoint_meta(config, bundle)}, path)


def export_onnx(checkpoint: Path, out: Path) -> Path:
    from pixelseg.cli import main as cli

    if cli(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--tolerance", "0.05"]):
        sys.exit(f"export of {checkpoint} failed")
    return out


def png_pool(count: int, seed: int = 0) -> list[bytes]:
    """``count`` 360x480 RGB PNGs of smooth random scenes (PNG of pure noise is
    unrealistically large and slow to decode)."""
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(count):
        coarse = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize(SIZE[::-1], Image.BILINEAR)
        noisy = np.asarray(image, dtype=np.int16) + rng.integers(-8, 9, (*SIZE, 3))
        buffer = io.BytesIO()
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(buffer, format="PNG")
        pool.append(buffer.getvalue())
    return pool


class Service:
    """``pixelseg serve`` in a subprocess, up once ``/healthz`` answers."""

    def __init__(self, model: Path, batch: int, wait_ms: float, threads: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            str(Path(sys.executable).with_name("pixelseg")),
            "serve", "--model", str(model), "--port", str(self.port),
            "--max-batch-size", str(batch), "--max-wait-ms", str(wait_ms),
            "--threads", str(threads), "--timeout-s", "120",
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait_ready(self, seconds: float = 120.0) -> None:
        import httpx

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"the service exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        sys.exit(f"the service did not answer /healthz within {seconds:.0f} s")

    def batch_sizes(self) -> dict[str, float]:
        """The service's batch-size histogram: count and sum of forward-pass sizes."""
        import httpx

        text = httpx.get(f"{self.url}/metrics", timeout=10.0).text
        found = {}
        for line in text.splitlines():
            for key in ("count", "sum"):
                if line.startswith(f"pixelseg_batch_size_{key} "):
                    found[key] = float(line.split()[-1])
        return found

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def load(url: str, pool: list[bytes], requests: int, concurrency: int, max_s: float) -> dict:
    """Keep ``concurrency`` requests in flight until ``requests`` are answered or
    ``max_s`` pass; latencies in seconds, errors counted by kind."""
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    issued = iter(range(requests))
    deadline = time.monotonic() + max_s

    def client(worker: int) -> None:
        with httpx.Client(base_url=url, timeout=120.0) as http:
            while time.monotonic() < deadline:
                with lock:
                    index = next(issued, None)
                if index is None:
                    return
                body = pool[(index + worker) % len(pool)]
                start = time.perf_counter()
                try:
                    answer = http.post("/v1/segment", files={"image": ("x.png", body, "image/png")})
                    kind = None if answer.status_code == 200 else f"http_{answer.status_code}"
                except httpx.HTTPError as error:
                    kind = type(error).__name__
                elapsed = time.perf_counter() - start
                with lock:
                    if kind is None:
                        latencies.append(elapsed)
                    else:
                        errors[kind] = errors.get(kind, 0) + 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {"latencies": latencies, "errors": errors, "wall_s": wall}


def model_only(model: Path, batch: int, threads: int, repeats: int = 5) -> dict[str, float]:
    """Images per second of the bare onnxruntime session at batch 1 and at ``batch``
    (medians of ``repeats`` alternating timings, after one warm-up each)."""
    from pixelseg.export.runtime import onnx_session

    session = onnx_session(model, threads, spinning=False)
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(0)
    inputs = {b: rng.standard_normal((b, 3, *SIZE)).astype(np.float32) for b in (1, batch)}
    times: dict[int, list[float]] = {1: [], batch: []}
    for array in inputs.values():
        session.run(None, {name: array})
    for _ in range(repeats):
        for b, array in inputs.items():
            start = time.perf_counter()
            session.run(None, {name: array})
            times[b].append(time.perf_counter() - start)
    return {f"batch_{b}": b / statistics.median(t) for b, t in times.items()}


def run_round(model: Path, batch: int, args: argparse.Namespace, pool: list[bytes]) -> dict:
    import httpx

    service = Service(model, batch, args.max_wait_ms, args.threads)
    try:
        service.wait_ready()
        httpx.post(f"{service.url}/v1/segment", files={"image": ("w.png", pool[0])}, timeout=120)
        before = service.batch_sizes()
        result = load(service.url, pool, args.requests, args.concurrency, args.max_seconds)
        after = service.batch_sizes()
    finally:
        service.stop()
    passes = after.get("count", 0) - before.get("count", 0)
    images = after.get("sum", 0) - before.get("sum", 0)
    latencies = sorted(result["latencies"])
    return {
        "max_batch_size": batch,
        "answered": len(latencies),
        "errors": result["errors"],
        "wall_s": result["wall_s"],
        "throughput": len(latencies) / result["wall_s"],
        "p50_ms": 1e3 * float(np.percentile(latencies, 50)) if latencies else None,
        "p95_ms": 1e3 * float(np.percentile(latencies, 95)) if latencies else None,
        "p99_ms": 1e3 * float(np.percentile(latencies, 99)) if latencies else None,
        "mean_batch": images / passes if passes else None,
        "forward_passes": passes,
    }


def summarise(rounds: list[dict], batch: int) -> dict[str, Any]:
    mine = [r for r in rounds if r["max_batch_size"] == batch]
    return {
        "max_batch_size": batch,
        "rounds": len(mine),
        "throughput": statistics.median(r["throughput"] for r in mine),
        "p50_ms": statistics.median(r["p50_ms"] for r in mine if r["p50_ms"] is not None),
        "p95_ms": statistics.median(r["p95_ms"] for r in mine if r["p95_ms"] is not None),
        "p99_ms": statistics.median(r["p99_ms"] for r in mine if r["p99_ms"] is not None),
        "errors": sum(sum(r["errors"].values()) for r in mine),
        "answered": sum(r["answered"] for r in mine),
        "mean_batch": statistics.median(r["mean_batch"] or 0.0 for r in mine),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="a trained CamVid U-Net checkpoint")
    parser.add_argument("--model", type=Path, help="an exported .onnx to serve as it is")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "camvid")
    parser.add_argument("--requests", type=int, default=500, help="per round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=600.0, help="per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per mode, alternating")
    parser.add_argument("--batch", type=int, default=8, help="micro-batching's max batch size")
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2, help="the service's intra-op threads")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            checkpoint = args.checkpoint
            if checkpoint is None:
                if not args.data.is_dir():
                    sys.exit(f"CamVid not found at {args.data}: pass --data, or --model")
                checkpoint = camvid_checkpoint(Path(tmp) / "camvid_unet.pt", args.data)
            model = export_onnx(checkpoint, Path(tmp) / "camvid_unet.onnx")
        pool = png_pool(16)
        ceiling = model_only(model, args.batch, args.threads)
        rounds = []
        for index in range(args.rounds):
            for batch in (1, args.batch):
                rounds.append(run_round(model, batch, args, pool))
                row = rounds[-1]
                print(
                    f"round {index + 1} batch<={batch}: {row['throughput']:.2f} req/s, "
                    f"p50 {row['p50_ms']:.0f} ms, errors {row['errors']}, "
                    f"mean batch {row['mean_batch']}",
                    file=sys.stderr,
                    flush=True,
                )
    single, micro = summarise(rounds, 1), summarise(rounds, args.batch)
    print(
        f"{os.cpu_count()} CPUs; service: onnxruntime, {args.threads} intra-op threads, "
        f"max wait {args.max_wait_ms} ms; load: {args.concurrency} client threads, "
        f"{args.requests} requests of {SIZE[0]}x{SIZE[1]} PNG per round, medians of "
        f"{args.rounds} alternating rounds"
    )
    print(
        f"{'mode':<16}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'mean batch':>12}{'errors':>8}"
    )
    for name, row in (("batch 1", single), (f"micro <= {args.batch}", micro)):
        print(
            f"{name:<16}{row['throughput']:>8.2f}{row['p50_ms']:>9.0f}{row['p95_ms']:>9.0f}"
            f"{row['p99_ms']:>9.0f}{row['mean_batch']:>12.2f}{row['errors']:>8d}"
        )
    ratio = micro["throughput"] / single["throughput"]
    print(f"micro-batching / batch 1 throughput: {ratio:.2f}x (target >= 1.3x)")
    best = ceiling[f"batch_{args.batch}"] / ceiling["batch_1"]
    print(
        f"model alone (onnxruntime session.run): {ceiling['batch_1']:.2f} images/s at batch 1, "
        f"{ceiling[f'batch_{args.batch}']:.2f} at batch {args.batch}: {best:.2f}x is the most "
        "batching can gain here"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        summary = {"single": single, "micro": micro, "ratio": ratio, "model_only": ceiling}
        summary["rounds"] = rounds
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"cpus": os.cpu_count()}, **summary}, indent=1, default=str
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
