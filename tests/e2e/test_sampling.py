"""Synchronous sampling through `dcgan up` as a user runs it (the `platform` fixture): its sampling worker
answers over real HTTP with the async generate job's bytes, and its evaluation worker runs beside it."""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request

import pytest
import requests
from PIL import Image

from tests.core.test_weights import TINY, generator_arrays, safetensors_bytes

pytestmark = pytest.mark.timeout(300)
SAMPLER_START_SECONDS = 120  # `dcgan up` prints its banner before the sampler has imported torch


def test_dcgan_up_samples_while_you_wait(platform):
    api, data_dir = platform
    banner = (data_dir / "up.log").read_text()
    assert "/v1/generators/<ref>/images?seeds=0-15&nrow=4" in banner
    arrays = {name: (dtype, array * 40 if name.endswith("weight") else array)
              for name, (dtype, array) in generator_arrays(seed=5).items()}
    uploaded = requests.post(f"{api.base}/v1/generators", headers={"Authorization": f"Bearer {api.key}"},
                             files={"file": ("g.safetensors", safetensors_bytes(arrays))},
                             data={"config": json.dumps(TINY), "name": "e2e-sampling"}, timeout=60)
    assert uploaded.status_code == 201, uploaded.text
    generator = uploaded.json()

    path = f"/v1/generators/{generator['id']}/images?seeds=0-15&nrow=4&truncation=0.7"
    deadline = time.monotonic() + SAMPLER_START_SECONDS
    while (answer := api.request("GET", path))[0] == 503 and time.monotonic() < deadline:
        time.sleep(0.5)
    status, raw_headers, grid = answer
    headers = {name.lower(): value for name, value in raw_headers.items()}  # waitress spells it Etag
    assert status == 200, (grid[:500], (data_dir / "sampler.log").read_text()[-3000:])
    assert headers["content-type"] == "image/png" and Image.open(io.BytesIO(grid)).size == (4 * 34 + 2, 4 * 34 + 2)

    # The same request with its ETag: 304, over HTTP too.
    conditional = urllib.request.Request(api.base + path, headers={"Authorization": f"Bearer {api.key}",
                                                                    "If-None-Match": headers["etag"]})
    with pytest.raises(urllib.error.HTTPError) as not_modified:
        urllib.request.urlopen(conditional, timeout=30)
    assert not_modified.value.code == 304

    status, job = api.json("POST", "/v1/jobs/generate", {"generator": generator["id"], "seeds": "0-15", "nrow": 4,
                                                         "truncation": 0.7})
    assert status == 202, job
    finished = api.wait(job["id"], {"succeeded", "failed"})
    assert finished["status"] == "succeeded", finished.get("error")
    assert api.request("GET", f"/v1/jobs/{job['id']}/grid")[2] == grid

    # The evaluation worker starts at a lower priority (nice 10) beside busier processes: give it its time.
    deadline = time.monotonic() + SAMPLER_START_SECONDS
    for log in ("sampler.log", "evaluator.log"):
        while " ready." not in (data_dir / log).read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert " ready." in (data_dir / log).read_text(), log
