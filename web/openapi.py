"""/v1/openapi.json, built from what the API really does: its routes (Flask's URL map), what each view
declares with `@operation` (summary, request model, answers) and the request models' own JSON Schemas
(core.request_models). Nothing in the document is written twice: a field's type, range and default come
from the model that validates it, a path from the route that serves it, the Idempotency-Key header from
`@idempotent`, and 401/429 from web.auth's rules. The dashboard's pages (web.pages) and static files are
not part of the API and not in the document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from flask import Flask

from core.gan.config import TrainConfig
from core.request_models import RequestModel

from .idempotency import HEADER as IDEMPOTENCY_HEADER
from .idempotency import KEY_CHARACTERS, MAX_KEY_LENGTH

PROBLEM = {"$ref": "#/components/schemas/Problem"}
_PROBLEM_ANSWER = {"description": "an RFC 9457 problem", "content": {"application/problem+json": {"schema": PROBLEM}}}
BINARY = {"description": "the file", "content": {"application/octet-stream": {}}}
JOB = {"description": "the job", "content": {"application/json": {"schema": {"type": "object"}}}}
REDIRECT = {"description": "a presigned URL (S3)"}
# Endpoints of these blueprints, and Flask's static files, are pages for browsers, not API operations; /metrics
# (web.metrics) is Prometheus's, not part of the API contract.
NOT_API_BLUEPRINTS = frozenset({"pages", "metrics"})
_REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Operation:
    summary: str
    answers: dict[int, Any]  # status -> description (str) or an OpenAPI response object
    body: type[RequestModel] | None = None
    body_type: str = "application/json"
    query: type[RequestModel] | None = None
    problems: tuple[int, ...] = field(default=())  # statuses answered with a problem beyond the derived ones


def operation(summary: str, answers: dict[int, Any], **details: Any) -> Callable[[Callable], Callable]:
    """Declare what a view does for the OpenAPI document (see `Operation`)."""
    def declare(view: Callable) -> Callable:
        view.openapi = Operation(summary, answers, **details)
        return view
    return declare


def openapi_document(app: Flask | None = None) -> dict[str, Any]:
    """The document for `app`'s routes (default: every blueprint of web, on a bare app)."""
    if app is None:
        from web import BLUEPRINTS

        app = Flask("openapi")
        for blueprint in BLUEPRINTS:
            app.register_blueprint(blueprint)
    from .auth import open_endpoint

    paths: dict[str, dict[str, Any]] = {}
    models: set[type[RequestModel]] = set()
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static" or rule.endpoint.partition(".")[0] in NOT_API_BLUEPRINTS:
            continue
        view = app.view_functions[rule.endpoint]
        declared: Operation | None = getattr(view, "openapi", None)
        if declared is None:
            raise LookupError(f"{rule.endpoint} ({rule.rule}) has no @operation: the document would miss it")
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(declared, _path_parameters(rule.rule), models)
            if open_endpoint(rule.endpoint, rule.rule):
                paths[path][method.lower()]["security"] = []
            else:
                _secured(paths[path][method.lower()], getattr(view, "idempotent", False))
    return {"openapi": "3.1.0", "info": {"title": "dcgan-platform", "version": "1"}, "paths": paths,
            "security": [{"bearer": []}], "components": _components(models)}


def _path_parameters(rule: str) -> dict[str, dict[str, Any]]:
    """Each path parameter's schema from its converter and name: `<int:step>` an integer, `<job_id>` (any
    `_id`) a uuid, anything else (a generator reference, a registry name or alias) a string."""
    schemas = {}
    for converter, name in re.findall(r"<(?:(\w+):)?(\w+)>", rule):
        if converter == "int":
            schemas[name] = {"type": "integer", "minimum": 0}
        elif name.endswith("_id"):
            schemas[name] = {"type": "string", "format": "uuid"}
        else:
            schemas[name] = {"type": "string"}
    return schemas


def _operation(declared: Operation, arguments: dict[str, dict[str, Any]], models: set[type[RequestModel]]
               ) -> dict[str, Any]:
    answers = {str(status): {"description": answer} if isinstance(answer, str) else answer
               for status, answer in declared.answers.items()}
    problems = set(declared.problems) | ({404} if arguments else set())
    if "job_id" in arguments:  # a deleted job's id answers 410 on every route of it (web.jobs.job_or_404)
        problems.add(410)
    result: dict[str, Any] = {"summary": declared.summary}
    parameters = [{"name": name, "in": "path", "required": True, "schema": schema}
                  for name, schema in sorted(arguments.items())]
    if declared.query is not None:
        models.add(declared.query)
        schema = declared.query.model_json_schema(ref_template=_REF)
        parameters += [{"name": name, "in": "query", "required": name in schema.get("required", []),
                        "schema": _strip_titles(prop)} for name, prop in schema["properties"].items()]
        problems.add(422)
    if declared.body is not None:
        models.add(declared.body)
        result["requestBody"] = {"required": True, "content": {declared.body_type: {
            "schema": {"$ref": _REF.format(model=declared.body.__name__)}}}}
        problems |= {415, 422} | ({400} if declared.body_type == "application/json" else {413})
    if parameters:
        result["parameters"] = parameters
    answers.update({str(status): _PROBLEM_ANSWER for status in sorted(problems) if str(status) not in answers})
    result["responses"] = dict(sorted(answers.items()))
    return result


def _secured(operation_: dict[str, Any], idempotent: bool) -> None:
    """What web.auth and web.idempotency add to an operation: the key (401), the rate limit (429) and, on
    creating POSTs, the Idempotency-Key header (400 when malformed)."""
    operation_["responses"]["401"] = {"$ref": "#/components/responses/Unauthorized"}
    operation_["responses"]["429"] = {"$ref": "#/components/responses/TooManyRequests"}
    if idempotent:
        operation_.setdefault("parameters", []).append({"$ref": "#/components/parameters/IdempotencyKey"})
        operation_["responses"].setdefault("400", {"$ref": "#/components/responses/BadIdempotencyKey"})


def _components(models: set[type[RequestModel]]) -> dict[str, Any]:
    shared = {"TrainConfig": TrainConfig.json_schema()}
    schemas: dict[str, Any] = dict(shared)
    for model in sorted(models, key=lambda m: m.__name__):
        schemas[model.__name__] = _hoist(_strip_titles(model.model_json_schema(ref_template=_REF)), shared)
    schemas["Problem"] = {"type": "object", "required": ["type", "title", "status", "detail"], "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "detail": {"type": "string"}, "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "field": {"type": "string"}, "message": {"type": "string"}}}}}}
    problem = {"application/problem+json": {"schema": PROBLEM}}
    return {
        "schemas": schemas,
        "securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "an API key (dcg_...): `dcgan keys create --tenant <name>`, or <data-dir>/api-key "
                           "made by `dcgan up`"}},
        "parameters": {"IdempotencyKey": {
            "name": IDEMPOTENCY_HEADER, "in": "header", "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH,
                       "pattern": f"^{KEY_CHARACTERS}+$"},
            "description": "the same key with the same request (method, path, body) answers the first response "
                           "again (header Idempotent-Replayed: true) and creates nothing; with another request "
                           "it is 422 idempotency-key-reused. Scoped to the tenant."}},
        "responses": {
            "Unauthorized": {"description": "no, a malformed, an unknown or a revoked API key",
                             "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}, "content": problem},
            "TooManyRequests": {"description": "the key's rate limit per minute, the tenant's cap on queued jobs, "
                                               "or too many failed authentications from the client's address",
                                "headers": {"Retry-After": {"schema": {"type": "integer"},
                                                            "description": "seconds to wait"}},
                                "content": problem},
            "BadIdempotencyKey": {"description": "a malformed Idempotency-Key (or malformed JSON)",
                                  "content": problem},
        },
    }


def _strip_titles(schema: Any) -> Any:
    """pydantic titles every property after its name; the name already says it."""
    if isinstance(schema, dict):
        return {key: _strip_titles(value) for key, value in schema.items()
                if not (key == "title" and isinstance(value, str) and "properties" not in schema)}
    if isinstance(schema, list):
        return [_strip_titles(item) for item in schema]
    return schema


def _hoist(schema: Any, shared: dict[str, Any]) -> Any:
    """Replace an inlined copy of a shared schema (TrainConfig) by a reference to its one entry."""
    for name, component in shared.items():
        if schema == component:
            return {"$ref": _REF.format(model=name)}
    if isinstance(schema, dict):
        return {key: _hoist(value, shared) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_hoist(item, shared) for item in schema]
    return schema
