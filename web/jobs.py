"""/v1/jobs: submit training, generation and evaluation jobs, poll them, list, cancel, and read their timeline.

A job row is committed before its task is published (the worker must find it), and the response is built
from the row: the database, not Celery, is the truth about a job. If the broker is down the job stays
queued and the reaper publishes it later; the answer is still 202. Every request acts for the tenant of its
API key (web.auth); submissions take an Idempotency-Key (web.idempotency) and are refused with 429 while the
tenant already has `max_queued_jobs` jobs waiting or created `max_jobs_per_hour` in the last hour (core.quotas),
with 403 when the job's estimated storage would pass the tenant's storage quota (web.quotas), and with 422 for a
checkpoint or sample cadence under the server's floor (`min_checkpoint_every`, `min_sample_every`).
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, current_app, has_request_context, request, url_for
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from core import jobs, quotas, registry, scheduling
from core.db import Dataset, Generator, Job, JobStatus, JobType, Tenant
from core.queue import publish
from core.gan.catalog import builtin_size
from core.gan.config import LOG_EVERY_STEPS, TrainConfig
from core.gan.cost import Estimate, estimate_generate, estimate_train, human_bytes
from core.gan.seeds import GENERATE_CHUNK, SampleError
from core.job_view import iso, job_document
from core.request_models import (BUILTIN_PREFIX, EvaluateJobRequest, GenerateJobRequest, JobListQuery, MetricsQuery,
                                 TrainJobRequest)

from .idempotency import commit_created, idempotency_key, idempotent
from .openapi import JOB, operation
from .problems import Problem, validation_problem
from .quotas import STORAGE_QUOTA_STATUS, check_storage_quota
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
    if job.deleted_at is not None:
        raise deleted_job(job.id, job.deleted_at)
    return job


def deleted_job(job_id: uuid.UUID, deleted_at) -> Problem:
    """What every route of a deleted job answers, ever after (its row is a tombstone: core.deletion)."""
    return Problem(410, f"job {job_id} was deleted at {deleted_at.isoformat()}; its artifacts are gone",
                   slug="job-deleted", title="Job deleted", deleted_at=deleted_at.isoformat())


def job_json(job: Job) -> dict[str, Any]:
    """The job document (core.job_view, which the webhook payloads use too) with the router's links and, for a
    queued job, its place in its queue (one COUNT; core.scheduling)."""
    position = scheduling.queue_position(db(), job) if job.status == JobStatus.QUEUED else None
    return job_document(job, _job_links(str(job.id)), position)


# A job id no job has: job_links' templates hold it where the id goes.
_PLACEHOLDER_ID = "00000000-0000-0000-0000-000000000000"


def _job_links(job_id: str) -> dict[str, str]:
    """The job's links: what url_for answers for a placeholder id, asked once per app and script root, with the
    id put in (eleven url_for calls were a tenth of a status poll's time)."""
    made = current_app.extensions["dcgan"].setdefault("job_links", {})
    root = request.script_root if has_request_context() else ""
    if (templates := made.get(root)) is None:
        templates = made[root] = {
            **{name: url_for(f"jobs.{name}", job_id=_PLACEHOLDER_ID)
               for name in ("get", "events", "cancel", "metrics")},
            **{name: url_for(f"artifacts.{name}", job_id=_PLACEHOLDER_ID)
               for name in ("grid", "generator", "samples", "best_generator", "images")},
            "stream": url_for("stream.stream", job_id=_PLACEHOLDER_ID),
            "artifacts": url_for("artifacts.list_", job_id=_PLACEHOLDER_ID)}
    return {name: template.replace(_PLACEHOLDER_ID, job_id) for name, template in templates.items()}


def _accepted(job: Job):
    """Commit the new job (with its idempotency record), then publish its task: only the request that
    created the job publishes it, and a broker that is down delays the job (the reaper sends it) but does
    not fail the request."""
    if job.type == JobType.TRAIN:
        _check_cadence(job.config)
    # One submission of a tenant at a time from here to the commit, so its caps are counted exactly.
    db().execute(select(Tenant.id).where(Tenant.id == job.tenant_id).with_for_update(key_share=True))
    _check_queued_cap(job.tenant_id)
    _check_hourly_cap(job.tenant_id)
    check_storage_quota(job.tenant_id, _estimated_storage(job), f"a {job.type} job's estimated storage",
                        reserved=quotas.reserved_bytes(db(), job.tenant_id, _estimated_storage, besides=job.id))
    job_uuid, job_type = job.id, job.type  # before the commit, which expires the row (reading it costs a query)
    body = job_json(job)
    location = url_for("jobs.get", job_id=str(job_uuid))
    commit_created(body, 202, location)
    publish(queue(), db(), job_type, job_uuid)
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


def _check_hourly_cap(tenant: uuid.UUID) -> None:
    """429 when the tenant created max_jobs_per_hour jobs in the last hour (cancelled and finished ones count:
    each cost a row), with Retry-After: when enough of them have left the hour for one more."""
    limit = current_app.config["SETTINGS"].max_jobs_per_hour
    wait = quotas.hourly_job_wait(db(), tenant, limit, pending=1)  # the new job, flushed, is not yet counted
    if wait is not None:
        db().rollback()
        raise Problem(429, f"this tenant created {limit} jobs in the last hour, its limit (DCGAN_MAX_JOBS_PER_HOUR); "
                           f"the next fits in {quotas.retry_after(wait)} s", slug="too-many-jobs",
                      title="Too many jobs this hour", headers={"Retry-After": quotas.retry_after(wait)})


def _estimated_storage(job: Job) -> int:
    """What the job is expected to store (core.gan.cost): the estimate its request keeps, else the generate
    estimate of its seeds; evaluate jobs store a small report, counted by the worker when written."""
    kept = (job.request or {}).get("estimate")
    if kept is not None:
        return int(kept["storage_bytes"])
    if job.type == JobType.GENERATE:
        try:
            seeds = GenerateJobRequest.from_stored(job.request).seeds
        except SampleError:  # a stored request the worker will refuse: it stores nothing
            return 0
        return estimate_generate(TrainConfig.from_dict(job.config), seeds.count, GENERATE_CHUNK).storage_bytes
    return 0


def _check_cadence(config: dict[str, Any]) -> None:
    """422 for a checkpoint or sample cadence under the server's floor (0, only at the end, is always allowed):
    a checkpoint or grid every few steps costs a write per step for nothing a user can use."""
    settings = current_app.config["SETTINGS"]
    errors = [{"field": f"config.{name}",
               "message": f"must be 0 (only at the end) or at least {floor} (the server's DCGAN_{env})"}
              for name, floor, env in (("checkpoint_every", settings.min_checkpoint_every, "MIN_CHECKPOINT_EVERY"),
                                       ("sample_every", settings.min_sample_every, "MIN_SAMPLE_EVERY"))
              if 0 < config.get(name, 0) < floor]
    if errors:
        db().rollback()
        raise validation_problem(errors)


@bp.post("/train")
@operation("submit a training job", {202: JOB}, body=TrainJobRequest, problems=(STORAGE_QUOTA_STATUS,))
@idempotent
def create_train():
    lookups = TenantLookups()
    submitted = validated(TrainJobRequest, json_body(request), lookups=lookups,
                          max_runtime_seconds=current_app.config["SETTINGS"].max_job_seconds)
    dataset = None if submitted.dataset.startswith(BUILTIN_PREFIX) else lookups.dataset(submitted.dataset)
    name = registry.default_name(submitted.dataset, dataset.name if dataset is not None else None)
    num_images = builtin_size(submitted.dataset) if dataset is None else dataset.num_images
    estimate = estimate_train(submitted.config, num_images=num_images,
                              keep_checkpoints=current_app.config["SETTINGS"].keep_checkpoints)
    _check_limits(estimate)
    job = _create_job(tenant_id(), JobType.TRAIN, submitted.config.to_dict(),
                      {**submitted.stored(name), "estimate": estimate.totals()},
                      dataset_id=dataset.id if dataset is not None else None, max_attempts=_max_attempts(),
                      idempotency_key=idempotency_key(), **_placement(submitted.priority))
    return _accepted(job)


def _placement(priority: int) -> dict[str, Any]:
    """create_job's arguments that place a job in its queue (core.scheduling)."""
    return {"priority": priority, "priority_step_seconds": current_app.config["SETTINGS"].priority_step_seconds}


def _create_job(*args: Any, **kwargs: Any) -> Job:
    """jobs.create_job in the request's session, answering 422 when a dataset or generator the job names was
    deleted between its lookup and this insert. PostgreSQL cannot get there (the lookup holds a KEY SHARE lock
    on the row: web.validation); on SQLite the lookup cannot lock it and the insert's foreign key fails."""
    try:
        return jobs.create_job(db(), *args, **kwargs)
    except IntegrityError:
        db().rollback()
        for field, model, row_id in (("dataset", Dataset, kwargs.get("dataset_id")),
                                     ("generator", Generator, kwargs.get("generator_id"))):
            if row_id is not None and db().get(model, row_id) is None:
                raise validation_problem([{"field": field, "message": f"{field} {row_id} was deleted while this "
                                                                      "job was being submitted"}]) from None
        raise


def _max_attempts() -> int:
    return current_app.config["SETTINGS"].max_attempts


def _check_limits(estimate: Estimate) -> None:
    """422 naming the fields that drive a job's estimated peak memory or storage past the server's limit
    (DCGAN_MAX_JOB_MEMORY_BYTES, DCGAN_MAX_JOB_STORAGE_BYTES), with the estimate and the limit in the detail."""
    settings = current_app.config["SETTINGS"]
    over = [(total, what, value, limit, env) for total, what, value, limit, env in (
        ("memory", "peak memory", estimate.memory_bytes, settings.max_job_memory_bytes, "DCGAN_MAX_JOB_MEMORY_BYTES"),
        ("storage", "storage", estimate.storage_bytes, settings.max_job_storage_bytes, "DCGAN_MAX_JOB_STORAGE_BYTES"))
        if value > limit]
    if not over:
        return
    db().rollback()  # a job flushed before the check is not kept
    reasons: dict[str, list[str]] = {}
    sentences = []
    for total, what, value, limit, env in over:
        sentence = f"the job's estimated {what} is {human_bytes(value)}, over this server's limit of " \
                   f"{human_bytes(limit)} ({env})"
        sentences.append(f"{sentence}: lower {', '.join(estimate.fields(total))}")
        for name in estimate.fields(total):
            reasons.setdefault(name, []).append(sentence)
    errors = [{"field": name, "message": f"drives {' and '.join(why)}"} for name, why in reasons.items()]
    raise Problem(422, "; ".join(sentences), slug="over-job-limits", title="Job over the server's limits",
                  errors=errors, estimate=estimate.to_dict(),
                  limits={"memory_bytes": settings.max_job_memory_bytes,
                          "storage_bytes": settings.max_job_storage_bytes})


@bp.post("/generate")
@operation("generate images for seeds from a succeeded training job or an uploaded generator", {202: JOB},
           body=GenerateJobRequest, problems=(STORAGE_QUOTA_STATUS,))
@idempotent
def create_generate():
    lookups = TenantLookups()
    submitted = validated(GenerateJobRequest, json_body(request), lookups=lookups,
                          max_seeds_per_job=current_app.config["SETTINGS"].max_seeds_per_job)
    if submitted.generator is not None:
        version = lookups.generator(submitted.generator)
        job = _create_job(tenant_id(), JobType.GENERATE, version.config, submitted.stored(version.id),
                          generator_id=version.id, max_attempts=_max_attempts(),
                          idempotency_key=idempotency_key(), **_placement(submitted.priority))
    else:
        parent = lookups.train_job(submitted.generator_job)
        job = _create_job(parent.tenant_id, JobType.GENERATE, parent.config, submitted.stored(),
                          parent_job_id=parent.id, max_attempts=_max_attempts(),
                          idempotency_key=idempotency_key(), **_placement(submitted.priority))
    _check_limits(estimate_generate(TrainConfig.from_dict(job.config), submitted.seeds.count, GENERATE_CHUNK,
                                    source="generator" if submitted.generator is not None else "generator_job"))
    return _accepted(job)


@bp.post("/evaluate")
@operation("score a generator (id, name:version or name@alias) on a dataset: FID, KID, and IS where the network "
           "has logits; runs on a low-priority queue of its own", {202: JOB}, body=EvaluateJobRequest,
           problems=(STORAGE_QUOTA_STATUS,))
@idempotent
def create_evaluate():
    lookups = TenantLookups()
    submitted = validated(EvaluateJobRequest, json_body(request), lookups=lookups)
    version = lookups.generator(submitted.generator)
    dataset = None if submitted.dataset.startswith(BUILTIN_PREFIX) else lookups.dataset(submitted.dataset)
    job = _create_job(tenant_id(), JobType.EVALUATE, version.config, submitted.stored(version.id),
                      generator_id=version.id, dataset_id=dataset.id if dataset is not None else None,
                      max_attempts=_max_attempts(), idempotency_key=idempotency_key(),
                      **_placement(submitted.priority))
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
    # Where the stream goes on first, then the timeline up to it: an event written between the two reads is
    # then the stream's to send, never counted in last_event_id while missing from the list.
    last_event_id = jobs.newest_event_id(db(), job.id)
    return {"events": [{"id": e.id, "at": iso(e.at), "kind": e.kind, "attempt": e.attempt,
                        "detail": jobs.tenant_view(e.detail)}
                       for e in jobs.list_events(db(), job.id, up_to=last_event_id)],
            "last_event_id": last_event_id}


@bp.get("/<job_id>/metrics")
@operation("the training history: one point per logged step (losses, D(x), D(G(z)), img/s)",
           {200: "job_id, interval, total_points and points in step order"}, query=MetricsQuery)
def metrics(job_id: str):
    job = job_or_404(job_id)
    max_points = validated(MetricsQuery, query_input(request)).max_points
    rows = jobs.metric_points(db(), job.id)
    points = [{"step": row.step, **row.values, "at": iso(row.at)} for row in rows]
    return {"job_id": str(job.id), "interval": LOG_EVERY_STEPS, "total_points": len(points),
            "points": evenly_spaced(points, max_points) if max_points else points}


def evenly_spaced(items: list, count: int) -> list:
    """`count` of `items` spread evenly over them, the first and the last always among them (all of them
    when there are no more than `count`)."""
    if len(items) <= count:
        return items
    last = len(items) - 1
    return [items[round(i * last / (count - 1))] for i in range(count)]
