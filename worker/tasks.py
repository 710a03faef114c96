"""The Celery tasks: claim a job, run core.gan on it, upload its artifacts, record its state.

Each task takes a job id only; everything else is read from the job row. Before claiming, the worker checks
the job's estimated memory against its device (worker.capacity): a job no device like it could hold fails
unclaimed with `insufficient_memory`, one that must wait for free memory stays queued. `claim_job` returns the attempt
number, the fencing token every later write carries: a write that returns False means another attempt
holds the job now, and this one stops at once without touching anything (`FencedOut`). Each state change
is committed as soon as it is made, so the API sees progress, checkpoints and artifacts as they happen.

While an attempt runs, a thread of its own extends its lease (worker.attempt); if the process is killed or
frozen the lease runs out and the reaper (core.reaper, the `dcgan.reap` task here) gives the job to a new
attempt, which resumes from the newest checkpoint whose bytes still match their recorded sha256. A warm
shutdown (SIGTERM) checkpoints, releases the lease and publishes the job again; a job past its runtime
limit checkpoints and fails with `timeout`.

A job is never `succeeded` without its artifacts: objects are uploaded first (with retries and backoff),
then recorded, then the job finishes; a store that stays down sends the job back to the queue. Failures
a user caused (`GanError`: config, data, checkpoint, seeds), a diverged run, an out-of-memory device and an
upload that would pass the tenant's storage quota (`storage_quota`) become FAILED with a machine-readable
`error_type` and are not retried; anything else is a bug, recorded as `internal_error` and re-raised so
Celery logs its traceback. A training job keeps its newest Settings.keep_checkpoints intermediate
checkpoints (plus the final, the best step's and the one its row resumes from); older ones are deleted as
new ones land, and when a resumed attempt starts (worker.attempt.Attempt.delete_checkpoints).

The database engine and artifact store are built on first use from the app's settings
(`app.conf.dcgan_settings`, set by `worker.celery_app.make_celery`), so importing this module only
registers the tasks.
"""

from __future__ import annotations

import math
import os
import re
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import torch
from celery import Celery, shared_task
from celery.signals import worker_shutting_down
from celery.utils.log import get_task_logger

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import jobs, registry, scheduling
from core.db import Artifact, Job, JobStatus, JobType, make_engine, make_session_factory
from core.error_text import described, first_line
from core.gan.checkpoint import CheckpointError
from core.gan.config import TrainConfig
from core.gan.errors import GanError
from core.gan.train import Callbacks, Progress, train
from core.queue import EVALUATE, GENERATE, REAP, TRAIN, publish
from core.orphans import OrphanScan
from core.reaper import reap_once
from core.quotas import StorageQuotaExceeded
from core.settings import Settings
from core.storage import (ObjectNotFound, best_generator_key, checkpoint_key, generator_key, grid_key,
                          open_store, sample_key)

from worker.attempt import Attempt, Context, FencedOut, StorageUnavailable
from worker.capacity import RESERVATIONS, admit
from worker.evaluation import run_evaluation
from worker.generation import run_generation
from worker.loading import load_dataset, worker_cache
from worker.metrics import TrainingCounter, observe_attempt_end

log = get_task_logger(__name__)

# The job row is written at most this often while training: often enough for a live progress bar,
# rarely enough that a fast GPU run does not spend its time in the database.
SYNC_SECONDS = 1.0
# What each logged step keeps in the job's metrics history (GET /v1/jobs/<id>/metrics); an evaluated step
# (config eval_every) adds EVAL_NAMES.
METRIC_NAMES = ("loss_d", "loss_g", "d_real", "d_fake", "images_per_second")
EVAL_NAMES = ("fid", "kid", "eval_seconds")


# Set when the worker begins a warm shutdown (SIGTERM, a deploy): the running job checkpoints, releases
# its lease and is published again, instead of keeping the worker alive until it finishes.
_shutdown = threading.Event()


@worker_shutting_down.connect
def _on_worker_shutting_down(**_: Any) -> None:
    _shutdown.set()


_context: Context | None = None
_context_lock = threading.Lock()


def _get_context(app: Celery) -> Context:
    """The process's engine and store, built on the first task (after a prefork worker has forked)."""
    global _context
    with _context_lock:
        if _context is None:
            settings: Settings = app.conf.dcgan_settings
            threads = app.conf.get("dcgan_threads")
            if threads:
                torch.set_num_threads(int(threads))
            engine = make_engine(settings.database_url, idle_in_transaction_seconds=settings.lease_seconds)
            _context = Context(settings, make_session_factory(engine), open_store(settings), app)
        return _context


@shared_task(name=TRAIN.name, bind=True)
def train_task(self, job_id: str) -> None:
    _run_job(self.app, job_id, JobType.TRAIN, _train)


@shared_task(name=GENERATE.name, bind=True)
def generate_task(self, job_id: str) -> None:
    _run_job(self.app, job_id, JobType.GENERATE, run_generation)


@shared_task(name=EVALUATE.name, bind=True)
def evaluate_task(self, job_id: str) -> None:
    _run_job(self.app, job_id, JobType.EVALUATE, run_evaluation)


# Where this process's reaper passes walk the store on from (core.orphans): each pass looks at the next batch.
_orphan_scan = OrphanScan()


@shared_task(name=REAP.name, bind=True)
def reap_task(self) -> None:
    """Celery beat's periodic reaper pass (core.reaper), on the `maintenance` queue; the pass logs what it
    did, and nothing when it did nothing (every 15 s)."""
    context = _get_context(self.app)
    reap_once(context.session_factory, context, context.settings, context.store, _orphan_scan)


def _run_job(app: Celery, job_id_text: str, job_type: str, body: Callable[[Attempt], None]) -> None:
    """A message rang for its queue (core.scheduling): run the best job this worker may claim there."""
    context = _get_context(app)
    settings = context.settings
    with context.session_factory() as session:
        for job_id in _jobs_to_try(session, uuid.UUID(job_id_text), job_type, settings):
            if not RESERVATIONS.take(job_id):  # another thread of this worker is on it: try the next
                continue
            try:
                if not admit(session, job_id, settings):  # too big for this device: failed, or left queued
                    return
                if _claim_and_run(context, session, job_id, job_type, body):
                    break
            finally:
                RESERVATIONS.release(job_id)  # its memory is free for the next claim (--jobs-per-gpu)
        else:
            return
        if settings.max_running_jobs_per_tenant:
            _ring_for_tenant(context, session, job_id)


def _jobs_to_try(session: Session, message_job: uuid.UUID, job_type: str, settings: Settings) -> list[uuid.UUID]:
    """The message's own job when it is running (an expired lease to take over: claim_job decides) or was sent
    to the wrong task (a bug, recorded as such when it is claimed), else the queue's best claimable queued jobs,
    best first (core.scheduling), which need not include it."""
    row = session.execute(select(Job.status, Job.type).where(Job.id == message_job)).one_or_none()
    if row is not None and (row.status == JobStatus.RUNNING or row.type != job_type):
        chosen = [message_job]
    else:
        chosen = scheduling.candidates(session, job_type, settings.max_running_jobs_per_tenant, limit=5)
    session.commit()
    if not chosen:
        log.info("job %s: not claimable, and nothing else is in the %s queue (taken, finished, or every queued "
                 "job's tenant is at its running cap); this delivery does nothing", message_job, job_type)
    return chosen


def _ring_for_tenant(context: Context, session: Session, job_id: uuid.UUID) -> None:
    """A job of a tenant under a running cap ended: send a message for its next queued job in each queue now,
    instead of leaving it to the reaper."""
    tenant_id = session.scalar(select(Job.tenant_id).where(Job.id == job_id))
    waiting = scheduling.waiting_for_tenant(session, tenant_id) if tenant_id is not None else []
    session.commit()
    for waiting_id, waiting_type in waiting:
        publish(context, session, waiting_type, waiting_id)


def _claim_and_run(context: Context, session: Session, job_id: uuid.UUID, job_type: str,
                   body: Callable[[Attempt], None]) -> bool:
    """Claim the job (its memory is reserved by admit()) and run its attempt, recording how it ended; False
    when it was not claimable (another worker took it, it finished, or its tenant reached its cap)."""
    attempt = jobs.claim_job(session, job_id, _worker_name(), context.settings.lease_seconds,
                             max_running_per_tenant=context.settings.max_running_jobs_per_tenant)
    session.commit()
    if attempt is None:
        log.info("job %s: not claimable (finished, cancelled, out of attempts, held by a live worker or its "
                 "tenant at its running cap)", job_id)
        return False
    log.info("job %s: claimed as attempt %s", job_id, attempt)
    run = Attempt(context, session, job_id, attempt)
    run.device = "cuda" if torch.cuda.is_available() else "cpu"  # as core.gan's "auto" picks (GET /v1/usage)
    run.lease.start()
    try:
        if run.job_type != job_type:
            raise ValueError(f"job {job_id} is a {run.job_type} job, sent to the {job_type} task")
        body(run)
    except FencedOut as exc:
        log.warning("job %s: stopped: %s", job_id, exc)
    except StorageUnavailable as exc:
        log.warning("job %s: %s; back to the queue", job_id, exc)
        run.requeue("storage_unavailable", str(exc))
    except StorageQuotaExceeded as exc:
        run.fail("storage_quota", str(exc))
    except GanError as exc:
        run.fail(_error_type(exc), str(exc))
    except FloatingPointError as exc:
        run.fail("non_finite_loss", str(exc))
    except torch.cuda.OutOfMemoryError as exc:
        run.fail("out_of_memory", first_line(exc))
    except Exception as exc:
        try:
            run.fail("internal_error", described(exc))
        except Exception:
            log.exception("job %s: could not record internal_error", job_id)
        raise
    finally:
        run.lease.stop()
        run.account()  # its seconds and device on the job's row (GET /v1/usage)
        observe_attempt_end(context.session_factory, job_id, attempt)  # dcgan_job_duration_seconds
    return True


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _error_type(exc: GanError) -> str:
    """ConfigError -> config_error, DataError -> data_error, CheckpointError -> checkpoint_error."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


# ----- train -----

class _TrainHooks:
    """The train loop's callbacks: throttled progress and stop checks, artifacts uploaded as they appear.

    `stop_reason` says why the loop was asked to stop: "cancel" (the user), "shutdown" (the worker is
    going down) or "timeout" (the job's runtime limit); a fenced-out attempt raises FencedOut instead.
    """

    def __init__(self, run: Attempt, notes: list[str], resumed_from: Artifact | None, batch_size: int) -> None:
        self.run, self.notes, self.resumed_from = run, notes, resumed_from
        # The worker's step and image counters (worker.metrics), from the step this attempt resumes at.
        self.steps_counted = TrainingCounter(resumed_from.step or 0 if resumed_from else 0, batch_size)
        self.started = False  # the loop has begun stepping (so a CheckpointError is not about resuming)
        self.stop_reason: str | None = None
        self._last_progress = -math.inf
        self._last_check = -math.inf
        self._unwritten: Progress | None = None  # the newest progress the throttle held back
        self._points: list[tuple[int, dict[str, float]]] = []  # logged steps not yet in job_metrics
        self._total_steps = math.inf  # known from the first progress report

    def flush_progress(self) -> None:
        """Write the progress (and logged steps) the throttle held back, so a stopped job shows the step it
        stopped at and its metrics history has every logged step."""
        if self._unwritten is not None:
            self._last_progress = -math.inf
            self.on_progress(self._unwritten)

    def callbacks(self) -> Callbacks:
        return Callbacks(on_progress=self.on_progress, should_stop=self.should_stop,
                         on_checkpoint=self.on_checkpoint, on_sample=self.on_sample, on_best=self.on_best)

    def on_progress(self, progress: Progress) -> None:
        self.steps_counted.count(progress.step)
        self._total_steps = progress.total_steps
        if not self._points or self._points[-1][0] != progress.step:  # a stop re-reports its last step
            names = METRIC_NAMES + (EVAL_NAMES if progress.fid is not None else ())
            self._points.append((progress.step, {name: getattr(progress, name) for name in names}))
        now = time.monotonic()
        if now - self._last_progress < SYNC_SECONDS and progress.step < progress.total_steps:
            self._unwritten = progress
            return
        self._last_progress, self._unwritten = now, None
        document = progress.to_dict()
        if self.notes:
            document["notes"] = list(self.notes)
        self.run.write(jobs.record_progress, document, self._points)
        self._points = []

    def should_stop(self) -> bool:
        # Called before every step; the database is asked at most once a SYNC_SECONDS, and a stop sticks.
        if not self.started:
            self.started = True  # the checkpoint (if any) loaded: say where this attempt starts from
            step = self.resumed_from.step if self.resumed_from is not None else 0
            # Steps a lost attempt logged past this checkpoint belong to a run that is not continued.
            self.run.write(jobs.discard_metrics_after, step)
            self.run.write(jobs.record_event, "resumed_from_step" if step else "started",
                           {"step": step, **({"key": self.resumed_from.key} if self.resumed_from else {})})
            if self.resumed_from is not None:
                # A lost attempt killed between recording a checkpoint and pruning the older ones left one
                # more than the retention setting; prune now, before the next upload counts it against the quota.
                self.run.delete_checkpoints(self.run.context.settings.keep_checkpoints, final=False)
        self.run.heartbeat()
        if self.stop_reason is not None:
            return True
        if _shutdown.is_set():
            self.stop_reason = "shutdown"
        elif time.monotonic() > self.run.deadline:
            self.stop_reason = "timeout"
        now = time.monotonic()
        if self.stop_reason is None and now - self._last_check >= SYNC_SECONDS:
            self._last_check = now
            stop = self.run.should_stop()
            if stop and not self.run.cancel_requested():
                # Fenced out: the loop's final checkpoint and grid would be uploaded over the successor's.
                raise FencedOut(f"job {self.run.job_id}: attempt {self.run.attempt} no longer holds it")
            if stop:
                self.stop_reason = "cancel"
        return self.stop_reason is not None

    def on_sample(self, path: Path, step: int) -> None:
        # The sample and the live grid are the same picture.
        self.run.upload(sample_key(self.run.tenant_id, self.run.job_id, step), path, step)
        self.run.upload(grid_key(self.run.tenant_id, self.run.job_id), path, step)
        self.run.write(jobs.record_event, "sample", {"step": step})

    def on_best(self, path: Path, best: dict[str, Any]) -> None:
        # The artifact first: a job row never names a best step whose generator is not in the store.
        self.run.upload(best_generator_key(self.run.tenant_id, self.run.job_id), path, best["step"])
        self.run.write(jobs.record_best, best["step"], best["fid"], best["kid"])

    def on_checkpoint(self, path: Path, step: int) -> None:
        key = checkpoint_key(self.run.tenant_id, self.run.job_id, step)
        self.run.upload(key, path, step)
        # The logged steps up to the checkpoint first: an attempt resuming from it logs only the steps after
        # it again, so one held back here would be a gap in the history.
        self.flush_progress()
        self.run.write(jobs.set_checkpoint, key, step)
        # The loop's last checkpoint comes at the last step or after a stop; every earlier one is intermediate.
        final = self.stop_reason is not None or step >= self._total_steps
        self.run.delete_checkpoints(self.run.context.settings.keep_checkpoints, final)
        if not final:
            path.unlink(missing_ok=True)  # uploaded: the worker's disk keeps no more than the store does


def _train(run: Attempt) -> None:
    job = run.job()
    config = TrainConfig.from_dict(job.config)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dcgan-train-") as tmp:
        tmp_dir = Path(tmp)
        data = load_dataset(run, job.request.get("dataset"), config.img_size, config.img_channels,
                            tmp_dir / "dataset")
        run.heartbeat()
        # Newest valid checkpoint first; a missing, altered or unloadable one falls back to the one before,
        # and the last resort is step 0 (None).
        candidates: list[Artifact | None] = [*jobs.checkpoints_newest_first(run.session, run.job_id), None]
        run.session.commit()
        for candidate in candidates:
            path = _fetch_checkpoint(run, candidate, tmp_dir / "resume", notes) if candidate else None
            if candidate is not None and path is None:
                continue
            hooks = _TrainHooks(run, notes, candidate, config.batch_size)
            try:
                result = train(config, data, tmp_dir / "run", resume_from=path, callbacks=hooks.callbacks(),
                               cache_dir=worker_cache(run, "metrics"), best=_best_of(job))
                break
            except CheckpointError as exc:
                if path is None or hooks.started:
                    raise
                # A checkpoint this attempt cannot use costs the steps it held, not the job.
                _note(run, notes, f"could not resume from {candidate.key}: {exc}")
        hooks.flush_progress()
        if hooks.stop_reason == "shutdown":
            run.release()  # the final checkpoint is recorded; the next attempt resumes from it
            return
        run.upload(generator_key(run.tenant_id, run.job_id), result.generator_path, result.step)
        run.upload(grid_key(run.tenant_id, run.job_id), result.grid_path, result.step)
    if not result.stopped:
        run.write(_succeed_and_register, data.source_hash, result.final_scores)
    elif hooks.stop_reason == "cancel":
        run.finish(JobStatus.CANCELLED)
    elif hooks.stop_reason == "timeout":
        limit = run.runtime_limit
        run.finish(JobStatus.FAILED, "timeout", f"the job ran past its runtime limit of {limit} s at step "
                                                f"{result.step} of {result.total_steps}; its last checkpoint "
                                                f"and generator are kept")
    else:
        raise FencedOut(f"job {run.job_id}: stopped because attempt {run.attempt} no longer holds it")


def _best_of(job: Job) -> dict[str, Any] | None:
    """The best evaluated generator an earlier attempt recorded: a resumed job keeps its best so far."""
    if job.best_step is None:
        return None
    return {"step": job.best_step, "fid": job.best_fid, "kid": job.best_kid}


def _succeed_and_register(session: Session, job_id: uuid.UUID, attempt: int, dataset_sha256: str,
                          final_scores: dict[str, Any] | None) -> bool:
    """Succeed the job and register its generators in one transaction: a succeeded job always has its
    registry versions, and a fenced-out attempt registers nothing."""
    if not jobs.finish_job(session, job_id, attempt, JobStatus.SUCCEEDED):
        return False
    registry.register_job_generators(session, session.get(Job, job_id), dataset_sha256, final_scores)
    return True


def _note(run: Attempt, notes: list[str], message: str) -> None:
    """Something the user should know about this attempt: kept in its progress notes, logged, and sent as
    a `log` event on the job's stream and timeline."""
    notes.append(message)
    log.warning("job %s: %s", run.job_id, message)
    run.write(jobs.record_event, "log", {"level": "warning", "message": message})


def _fetch_checkpoint(run: Attempt, artifact: Artifact, folder: Path, notes: list[str]) -> Path | None:
    """A checkpoint a previous attempt recorded, downloaded and checked against its recorded sha256;
    None (and a note) when it is missing or its bytes are not the ones that were recorded."""
    path = folder / artifact.key.rsplit("/", 1)[-1]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fetched = run.store.get_file(artifact.key, path)
    except ObjectNotFound:
        _note(run, notes, f"checkpoint {artifact.key} is missing from the store, skipped")
        return None
    if fetched.sha256 != artifact.sha256:
        _note(run, notes, f"checkpoint {artifact.key} does not match its recorded sha256 (corrupt), skipped")
        path.unlink()
        return None
    return path
