"""Ids in paths: malformed, another tenant's, path traversal and very long ones (404, never an oracle)."""

from __future__ import annotations


import pytest

from tests.web.hostile import Case, check, get

CASES = [
    Case("malformed job id", get("/v1/jobs/not-a-uuid"), 404, "not-found"),
    Case("another tenant's job", get(lambda f: f"/v1/jobs/{f.job}"), 404, "not-found"),
    Case("cancel another tenant's job", get(lambda f: f"/v1/jobs/{f.job}/cancel", "post"), 404, "not-found"),
    Case("another tenant's job grid", get(lambda f: f"/v1/jobs/{f.job}/grid"), 404, "not-found"),
    Case("another tenant's dataset id", get(lambda f: f"/v1/datasets/{f.dataset}"), 404, "not-found"),
    Case("another tenant's generator id", get(lambda f: f"/v1/generators/{f.generator}"), 404, "not-found"),
    Case("path traversal in an id", get("/v1/jobs/..%2F..%2F..%2Fetc%2Fpasswd"), 404, "not-found"),
    Case("path traversal in an artifact id", get(lambda f: f"/v1/jobs/{f.job}/artifacts/..%2F..%2Fsecret"), 404,
         "not-found"),
    Case("very long id", get("/v1/datasets/" + "7" * 20_000), 404, "not-found"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_ids(api, case: Case):
    check(api, case)
