"""`dcgan train`, `dcgan sample` and `dcgan eval`: the engine (core.gan) on this machine.

The handlers import core.gan (and so torch) only when they run; cli.main sets torch's thread count first and
turns core.gan's user errors into one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.gan.catalog import FOLDER_PREFIX, GRAYSCALE, NAMES
from core.gan.seeds import DEFAULT_SEEDS, DEFAULT_TRUNCATION, TRUNCATION_MAX

COMMANDS = ("train", "sample", "eval")


def add_commands(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a DCGAN (or continue one with --resume)")
    train.add_argument("--dataset", help=f"{FOLDER_PREFIX}<path> or one of {', '.join(NAMES)}")
    train.add_argument("--out", type=Path, help="run directory (default with --resume: the checkpoint's run)")
    train.add_argument("--resume", type=Path, help="a training checkpoint (.pt) to continue from")
    train.add_argument("--img-size", type=int, dest="img_size")
    train.add_argument("--img-channels", type=int, dest="img_channels")
    train.add_argument("--steps", type=int)
    train.add_argument("--epochs", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any config field, e.g. --set loss=hinge --set spectral_norm=true")
    train.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")

    sample = sub.add_parser("sample", help="generate images for seeds from an exported generator")
    sample.add_argument("--generator", type=Path, required=True, help="generator.safetensors")
    sample.add_argument("--seeds", default=DEFAULT_SEEDS, help=f"e.g. {DEFAULT_SEEDS} or 1,5,9-12")
    sample.add_argument("--grid", type=Path, help="write a grid PNG here")
    sample.add_argument("--nrow", type=int, help="images per grid row (default: square)")
    sample.add_argument("--images", type=Path, help="write one seed-000007.png per seed into this directory")
    sample.add_argument("--truncation", type=float, default=DEFAULT_TRUNCATION,
                        help=f"(0, {TRUNCATION_MAX:g}]; lower = less variety")
    sample.add_argument("--interpolate", metavar="A,B", help="write frames + GIF between seeds A and B")
    sample.add_argument("--frames", type=int, default=16)
    sample.add_argument("--gif", type=Path, help="GIF path for --interpolate (default interpolation.gif)")
    sample.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    sample.add_argument("--channels-last", action="store_true")
    sample.add_argument("--compile", action="store_true")
    sample.add_argument("--device", default="cpu")

    evaluate = sub.add_parser("eval", help="FID / KID / IS of a generator against a dataset (prints JSON)")
    evaluate.add_argument("--generator", type=Path, required=True)
    evaluate.add_argument("--dataset", required=True)
    evaluate.add_argument("--metrics", default="", help="comma-separated fid,kid,is (default: all the "
                                                           "feature network supports)")
    evaluate.add_argument("--num", type=int, default=2000, help="generated samples (seeds 0..num-1)")
    evaluate.add_argument("--feature-net", default="auto", help="auto, inception, digits or fashion-mnist")
    evaluate.add_argument("--device", default="cpu")


def run(args: argparse.Namespace, cache_dir: Path) -> int:
    return {"train": _train, "sample": _sample, "eval": _eval}[args.command](args, cache_dir)


def _train(args: argparse.Namespace, cache_dir: Path) -> int:
    from core.gan.checkpoint import load_training_state
    from core.gan.config import ConfigError, TrainConfig, parse_set_options
    from core.gan.data import load_images
    from core.gan.train import Callbacks, train

    values: dict[str, object] = parse_set_options(args.set)
    for name in ("img_size", "img_channels", "steps", "epochs", "seed"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.resume:
        state = load_training_state(args.resume)
        saved: TrainConfig = state["config"]
        allowed = {"steps", "epochs"}
        if set(values) - allowed:
            raise ConfigError(sorted(set(values) - allowed)[0], "cannot change on --resume (only --steps/--epochs)")
        config = saved.replace(**values) if values else saved
        dataset = args.dataset or state.get("dataset")
        out = args.out or Path(args.resume).resolve().parent.parent
    else:
        if not args.dataset:
            raise ConfigError("dataset", "--dataset is required (or --resume a checkpoint)")
        if not args.out:
            raise ConfigError("out", "--out is required")
        if "steps" not in values and "epochs" not in values:
            raise ConfigError("steps", "give --steps or --epochs")
        if args.dataset in GRAYSCALE:
            values.setdefault("img_channels", 1)  # grayscale datasets: don't train 3 identical channels
        config = TrainConfig.from_dict(values)
        dataset, out = args.dataset, args.out
    data = load_images(dataset, config.img_size, config.img_channels, cache_dir=cache_dir)
    reporter = _Reporter(config)
    result = train(config, data, out, device=args.device, resume_from=args.resume,
                   callbacks=Callbacks(on_progress=reporter.progress), progress_every=10, cache_dir=cache_dir)
    reporter.close()
    best = {"best": {**result.best, "generator": str(out / "best-generator.safetensors")}} if result.best else {}
    print(json.dumps({"step": result.step, "generator": str(result.generator_path),
                      "checkpoint": str(result.checkpoint_path), "grid": str(result.grid_path), **best}))
    return 0


class _Reporter:
    """A tqdm bar on a terminal, plain log lines otherwise (logs, CI, the worker's stdout)."""

    def __init__(self, config) -> None:
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=None, unit="step", file=sys.stderr)

    def progress(self, p) -> None:
        if self.bar is not None:
            self.bar.total = p.total_steps
            self.bar.n = p.step
            self.bar.set_postfix(loss_d=f"{p.loss_d:.3f}", loss_g=f"{p.loss_g:.3f}", img_s=f"{p.images_per_second:.0f}")
            self.bar.refresh()
        elif p.step % 50 == 0 or p.step == p.total_steps or p.fid is not None:
            scores = f" FID {p.fid:.2f} KID {p.kid:.4f} (best {p.best['fid']:.2f} at {p.best['step']})" \
                if p.fid is not None else ""
            print(f"step {p.step}/{p.total_steps} epoch {p.epoch} loss_d {p.loss_d:.4f} loss_g {p.loss_g:.4f} "
                  f"D(x) {p.d_real:.3f} D(G(z)) {p.d_fake:.3f} {p.images_per_second:.1f} img/s "
                  f"eta {p.eta_seconds:.0f}s{scores}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _sample(args: argparse.Namespace, cache_dir: Path) -> int:
    from core.gan.sample import (Sampler, SampleError, SamplerOptions, default_nrow, grid_image, image_list,
                             parse_seeds, save_gif, save_png)

    if not (args.grid or args.images or args.interpolate):
        raise SampleError("nothing to write: give --grid, --images or --interpolate")
    options = SamplerOptions(precision=args.precision, channels_last=args.channels_last, compile=args.compile)
    sampler = Sampler.from_file(args.generator, args.device, options)
    written: dict[str, object] = {}
    if args.grid or args.images:
        seeds = parse_seeds(args.seeds)
        images = sampler.images_for_seeds(seeds, args.truncation)
        if args.grid:
            save_png(grid_image(images, args.nrow or default_nrow(len(seeds))), args.grid)
            written["grid"] = str(args.grid)
        if args.images:
            for seed, image in zip(seeds, image_list(images)):
                save_png(image, args.images / f"seed-{seed:06d}.png")
            written["images"] = len(seeds)
    if args.interpolate:
        parts = args.interpolate.split(",")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise SampleError(f"--interpolate needs two seeds like 3,7, got {args.interpolate!r}")
        frames = image_list(sampler.interpolate(int(parts[0]), int(parts[1]), args.frames, args.truncation))
        gif = args.gif or Path("interpolation.gif")
        save_gif(frames, gif)
        written["gif"] = str(gif)
    print(json.dumps(written))
    return 0


def _eval(args: argparse.Namespace, cache_dir: Path) -> int:
    from core.gan.data import load_images
    from core.gan.metrics import evaluate
    from core.gan.sample import Sampler

    sampler = Sampler.from_file(args.generator, args.device)
    config = sampler.config
    real = load_images(args.dataset, config.img_size, config.img_channels, cache_dir=cache_dir)
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip()) or None
    result = evaluate(lambda start, count: sampler.images_for_seeds(range(start, start + count)),
                      real.images, dataset=args.dataset, metrics=metrics, num=args.num,
                      feature_net=args.feature_net, cache_dir=cache_dir, device=args.device)
    print(json.dumps(result, indent=2))
    return 0
