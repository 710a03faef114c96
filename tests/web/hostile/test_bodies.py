"""JSON bodies (POST /v1/jobs/*): NUL bytes, unknown and read-only fields, wrong types, nesting, sizes
and other tenants' ids."""

from __future__ import annotations

import uuid

import pytest

from tests.web.hostile import Case, check, post_json, post_raw
from tests.web.hostile.builders import CONFIG, TRAIN

CASES = [
    Case("NUL in a JSON string", post_json("/v1/jobs/train", {**TRAIN, "dataset": "builtin:\x00digits"}), 422,
         "validation-error"),
    Case("unknown field", post_json("/v1/jobs/train", {**TRAIN, "urgency": 1}), 422, "validation-error"),
    Case("mass assignment of read-only fields", post_json("/v1/jobs/train", {
        **TRAIN, "status": "succeeded", "id": str(uuid.uuid4()), "attempt": 3}), 422, "validation-error"),
    Case("mass assignment of the tenant", post_json("/v1/jobs/generate", lambda f: {
        "generator_job": f.job, "seeds": "0-3", "tenant_id": str(uuid.uuid4())}), 422, "validation-error"),
    Case("wrong types", post_json("/v1/jobs/train", {"dataset": 5, "config": {"steps": "many", "lr": [1]}}), 422,
         "validation-error"),
    Case("deeply nested", post_raw("/v1/jobs/train", "[" * 100_000 + "]" * 100_000), 400, "malformed-json"),
    Case("not an object", post_raw("/v1/jobs/generate", "[1, 2, 3]"), 400, "malformed-json"),
    Case("a JSON body over DCGAN_MAX_JSON_BYTES (1 MiB)", post_raw("/v1/jobs/train", '{"dataset": "' + "x" * 1_100_000
                                                                  + '"}'), 413, "payload-too-large"),
    Case("invalid UTF-8", post_raw("/v1/jobs/train", b'{"dataset": "\xff\xfe\xfd"}'), 400, "malformed-json"),
    Case("huge integer", post_json("/v1/jobs/train", {**TRAIN, "config": {**CONFIG, "steps": 10**40}}), 422,
         "validation-error"),
    Case("integer beyond the parser's digit limit", post_raw("/v1/jobs/generate",
                                                             '{"seeds": [' + "9" * 5000 + "]}"), 400,
         "malformed-json"),
    Case("huge float", post_json("/v1/jobs/generate", lambda f: {"generator_job": f.job, "seeds": "0-3",
                                                                 "truncation": 1e308 * 10}), 422, "validation-error"),
    Case("another tenant's generator", post_json("/v1/jobs/generate", lambda f: {
        "generator": f.generator, "seeds": "0-3"}), 422, "validation-error"),
    Case("another tenant's train job", post_json("/v1/jobs/generate", lambda f: {
        "generator_job": f.job, "seeds": "0-3"}), 422, "validation-error"),
    Case("another tenant's dataset", post_json("/v1/jobs/train", lambda f: {**TRAIN, "dataset": f.dataset}), 422,
         "validation-error"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_bodies(api, case: Case):
    check(api, case)

