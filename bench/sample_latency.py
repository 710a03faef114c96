"""Sampling speed and fidelity of core.gan.sample's fast paths against fp32, side by side in one process.

For each path (SamplerOptions: precision, channels_last, compile, quantize -- and an eager static int8
path built here) it prints:
  grid ms     latency of one 64-image grid, seeds 0-63, as the service makes it
              (Sampler.images_for_seeds -> grid_image -> png_bytes), median over repeats;
  images/s    Sampler.images_for_seeds over 256 seeds (the Sampler runs them in micro-batches);
  GFLOP/s     G's forward FLOPs (FlopCounterMode, fp32 model) x images/s (int8 rows: int8 ops/s);
  PSNR        of the served uint8 images against fp32's over seeds 0-63 (inf: identical pixels);
  gate        what the Sampler's quality gate measured for the requested path (PSNR against fp32 on its 16
              fixed seeds) and what it decided: `kept`, or `-> fp32` when it serves fp32 instead (the row's
              other columns then measure fp32).
A path that cannot be built or run prints `unsupported: reason`. Paths take turns in every repeat
(rotating order), so machine-load drift hits them alike. Two "raw G" rows run the fp32 model (NCHW and
channels_last) on all 256 seeds in one forward, without the Sampler, to show what micro-batching costs.

Without --generator, G is a 64x64 default-config generator with DCGAN init whose BatchNorm running
statistics are filled from 512 noise samples: with the init's mean 0 / var 1 an untrained G gives
near-flat images, on which PSNR says nothing.

On the CPU, when int8 is among the paths, a last table follows: for the int8 model packed by each x86 quantized
engine (fbgemm, which the Sampler uses, and torch's default x86, which hands ConvTranspose to oneDNN on
AVX512-VNNI CPUs), the SQNR of each int8 ConvTranspose(+BN) block's output against fp32's along the chain, and
the same block alone on fp32's input; then the images' PSNR (the gate off). The header names the CPU's flags.

Run from the repo root:
  .venv/bin/python bench/sample_latency.py               # CPU: 1-4 minutes on 2 cores
  .venv/bin/python bench/sample_latency.py --device cuda --repeats 10
  .venv/bin/python bench/sample_latency.py --generator runs/x/generator.safetensors --paths fp32,int8-static
"""

from __future__ import annotations

import argparse
import copy
import datetime
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a script, like bench/quality.py

from core.gan.checkpoint import load_module_state, read_generator  # noqa: E402
from core.gan.config import TrainConfig  # noqa: E402
from core.gan.models import Generator, build_generator, init_dcgan_weights  # noqa: E402
from core.gan.sample import (Sampler, SamplerOptions, _quantize, grid_image, noise_for_seeds,  # noqa: E402
                             png_bytes, psnr)

GRID_SEEDS = list(range(64))
THROUGHPUT_SEEDS = list(range(256))
CPU_FLAGS = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
RAW_ROWS = {torch.contiguous_format: "raw G fp32, one forward", torch.channels_last: "raw G fp32+CL, one forward"}

O = SamplerOptions
PATHS: dict[str, Callable] = {  # name -> (G, config, device) -> Sampler
    "fp32": lambda g, c, d: Sampler(g, c, d, O()),
    "bf16": lambda g, c, d: Sampler(g, c, d, O(precision="bf16")),
    "fp16": lambda g, c, d: Sampler(g, c, d, O(precision="fp16")),
    "channels_last": lambda g, c, d: Sampler(g, c, d, O(channels_last=True)),
    "compile": lambda g, c, d: Sampler(g, c, d, O(compile=True)),
    "channels_last+compile": lambda g, c, d: Sampler(g, c, d, O(channels_last=True, compile=True)),
    "bf16+channels_last": lambda g, c, d: Sampler(g, c, d, O(precision="bf16", channels_last=True)),
    "bf16+compile": lambda g, c, d: Sampler(g, c, d, O(precision="bf16", compile=True)),
    "bf16+channels_last+compile": lambda g, c, d: Sampler(g, c, d, O("bf16", True, True)),
    "fp16+channels_last+compile": lambda g, c, d: Sampler(g, c, d, O("fp16", True, True)),
    "int8": lambda g, c, d: Sampler(g, c, d, O(quantize=True)),
    "int8+compile": lambda g, c, d: Sampler(g, c, d, O(quantize=True, compile=True)),
    # One forward per 256 images: the fastest on a GPU, without the per-seed bit-exactness guarantee.
    "fp32 micro_batch=256": lambda g, c, d: Sampler(g, c, d, O(micro_batch=256)),
    "bf16+channels_last micro_batch=256": lambda g, c, d: Sampler(g, c, d, O("bf16", True, micro_batch=256)),
}
DEFAULT_PATHS = {
    # Not bf16+channels_last on CPU by default: measured 20 s per grid on an AVX2 CPU (emulated bf16).
    "cpu": ["fp32", "bf16", "channels_last", "compile", "channels_last+compile", "int8", "int8+compile"],
    # Two compiled rows only: each compile costs tens of seconds, and gpu_check.sh has minutes.
    "cuda": ["fp32", "bf16", "fp16", "channels_last", "bf16+channels_last", "compile",
             "bf16+channels_last+compile", "fp32 micro_batch=256", "bf16+channels_last micro_batch=256"],
}


def default_generator(config: TrainConfig | None = None) -> tuple[Generator, TrainConfig]:
    """A DCGAN-init G (default: 64x64, default widths) whose BatchNorm statistics come from its own outputs."""
    config = config or TrainConfig(img_size=64, img_channels=3, steps=1)
    torch.manual_seed(0)
    generator = build_generator(config)
    generator.apply(init_dcgan_weights)
    norms = [m for m in generator.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches below
    with torch.no_grad():
        generator.train()
        for _ in range(8):
            generator(torch.randn(64, config.z_dim, 1, 1))
    for norm in norms:
        norm.momentum = 0.1
    return generator.eval(), config


def load_generator(path: Path) -> tuple[Generator, TrainConfig]:
    config, weights = read_generator(path)
    generator = build_generator(config)
    load_module_state(generator, weights, str(path))
    return generator.eval(), config


def timed(fn: Callable[[], object], device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def cpu_description() -> str:
    """The CPU's model name and the flags that pick kernels for these paths (Linux /proc/cpuinfo)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "CPU"
    fields = {key.strip(): value for key, value in (line.split(":", 1) for line in info.splitlines() if ":" in line)}
    flags = set(fields.get("flags", "").split())
    has = " ".join(f for f in CPU_FLAGS if f in flags) or "-"
    lacks = " ".join(f for f in CPU_FLAGS if f not in flags) or "-"
    return f"{fields.get('model name', 'CPU').strip()}; flags: {has}; not: {lacks}"


def sqnr(x: torch.Tensor, reference: torch.Tensor) -> float:
    noise = (x - reference).pow(2).mean().item()
    return float("inf") if noise == 0 else 10 * math.log10(reference.pow(2).mean().item() / noise)


@torch.no_grad()
def int8_layer_report(generator: Generator, config: TrainConfig) -> None:
    """Where int8 loses precision: each quantized ConvTranspose block against fp32's, per packing engine."""
    z = noise_for_seeds(GRID_SEEDS, config.z_dim)
    reference = generator(z)
    print("\nint8 per block, SQNR dB against fp32 along the chain (alone on fp32's input), seeds 0-63:")
    for engine in ("fbgemm", "x86"):
        if engine not in torch.backends.quantized.supported_engines:
            print(f"  {engine}: not in this torch")
            continue
        quantized = _quantize(copy.deepcopy(generator), torch.device("cpu"), engine)
        x, xq, blocks = z, quantized.quant(z), []
        for layer, qlayer in zip(generator.main[:-2], quantized.body):
            if isinstance(layer, nn.ConvTranspose2d):
                # The same int8 block alone: fp32's input, quantized as the chain quantizes its own.
                alone = qlayer(torch.quantize_per_tensor(x, xq.q_scale(), xq.q_zero_point(), xq.dtype))
                name = f"{layer.in_channels}->{layer.out_channels}"
            x, xq = layer(x), qlayer(xq)
            if isinstance(layer, nn.BatchNorm2d):  # folded into the int8 conv; qlayer is an Identity here
                blocks.append(f"{name} {sqnr(xq.dequantize(), x):.1f} ({sqnr(alone.dequantize(), x):.1f})")
        print(f"  {engine:7} {', '.join(blocks)}; images {psnr(quantized(z), reference):.2f} dB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--generator", type=Path, help="an exported generator.safetensors (default: built)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per path (median reported)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--paths", help=f"comma list from {','.join(PATHS)} (fp32 always runs)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.paths.split(",") if args.paths else DEFAULT_PATHS[device.type]
    unknown = [n for n in names if n not in PATHS]
    if unknown:
        parser.error(f"--paths: unknown {unknown[0]!r}; choose from {','.join(PATHS)}")
    names = ["fp32"] + [n for n in names if n != "fp32"]

    generator, config = load_generator(args.generator) if args.generator else default_generator()
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU {torch.backends.cpu.get_cpu_capability()}, quantized engine {torch.backends.quantized.engine}"
    print(f"{datetime.date.today()}{', ' + cpu_description() if device.type == 'cpu' else ''}")
    print(f"torch {torch.__version__}, {hardware}, threads {torch.get_num_threads()}, "
          f"G {config.img_size}x{config.img_size} z {config.z_dim} ngf {config.g_channels}, "
          f"{'file ' + str(args.generator) if args.generator else 'DCGAN init'}, {args.repeats} repeats")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        generator(noise_for_seeds(range(16), config.z_dim))
    flops_per_image = counter.get_total_flops() / 16

    runners: dict[str, Callable[[list[int]], torch.Tensor]] = {}
    failures: dict[str, str] = {}
    gates: dict[str, dict] = {}
    for name in names:
        try:
            sampler = PATHS[name](copy.deepcopy(generator), config, device)
            runners[name] = sampler.images_for_seeds
            gates[name] = sampler.quality
        except Exception as exc:  # a fast path torch cannot build here becomes a row, not a crash
            failures[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    for layout in (torch.contiguous_format, torch.channels_last):
        raw = copy.deepcopy(generator).to(device, memory_format=layout)

        @torch.no_grad()
        def raw_forward(seeds: list[int], raw: nn.Module = raw) -> torch.Tensor:
            return raw(noise_for_seeds(seeds, config.z_dim).to(device)).float().cpu()

        runners[RAW_ROWS[layout]] = raw_forward

    # Warm-up (compiles happen here) doubles as the PSNR pass over the grid seeds.
    pixels: dict[str, torch.Tensor] = {}
    for name, run in list(runners.items()):
        try:
            start = time.perf_counter()
            pixels[name] = run(GRID_SEEDS)
            run(THROUGHPUT_SEEDS)
            print(f"warm-up {name}: {time.perf_counter() - start:.1f} s", flush=True)
        except Exception as exc:
            failures[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            del runners[name]

    grid_s: dict[str, list[float]] = {n: [] for n in runners}
    batch_s: dict[str, list[float]] = {n: [] for n in runners}
    order = list(runners)
    for repeat in range(args.repeats):
        for name in order[repeat % len(order):] + order[:repeat % len(order)]:
            run = runners[name]
            grid_s[name].append(timed(lambda: png_bytes(grid_image(run(GRID_SEEDS), nrow=8)), device))
            batch_s[name].append(timed(lambda: run(THROUGHPUT_SEEDS), device))

    print(f"\nG forward: {flops_per_image / 1e6:.1f} MFLOP per image")
    print(f"{'path':36} {'grid ms':>9} {'images/s':>9} {'GFLOP/s':>8} {'PSNR dB':>8}  gate (dB on its 16 seeds)")
    for name in [*names, *RAW_ROWS.values()]:
        if name in failures:
            print(f"{name:36} unsupported: {failures[name]}")
            continue
        rate = len(THROUGHPUT_SEEDS) / statistics.median(batch_s[name])
        quality = psnr(pixels[name], pixels["fp32"])
        print(f"{name:36} {1e3 * statistics.median(grid_s[name]):9.1f} {rate:9.1f} "
              f"{flops_per_image * rate / 1e9:8.1f} {quality:8.2f}  {gate_verdict(gates.get(name))}")
    if device.type == "cpu" and any("int8" in name for name in names):
        int8_layer_report(generator, config)


def gate_verdict(quality: dict | None) -> str:
    if quality is None or quality["psnr_db"] is None:
        return "-"
    verdict = "kept" if quality["fallback_reason"] is None else "-> fp32"
    return f"{quality['requested']} {quality['psnr_db']:.2f}: {verdict}"

if __name__ == "__main__":
    main()
