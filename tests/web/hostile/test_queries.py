"""Query strings and integers in paths: digits that str.isdigit() accepts but int() refuses, integers past
Python's int-string limit (4300 digits), NUL bytes that PostgreSQL refuses even to compare, and lone surrogates
in JSON -- each a 4xx problem, never a 500 (issue 11; tests/web/test_fuzz_routes.py looks for more)."""

from __future__ import annotations

import json
from typing import Callable

import pytest

from tests.web.hostile import NOISE, Case, Context, check, generator, get, post_raw
from tests.web.hostile.builders import CONFIG, TRAIN

PAST_THE_DIGIT_LIMIT = "9" * 5000


def own_job(rest: str) -> Callable[[Context], object]:
    """GET a route under the client's own job (another tenant's is 404 before its query is read)."""
    return lambda c: c.api.get(f"/v1/jobs/{c.api.own_job}{rest}")

CASES = [
    Case("superscript digits as a limit", get("/v1/jobs?limit=%C2%B2"), 422, "validation-error"),
    Case("another script's digits as a limit", get("/v1/generators?limit=%D9%A1%D9%A2"), 422, "validation-error"),
    Case("a limit past the int-string limit", get(f"/v1/jobs?limit={PAST_THE_DIGIT_LIMIT}"), 422,
         "validation-error"),
    Case("a step past the int-string limit", own_job(f"/grid?step={PAST_THE_DIGIT_LIMIT}"), 422, "validation-error"),
    Case("superscript digits as max_points", own_job("/metrics?max_points=%C2%B9%C2%B2"), 422, "validation-error"),
    Case("a path integer past the int-string limit", own_job(f"/samples/{PAST_THE_DIGIT_LIMIT}"), 404, "not-found"),
    Case("NUL in the generator name filter", get("/v1/generators?name=%00"), 422, "validation-error"),
    Case("a lone surrogate in a JSON string", post_raw("/v1/jobs/train", '{"dataset": "builtin:\\ud800digits"}'),
         400, "malformed-json"),
    Case("a lone surrogate as a config key", post_raw("/v1/jobs/train", json.dumps(
        {**TRAIN, "config": {**CONFIG, "\udfff": 1}})), 400, "malformed-json"),
    Case("a lone surrogate in a generator's config", generator(NOISE[:64], config=json.dumps(
        {**CONFIG, "\ud800": 1})), 422, "validation-error"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_queries(api, case: Case):
    api.own_job = api.post("/v1/jobs/train", json=TRAIN).json["id"]
    check(api, case)
