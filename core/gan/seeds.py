"""Seed lists and sampling-input errors, free of torch so the API validates requests without loading it."""

from __future__ import annotations

import re
from typing import Iterable

from .errors import GanError

MAX_SEEDS = 100_000


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
    if any(s < 0 or s >= 2**63 for s in seeds):
        raise SampleError("seeds: each seed must be in [0, 2^63)")
    return seeds
