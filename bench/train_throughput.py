"""Training throughput: the standard DCGAN recipe against our Trainer, side by side in one process.

Measures images/s of 64x64 DCGAN training (batch 64, z 100, ngf = ndf = 64, RGB) for:
  standard  bench/standard_recipe.py (pytorch/examples' dcgan/main.py: its models, init, BCELoss, zero_grad
            every step) fed the way main.py feeds it: torchvision FakeData through ToTensor + Normalize in a
            DataLoader(batch 64, shuffle, num_workers=2), with main.py's per-iteration `.item()` reads. Its
            every-100-iterations image dump is left out, as ours writes no samples here;
  ours      core.gan.train.Trainer with the config defaults (precision/channels_last/compile) on the
            in-memory "fake" set, calling train_step() only (no sampling, no checkpoints);
  extras    more rows: "standard-mem" (the same recipe on batches already in memory: its compute alone,
            without the DataLoader's two worker processes competing for the cores), "article" (the seed
            article's loop, bench/seed_recipe.py), and Trainer rows with one default overridden: precision
            fp32/bf16/fp16, channels_last off, compile on, DiffAugment off, CUDA graphs on ("graphs": the
            step captured and replayed as a CUDA graph; off by default until measured) -- so the defaults are
            chosen by measurement.
Paths take turns in timed windows (rotating order, so drift in machine load hits them all alike) after
warm-up steps; each row reports the median over windows. Achieved GFLOP/s uses FlopCounterMode's count
of one training step against the ceiling of a large fp32 and a large bf16 matmul timed in the same run.
The summary names the issue's goals: ours at >= 85% of the ceiling of the precision `precision=auto` picks,
and >= 3x the standard recipe where bf16 is native (>= 1.5x where it is not). --profile adds where the time
of one of our steps goes (torch.profiler, by operator family).

Run from the repo root:
  .venv/bin/python bench/train_throughput.py             # CPU: 2-4 minutes on 2 cores (+1 for a cold compile)
  .venv/bin/python bench/train_throughput.py --device cuda
  .venv/bin/python bench/train_throughput.py --extras bf16,nchw --windows 5 --steps 2 --threads 2
  .venv/bin/python bench/train_throughput.py --extras '' --profile
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from torchvision import datasets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a script, like bench/quality.py

from bench.machine import stamp  # noqa: E402
from bench.seed_recipe import SeedRecipe, seed_dataloader, seed_transform  # noqa: E402
from bench.standard_recipe import StandardRecipe  # noqa: E402
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
    "graphs": {"cuda_graphs": True},  # the step captured as a CUDA graph (eager on a CPU, which says so)
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


class RecipePath:
    """A baseline's `step(real_images)` fed from a DataLoader (as it is meant to run) or from memory."""

    def __init__(self, name: str, recipe, device: torch.device, batches: int, in_memory: bool = False,
                 read_every: int = 1):
        if in_memory:
            images = torch.rand(BATCH * 4, 3, IMG_SIZE, IMG_SIZE, generator=torch.Generator().manual_seed(0))
            self.batches = itertools.cycle((images * 2 - 1).to(device).split(BATCH))
        else:
            # Enough images that no timed window crosses an epoch end (workers would restart there).
            dataset = datasets.FakeData(size=BATCH * batches, image_size=(3, IMG_SIZE, IMG_SIZE),
                                        transform=seed_transform())
            self.batches = (images for images, _ in seed_dataloader(dataset, BATCH))
        self.recipe, self.read_every = recipe, read_every
        self.name, self.dtype, self.i = name, torch.float32, 0

    def step(self) -> None:
        losses = self.recipe.step(next(self.batches))
        if self.i % self.read_every == 0:
            for loss in losses[-2:]:  # main.py prints errD and errG every iteration; the article every 50
                loss.item()
        self.i += 1


def standard_path(device: torch.device, batches: int, in_memory: bool = False) -> RecipePath:
    recipe = StandardRecipe(nz=100, ngf=64, ndf=64, nc=3, img_size=IMG_SIZE, device=device, seed=0)
    name = "standard recipe (main.py, in-memory data)" if in_memory else "standard recipe (main.py, DataLoader)"
    return RecipePath(name, recipe, device, batches, in_memory)


def article_path(device: torch.device, batches: int) -> RecipePath:
    recipe = SeedRecipe(nz=100, ngf=64, ndf=64, nc=3, img_size=IMG_SIZE, device=device, seed=0)
    return RecipePath("seed recipe (article)", recipe, device, batches, read_every=50)


BASELINE_EXTRAS = {  # extra baseline rows: name -> builder(device, batches)
    "standard-mem": lambda device, batches: standard_path(device, batches, in_memory=True),
    "article": article_path,
}


class TrainerPath:
    def __init__(self, label: str, device: torch.device, data, out_dir: str, **overrides):
        config = TrainConfig(img_size=IMG_SIZE, img_channels=3, steps=1_000_000, sample_every=0,
                             checkpoint_every=0, **overrides)
        self.trainer = Trainer(config, data, out_dir, device)
        precision = self.trainer.precision
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
        layout = "channels_last" if config.channels_last else "nchw"
        augment = "diffaug" if config.aug_policies else "no aug"
        graphed = ", cuda graph" if self.trainer.step_mode == "cuda-graph" else ""
        self.name = f"{label} ({precision}, {layout}, {augment}{', compile' if config.compile else ''}{graphed})"

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
        return ["standard-mem", "graphs"] + [p for p in ("fp32", "bf16", "fp16") if p != auto] + \
            ["nchw", "compile", "noaug"]
    # CPU: reduced precision is only worth a row where the CPU computes it natively (then auto is bf16).
    return ["standard-mem"] + (["fp32"] if auto != "fp32" else []) + ["nchw", "compile", "noaug"]


def profile_step(path: "TrainerPath", device: torch.device, steps: int = 3) -> None:
    """Where one of our steps spends its time: phases (by wrapping the Trainer's parts in record_function
    for the duration) and the operators with the most self time."""
    from torch.profiler import ProfilerActivity, profile, record_function

    trainer = path.trainer
    phases = {"data (batch gather)": (trainer, "_next_batch"), "augmentation (DiffAugment)": (trainer, "_augment"),
              "G forward": (trainer, "G_step"), "D forward": (trainer, "D_step"),
              "optimiser steps (fused Adam)": (trainer.opt_d, "step")}
    if trainer.ema is not None:
        phases["EMA of G"] = (trainer.ema, "apply")

    def labelled(label, function):
        def wrapper(*args, **kwargs):
            with record_function(label):
                return function(*args, **kwargs)
        return wrapper

    saved = [(owner, attr, owner.__dict__.get(attr)) for owner, attr in phases.values()]
    saved.append((trainer.opt_g, "step", trainer.opt_g.__dict__.get("step")))
    backward = torch.Tensor.backward
    for label, (owner, attr) in phases.items():
        setattr(owner, attr, labelled(label, getattr(owner, attr)))
    trainer.opt_g.step = labelled("optimiser steps (fused Adam)", trainer.opt_g.step)
    torch.Tensor.backward = labelled("backward (both updates)", backward)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    try:
        with profile(activities=activities) as prof:
            for _ in range(steps):
                with record_function("step"):
                    path.step()
            sync(device)
    finally:
        torch.Tensor.backward = backward
        for owner, attr, value in saved:
            if value is None:
                owner.__dict__.pop(attr, None)
            else:
                setattr(owner, attr, value)

    averages = prof.key_averages()
    by_name = {event.key: event for event in averages}
    step_us = by_name["step"].cpu_time_total
    print(f"\nprofile of '{path.name}', {steps} steps, {step_us / steps / 1e3:.1f} ms per step under the profiler "
          "(inclusive CPU time per phase; G forward is also inside the D update's call, D forward runs 3x):")
    labels = list(dict.fromkeys(label for label in phases)) + ["backward (both updates)"]
    covered = 0.0
    for label in labels:
        if label in by_name:
            spent = by_name[label].cpu_time_total
            covered += spent
            print(f"  {label:34} {spent / steps / 1e3:8.1f} ms {100 * spent / step_us:5.1f}%")
    print(f"  {'other (losses, zero_grad, Python)':34} {(step_us - covered) / steps / 1e3:8.1f} ms "
          f"{100 * (step_us - covered) / step_us:5.1f}%")
    operators = sorted((e for e in averages if e.key.startswith("aten::")), key=lambda e: -e.self_cpu_time_total)
    print("  operators by self CPU time:")
    for event in operators[:12]:
        print(f"    {event.key:44} {event.self_cpu_time_total / steps / 1e3:8.1f} ms "
              f"{100 * event.self_cpu_time_total / step_us:5.1f}%  ({event.count // steps} calls/step)")
    families = {"convolutions (fwd + bwd)": ("conv",), "batch norm": ("batch_norm",),
                "activations": ("relu", "tanh", "threshold", "softplus", "sigmoid", "leaky"),
                "Adam + EMA (foreach/fused)": ("adam", "foreach"), "copies / layout": ("copy_", "contiguous", "clone")}
    print("  operator families (self CPU time):")
    for family, needles in families.items():
        spent = sum(e.self_cpu_time_total for e in operators if any(n in e.key for n in needles))
        print(f"    {family:44} {spent / steps / 1e3:8.1f} ms {100 * spent / step_us:5.1f}%")


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, help="timed steps per window (default: 1 on cpu, 20 on cuda)")
    parser.add_argument("--windows", type=int, help="timed windows per path (default: 5)")
    parser.add_argument("--warmup", type=int, help="untimed steps per path (default: 1 on cpu, 5 on cuda)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--extras", help=f"comma list of extra rows from {','.join([*BASELINE_EXTRAS, *EXTRAS])} "
                                         "('' for none; default depends on the device)")
    parser.add_argument("--profile", action="store_true", help="also profile our default step (torch.profiler)")
    args = parser.parse_args()
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    steps = args.steps or (20 if on_cuda else 1)
    windows = args.windows or 5
    warmup = max(1, args.warmup if args.warmup is not None else (5 if on_cuda else 1))
    if args.threads:
        torch.set_num_threads(args.threads)
    extras = default_extras(device) if args.extras is None else [e for e in args.extras.split(",") if e]
    unknown = [e for e in extras if e not in EXTRAS and e not in BASELINE_EXTRAS]
    if unknown:
        parser.error(f"--extras: unknown {unknown[0]!r}; choose from {','.join([*BASELINE_EXTRAS, *EXTRAS])}")

    auto = resolve_precision("auto", device)
    hardware = torch.cuda.get_device_name(device) if on_cuda else f"CPU {torch.backends.cpu.get_cpu_capability()}"
    print(stamp())
    print(f"torch {torch.__version__}, {hardware}, threads {torch.get_num_threads()}, "
          f"batch {BATCH}, {IMG_SIZE}x{IMG_SIZE}, {warmup} warm-up + {windows} windows x {steps} steps, "
          f"precision=auto -> {auto}")
    if on_cuda:
        print(f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32} (fp32 convs may use TF32 tensor cores), "
              f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}")
    elif "bf16" not in extras and auto == "fp32":
        print("bf16 row not run by default: this CPU has no native bf16 (emulated, ~130 s/step here); "
              "--extras bf16 to run it")

    # The ceiling is timed once per window round too, so it sees the same machine load as the paths.
    operands = {dtype: matmul_operands(dtype, device) for dtype in (torch.float32, torch.bfloat16)}
    ceiling_runs: dict[torch.dtype, list[float]] = {dtype: [] for dtype in operands}

    data = load_images("fake", IMG_SIZE, 3)
    out_dir = tempfile.mkdtemp(prefix="dcgan-bench-")
    loader_batches = warmup + windows * steps + 2
    paths = [standard_path(device, loader_batches), TrainerPath("ours default", device, data, out_dir)]
    paths += [BASELINE_EXTRAS[name](device, loader_batches) for name in extras if name in BASELINE_EXTRAS]
    paths += [TrainerPath(f"ours {name}", device, data, out_dir, **EXTRAS[name]) for name in extras
              if name in EXTRAS]

    # One step under FlopCounterMode per distinct model; Trainer rows share the same convolutions
    # whatever their precision, layout or compilation, so eager "ours default" stands for all of them.
    flops: dict[int, int] = {}
    failed: list[tuple[str, str]] = []
    for path in list(paths):
        start = time.perf_counter()
        counted = not isinstance(path, TrainerPath) or path is paths[1]
        try:
            flops[id(path)] = count_flops(path) if counted else flops[id(paths[1])]
            for _ in range(warmup - counted):
                path.step()
            sync(device)
        except Exception as exc:  # an extra row that this torch/device cannot run is reported, not fatal
            if path is paths[0] or path is paths[1]:
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
    recipe_rate = statistics.median(rates[id(paths[0])])
    print(f"\n{'path':52} {'images/s':>10} {'range':>17} {'vs recipe':>9} {'GFLOP/step':>10} "
          f"{'GFLOP/s':>9} {'of ceiling':>10}")
    shares = {}
    for path in paths:
        rate = statistics.median(rates[id(path)])
        achieved = flops[id(path)] / 1e9 * rate / BATCH
        shares[id(path)] = achieved / ceilings[path.dtype]
        spread = f"{min(rates[id(path)]):.1f}-{max(rates[id(path)]):.1f}"
        print(f"{path.name:52} {rate:10.1f} {spread:>17} {rate / recipe_rate:8.2f}x {flops[id(path)] / 1e9:10.1f} "
              f"{achieved:9.1f} {100 * shares[id(path)]:9.1f}%")
    for name, reason in failed:
        print(f"{name:52} failed: {reason}")
    print("(ceiling per row: fp32 rows against the fp32 matmul, bf16/fp16 rows against the bf16 matmul)")

    ours = paths[1]
    ratio = statistics.median(rates[id(ours)]) / recipe_rate
    print(f"\ngoals ({stamp()}):")
    print(f"  ours default at >= 85% of the {auto} matmul ceiling (the precision precision=auto picks here): "
          f"{100 * shares[id(ours)]:.1f}% -> {verdict(shares[id(ours)] >= 0.85)}")
    if on_cuda:
        for path in paths[1:]:
            if isinstance(path, TrainerPath) and (path is ours or path.name.startswith("ours graphs")):
                path_ratio = statistics.median(rates[id(path)]) / recipe_rate
                print(f"  {path.name} >= 4x the standard recipe on a GPU (issue 12, part 3): {path_ratio:.2f}x -> "
                      f"{verdict(path_ratio >= 4)}")
    else:
        native = auto == "bf16"
        goal = 3.0 if native else 1.5
        print(f"  ours default >= {goal:g}x the standard recipe (bf16 {'native' if native else 'not native'} on this "
              f"CPU): {ratio:.2f}x -> {verdict(ratio >= goal)}")
    if "standard-mem" in extras and any(p.name.startswith("standard recipe (main.py, in-memory") for p in paths):
        mem = next(p for p in paths if p.name.startswith("standard recipe (main.py, in-memory"))
        print(f"  (against the recipe's compute alone, data already in memory: "
              f"{statistics.median(rates[id(ours)]) / statistics.median(rates[id(mem)]):.2f}x)")
    if args.profile:
        profile_step(ours, device)


if __name__ == "__main__":
    main()
