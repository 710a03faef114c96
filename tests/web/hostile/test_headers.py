"""Headers: lying Content-Length, chunked bodies past the limit, wrong content types, missing, unknown,
revoked and malformed API keys, and malformed Idempotency-Keys."""

from __future__ import annotations

import pytest

from tests.web.hostile import (NOISE, Case, check, chunked, lying_content_length, post_json, post_raw, revoked_key,
                               with_auth)

CASES = [
    Case("Content-Length over the limit (dataset)", lying_content_length("/v1/datasets"), 413,
         "payload-too-large"),
    Case("Content-Length over the limit (generator)", lying_content_length("/v1/generators"), 413,
         "payload-too-large"),
    Case("chunked body over the limit", chunked(NOISE), 413, "payload-too-large", max_content_length=100_000),
    Case("wrong Content-Type (job)", post_raw("/v1/jobs/train", "dataset=builtin:digits", "text/plain"), 415,
         "unsupported-media-type"),
    Case("wrong Content-Type (dataset)", post_json("/v1/datasets", {"file": "a.zip"}), 415,
         "unsupported-media-type"),
    Case("wrong Content-Type (generator)", post_raw("/v1/generators", "config={}",
                                                    "application/x-www-form-urlencoded"), 415,
         "unsupported-media-type"),
    Case("no Authorization header", with_auth(lambda c: None), 401, "unauthorized"),
    Case("Basic instead of Bearer", with_auth(lambda c: "Basic dXNlcjpwYXNzd29yZA=="), 401, "unauthorized"),
    Case("unknown API key", with_auth(lambda c: "Bearer dcg_" + "A" * 43), 401, "unauthorized"),
    Case("API key with trailing junk", with_auth(lambda c: f"Bearer {c.api.api_key} x"), 401, "unauthorized"),
    Case("revoked API key", with_auth(revoked_key), 401, "unauthorized"),
    Case("Idempotency-Key too long", with_auth(lambda c: f"Bearer {c.api.api_key}", {"Idempotency-Key": "k" * 300}),
         400, "invalid-idempotency-key"),
    Case("Idempotency-Key with a control character", with_auth(lambda c: f"Bearer {c.api.api_key}",
                                                               {"Idempotency-Key": "a\x01b"}),
         400, "invalid-idempotency-key"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_headers(api, case: Case):
    check(api, case)
