"""/v1/generators: the generator registry -- upload weights, list and read versions, move aliases.

Every version has a name and a version number (core.registry): uploads get the next version of their `name`
(default: the file's name), and every succeeded training job registers its final and best generators under
the job's name. Wherever a generator is accepted, a reference may be its id, `name:version` or `name@alias`.
`PUT /v1/generators/<name>/aliases/<alias> {"version": N}` sets or moves an alias; each version shows its
lineage (the job, step, dataset and its content hash, config) and its FID when known, with the evaluate jobs
that scored it.

`POST /v1/generators` (multipart: `file` = the weights, `config` = the config as a JSON object in a form
field, optional `name`). The config is validated as the train endpoint validates one (TrainConfig's
rules, unknown fields refused) except that `steps`/`epochs` may be left out: a generator's config
describes its architecture, and how long it trained is history (steps=1 is recorded then). The weights are
checked by core.weights while they are copied to a temp file -- a pickle or torch.save file is refused on
its first bytes without being loaded; names, dtypes, shapes and offsets are checked against the config
before any tensor data is read; NaN/Inf are refused -- and only a file that passed, and fits the tenant's
storage quota (403 otherwise, web.quotas), goes to the artifact store
(`tenants/<tenant>/generators/<id>.safetensors`) and gets a row. A refused upload stores nothing.

Generate jobs then sample it: `POST /v1/jobs/generate {"generator": "faces@champion", "seeds": "0-63"}`.
"""

from __future__ import annotations

import io
import tempfile
import uuid
from typing import Any

from flask import Blueprint, current_app, request, url_for
from sqlalchemy import select

from core import registry
from core.db import Generator, Job, JobStatus, JobType
from core.request_models import AliasRequest, GeneratorListQuery, GeneratorUpload
from core.storage import uploaded_generator_key
from core.weights import WeightsError, check_generator_weights

from .idempotency import commit_upload, idempotent
from .openapi import operation
from .problems import Problem
from .quotas import STORAGE_QUOTA_STATUS, check_storage_quota
from .resources import db, store
from .tenancy import tenant_id
from .validation import form_input, json_body, query_input, refused_upload, validated

bp = Blueprint("generators", __name__, url_prefix="/v1/generators")


def generator_json(row: Generator, aliases: list[str] = (), evaluations: list[dict[str, Any]] | None = None
                   ) -> dict[str, Any]:
    lineage = None
    if row.source != "upload":
        lineage = {"job_id": str(row.job_id) if row.job_id else None, "step": row.step, "dataset": row.dataset,
                   "dataset_sha256": row.dataset_sha256,
                   "links": {"job": url_for("jobs.get", job_id=str(row.job_id))} if row.job_id else {}}
    document = {"id": str(row.id), "name": row.name, "version": row.version, "ref": f"{row.name}:{row.version}",
                "aliases": list(aliases), "source": row.source, "lineage": lineage, "fid": row.fid, "kid": row.kid,
                "config": row.config, "sha256": row.sha256, "size_bytes": row.size_bytes,
                "created_at": row.created_at.isoformat() if row.created_at else None,
                "links": {"self": url_for("generators.get", ref=str(row.id))}}
    if evaluations is not None:
        document["evaluations"] = evaluations
    return document


def _with_aliases(rows: list[Generator]) -> list[dict[str, Any]]:
    aliases = registry.aliases_by_generator(db(), [row.id for row in rows])
    return [generator_json(row, aliases.get(row.id, [])) for row in rows]


def version_or_404(ref: str) -> Generator:
    row = registry.resolve(db(), tenant_id(), ref)
    if row is None:
        raise Problem(404, f"no generator {ref[:200]!r} (give an id, name:version or name@alias)")
    return row


@bp.post("")
@operation("upload generator weights (.safetensors) with their config as the next version of `name`; checked "
           "against the config before anything is stored, pickles refused unread", {201: "the generator version"},
           body=GeneratorUpload, body_type="multipart/form-data", problems=(STORAGE_QUOTA_STATUS,))
@idempotent
def upload():
    data, errors = form_input(request, "'file' and 'config' fields")
    form = validated(GeneratorUpload, data, errors)
    weights, config = form.file, form.config
    name = form.name or registry.registry_name(weights.filename)
    generator_id = uuid.uuid4()
    key = uploaded_generator_key(tenant_id(), generator_id)
    with tempfile.TemporaryFile(prefix="dcgan-generator-") as copy:
        try:
            check_generator_weights(weights.stream, config.to_dict(), copy_to=copy,
                                    max_bytes=current_app.config["SETTINGS"].max_upload_bytes)
        except WeightsError as exc:
            raise refused_upload(exc) from None
        check_storage_quota(tenant_id(), copy.seek(0, io.SEEK_END), "the generator's weights")
        copy.seek(0)
        stored = store().put_stream(key, copy)  # exactly the bytes that were checked
    try:
        row = registry.register(db(), tenant_id(), name, id=generator_id, source="upload", config=config.to_dict(),
                                storage_key=key, size_bytes=stored.size, sha256=stored.sha256)
    except BaseException:
        store().delete(key)  # weights that belong to no row
        raise
    return commit_upload(row, generator_json, lambda: store().delete(key))


@bp.get("")
@operation("generator versions, newest first; ?name= for the versions of one name", {200: "generators"},
           query=GeneratorListQuery)
def list_():
    query = validated(GeneratorListQuery, query_input(request))
    statement = select(Generator).where(Generator.tenant_id == tenant_id())
    if query.name is not None:
        statement = statement.where(Generator.name == query.name)
    rows = list(db().scalars(statement.order_by(Generator.created_at.desc(), Generator.version.desc())
                             .limit(query.limit)))
    return {"generators": _with_aliases(rows)}


@bp.get("/<ref>")
@operation("one generator version (by id, name:version or name@alias): lineage, aliases, FID, evaluations",
           {200: "the generator version"})
def get(ref: str):
    row = version_or_404(ref)
    aliases = registry.aliases_by_generator(db(), [row.id]).get(row.id, [])
    return generator_json(row, aliases, _evaluations(row))


def _evaluations(row: Generator) -> list[dict[str, Any]]:
    """The succeeded evaluate jobs that scored this version, newest first."""
    found = db().scalars(select(Job).where(Job.tenant_id == row.tenant_id, Job.generator_id == row.id,
                                           Job.type == JobType.EVALUATE, Job.status == JobStatus.SUCCEEDED,
                                           Job.deleted_at.is_(None))
                         .order_by(Job.created_at.desc()).limit(50))
    keep = ("dataset", "feature_net", "num_samples", "fid", "kid_mean", "is_mean")
    return [{"job_id": str(job.id), **{k: (job.result or {}).get(k) for k in keep},
             "links": {"job": url_for("jobs.get", job_id=str(job.id))}} for job in found]


@bp.put("/<name>/aliases/<alias>")
@operation("point name@alias at a version of name (creates the alias or moves it)", {200: "the generator version"},
           body=AliasRequest, problems=(404,))
def set_alias(name: str, alias: str):
    submitted = validated(AliasRequest, json_body(request))
    if not registry.ALIAS_RE.fullmatch(alias):
        raise Problem(422, f"alias {alias[:100]!r}: must be {registry.ALIAS_RULE}",
                      errors=[{"field": "alias", "message": f"must be {registry.ALIAS_RULE}"}])
    row = version_or_404(f"{name}:{submitted.version}")
    registry.set_alias(db(), tenant_id(), name, alias, row.id)
    body = generator_json(row, registry.aliases_by_generator(db(), [row.id]).get(row.id, []))
    db().commit()
    return body


@bp.delete("/<name>/aliases/<alias>")
@operation("remove an alias", {204: "removed"}, problems=(404,))
def delete_alias(name: str, alias: str):
    if not registry.delete_alias(db(), tenant_id(), name, alias):
        raise Problem(404, f"no alias {name[:100]!r}@{alias[:100]!r}")
    db().commit()
    return "", 204
