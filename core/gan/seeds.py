"""Sampling inputs -- seed lists, truncation -- and their errors, free of torch so the API and the worker
check a request with exactly the engine's rules before any model is loaded.

Every name, default and bound of a sampling request is here once: the request models (core.request_models),
the sampler (core.gan.sample) and the command line read them from this module.
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Iterable, Iterator

from .errors import GanError

# The most seeds expanded into one list: what `dcgan sample` and the synchronous sampling routes render in one
# go (all in memory). Generate jobs never expand theirs (SeedRanges); their cap is the server's
# DCGAN_MAX_SEEDS_PER_JOB (core.settings), which the API applies.
MAX_SEEDS = 100_000
MAX_SEED = 2**63 - 1
_SEED_DIGITS = len(str(MAX_SEED))
# What `dcgan sample` draws by default: the seeds of a training run's default 64-image grid.
DEFAULT_SEEDS = "0-63"
# A generate job renders, encodes and writes this many seeds at a time (its heartbeat and cancel check run
# between chunks): its float output is GENERATE_CHUNK x C x H x W x 4 bytes, 48 MiB at 128x128 RGB.
GENERATE_CHUNK = 256
# A generate job's grid shows at most this many images, its first seeds; a job of more seeds also gets every
# image in a tar (worker.generation). 1024 uint8 images at 128x128 RGB are 48 MiB.
GRID_MAX = 1024
# The truncation trick's psi: z is scaled by it, in (0, TRUNCATION_MAX]; 1.0 leaves z as drawn.
TRUNCATION_MAX = 1.0
DEFAULT_TRUNCATION = 1.0


class SampleError(GanError):
    """Bad sampling input (seed list, truncation, frame count)."""


class TooManySeeds(SampleError):
    """More seeds than a limit allows; `count` is how many were asked for (counted, never expanded)."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"seeds: {count} asked for, at most {limit}")
        self.count, self.limit = count, limit


class SeedRanges:
    """Seeds as the ranges a client sent, in their order: counted, walked and chunked without being expanded.

    `"0-99999"` is one range, so a request for 100,000 seeds costs a few bytes in the job row and nothing in
    memory until the worker walks it. Consecutive seeds are merged (`[1, 2, 3, 7]` is `"1-3,7"`); repeats and
    descending runs are kept as sent (a seed asked for twice is rendered twice). `str()` is the compact form the
    job row stores; `parse(str(r)) == r`.
    """

    __slots__ = ("ranges", "count")

    def __init__(self, ranges: Iterable[tuple[int, int]]) -> None:
        merged: list[tuple[int, int]] = []
        for start, end in ranges:
            if merged and merged[-1][1] + 1 == start:
                merged[-1] = (merged[-1][0], end)
            else:
                merged.append((start, end))
        self.ranges: tuple[tuple[int, int], ...] = tuple(merged)  # inclusive (first, last) pairs
        self.count: int = sum(end - start + 1 for start, end in self.ranges)

    @classmethod
    def parse(cls, spec: "str | Iterable[int] | SeedRanges", limit: int | None = MAX_SEEDS) -> "SeedRanges":
        """`"0-63"`, `"1,5,9-12"` or a list of ints; SampleError names what is wrong, TooManySeeds (with the
        count) when there are more than `limit`. Ranges are counted before any is kept, so `"0-9999999999999"`
        is refused at once."""
        if isinstance(spec, SeedRanges):
            spans: Iterable[tuple[int, int]] = spec.ranges
        elif isinstance(spec, str):
            spans = (_span(part) for part in filter(None, (p.strip() for p in spec.split(","))))
        else:
            spans = ((seed, seed) for seed in map(_seed, spec))
        kept: list[tuple[int, int]] = []
        count = 0
        for start, end in spans:
            count += end - start + 1
            if limit is None or count <= limit:  # past the limit only the count goes on (for the message)
                kept.append((start, end))
        if count == 0:
            raise SampleError("seeds: none given")
        if limit is not None and count > limit:
            raise TooManySeeds(count, limit)
        return cls(kept)

    def __iter__(self) -> Iterator[int]:
        for start, end in self.ranges:
            yield from range(start, end + 1)

    def chunks(self, size: int) -> Iterator[list[int]]:
        """The seeds in order, `size` at a time (the last chunk may be shorter)."""
        seeds = iter(self)
        while chunk := list(itertools.islice(seeds, size)):
            yield chunk

    def first(self, n: int) -> "SeedRanges":
        """The first `n` seeds (all of them when there are fewer)."""
        kept: list[tuple[int, int]] = []
        for start, end in self.ranges:
            if n <= 0:
                break
            kept.append((start, min(end, start + n - 1)))
            n -= kept[-1][1] - start + 1
        return SeedRanges(kept)

    def __str__(self) -> str:
        return ",".join(str(start) if start == end else f"{start}-{end}" for start, end in self.ranges)

    def __repr__(self) -> str:
        return f"SeedRanges({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SeedRanges) and other.ranges == self.ranges

    def __hash__(self) -> int:
        return hash(self.ranges)


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SampleError(f"seeds: {str(value)[:40]!r} is not a seed (an integer)")
    if not 0 <= value <= MAX_SEED:
        raise SampleError("seeds: each seed must be in [0, 2^63)")
    return value


def _span(part: str) -> tuple[int, int]:
    """One comma-separated part: `"7"` or `"0-63"`. ASCII digits only, and no more than a seed can have, so
    int() never sees other scripts' digits or a number past Python's int-string limit."""
    match = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", part)
    if not match:
        raise SampleError(f"seeds: {part[:40]!r} is not a seed or a range like 0-63")
    if any(len(text) > _SEED_DIGITS for text in match.groups("")):
        raise SampleError("seeds: each seed must be in [0, 2^63)")
    start, end = int(match[1]), int(match[2] or match[1])
    if end > MAX_SEED:
        raise SampleError("seeds: each seed must be in [0, 2^63)")
    if end < start:
        raise SampleError(f"seeds: range {part[:40]!r} runs backwards")
    return start, end


def parse_seeds(spec: str | Iterable[int]) -> list[int]:
    """`"0-63"`, `"1,5,9-12"` or a list of ints -> list of seeds (order kept), at most MAX_SEEDS: what the
    command line and the synchronous sampling routes render in one go. Generate jobs keep SeedRanges."""
    return list(SeedRanges.parse(spec))


def check_truncation(truncation: float) -> float:
    """`truncation` if it is in (0, TRUNCATION_MAX], else a SampleError naming it."""
    if not 0 < truncation <= TRUNCATION_MAX:
        raise SampleError(f"truncation must be in (0, {TRUNCATION_MAX:g}], got {truncation}")
    return truncation
