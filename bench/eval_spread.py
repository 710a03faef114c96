"""FID's spread against the number of generated samples, to choose the default `eval_num` (issue 10).

A generator scored on `num` seeded samples gets an FID that depends on which seeds were drawn. Evaluation
during training scores the EMA generator on fixed seeds every `eval_every` steps and keeps the lowest FID,
so `num` must be large enough that the seeds' noise is small against (a) the FID itself and (b) the change
of FID between two evaluation points, and small enough that scoring does not stall training.

This bench trains a digits 32x32 generator with the project's default config (except img_size 32,
img_channels 1) and keeps its EMA generator at an early step (100), at a mid-training step N (400) and at
N + 100, training to each step in turn and resuming from the checkpoint (`core.gan.train.train`). Each
generator is scored with the `digits` feature network on disjoint seed sets, seeds [k * num, (k + 1) * num)
for k < pool / num, for several `num`: FID on every set, KID (`core.gan.metrics.evaluate`) on the first few.
Per generator and num it reports the mean FID, its std over the sets, std / mean, KID, and what one
evaluation costs with the real statistics cached: `evaluate()` from seeds to FID + KID, timed on set 0 in
wall and in CPU seconds. For N vs N + 100 it reports the paired difference per seed set: evaluation during
training compares two steps on the same seeds, so the std of that difference, not the std of either FID, is
the noise in deciding which step is better.

Many sets, because a std from K sets is itself uncertain by about 1 / sqrt(2 (K - 1)): at step 400, 10 sets
of 1,000 seeds gave 1.7% in a first version of this bench, the 40 sets here 2.4%, and 400 random subsets of
the same 40,000 seeds 3.2%. So the generator draws the whole pool of seeds once, the
feature network sees it once, and each set's FID comes from those features through
`core.gan.metrics.fid_from_features` (evaluate()'s own FID code); the bench checks that set 0 gives the same
FID as the timed evaluate() from seeds.

    .venv/bin/python bench/eval_spread.py                       # docs/eval-spread-cpu.txt (~7 min, 2 CPUs)
    .venv/bin/python bench/eval_spread.py --nums 250,500 --pool 5000 --steps 200   # a quick look
    .venv/bin/python bench/eval_spread.py --generator runs/x/generator.safetensors   # spread of one generator

Threads: 1 by default. With other work on this 2-core CPU, 2 threads measured 0.18-1.6 s per training step
against 0.27-0.34 s with 1, and 1.6-16 s against 2.9-4.0 s per 1,000-sample evaluation (OpenMP threads
waiting for a core); on an idle machine 2 threads were up to 2x faster (--threads 2). CPU seconds are
reported beside wall seconds because other work on the machine stretches the latter.

FIDs at different num are not comparable (FID is biased upwards at small sample counts); only the spread
and the differences at one num are.
"""

from __future__ import annotations

import argparse
import datetime
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a script, like bench/quality.py

from bench.machine import cpu_flags  # noqa: E402
from core.gan.config import TrainConfig  # noqa: E402
from core.gan.data import load_images, to_uint8  # noqa: E402
from core.gan.metrics import evaluate, fid_from_features, load_feature_net  # noqa: E402
from core.gan.sample import Sampler  # noqa: E402
from core.gan.train import train  # noqa: E402

STEP_GAP = 100  # evaluation points compared: N and N + STEP_GAP, i.e. eval_every=100




def train_snapshots(stages: list[int], digits, seed: int) -> tuple[dict[int, Sampler], float, float]:
    """Train to each step of `stages` in turn, resuming from the last checkpoint, and load the exported EMA
    generator at each; returns {step: sampler} and the wall and CPU seconds per training step."""
    config = TrainConfig.from_dict({"img_size": 32, "img_channels": 1, "sample_every": 0, "checkpoint_every": 0,
                                    "seed": seed, "steps": stages[0]})
    samplers, checkpoint, wall, cpu = {}, None, 0.0, 0.0
    with tempfile.TemporaryDirectory() as run_dir:
        for step in stages:
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            result = train(config.replace(steps=step), digits, Path(run_dir), device="cpu", resume_from=checkpoint)
            wall, cpu = wall + time.perf_counter() - wall_start, cpu + time.process_time() - cpu_start
            checkpoint = result.checkpoint_path
            samplers[step] = Sampler.from_file(result.generator_path)
            print(f"trained to step {step}: {wall:.0f} s wall, {cpu:.0f} s CPU so far", flush=True)
    return samplers, wall / stages[-1], cpu / stages[-1]


def seeded_images(sampler: Sampler, count: int, chunk: int = 1000) -> torch.Tensor:
    """uint8 images for seeds 0..count-1, quantized as evaluate() quantizes them."""
    return torch.cat([to_uint8(sampler.images_for_seeds(range(start, min(start + chunk, count))))
                      for start in range(0, count, chunk)])


def features(net, images: torch.Tensor) -> np.ndarray:
    """The feature network's float64 features of uint8 images, in chunks it can hold."""
    return torch.cat([net(images[i:i + net.max_batch])[0].double().cpu()
                      for i in range(0, len(images), net.max_batch)]).numpy()


def score(images, digits, net, num: int, cache_dir: Path, metrics=("fid", "kid")) -> dict:
    """One evaluate() call on `images` (uint8 images, or a generate(start, count) callable) with its cost."""
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    result = evaluate(images, digits.images, dataset="digits", num=num, feature_net=net, cache_dir=cache_dir,
                      metrics=metrics)
    return {"fid": result.get("fid"), "kid": result.get("kid_mean"), "real_stats": result["real_stats"],
            "wall": time.perf_counter() - wall_start, "cpu": time.process_time() - cpu_start}


def spread_at(sampler: Sampler, digits, net, real: np.ndarray, nums: list[int], pool: int, kid_sets: int,
              cache_dir: Path) -> dict[int, dict]:
    """Per num: FID on each disjoint seed set of the pool, KID on the first `kid_sets`, and the cost of one
    evaluation from seeds."""
    images = seeded_images(sampler, pool)
    fake = features(net, images)
    by_num = {}
    for num in nums:
        fids = [fid_from_features(real, fake[k * num:(k + 1) * num]) for k in range(pool // num)]
        kids = [score(images[k * num:(k + 1) * num], digits, net, num, cache_dir, ("kid",))["kid"]
                for k in range(kid_sets)]
        timed = score(lambda start, count: sampler.images_for_seeds(range(start, start + count)), digits, net,
                      num, cache_dir)
        if not math.isclose(timed["fid"], fids[0], rel_tol=1e-6):
            raise SystemExit(f"num {num}: evaluate() from seeds gives FID {timed['fid']}, the pooled features "
                             f"{fids[0]}; the seed sets would not be what evaluation during training scores")
        mean, std = statistics.mean(fids), statistics.stdev(fids)
        by_num[num] = {"fids": fids, "fid": mean, "std": std, "pct": 100 * std / mean, "kid": statistics.mean(kids),
                       "kid_std": statistics.stdev(kids), "wall": timed["wall"], "cpu": timed["cpu"]}
    return by_num


def recommend(spread: dict[int, dict[int, dict]], pairs: dict[int, dict], tolerance: float) -> int | None:
    """The smallest num whose FID std, as root mean square of std / mean over the generators in `spread`, is
    within `tolerance` %, and whose paired step-to-step difference (where measured) exceeds 3 std of itself.

    Pooled rather than worst-case: the generators share their seed sets, and one std from K sets is itself
    uncertain by about 1 / sqrt(2 (K - 1)), so the worst of several would pick on noise."""
    for num in sorted(next(iter(spread.values()))):
        pooled = math.sqrt(statistics.mean(by_num[num]["pct"] ** 2 for by_num in spread.values()))
        if pooled <= tolerance and (num not in pairs or abs(pairs[num]["diff"]) >= 3 * pairs[num]["std"]):
            return num
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help=f"mid-training step N; also scored at N + {STEP_GAP}")
    parser.add_argument("--early", type=int, default=100, help="early step also scored (0: skip)")
    parser.add_argument("--nums", default="250,500,1000,2000,4000", help="sample counts, comma-separated")
    parser.add_argument("--pool", type=int, default=40_000, help="seeds drawn; pool / num disjoint sets per num")
    parser.add_argument("--kid-sets", type=int, default=5, help="sets per num also scored for KID")
    parser.add_argument("--tolerance", type=float, default=2.0, help="FID std allowed, %% of the mean")
    parser.add_argument("--generator", type=Path, help="score this generator instead of training")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "dcgan-platform")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    nums = sorted(int(n) for n in args.nums.split(","))
    if args.pool // max(nums) < 2 or args.kid_sets < 2 or args.pool // max(nums) < args.kid_sets:
        parser.error(f"--pool {args.pool} gives {args.pool // max(nums)} sets of {max(nums)}; a spread needs at "
                     f"least 2 and at least --kid-sets ({args.kid_sets}, itself at least 2)")
    started = time.perf_counter()
    print(f"date {datetime.date.today().isoformat()}, CPU flags: {cpu_flags()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"digits 32x32, feature net digits, seeds 0..{args.pool - 1} in pool / num disjoint sets per num "
          f"(FID on all, KID on the first {args.kid_sets}), nums {nums}", flush=True)

    digits = load_images("digits", 32, 1, cache_dir=args.cache_dir)
    net = load_feature_net("digits")
    step_wall = step_cpu = None
    if args.generator:
        samplers = {0: Sampler.from_file(args.generator)}
    else:
        stages = sorted({s for s in (args.early, args.steps, args.steps + STEP_GAP) if s > 0})
        samplers, step_wall, step_cpu = train_snapshots(stages, digits, args.seed)
        print(f"training: {step_wall:.2f} s wall, {step_cpu:.2f} s CPU per step (default config, precision auto)")
    # Warm-up: fills the real-statistics cache and imports torchmetrics, so timings are scoring alone.
    warm = score(seeded_images(next(iter(samplers.values())), 50), digits, net, 50, args.cache_dir)
    print(f"real statistics: {warm['real_stats']} ({len(digits)} real images)", flush=True)
    real = features(net, digits.images)

    spread: dict[int, dict[int, dict]] = {}
    print(f"\n{'step':>6} {'num':>6} {'sets':>5} {'FID mean':>9} {'std':>7} {'std %':>6} {'KID mean':>9} "
          f"{'KID std':>8} {'s/eval':>7} {'CPU s':>6}")
    for step, sampler in samplers.items():
        spread[step] = spread_at(sampler, digits, net, real, nums, args.pool, args.kid_sets, args.cache_dir)
        for num, s in spread[step].items():
            print(f"{step or 'given':>6} {num:>6} {len(s['fids']):>5} {s['fid']:>9.2f} {s['std']:>7.2f} "
                  f"{s['pct']:>5.1f}% {s['kid']:>9.4g} {s['kid_std']:>8.3g} {s['wall']:>7.2f} {s['cpu']:>6.2f}",
                  flush=True)

    mid = 0 if args.generator else args.steps
    print(f"\none evaluation from seeds at {'the given generator' if args.generator else f'step {mid}'}, "
          f"CPU seconds: FID + KID (as above) vs FID alone")
    print(f"{'num':>6} {'FID+KID':>8} {'FID only':>9}")
    for num in nums:
        fid_only = score(lambda start, count: samplers[mid].images_for_seeds(range(start, start + count)), digits,
                         net, num, args.cache_dir, metrics=("fid",))
        print(f"{num:>6} {spread[mid][num]['cpu']:>8.2f} {fid_only['cpu']:>9.2f}", flush=True)

    pairs: dict[int, dict] = {}
    if not args.generator:
        a, b = args.steps, args.steps + STEP_GAP
        print(f"\nstep {a} -> {b}, paired on the same seed sets (FID at {b} minus FID at {a}, per set)")
        print(f"{'num':>6} {'diff mean':>10} {'diff std':>9} {'|diff|/std':>11} {'sets agreeing':>14}")
        for num in nums:
            diffs = [fb - fa for fa, fb in zip(spread[a][num]["fids"], spread[b][num]["fids"])]
            mean, std = statistics.mean(diffs), statistics.stdev(diffs)
            agree = sum((d < 0) == (mean < 0) for d in diffs)
            pairs[num] = {"diff": mean, "std": std}
            print(f"{num:>6} {mean:>10.2f} {std:>9.2f} {abs(mean) / std:>11.1f} {f'{agree}/{len(diffs)}':>14}")

    print()
    # The rule looks at the mid-training generators: the early one is shown because FID's spread depends on
    # its level, but a still-random generator's large FID would dilute the pooled std.
    judged = {step: spread[step] for step in ((0,) if args.generator else (args.steps, args.steps + STEP_GAP))}
    where = "the given generator" if args.generator else f"steps {args.steps} and {args.steps + STEP_GAP}"
    rule = f"FID std <= {args.tolerance}% of the mean (RMS over {where})" + (
        f" and a step {args.steps} -> {args.steps + STEP_GAP} difference >= 3x its paired std" if pairs else "")
    choice = recommend(judged, pairs, args.tolerance)
    if choice is None:
        print(f"recommendation: none of {nums} has {rule}; measure larger nums")
    else:
        cpu = statistics.median(spread[step][choice]["cpu"] for step in judged)
        print(f"recommendation: eval_num = {choice}, the smallest num with {rule}")
        print(f"cost: {cpu:.2f} CPU s per evaluation" + (
            f"; at eval_every={STEP_GAP}, {100 * cpu / (cpu + STEP_GAP * step_cpu):.1f}% of the run's CPU time "
            f"({STEP_GAP * step_cpu:.0f} CPU s of training per {STEP_GAP} steps)" if step_cpu else ""))
    print(f"bench wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
