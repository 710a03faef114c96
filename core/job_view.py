"""A job as the API shows it (GET /v1/jobs/<id>), built without Flask: the API answers with it and the webhook
outbox (core.webhooks) freezes it into each message's payload, so a receiver gets the same document a poll
would. The links are the API's paths; the API passes the ones its router builds (they carry a script root when
it is mounted under one), the outbox these plain `/v1/jobs/<id>/...` paths.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.db import Job

# The job's links: name -> path under /v1/jobs/<id>. web.jobs builds the same names with url_for (a test keeps
# the two equal).
LINK_PATHS = {"get": "", "events": "/events", "cancel": "/cancel", "metrics": "/metrics", "grid": "/grid",
              "generator": "/generator", "samples": "/samples", "best_generator": "/best-generator",
              "images": "/images", "stream": "/stream", "artifacts": "/artifacts"}


def job_links(job_id: str) -> dict[str, str]:
    """The job's links as plain paths (no script root)."""
    return {name: f"/v1/jobs/{job_id}{path}" for name, path in LINK_PATHS.items()}


def job_document(job: Job, links: dict[str, str] | None = None, queue_position: int | None = None) -> dict[str, Any]:
    """The job as GET /v1/jobs/<id> shows it; `links` default to `job_links`; `queue_position`
    (core.scheduling) is the caller's to count, for a queued job."""
    progress = dict(job.progress or {})
    best = {"step": job.best_step, "fid": job.best_fid, "kid": job.best_kid} if job.best_step is not None else None
    return {
        "id": str(job.id), "type": job.type, "status": job.status, "attempt": job.attempt,
        "max_attempts": job.max_attempts, "priority": job.priority, "queue_position": queue_position,
        "config": job.config,
        "request": {k: v for k, v in (job.request or {}).items() if k != "estimate"}, "progress": progress,
        # What the platform expects the job to need (core.gan.cost), as checked at submission.
        "estimate": (job.request or {}).get("estimate"),
        "best": best, "result": job.result, "cancel_requested": job.cancel_requested,
        "error": {"type": job.error_type, "detail": job.error_detail} if job.error_type else None,
        "created_at": iso(job.created_at), "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at), "updated_at": iso(job.updated_at),
        "links": links if links is not None else job_links(str(job.id)),
    }


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
