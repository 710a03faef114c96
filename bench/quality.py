"""Quality at equal work: our trainer's defaults vs the standard DCGAN recipe, over several training seeds.

The baseline is the recipe a user would pick: pytorch/examples' `dcgan/main.py` (bench/standard_recipe.py:
N(0, 0.02) init, Sigmoid + BCELoss, gradients zeroed every step, Adam 2e-4 / 0.5). `--baseline article` runs
the seed article's loop instead (bench/seed_recipe.py, which never zeroes D's gradients and collapses), kept for
the record. Both sides train for the same number of G updates at batch 64 (nz 100, ngf = ndf = 64; at 32x32 one
block fewer each side), then each generator draws `--num` seeded samples scored with the project's feature
network for the dataset (FID, KID, IS; core/gan/metrics.py). A baseline generator is scored both in eval mode
(BatchNorm running statistics, as our sampler does) and in train mode (batch statistics, as main.py samples);
the better of the two is its figure, so the baseline is not handicapped.

GAN FIDs vary from training seed to training seed, so every side runs once per `--seeds` and the summary is
the mean and the sample standard deviation; the ratio is of the means.

    .venv/bin/python bench/quality.py                          # digits 32x32, 500 steps, seeds 0,1,2
    .venv/bin/python bench/quality.py --dataset fashion-mnist --img-size 64 --steps 2000 --equal-time
    .venv/bin/python bench/quality.py --steps 150 --width 32 --seeds 0   # a quick look

`--equal-time` also scores the standard recipe's generator as it was when its training clock reached ours (a
copy taken in the same run), for FID at equal wall-clock time. `--merge a.json b.json ...` prints the outputs of
several runs of one setup (one training seed per process, say) as one summary.

Writes grids of sample seeds 0-63 of the first training seed for both sides to --out (default docs/) and prints
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.seed_recipe import seed_dataloader, train_seed_recipe  # noqa: E402
from bench.standard_recipe import train_standard_recipe  # noqa: E402
from core.gan.config import TrainConfig, parse_set_options  # noqa: E402
from core.gan.data import load_images, to_model_range  # noqa: E402
from core.gan.metrics import evaluate, load_feature_net  # noqa: E402
from core.gan.sample import Sampler, grid_image, noise_for_seeds, save_png  # noqa: E402
from core.gan.train import train  # noqa: E402

BASELINES = {"standard": (train_standard_recipe, "standard-recipe"), "article": (train_seed_recipe, "seed-recipe")}
SUMMARY = ("fid", "kid_mean", "is_mean", "train_seconds")


def compare(steps: int = 500, width: int = 64, z_dim: int = 100, batch_size: int = 64, num: int = 2000,
            out_dir: Path | None = None, cache_dir: Path | None = None, seed: int = 0,
            workers: int = 2, overrides: dict | None = None, device: str = "cpu", baseline: str | None = "standard",
            dataset: str = "digits", img_size: int = 32, baseline_steps: int | None = None,
            equal_time: bool = False) -> dict:
    """One training seed: ours and the baseline (None: ours only), trained and scored. `baseline_steps`: the
    baseline's G updates when not `steps` (equal wall-clock time instead of equal work). `equal_time` (standard
    recipe only): also score the baseline's generator as it was when its training clock reached ours, a copy
    taken during the same run (`baseline_equal_time`)."""
    if equal_time and baseline != "standard":  # before our side trains, not after: it can take many minutes
        raise ValueError("equal_time snapshots the standard recipe only")
    images = load_images(dataset, img_size, 1, cache_dir=cache_dir)
    net = load_feature_net(dataset)
    results: dict[str, dict] = {}

    started = time.perf_counter()
    config = TrainConfig.from_dict({
        "img_size": img_size, "img_channels": 1, "z_dim": z_dim, "g_channels": width, "d_channels": width,
        "batch_size": batch_size, "steps": steps, "sample_every": 0, "checkpoint_every": 0, "seed": seed,
        **(overrides or {})})
    with tempfile.TemporaryDirectory() as run_dir:
        ours = Sampler.from_file(train(config, images, Path(run_dir), device=device).generator_path)
    train_seconds = round(time.perf_counter() - started, 1)  # training only, as the baseline's is
    results["ours"] = _score(lambda start, count: ours.images_for_seeds(range(start, start + count)),
                             images, dataset, net, num, cache_dir)
    results["ours"]["train_seconds"] = train_seconds
    ours_grid = grid_image(ours.images_for_seeds(range(64)))
    summary = {"steps": steps, "batch_size": batch_size, "width": width, "z_dim": z_dim, "seed": seed,
               "dataset": f"{dataset} {img_size}x{img_size}", "overrides": overrides or {}, "ours": results["ours"]}
    if baseline is None:
        return summary

    trainer, grid_name = BASELINES[baseline]
    started = time.perf_counter()
    data = TensorDataset(to_model_range(images.images))  # main.py's ToTensor + Normalize, precomputed
    loader = seed_dataloader(data, batch_size) if workers else \
        torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True)
    snapshot = {"seconds": train_seconds} if equal_time else None
    generator = trainer(loader, baseline_steps or steps, nz=z_dim, ngf=width, ndf=width, nc=1, img_size=img_size,
                        seed=seed, device=device, **({"snapshot": snapshot} if equal_time else {})).cpu()
    train_seconds = round(time.perf_counter() - started, 1)
    best, results["baseline"] = _score_baseline(generator, z_dim, images, dataset, net, num, cache_dir)
    results["baseline"].update(recipe=baseline, steps=baseline_steps or steps, train_seconds=train_seconds)
    if snapshot is not None:
        # No copy: the baseline finished all its steps within our time, so its final G is its equal-time G.
        _, results["baseline_equal_time"] = _score_baseline(snapshot.get("generator", generator).cpu(), z_dim,
                                                            images, dataset, net, num, cache_dir)
        results["baseline_equal_time"].update(
            recipe=baseline, steps=snapshot.get("steps", baseline_steps or steps),
            train_seconds=snapshot["seconds"], capped_by_steps="generator" not in snapshot)
    if out_dir is not None:
        save_png(ours_grid, out_dir / f"quality-{dataset}-ours.png")
        save_png(grid_image(_baseline_sampler(generator, z_dim, best == "train")(0, 64)),
                 out_dir / f"quality-{dataset}-{grid_name}.png")
    extra = {} if snapshot is None else {
        "baseline_equal_time": results["baseline_equal_time"],
        "fid_ratio_ours_over_baseline_equal_time": results["ours"]["fid"] / results["baseline_equal_time"]["fid"]}
    return {**summary, "baseline": results["baseline"],
            "fid_ratio_ours_over_baseline": results["ours"]["fid"] / results["baseline"]["fid"], **extra}


def compare_seeds(seeds: list[int], out_dir: Path | None = None, **options) -> dict:
    """`compare` once per training seed (grids from the first), with each side's mean and spread."""
    runs = [compare(seed=seed, out_dir=out_dir if i == 0 else None, **options) for i, seed in enumerate(seeds)]
    return summarise(runs)


def summarise(runs: list[dict]) -> dict:
    """Each side's mean and spread over runs of one setup (one dict per training seed, as `compare` returns)."""
    sides = [side for side in ("ours", "baseline", "baseline_equal_time") if side in runs[0]]
    summary = {side: {name: _spread([run[side][name] for run in runs]) for name in SUMMARY} for side in sides}
    if "baseline_equal_time" in summary:
        summary["baseline_equal_time"]["steps"] = _spread([run["baseline_equal_time"]["steps"] for run in runs])
    result = {"seeds": [run["seed"] for run in runs], "summary": summary, "runs": runs}
    if "baseline" in summary:
        result["fid_ratio_of_means"] = summary["ours"]["fid"]["mean"] / summary["baseline"]["fid"]["mean"]
    if "baseline_equal_time" in summary:
        result["fid_ratio_of_means_equal_time"] = (summary["ours"]["fid"]["mean"]
                                                   / summary["baseline_equal_time"]["fid"]["mean"])
    return result


def merge(results: list[dict]) -> dict:
    """Several outputs of this script (e.g. one training seed per process or per day) as one: refused when
    their setups differ or a seed repeats. The machines each ran on are kept, in order."""
    runs = [run for result in results for run in result["runs"]]
    setup = ("steps", "batch_size", "width", "z_dim", "dataset", "overrides")
    first = {key: runs[0][key] for key in setup}
    for run in runs[1:]:
        if {key: run[key] for key in setup} != first:
            raise ValueError(f"seed {run['seed']} ran another setup: {({key: run[key] for key in setup})} "
                             f"against {first}")
        if "baseline" in run and run["baseline"]["recipe"] != runs[0]["baseline"]["recipe"]:
            raise ValueError(f"seed {run['seed']} has another baseline")
    seeds = [run["seed"] for run in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"a training seed repeats: {seeds}")
    sides = {tuple(side for side in ("baseline", "baseline_equal_time") if side in run) for run in runs}
    if len(sides) != 1:
        raise ValueError("some runs have an equal-time or baseline side and others do not")
    return {**summarise(runs), "machines": [result.get("machine") for result in results]}


def _spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def _baseline_sampler(generator: torch.nn.Module, z_dim: int, train_mode: bool):
    @torch.no_grad()
    def generate(start: int, count: int) -> torch.Tensor:
        generator.train(train_mode)
        z = noise_for_seeds(range(start, start + count), z_dim)
        # Train-mode BatchNorm depends on the batch: draw in batches of 64 as main.py's grids do.
        return torch.cat([generator(chunk) for chunk in z.split(64)]).float()

    return generate


def _score_baseline(generator: torch.nn.Module, z_dim: int, images, dataset: str, net, num: int,
                    cache_dir: Path | None) -> tuple[str, dict]:
    """The baseline's scores in the BatchNorm mode that serves it better, with the other mode's FID beside."""
    candidates = {mode: _score(_baseline_sampler(generator, z_dim, mode == "train"), images, dataset, net, num,
                               cache_dir) for mode in ("eval", "train")}
    best = min(candidates, key=lambda mode: candidates[mode]["fid"])
    other = candidates["train" if best == "eval" else "eval"]["fid"]
    return best, {**candidates[best], "bn_mode": best, "fid_other_bn_mode": other}


def _score(generate, images, dataset: str, net, num: int, cache_dir: Path | None) -> dict:
    result = evaluate(generate, images.images, dataset=dataset, num=num, feature_net=net, cache_dir=cache_dir)
    keep = ("fid", "kid_mean", "kid_std", "is_mean", "is_std", "feature_net", "num_samples", "preprocess")
    return {k: result[k] for k in keep}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--width", type=int, default=64, help="ngf = ndf")
    parser.add_argument("--num", type=int, default=2000)
    parser.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated")
    parser.add_argument("--dataset", default="digits", choices=("digits", "fashion-mnist"))
    parser.add_argument("--img-size", type=int, default=32, choices=(32, 64))
    parser.add_argument("--baseline", default="standard", choices=(*BASELINES, "none"))
    parser.add_argument("--baseline-steps", type=int, default=None,
                        help="the baseline's steps, when not --steps (e.g. what it trains in our wall-clock time)")
    parser.add_argument("--equal-time", action="store_true",
                        help="also score the standard recipe's G as it was when its clock reached our training time")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                        help="print the outputs of earlier runs (one seed each, say) as one, and train nothing")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override our config")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "dcgan-platform")
    args = parser.parse_args()
    if args.merge:
        print(json.dumps(merge([json.loads(path.read_text()) for path in args.merge]), indent=2))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    flags = sorted({flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
                    if flag in Path("/proc/cpuinfo").read_text().split()})
    result = compare_seeds([int(s) for s in args.seeds.split(",")], out_dir=args.out, steps=args.steps,
                           width=args.width, num=args.num, cache_dir=args.cache_dir,
                           overrides=parse_set_options(args.set), device=args.device,
                           baseline=None if args.baseline == "none" else args.baseline, dataset=args.dataset,
                           img_size=args.img_size, baseline_steps=args.baseline_steps,
                           equal_time=args.equal_time)
    result["machine"] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu_flags": flags,
                         "threads": torch.get_num_threads(), "device": args.device}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
