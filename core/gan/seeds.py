"""Sampling inputs -- seed lists, truncation -- and their errors, free of torch so the API and the worker
check a request with exactly the engine's rules before any model is loaded.

Every name, default and bound of a sampling request is here once: the request models (core.request_models),
the sampler (core.gan.sample) and the command line read them from this module.
"""

from __future__ import annotations

import re
from typing import Iterable

from .errors import GanError

MAX_SEEDS = 100_000
MAX_SEED = 2**63 - 1
# What `dcgan sample` draws by default: the seeds of a training run's default 64-image grid.
DEFAULT_SEEDS = "0-63"
# The truncation trick's psi: z is scaled by it, in (0, TRUNCATION_MAX]; 1.0 leaves z as drawn.
TRUNCATION_MAX = 1.0
DEFAULT_TRUNCATION = 1.0


class SampleError(GanError):
    """Bad sampling input (seed list, truncation, frame count)."""


def parse_seeds(spec: str | Iterable[int]) -> list[int]:
    """`"0-63"`, `"1,5,9-12"` or a list of ints -> list of seeds (order kept)."""
    if not isinstance(spec, str):
        seeds = [int(s) for s in spec]
    else:
        seeds = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if not match:
                raise SampleError(f"seeds: {part!r} is not a seed or a range like 0-63")
            start, end = int(match[1]), int(match[2] or match[1])
            if end < start:
                raise SampleError(f"seeds: range {part!r} runs backwards")
            if end - start + 1 + len(seeds) > MAX_SEEDS:
                raise SampleError(f"seeds: more than {MAX_SEEDS} seeds")
            seeds.extend(range(start, end + 1))
    if not seeds:
        raise SampleError("seeds: none given")
    if len(seeds) > MAX_SEEDS:
        raise SampleError(f"seeds: more than {MAX_SEEDS} seeds")
    if any(s < 0 or s > MAX_SEED for s in seeds):
        raise SampleError("seeds: each seed must be in [0, 2^63)")
    return seeds


def check_truncation(truncation: float) -> float:
    """`truncation` if it is in (0, TRUNCATION_MAX], else a SampleError naming it."""
    if not 0 < truncation <= TRUNCATION_MAX:
        raise SampleError(f"truncation must be in (0, {TRUNCATION_MAX:g}], got {truncation}")
    return truncation
