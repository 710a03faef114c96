"""Scoring a generator while it trains (config `eval_every`, `eval_num`, `eval_net`) and keeping the best.

At each evaluation step the EMA generator (the one that is exported and sampled) is copied, put in eval
mode and sampled by `core.gan.sample.Sampler` on the fixed seeds 0..eval_num-1 -- the images an evaluate
job or `dcgan eval` would score for the exported generator -- and scored with `core.gan.metrics.evaluate`
(FID and KID; Heusel et al. 2017, Binkowski et al. 2018) against the training images, whose statistics are
computed once and cached on disk. The feature network is loaded once per run. The generator with the lowest
FID so far is the run's *best* (`TrainingEvaluator.best`), kept in every checkpoint so a resumed run keeps
it.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import TrainConfig
from .data import ImageSet
from .metrics import load_feature_net, evaluate, resolve_feature_net
from .sample import Sampler, SamplerOptions

# Images per forward pass when scoring on a GPU: exactness per seed (MICRO_BATCH's 1) costs too much there.
GPU_EVAL_MICRO_BATCH = 256


@dataclass(frozen=True)
class Scores:
    step: int
    fid: float
    kid: float
    seconds: float  # wall time of the evaluation (sampling, features, metrics)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TrainingEvaluator:
    """Scores generators of one run against its training images with one feature network."""

    def __init__(self, config: TrainConfig, data: ImageSet, device: torch.device, cache_dir: Path | None):
        self.config, self.data, self.device, self.cache_dir = config, data, torch.device(device), cache_dir
        self.net = load_feature_net(resolve_feature_net(config.eval_net, data.name), self.device)
        self.real = data.images.cpu()
        # {"step", "fid", "kid"} of the best generator so far: None before the first evaluation; a checkpoint
        # or the host (core.gan.train.train's `best`) sets it on a resumed run.
        self.best: dict[str, Any] | None = None

    def due(self, step: int, total: int) -> bool:
        every = self.config.eval_every
        return bool(every) and (step % every == 0 or step == total)

    def score(self, generator: nn.Module, step: int) -> Scores:
        started = time.perf_counter()
        micro_batch = None if self.device.type == "cpu" else GPU_EVAL_MICRO_BATCH
        # fp32 and the default memory layout: the generator exactly as the exported file loads, so the FID
        # recorded here is the one an evaluate job on that file gives.
        model = copy.deepcopy(generator).float().to(memory_format=torch.contiguous_format)
        sampler = Sampler(model, self.config, self.device, SamplerOptions(micro_batch=micro_batch))
        result = evaluate(lambda start, count: sampler.images_for_seeds(range(start, start + count)), self.real,
                          dataset=self.data.name, metrics=("fid", "kid"), num=self.config.eval_num,
                          feature_net=self.net, cache_dir=self.cache_dir, device=self.device)
        return Scores(step, result["fid"], result["kid_mean"], time.perf_counter() - started)

    def improves(self, scores: Scores) -> bool:
        """Whether `scores` beat the best so far; if so they become the best."""
        if self.best is not None and scores.fid >= self.best["fid"]:
            return False
        self.best = {"step": scores.step, "fid": scores.fid, "kid": scores.kid}
        return True
