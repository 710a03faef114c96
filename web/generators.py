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

import json
import tempfile
import uuid
from typing import Any

from flask import Blueprint, current_app, request, url_for

from core.db import Generator
from core.gan.config import ConfigError, TrainConfig
from core.storage import uploaded_generator_key
from core.weights import WeightsError, check_generator_weights

from .idempotency import commit_upload, idempotent
from .resources import store
from .tenancy import get_by_id, newest_of_tenant, tenant_id
from .problems import Problem, validation_problem
from .schemas import config_errors, refused_upload, upload_name

bp = Blueprint("generators", __name__, url_prefix="/v1/generators")
FORM_FIELDS = {"config", "name"}


def generator_json(row: Generator) -> dict[str, Any]:
    return {"id": str(row.id), "name": row.name, "config": row.config, "sha256": row.sha256,
            "size_bytes": row.size_bytes, "created_at": row.created_at.isoformat() if row.created_at else None,
            "links": {"self": url_for("generators.get", generator_id=str(row.id))}}


def parse_generator_config(raw: str) -> tuple[TrainConfig | None, list[dict[str, str]]]:
    """The config form field as a validated TrainConfig, or the field errors."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return None, [{"field": "config", "message": "not valid JSON: give the generator's config as a JSON object"}]
    if not isinstance(document, dict):
        return None, [{"field": "config", "message": "must be a JSON object of config fields"}]
    if "steps" not in document and "epochs" not in document:
        document = {**document, "steps": 1}
    try:
        return TrainConfig.from_dict(document), []
    except ConfigError as exc:
        return None, config_errors(exc)


@bp.post("")
@idempotent
def upload():
    if request.mimetype != "multipart/form-data":
        raise Problem(415, f"expected multipart/form-data with 'file' and 'config' fields, got "
                           f"{request.mimetype or 'none'}")
    errors: list[dict[str, str]] = []
    unknown = sorted(set(request.form) - FORM_FIELDS | set(request.files) - {"file"})
    errors += [{"field": name, "message": "unknown field"} for name in unknown]
    errors += [{"field": name, "message": "given more than once"} for name in sorted(FORM_FIELDS | {"file"})
               if len(request.form.getlist(name)) + len(request.files.getlist(name)) > 1]
    weights = request.files.get("file")
    if weights is None or not weights.filename:
        errors.append({"field": "file", "message": "required: the generator's weights as a .safetensors file"})
    config = None
    if "config" not in request.form:
        errors.append({"field": "config", "message": "required: the generator's config as a JSON object"})
    else:
        config, config_errors = parse_generator_config(request.form["config"])
        errors += config_errors
    if errors:
        raise validation_problem(errors)
    assert weights is not None and config is not None
    name = upload_name(request.form.get("name"), weights.filename, "generator")
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
def list_():
    return {"generators": [generator_json(row) for row in newest_of_tenant(Generator)]}


@bp.get("/<generator_id>")
def get(generator_id: str):
    row = visible_generator(generator_id)
    if row is None:
        raise Problem(404, f"no generator {generator_id[:100]!r}")
    return generator_json(row)


def visible_generator(raw_id: Any) -> Generator | None:
    """The request tenant's generator with this id; None for a malformed id or another tenant's."""
    if not isinstance(raw_id, str):
        return None
    return get_by_id(Generator, raw_id, lambda row: row.tenant_id == tenant_id())
