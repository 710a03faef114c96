"""Quality at equal work: our trainer's defaults vs the seed article's recipe on `digits` at 32x32.

Both train for the same number of G updates at batch 64 (nz 100, ngf = ndf = 64; the recipe adapted to
32x32 by dropping one block each side), then each generator draws 2,000 seeded samples that are scored with
the project's digits feature network (FID, KID, IS; see core/gan/metrics.py). The seed recipe's generator is
scored both in eval mode (BatchNorm running statistics, as our sampler does) and in train mode (batch
statistics, as the article samples); the better of the two is its figure, so the baseline is not handicapped.

    .venv/bin/python bench/quality.py                     # the README's figures (500 steps; ~15 min on 2 CPUs)
    .venv/bin/python bench/quality.py --steps 150 --width 32   # a quick look

Writes grids of seeds 0-63 for both to --out (default docs/) and prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.seed_recipe import seed_dataloader, train_seed_recipe  # noqa: E402
from core.gan.config import TrainConfig, parse_set_options  # noqa: E402
from core.gan.data import load_images, to_model_range  # noqa: E402
from core.gan.metrics import evaluate, load_feature_net  # noqa: E402
from core.gan.sample import Sampler, grid_image, noise_for_seeds, save_png  # noqa: E402
from core.gan.train import train  # noqa: E402


def compare(steps: int = 500, width: int = 64, z_dim: int = 100, batch_size: int = 64, num: int = 2000,
            out_dir: Path | None = None, cache_dir: Path | None = None, seed: int = 0,
            workers: int = 2, overrides: dict | None = None, device: str = "cpu", baseline: bool = True) -> dict:
    digits = load_images("digits", 32, 1, cache_dir=cache_dir)
    net = load_feature_net("digits")
    results: dict[str, dict] = {}

    started = time.perf_counter()
    config = TrainConfig.from_dict({
        "img_size": 32, "img_channels": 1, "z_dim": z_dim, "g_channels": width, "d_channels": width,
        "batch_size": batch_size, "steps": steps, "sample_every": 0, "checkpoint_every": 0, "seed": seed,
        **(overrides or {})})
    with tempfile.TemporaryDirectory() as run_dir:
        ours = Sampler.from_file(train(config, digits, Path(run_dir), device=device).generator_path)
    results["ours"] = _score(lambda start, count: ours.images_for_seeds(range(start, start + count)),
                             digits, net, num, cache_dir)
    results["ours"]["train_seconds"] = round(time.perf_counter() - started, 1)
    ours_grid = grid_image(ours.images_for_seeds(range(64)))
    if not baseline:
        return {"steps": steps, "width": width, "overrides": overrides or {}, "ours": results["ours"]}

    started = time.perf_counter()
    dataset = TensorDataset(to_model_range(digits.images))  # the article's ToTensor + Normalize, precomputed
    loader = seed_dataloader(dataset, batch_size) if workers else \
        torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)
    seed_g = train_seed_recipe(loader, steps, nz=z_dim, ngf=width, ndf=width, nc=1, img_size=32, seed=seed,
                               device=device).cpu()
    train_seconds = round(time.perf_counter() - started, 1)
    candidates = {mode: _score(_seed_sampler(seed_g, z_dim, mode == "train"), digits, net, num, cache_dir)
                  for mode in ("eval", "train")}
    best = min(candidates, key=lambda mode: candidates[mode]["fid"])
    results["seed_recipe"] = {**candidates[best], "bn_mode": best, "fid_other_bn_mode": candidates[
        "train" if best == "eval" else "eval"]["fid"], "train_seconds": train_seconds}
    seed_grid = grid_image(_seed_sampler(seed_g, z_dim, best == "train")(0, 64))

    if out_dir is not None:
        save_png(ours_grid, out_dir / "quality-ours.png")
        save_png(seed_grid, out_dir / "quality-seed-recipe.png")
    return {
        "steps": steps, "batch_size": batch_size, "width": width, "z_dim": z_dim, "dataset": "digits 32x32",
        "ours": results["ours"], "seed_recipe": results["seed_recipe"],
        "fid_ratio_ours_over_seed": results["ours"]["fid"] / results["seed_recipe"]["fid"],
    }


def _seed_sampler(generator: torch.nn.Module, z_dim: int, train_mode: bool):
    @torch.no_grad()
    def generate(start: int, count: int) -> torch.Tensor:
        generator.train(train_mode)
        z = noise_for_seeds(range(start, start + count), z_dim)
        # Train-mode BatchNorm depends on the batch: draw in batches of 64 as the article's grids do.
        return torch.cat([generator(chunk) for chunk in z.split(64)]).float()

    return generate


def _score(generate, digits, net, num: int, cache_dir: Path | None) -> dict:
    result = evaluate(generate, digits.images, dataset="digits", num=num, feature_net=net, cache_dir=cache_dir)
    keep = ("fid", "kid_mean", "kid_std", "is_mean", "is_std", "feature_net", "num_samples", "preprocess")
    return {k: result[k] for k in keep}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--width", type=int, default=64, help="ngf = ndf")
    parser.add_argument("--num", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override our config")
    parser.add_argument("--no-baseline", action="store_true", help="train and score ours only")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "dcgan-platform")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = compare(args.steps, args.width, num=args.num, out_dir=args.out, cache_dir=args.cache_dir,
                     seed=args.seed, overrides=parse_set_options(args.set), device=args.device,
                     baseline=not args.no_baseline)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
