"""/v1/jobs: submit training and generation jobs, poll them, list, cancel, and read their timeline.

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

from core import jobs
from core.db import Dataset, Job, JobStatus, JobType
from core.queue import publish
from core.gan.seeds import SampleError, parse_seeds

from .generators import visible_generator
from .idempotency import commit_created, idempotency_key, idempotent
from .resources import db, queue
from .tenancy import get_by_id, tenant_id
from .problems import Problem, validation_problem
from .schemas import GENERATE_JOB_REQUEST, check_fields, int_in_range, json_body, parse_train_request

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")
MAX_LIST_LIMIT = 200
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
    return {
        "id": str(job.id), "type": job.type, "status": job.status, "attempt": job.attempt,
        "max_attempts": job.max_attempts, "config": job.config, "request": job.request, "progress": progress,
        "cancel_requested": job.cancel_requested,
        "error": {"type": job.error_type, "detail": job.error_detail} if job.error_type else None,
        "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at), "updated_at": _iso(job.updated_at),
        "links": {**{name: url_for(f"jobs.{name}", job_id=str(job.id)) for name in ("get", "events", "cancel")},
                  **{name: url_for(f"artifacts.{name}", job_id=str(job.id))
                     for name in ("grid", "generator")},
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
@idempotent
def create_train():
    dataset, config, runtime = parse_train_request(json_body(request), lambda ref: _dataset(ref) is not None,
                                                   current_app.config["SETTINGS"].max_job_seconds)
    found = None if dataset.startswith("builtin:") else _dataset(dataset)
    dataset_id = found.id if found is not None else None
    job_request = {"dataset": dataset, **({"max_runtime_seconds": runtime} if runtime is not None else {})}
    job = jobs.create_job(db(), tenant_id(), JobType.TRAIN, config.to_dict(), job_request,
                          dataset_id=dataset_id, max_attempts=_max_attempts())
    return _accepted(job)


def _max_attempts() -> int:
    return current_app.config["SETTINGS"].max_attempts


def _dataset(dataset: str) -> Dataset | None:
    return get_by_id(Dataset, dataset, lambda row: row.tenant_id == tenant_id())


@bp.post("/generate")
@idempotent
def create_generate():
    body = json_body(request)
    errors = check_fields(body, GENERATE_JOB_REQUEST)
    seeds: list[int] = []
    if "seeds" in body:
        try:
            raw = body["seeds"]
            if not isinstance(raw, (str, list)) or (isinstance(raw, list) and not all(
                    isinstance(s, int) and not isinstance(s, bool) for s in raw)):
                raise SampleError("seeds: give a list of integers or a range like 0-63")
            seeds = parse_seeds(raw)
        except SampleError as exc:
            errors.append({"field": "seeds", "message": str(exc).removeprefix("seeds: ")})
    truncation = body.get("truncation", 1.0)
    if not isinstance(truncation, (int, float)) or isinstance(truncation, bool) or not 0 < truncation <= 1:
        errors.append({"field": "truncation", "message": "must be a number in (0, 1]"})
    nrow = body.get("nrow", 8)
    if not int_in_range(nrow, 1, 64):
        errors.append({"field": "nrow", "message": "must be an integer from 1 to 64"})
    parent = uploaded = None
    if ("generator" in body) == ("generator_job" in body):
        errors.append({"field": "generator", "message": "give exactly one of generator (an uploaded generator's "
                                                        "id) and generator_job (a succeeded training job's id)"})
    elif "generator_job" in body:
        parent = _parent_job(body["generator_job"], errors)
    else:
        uploaded = visible_generator(body["generator"])
        if uploaded is None:
            errors.append({"field": "generator", "message": f"no generator {str(body['generator'])[:100]!r}"})
    if errors:
        raise validation_problem(errors)
    sampling = {"seeds": seeds, "truncation": float(truncation), "nrow": nrow}
    if uploaded is not None:
        job = jobs.create_job(db(), tenant_id(), JobType.GENERATE, uploaded.config,
                              {"generator": str(uploaded.id), **sampling}, generator_id=uploaded.id,
                              max_attempts=_max_attempts())
        return _accepted(job)
    assert parent is not None
    request_doc = {"generator_job": str(parent.id), **sampling}
    job = jobs.create_job(db(), parent.tenant_id, JobType.GENERATE, parent.config, request_doc,
                          parent_job_id=parent.id, max_attempts=_max_attempts())
    return _accepted(job)


def _parent_job(value: Any, errors: list[dict[str, str]]) -> Job | None:
    try:
        parent = jobs.get_job(db(), tenant_id(), uuid.UUID(str(value)))
    except ValueError:
        parent = None
    if parent is None or parent.type != JobType.TRAIN:
        errors.append({"field": "generator_job", "message": f"no training job {value!r}"})
        return None
    if parent.status != JobStatus.SUCCEEDED:
        errors.append({"field": "generator_job", "message": f"training job is {parent.status}, not succeeded"})
        return None
    return parent


@bp.get("/<job_id>")
def get(job_id: str):
    return job_json(job_or_404(job_id))


@bp.get("")
def list_():
    status, job_type = request.args.get("status"), request.args.get("type")
    errors = []
    if status is not None and status not in {s.value for s in JobStatus}:
        errors.append({"field": "status", "message": f"one of {', '.join(s.value for s in JobStatus)}"})
    if job_type is not None and job_type not in {t.value for t in JobType}:
        errors.append({"field": "type", "message": f"one of {', '.join(t.value for t in JobType)}"})
    limit_raw = request.args.get("limit", "50")
    limit = int(limit_raw) if limit_raw.isdigit() else 0
    if not 1 <= limit <= MAX_LIST_LIMIT:
        errors.append({"field": "limit", "message": f"an integer from 1 to {MAX_LIST_LIMIT}"})
    if errors:
        raise validation_problem(errors)
    try:
        found, cursor = jobs.list_jobs(db(), tenant_id(), status=status, type=job_type, limit=limit,
                                       cursor=request.args.get("cursor"))
    except jobs.BadCursor:
        raise validation_problem([{"field": "cursor", "message": "not a cursor this API returned"}]) from None
    return {"jobs": [job_json(job) for job in found], "next_cursor": cursor}


@bp.post("/<job_id>/cancel")
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
def events(job_id: str):
    job = job_or_404(job_id)
    return {"events": [{"at": _iso(e.at), "kind": e.kind, "attempt": e.attempt, "detail": e.detail}
                       for e in jobs.list_events(db(), job.id)]}
