"""The one typed training configuration.

Defaults follow the DCGAN paper (Radford et al., 2015, section 3 "Details of adversarial training") and
the seed article the project grew from. The same field names are used by the CLI (`--set key=value`), the
API's JSON, the job row and every checkpoint, so a checkpoint alone is enough to rebuild its generator.

Each field declares its allowed values once (`Bounds`, `OneOf`); `TrainConfig.problems()` checks them and
`TrainConfig.json_schema()` publishes them (the API's OpenAPI document), so the two cannot disagree. Values
are typed first (`_coerce`: JSON values and the CLI's strings) and ranges checked only once every value has
its type, all problems at once. No validation library on purpose: this is the engine's contract with the
CLI, the worker and every checkpoint, and core.gan stays free of the platform's libraries; the API wraps it
as one field of its pydantic request models (core.request_models).
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
# Feature networks for evaluation during training; core.gan.metrics.FEATURE_NETS (a test keeps them equal).
EVAL_NETS = ("auto", "inception", "digits", "fashion-mnist")
# The train loop reports its losses every this many steps: the spacing of a job's metrics history.
LOG_EVERY_STEPS = 10


class ConfigError(GanError):
    """A config value (or unknown key) that cannot be used; `field` names the culprit."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message
        self.all: list[ConfigError] = [self]  # every problem found with the same config, this one first


@dataclass(frozen=True)
class Bounds:
    """A number's allowed interval, declared once on its field: the check and the JSON schema both read it."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    note: str = ""  # said after the interval in the message, e.g. "(0 disables)"

    def problem(self, name: str, value: float) -> ConfigError | None:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        if above and below:
            return None
        if isinstance(value, int) and not self.low_open and not self.high_open:
            return ConfigError(name, f"must be between {self.low} and {self.high}, got {value}")
        interval = f"{'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"
        return ConfigError(name, f"must be in {interval}{' ' + self.note if self.note else ''}, got {value}")

    def json_schema(self) -> dict[str, Any]:
        return {"exclusiveMinimum" if self.low_open else "minimum": self.low,
                "exclusiveMaximum" if self.high_open else "maximum": self.high}


@dataclass(frozen=True)
class OneOf:
    """The values a field may take, declared once on its field."""

    choices: tuple[Any, ...]

    def problem(self, name: str, value: Any) -> ConfigError | None:
        if value in self.choices:
            return None
        shown = repr(value) if isinstance(value, str) else value
        return ConfigError(name, f"must be one of {', '.join(map(str, self.choices))}, got {shown}")

    def json_schema(self) -> dict[str, Any]:
        return {"enum": list(self.choices)}


def _field(default: Any, check: Bounds | OneOf | None = None, description: str | None = None) -> Any:
    return dataclasses.field(default=default, metadata={"check": check, "description": description})


_COUNT = Bounds(1, 10_000_000)
_CADENCE = Bounds(0, 10_000_000)


@dataclass(frozen=True)
class TrainConfig:
    # Output resolution; the number of up/down blocks follows from it (4 -> img_size by doubling).
    img_size: int = _field(64, OneOf(IMG_SIZES))
    # 1 for grayscale datasets (digits, MNIST), 3 for RGB.
    img_channels: int = _field(3, OneOf((1, 3)))
    # Length of the noise vector z; the paper's 100.
    z_dim: int = _field(100, Bounds(1, 4096))
    # Width of G's last hidden block (pytorch/examples' ngf); deeper blocks double it.
    g_channels: int = _field(64, Bounds(1, 1024))
    # Width of D's first block (ndf); deeper blocks double it.
    d_channels: int = _field(64, Bounds(1, 1024))
    # The paper trains with mini-batches of 128; pytorch/examples and the seed article use 64.
    batch_size: int = _field(64, Bounds(1, 4096))
    # Total work as G updates; exactly one of steps/epochs is set (steps wins when both are given).
    steps: int | None = _field(None, _COUNT)
    # Total work as passes over the dataset, used when steps is None.
    epochs: int | None = _field(None, Bounds(1, 100_000))
    # Adam learning rates of G (lr) and D (lr_d; None gives D lr too). The paper used 2e-4 for both; we
    # measured G at 8e-4 with D at 4e-4 (and DiffAugment without cutout) best over three training seeds a side,
    # against pytorch/examples' recipe: FID 110.2 +- 4.9 against 194.0 +- 10.4 for the paper's rates on digits
    # 32x32 after 500 steps, and about half the paper's rates' FID on Fashion-MNIST 64x64 after 2,000
    # (bench/quality.py, docs/quality-ablations.md). `--set lr=0.0002 --set lr_d=none` is the paper's recipe.
    lr: float = _field(8e-4, Bounds(0, 1, low_open=True))
    lr_d: float | None = _field(4e-4, Bounds(0, 1, low_open=True))
    # Adam beta1; the paper lowered it from 0.9 to 0.5 because 0.9 oscillated.
    beta1: float = _field(0.5, Bounds(0, 1, high_open=True))
    # Adam beta2; the library default, kept by the paper.
    beta2: float = _field(0.999, Bounds(0, 1, high_open=True))
    # "bce": the non-saturating GAN loss of the paper; "hinge": the SNGAN/BigGAN hinge loss.
    loss: str = _field("bce", OneOf(LOSSES))
    # Spectral norm on D's convs (Miyato et al. 2018); it replaces D's BatchNorm, which fights it.
    spectral_norm: bool = False
    # Minibatch standard-deviation channel before D's last conv (Karras et al. 2018): the
    # practical form of minibatch discrimination against mode collapse.
    minibatch_std: bool = False
    # DiffAugment policies (Zhao et al. 2020) applied to every image D sees, comma-separated
    # subset of color,translation,cutout; "" disables. On by default because we measured it: on
    # digits (1,797 images) D otherwise memorises the data and G stalls (bench/quality.py: FID 479
    # with all three vs 1439 without after 150 steps at width 32; translation alone 596). Cutout is
    # off by default: with the learning rates above it cost FID on digits (docs/quality-ablations.md).
    diffaugment: str = _field("color,translation", description=f"comma-separated subset of "
                                                                        f"{','.join(AUGMENTS)}; '' disables")
    # Decay of the exponential moving average of G's weights used for sampling; 0 disables.
    # Averaged weights give visibly smoother samples at no training cost (Yazici et al. 2019).
    ema: float = _field(0.999, Bounds(0, 1, high_open=True, note="(0 disables)"))
    # Render the fixed-noise grid every this many steps (0: only at the end).
    sample_every: int = _field(100, _CADENCE)
    # Write a full-state checkpoint every this many steps (0: only at the end / on stop).
    checkpoint_every: int = _field(500, _CADENCE)
    # Seeds weights, noise, data order and augmentation; same seed + same device = same run.
    seed: int = _field(0, Bounds(0, 2**63 - 1))
    # "auto" picks what measured fastest: bf16 autocast on CPUs with native bf16 (AMX/AVX512-BF16),
    # else fp32 (on CUDA with TF32 convs); "bf16"/"fp16" force autocast (fp16 with a grad scaler).
    precision: str = _field("auto", OneOf(PRECISIONS))
    # NHWC memory layout: faster convolutions with oneDNN and cuDNN.
    channels_last: bool = True
    # torch.compile G and D; pays a compile on start, wins on long runs.
    compile: bool = False
    # On CUDA, capture the whole train step (both updates, both Adam steps, EMA, DiffAugment) in a CUDA graph
    # after a few eager steps and replay it: a 64x64 batch-64 step is bound by kernel launches, not by math.
    # Same numbers as the eager step (its randomness is drawn eagerly); fp16, compile=True and CPUs run eager.
    # Off by default until bench/gpu_check.sh has shown it on a GPU (bit-identical to eager, and faster).
    cuda_graphs: bool = False
    # How many images the fixed-noise sample grid shows.
    num_samples: int = _field(64, Bounds(1, 1024))
    # Score the EMA generator (FID and KID on fixed seeds 0..eval_num-1 against the dataset's cached real
    # statistics) every this many steps and at the end, keeping the best-scoring generator; 0 disables.
    eval_every: int = _field(0, _CADENCE)
    # Generated samples per evaluation. 2000 is the smallest count whose FID varies by at most 2% between
    # disjoint seed sets for a mid-training digits generator (1000: 2.2-2.4%, 500: 4.5%); the FID change
    # between evaluations 100 steps apart is then 16x its noise, and it is dcgan eval's and evaluate jobs'
    # count, so their FIDs compare (FID is biased by sample count). bench/eval_spread.py, docs/eval-spread-cpu.txt.
    eval_num: int = _field(2000, Bounds(2, 50_000))
    # Feature network: "auto" is the project's classifier for digits and fashion-mnist (fast, and fitted to
    # those images), Inception otherwise (the standard FID network; slow on a CPU).
    eval_net: str = _field("auto", OneOf(EVAL_NETS))

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
    def from_dict(cls, data: Mapping[str, Any], cli_strings: bool = True) -> "TrainConfig":
        """Build and validate; unknown keys and bad values raise ConfigError naming the field.

        `cli_strings`: a number or a boolean may be given as a string, as `--set key=value` gives every
        value. False (the API's JSON): each value must have its JSON type, as the published schema says."""
        if not isinstance(data, Mapping):
            raise ConfigError("config", "must be an object of field names to values")
        known = {f.name: f for f in dataclasses.fields(cls)}
        problems = [ConfigError(name, f"unknown config key (known keys: {', '.join(sorted(known))})")
                    for name in sorted(set(data) - set(known))]
        values, unusable = {}, []
        for name, value in data.items():
            if name in known:
                try:
                    values[name] = _coerce(name, known[name], value, cli_strings)
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
        """Every value outside its field's declared check, in field order, and the rules across fields."""
        for field in dataclasses.fields(self):
            if field.name == "steps" and self.steps is None and self.epochs is None:
                yield ConfigError("steps", "give the total work as steps or epochs")
            value, check = getattr(self, field.name), field.metadata.get("check")
            if check is not None and value is not None:
                problem = check.problem(field.name, value)
                if problem is not None:
                    yield problem
        bad = [p for p in self.aug_policies if p not in AUGMENTS]
        if bad:
            yield ConfigError("diffaugment", f"unknown policy {bad[0]!r}; use a comma-separated subset of "
                                             f"{','.join(AUGMENTS)}")

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of a config as `from_dict` accepts it, from the same declarations its checks use."""
        properties: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            base, optional = _field_type(field)
            schema: dict[str, Any] = {"type": [_JSON_TYPES[base], "null"] if optional else _JSON_TYPES[base]}
            if field.default is not None:
                schema["default"] = field.default
            if field.metadata.get("check") is not None:
                schema.update(field.metadata["check"].json_schema())
            if field.metadata.get("description"):
                schema["description"] = field.metadata["description"]
            properties[field.name] = schema
        return {"title": "TrainConfig", "type": "object", "properties": properties, "additionalProperties": False,
                "anyOf": [{"required": ["steps"]}, {"required": ["epochs"]}],
                "description": "DCGAN training config; give steps or epochs. Same names as the CLI's --set."}

_JSON_TYPES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean"}


def _field_type(f: dataclasses.Field) -> tuple[str, bool]:
    """A field's base type name ("int", "float", "str", "bool") and whether it may be None."""
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return kind.replace("| None", "").strip(), "None" in kind


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, f: dataclasses.Field, value: Any, cli_strings: bool = True) -> Any:
    """Accept JSON values (and, with `cli_strings`, the strings of CLI `--set key=value`); reject anything else."""
    base, optional = _field_type(f)
    if value is None:
        if optional:
            return None
        raise ConfigError(name, "must not be null")
    if not cli_strings and isinstance(value, str) and base != "str":
        raise ConfigError(name, f"expected {base}, got {value!r}")
    if optional and base in ("int", "float") and isinstance(value, str) and value.lower() in ("", "none", "null"):
        return None  # `--set steps=none`: an optional number given as a CLI string
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
    raise ConfigError(name, f"unsupported field type {f.type}")


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
