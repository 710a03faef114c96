"""What a synchronous sampling request may ask for, and what names its answer: the query models of
GET /v1/generators/<ref>/images, /images/<seed>.png and /interpolate (web.sampling), the render spec the API
sends the sampling worker (worker.sampling), and the strong ETag of the answer.

A render spec is the request normalised -- `seeds=0-3` and `seeds=0,1,2,3` are one spec -- so it names the
pixels exactly: with the weights' sha256, the sampler precision and RENDER_VERSION it is all the answer
depends on. That is why the API can compute the ETag (and answer 304) without asking a worker.

Sync requests are capped at MAX_IMAGES images, so one forward pass or four answer them while the client
waits; anything larger is an async generate job, and the 422 says so. Torch-free, like every request model.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from pydantic import ConfigDict, Field, create_model, field_validator

from core.gan.seeds import DEFAULT_TRUNCATION, MAX_SEED, TRUNCATION_MAX, SampleError, parse_seeds
from core.request_models import DEFAULT_NROW, NROW_MAX, RequestModel, _refuse

# The most images one synchronous request renders (seeds of a grid, frames of an interpolation).
MAX_IMAGES = 64
ASYNC_ROUTE = "POST /v1/jobs/generate"
DEFAULT_FRAMES = 16  # what `dcgan sample --interpolate` renders by default
# Bumped whenever the same request would render other bytes (grid layout, encoder settings, noise), so no
# client keeps an old picture under a strong ETag that now names a new one.
RENDER_VERSION = 1

_QUERY = ConfigDict(strict=False, extra="ignore")  # "4" is the number 4; an unknown name (a cache buster) is ignored
_TRUNCATION_MESSAGE = f"must be a number in (0, {TRUNCATION_MAX:g}]"
Truncation = Annotated[float, Field(gt=0, le=TRUNCATION_MAX, description="the truncation trick's psi: lower "
                                                                         "is less varied")]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class SampleGridQuery(RequestModel):
    """GET /v1/generators/<ref>/images: one PNG grid of the seeds' images, byte for byte the grid a generate
    job renders for the same seeds, nrow and truncation."""

    model_config = _QUERY

    seeds: Annotated[str, Field(min_length=1, max_length=1000, examples=["0-15"],
                                description=f"seeds or ranges like \"0-15\" or \"1,5,9-12\"; at most "
                                            f"{MAX_IMAGES} (more: {ASYNC_ROUTE})")]
    nrow: Annotated[int, Field(ge=1, le=NROW_MAX, description="images per grid row")] = DEFAULT_NROW
    truncation: Truncation = DEFAULT_TRUNCATION

    messages = {"seeds": "give seeds like 0-15 or 1,5,9-12", "nrow": f"must be an integer from 1 to {NROW_MAX}",
                "truncation": _TRUNCATION_MESSAGE}

    @field_validator("seeds")
    @classmethod
    def _few_seeds(cls, value: str) -> list[int]:
        try:
            seeds = parse_seeds(value)
        except SampleError as exc:
            raise _refuse("seeds", str(exc).removeprefix("seeds: ")) from None
        if len(seeds) > MAX_IMAGES:
            raise _refuse("too_many", too_many(len(seeds)))
        return seeds

    def render(self) -> dict[str, Any]:
        return {"kind": "grid", "seeds": list(self.seeds), "nrow": self.nrow, "truncation": self.truncation}


class SampleImageQuery(RequestModel):
    """GET /v1/generators/<ref>/images/<seed>.png: one seed's image (no grid padding)."""

    model_config = _QUERY

    truncation: Truncation = DEFAULT_TRUNCATION

    messages = {"truncation": _TRUNCATION_MESSAGE}

    def render(self, seed: int) -> dict[str, Any]:
        return {"kind": "image", "seed": seed, "truncation": self.truncation}


# The query's names are `from` and `to`, Python keywords, so this model is built by create_model (a class
# body cannot declare them, and an alias would publish one name and validate another).
SampleInterpolationQuery = create_model(
    "SampleInterpolationQuery", __base__=RequestModel, __config__=_QUERY, __module__=__name__,
    __doc__="GET /v1/generators/<ref>/interpolate: an animated GIF walking from one seed's z to another's "
            "(spherical interpolation), one frame per step.",
    **{"from": (Annotated[Seed, Field(description="the first frame's seed")], ...),
       "to": (Annotated[Seed, Field(description="the last frame's seed")], ...),
       "frames": (Annotated[int, Field(ge=2, le=MAX_IMAGES, description="frames in the GIF")], DEFAULT_FRAMES),
       "truncation": (Truncation, DEFAULT_TRUNCATION)})
SampleInterpolationQuery.messages = {"from": "a seed: an integer in [0, 2^63)", "to": "a seed: an integer in [0, 2^63)",
                                     "frames": f"must be an integer from 2 to {MAX_IMAGES}",
                                     "truncation": _TRUNCATION_MESSAGE}


def interpolation_render(query: Any) -> dict[str, Any]:
    return {"kind": "interpolate", "from": getattr(query, "from"), "to": query.to, "frames": query.frames,
            "truncation": query.truncation}


def too_many(count: int) -> str:
    return (f"{count} images; at most {MAX_IMAGES} per request are rendered while you wait -- for more, submit "
            f"an async job: {ASYNC_ROUTE}")


def check_seed(seed: int) -> str | None:
    """What is wrong with a seed taken from a path (None when nothing is)."""
    return None if 0 <= seed <= MAX_SEED else "a seed is an integer in [0, 2^63)"


def etag(weights_sha256: str, precision: str, render: dict[str, Any]) -> str:
    """The strong ETag (quoted) of the answer to `render` from these weights on this sampler path."""
    document = json.dumps({"version": RENDER_VERSION, "weights": weights_sha256, "precision": precision,
                           "render": render}, sort_keys=True, separators=(",", ":"))
    return '"' + hashlib.sha256(document.encode()).hexdigest()[:40] + '"'
