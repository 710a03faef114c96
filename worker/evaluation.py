"""The evaluate task's body: score a registry version on a dataset (POST /v1/jobs/evaluate).

The generator is sampled on seeds 0..num-1 (core.gan.sample, fp32: the images a generate job would give)
and scored by core.gan.metrics.evaluate -- FID, KID, and IS where the feature network has logits -- against
the dataset at the generator's size, with the real statistics cached under the data dir. The result names
the network and its sha256, the sample count and the preprocessing, so two results say whether they are
comparable; it lands in the job row (`result`) and as the job's `evaluation.json` artifact. Scoring is
deterministic on one machine: the same version and seeds give the same numbers.

The task runs on the `evaluate` queue, which only a low-priority evaluation worker consumes (`dcgan worker
--queues evaluate --nice 10`), so a long Inception run never holds up training. A cancel is seen between
batches of generated images.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.orm import Session

from core import jobs
from core.db import Generator, JobStatus
from core.gan.metrics import evaluate
from core.gan.sample import SampleError
from core.request_models import EvaluateJobRequest, RequestInvalid, validate
from core.storage import evaluation_key

from worker.attempt import Attempt, FencedOut
from worker.loading import load_dataset, load_version, worker_cache

# Progress (images scored so far) is written at most this often.
PROGRESS_SECONDS = 1.0


class _Cancelled(Exception):
    """The user cancelled while the generator was being sampled."""


def run_evaluation(run: Attempt) -> None:
    job = run.job()
    try:
        asked = validate(EvaluateJobRequest, {k: job.request.get(k) for k in ("generator", "dataset", "num", "net")})
    except RequestInvalid as exc:
        raise SampleError(str(exc)) from None
    if job.generator_id is None:
        raise SampleError(f"generator {asked.generator!r}: the version it named is no longer in the registry")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory(prefix="dcgan-evaluate-") as tmp:
        sampler = load_version(run, job.generator_id, Path(tmp) / "generator.safetensors", device)
        config = sampler.config
        real = load_dataset(run, asked.dataset, config.img_size, config.img_channels, Path(tmp) / "dataset")
    run.heartbeat()
    last_write = time.monotonic()

    def generate(start: int, count: int) -> torch.Tensor:
        nonlocal last_write
        if time.monotonic() - last_write >= PROGRESS_SECONDS:
            last_write = time.monotonic()
            if run.should_stop():
                if run.cancel_requested():
                    raise _Cancelled
                raise FencedOut(f"job {run.job_id}: attempt {run.attempt} no longer holds it")
            run.write(jobs.record_progress, {"step": start, "total_steps": asked.num,
                                             "percent": round(100 * start / asked.num, 2)})
        return sampler.images_for_seeds(range(start, start + count))

    name = asked.dataset.removeprefix("builtin:")  # the builtins' own networks for net=auto
    try:
        result: dict[str, Any] = evaluate(generate, real.images, dataset=name, num=asked.num, feature_net=asked.net,
                                          cache_dir=worker_cache(run, "metrics"),
                                          device=device)
    except _Cancelled:
        run.finish(JobStatus.CANCELLED)
        return
    version = run.session.get(Generator, job.generator_id)
    result.update(dataset=asked.dataset, seeds=f"0-{asked.num - 1}",
                  generator={"id": str(version.id), "ref": asked.generator, "version": f"{version.name}:"
                             f"{version.version}", "sha256": version.sha256},
                  sampler=getattr(sampler, "quality", None) or {"path": "fp32"})
    run.upload_bytes(evaluation_key(run.tenant_id, run.job_id), json.dumps(result, indent=2).encode())
    run.write(_succeed_with, result)


def _succeed_with(session: Session, job_id: uuid.UUID, attempt: int, result: dict[str, Any]) -> bool:
    """The result and the success in one transaction: a succeeded evaluate job always has its numbers."""
    return jobs.record_result(session, job_id, attempt, result) and \
        jobs.finish_job(session, job_id, attempt, JobStatus.SUCCEEDED)
