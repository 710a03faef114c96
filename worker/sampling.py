"""The sampling worker: the `dcgan.sample` task that renders while an API request waits (web.sampling).

`dcgan sampler` runs it (`celery worker -Q sample`). The API has already resolved the generator reference,
checked the tenant and validated the query; the message carries the weights' storage key, sha256 and config,
the normalised render spec (core.sampling_requests), the sampler precision and where to answer
(core.sampling_channel). Nothing here touches the database.

Loaded generators stay in an LRU (cachetools) keyed by the weights' content sha256 and the precision: the
same bytes are the same generator, whoever uploaded or registered them, so a hit needs no download. A miss
downloads the weights, checks them again with core.weights (the process that loads a file checks it) and
against the recorded sha256, then loads them with safetensors only -- through the same function as a
generate job (worker.loading.load_checked_weights), and a grid is rendered by the same calls as
worker.tasks._generate, so its PNG bytes are the job's.

Warm by design: torch, PIL's encoders, the artifact store's client and oneDNN's kernels for the default
generator shapes are all set up when the worker starts, before it says it is alive, so the first request
pays only for its own generator. A thread publishes liveness every second; a worker that stops takes itself
out of the set at once. A request past its deadline is dropped: Celery discards the expired message, and a
request whose deadline passed while its generator loaded is not rendered.

Sampling messages are acknowledged on receipt (not after the task): a request whose worker died is not
worth redelivering, its client has had its 504 by then.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis
import torch
from cachetools import LRUCache
from celery import Celery, shared_task
from celery.signals import worker_ready, worker_shutting_down
from celery.utils.log import get_task_logger

from core.error_text import first_line
from core.gan.checkpoint import CheckpointError
from core.gan.config import TrainConfig
from core.gan.models import build_generator
from core.gan.sample import Sampler, SampleError, SamplerOptions, gif_bytes, grid_image, image_list, png_bytes
from core.queue import SAMPLE
from core.sampling_channel import BEAT_SECONDS, Liveness, send_reply
from core.settings import Settings
from core.storage import ObjectNotFound, StorageError, open_store
from core.weights import WeightsError

from worker.loading import load_checked_weights

log = get_task_logger(__name__)

# Generator shapes whose kernels are warmed at start: the default width at the usual sizes, gray and colour.
WARM_SHAPES = [(size, channels) for size in (32, 64) for channels in (1, 3)]
PRECISION_OPTIONS = {"fp32": SamplerOptions(), "bf16": SamplerOptions(precision="bf16"),
                     "int8": SamplerOptions(quantize=True)}


class SamplingService:
    """One worker process's loaded generators, store, Redis client and liveness beat."""

    def __init__(self, settings: Settings):
        torch.set_num_threads(settings.sample_threads)  # see Settings.sample_threads for why not DCGAN_THREADS
        self.settings = settings
        self.store = open_store(settings)
        self.redis = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=10)
        self.liveness = Liveness(self.redis)
        self.samplers: LRUCache = LRUCache(maxsize=settings.sample_cache_size)  # one task at a time: no lock
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # ----- life -----

    def warm_up(self) -> float:
        """Build and run the default generator shapes once on the configured path (kernel selection, oneDNN's
        primitive cache, PIL's encoders), so no request pays for it; returns the seconds it took."""
        started = time.perf_counter()
        options = PRECISION_OPTIONS[self.settings.sample_precision]
        for size, channels in WARM_SHAPES:
            config = TrainConfig(img_size=size, img_channels=channels, steps=1)
            sampler = Sampler(build_generator(config), config, self.device, options)
            images = sampler.images_for_seeds(range(16))
            png_bytes(grid_image(images, nrow=4))
            gif_bytes(image_list(images[:2]))
        return time.perf_counter() - started

    def start_beat(self) -> None:
        self.liveness.beat(self.name)  # alive before the first request can be sent, not a second later
        self._beat = threading.Thread(target=self._beat_loop, name="sampler-liveness", daemon=True)
        self._beat.start()

    def stop(self) -> None:
        """Out of the live set at once, so the API answers 503 instead of queueing for nobody."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        try:
            self.liveness.leave(self.name)
        except redis.RedisError as exc:
            log.warning("sampler %s: could not leave the live set (%s); it expires", self.name, first_line(exc))

    def _beat_loop(self) -> None:
        failing = False
        while not self._stop.wait(BEAT_SECONDS):
            try:
                self.liveness.beat(self.name)
                if failing:
                    log.info("sampler %s: Redis is back, beating again", self.name)
                failing = False
            except redis.RedisError as exc:
                if not failing:  # once per outage, not every second
                    log.warning("sampler %s: cannot publish liveness: %s", self.name, first_line(exc))
                failing = True

    # ----- requests -----

    def answer(self, request: dict[str, Any]) -> None:
        """Render the request and push the answer (or the problem) onto its reply list."""
        deadline, started = float(request["deadline"]), time.perf_counter()
        # From the API's send to this task's start: Celery's publish and delivery (one clock when both run on
        # one machine; across machines it includes their clocks' difference).
        timings: dict[str, float] = {"queue": round((time.time() - float(request["sent_at"])) * 1000, 2)}
        try:
            sampler, hit = self._sampler(request["generator"], request["precision"], timings)
            if time.time() > deadline:
                log.info("sample request %s: its deadline passed while its generator loaded; not rendered",
                         request["reply_to"])
                return
            content_type, body = _render(sampler, request["render"], timings)
        except (ObjectNotFound, WeightsError, CheckpointError) as exc:
            self._reply(request, {"error": {"status": 500, "slug": "generator-unusable",
                                            "title": "Generator unusable", "detail": first_line(exc)}})
            return
        except StorageError as exc:
            self._reply(request, {"error": {"status": 503, "slug": "storage-unavailable",
                                            "title": "Storage unavailable", "detail": first_line(exc)}})
            return
        except SampleError as exc:
            self._reply(request, {"error": {"status": 422, "slug": "validation-error",
                                            "title": "Validation failed", "detail": str(exc)}})
            return
        except Exception:
            self._reply(request, {"error": {"status": 500, "slug": "internal", "title": "Internal server error",
                                            "detail": "the sampling worker failed; it has been logged"}})
            raise  # Celery logs it with its traceback
        timings["worker"] = _ms(started)
        quality = getattr(sampler, "quality", None)
        path = (quality or {}).get("path") or getattr(sampler, "path", None) or request["precision"]
        self._reply(request, {"content_type": content_type, "path": path, "cache": "hit" if hit else "miss",
                              "quality": quality, "timings_ms": timings}, body)

    def _reply(self, request: dict[str, Any], meta: dict[str, Any], body: bytes = b"") -> None:
        send_reply(self.redis, request["reply_to"], meta, body, float(request["deadline"]) - time.time())

    def _sampler(self, generator: dict[str, Any], precision: str, timings: dict[str, float]) -> tuple[Sampler, bool]:
        key = (generator["sha256"], precision)
        sampler = self.samplers.get(key)
        if sampler is not None:
            return sampler, True
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="dcgan-sample-") as folder:
            sampler = load_checked_weights(self.store, generator["storage_key"], generator["sha256"],
                                           generator["config"], generator["id"],
                                           Path(folder) / "generator.safetensors", self.device,
                                           PRECISION_OPTIONS[precision])
        timings["load"] = _ms(started)
        self.samplers[key] = sampler
        log.info("sampler %s: loaded generator %s (sha256 %s, %s) in %.0f ms; %d of %d cached", self.name,
                 generator["id"], generator["sha256"][:12], precision, timings["load"], len(self.samplers),
                 self.samplers.maxsize)
        return sampler, False


def _render(sampler: Sampler, render: dict[str, Any], timings: dict[str, float]) -> tuple[str, bytes]:
    """(content type, bytes) for a render spec; a grid is exactly what a generate job writes."""
    kind, truncation = render["kind"], float(render["truncation"])
    started = time.perf_counter()
    if kind == "grid":
        images = sampler.images_for_seeds(render["seeds"], truncation)
    elif kind == "image":
        images = sampler.images_for_seeds([render["seed"]], truncation)
    elif kind == "interpolate":
        images = sampler.interpolate(render["from"], render["to"], render["frames"], truncation)
    else:
        raise SampleError(f"unknown render kind {kind!r}")
    timings["forward"] = _ms(started)
    started = time.perf_counter()
    if kind == "grid":
        answer = "image/png", png_bytes(grid_image(images, nrow=render["nrow"]))
    elif kind == "image":
        answer = "image/png", png_bytes(image_list(images)[0])
    else:
        answer = "image/gif", gif_bytes(image_list(images))
    timings["encode"] = _ms(started)
    return answer


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 2)


# ----- the process's service, started only in a worker that consumes the sample queue -----

_service: SamplingService | None = None
_service_lock = threading.Lock()


def _service_for(app: Celery) -> SamplingService:
    global _service
    with _service_lock:
        if _service is None:
            _service = SamplingService(app.conf.dcgan_settings)
        return _service


@worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    # Every worker imports this module (one Celery app); only one that consumes the sample queue samples.
    if SAMPLE.queue not in sender.app.amqp.queues.consume_from:
        return
    service = _service_for(sender.app)
    seconds = service.warm_up()
    service.start_beat()
    log.info("sampler %s: warm in %.1f s (%s, %s, %d threads); alive", service.name, seconds, service.device,
             service.settings.sample_precision, torch.get_num_threads())


@worker_shutting_down.connect
def _on_worker_shutting_down(**_: Any) -> None:
    if _service is not None:
        _service.stop()


@shared_task(name=SAMPLE.name, bind=True, acks_late=False)
def sample_task(self, request: dict[str, Any]) -> None:
    _service_for(self.app).answer(request)
