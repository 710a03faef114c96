"""Generator weights (POST /v1/generators): pickles, wrong shapes and dtypes, NaN/Inf, headers that lie,
and configs that do not parse."""

from __future__ import annotations

import pickle
import uuid

import numpy as np
import pytest

from tests.core.test_weights import generator_arrays, safetensors_bytes, with_value
from tests.web.hostile import Case, check, generator
from tests.web.hostile.builders import CONFIG, GOOD_WEIGHTS, _extra, _overlap, torch_zip_checkpoint

CASES = [
    Case("pickle .pt", generator(pickle.dumps({"main.0.weight": [0.0]}, protocol=2)), 422, "weights-pickle"),
    Case("torch.save zip", generator(torch_zip_checkpoint), 422, "weights-pickle"),
    Case("wrong shapes", generator(GOOD_WEIGHTS, {**CONFIG, "g_channels": 16}), 422, "weights-shape"),
    Case("wrong dtype", generator(lambda: safetensors_bytes({**generator_arrays(),
                                                             "main.1.weight": ("F64", np.ones(32))})),
         422, "weights-dtype"),
    Case("NaN weights", generator(lambda: safetensors_bytes(with_value("main.3.weight", np.nan))), 422,
         "weights-non-finite"),
    Case("Inf weights (bf16)", generator(lambda: safetensors_bytes(with_value("main.9.weight", np.inf, "BF16"))),
         422, "weights-non-finite"),
    Case("header length past EOF", generator(lambda: safetensors_bytes(generator_arrays(), header_length=900_000)),
         422, "weights-header"),
    Case("huge header", generator(lambda: safetensors_bytes(generator_arrays(), header_length=1 << 40)), 422,
         "weights-header"),
    Case("overlapping offsets", generator(lambda: safetensors_bytes(generator_arrays(), edit_header=_overlap)), 422,
         "weights-offsets"),
    Case("extra tensor", generator(lambda: safetensors_bytes(generator_arrays(), edit_header=_extra)), 422,
         "weights-unexpected-tensor"),
    Case("missing tensor", generator(lambda: safetensors_bytes(
        generator_arrays(), edit_header=lambda h: h.pop("main.4.running_var"))), 422, "weights-missing-tensor"),
    Case("bad config JSON", generator(GOOD_WEIGHTS, '{"z_dim": 8,'), 422, "validation-error"),
    Case("unknown config field", generator(GOOD_WEIGHTS, {**CONFIG, "exec": "rm -rf /"}), 422, "validation-error"),
    Case("read-only field in the upload form", generator(GOOD_WEIGHTS, tenant_id=str(uuid.uuid4())), 422,
         "validation-error"),
    Case("NUL in a generator name", generator(GOOD_WEIGHTS, name="g\x00"), 422, "validation-error"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_weights(api, case: Case):
    check(api, case)
