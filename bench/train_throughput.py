"""Training throughput: the seed article's recipe against our Trainer, side by side in one process.

Measures images/s of 64x64 DCGAN training (batch 64, z 100, ngf = ndf = 64, RGB) for:
  seed      bench/seed_recipe.py on torchvision FakeData through ToTensor+Normalize and a
            DataLoader(batch 64, shuffle, num_workers=2), as the article feeds CelebA;
  ours      core.gan.train.Trainer with the config defaults (precision/channels_last/compile) on the
            in-memory "fake" set, calling train_step() only (no sampling, no checkpoints);
  extras    Trainer rows with one default overridden: precision fp32/bf16/fp16, channels_last off,
            compile on, DiffAugment off -- so the defaults are chosen by measurement.
Paths take turns in timed windows (rotating order, so drift in machine load hits them all alike) after
warm-up steps; each row reports the median over windows. Achieved GFLOP/s uses FlopCounterMode's count
of one training step against the ceiling of a large fp32 and a large bf16 matmul timed in the same run.

Run from the repo root:
  .venv/bin/python bench/train_throughput.py             # CPU: 1-3 minutes on 2 cores (+1 for a cold compile)
  .venv/bin/python bench/train_throughput.py --device cuda
  .venv/bin/python bench/train_throughput.py --extras bf16,nchw --windows 5 --steps 2 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from torchvision import datasets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a script, like bench/quality.py

from bench.seed_recipe import SeedRecipe, seed_dataloader, seed_transform  # noqa: E402
from core.gan.config import TrainConfig  # noqa: E402
from core.gan.data import load_images  # noqa: E402
from core.gan.train import Trainer, resolve_precision  # noqa: E402

BATCH, IMG_SIZE = 64, 64
EXTRAS = {  # row name -> TrainConfig overrides on top of the defaults
    "fp32": {"precision": "fp32"},
    "bf16": {"precision": "bf16"},
    "fp16": {"precision": "fp16"},
    "nchw": {"channels_last": False},
    "compile": {"compile": True},
    "noaug": {"diffaugment": ""},
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_operands(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Square operands, n grown until one product takes >= 100 ms (or hits the cap).

    Growing n keeps emulated bf16 on a CPU without AVX512-BF16/AMX (~200x slower than fp32) from taking
    minutes, while fp32 and GPU products are big enough that launch overhead does not count.
    """
    cap = 8192 if device.type == "cuda" else 4096
    n = 256
    while True:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        a @ b  # warm-up: library init and kernel selection
        seconds = 2 * n**3 / (matmul_gflops(a, b, device, repeats=1) * 1e9)
        if seconds >= 0.1 or n >= cap:
            return a, b
        n *= 2


def matmul_gflops(a: torch.Tensor, b: torch.Tensor, device: torch.device, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * a.shape[0] ** 3 / statistics.median(times) / 1e9


class SeedPath:
    def __init__(self, device: torch.device, batches: int):
        # Enough images that no timed window crosses an epoch end (workers would restart there).
        dataset = datasets.FakeData(size=BATCH * batches, image_size=(3, IMG_SIZE, IMG_SIZE),
                                    transform=seed_transform())
        self.batches = iter(seed_dataloader(dataset, BATCH))
        self.recipe = SeedRecipe(nz=100, ngf=64, ndf=64, nc=3, img_size=IMG_SIZE, device=device, seed=0)
        self.name, self.dtype, self.i = "seed recipe (article)", torch.float32, 0

    def step(self) -> None:
        real_images, _ = next(self.batches)
        _, _, loss_G = self.recipe.step(real_images)
        if self.i % 50 == 0:
            loss_G.item()  # the article's logging sync every 50 batches
        self.i += 1


class TrainerPath:
    def __init__(self, label: str, device: torch.device, data, out_dir: str, **overrides):
        config = TrainConfig(img_size=IMG_SIZE, img_channels=3, steps=1_000_000, sample_every=0,
                             checkpoint_every=0, **overrides)
        self.trainer = Trainer(config, data, out_dir, device)
        precision = self.trainer.precision
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
        layout = "channels_last" if config.channels_last else "nchw"
        augment = "diffaug" if config.aug_policies else "no aug"
        self.name = f"{label} ({precision}, {layout}, {augment}{', compile' if config.compile else ''})"

    def step(self) -> None:
        self.trainer.train_step()


def count_flops(path) -> int:
    """FLOPs of one training step (the step also serves as warm-up)."""
    with FlopCounterMode(display=False) as counter:
        path.step()
    return counter.get_total_flops()


def default_extras(device: torch.device) -> list[str]:
    auto = resolve_precision("auto", device)
    if device.type == "cuda":
        return [p for p in ("fp32", "bf16", "fp16") if p != auto] + ["nchw", "compile", "noaug"]
    # CPU: reduced precision is only worth a row where the CPU computes it natively (then auto is bf16).
    return (["fp32"] if auto != "fp32" else []) + ["nchw", "compile", "noaug"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, help="timed steps per window (default: 1 on cpu, 20 on cuda)")
    parser.add_argument("--windows", type=int, help="timed windows per path (default: 5)")
    parser.add_argument("--warmup", type=int, help="untimed steps per path (default: 1 on cpu, 5 on cuda)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--extras", help=f"comma list of extra Trainer rows from {','.join(EXTRAS)} "
                                         "('' for none; default depends on the device)")
    args = parser.parse_args()
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    steps = args.steps or (20 if on_cuda else 1)
    windows = args.windows or 5
    warmup = max(1, args.warmup if args.warmup is not None else (5 if on_cuda else 1))
    if args.threads:
        torch.set_num_threads(args.threads)
    extras = default_extras(device) if args.extras is None else [e for e in args.extras.split(",") if e]
    unknown = [e for e in extras if e not in EXTRAS]
    if unknown:
        parser.error(f"--extras: unknown {unknown[0]!r}; choose from {','.join(EXTRAS)}")

    hardware = torch.cuda.get_device_name(device) if on_cuda else f"CPU {torch.backends.cpu.get_cpu_capability()}"
    print(f"torch {torch.__version__}, {hardware}, threads {torch.get_num_threads()}, "
          f"batch {BATCH}, {IMG_SIZE}x{IMG_SIZE}, {warmup} warm-up + {windows} windows x {steps} steps")
    if on_cuda:
        print(f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32} (fp32 convs may use TF32 tensor cores), "
              f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}")
    elif "bf16" not in extras and resolve_precision("auto", device) == "fp32":
        print("bf16 row not run by default: this CPU has no native bf16 (emulated, ~130 s/step here); "
              "--extras bf16 to run it")

    # The ceiling is timed once per window round too, so it sees the same machine load as the paths.
    operands = {dtype: matmul_operands(dtype, device) for dtype in (torch.float32, torch.bfloat16)}
    ceiling_runs: dict[torch.dtype, list[float]] = {dtype: [] for dtype in operands}

    data = load_images("fake", IMG_SIZE, 3)
    out_dir = tempfile.mkdtemp(prefix="dcgan-bench-")
    paths = [SeedPath(device, warmup + windows * steps + 2), TrainerPath("ours default", device, data, out_dir)]
    paths += [TrainerPath(f"ours {name}", device, data, out_dir, **EXTRAS[name]) for name in extras]

    # One step under FlopCounterMode per distinct model; Trainer rows share the same convolutions
    # whatever their precision, layout or compilation, so eager "ours default" stands for all of them.
    flops: dict[int, int] = {}
    failed: list[tuple[str, str]] = []
    for path in list(paths):
        start = time.perf_counter()
        counted = path is paths[0] or path is paths[1]
        try:
            flops[id(path)] = count_flops(path) if counted else flops[id(paths[1])]
            for _ in range(warmup - counted):
                path.step()
            sync(device)
        except Exception as exc:  # an extra row that this torch/device cannot run is reported, not fatal
            if counted:
                raise
            paths.remove(path)
            failed.append((path.name, f"{exc.__class__.__name__}: {(str(exc).splitlines() or [''])[0][:160]}"))
            continue
        print(f"warm-up {path.name}: {time.perf_counter() - start:.1f} s", flush=True)

    rates: dict[int, list[float]] = {id(p): [] for p in paths}
    for window in range(windows):
        for path in paths[window % len(paths):] + paths[:window % len(paths)]:
            sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                path.step()
            sync(device)
            rates[id(path)].append(steps * BATCH / (time.perf_counter() - start))
        for dtype, (a, b) in operands.items():
            ceiling_runs[dtype].append(matmul_gflops(a, b, device))

    ceilings = {dtype: statistics.median(runs) for dtype, runs in ceiling_runs.items()}
    for dtype, (a, _) in operands.items():
        print(f"ceiling: {str(dtype).replace('torch.', '')} matmul {a.shape[0]}x{a.shape[0]}: "
              f"{ceilings[dtype]:,.1f} GFLOP/s (median of {windows} rounds)")
    ceilings[torch.float16] = ceilings[torch.bfloat16]  # same tensor-core rate on the GPUs we target
    seed_rate = statistics.median(rates[id(paths[0])])
    print(f"\n{'path':52} {'images/s':>10} {'range':>17} {'vs seed':>8} {'GFLOP/step':>10} "
          f"{'GFLOP/s':>9} {'of ceiling':>10}")
    for path in paths:
        rate = statistics.median(rates[id(path)])
        achieved = flops[id(path)] / 1e9 * rate / BATCH
        spread = f"{min(rates[id(path)]):.1f}-{max(rates[id(path)]):.1f}"
        print(f"{path.name:52} {rate:10.1f} {spread:>17} {rate / seed_rate:7.2f}x {flops[id(path)] / 1e9:10.1f} "
              f"{achieved:9.1f} {100 * achieved / ceilings[path.dtype]:9.1f}%")
    for name, reason in failed:
        print(f"{name:52} failed: {reason}")
    print(f"\nratio ours default / seed recipe: {statistics.median(rates[id(paths[1])]) / seed_rate:.2f}x "
          f"(ceiling per row: fp32 rows vs the fp32 matmul, bf16/fp16 rows vs the bf16 matmul)")


if __name__ == "__main__":
    main()
