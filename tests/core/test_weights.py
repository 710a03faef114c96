"""core.weights: uploaded generator weights checked without torch, against the shapes the config implies.

The helpers at the top write safetensors files byte by byte with numpy (the web tests use them to craft
hostile uploads); the tests compare `generator_shapes` with the real model and our own export with the
checker, then refuse one kind of bad file per case.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from core.gan.checkpoint import export_generator
from core.gan.config import TrainConfig
from core.gan.models import Generator, build_generator
from core.gan.sample import Sampler
from core.weights import WeightsError, check_generator_file, check_generator_weights, generator_shapes

TINY = {"img_size": 32, "img_channels": 1, "z_dim": 8, "g_channels": 8}


def generator_arrays(config: dict = TINY, dtype: str = "F32", seed: int = 0) -> dict[str, tuple[str, np.ndarray]]:
    """Plausible weights for a generator of `config`: name -> (safetensors dtype, float32/int64 array)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in generator_shapes(config).items():
        if name.endswith("num_batches_tracked"):
            arrays[name] = ("I64", np.array(7, dtype=np.int64))
        elif name.endswith("running_var"):
            arrays[name] = (dtype, np.ones(shape, dtype=np.float32))
        else:
            arrays[name] = (dtype, rng.normal(0, 0.02, shape).astype(np.float32))
    return arrays


def encode_tensor(dtype: str, array: np.ndarray) -> bytes:
    if dtype == "BF16":  # the top half of each float32
        return (np.ascontiguousarray(array, dtype="<f4").view("<u4") >> 16).astype("<u2").tobytes()
    numpy_dtype = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4"}[dtype]
    return np.ascontiguousarray(array).astype(numpy_dtype).tobytes()


def safetensors_bytes(arrays: dict[str, tuple[str, np.ndarray]], metadata: dict | None = None,
                      edit_header: Callable[[dict], None] | None = None, header_length: int | None = None,
                      trailing: bytes = b"") -> bytes:
    """A safetensors file of `arrays` in order; `edit_header` may tamper with the header first."""
    header: dict = {"__metadata__": metadata} if metadata is not None else {}
    data, offset = [], 0
    for name, (dtype, array) in arrays.items():
        raw = encode_tensor(dtype, array)
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        data.append(raw)
        offset += len(raw)
    if edit_header is not None:
        edit_header(header)
    encoded = json.dumps(header).encode()
    length = len(encoded) if header_length is None else header_length
    return struct.pack("<Q", length) + encoded + b"".join(data) + trailing


def with_value(name: str, value: float, dtype: str = "F32") -> dict[str, tuple[str, np.ndarray]]:
    arrays = generator_arrays(dtype=dtype)
    array = arrays[name][1].copy()
    array.flat[3] = value
    arrays[name] = (dtype, array)
    return arrays


def check(data: bytes, config: dict = TINY, **kwargs):
    return check_generator_weights(io.BytesIO(data), config, **kwargs)


@pytest.mark.parametrize("z_dim,g_channels,img_channels,img_size", [
    (8, 8, 1, 16), (8, 8, 3, 16), (100, 64, 3, 32), (16, 4, 1, 32), (100, 64, 3, 64), (7, 12, 1, 64),
    (3, 2, 3, 128),
])
def test_generator_shapes_match_the_model(z_dim, g_channels, img_channels, img_size):
    state = Generator(z_dim, g_channels, img_channels, img_size).state_dict()
    config = {"z_dim": z_dim, "g_channels": g_channels, "img_channels": img_channels, "img_size": img_size}
    assert generator_shapes(config) == {name: tuple(tensor.shape) for name, tensor in state.items()}
    # The dtype rule: BatchNorm's counter is the only integer tensor.
    assert {name for name, t in state.items() if not t.is_floating_point()} == {
        name for name in state if name.endswith("num_batches_tracked")}


def test_missing_architecture_fields_take_the_config_defaults():
    defaults = TrainConfig()
    model = Generator(defaults.z_dim, defaults.g_channels, defaults.img_channels, defaults.img_size)
    assert generator_shapes({}) == {name: tuple(t.shape) for name, t in model.state_dict().items()}


def test_our_exported_generator_passes(tmp_path):
    config = TrainConfig.from_dict({**TINY, "steps": 1})
    path = tmp_path / "generator.safetensors"
    export_generator(path, build_generator(config), config)
    copy = io.BytesIO()
    with open(path, "rb") as f:
        checked = check_generator_weights(f, config.to_dict(), copy_to=copy)
    data = path.read_bytes()
    assert copy.getvalue() == data  # the copy is exactly what was checked
    assert (checked.size_bytes, checked.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert checked.metadata["format"] == "dcgan-generator/1"
    assert check_generator_file(path, config.to_dict()).sha256 == checked.sha256


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_half_precision_weights_pass_and_load(tmp_path, dtype):
    arrays = generator_arrays(dtype=dtype)
    path = tmp_path / "g.safetensors"
    path.write_bytes(safetensors_bytes(arrays))
    assert set(check_generator_file(path, TINY).dtypes.values()) == {dtype, "I64"}
    sampler = Sampler.from_state(TrainConfig.from_dict({**TINY, "steps": 1}), path)
    loaded = sampler.model.state_dict()["main.0.weight"]
    expected = torch.from_numpy(arrays["main.0.weight"][1])
    assert torch.allclose(loaded, expected, atol=1e-3 if dtype == "F16" else 1e-2, rtol=0.01)
    assert sampler.images_for_seeds([0, 1]).shape == (2, 1, 32, 32)


def test_from_state_gives_the_same_images_as_from_file(tmp_path):
    config = TrainConfig.from_dict({**TINY, "steps": 1})
    path = tmp_path / "generator.safetensors"
    torch.manual_seed(0)
    export_generator(path, build_generator(config), config)
    a = Sampler.from_file(path).images_for_seeds([3, 4, 5])
    b = Sampler.from_state(config, path).images_for_seeds([3, 4, 5])
    assert torch.equal(a, b)


class _Boom:
    """Unpickling this writes a file: proof, if it ever appeared, that something was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled!"))


def test_a_pickle_is_refused_without_being_unpickled(tmp_path):
    marker = tmp_path / "marker"
    for data in (pickle.dumps(_Boom(marker), protocol=2), pickle.dumps(_Boom(marker), protocol=5)):
        with pytest.raises(WeightsError, match="pickle") as refused:
            check(data)
        assert refused.value.slug == "weights-pickle"
    buffer = io.BytesIO()
    torch.save({"main.0.weight": torch.zeros(2), "boom": _Boom(marker)}, buffer)
    with pytest.raises(WeightsError, match="torch.save zip") as refused:
        check(buffer.getvalue())
    assert refused.value.slug == "weights-pickle"
    assert not marker.exists()


def _drop(name: str) -> Callable[[dict], None]:
    return lambda header: header.pop(name)


def _set(name: str, field: str, value) -> Callable[[dict], None]:
    return lambda header: header[name].__setitem__(field, value)


def _add_extra(header: dict) -> None:
    header["main.99.weight"] = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}


def _overlap(header: dict) -> None:
    begin, end = header["main.1.weight"]["data_offsets"]
    header["main.1.weight"]["data_offsets"] = [begin - 4, end - 4]


ARRAYS = generator_arrays()
REFUSED = [
    ("missing tensor", safetensors_bytes(ARRAYS, edit_header=_drop("main.1.bias")), "weights-missing-tensor",
     "'main.1.bias' is missing"),
    ("extra tensor", safetensors_bytes(ARRAYS, edit_header=_add_extra), "weights-unexpected-tensor", "main.99.weight"),
    ("wrong shape", safetensors_bytes({**ARRAYS, "main.0.weight": ("F32", np.zeros((8, 32, 3, 3), np.float32))}),
     "weights-shape", "needs (8, 32, 4, 4)"),
    ("float64", safetensors_bytes({**ARRAYS, "main.1.weight": ("F64", np.ones(32))}), "weights-dtype", "'F64'"),
    ("int weights", safetensors_bytes({**ARRAYS, "main.1.weight": ("I32", np.ones(32, np.int32))}), "weights-dtype",
     "'I32'"),
    ("float counter", safetensors_bytes({**ARRAYS, "main.1.num_batches_tracked": ("F32", np.array(1.0))}),
     "weights-dtype", "allowed: I64"),
    ("NaN f32", safetensors_bytes(with_value("main.3.weight", np.nan)), "weights-non-finite", "contains NaN"),
    ("Inf f32", safetensors_bytes(with_value("main.9.weight", np.inf)), "weights-non-finite", "contains Inf"),
    ("NaN f16", safetensors_bytes(with_value("main.1.bias", np.nan, "F16")), "weights-non-finite", "NaN"),
    ("Inf bf16", safetensors_bytes(with_value("main.4.weight", -np.inf, "BF16")), "weights-non-finite", "Inf"),
    ("NaN bf16", safetensors_bytes(with_value("main.4.weight", np.nan, "BF16")), "weights-non-finite", "NaN"),
    ("header past EOF", safetensors_bytes(ARRAYS, header_length=10_000_000 // 16)[:5000], "weights-header",
     "past the end"),
    ("huge header", safetensors_bytes(ARRAYS, header_length=1 << 40), "weights-header", "more than the"),
    ("header not JSON", struct.pack("<Q", 8) + b"{not js}", "weights-header", "not valid JSON"),
    ("header a list", struct.pack("<Q", 2) + b"[]", "weights-header", "not a JSON object"),
    ("duplicate key", struct.pack("<Q", 22) + b'{"a": {}, "a": {}}    ', "weights-header", "duplicate"),
    ("bad metadata", safetensors_bytes(ARRAYS, metadata={"format": 1}), "weights-header", "__metadata__"),
    ("overlapping offsets", safetensors_bytes(ARRAYS, edit_header=_overlap), "weights-offsets", "overlaps"),
    ("offsets off size", safetensors_bytes(ARRAYS, edit_header=_set("main.1.bias", "data_offsets", [0, 8])),
     "weights-offsets", "need 128"),
    ("trailing data", safetensors_bytes(ARRAYS, trailing=b"\0" * 4), "weights-offsets", "continues after"),
    ("truncated data", safetensors_bytes(ARRAYS)[:-100], "weights-offsets", "ends inside"),
    ("too short", b"\x01\x00", "weights-header", "too short"),
]


@pytest.mark.parametrize("data,slug,message", [row[1:] for row in REFUSED], ids=[row[0] for row in REFUSED])
def test_refused(data, slug, message):
    with pytest.raises(WeightsError) as refused:
        check(data)
    assert refused.value.slug == slug and message in str(refused.value)


def test_names_shapes_and_offsets_are_checked_before_any_data_is_read():
    wrong = safetensors_bytes({**ARRAYS, "main.0.weight": ("F32", np.zeros((8, 32, 3, 3), np.float32))})
    header_end = 8 + struct.unpack("<Q", wrong[:8])[0]
    stream = io.BytesIO(wrong)
    with pytest.raises(WeightsError, match="shape"):
        check_generator_weights(stream, TINY)
    assert stream.tell() == header_end


def test_size_limit():
    data = safetensors_bytes(ARRAYS)
    with pytest.raises(WeightsError) as refused:
        check(data, max_bytes=len(data) - 1)
    assert refused.value.slug == "weights-too-large" and refused.value.too_large
    assert check(data, max_bytes=len(data)).size_bytes == len(data)
