"""The generator registry and evaluate jobs through `dcgan up` (the session's `platform`) as a user drives them
from a terminal: upload two versions of a name, point an alias at one and move it, score the version it names
with `dcgan jobs evaluate --follow` on the platform's own evaluation worker, and read the result back."""

from __future__ import annotations

import json

import pytest
import requests

from tests.core.test_weights import TINY, generator_arrays, safetensors_bytes
from tests.e2e.test_cli_follow import dcgan, submitted_id

pytestmark = pytest.mark.timeout(600)


def _upload(api, name: str, seed: int) -> dict:
    answer = requests.post(f"{api.base}/v1/generators", headers={"Authorization": f"Bearer {api.key}"},
                           files={"file": ("g.safetensors", safetensors_bytes(generator_arrays(seed=seed)))},
                           data={"config": json.dumps(TINY), "name": name}, timeout=60)
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_alias_then_evaluate_the_version_it_names_from_the_cli(platform):
    api, _ = platform
    first, second = _upload(api, "cli-registry", 1), _upload(api, "cli-registry", 2)
    assert (first["version"], second["version"]) == (1, 2)

    aliased = dcgan(platform, "generators", "alias", "cli-registry", "staging", "1")
    assert aliased.returncode == 0, aliased.stderr
    assert json.loads(aliased.stdout)["id"] == first["id"]
    moved = dcgan(platform, "generators", "alias", "cli-registry", "staging", "2")
    assert moved.returncode == 0 and json.loads(moved.stdout)["aliases"] == ["staging"]
    got = dcgan(platform, "generators", "get", "cli-registry@staging")
    assert got.returncode == 0 and json.loads(got.stdout)["id"] == second["id"]
    missing = dcgan(platform, "generators", "get", "cli-registry@champion")
    assert missing.returncode == 2 and "404" in missing.stderr

    evaluated = dcgan(platform, "jobs", "evaluate", "--generator", "cli-registry@staging", "--dataset",
                      "builtin:digits", "--num", "64", "--net", "digits", "--follow", timeout=420)
    assert evaluated.returncode == 0, evaluated.stderr
    status, job = api.json("GET", f"/v1/jobs/{submitted_id(evaluated.stderr)}")
    assert status == 200 and job["type"] == "evaluate" and job["status"] == "succeeded"
    result = job["result"]
    assert result["generator"]["id"] == second["id"] and result["num_samples"] == 64
    assert result["feature_net"] == "digits" and len(result["feature_net_sha256"]) == 64
    assert {"fid", "kid_mean", "is_mean"} <= set(result)
    assert api.json("GET", f"/v1/generators/{second['id']}")[1]["evaluations"][0]["fid"] == result["fid"]
