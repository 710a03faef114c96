"""Several training jobs on one device: one job alone against N at once, as `dcgan worker --jobs-per-gpu N` runs
them (threads of one process, each job on a CUDA stream of its own, core.gan.step_graph.job_stream).

Each job is a core.gan.train.Trainer with the config defaults and cuda_graphs=true at 64x64 (batch 64, RGB; on
CUDA its step is a CUDA graph) on the in-memory "fake" set, calling train_step() only. Every job warms up
(eager steps, the graph capture), then all start together and step for --seconds; the aggregate is all their
images over the time from the common start to the last job's end (its queued GPU work included). The goal
printed is issue 12 part 3's: N=4 jobs at >= 3x the images/s of one job alone.

Run from the repo root:
  python3 bench/gpu_jobs.py --device cuda                  # 1 job, then 4 jobs: about a minute
  .venv/bin/python bench/gpu_jobs.py --device cpu --tiny --seconds 3 --warmup 1   # a dry run of the script
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a script, like bench/quality.py

from bench.machine import stamp  # noqa: E402
from core.gan.config import TrainConfig  # noqa: E402
from core.gan.data import load_images  # noqa: E402
from core.gan.step_graph import CUDA_GRAPH_WARMUP_STEPS, job_stream  # noqa: E402
from core.gan.train import Trainer  # noqa: E402

IMG_SIZE, BATCH = 64, 64
TINY = {"img_size": 32, "img_channels": 1, "z_dim": 8, "g_channels": 8, "d_channels": 8, "batch_size": 16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


def run_jobs(count: int, seconds: float, warmup: int, device: torch.device, tiny: bool) -> dict:
    """`count` trainers stepping at once for `seconds`, each in a thread on a stream of its own."""
    shape = TINY if tiny else {"img_size": IMG_SIZE, "img_channels": 3, "batch_size": BATCH}
    data = load_images("digits" if tiny else "fake", shape["img_size"], shape["img_channels"])
    out = Path(tempfile.mkdtemp(prefix="dcgan-gpu-jobs-"))
    trainers = [Trainer(TrainConfig(**shape, steps=10**9, sample_every=0, checkpoint_every=0, seed=i,
                                    cuda_graphs=True), data,
                        out / str(i), device) for i in range(count)]
    ready = threading.Barrier(count + 1)
    started: list[float] = []
    ends, steps, errors = [0.0] * count, [0] * count, []

    def job(i: int) -> None:
        trainer = trainers[i]
        try:
            with job_stream(device):
                for _ in range(warmup):
                    trainer.train_step()
                sync(device)
                ready.wait()
                start = time.perf_counter()
                while time.perf_counter() - start < seconds:
                    trainer.train_step()
                    steps[i] += 1
                sync(device)
                ends[i] = time.perf_counter()
        except BaseException as exc:  # reported by the caller with the job it happened in
            errors.append((i, exc))
            ready.abort()

    threads = [threading.Thread(target=job, args=(i,), name=f"job-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    try:
        ready.wait()
        started.append(time.perf_counter())
    except threading.BrokenBarrierError:
        pass
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"job {errors[0][0]} failed: {errors[0][1]!r}") from errors[0][1]
    batch = trainers[0].batch_size
    per_job = [n * batch / (end - started[0]) for n, end in zip(steps, ends)]
    return {"jobs": count, "aggregate": sum(steps) * batch / (max(ends) - started[0]), "per_job": per_job,
            "modes": sorted({t.step_mode for t in trainers})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--jobs", type=int, default=4, help="jobs at once in the second measurement (default 4)")
    parser.add_argument("--seconds", type=float, default=15.0, help="timed seconds per measurement (default 15)")
    parser.add_argument("--warmup", type=int, default=CUDA_GRAPH_WARMUP_STEPS + 3,
                        help="untimed steps per job, the graph capture among them")
    parser.add_argument("--tiny", action="store_true", help="tiny 32x32 models on digits (a CPU dry run)")
    args = parser.parse_args()
    device = torch.device(args.device)
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(stamp())
    size = "tiny 32x32" if args.tiny else f"{IMG_SIZE}x{IMG_SIZE} batch {BATCH}"
    print(f"torch {torch.__version__}, {hardware}, {size}, {args.warmup} warm-up steps per job, "
          f"{args.seconds:g} s timed", flush=True)
    rows = [run_jobs(count, args.seconds, args.warmup, device, args.tiny) for count in (1, args.jobs)]
    single = rows[0]["aggregate"]
    print(f"\n{'jobs':>4} {'images/s (all jobs)':>20} {'vs one job':>10}  per job / step mode")
    for row in rows:
        per_job = ", ".join(f"{rate:.0f}" for rate in row["per_job"])
        print(f"{row['jobs']:>4} {row['aggregate']:20.1f} {row['aggregate'] / single:9.2f}x  [{per_job}] "
              f"{'; '.join(row['modes'])}")
    ratio = rows[1]["aggregate"] / single
    print(f"\ngoal ({stamp()}): {args.jobs} jobs at once >= 3x the images/s of one job alone (issue 12, "
          f"part 3): {ratio:.2f}x -> {'met' if ratio >= 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
