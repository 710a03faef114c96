"""The cost model (core.gan.cost) against measured peaks: estimate vs what real training steps use.

Each row trains `--steps` steps (default 2: the second is the steady state, with the optimisers' moments and
last step's gradients already allocated) of core.gan.train.Trainer in a fresh subprocess and reports
  rss        the process's peak RSS (VmHWM, reset after torch and the trainer's modules are imported)
             minus its RSS at that point: what the job adds to a worker process on the CPU;
  cuda       torch.cuda.max_memory_allocated over the same steps, when CUDA is present (run with --device cuda);
against estimate_train's memory_bytes for the precision the trainer resolved. tests/core/gan/test_cost.py
holds a few of these rows at 0.85-1.35x.

Run from the repo root:
  .venv/bin/python bench/cost_model.py                    # CPU, the whole table: ~3 minutes on 2 cores
  .venv/bin/python bench/cost_model.py --device cuda
  .venv/bin/python bench/cost_model.py --rows 0,3 --steps 3
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable as a script, like bench/quality.py

from bench.machine import cpu_flags  # noqa: E402
from core.gan.config import TrainConfig  # noqa: E402
from core.gan.cost import estimate_train, human_bytes  # noqa: E402

# Configs of different shapes: activation-bound (big batches), weight-bound (wide nets), 128x128, grayscale,
# spectral norm with minibatch-std, hinge without EMA. Each takes seconds to a minute on 2 cores.
TABLE = [
    {"batch_size": 256},
    {"batch_size": 64, "g_channels": 256, "d_channels": 256},
    {"img_size": 128, "g_channels": 32, "d_channels": 32, "batch_size": 128},
    {"batch_size": 256, "spectral_norm": True, "minibatch_std": True},
    {"img_size": 32, "z_dim": 512, "g_channels": 128, "d_channels": 128, "batch_size": 512},
    {"img_channels": 1, "g_channels": 32, "d_channels": 32, "batch_size": 512},
    {"g_channels": 32, "d_channels": 32, "batch_size": 1024, "diffaugment": ""},
    {"g_channels": 128, "d_channels": 64, "batch_size": 128, "loss": "hinge", "ema": 0},
]
PRECISIONS = ("fp32", "bf16")


def measure_train(overrides: dict, *, device: str = "cpu", steps: int = 2, num_images: int | None = None,
                  threads: int | None = None) -> dict:
    """Train `steps` steps of the config in a fresh process; its peaks (bytes) and resolved precision."""
    request = {"config": {"steps": steps, **overrides}, "device": device, "steps": steps,
               "num_images": num_images, "threads": threads}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(request)],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {overrides} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _status_bytes(name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {name} in /proc/self/status")


def _child(request: dict) -> None:
    import tempfile

    import torch

    from core.gan.data import ImageSet
    from core.gan.train import Trainer

    if request.get("threads"):
        torch.set_num_threads(request["threads"])
    config = TrainConfig.from_dict(request["config"])
    count = request.get("num_images") or config.batch_size
    device = torch.device(request["device"])
    # The peak from here on: "5" resets VmHWM to the current RSS (Linux's clear_refs).
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    baseline = _status_bytes("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        cuda_baseline = torch.cuda.memory_allocated(device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, config.img_channels, config.img_size, config.img_size),
                           dtype=torch.uint8, generator=generator)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, ImageSet("fake", images, "cost-model"), Path(tmp), device)
        for _ in range(request["steps"]):
            trainer.train_step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    result = {"rss_peak_bytes": _status_bytes("VmHWM") - baseline, "precision": trainer.precision,
              "num_images": count}
    if device.type == "cuda":
        result["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(device) - cuda_baseline
    print(json.dumps(result))




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rows", help="comma-separated row numbers of TABLE (default: all)")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(json.loads(args.child))
        return
    rows = [int(r) for r in args.rows.split(",")] if args.rows else range(len(TABLE))
    print(f"# core.gan.cost vs measured peaks, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"# device {args.device}, {args.steps} steps per row, {platform.processor() or platform.machine()}, "
          f"CPU flags: {cpu_flags()}")
    print("# measured = peak RSS over the RSS after imports (cpu) or max_memory_allocated (cuda); "
          "ratio = estimate / measured")
    print(f"{'row':>3} {'precision':>9} {'estimate':>10} {'measured':>10} {'ratio':>6}  config")
    for row in rows:
        for precision in args.precisions.split(","):
            overrides = {**TABLE[row], "precision": precision}
            measured = measure_train(overrides, device=args.device, steps=args.steps)
            peak = measured["cuda_peak_bytes"] if args.device.startswith("cuda") else measured["rss_peak_bytes"]
            config = TrainConfig.from_dict({"steps": args.steps, **overrides})
            estimate = estimate_train(config, num_images=measured["num_images"], precision=measured["precision"])
            print(f"{row:>3} {measured['precision']:>9} {human_bytes(estimate.memory_bytes):>10} "
                  f"{human_bytes(peak):>10} {estimate.memory_bytes / peak:>6.2f}  {json.dumps(TABLE[row])}",
                  flush=True)


if __name__ == "__main__":
    main()
