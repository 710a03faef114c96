"""Latency of synchronous sampling over real HTTP, beside the bare forward pass measured in the same run.

Through a `dcgan up` it starts itself (SQLite, its bundled Redis, local artifacts, the warm sampling worker;
or --url/--key for a running platform) it uploads default-width generators (z_dim 100, g_channels 64, RGB;
DCGAN init with BatchNorm statistics filled from noise, as bench/sample_latency.py builds them) at 32x32 and
64x64 and measures, per size:

  cold      the first request for a generator (the worker downloads, checks and loads it), one image and a
            16-image grid, each on a generator of its own;
  warm      p50 / p99 over --requests requests, each with other seeds, for one image (`/images/<seed>.png`) and
            a 16-image grid (`/images?seeds=...&nrow=4`), one client over a kept-alive connection;
  bare      in this process, the same weights and seeds right after each request: Sampler.images_for_seeds
            for 1 or 16 seeds, then the PNG encode (image_list or grid_image, png_bytes), on as many torch
            threads as the sampling worker has (DCGAN_SAMPLE_THREADS, default 1);
  overhead  warm p50 - (bare forward + bare encode): what HTTP, the API, the queue and the reply add;
  where     the warm p50 taken apart with the Server-Timing header: HTTP + API (client total - the API's
            wait for the worker), queue (the API's send to the task's start), the worker's forward and encode,
            and the reply (the rest of the wait) -- medians each, so they need not add up exactly.

A last row asks a tiny generator (z_dim 8, g_channels 8: its forward pass takes about a millisecond) for one
image: what is left is the HTTP + API + queue + reply overhead alone.

Goals (issue 10, this 2-core CPU, warm, 32x32): one image p50 <= 30 ms; 16-image grid p50 <= 60 ms and p99
<= 150 ms; overhead <= 2x the bare forward pass. Each is printed met / not met.

With --while-training, a digits training job runs in the platform's job worker throughout (on the same
cores, as it would in a `dcgan up` that is training), and is cancelled at the end.

Run from the repo root (3-5 minutes on 2 cores):
  .venv/bin/python bench/sample_api_latency.py | tee docs/sample-api-latency-cpu.txt
  .venv/bin/python bench/sample_api_latency.py --while-training
  DCGAN_SAMPLE_THREADS=2 .venv/bin/python bench/sample_api_latency.py     # sampler and bare on two threads
  .venv/bin/python bench/sample_api_latency.py --url http://127.0.0.1:8000 --key "$(cat var/api-key)"
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import requests
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable as a script, like the other benchmarks

from core.gan.checkpoint import export_generator  # noqa: E402
from core.gan.config import TrainConfig  # noqa: E402
from core.gan.models import build_generator, init_dcgan_weights  # noqa: E402
from core.gan.sample import Sampler, grid_image, image_list, png_bytes  # noqa: E402
from core.settings import Settings  # noqa: E402

SIZES = (32, 64)
GRID = 16
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
GOALS_SIZE = 32
TINY_LABEL = "tiny G, 1 image"  # z_dim 8, g_channels 8: the overhead with (almost) nothing to render


def cpu_line() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "CPU: unknown (no /proc/cpuinfo)"
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    return f"CPU: {model}, {os.cpu_count()} cores; " + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in FLAGS)


def built_generator(size: int, seed: int) -> tuple[nn.Module, TrainConfig]:
    """A default-width generator with DCGAN init whose BatchNorm statistics come from noise (an untrained G
    with mean 0 / var 1 statistics draws flat images, which encode unlike real ones)."""
    config = TrainConfig(img_size=size, img_channels=3, steps=1)
    torch.manual_seed(seed)
    generator = build_generator(config)
    generator.apply(init_dcgan_weights)
    norms = [module for module in generator.modules() if isinstance(module, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a plain average over the batches below
    generator.train()
    with torch.no_grad():
        for _ in range(4):
            generator(torch.randn(64, config.z_dim, 1, 1))
    return generator.eval(), config


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


class Client:
    """One kept-alive HTTP connection, as a browser or a script holding a session would use."""

    def __init__(self, base: str, key: str):
        parsed = urlparse(base)
        self.base, self.key = base, key
        self.connection = http.client.HTTPConnection(parsed.hostname, parsed.port or 80, timeout=60)

    def get(self, path: str) -> tuple[int, dict[str, str], bytes, float]:
        started = time.perf_counter()
        self.connection.request("GET", path, headers={"Authorization": f"Bearer {self.key}"})
        response = self.connection.getresponse()
        body = response.read()
        return response.status, dict(response.getheaders()), body, (time.perf_counter() - started) * 1000

    def upload(self, path: Path, config: TrainConfig) -> dict:
        with open(path, "rb") as weights:
            form = {"config": json.dumps(config.to_dict()), "name": f"bench-{uuid.uuid4().hex[:8]}"}
            answer = requests.post(f"{self.base}/v1/generators", headers={"Authorization": f"Bearer {self.key}"},
                                   files={"file": (path.name, weights)}, data=form, timeout=120)
        answer.raise_for_status()
        return answer.json()


def server_timing(headers: dict[str, str]) -> dict[str, float]:
    found = {}
    for part in headers.get("Server-Timing", "").split(","):
        name, _, duration = part.strip().partition(";dur=")
        if duration:
            found[name] = float(duration)
    return found


def start_platform(folder: Path) -> tuple[subprocess.Popen, str, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "STORAGE_URL")}
    folder.mkdir(parents=True, exist_ok=True)
    log = open(folder / "up.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "cli", "up", "--port", str(port), "--data-dir", str(folder)],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("dcgan up exited:\n" + (folder / "up.log").read_text()[-3000:])
        if (folder / "api-key").exists() and "dcgan-platform is up" in (folder / "up.log").read_text():
            return process, base, (folder / "api-key").read_text().strip()
        time.sleep(0.5)
    process.terminate()
    raise SystemExit("dcgan up did not come up within 120 s")


def start_training(base: str, key: str) -> str:
    """A long digits training job, running (not queued) before this returns; its id."""
    headers = {"Authorization": f"Bearer {key}"}
    job = requests.post(f"{base}/v1/jobs/train", headers=headers, timeout=30, json={
        "dataset": "builtin:digits", "config": {"img_size": 32, "img_channels": 1, "steps": 1_000_000}}).json()
    deadline = time.monotonic() + 120
    while not requests.get(f"{base}/v1/jobs/{job['id']}", headers=headers, timeout=30).json()["progress"].get("step"):
        if time.monotonic() > deadline:
            raise SystemExit("the training job did not start stepping within 120 s")
        time.sleep(0.5)
    return job["id"]


def stop_training(base: str, key: str, job_id: str) -> int:
    """Cancel the training job; the steps it made meanwhile (the proof that it was running)."""
    headers = {"Authorization": f"Bearer {key}"}
    step = requests.get(f"{base}/v1/jobs/{job_id}", headers=headers, timeout=30).json()["progress"]["step"]
    requests.post(f"{base}/v1/jobs/{job_id}/cancel", headers=headers, timeout=30)
    return step


def wait_for_sampler(client: Client, ref: str, seconds: float = 120) -> None:
    """Until the sampling worker answers (it imports torch and warms up after `dcgan up` prints its banner)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, _, _, _ = client.get(f"/v1/generators/{ref}/images/999999.png")
        if status == 200:
            return
        if status != 503:
            raise SystemExit(f"sampling answered {status} while waiting for the worker")
        time.sleep(0.5)
    raise SystemExit(f"no sampling worker within {seconds} s")


PATHS = {"image": lambda ref, i: f"/v1/generators/{ref}/images/{i}.png",
         "grid": lambda ref, i: f"/v1/generators/{ref}/images?seeds={i * GRID}-{i * GRID + GRID - 1}&nrow=4"}


def measure(client: Client, folder: Path, label: str, kind: str, generator: nn.Module, config: TrainConfig,
            requests_count: int) -> dict[str, float]:
    """One row: a generator of its own (so its first request is cold), then warm requests, each followed by the
    bare forward and encode of the same seeds here -- interleaved, so both see the same machine (this one is
    shared; a busy moment slows both sides of a pair alike)."""
    path = folder / f"{label.replace(' ', '-')}.safetensors"
    export_generator(path, generator, config)
    ref = client.upload(path, config)["id"]
    status, headers, _, cold = client.get(PATHS[kind](ref, 0))
    assert status == 200 and headers.get("X-Sampler-Cache") == "miss", (status, headers)
    sampler = Sampler.from_state(config, path)
    seeds_of = (lambda i: [i]) if kind == "image" else (lambda i: list(range(i * GRID, (i + 1) * GRID)))
    encode = (lambda images: png_bytes(image_list(images)[0])) if kind == "image" else \
        (lambda images: png_bytes(grid_image(images, nrow=4)))
    encode(sampler.images_for_seeds(seeds_of(0)))
    samples: dict[str, list[float]] = {name: [] for name in ("total", "bare_forward", "bare_encode", "http_api",
                                                              "queue", "forward", "encode", "reply")}
    for i in range(1, requests_count + 1):
        status, headers, _, total = client.get(PATHS[kind](ref, i))
        assert status == 200, status
        timing = server_timing(headers)
        started = time.perf_counter()
        images = sampler.images_for_seeds(seeds_of(i))
        encoded = time.perf_counter()
        encode(images)
        done = time.perf_counter()
        for name, value in (("total", total), ("bare_forward", (encoded - started) * 1000),
                            ("bare_encode", (done - encoded) * 1000), ("http_api", total - timing["wait"]),
                            ("reply", timing["wait"] - timing["queue"] - timing["worker"]),
                            *((name, timing[name]) for name in ("queue", "forward", "encode"))):
            samples[name].append(value)
    row = {name: statistics.median(values) for name, values in samples.items()}
    row.update(cold=cold, p50=row.pop("total"), p99=percentile(samples["total"], 0.99))
    row["overhead"] = row["p50"] - row["bare_forward"] - row["bare_encode"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running platform (default: start a `dcgan up` of this checkout)")
    parser.add_argument("--key", help="an API key for --url")
    parser.add_argument("--requests", type=int, default=200, help="warm requests per row (default 200)")
    parser.add_argument("--while-training", action="store_true",
                        help="measure while a training job runs on the platform (cancelled at the end)")
    parser.add_argument("--threads", type=int, default=Settings.from_env().sample_threads,
                        help="torch threads for the bare forward pass (default: the sampler's, DCGAN_SAMPLE_THREADS)")
    args = parser.parse_args()
    if bool(args.url) != bool(args.key):
        parser.error("--url and --key go together")
    args.load_before = os.getloadavg()[0]  # other work on this machine shows in every number; the report says it
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="dcgan-sample-bench-") as tmp:
        folder = Path(tmp)
        process = None
        if args.url:
            base, key = args.url.rstrip("/"), args.key
        else:
            process, base, key = start_platform(folder / "platform")
        try:
            client = Client(base, key)
            tiny = TrainConfig(img_size=32, img_channels=1, z_dim=8, g_channels=8, steps=1)
            export_generator(folder / "probe.safetensors", build_generator(tiny), tiny)
            wait_for_sampler(client, client.upload(folder / "probe.safetensors", tiny)["id"])
            training = start_training(base, key) if args.while_training else None
            results = {}
            for size in SIZES:
                for kind, seed in (("image", size), ("grid", size + 1)):
                    label = f"{size}x{size} {'1 image' if kind == 'image' else f'{GRID} grid'}"
                    results[label] = measure(client, folder, label, kind, *built_generator(size, seed), args.requests)
            results[TINY_LABEL] = measure(client, folder, TINY_LABEL, "image", build_generator(tiny), tiny,
                                          args.requests)
            if training is not None:
                args.training_steps = stop_training(base, key, training)
        finally:
            if process is not None:
                process.send_signal(2)
                process.wait(timeout=90)
    report(results, args, base)


def report(results: dict[str, dict[str, float]], args: argparse.Namespace, base: str) -> None:
    print(f"{datetime.datetime.now().isoformat(timespec='minutes')}; {cpu_line()}; load average before / after: "
          f"{args.load_before:.2f} / {os.getloadavg()[0]:.2f}")
    print(f"torch {torch.__version__}, torch threads (sampler and bare) {torch.get_num_threads()}; platform: "
          f"{'dcgan up of this checkout' if not args.url else base}; {args.requests} warm requests per row; "
          f"generators RGB z_dim 100 g_channels 64, DCGAN init")
    if args.while_training:
        print(f"while a digits 32x32 training job ran in the job worker on the same cores "
              f"({getattr(args, 'training_steps', '?')} steps meanwhile)")
    print("\nall in ms            cold  warm p50  warm p99 | bare fwd  bare png | overhead p50")
    for label, row in results.items():
        print(f"{label:19} {row['cold']:6.1f}  {row['p50']:8.1f}  {row['p99']:8.1f} | {row['bare_forward']:8.1f}  "
              f"{row['bare_encode']:8.1f} | {row['overhead']:12.1f}")
    print("\nwhere warm p50 goes, ms  HTTP+API  queue  forward  encode  reply   (Server-Timing, medians)")
    for label, row in results.items():
        print(f"{label:24} {row['http_api']:8.1f}  {row['queue']:5.1f}  {row['forward']:7.1f}  {row['encode']:6.1f}  "
              f"{row['reply']:5.1f}")
    image, grid = results[f"{GOALS_SIZE}x{GOALS_SIZE} 1 image"], results[f"{GOALS_SIZE}x{GOALS_SIZE} {GRID} grid"]
    goals = [("one image p50 <= 30 ms", image["p50"], 30.0),
             ("16-image grid p50 <= 60 ms", grid["p50"], 60.0),
             ("16-image grid p99 <= 150 ms", grid["p99"], 150.0),
             ("one image: overhead <= 2x bare forward", image["overhead"], 2 * image["bare_forward"]),
             ("16-image grid: overhead <= 2x bare forward", grid["overhead"], 2 * grid["bare_forward"])]
    print(f"\ngoals, warm, {GOALS_SIZE}x{GOALS_SIZE}:")
    for name, value, limit in goals:
        print(f"  {name:44} {value:7.1f} ms (limit {limit:.1f})  {'met' if value <= limit else 'NOT MET'}")


if __name__ == "__main__":
    main()
