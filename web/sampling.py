"""Sampling while you wait: images of a registry generator answered directly, not as a job.

    GET /v1/generators/<ref>/images?seeds=0-15&nrow=4&truncation=0.7   a PNG grid (a generate job's bytes)
    GET /v1/generators/<ref>/images/<seed>.png?truncation=0.7          one seed's image
    GET /v1/generators/<ref>/interpolate?from=3&to=9&frames=24         an animated GIF

`<ref>` is any registry reference (core.registry: an id, `name:version`, `name@alias`) of the request's
tenant; anything else is 404. The API resolves it and validates the query (core.sampling_requests: at most
64 images, else 422 naming the async route), then sends the render to a warm sampling worker
(worker.sampling, `dcgan sampler`) and waits for its answer on a Redis list of the request's own
(core.sampling_channel) for up to DCGAN_SAMPLE_TIMEOUT_SECONDS: 503 at once when no sampling worker is
alive, 504 when one is but did not answer in time. Torch never loads here.

An answer depends only on the weights, the render spec, the sampler precision and the render version, so
the API computes its strong ETag itself and answers `If-None-Match` with 304 without asking a worker. A
version never changes: an id or `name:version` reference is cacheable for a year (`immutable`); an alias
moves, so its answers must be revalidated (`no-cache`), which the ETag makes a cheap 304 while it has not.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
from flask import Blueprint, Response, current_app, request

from core.db import Generator
from core.queue import BROKER_UNAVAILABLE, SAMPLE
from core.registry import is_immutable, resolve
from core.request_models import RequestInvalid, RequestModel, validate
from core.sampling_channel import Liveness, new_reply_key, wait_reply
from core.sampling_requests import (SampleGridQuery, SampleImageQuery, SampleInterpolationQuery, check_seed, etag,
                                    interpolation_render)

from .openapi import operation
from .problems import UNAVAILABLE_RETRY_AFTER_SECONDS, Problem
from .resources import db
from .tenancy import tenant_id
from .validation import query_input

bp = Blueprint("sampling", __name__, url_prefix="/v1/generators")

IMMUTABLE = "private, max-age=31536000, immutable"
REVALIDATE = "private, no-cache"
# Headers of the worker's answer passed on to the client.
PATH_HEADER = "X-Sampler-Path"  # fp32 | bf16 | int8: which path rendered it (after any quality fallback)
CACHE_HEADER = "X-Sampler-Cache"  # hit | miss: whether the worker had the generator loaded
_NOT_MODIFIED = {"description": "the client's copy (If-None-Match) is current"}
_ANSWERS = {503: "no sampling worker is running (Retry-After)", 504: "no answer within the server's limit"}


def _image(content_type: str, what: str) -> dict[str, Any]:
    return {"description": what, "content": {content_type: {"schema": {"type": "string", "format": "binary"}}},
            "headers": {"ETag": {"schema": {"type": "string"}}, PATH_HEADER: {"schema": {"type": "string"}}}}


@bp.get("/<ref>/images")
@operation("a PNG grid of the seeds' images, rendered while you wait; byte for byte the grid a generate job "
           "makes for the same seeds, nrow and truncation", {200: _image("image/png", "the grid"),
                                                              304: _NOT_MODIFIED, **_ANSWERS},
           query=SampleGridQuery)
def grid(ref: str):
    row = _generator(ref)
    return _answer(ref, row, _query(SampleGridQuery).render(), "grid.png")


@bp.get("/<ref>/images/<int:seed>.png")
@operation("one seed's image (PNG), rendered while you wait",
           {200: _image("image/png", "the image"), 304: _NOT_MODIFIED, **_ANSWERS}, query=SampleImageQuery)
def image(ref: str, seed: int):
    row = _generator(ref)
    query = _query(SampleImageQuery)
    if (problem := check_seed(seed)) is not None:
        raise Problem(422, f"seed: {problem}", errors=[{"field": "seed", "message": problem}])
    return _answer(ref, row, query.render(seed), f"seed-{seed:06d}.png")


@bp.get("/<ref>/interpolate")
@operation("an animated GIF from one seed to another (spherical interpolation of z), rendered while you wait",
           {200: _image("image/gif", "the animation"), 304: _NOT_MODIFIED, **_ANSWERS},
           query=SampleInterpolationQuery)
def interpolate(ref: str):
    row = _generator(ref)
    return _answer(ref, row, interpolation_render(_query(SampleInterpolationQuery)), "interpolation.gif")


def _generator(ref: str) -> Generator:
    row = resolve(db(), tenant_id(), ref)
    if row is None:
        raise Problem(404, f"no generator {ref[:200]!r}")
    return row


def _query(model: type[RequestModel]) -> Any:
    """The query as `model`, or 422 whose detail says what was wrong (a count past the limit names the async
    route there, not only in the field's message)."""
    try:
        return validate(model, query_input(request))
    except RequestInvalid as exc:
        raise Problem(422, f"invalid query: {exc}", errors=exc.errors) from None


def _answer(ref: str, row: Generator, render: dict[str, Any], filename: str) -> Response:
    settings = current_app.config["SETTINGS"]
    tag = etag(row.sha256, settings.sample_precision, render)
    headers = {"ETag": tag, "Cache-Control": IMMUTABLE if is_immutable(ref) else REVALIDATE}
    if request.if_none_match.contains_weak(tag.strip('"')):
        return Response(status=304, headers=headers)
    meta, body = _channel().render(row, render, settings.sample_precision, settings.sample_timeout_seconds)
    if "error" in meta:
        error = meta["error"]
        raise Problem(error["status"], error["detail"], slug=error["slug"], title=error["title"])
    response = Response(body, mimetype=meta["content_type"], headers=headers)
    response.headers["Content-Disposition"] = f'inline; filename="{filename}"'
    response.headers[PATH_HEADER] = meta["path"]
    response.headers[CACHE_HEADER] = meta["cache"]
    # Where the time went (queue, load, forward, encode, worker; wait: the API's send to its answer), for
    # clients and bench/sample_api_latency.py.
    response.headers["Server-Timing"] = ", ".join(f"{name};dur={ms}" for name, ms in meta["timings_ms"].items())
    return response


class SamplingChannel:
    """One API process's way to the sampling workers: the broker's Redis (liveness, replies) and its Celery
    publisher (web.resources' queue)."""

    def __init__(self, redis_url: str, timeout_seconds: float, publisher: Any):
        # A blocked BLPOP must not be cut by the socket's own timeout before the request's.
        self.client = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=timeout_seconds + 5)
        self.liveness = Liveness(self.client)
        self.publisher = publisher

    def render(self, row: Generator, render: dict[str, Any], precision: str,
               timeout_seconds: float) -> tuple[dict[str, Any], bytes]:
        deadline = time.time() + timeout_seconds
        try:
            if not self.liveness.alive():
                raise Problem(503, "no sampling worker is running (start one with `dcgan sampler`); try again "
                                   "shortly, or submit an async job: POST /v1/jobs/generate",
                              slug="sampler-unavailable", title="No sampling worker",
                              headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)})
            reply_to = new_reply_key()
            sent = time.perf_counter()
            message = {"reply_to": reply_to, "deadline": deadline, "sent_at": time.time(), "precision": precision,
                       "render": render,
                       "generator": {"id": str(row.id), "storage_key": row.storage_key, "sha256": row.sha256,
                                     "config": row.config}}
            # Expires at the deadline: a worker that gets it later drops it instead of rendering for nobody.
            self.publisher.send_task(SAMPLE.name, args=[message], queue=SAMPLE.queue, expires=timeout_seconds,
                                     retry=False)
            answer = wait_reply(self.client, reply_to, deadline - time.time())
            if answer is not None:
                answer[0].setdefault("timings_ms", {})["wait"] = round((time.perf_counter() - sent) * 1000, 2)
        except (redis.RedisError, *BROKER_UNAVAILABLE) as exc:
            raise Problem(503, f"the broker is unavailable ({type(exc).__name__}); try again shortly",
                          slug="broker-unavailable", title="Broker unavailable",
                          headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)}) from None
        if answer is None:
            raise Problem(504, f"no sampling worker answered within {timeout_seconds:g} s; try again, or submit an "
                               f"async job: POST /v1/jobs/generate", slug="sampling-timeout",
                          title="Sampling timed out")
        return answer


_channel_lock = threading.Lock()


def _channel() -> SamplingChannel:
    """The app's channel, made on its first sampling request (the OpenAPI document registers this blueprint
    on a bare app that has no settings)."""
    parts = current_app.extensions["dcgan"]
    with _channel_lock:
        if "sampling" not in parts:
            settings = current_app.config["SETTINGS"]
            if parts["queue"] is None:
                raise Problem(503, "no broker configured: set REDIS_URL", slug="broker-unavailable",
                              title="Broker unavailable")
            parts["sampling"] = SamplingChannel(settings.redis_url, settings.sample_timeout_seconds,
                                                parts["queue"].client)
        return parts["sampling"]
