"""What evaluation during training costs: the share of wall time spent scoring, and Inception on a CPU.

1. Trains digits 32x32 (the default config otherwise: width 64, batch 64) for --steps with eval_every=100
   and the default eval_num / eval_net (the digits network), timing each evaluation from the Progress the
   loop reports; prints the share of the run's wall time that went into scoring. A second run without
   evaluation, in the same process, gives the plain training time to compare with.
2. Times Inception's forward pass per image on --inception-num generated images, and what an evaluation and
   the one-off real statistics cost at that rate: what a run on an uploaded dataset (eval_net auto =
   Inception) would pay on this machine.

Run from the repo root:  .venv/bin/python bench/eval_overhead.py   (about 5-10 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a script, like bench/quality.py

from bench.machine import cpu_flags  # noqa: E402
from core.gan.config import TrainConfig  # noqa: E402
from core.gan.data import load_images  # noqa: E402
from core.gan.data import to_uint8  # noqa: E402
from core.gan.metrics import load_feature_net  # noqa: E402
from core.gan.sample import Sampler  # noqa: E402
from core.gan.train import Callbacks, train  # noqa: E402




def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--inception-num", type=int, default=100)
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "dcgan-platform")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# eval_overhead {datetime.date.today()} | {platform.processor() or platform.machine()} | cpu flags: "
          f"{cpu_flags()} | torch {torch.__version__} | threads {torch.get_num_threads()}")
    data = load_images("digits", 32, 1, cache_dir=args.cache_dir)
    base = TrainConfig.from_dict({"img_size": 32, "img_channels": 1, "steps": args.steps, "sample_every": 0,
                                  "checkpoint_every": 0})
    evaluated = base.replace(eval_every=100)
    timings = {}
    for name, config in (("without evaluation", base), ("eval_every=100", evaluated)):
        progress = []
        with tempfile.TemporaryDirectory() as out:
            started = time.perf_counter()
            result = train(config, data, Path(out), device="cpu", cache_dir=args.cache_dir,
                           callbacks=Callbacks(on_progress=progress.append))
            timings[name] = (time.perf_counter() - started, progress, result)
    wall, progress, result = timings["eval_every=100"]
    scoring = [p.eval_seconds for p in progress if p.eval_seconds is not None]
    plain = timings["without evaluation"][0]
    print(f"digits 32x32, {args.steps} steps, eval_num {evaluated.eval_num}, eval_net {evaluated.eval_net} "
          f"(-> digits)")
    print(f"  without evaluation: {plain:.1f} s")
    print(f"  eval_every=100:     {wall:.1f} s, {len(scoring)} evaluations "
          f"({', '.join(f'{s:.2f}' for s in scoring)} s; the first computes and caches the real statistics)")
    print(f"  scoring: {sum(scoring):.1f} s = {100 * sum(scoring) / wall:.1f}% of the run's wall time "
          f"(the run's wall time against the one without: {100 * (wall - plain) / plain:+.1f}%, noisy on a shared "
          f"machine; the scoring share is measured inside the run)")
    print(f"  best: {result.best}")

    # Inception: time its forward pass per image (the 299x299 resize included) on generated images, and say
    # what an evaluation and the one-off real statistics would cost at that rate; scoring the full dataset
    # here would take the better part of an hour on this CPU.
    net = load_feature_net("inception", "cpu")
    with tempfile.TemporaryDirectory() as out:
        sampler = Sampler.from_file(train(base.replace(steps=10), data, Path(out), device="cpu").generator_path)
    images = to_uint8(sampler.images_for_seeds(range(args.inception_num)))
    net(images[:2])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(images), net.max_batch):
        net(images[start:start + net.max_batch])
    per_image = (time.perf_counter() - started) / len(images)
    evaluation = per_image * evaluated.eval_num
    print(f"inception on this CPU: {1000 * per_image:.0f} ms per image ({args.inception_num} generated 32x32 "
          f"images, resized to 299x299); an evaluation at eval_num {evaluated.eval_num} would take "
          f"~{evaluation:.0f} s, the real statistics of the 1,797 digits ~{per_image * 1797:.0f} s once, of "
          f"Fashion-MNIST's 70,000 ~{per_image * 70000 / 60:.0f} min once")
    return 0


if __name__ == "__main__":
    sys.exit(main())
