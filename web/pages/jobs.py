"""The jobs pages: the list (newest first, or training runs ranked by their best FID), one job (charts, grids,
best evaluated step, registered generators, an evaluation's result, timeline, artifacts, cancel, generate) and
the comparison of training runs. Each page is rendered from the /v1 API (web.pages.api) and kept live by its
script (web/static/jobs.js, job.js, compare.js), which reads the same API from the browser.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from flask import abort, redirect, render_template, request, url_for

from core.job_states import JobStatus, JobType

from . import api, bp

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
PAGE_SIZE = 20
# What the job page's generate form proposes first.
DEFAULT_SEEDS = "0-15"
DEFAULT_NROW = 4
COMPARE_PICKER_SIZE = 50
# How the jobs list may be ordered (GET /v1/jobs?sort=): the API's default first.
SORTS = {"newest": "newest first", "best_fid": "best FID first (evaluated training runs)"}
# An evaluation result's fields in the order a reader wants them; any others follow in the API's order.
RESULT_ORDER = ("fid", "kid_mean", "kid_std", "is_mean", "is_std", "num_samples", "dataset", "feature_net",
                "feature_net_sha256", "preprocess", "seeds", "generator", "sampler")


@bp.get("/")
def jobs():
    filters = {name: request.args.get(name, "") for name in ("status", "type", "sort")}
    cursor = request.args.get("cursor", "")
    answer = api.get("/v1/jobs", **filters, cursor=cursor, limit=PAGE_SIZE)
    error = None
    if not answer.ok:  # a hand-edited filter or a stale cursor: say so, show the first page unfiltered
        error, cursor = "; ".join(f"{field}: {message}" for field, message in answer.errors().items()), ""
        filters = {"status": "", "type": "", "sort": ""}
        answer = api.get("/v1/jobs", limit=PAGE_SIZE)
    page = answer.body
    return render_template("jobs.html", jobs=page["jobs"], next_cursor=page["next_cursor"], cursor=cursor,
                           filters=filters, error=error, statuses=list(JobStatus), types=list(JobType), sorts=SORTS,
                           dataset_names=dataset_names(), page_size=PAGE_SIZE)


def dataset_names() -> dict[str, str]:
    """Uploaded datasets' display names by id, for the jobs' dataset column."""
    answer = api.get("/v1/datasets")
    return {d["id"]: d["name"] for d in answer.body["datasets"]} if answer.ok else {}


def job_or_404(job_id: str) -> dict[str, Any]:
    return api.found(f"/v1/jobs/{job_id}", f"There is no job {job_id[:100]} here.")


def _listed(path: str, key: str) -> list[dict[str, Any]]:
    """A list the job page shows, or an empty one when the API has none for this job (yet)."""
    answer = api.get(path)
    return answer.body.get(key, []) if answer.ok and isinstance(answer.body, dict) else []


@bp.get("/jobs/<job_id>")
def job(job_id: str, generate_errors: dict[str, str] | None = None, generate_values: dict[str, str] | None = None,
        status: int = 200):
    # The timeline first, then the job: the page's stream goes on after the timeline's last event, so a
    # change between the two reads (a worker starting the job) is replayed by the stream, never skipped,
    # and the status shown is never older than that last event.
    answer = api.get(f"/v1/jobs/{job_id}/events")
    found = job_or_404(job_id)
    generate_schema = api.schema("GenerateJobRequest")["properties"]
    timeline = answer.body if answer.ok and isinstance(answer.body, dict) else {}
    values = generate_values or {"seeds": DEFAULT_SEEDS, "nrow": str(DEFAULT_NROW),
                                 "truncation": str(generate_schema["truncation"].get("default", ""))}
    return render_template(
        "job.html", job=found, active=found["status"] in ACTIVE,
        events=timeline.get("events", []), last_event_id=timeline.get("last_event_id", 0),
        artifacts=_listed(f"/v1/jobs/{job_id}/artifacts", "artifacts"),
        samples=_listed(f"/v1/jobs/{job_id}/samples", "samples"),
        dataset_names=dataset_names(), parent=_parent(found), registered=found.get("generators") or [],
        result_rows=result_rows(found.get("result")), result_order=RESULT_ORDER,
        can_generate=found["type"] == JobType.TRAIN and found["status"] == JobStatus.SUCCEEDED,
        generate_schema=generate_schema, generate_values=values, generate_errors=generate_errors or {},
        idempotency_key=str(uuid.uuid4()),
    ), status


def result_rows(result: Any) -> list[tuple[str, str]]:
    """An evaluate job's result as (field, text) rows; web/static/job.js shows a result it reads the same way."""
    if not isinstance(result, dict):
        return []
    names = [name for name in RESULT_ORDER if name in result] + [name for name in result if name not in RESULT_ORDER]
    return [(name, shown(result[name])) for name in names]


def shown(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _parent(job: dict[str, Any]) -> str | None:
    return (job.get("request") or {}).get("generator_job")


@bp.get("/jobs/<job_id>/cancel")
def cancel_confirm(job_id: str):
    found = job_or_404(job_id)
    return render_template("cancel.html", job=found, active=found["status"] in ACTIVE)


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str):
    job_or_404(job_id)
    answer = api.post(f"/v1/jobs/{job_id}/cancel")
    if answer.status == 409:  # it finished while the page was open: the job page shows how
        return redirect(url_for("pages.job", job_id=job_id), code=303)
    if not answer.ok:
        abort(answer.status, answer.detail)
    return redirect(url_for("pages.job", job_id=job_id), code=303)


@bp.post("/jobs/<job_id>/generate")
def generate(job_id: str):
    job_or_404(job_id)
    values = {name: request.form.get(name, "").strip() for name in ("seeds", "nrow", "truncation")}
    body: dict[str, Any] = {"generator_job": job_id, "seeds": values["seeds"]}
    for name, kind in (("nrow", int), ("truncation", float)):
        if values[name]:
            body[name] = api.typed(values[name], kind)
    answer = api.post("/v1/jobs/generate", body, idempotency_key=request.form.get("idempotency_key") or None)
    if answer.ok:
        return redirect(url_for("pages.job", job_id=answer.body["id"]), code=303)
    errors = answer.errors() or {"": answer.detail}
    return job(job_id, generate_errors=errors, generate_values=values, status=answer.status)


@bp.get("/compare")
def compare():
    chosen = list(dict.fromkeys(request.args.getlist("job")))
    compared = [job_or_404(job_id) for job_id in chosen]
    not_train = [j["id"] for j in compared if j["type"] != JobType.TRAIN]
    if not_train:
        abort(400, f"only training jobs have loss curves to compare; {', '.join(not_train)} is not one")
    candidates = api.get("/v1/jobs", type=JobType.TRAIN.value, limit=COMPARE_PICKER_SIZE).body["jobs"]
    listed = {j["id"] for j in candidates}
    return render_template("compare.html", jobs=compared, chosen=set(chosen),
                           candidates=[j for j in compared if j["id"] not in listed] + candidates,
                           dataset_names=dataset_names())
