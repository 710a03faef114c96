"""The new-job page: a form built from the training config's JSON Schema as /v1/openapi.json publishes it
(every field with its default and allowed values; enums as selects, booleans as checkboxes), a dataset
picker (the builtins and the tenant's uploads; web/static/new-job.js uploads a new one to /v1/datasets),
and a submit that posts to /v1/jobs/train in-process (web.pages.api). The API's validation is the only
validation: its 422 comes back with one message per field, and the form shows each beside its field.

The form's values are text; each is turned into the JSON type its schema names, and text that is not one
is sent as it is, so the API's message says what was wrong rather than a rule of this page.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from flask import redirect, render_template, request, url_for

from core.gan.catalog import BUILTIN_PREFIX, NAMED_DATASETS

from . import api, bp

# What the form proposes for a field without a default (the config needs steps or epochs).
SUGGESTED = {"steps": 1000}


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # integer, number, string, boolean
    optional: bool  # null allowed: an empty input leaves the field out
    default: Any
    choices: list[Any] | None
    minimum: float | None
    maximum: float | None
    description: str

    @property
    def hint(self) -> str:
        """What the field allows, in words: its type, its range or choices, its default."""
        parts = [self.kind]
        if self.minimum is not None or self.maximum is not None:
            parts.append(f"{_number(self.minimum)} to {_number(self.maximum)}")
        if self.choices is not None:
            parts.append("one of " + ", ".join(map(_shown, self.choices)))
        parts.append("default " + (_shown(self.default) if self.default is not None else "none"))
        return "; ".join(parts) + (f". {self.description}" if self.description else "")

    def shown(self, value: Any) -> str:
        return "" if value is None else _shown(value)


def _number(value: float | None) -> str:
    if value is None:
        return "…"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if value != "" else "''"


def config_fields(schema: dict[str, Any]) -> list[Field]:
    fields = []
    for name, prop in schema["properties"].items():
        kinds = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
        fields.append(Field(
            name=name, kind=next(k for k in kinds if k != "null"), optional="null" in kinds,
            default=prop.get("default"), choices=prop.get("enum"),
            minimum=prop.get("minimum", prop.get("exclusiveMinimum")),
            maximum=prop.get("maximum", prop.get("exclusiveMaximum")), description=prop.get("description", "")))
    return fields


def dataset_choices() -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """(builtin reference, what it is) for the builtins the platform serves, and the tenant's uploads."""
    builtins = [(BUILTIN_PREFIX + d.name, d.source) for d in NAMED_DATASETS if d.offline]
    answer = api.get("/v1/datasets")
    return builtins, (answer.body["datasets"] if answer.ok else [])


def _render(values: dict[str, Any], errors: dict[str, str], status: int = 200):
    fields = config_fields(api.schema("TrainConfig"))
    builtins, uploads = dataset_choices()
    known = {f"config.{f.name}" for f in fields} | {"dataset", "max_runtime_seconds"}
    general = [f"{field}: {message}" if field else message for field, message in errors.items()
               if field not in known]
    return render_template("new_job.html", fields=fields, values=values, errors=errors, general_errors=general,
                           builtins=builtins, uploads=uploads, idempotency_key=str(uuid.uuid4()),
                           runtime_schema=api.schema("TrainJobRequest")["properties"]["max_runtime_seconds"]), status


@bp.get("/jobs/new")
def new_job():
    values: dict[str, Any] = {f"config.{name}": value for name, value in SUGGESTED.items()}
    values["dataset"] = request.args.get("dataset", BUILTIN_PREFIX + "digits")
    return _render(values, {})


@bp.post("/jobs/new")
def new_job_post():
    fields = config_fields(api.schema("TrainConfig"))
    values: dict[str, Any] = {"dataset": request.form.get("dataset", ""),
                              "max_runtime_seconds": request.form.get("max_runtime_seconds", "").strip()}
    config: dict[str, Any] = {}
    for field in fields:
        key = f"config.{field.name}"
        if key not in request.form:
            continue  # not sent at all (a script's partial form): the field's default
        if field.kind == "boolean":  # a checkbox sends "true" only when ticked; its hidden twin sends "false"
            values[key] = request.form.getlist(key)[-1:] == ["true"]
            config[field.name] = values[key]
            continue
        values[key] = request.form.get(key, "").strip()
        if values[key] == "" and field.kind != "string":
            continue  # left empty: the field's default (none for steps/epochs); an empty string is a value
        config[field.name] = api.typed(values[key], {"integer": int, "number": float}.get(field.kind, str))
    body: dict[str, Any] = {"dataset": values["dataset"], "config": config}
    if values["max_runtime_seconds"]:
        body["max_runtime_seconds"] = api.typed(values["max_runtime_seconds"], int)
    answer = api.post("/v1/jobs/train", body, idempotency_key=request.form.get("idempotency_key") or None)
    if answer.ok:
        return redirect(url_for("pages.job", job_id=answer.body["id"]), code=303)
    return _render(values, answer.errors() or {"": answer.detail}, answer.status)
