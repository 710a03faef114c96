"""Request bodies: one JSON Schema per body, used both to validate requests and to write /v1/openapi.json.

The training config's schema is generated from `core.gan.config.TrainConfig` (field names, types and
defaults), and the config itself is validated by `TrainConfig.from_dict`, the same code the CLI, the worker
and checkpoints use -- so the document, the API and the engine cannot disagree about a field.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, NamedTuple

from flask import Request

from core.archives import ArchiveError
from core.gan.config import AUGMENTS, IMG_SIZES, LOSSES, PRECISIONS, ConfigError, TrainConfig
from core.settings import Settings
from core.weights import WeightsError

from .problems import Problem, validation_problem

_JSON_TYPES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean"}
_ENUMS = {"img_size": list(IMG_SIZES), "img_channels": [1, 3], "loss": list(LOSSES), "precision": list(PRECISIONS)}
BUILTIN_DATASETS = ("builtin:digits", "builtin:fashion-mnist", "builtin:fake")


def train_config_schema() -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for field in dataclasses.fields(TrainConfig):
        kind = str(field.type)
        base = kind.replace("| None", "").strip()
        schema: dict[str, Any] = {"type": [_JSON_TYPES[base], "null"] if "None" in kind else _JSON_TYPES[base]}
        if field.default is not dataclasses.MISSING and field.default is not None:
            schema["default"] = field.default
        if field.name in _ENUMS:
            schema["enum"] = _ENUMS[field.name]
        properties[field.name] = schema
    properties["diffaugment"]["description"] = f"comma-separated subset of {','.join(AUGMENTS)}; '' disables"
    return {"type": "object", "properties": properties, "additionalProperties": False,
            "description": "DCGAN training config; give steps or epochs. Same names as the CLI's --set."}


TRAIN_JOB_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["dataset", "config"],
    "additionalProperties": False,
    "properties": {
        "dataset": {"type": "string", "description": f"a dataset id or one of {', '.join(BUILTIN_DATASETS)}"},
        "config": {"$ref": "#/components/schemas/TrainConfig"},
        "max_runtime_seconds": {"type": "integer", "minimum": 1,
                                "description": "this job's runtime limit, counted from its first start across "
                                               "attempts; at most (and by default) the server's "
                                               "DCGAN_MAX_JOB_SECONDS. Past it the job writes a final "
                                               "checkpoint and ends failed with error type timeout"},
    },
}

GENERATE_JOB_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["seeds"],
    "oneOf": [{"required": ["generator_job"]}, {"required": ["generator"]}],
    "additionalProperties": False,
    "properties": {
        "generator_job": {"type": "string", "format": "uuid", "description": "a succeeded train job"},
        "generator": {"type": "string", "format": "uuid", "description": "an uploaded generator "
                                                                         "(POST /v1/generators)"},
        "seeds": {"oneOf": [{"type": "array", "items": {"type": "integer", "minimum": 0}},
                            {"type": "string", "example": "0-63"}]},
        "truncation": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 1.0},
        "nrow": {"type": "integer", "minimum": 1, "maximum": 64, "default": 8},
    },
}


def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object: 415 for another content type, 400 for malformed JSON or a non-object."""
    if not request.is_json:
        raise Problem(415, f"expected Content-Type application/json, got {request.mimetype or 'none'}")
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # not a ValueError, so silent=True lets it through
        raise Problem(400, "the body's JSON is nested too deeply", slug="malformed-json",
                      title="Malformed JSON") from None
    if body is None:
        raise Problem(400, "the body is not valid JSON", slug="malformed-json", title="Malformed JSON")
    if not isinstance(body, dict):
        raise Problem(400, "the body must be a JSON object", slug="malformed-json", title="Malformed JSON")
    return body


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME_LENGTH = 200


def upload_name(given: str | None, filename: str | None, fallback: str) -> str:
    """An upload's display name: the `name` form field (422 if it holds control characters -- PostgreSQL
    cannot even store NUL), else the file's name without them; at most MAX_NAME_LENGTH characters."""
    if given:
        if _CONTROL_CHARACTERS.search(given):
            raise validation_problem([{"field": "name", "message": "must not contain control characters"}])
        return given[:MAX_NAME_LENGTH]
    return _CONTROL_CHARACTERS.sub("", filename or "")[:MAX_NAME_LENGTH] or fallback


def refused_upload(exc: ArchiveError | WeightsError) -> Problem:
    """An archive or weights file that core.archives / core.weights refused: 413 for a size refusal, else
    422, with the refusal's own problem type, and the reason as the `file` field's error."""
    message = str(exc).removeprefix("file: ")
    return Problem(413 if exc.too_large else 422, message, slug=exc.slug, title=exc.title,
                   errors=[{"field": "file", "message": message}])


def int_in_range(value: Any, low: int, high: int) -> bool:
    """Whether a JSON value is an integer (not a boolean) from `low` to `high`."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_fields(body: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, str]]:
    """Required and unknown top-level fields (no mass assignment); value checks belong to each endpoint."""
    errors = [{"field": name, "message": "required"} for name in schema.get("required", []) if name not in body]
    known = schema["properties"]
    errors += [{"field": name, "message": "unknown field"} for name in sorted(body) if name not in known]
    return errors


def config_errors(exc: ConfigError) -> list[dict[str, str]]:
    """Every problem of a config as field errors named `config.<field>`."""
    return [{"field": f"config.{e.field}" if e.field != "config" else "config", "message": e.message}
            for e in exc.all]


class TrainRequest(NamedTuple):
    dataset: str
    config: TrainConfig
    max_runtime_seconds: int | None  # None: the server's limit


def parse_train_request(body: dict[str, Any], dataset_exists: Callable[[str], bool] = lambda _: False,
                        max_runtime_seconds: int = Settings.max_job_seconds) -> TrainRequest:
    """The dataset reference, the validated config and the job's runtime limit (at most
    `max_runtime_seconds`, the server's); every bad field is reported in one 422."""
    errors = check_fields(body, TRAIN_JOB_REQUEST)
    runtime = body.get("max_runtime_seconds")
    if "max_runtime_seconds" in body and not int_in_range(runtime, 1, max_runtime_seconds):
        errors.append({"field": "max_runtime_seconds",
                       "message": f"must be an integer from 1 to {max_runtime_seconds} (the server's limit)"})
    dataset = body.get("dataset")
    if "dataset" in body and (not isinstance(dataset, str) or not dataset):
        errors.append({"field": "dataset", "message": "must be a dataset id or a builtin:<name>"})
    elif isinstance(dataset, str) and dataset.startswith("builtin:") and dataset not in BUILTIN_DATASETS:
        errors.append({"field": "dataset", "message": f"unknown builtin; use one of {', '.join(BUILTIN_DATASETS)}"})
    elif isinstance(dataset, str) and not dataset.startswith("builtin:") and not dataset_exists(dataset):
        errors.append({"field": "dataset", "message": f"no dataset {dataset!r}"})
    config = None
    if "config" in body:
        try:
            config = TrainConfig.from_dict(body["config"])
        except ConfigError as exc:
            errors += config_errors(exc)
    if errors:
        raise validation_problem(errors)
    assert config is not None and isinstance(dataset, str)
    return TrainRequest(dataset, config, runtime)


def openapi_document() -> dict[str, Any]:
    problem = {"description": "an RFC 9457 problem", "content": {"application/problem+json": {
        "schema": {"$ref": "#/components/schemas/Problem"}}}}
    binary = {"description": "the file", "content": {"application/octet-stream": {}}}
    job = {"description": "the job", "content": {"application/json": {"schema": {"type": "object"}}}}
    return with_security({
        "openapi": "3.1.0",
        "info": {"title": "dcgan-platform", "version": "1"},
        "paths": {
            "/healthz": {"get": {"summary": "the process answers", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "database, broker and storage reachable",
                                "responses": {"200": {"description": "ready"}, "503": problem}}},
            "/v1/openapi.json": {"get": {"summary": "this document", "responses": {"200": {"description": "ok"}}}},
            "/v1/datasets": {
                "post": {"summary": "upload a .zip, .tar or .tar.gz of images (multipart field 'file')",
                         "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                             "type": "object", "required": ["file"], "additionalProperties": False,
                             "properties": {"file": {"type": "string", "format": "binary"},
                                            "name": {"type": "string", "maxLength": 200}}}}}},
                         "responses": {"201": {"description": "the dataset"}, "413": problem, "415": problem,
                                       "422": problem}},
                "get": {"summary": "datasets, newest first", "responses": {"200": {"description": "datasets"}}}},
            "/v1/datasets/{dataset_id}": {"get": {
                "summary": "one dataset", "responses": {"200": {"description": "the dataset"}, "404": problem},
                "parameters": [{"name": "dataset_id", "in": "path", "required": True,
                                "schema": {"type": "string", "format": "uuid"}}]}},
            "/v1/generators": {
                "post": {"summary": "upload generator weights (.safetensors) with their config; checked against "
                                    "the config before anything is stored, pickles refused unread",
                         "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                             "type": "object", "required": ["file", "config"], "additionalProperties": False,
                             "properties": {"file": {"type": "string", "format": "binary"},
                                            "config": {"type": "string", "contentMediaType": "application/json",
                                                       "description": "a TrainConfig as JSON; steps optional"},
                                            "name": {"type": "string", "maxLength": 200}}}}}},
                         "responses": {"201": {"description": "the generator"}, "413": problem, "415": problem,
                                       "422": problem}},
                "get": {"summary": "uploaded generators, newest first",
                        "responses": {"200": {"description": "generators"}}}},
            "/v1/generators/{generator_id}": {"get": {
                "summary": "one uploaded generator",
                "responses": {"200": {"description": "the generator"}, "404": problem},
                "parameters": [{"name": "generator_id", "in": "path", "required": True,
                                "schema": {"type": "string", "format": "uuid"}}]}},
            "/v1/jobs/train": {"post": {
                "summary": "submit a training job",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/TrainJobRequest"}}}},
                "responses": {"202": job, "400": problem, "415": problem, "422": problem}}},
            "/v1/jobs/generate": {"post": {
                "summary": "generate images for seeds from a succeeded training job or an uploaded generator",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/GenerateJobRequest"}}}},
                "responses": {"202": job, "400": problem, "415": problem, "422": problem}}},
            "/v1/jobs": {"get": {
                "summary": "jobs, newest first",
                "parameters": [_query("status", ["queued", "running", "succeeded", "failed", "cancelled"]),
                               _query("type", ["train", "generate"]),
                               {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                           "maximum": 200, "default": 50}},
                               {"name": "cursor", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "a page of jobs and next_cursor"}, "422": problem}}},
            "/v1/jobs/{job_id}": {"get": {"summary": "status and progress", "parameters": [_job_id()],
                                          "responses": {"200": job, "404": problem}}},
            "/v1/jobs/{job_id}/cancel": {"post": {
                "summary": "queued jobs never start; running ones stop at the next step",
                "parameters": [_job_id()], "responses": {"202": job, "404": problem, "409": problem}}},
            "/v1/jobs/{job_id}/events": {"get": {"summary": "the job's timeline", "parameters": [_job_id()],
                                                 "responses": {"200": {"description": "events"}, "404": problem}}},
            "/v1/jobs/{job_id}/artifacts": {"get": {
                "summary": "name, size, sha256, content type, step and download URL of each artifact",
                "parameters": [_job_id()], "responses": {"200": {"description": "artifacts"}, "404": problem}}},
            "/v1/jobs/{job_id}/artifacts/{artifact_id}": {"get": {
                "summary": "download one artifact (302 to a presigned URL on S3)",
                "parameters": [_job_id(), {"name": "artifact_id", "in": "path", "required": True,
                                           "schema": {"type": "string", "format": "uuid"}}],
                "responses": {"200": binary, "302": {"description": "presigned URL"}, "404": problem}}},
            "/v1/jobs/{job_id}/grid": {"get": {
                "summary": "the latest sample grid (the final one once finished); ?step= for an earlier one",
                "parameters": [_job_id(), {"name": "step", "in": "query", "schema": {"type": "integer"}}],
                "responses": {"200": binary, "302": {"description": "presigned URL"}, "404": problem,
                              "422": problem}}},
            "/v1/jobs/{job_id}/generator": {"get": {
                "summary": "the exported generator.safetensors", "parameters": [_job_id()],
                "responses": {"200": binary, "302": {"description": "presigned URL"}, "404": problem}}},
        },
        "components": {"schemas": {
            "TrainConfig": train_config_schema(),
            "TrainJobRequest": TRAIN_JOB_REQUEST,
            "GenerateJobRequest": GENERATE_JOB_REQUEST,
            "Problem": {"type": "object", "required": ["type", "title", "status", "detail"], "properties": {
                "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                "detail": {"type": "string"}, "instance": {"type": "string"},
                "errors": {"type": "array", "items": {"type": "object", "properties": {
                    "field": {"type": "string"}, "message": {"type": "string"}}}}}},
        }},
    })


# The POSTs that create something take an Idempotency-Key (web.idempotency).
IDEMPOTENT_OPERATIONS = frozenset({("/v1/jobs/train", "post"), ("/v1/jobs/generate", "post"),
                                   ("/v1/datasets", "post"), ("/v1/generators", "post")})
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/v1/openapi.json"})


def with_security(document: dict[str, Any]) -> dict[str, Any]:
    """Add what web.auth and web.idempotency do to every operation: the bearer key (401) and the per-key
    rate limit (429) everywhere but the open paths, and the Idempotency-Key header on creating POSTs."""
    problem = {"$ref": "#/components/schemas/Problem"}
    components = document["components"]
    components["securitySchemes"] = {"bearer": {
        "type": "http", "scheme": "bearer",
        "description": "an API key (dcg_...): `dcgan keys create --tenant <name>`, or <data-dir>/api-key "
                       "made by `dcgan up`"}}
    components["parameters"] = {"IdempotencyKey": {
        "name": "Idempotency-Key", "in": "header", "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
        "description": "the same key with the same request (method, path, body) answers the first response "
                       "again (header Idempotent-Replayed: true) and creates nothing; with another request "
                       "it is 422 idempotency-key-reused. Scoped to the tenant."}}
    components["responses"] = {
        "Unauthorized": {"description": "no, a malformed, an unknown or a revoked API key",
                         "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                         "content": {"application/problem+json": {"schema": problem}}},
        "TooManyRequests": {"description": "the key's rate limit per minute, or the tenant's cap on queued jobs",
                            "headers": {"Retry-After": {"schema": {"type": "integer"},
                                                        "description": "seconds to wait"}},
                            "content": {"application/problem+json": {"schema": problem}}},
        "BadIdempotencyKey": {"description": "a malformed Idempotency-Key (or malformed JSON)",
                              "content": {"application/problem+json": {"schema": problem}}},
    }
    document["security"] = [{"bearer": []}]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path in OPEN_PATHS:
                operation["security"] = []
                continue
            operation["responses"]["401"] = {"$ref": "#/components/responses/Unauthorized"}
            operation["responses"]["429"] = {"$ref": "#/components/responses/TooManyRequests"}
            if (path, method) in IDEMPOTENT_OPERATIONS:
                operation.setdefault("parameters", []).append({"$ref": "#/components/parameters/IdempotencyKey"})
                operation["responses"].setdefault("400", {"$ref": "#/components/responses/BadIdempotencyKey"})
    return document


def _query(name: str, values: list[str]) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": {"type": "string", "enum": values}}


def _job_id() -> dict[str, Any]:
    return {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
