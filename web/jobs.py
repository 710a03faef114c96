"""/v1/jobs: submit training, generation and evaluation jobs, poll them, list, cancel, and read their timeline.

A job row is committed before its task is published (the worker must find it), and the response is built
from the row: the database, not Celery, is the truth about a job. If the broker is down the job stays
queued and the reaper publishes it later; the answer is still 202. Every request acts for the tenant of its
API key (web.auth); submissions take an Idempotency-Key (web.idempotency) and are refused with 429 while the
tenant already has `max_queued_jobs` jobs waiting.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, current_app, request, url_for
from sqlalchemy import func, select

from core import jobs, registry
from core.db import Job, JobStatus, JobType
from core.queue import publish
from core.gan.config import LOG_EVERY_STEPS
from core.request_models import (BUILTIN_PREFIX, EvaluateJobRequest, GenerateJobRequest, JobListQuery, MetricsQuery,
                                 TrainJobRequest)

from .idempotency import commit_created, idempotency_key, idempotent
from .openapi import JOB, operation
from .problems import Problem, validation_problem
from .resources import db, queue
from .tenancy import tenant_id
from .validation import TenantLookups, json_body, query_input, validated

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")
QUEUE_FULL_RETRY_SECONDS = 30


def job_or_404(job_id: str) -> Job:
    try:
        parsed = uuid.UUID(job_id)
    except ValueError:
        raise Problem(404, f"no job {job_id[:100]!r}") from None
    job = jobs.get_job(db(), tenant_id(), parsed)
    if job is None:
        raise Problem(404, f"no job {job_id[:100]!r}")
    return job


def job_json(job: Job) -> dict[str, Any]:
    progress = dict(job.progress or {})
    best = {"step": job.best_step, "fid": job.best_fid, "kid": job.best_kid} if job.best_step is not None else None
    return {
        "id": str(job.id), "type": job.type, "status": job.status, "attempt": job.attempt,
        "max_attempts": job.max_attempts, "config": job.config, "request": job.request, "progress": progress,
        "best": best, "result": job.result, "cancel_requested": job.cancel_requested,
        "error": {"type": job.error_type, "detail": job.error_detail} if job.error_type else None,
        "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at), "updated_at": _iso(job.updated_at),
        "links": {**{name: url_for(f"jobs.{name}", job_id=str(job.id))
                     for name in ("get", "events", "cancel", "metrics")},
                  **{name: url_for(f"artifacts.{name}", job_id=str(job.id))
                     for name in ("grid", "generator", "samples", "best_generator")},
                  "stream": url_for("stream.stream", job_id=str(job.id)),
                  "artifacts": url_for("artifacts.list_", job_id=str(job.id))},
    }


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def _accepted(job: Job):
    """Commit the new job (with its idempotency record), then publish its task: only the request that
    created the job publishes it, and a broker that is down delays the job (the reaper sends it) but does
    not fail the request."""
    _check_queued_cap(job.tenant_id)
    job.idempotency_key = idempotency_key()
    job_id, job_type = str(job.id), job.type
    body = job_json(job)
    location = url_for("jobs.get", job_id=job_id)
    commit_created(body, 202, location)
    publish(queue(), db(), job_type, job.id)
    return body, 202, {"Location": location}


def _check_queued_cap(tenant: uuid.UUID) -> None:
    """429 when the tenant would have more than max_queued_jobs queued (the new job, flushed, counts)."""
    limit = current_app.config["SETTINGS"].max_queued_jobs
    queued = db().scalar(select(func.count()).select_from(Job)
                         .where(Job.tenant_id == tenant, Job.status == JobStatus.QUEUED))
    if queued > limit:
        db().rollback()
        raise Problem(429, f"{limit} jobs are already queued for this tenant; submit more once some start",
                      slug="too-many-queued-jobs", title="Too many queued jobs",
                      headers={"Retry-After": str(QUEUE_FULL_RETRY_SECONDS)})


@bp.post("/train")
@operation("submit a training job", {202: JOB}, body=TrainJobRequest)
@idempotent
def create_train():
    lookups = TenantLookups()
    submitted = validated(TrainJobRequest, json_body(request), lookups=lookups,
                          max_runtime_seconds=current_app.config["SETTINGS"].max_job_seconds)
    dataset = None if submitted.dataset.startswith(BUILTIN_PREFIX) else lookups.dataset(submitted.dataset)
    name = registry.default_name(submitted.dataset, dataset.name if dataset is not None else None)
    job = jobs.create_job(db(), tenant_id(), JobType.TRAIN, submitted.config.to_dict(), submitted.stored(name),
                          dataset_id=dataset.id if dataset is not None else None, max_attempts=_max_attempts())
    return _accepted(job)


def _max_attempts() -> int:
    return current_app.config["SETTINGS"].max_attempts


@bp.post("/generate")
@operation("generate images for seeds from a succeeded training job or an uploaded generator", {202: JOB},
           body=GenerateJobRequest)
@idempotent
def create_generate():
    lookups = TenantLookups()
    submitted = validated(GenerateJobRequest, json_body(request), lookups=lookups)
    if submitted.generator is not None:
        version = lookups.generator(submitted.generator)
        job = jobs.create_job(db(), tenant_id(), JobType.GENERATE, version.config, submitted.stored(version.id),
                              generator_id=version.id, max_attempts=_max_attempts())
    else:
        parent = lookups.train_job(submitted.generator_job)
        job = jobs.create_job(db(), parent.tenant_id, JobType.GENERATE, parent.config, submitted.stored(),
                              parent_job_id=parent.id, max_attempts=_max_attempts())
    return _accepted(job)


@bp.post("/evaluate")
@operation("score a generator (id, name:version or name@alias) on a dataset: FID, KID, and IS where the network "
           "has logits; runs on a low-priority queue of its own", {202: JOB}, body=EvaluateJobRequest)
@idempotent
def create_evaluate():
    lookups = TenantLookups()
    submitted = validated(EvaluateJobRequest, json_body(request), lookups=lookups)
    version = lookups.generator(submitted.generator)
    dataset = None if submitted.dataset.startswith(BUILTIN_PREFIX) else lookups.dataset(submitted.dataset)
    job = jobs.create_job(db(), tenant_id(), JobType.EVALUATE, version.config, submitted.stored(version.id),
                          generator_id=version.id, dataset_id=dataset.id if dataset is not None else None,
                          max_attempts=_max_attempts())
    return _accepted(job)


@bp.get("/<job_id>")
@operation("status and progress; a succeeded training job also lists the generator versions it registered",
           {200: JOB})
def get(job_id: str):
    job = job_or_404(job_id)
    body = job_json(job)
    if job.type == JobType.TRAIN and job.status == JobStatus.SUCCEEDED:
        body["generators"] = [{"id": str(row.id), "name": row.name, "version": row.version,
                               "ref": f"{row.name}:{row.version}", "source": row.source,
                               "step": row.step, "fid": row.fid,
                               "links": {"self": url_for("generators.get", ref=str(row.id))}}
                              for row in registry.of_job(db(), job.tenant_id, job.id)]
    return body


@bp.get("")
@operation("jobs, newest first", {200: "a page of jobs and next_cursor"}, query=JobListQuery)
def list_():
    query = validated(JobListQuery, query_input(request))
    try:
        found, cursor = jobs.list_jobs(db(), tenant_id(), status=query.status, type=query.type, limit=query.limit,
                                       cursor=query.cursor, sort=query.sort)
    except jobs.BadCursor:
        raise validation_problem([{"field": "cursor", "message": "not a cursor this API returned"}]) from None
    return {"jobs": [job_json(job) for job in found], "next_cursor": cursor}


@bp.post("/<job_id>/cancel")
@operation("queued jobs never start; running ones stop at the next step", {202: JOB}, problems=(409,))
def cancel(job_id: str):
    job = job_or_404(job_id)
    try:
        job = jobs.request_cancel(db(), job.id)
    except jobs.IllegalTransition:
        raise Problem(409, f"job {job_id} is already {job.status}", slug="illegal-transition",
                      title="Illegal state transition") from None
    body = job_json(job)
    db().commit()
    return body, 202


@bp.get("/<job_id>/events")
@operation("the job's timeline (state changes and notes); last_event_id: where its stream goes on from now",
           {200: "events and last_event_id"})
def events(job_id: str):
    job = job_or_404(job_id)
    return {"events": [{"id": e.id, "at": _iso(e.at), "kind": e.kind, "attempt": e.attempt,
                        "detail": jobs.tenant_view(e.detail)}
                       for e in jobs.list_events(db(), job.id)],
            "last_event_id": jobs.newest_event_id(db(), job.id)}


@bp.get("/<job_id>/metrics")
@operation("the training history: one point per logged step (losses, D(x), D(G(z)), img/s)",
           {200: "job_id, interval, total_points and points in step order"}, query=MetricsQuery)
def metrics(job_id: str):
    job = job_or_404(job_id)
    max_points = validated(MetricsQuery, query_input(request)).max_points
    rows = jobs.metric_points(db(), job.id)
    points = [{"step": row.step, **row.values, "at": _iso(row.at)} for row in rows]
    return {"job_id": str(job.id), "interval": LOG_EVERY_STEPS, "total_points": len(points),
            "points": evenly_spaced(points, max_points) if max_points else points}


def evenly_spaced(items: list, count: int) -> list:
    """`count` of `items` spread evenly over them, the first and the last always among them (all of them
    when there are no more than `count`)."""
    if len(items) <= count:
        return items
    last = len(items) - 1
    return [items[round(i * last / (count - 1))] for i in range(count)]
