"""/v1/generators: upload a generator's weights (.safetensors) with the config they belong to; list, read.

`POST /v1/generators` (multipart: `file` = the weights, `config` = the config as a JSON object in a form
field, optional `name`). The config is validated as the train endpoint validates one (TrainConfig's
rules, unknown fields refused) except that `steps`/`epochs` may be left out: a generator's config
describes its architecture, and how long it trained is history (steps=1 is recorded then). The weights are
checked by core.weights while they are copied to a temp file -- a pickle or torch.save file is refused on
its first bytes without being loaded; names, dtypes, shapes and offsets are checked against the config
before any tensor data is read; NaN/Inf are refused -- and only a file that passed goes to the artifact
store (`tenants/<tenant>/generators/<id>.safetensors`) and gets a row. A refused upload stores nothing.

Generate jobs then sample it: `POST /v1/jobs/generate {"generator": "<id>", "seeds": "0-63"}`.
"""

from __future__ import annotations

import tempfile
import uuid
from typing import Any

from flask import Blueprint, current_app, request, url_for

from core.db import Generator
from core.request_models import GeneratorUpload
from core.storage import uploaded_generator_key
from core.weights import WeightsError, check_generator_weights

from .idempotency import commit_upload, idempotent
from .openapi import operation
from .problems import Problem
from .resources import store
from .tenancy import get_by_id, newest_of_tenant, tenant_id
from .validation import display_name, form_input, refused_upload, validated

bp = Blueprint("generators", __name__, url_prefix="/v1/generators")


def generator_json(row: Generator) -> dict[str, Any]:
    return {"id": str(row.id), "name": row.name, "config": row.config, "sha256": row.sha256,
            "size_bytes": row.size_bytes, "created_at": row.created_at.isoformat() if row.created_at else None,
            "links": {"self": url_for("generators.get", generator_id=str(row.id))}}


@bp.post("")
@operation("upload generator weights (.safetensors) with their config; checked against the config before "
           "anything is stored, pickles refused unread", {201: "the generator"}, body=GeneratorUpload,
           body_type="multipart/form-data")
@idempotent
def upload():
    data, errors = form_input(request, "'file' and 'config' fields")
    form = validated(GeneratorUpload, data, errors)
    weights, config = form.file, form.config
    name = display_name(form.name, weights.filename, "generator")
    generator_id = uuid.uuid4()
    key = uploaded_generator_key(tenant_id(), generator_id)
    with tempfile.TemporaryFile(prefix="dcgan-generator-") as copy:
        try:
            check_generator_weights(weights.stream, config.to_dict(), copy_to=copy,
                                    max_bytes=current_app.config["SETTINGS"].max_upload_bytes)
        except WeightsError as exc:
            raise refused_upload(exc) from None
        copy.seek(0)
        stored = store().put_stream(key, copy)  # exactly the bytes that were checked
    row = Generator(id=generator_id, tenant_id=tenant_id(), name=name, config=config.to_dict(), storage_key=key,
                    size_bytes=stored.size, sha256=stored.sha256)
    return commit_upload(row, generator_json, lambda: store().delete(key))


@bp.get("")
@operation("uploaded generators, newest first", {200: "generators"})
def list_():
    return {"generators": [generator_json(row) for row in newest_of_tenant(Generator)]}


@bp.get("/<generator_id>")
@operation("one uploaded generator", {200: "the generator"})
def get(generator_id: str):
    row = get_by_id(Generator, generator_id, lambda row: row.tenant_id == tenant_id())
    if row is None:
        raise Problem(404, f"no generator {generator_id[:100]!r}")
    return generator_json(row)
