"""DELETE /v1/jobs/<id>, /v1/datasets/<id>, /v1/generators/<ref>: what core.deletion does, as the API answers it.

- 204: deleted (its objects are gone from the store, or left to the orphan reaper when the store failed after
  the rows went).
- A job: 409 `job-not-finished` while it is queued or running (cancel it first); 410 `job-deleted` once it
  is deleted, the same answer as every other route of that id gives ever after, a second DELETE included.
- 409 `in-use` with `job_ids` while queued or running jobs need it (a job's generator, a dataset, a
  generator version); nothing is removed.
- 404 for ids and references that name nothing of the tenant's.
"""

from __future__ import annotations

import uuid

from flask import Blueprint

from core import deletion
from core.db import Job
from core.storage import StorageError
from core.error_text import first_line

from .jobs import deleted_job
from .openapi import operation
from .problems import Problem
from .resources import db, store
from .tenancy import tenant_id

bp = Blueprint("deletion", __name__, url_prefix="/v1")
DELETED = {204: "deleted"}


# uuid converters: DELETE /v1/jobs/train stays a 405 of the submission route, not a job called "train".
@bp.delete("/jobs/<uuid:job_id>")
@operation("delete a finished job: every object under its storage prefix, its artifacts, metrics and timeline; "
           "the id answers 410 ever after. Its registry versions stay (their weights move out of the job)",
           DELETED, problems=(409, 503))
def delete_job(job_id: uuid.UUID):
    try:
        deletion.delete_job(db(), store(), tenant_id(), job_id)
    except deletion.Gone:
        raise deleted_job(job_id, db().get(Job, job_id).deleted_at) from None
    except deletion.NotFinished as exc:
        raise Problem(409, str(exc), slug="job-not-finished", title="Job not finished", status_now=exc.status) \
            from None
    except Exception as exc:
        raise _problem(exc, f"no job {job_id}") from None
    return "", 204


@bp.delete("/datasets/<uuid:dataset_id>")
@operation("delete a dataset and its objects; 409 while a queued or running job uses it", DELETED, problems=(409, 503))
def delete_dataset(dataset_id: uuid.UUID):
    try:
        deletion.delete_dataset(db(), store(), tenant_id(), dataset_id)
    except Exception as exc:
        raise _problem(exc, f"no dataset {dataset_id}") from None
    return "", 204


@bp.delete("/generators/<ref>")
@operation("delete a generator version (id, name:version or name@alias) with its aliases and weights; 409 while "
           "a queued or running job samples or evaluates it", DELETED, problems=(409, 503))
def delete_generator(ref: str):
    try:
        deletion.delete_generator(db(), store(), tenant_id(), ref)
    except Exception as exc:
        raise _problem(exc, f"no generator {ref[:100]!r}") from None
    return "", 204


def _problem(exc: Exception, missing: str) -> Problem:
    """The answer to what core.deletion raised; anything else is not ours to explain and is raised again."""
    if isinstance(exc, deletion.NotFound):
        return Problem(404, missing)
    if isinstance(exc, deletion.InUse):
        return Problem(409, str(exc), slug="in-use", title="In use by unfinished jobs",
                       job_ids=[str(job_id) for job_id in exc.job_ids])
    if isinstance(exc, StorageError):  # before any row changed (a registry version's weights could not move)
        return Problem(503, f"the artifact store failed, nothing was deleted: {first_line(exc)}",
                       slug="storage-unavailable", title="Storage unavailable")
    raise exc
