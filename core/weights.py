"""Checking uploaded generator weights (`.safetensors`) against the config they claim, without torch.

The API process must never import torch, and must never unpickle what a user sends. A safetensors file
is 8 bytes of little-endian header length N, N bytes of JSON header (`{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {str: str}}`) and the data buffer the offsets point into
(https://github.com/huggingface/safetensors#format). `check_generator_weights` reads it front to back,
once, so it can run on an upload as it streams to a temp file:

1. the first bytes: a torch.save zip (`PK\\x03\\x04`) or a pickle (protocol opcode `\\x80`) is refused
   there and then, never loaded;
2. the header, at most `max_header_bytes`, as strict JSON (no duplicate keys);
3. before one byte of tensor data is read: the names against `generator_shapes(config)` (nothing missing,
   nothing extra), each dtype against the allowlist, each shape against the config, and the offsets --
   each tensor exactly its dtype x shape bytes, contiguous, no overlap, no gap, starting at 0;
4. the data, tensor by tensor in chunks with numpy (F32, F16 and BF16), refusing NaN and Inf, and then
   the end of the file right after the last tensor.

`generator_shapes` mirrors `core.gan.models.Generator`'s state_dict; tests/core/test_weights.py compares the
two for several configs so they cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Mapping

import numpy as np

from core.gan.config import TrainConfig
from core.gan.errors import GanError

MAX_HEADER_BYTES = 1024 * 1024
_CHUNK = 1024 * 1024
# Weights may be stored in any of these; BatchNorm's step counter is an int64 scalar in every state_dict.
FLOAT_DTYPES = {"F32": (np.dtype("<f4"), 4), "F16": (np.dtype("<f2"), 2), "BF16": (np.dtype("<u2"), 2)}
COUNTER_DTYPES = {"I64": (np.dtype("<i8"), 8)}
_ARCHITECTURE = ("z_dim", "g_channels", "img_channels", "img_size")

TITLES = {
    "weights-pickle": "Pickled checkpoint refused",
    "weights-header": "Unreadable safetensors header",
    "weights-missing-tensor": "Tensor missing from the weights",
    "weights-unexpected-tensor": "Tensor the config has no place for",
    "weights-dtype": "Tensor dtype not allowed",
    "weights-shape": "Tensor shape does not match the config",
    "weights-offsets": "Tensor data offsets are invalid",
    "weights-non-finite": "NaN or Inf in the weights",
    "weights-too-large": "Weights file too large",
}


class WeightsError(GanError):
    """Weights refused; `slug` is one of TITLES, `tensor` the culprit if one, `too_large` a size refusal."""

    def __init__(self, slug: str, message: str, tensor: str | None = None):
        super().__init__(message)
        self.slug = slug
        self.title = TITLES[slug]
        self.tensor = tensor
        self.too_large = slug == "weights-too-large"


@dataclass(frozen=True)
class CheckedWeights:
    size_bytes: int
    sha256: str
    dtypes: dict[str, str]
    metadata: dict[str, str]


def generator_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in `Generator(...).state_dict()` for this config (missing
    architecture fields take TrainConfig's defaults). Mirrors core/gan/models.py without importing torch."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    z_dim, g_channels, img_channels, img_size = (int(config.get(name, defaults[name])) for name in _ARCHITECTURE)
    blocks = img_size.bit_length() - 3
    width = g_channels * 2 ** (blocks - 1)
    shapes: dict[str, tuple[int, ...]] = {}

    def batch_norm(index: int, channels: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"main.{index}.{name}"] = (channels,)
        shapes[f"main.{index}.num_batches_tracked"] = ()

    # main.0 ConvTranspose2d(z_dim, width, 4, 1, 0), main.1 BatchNorm2d, main.2 ReLU
    shapes["main.0.weight"] = (z_dim, width, 4, 4)
    batch_norm(1, width)
    index = 3
    for _ in range(blocks - 1):  # ConvTranspose2d(width, width // 2, 4, 2, 1), BatchNorm2d, ReLU
        shapes[f"main.{index}.weight"] = (width, width // 2, 4, 4)
        batch_norm(index + 1, width // 2)
        index, width = index + 3, width // 2
    shapes[f"main.{index}.weight"] = (width, img_channels, 4, 4)  # then Tanh
    return shapes


def allowed_dtypes(name: str) -> dict[str, tuple[np.dtype, int]]:
    return COUNTER_DTYPES if name.endswith(".num_batches_tracked") else FLOAT_DTYPES


def check_generator_file(path: str | Path, config: Mapping[str, Any], **kwargs: Any) -> CheckedWeights:
    with open(path, "rb") as stream:
        return check_generator_weights(stream, config, **kwargs)


def check_generator_weights(stream: BinaryIO, config: Mapping[str, Any], *, copy_to: BinaryIO | None = None,
                            max_bytes: int | None = None,
                            max_header_bytes: int = MAX_HEADER_BYTES) -> CheckedWeights:
    """Read `stream` once, front to back, and raise WeightsError at the first problem; every byte read is
    also written to `copy_to` when given (so the caller can keep exactly what was checked)."""
    source = _Source(stream, copy_to, max_bytes)
    head = source.read_up_to(8)
    if head.startswith(b"PK\x03\x04"):
        raise WeightsError("weights-pickle", "this is a torch.save zip archive (a pickle inside), not "
                                             ".safetensors; it was not loaded, since unpickling can run code")
    looks_pickled = len(head) >= 2 and head[0] == 0x80 and 1 <= head[1] <= 5
    if len(head) < 8:
        raise WeightsError("weights-header", f"the file is {len(head)} bytes, too short for a safetensors header")
    (header_bytes,) = struct.unpack("<Q", head)
    if header_bytes > max_header_bytes:
        if looks_pickled:
            raise WeightsError("weights-pickle", "this is a pickle (a torch.save or pickle.dump file), not "
                                                 ".safetensors; it was not loaded, since unpickling can run code")
        raise WeightsError("weights-header", f"the header length field says {header_bytes} bytes, more than the "
                                             f"{max_header_bytes} allowed")
    raw = source.read_exact(header_bytes, "weights-header",
                            f"the header length field says {header_bytes} bytes, past the end of the file")
    if looks_pickled and not raw.lstrip(b" ").startswith(b"{"):
        raise WeightsError("weights-pickle", "this is a pickle, not .safetensors; it was not loaded")
    tensors, metadata = _parse_header(raw)
    plan = _plan(tensors, generator_shapes(config))
    data_bytes = plan[-1][2] if plan else 0
    if max_bytes is not None and 8 + header_bytes + data_bytes > max_bytes:
        raise WeightsError("weights-too-large", f"the header describes {8 + header_bytes + data_bytes} bytes, more "
                                                f"than the {max_bytes} allowed")
    for name, begin, end, dtype_name in plan:
        _check_values(source, name, end - begin, dtype_name)
    if source.read_up_to(1):
        raise WeightsError("weights-offsets", f"the file continues after the last tensor's data (byte "
                                              f"{8 + header_bytes + data_bytes} of the file)")
    return CheckedWeights(source.size, source.sha256.hexdigest(),
                          {name: tensors[name]["dtype"] for name in tensors}, metadata)


class _Source:
    """Reads the stream once, hashing, counting and copying what passes through."""

    def __init__(self, stream: BinaryIO, copy_to: BinaryIO | None, max_bytes: int | None):
        self.stream, self.copy_to, self.max_bytes = stream, copy_to, max_bytes
        self.size = 0
        self.sha256 = hashlib.sha256()

    def read_up_to(self, count: int) -> bytes:
        parts, left = [], count
        while left > 0:
            block = self.stream.read(min(left, _CHUNK))
            if not block:
                break
            parts.append(block)
            left -= len(block)
            self._count(block)
        return b"".join(parts)

    def read_exact(self, count: int, slug: str, message: str) -> bytes:
        data = self.read_up_to(count)
        if len(data) < count:
            raise WeightsError(slug, message)
        return data

    def _count(self, block: bytes) -> None:
        self.size += len(block)
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise WeightsError("weights-too-large", f"the file is larger than the {self.max_bytes} bytes allowed")
        self.sha256.update(block)
        if self.copy_to is not None:
            self.copy_to.write(block)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _parse_header(raw: bytes) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WeightsError("weights-header", f"the header is not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(header, dict):
        raise WeightsError("weights-header", "the header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise WeightsError("weights-header", "__metadata__ must map strings to strings")
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise WeightsError("weights-header", f"tensor {name!r}: an entry must have exactly dtype, shape and "
                                                 f"data_offsets", tensor=name)
        shape, offsets = entry["shape"], entry["data_offsets"]
        if not isinstance(entry["dtype"], str) or not isinstance(shape, list) or not all(
                _is_count(n) for n in shape):
            raise WeightsError("weights-header", f"tensor {name!r}: dtype must be a string and shape a list of "
                                                 f"non-negative integers", tensor=name)
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(n) for n in offsets):
            raise WeightsError("weights-offsets", f"tensor {name!r}: data_offsets must be [begin, end], two "
                                                  f"non-negative integers", tensor=name)
    return header, metadata


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _plan(tensors: dict[str, dict[str, Any]], expected: dict[str, tuple[int, ...]]) -> list[tuple[str, int, int, str]]:
    """Every check that needs only the header; the tensors as (name, begin, end, dtype) in data order."""
    missing = [name for name in expected if name not in tensors]
    if missing:
        raise WeightsError("weights-missing-tensor", f"tensor {missing[0]!r} is missing: a generator with this "
                                                     f"config has {len(expected)} tensors", tensor=missing[0])
    extra = sorted(name for name in tensors if name not in expected)
    if extra:
        raise WeightsError("weights-unexpected-tensor", f"tensor {extra[0]!r} does not belong to a generator with "
                                                        f"this config", tensor=extra[0])
    for name, shape in expected.items():
        entry = tensors[name]
        allowed = allowed_dtypes(name)
        if entry["dtype"] not in allowed:
            raise WeightsError("weights-dtype", f"tensor {name!r} is {str(entry['dtype'])[:20]!r}; allowed: "
                                                f"{', '.join(allowed)}", tensor=name)
        if tuple(entry["shape"]) != shape:
            raise WeightsError("weights-shape", f"tensor {name!r} has shape {tuple(entry['shape'])}, this config "
                                                f"needs {shape}", tensor=name)
        begin, end = entry["data_offsets"]
        needed = math.prod(shape) * allowed[entry["dtype"]][1]
        if end - begin != needed:
            raise WeightsError("weights-offsets", f"tensor {name!r}: data_offsets [{begin}, {end}] span "
                                                  f"{end - begin} bytes, its dtype and shape need {needed}",
                               tensor=name)
    ordered = sorted((entry["data_offsets"][0], entry["data_offsets"][1], name) for name, entry in tensors.items())
    cursor = 0
    for begin, end, name in ordered:
        if begin != cursor:
            what = "overlaps the tensor before it" if begin < cursor else f"leaves a gap of {begin - cursor} bytes"
            raise WeightsError("weights-offsets", f"tensor {name!r}: data_offsets [{begin}, {end}] {what}; tensors "
                                                  f"must tile the data buffer exactly", tensor=name)
        cursor = end
    return [(name, begin, end, tensors[name]["dtype"]) for begin, end, name in ordered]


def _check_values(source: _Source, name: str, size: int, dtype_name: str) -> None:
    dtype, itemsize = allowed_dtypes(name)[dtype_name]
    step = _CHUNK - _CHUNK % itemsize
    left = size
    while left > 0:
        block = source.read_exact(min(step, left), "weights-offsets",
                                  f"the file ends inside tensor {name!r}'s data")
        left -= len(block)
        values = np.frombuffer(block, dtype=dtype)
        if dtype_name == "BF16":
            # bfloat16 is float32's top half: an all-ones exponent is Inf (mantissa 0) or NaN.
            special = (values & 0x7F80) == 0x7F80
            if special.any():
                kind = "NaN" if (values[special] & 0x007F).any() else "Inf"
                raise WeightsError("weights-non-finite", f"tensor {name!r} contains {kind}", tensor=name)
        elif dtype_name in ("F32", "F16"):
            if not np.isfinite(values).all():
                kind = "NaN" if np.isnan(values).any() else "Inf"
                raise WeightsError("weights-non-finite", f"tensor {name!r} contains {kind}", tensor=name)
