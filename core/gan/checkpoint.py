"""Checkpoint formats: full training state and the exported generator.

Training state (`step-0001200.pt`): `torch.save` of tensors and plain containers only -- G, D, EMA G, both
optimisers, the AMP scaler, step/epoch/position in the epoch and the epoch's order, every RNG state and the
config -- always read back with `torch.load(weights_only=True)`, so loading one never runs pickled code.

Exported generator (`generator.safetensors`): G's weights (the EMA copy when there is one) in safetensors,
with the config as JSON in the header metadata, so a generator can be rebuilt without unpickling anything.

Both are written atomically (temp file in the same directory, fsync, rename): a crash leaves the previous
file or the new one, never half of one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from core.error_text import described

from .atomic_files import atomic_write
from .config import ConfigError, TrainConfig
from .errors import GanError

TRAIN_STATE_FORMAT = "dcgan-train-state/1"
GENERATOR_FORMAT = "dcgan-generator/1"


class CheckpointError(GanError):
    """A checkpoint that cannot be used here; the message names the file and the mismatch."""


def save_training_state(path: Path, state: Mapping[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save({"format": TRAIN_STATE_FORMAT, **state}, f))


def load_training_state(path: Path) -> dict[str, Any]:
    """Read a training-state file safely; returns the dict with a validated `config` TrainConfig."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as exc:  # unpickling refused or corrupt archive: one line naming the file
        raise CheckpointError(f"{path}: not a readable training checkpoint ({described(exc)})") from None
    if not isinstance(state, dict) or state.get("format") != TRAIN_STATE_FORMAT:
        raise CheckpointError(f"{path}: not a {TRAIN_STATE_FORMAT} checkpoint")
    try:
        state["config"] = TrainConfig.from_dict(state["config"])
    except (KeyError, ConfigError) as exc:
        raise CheckpointError(f"{path}: bad config in checkpoint ({exc})") from None
    return state


def load_module_state(module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """load_state_dict with a one-line error naming the first mismatching tensor instead of a dump."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        name = (missing or unexpected)[0]
        kind = "missing" if missing else "unexpected"
        raise CheckpointError(f"{what}: {kind} tensor {name!r} (does the config match the checkpoint?)")
    for key, tensor in expected.items():
        got = state_dict[key]
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(tensor.shape):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise CheckpointError(f"{what}: tensor {key!r} has shape {shape}, this model needs "
                                  f"{tuple(tensor.shape)} (checkpoint from another config)")
    module.load_state_dict(state_dict)


def export_generator(path: Path, generator: nn.Module, config: TrainConfig, extra: Mapping[str, str] = {}) -> None:
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in generator.state_dict().items()
               if v.is_floating_point()}
    tensors.update({k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()
                    if not v.is_floating_point()})
    metadata = {"format": GENERATOR_FORMAT, "config": json.dumps(config.to_dict(), sort_keys=True), **extra}
    data = safetensors_bytes(tensors, metadata=metadata)
    atomic_write(path, lambda f: f.write(data))


def read_generator(path: Path) -> tuple[TrainConfig, dict[str, torch.Tensor]]:
    """Read an exported generator: its config and weights; nothing is unpickled."""
    _refuse_pickle(Path(path))
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != GENERATOR_FORMAT or "config" not in metadata:
                raise CheckpointError(f"{path}: not a {GENERATOR_FORMAT} file (no config in its metadata)")
            try:
                config = TrainConfig.from_dict(json.loads(metadata["config"]))
            except (ValueError, ConfigError) as exc:
                raise CheckpointError(f"{path}: bad config in metadata ({exc})") from None
            # Check every header shape against the model the config describes before reading any data.
            from .models import build_generator

            expected = {k: tuple(v.shape) for k, v in build_generator(config).state_dict().items()}
            names = set(f.keys())
            if names != set(expected):
                name = sorted(names ^ set(expected))[0]
                raise CheckpointError(f"{path}: tensor {name!r} does not belong to a generator with this config")
            for name in sorted(names):
                shape = tuple(f.get_slice(name).get_shape())
                if shape != expected[name]:
                    raise CheckpointError(f"{path}: tensor {name!r} has shape {shape}, config needs "
                                          f"{expected[name]}")
            weights = {name: f.get_tensor(name) for name in names}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such generator file") from None
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({described(exc)})") from None
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: tensor {name!r} contains NaN or Inf")
    return config, weights


def _refuse_pickle(path: Path) -> None:
    """Name the common mistake (a torch.save / pickle file) without ever unpickling it."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such generator file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({described(exc)})") from None
    # A pickle starts with the PROTO opcode 0x80; so does a safetensors file whose header is 128, 384, ...
    # bytes long (the first byte of its little-endian length), but that file's JSON header opens with "{".
    if head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and head[8:9] != b"{"):
        raise CheckpointError(f"{path}: is a pickle/torch.save file, not a .safetensors generator; it was not "
                              f"loaded (pickles can run code). Use the run's generator.safetensors")
