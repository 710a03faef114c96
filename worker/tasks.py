"""The Celery tasks: claim a job, run core.gan on it, upload its artifacts, record its state.

Each task takes a job id only; everything else is read from the job row. `claim_job` returns the attempt
number, the fencing token every later write carries: a write that returns False means another attempt
holds the job now, and this one stops at once without touching anything (`FencedOut`). Each state change
is committed as soon as it is made, so the API sees progress, checkpoints and artifacts as they happen.

A job is never `succeeded` without its artifacts: objects are uploaded first, then recorded, then the job
finishes. Failures a user caused (`GanError`: config, data, checkpoint, seeds), a diverged run and an
out-of-memory device become FAILED with a machine-readable `error_type`; anything else is a bug, recorded
as `internal_error` and re-raised so Celery logs its traceback.

The database engine and artifact store are built on first use from the app's settings
(`app.conf.dcgan_settings`, set by `worker.celery_app.make_celery`), so importing this module only
registers the tasks.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from celery import Celery, shared_task
from celery.utils.log import get_task_logger
from sqlalchemy.orm import Session, sessionmaker

from core import jobs
from core.db import Job, JobStatus, JobType, make_engine, make_session_factory
from core.gan.checkpoint import CheckpointError
from core.gan.config import TrainConfig
from core.gan.data import IMAGE_SUFFIXES, DataError, ImageSet, load_images
from core.gan.errors import GanError
from core.gan.sample import Sampler, SampleError, grid_image, parse_seeds, png_bytes
from core.gan.train import Callbacks, Progress, train
from core.settings import Settings
from core.storage import (ArtifactStore, ObjectNotFound, checkpoint_key, generator_key, grid_key, open_store,
                          sample_key)

log = get_task_logger(__name__)

BUILTIN_DATASETS = ("digits", "fashion-mnist", "fake")
# The job row is written at most this often while training: often enough for a live progress bar,
# rarely enough that a fast GPU run does not spend its time in the database.
SYNC_SECONDS = 1.0
# Seeds rendered between two heartbeats of a generate job.
GENERATE_CHUNK = 1024


class FencedOut(Exception):
    """This attempt no longer holds the job (its lease was taken over, or the job is gone): stop now."""


@dataclass(frozen=True)
class _Context:
    settings: Settings
    session_factory: sessionmaker[Session]
    store: ArtifactStore


_context: _Context | None = None
_context_lock = threading.Lock()


def _get_context(app: Celery) -> _Context:
    """The process's engine and store, built on the first task (after a prefork worker has forked)."""
    global _context
    with _context_lock:
        if _context is None:
            settings: Settings = app.conf.dcgan_settings
            threads = app.conf.get("dcgan_threads")
            if threads:
                torch.set_num_threads(int(threads))
            _context = _Context(settings, make_session_factory(make_engine(settings.database_url)),
                                open_store(settings))
        return _context


@shared_task(name="dcgan.train", bind=True)
def train_task(self, job_id: str) -> None:
    _run_job(self.app, job_id, JobType.TRAIN, _train)


@shared_task(name="dcgan.generate", bind=True)
def generate_task(self, job_id: str) -> None:
    _run_job(self.app, job_id, JobType.GENERATE, _generate)


class _Attempt:
    """One claimed attempt at a job: its session, its fencing token, and writes that stop when fenced."""

    def __init__(self, context: _Context, session: Session, job_id: uuid.UUID, attempt: int) -> None:
        self.context, self.session, self.job_id, self.attempt = context, session, job_id, attempt
        self.store = context.store
        self._last_heartbeat = time.monotonic()

    def job(self) -> Job:
        job = self.session.get(Job, self.job_id, populate_existing=True)
        if job is None:
            raise FencedOut(f"job {self.job_id} is gone")
        return job

    def write(self, transition: Callable[..., bool], *args: Any, **kwargs: Any) -> None:
        """Run a fenced core.jobs transition and commit it; FencedOut when it no longer holds the job."""
        if not transition(self.session, self.job_id, self.attempt, *args, **kwargs):
            self.session.rollback()
            raise FencedOut(f"job {self.job_id}: attempt {self.attempt} no longer holds it "
                            f"({transition.__name__} refused)")
        self.session.commit()

    def heartbeat(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_heartbeat >= SYNC_SECONDS:
            self.write(jobs.heartbeat, self.context.settings.lease_seconds)
            self._last_heartbeat = now

    def should_stop(self) -> bool:
        stop = jobs.should_stop(self.session, self.job_id, self.attempt)
        self.session.commit()  # end the read transaction: the next check must see new commits
        return stop

    def cancel_requested(self) -> bool:
        job = self.job()
        return job.cancel_requested and job.attempt == self.attempt and job.status == JobStatus.RUNNING

    def upload(self, key: str, path: Path, step: int | None = None) -> None:
        stored = self.store.put_file(key, path)
        self._record(stored, step)

    def upload_bytes(self, key: str, data: bytes) -> None:
        self._record(self.store.put_bytes(key, data), None)

    def _record(self, stored, step: int | None) -> None:
        # Keys are jobs/<id>/<name>; the name is what a user sees in the artifact list.
        name = stored.key.split("/", 2)[2]
        self.write(jobs.record_artifact, name, stored.key, stored.size, stored.sha256, stored.content_type,
                   step=step)

    def finish(self, status: str, error_type: str | None = None, detail: str | None = None) -> None:
        self.write(jobs.finish_job, status, error_type, detail)

    def fail(self, error_type: str, detail: str) -> None:
        """Record FAILED; a fenced-out attempt has nothing left to record, which is not an error."""
        self.session.rollback()  # the failure may have left the session mid-transaction
        try:
            self.finish(JobStatus.FAILED, error_type, detail)
        except FencedOut:
            log.warning("job %s: failed with %s, but attempt %s no longer holds it", self.job_id, error_type,
                        self.attempt)


def _run_job(app: Celery, job_id_text: str, job_type: str, body: Callable[[_Attempt], None]) -> None:
    context = _get_context(app)
    job_id = uuid.UUID(job_id_text)
    with context.session_factory() as session:
        attempt = jobs.claim_job(session, job_id, _worker_name(), context.settings.lease_seconds)
        session.commit()
        if attempt is None:
            log.info("job %s: not claimable (finished, cancelled, out of attempts or held by a live "
                     "worker); this delivery does nothing", job_id)
            return
        log.info("job %s: claimed as attempt %s", job_id, attempt)
        run = _Attempt(context, session, job_id, attempt)
        try:
            if run.job().type != job_type:
                raise ValueError(f"job {job_id} is a {run.job().type} job, sent to the {job_type} task")
            body(run)
        except FencedOut as exc:
            log.warning("job %s: stopped: %s", job_id, exc)
        except GanError as exc:
            run.fail(_error_type(exc), str(exc))
        except FloatingPointError as exc:
            run.fail("non_finite_loss", str(exc))
        except torch.cuda.OutOfMemoryError as exc:
            run.fail("out_of_memory", _first_line(exc))
        except Exception as exc:
            try:
                run.fail("internal_error", f"{type(exc).__name__}: {_first_line(exc)}")
            except Exception:
                log.exception("job %s: could not record internal_error", job_id)
            raise


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _error_type(exc: GanError) -> str:
    """ConfigError -> config_error, DataError -> data_error, CheckpointError -> checkpoint_error."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ----- train -----

class _TrainHooks:
    """The train loop's callbacks: throttled progress and stop checks, artifacts uploaded as they appear."""

    def __init__(self, run: _Attempt, notes: list[str]) -> None:
        self.run, self.notes = run, notes
        self.started = False  # the loop has begun stepping (so a CheckpointError is not about resuming)
        self._last_progress = -math.inf
        self._last_check = -math.inf
        self._stop = False

    def callbacks(self) -> Callbacks:
        return Callbacks(on_progress=self.on_progress, should_stop=self.should_stop,
                         on_checkpoint=self.on_checkpoint, on_sample=self.on_sample)

    def on_progress(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self._last_progress < SYNC_SECONDS and progress.step < progress.total_steps:
            return
        self._last_progress = now
        document = progress.to_dict()
        if self.notes:
            document["notes"] = list(self.notes)
        self.run.write(jobs.record_progress, document)
        self.run.heartbeat()

    def should_stop(self) -> bool:
        # Called before every step; the database is asked at most once a SYNC_SECONDS, and a stop sticks.
        self.started = True
        now = time.monotonic()
        if self._stop or now - self._last_check < SYNC_SECONDS:
            return self._stop
        self._last_check = now
        self._stop = self.run.should_stop()
        if not self._stop:
            self.run.heartbeat()
        elif not self.run.cancel_requested():
            # Fenced out: the loop's final checkpoint and grid would be uploaded over the successor's.
            raise FencedOut(f"job {self.run.job_id}: attempt {self.run.attempt} no longer holds it")
        return self._stop

    def on_sample(self, path: Path, step: int) -> None:
        # The sample and the live grid are the same picture.
        self.run.upload(sample_key(self.run.job_id, step), path, step)
        self.run.upload(grid_key(self.run.job_id), path, step)

    def on_checkpoint(self, path: Path, step: int) -> None:
        key = checkpoint_key(self.run.job_id, step)
        self.run.upload(key, path, step)
        self.run.write(jobs.set_checkpoint, key, step)


def _train(run: _Attempt) -> None:
    job = run.job()
    config = TrainConfig.from_dict(job.config)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dcgan-train-") as tmp:
        tmp_dir = Path(tmp)
        data = _load_dataset(run, job.request.get("dataset"), config, tmp_dir / "dataset")
        run.heartbeat(force=True)
        resume_from = _fetch_checkpoint(run, job.checkpoint_key, tmp_dir / "resume", notes)
        hooks = _TrainHooks(run, notes)
        try:
            result = train(config, data, tmp_dir / "run", resume_from=resume_from, callbacks=hooks.callbacks())
        except CheckpointError as exc:
            if resume_from is None or hooks.started:
                raise
            # A checkpoint this attempt cannot use costs the steps it held, not the job.
            notes.append(f"could not resume from {job.checkpoint_key}, started over: {exc}")
            log.warning("job %s: %s", run.job_id, notes[-1])
            result = train(config, data, tmp_dir / "run", callbacks=hooks.callbacks())
        run.upload(generator_key(run.job_id), result.generator_path, result.step)
        run.upload(grid_key(run.job_id), result.grid_path, result.step)
    if not result.stopped:
        run.finish(JobStatus.SUCCEEDED)
    elif run.cancel_requested():
        run.finish(JobStatus.CANCELLED)
    else:
        raise FencedOut(f"job {run.job_id}: stopped because attempt {run.attempt} no longer holds it")


def _load_dataset(run: _Attempt, reference: Any, config: TrainConfig, folder: Path) -> ImageSet:
    """`builtin:<name>`, or a dataset id whose images are downloaded from the store into `folder`."""
    cache_dir = run.context.settings.data_dir / "cache" / "datasets"
    if not isinstance(reference, str) or not reference:
        raise DataError("dataset: the job names no dataset")
    if reference.startswith("builtin:"):
        name = reference.removeprefix("builtin:")
        if name not in BUILTIN_DATASETS:
            raise DataError(f"dataset {reference!r}: unknown builtin; use one of "
                            f"{', '.join('builtin:' + n for n in BUILTIN_DATASETS)}")
        return load_images(name, config.img_size, config.img_channels, cache_dir=cache_dir)
    try:
        dataset_id = uuid.UUID(reference)
    except ValueError:
        raise DataError(f"dataset {reference!r}: neither a dataset id nor builtin:<name>") from None
    prefix = f"datasets/{dataset_id}/"
    keys = [key for key in run.store.list(prefix) if key.lower().endswith(IMAGE_SUFFIXES)]
    if not keys:
        raise DataError(f"dataset {dataset_id}: no images in the artifact store")
    for key in keys:
        target = folder / key[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        with run.store.open(key) as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out)
        run.heartbeat()
    return load_images(f"folder:{folder}", config.img_size, config.img_channels, cache_dir=cache_dir)


def _fetch_checkpoint(run: _Attempt, key: str | None, folder: Path, notes: list[str]) -> Path | None:
    """The checkpoint a previous attempt left, downloaded; None (and a note) when there is none to use."""
    if not key:
        return None
    path = folder / key.rsplit("/", 1)[-1]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with run.store.open(key) as source, open(path, "wb") as out:
            shutil.copyfileobj(source, out)
    except ObjectNotFound:
        notes.append(f"checkpoint {key} is missing from the store, started over")
        log.warning("job %s: %s", run.job_id, notes[-1])
        return None
    return path


# ----- generate -----

def _generate(run: _Attempt) -> None:
    job = run.job()
    request = job.request
    parent = job.parent_job_id or request.get("generator_job")
    if not parent:
        raise SampleError("generator_job: the job names no train job to sample from")
    seeds = parse_seeds(request.get("seeds", "0-63"))
    truncation = float(request.get("truncation", 1.0))
    nrow = int(request.get("nrow", 8))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory(prefix="dcgan-generate-") as tmp:
        path = Path(tmp) / "generator.safetensors"
        try:
            with run.store.open(generator_key(parent)) as source, open(path, "wb") as out:
                shutil.copyfileobj(source, out)
        except ObjectNotFound:
            raise SampleError(f"generator_job {parent}: has no exported generator (has it succeeded?)") from None
        sampler = Sampler.from_file(path, device=device)
    chunks = []
    for start in range(0, len(seeds), GENERATE_CHUNK):
        if run.should_stop():
            if run.cancel_requested():
                run.finish(JobStatus.CANCELLED)
                return
            raise FencedOut(f"job {run.job_id}: attempt {run.attempt} no longer holds it")
        chunks.append(sampler.images_for_seeds(seeds[start:start + GENERATE_CHUNK], truncation))
        run.heartbeat()
    run.upload_bytes(grid_key(run.job_id), png_bytes(grid_image(torch.cat(chunks), nrow=nrow)))
    run.finish(JobStatus.SUCCEEDED)
