"""Downloads by job id: the artifact list, the latest (or a given step's) grid, the sample grids written so
far, the exported generator and the best evaluated one, and a large generate job's images (a tar).

Only artifacts the job's row records are served (an object in storage that no attempt recorded does not
exist to users). Bytes stream from a LocalStore; with S3 the answer is a 302 to a short-lived presigned URL,
so large files never pass through the API process.
"""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, redirect, request, stream_with_context, url_for
from sqlalchemy import select

from core import jobs
from core.db import Artifact
from core.request_models import MAX_STEP, GridQuery
from core.storage import ObjectNotFound, best_generator_key, generator_key, grid_key, images_key, sample_key

from .jobs import job_or_404
from .openapi import BINARY, REDIRECT, operation
from .resources import db, store
from .tenancy import get_by_id
from .problems import Problem
from .validation import query_input, validated

bp = Blueprint("artifacts", __name__, url_prefix="/v1/jobs")
PRESIGNED_SECONDS = 300
# Served inline (shown by the browser): the sample grids and images. Anything else is an attachment.
INLINE_TYPES = frozenset({"image/png", "image/gif", "image/jpeg"})
CHUNK = 1024 * 1024


@bp.get("/<job_id>/artifacts")
@operation("name, size, sha256, content type, step and download URL of each artifact", {200: "artifacts"})
def list_(job_id: str):
    job = job_or_404(job_id)
    rows = jobs.list_artifacts(db(), job.id)
    return {"artifacts": [{
        "id": str(a.id), "name": a.name, "size": a.size, "sha256": a.sha256, "content_type": a.content_type,
        "step": a.step, "download_url": url_for("artifacts.download", job_id=job_id, artifact_id=str(a.id)),
    } for a in rows]}


@bp.get("/<job_id>/artifacts/<artifact_id>")
@operation("download one artifact (302 to a presigned URL on S3)", {200: BINARY, 302: REDIRECT})
def download(job_id: str, artifact_id: str):
    job = job_or_404(job_id)
    artifact = get_by_id(Artifact, artifact_id, lambda row: row.job_id == job.id)
    if artifact is None:
        raise Problem(404, f"job {job_id} has no artifact {artifact_id[:100]!r}")
    return _send(artifact)


@bp.get("/<job_id>/grid")
@operation("the latest sample grid (the final one once finished); ?step= for an earlier one",
           {200: BINARY, 302: REDIRECT}, query=GridQuery)
def grid(job_id: str):
    job = job_or_404(job_id)
    step = validated(GridQuery, query_input(request)).step
    key = grid_key(job.tenant_id, job.id) if step is None else sample_key(job.tenant_id, job.id, step)
    return _send(_recorded(job.id, key, f"job {job_id} has no grid" + (f" at step {step}" if step is not None
                                                                       else " yet")))


@bp.get("/<job_id>/samples")
@operation("the sample grids written so far: step and URL of each, in step order", {200: "samples"})
def samples(job_id: str):
    job = job_or_404(job_id)
    return {"samples": [{"step": row.step, "url": url_for("artifacts.sample", job_id=job_id, step=row.step)}
                        for row in jobs.samples_oldest_first(db(), job.id)]}


@bp.get("/<job_id>/samples/<int:step>")
@operation("the sample grid written at one step (PNG)", {200: BINARY, 302: REDIRECT})
def sample(job_id: str, step: int):
    job = job_or_404(job_id)
    missing = f"job {job_id} has no sample at step {step}"
    if step > MAX_STEP:  # no key can name it
        raise Problem(404, missing)
    return _send(_recorded(job.id, sample_key(job.tenant_id, job.id, step), missing))


@bp.get("/<job_id>/generator")
@operation("the exported generator.safetensors", {200: BINARY, 302: REDIRECT})
def generator(job_id: str):
    job = job_or_404(job_id)
    return _send(_recorded(job.id, generator_key(job.tenant_id, job.id), f"job {job_id} has no exported generator yet"))


@bp.get("/<job_id>/best-generator")
@operation("the generator at the job's evaluated step with the lowest FID (config eval_every), as .safetensors",
           {200: BINARY, 302: REDIRECT})
def best_generator(job_id: str):
    job = job_or_404(job_id)
    return _send(_recorded(job.id, best_generator_key(job.tenant_id, job.id),
                           f"job {job_id} has no best generator (it needs eval_every, and one evaluation)"))


@bp.get("/<job_id>/images")
@operation("a generate job's images as a tar of one PNG per seed (seed-000000123.png), in the order asked; only jobs "
           "of more seeds than their grid shows have one", {200: BINARY, 302: REDIRECT})
def images(job_id: str):
    job = job_or_404(job_id)
    return _send(_recorded(job.id, images_key(job.tenant_id, job.id),
                           f"job {job_id} has no images archive (only a finished generate job whose seeds do not fit "
                           f"in its grid has one)"))


def _recorded(job_id: uuid.UUID, key: str, missing: str) -> Artifact:
    artifact = db().scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.key == key))
    if artifact is None:
        raise Problem(404, missing)
    return artifact


def content_disposition(artifact: Artifact) -> str:
    """Images show in the page (the dashboard's <img>); everything else is saved, never rendered by a browser.
    The file name comes from the key, whose characters core.storage.keys limits to [A-Za-z0-9._-]."""
    disposition = "inline" if artifact.content_type in INLINE_TYPES else "attachment"
    return f'{disposition}; filename="{artifact.key.rsplit("/", 1)[-1]}"'


def _send(artifact: Artifact):
    disposition = content_disposition(artifact)
    url = store().presigned_url(artifact.key, PRESIGNED_SECONDS, content_type=artifact.content_type,
                                content_disposition=disposition)
    if url is not None:
        return redirect(url, code=302)
    try:
        stream = store().open(artifact.key)
    except ObjectNotFound:
        raise Problem(404, f"artifact {artifact.name} is recorded but missing from storage") from None

    def chunks():
        with stream:
            while block := stream.read(CHUNK):
                yield block

    response = Response(stream_with_context(chunks()), mimetype=artifact.content_type)
    response.headers["Content-Length"] = str(artifact.size)
    response.headers["ETag"] = f'"{artifact.sha256}"'
    response.headers["Content-Disposition"] = disposition
    response.headers["X-Content-Type-Options"] = "nosniff"  # the app sets it on every answer; a download must have it
    return response
