"""/v1/openapi.json is built from the request models that validate requests: every model is in it, and every
request the document forbids -- an unknown field, a missing one, a wrong type, a value past a bound or
outside an enum, in the body, in the training config or in the query -- is refused with 422 naming the
field (on SQLite and PostgreSQL, the real Redis)."""

from __future__ import annotations

import copy
import uuid
from typing import Any, Iterator

import jsonschema
import pytest

import web  # noqa: F401  (imports every module that defines a request model)
from core import jobs, registry
from core.db import JobStatus
from core.request_models import RequestModel
from web.openapi import openapi_document

VALID_BODIES = {
    "TrainJobRequest": {"dataset": "builtin:digits", "config": {"steps": 5, "img_size": 32, "img_channels": 1},
                        "max_runtime_seconds": 60},
    "GenerateJobRequest": {"seeds": "0-3", "truncation": 0.5, "nrow": 2},  # + the generator_job made below
    "EvaluateJobRequest": {"generator": "walked:1", "dataset": "builtin:digits", "num": 100, "net": "digits"},
    # A public address literal: the SSRF guard passes it without DNS.
    "WebhookRequest": {"url": "https://93.184.215.14/hooks", "events": ["job.succeeded"], "description": "ci"},
}
# What a valid body is answered with: 202 for a job, 201 for a webhook endpoint.
ACCEPTED = {"WebhookRequest": 201}
WRONG_TYPE = {"integer": "7", "number": "0.5", "string": 7, "boolean": "yes", "array": "x", "object": [1]}


def all_request_models() -> set[type[RequestModel]]:
    found, todo = set(), [RequestModel]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.add(sub)
            todo.append(sub)
    return found


def test_every_request_model_is_in_the_document_and_used_by_an_operation():
    document = openapi_document()
    models = all_request_models()
    assert {m.__name__ for m in models} >= {"TrainJobRequest", "GenerateJobRequest", "JobListQuery", "GridQuery",
                                             "DatasetUpload", "GeneratorUpload"}
    used = set()
    for operations in document["paths"].values():
        for operation in operations.values():
            for content in operation.get("requestBody", {}).get("content", {}).values():
                used.add(content["schema"]["$ref"].rsplit("/", 1)[-1])
            if any(p.get("in") == "query" for p in operation.get("parameters", [])):
                used.add(_query_model(operation).__name__)
    for model in models:
        assert model.__name__ in document["components"]["schemas"], model
        assert model.__name__ in used, f"{model.__name__} validates no operation's input"
    assert document["components"]["schemas"]["TrainJobRequest"]["properties"]["config"] == {
        "$ref": "#/components/schemas/TrainConfig"}


def _query_model(operation: dict[str, Any]) -> type[RequestModel]:
    names = {p["name"] for p in operation["parameters"] if p.get("in") == "query"}
    [model] = [m for m in all_request_models() if set(m.model_fields) == names]
    return model


def violations(schema: dict[str, Any], components: dict[str, Any], body: dict[str, Any],
               prefix: str = "", types: bool = True) -> Iterator[tuple[str, dict[str, Any]]]:
    """(field, a copy of `body` that breaks one rule the schema states about that field); `types=False`
    leaves out wrong JSON types (a query string is text whatever the parameter's type)."""
    if "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    if schema.get("additionalProperties") is False:
        yield f"{prefix}surplus", {**body, "surplus": 1}
    for name in schema.get("required", []):
        if name in body:
            yield f"{prefix}{name}", {k: v for k, v in body.items() if k != name}
    for name, prop in schema.get("properties", {}).items():
        field = f"{prefix}{name}"
        if "$ref" in prop:
            for inner_field, inner in violations(prop, components, body.get(name, {}), f"{field}."):
                yield inner_field, {**body, name: inner}
            continue
        kinds = prop.get("type") if isinstance(prop.get("type"), list) else [prop.get("type")]
        if types and kinds[0] in WRONG_TYPE and "anyOf" not in prop:
            yield field, {**body, name: WRONG_TYPE[kinds[0]]}
        for bound, step in (("minimum", -1), ("exclusiveMinimum", 0), ("maximum", 1), ("exclusiveMaximum", 0)):
            if bound in prop:
                value = prop[bound] + step
                yield field, {**body, name: int(value) if kinds[0] == "integer" else value}
        enum = prop.get("enum") or next((option["enum"] for option in prop.get("anyOf", []) if "enum" in option), None)
        if enum:
            yield field, {**body, name: "none-of-these" if isinstance(enum[0], str) else 999}
        if "maxLength" in prop:
            yield field, {**body, name: "x" * (prop["maxLength"] + 1)}


@pytest.fixture
def succeeded_train_job(api, session_factory) -> str:
    job_id = api.post("/v1/jobs/train", json=VALID_BODIES["TrainJobRequest"]).json["id"]
    with session_factory() as session:
        attempt = jobs.claim_job(session, uuid.UUID(job_id), "w", 60)
        jobs.finish_job(session, uuid.UUID(job_id), attempt, JobStatus.SUCCEEDED)
        # A registry version for the evaluate body to name (its weights are never read here).
        registry.register(session, api.tenant_id, "walked", source="upload", config={}, storage_key="unused",
                          size_bytes=0, sha256="0" * 64)
        session.commit()
    return job_id


def test_a_body_the_document_forbids_is_refused_with_422_naming_the_field(api, succeeded_train_job):
    document = api.get("/v1/openapi.json").json
    components = document["components"]["schemas"]
    bodies = {**VALID_BODIES, "GenerateJobRequest": {**VALID_BODIES["GenerateJobRequest"],
                                                     "generator_job": succeeded_train_job}}
    checked = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if content is None or method != "post":  # the submissions (an alias PUT is tested with the registry)
                continue
            name = content["schema"]["$ref"].rsplit("/", 1)[-1]
            validator = jsonschema.Draft202012Validator({"$ref": content["schema"]["$ref"],
                                                         "components": document["components"]})
            assert validator.is_valid(bodies[name]), list(validator.iter_errors(bodies[name]))
            assert api.post(path, json=bodies[name]).status_code == ACCEPTED.get(name, 202), path  # accepted
            for field, body in violations(components[name], components, copy.deepcopy(bodies[name])):
                assert not validator.is_valid(body), (path, field, body)  # the document forbids it ...
                response = api.post(path, json=body)
                assert response.status_code == 422, (path, field, body, response.json)  # ... and so does the API
                assert response.json["type"] == "/problems/validation-error"
                assert field in {e["field"] for e in response.json["errors"]}, (field, response.json["errors"])
                checked += 1
    assert checked >= 40  # both job bodies and the config's fields were walked


def test_a_query_the_document_forbids_is_refused_with_422(api):
    document = api.get("/v1/openapi.json").json
    parameters = {p["name"]: p["schema"] for p in document["paths"]["/v1/jobs"]["get"]["parameters"]
                  if p.get("in") == "query"}
    checked = 0
    for field, query in violations({"properties": parameters}, {}, {}, types=False):
        response = api.get("/v1/jobs", query_string={field: query[field]})
        assert response.status_code == 422 and [e["field"] for e in response.json["errors"]] == [field], query
        checked += 1
    assert checked >= 4
