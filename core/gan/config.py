"""The one typed training configuration.

Defaults follow the DCGAN paper (Radford et al., 2015, section 3 "Details of adversarial training") and
the seed article the project grew from. The same field names are used by the CLI (`--set key=value`), the
API's JSON, the job row and every checkpoint, so a checkpoint alone is enough to rebuild its generator.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from .errors import GanError

IMG_SIZES = (32, 64, 128)
LOSSES = ("bce", "hinge")
AUGMENTS = ("color", "translation", "cutout")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class ConfigError(GanError):
    """A config value (or unknown key) that cannot be used; `field` names the culprit."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message
        self.all: list[ConfigError] = [self]  # every problem found with the same config, this one first


@dataclass(frozen=True)
class TrainConfig:
    # Output resolution; the number of up/down blocks follows from it (4 -> img_size by doubling).
    img_size: int = 64
    # 1 for grayscale datasets (digits, MNIST), 3 for RGB.
    img_channels: int = 3
    # Length of the noise vector z; the paper's 100.
    z_dim: int = 100
    # Width of G's last hidden block (pytorch/examples' ngf); deeper blocks double it.
    g_channels: int = 64
    # Width of D's first block (ndf); deeper blocks double it.
    d_channels: int = 64
    # The paper trains with mini-batches of 128; pytorch/examples and the seed article use 64.
    batch_size: int = 64
    # Total work as G updates; exactly one of steps/epochs is set (steps wins when both are given).
    steps: int | None = None
    # Total work as passes over the dataset, used when steps is None.
    epochs: int | None = None
    # Adam learning rate for both nets; the paper found 1e-3 too high and used 2e-4.
    lr: float = 2e-4
    # Adam beta1; the paper lowered it from 0.9 to 0.5 because 0.9 oscillated.
    beta1: float = 0.5
    # Adam beta2; the library default, kept by the paper.
    beta2: float = 0.999
    # "bce": the non-saturating GAN loss of the paper; "hinge": the SNGAN/BigGAN hinge loss.
    loss: str = "bce"
    # Spectral norm on D's convs (Miyato et al. 2018); it replaces D's BatchNorm, which fights it.
    spectral_norm: bool = False
    # Minibatch standard-deviation channel before D's last conv (Karras et al. 2018): the
    # practical form of minibatch discrimination against mode collapse.
    minibatch_std: bool = False
    # DiffAugment policies (Zhao et al. 2020) applied to every image D sees, comma-separated
    # subset of color,translation,cutout; "" disables. On by default because we measured it: on
    # digits (1,797 images) D otherwise memorises the data and G stalls (bench/quality.py: FID 479
    # with all three vs 1439 without after 150 steps at width 32; translation alone 596).
    diffaugment: str = "color,translation,cutout"
    # Decay of the exponential moving average of G's weights used for sampling; 0 disables.
    # Averaged weights give visibly smoother samples at no training cost (Yazici et al. 2019).
    ema: float = 0.999
    # Render the fixed-noise grid every this many steps (0: only at the end).
    sample_every: int = 100
    # Write a full-state checkpoint every this many steps (0: only at the end / on stop).
    checkpoint_every: int = 500
    # Seeds weights, noise, data order and augmentation; same seed + same device = same run.
    seed: int = 0
    # "auto" picks what measured fastest: bf16 autocast on CPUs with native bf16 (AMX/AVX512-BF16),
    # else fp32 (on CUDA with TF32 convs); "bf16"/"fp16" force autocast (fp16 with a grad scaler).
    precision: str = "auto"
    # NHWC memory layout: faster convolutions with oneDNN and cuDNN.
    channels_last: bool = True
    # torch.compile G and D; pays a compile on start, wins on long runs.
    compile: bool = False
    # How many images the fixed-noise sample grid shows.
    num_samples: int = 64

    # ----- derived -----
    @property
    def num_blocks(self) -> int:
        """Stride-2 blocks between 4x4 and img_size (3 at 32, 4 at 64, 5 at 128)."""
        return self.img_size.bit_length() - 3

    @property
    def aug_policies(self) -> tuple[str, ...]:
        return tuple(p for p in self.diffaugment.split(",") if p)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """Build and validate; unknown keys and bad values raise ConfigError naming the field."""
        if not isinstance(data, Mapping):
            raise ConfigError("config", "must be an object of field names to values")
        known = {f.name: f for f in dataclasses.fields(cls)}
        problems = [ConfigError(name, f"unknown config key (known keys: {', '.join(sorted(known))})")
                    for name in sorted(set(data) - set(known))]
        values, unusable = {}, []
        for name, value in data.items():
            if name in known:
                try:
                    values[name] = _coerce(name, known[name], value)
                except ConfigError as exc:
                    unusable.append(exc)
        problems += unusable
        if not unusable:  # every value has its type: check the ranges too, so all problems come at once
            config = cls(**values)
            problems += list(config.problems())
        if problems:
            problems[0].all = problems
            raise problems[0]
        return config

    def replace(self, **changes: Any) -> "TrainConfig":
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def validate(self) -> None:
        """Raise the first problem; `.all` on it lists every problem, for an API's field errors."""
        problems = list(self.problems())
        if problems:
            problems[0].all = problems
            raise problems[0]

    def problems(self) -> Iterator[ConfigError]:
        if self.img_size not in IMG_SIZES:
            yield ConfigError("img_size", f"must be one of {', '.join(map(str, IMG_SIZES))}, got {self.img_size}")
        if self.img_channels not in (1, 3):
            yield ConfigError("img_channels", f"must be 1 or 3, got {self.img_channels}")
        for name, low, high in (("z_dim", 1, 4096), ("g_channels", 1, 1024), ("d_channels", 1, 1024),
                                ("batch_size", 1, 4096), ("num_samples", 1, 1024)):
            yield from _check_range(name, getattr(self, name), low, high)
        if self.steps is None and self.epochs is None:
            yield ConfigError("steps", "give the total work as steps or epochs")
        if self.steps is not None:
            yield from _check_range("steps", self.steps, 1, 10_000_000)
        if self.epochs is not None:
            yield from _check_range("epochs", self.epochs, 1, 100_000)
        for name in ("sample_every", "checkpoint_every"):
            yield from _check_range(name, getattr(self, name), 0, 10_000_000)
        yield from _check_range("seed", self.seed, 0, 2**63 - 1)
        if not 0 < self.lr <= 1:
            yield ConfigError("lr", f"must be in (0, 1], got {self.lr}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                yield ConfigError(name, f"must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.ema < 1:
            yield ConfigError("ema", f"must be in [0, 1) (0 disables), got {self.ema}")
        if self.loss not in LOSSES:
            yield ConfigError("loss", f"must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.precision not in PRECISIONS:
            yield ConfigError("precision", f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        bad = [p for p in self.aug_policies if p not in AUGMENTS]
        if bad:
            yield ConfigError("diffaugment", f"unknown policy {bad[0]!r}; use a comma-separated subset of "
                                             f"{','.join(AUGMENTS)}")


def _check_range(name: str, value: int, low: int, high: int) -> Iterator[ConfigError]:
    if not low <= value <= high:
        yield ConfigError(name, f"must be between {low} and {high}, got {value}")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, f: dataclasses.Field, value: Any) -> Any:
    """Accept JSON values and the strings of CLI `--set key=value`; reject anything else."""
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    optional = "None" in kind
    if value is None:
        if optional:
            return None
        raise ConfigError(name, "must not be null")
    base = kind.replace("| None", "").strip()
    try:
        if base == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
                return value.lower() in _TRUE
            raise ValueError
        if base == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            if isinstance(value, str) and optional and value.lower() in ("", "none", "null"):
                return None
            return int(value)
        if base == "float":
            if isinstance(value, bool):
                raise ValueError
            result = float(value)
            if result != result or result in (float("inf"), float("-inf")):
                raise ValueError
            return result
        if base == "str":
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError):
        raise ConfigError(name, f"expected {base}, got {value!r}") from None
    raise ConfigError(name, f"unsupported field type {kind}")


def parse_set_options(pairs: list[str]) -> dict[str, str]:
    """`["a=1", "b=x"]` -> `{"a": "1", "b": "x"}` for the CLI's repeated --set."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(pair or "--set", "expected key=value")
        result[key.strip()] = value.strip()
    return result


__all__ = ["TrainConfig", "ConfigError", "parse_set_options", "IMG_SIZES", "LOSSES", "AUGMENTS"]
