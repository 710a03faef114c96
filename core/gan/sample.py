"""Deterministic sampling from an exported generator.

Each image depends only on its own seed: z for seed s is drawn from a CPU generator seeded with s (so
it is the same on every device), and G runs in eval mode (BatchNorm uses its running statistics, not the
batch's) in fixed-size micro-batches, so seed 7 gives the same picture alone or inside a batch of 64.

Fast paths (`SamplerOptions`): bf16 / fp16 autocast, channels_last, torch.compile and static int8
quantization. A path that changes the numbers (bf16, fp16, int8) serves only if it passes a quality gate when
the Sampler is built: its images of GATE_SEEDS must reach QUALITY_GATE_DB PSNR against fp32's, else the
Sampler serves fp32 and logs why (logger `core.gan.sample`). `Sampler.path` and `Sampler.quality` say which
path serves and what the gate measured; bench/sample_latency.py reports the same for every path.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.ao.quantization as tq
from PIL import Image
from torch import nn
from torchvision.utils import make_grid

from .checkpoint import CheckpointError, load_module_state, read_generator
from .atomic_files import atomic_write
from .config import TrainConfig
from .data import to_uint8
from .seeds import MAX_SEEDS, SampleError, check_truncation, parse_seeds  # noqa: F401  (shared with the API)
from .models import Generator, build_generator

# Every forward pass sees exactly this many samples (the last chunk is padded), so a batch-size-dependent
# kernel choice can never make seed 7 differ between a run of 1 seed and a run of 64. On the CPU oneDNN
# gives bitwise the same image at any batch position; cuDNN does not (measured on an H100: ~1e-5 apart),
# so on CUDA each seed gets its own forward unless SamplerOptions.micro_batch trades that for throughput.
MICRO_BATCH = {"cpu": 16, "cuda": 1}
# An interpolation GIF's frame time.
GIF_FRAME_MS = 80

# A bf16, fp16 or int8 path serves only if its uint8 images of GATE_SEEDS are at least this close to fp32's
# (PSNR); 35 dB is about one grey level of RMS error, invisible side by side.
QUALITY_GATE_DB = 35.0
# Fixed, so the gate decides the same way every time a generator loads: 16 images (one CPU forward pass).
# Not the calibration seeds, so int8 is not graded on the inputs its observers were fitted to.
GATE_SEEDS = range(200_000, 200_016)
CALIBRATION_SEEDS = range(100_000, 100_256)
PRECISIONS = ("fp32", "bf16", "fp16")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplerOptions:
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16"
    channels_last: bool = False
    compile: bool = False
    quantize: bool = False  # static int8 on the CPU; see bench/sample_latency.py for its PSNR against fp32
    # Images per forward pass; None = MICRO_BATCH for the device (per-seed exact). Larger is faster on a
    # GPU, but an image may then differ in its last bits with its place in the batch.
    micro_batch: int | None = None
    # The least PSNR (dB) against fp32 on GATE_SEEDS that a bf16, fp16 or int8 path needs to serve.
    quality_gate_db: float = QUALITY_GATE_DB


def noise_for_seeds(seeds: Sequence[int], z_dim: int, truncation: float = 1.0) -> torch.Tensor:
    """z (N, z_dim, 1, 1) on the CPU; row i depends only on seeds[i].

    Truncation psi in (0, 1] pulls z towards the mean of its prior (0), trading variety for fidelity as
    StyleGAN's truncation trick does (Karras et al., 2019); 1.0 leaves z as drawn.
    """
    check_truncation(truncation)
    rows = [torch.randn(z_dim, generator=torch.Generator().manual_seed(int(seed))) for seed in seeds]
    if not rows:
        return torch.empty(0, z_dim, 1, 1)
    return (torch.stack(rows) * truncation).view(len(seeds), z_dim, 1, 1)


class Sampler:
    """A loaded generator ready to turn seeds into images.

    `path` is what serves: "fp32", "bf16", "fp16" or "int8" (the requested path, or "fp32" after the quality
    gate refused it). `quality` is the JSON-able record of that decision: {"requested", "path", "psnr_db"
    (the requested path against fp32 on GATE_SEEDS, None when fp32 was requested; identical pixels are
    reported as 100.0), "threshold_db", "fallback_reason" (None when the requested path serves)}.
    """

    def __init__(self, generator: Generator, config: TrainConfig, device: str | torch.device = "cpu",
                 options: SamplerOptions = SamplerOptions()):
        if options.precision not in PRECISIONS:
            raise SampleError(f"precision must be fp32, bf16 or fp16, got {options.precision!r}")
        self.config = config
        self.device = torch.device(device)
        self.options = options
        self._micro_batch = options.micro_batch or MICRO_BATCH.get(self.device.type, 1)
        fp32 = generator.to(self.device).eval().requires_grad_(False)
        model = _quantize(fp32, self.device) if options.quantize else fp32
        if options.channels_last:
            model = model.to(memory_format=torch.channels_last)
        requested = "int8" if options.quantize else options.precision
        self.path, self._precision = requested, options.precision
        measured = None if requested == "fp32" else self._gate_psnr(fp32, model)
        reason = None
        if measured is not None and measured < options.quality_gate_db:
            reason = (f"{requested} gave {measured:.1f} dB PSNR against fp32 on {len(GATE_SEEDS)} fixed seeds, "
                      f"below the {options.quality_gate_db:g} dB quality gate")
            logger.warning("%s: serving fp32 instead", reason)
            model = fp32.to(memory_format=torch.channels_last) if options.channels_last else fp32
            self.path, self._precision = "fp32", "fp32"
        elif measured is not None:
            logger.info("%s kept: %.1f dB PSNR against fp32 on %d fixed seeds (gate %g dB)", requested, measured,
                        len(GATE_SEEDS), options.quality_gate_db)
        self.quality: dict[str, Any] = {
            "requested": requested, "path": self.path,
            "psnr_db": None if measured is None else round(measured, 2),
            "threshold_db": options.quality_gate_db, "fallback_reason": reason}
        self.model = torch.compile(model) if options.compile else model

    @classmethod
    def from_file(cls, path: Path, device: str | torch.device = "cpu",
                  options: SamplerOptions = SamplerOptions()) -> "Sampler":
        config, weights = read_generator(Path(path))
        generator = build_generator(config)
        load_module_state(generator, weights, str(path))
        return cls(generator, config, device, options)

    @classmethod
    def from_state(cls, config: TrainConfig, weights_path: Path, device: str | torch.device = "cpu",
                   options: SamplerOptions = SamplerOptions()) -> "Sampler":
        """A generator from bare safetensors weights and the config that describes them (an uploaded
        generator, whose config came with the upload rather than in the file). Read with safetensors only:
        nothing is unpickled. Names and shapes are checked against the config, values for NaN/Inf."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            weights = load_file(str(weights_path), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{weights_path}: not a readable safetensors file ({exc})") from None
        for name, tensor in weights.items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise CheckpointError(f"{weights_path}: tensor {name!r} contains NaN or Inf")
        generator = build_generator(config)
        load_module_state(generator, weights, str(weights_path))
        return cls(generator, config, device, options)

    def _gate_psnr(self, fp32: nn.Module, model: nn.Module) -> float:
        """PSNR of `model` at the requested precision against fp32 on GATE_SEEDS: two passes of 16 images.
        Identical pixels (an infinite PSNR) count as 100 dB, so that `quality` stays plain JSON."""
        z = noise_for_seeds(GATE_SEEDS, self.config.z_dim)
        reference = _render(fp32, z, self.device, "fp32", self._micro_batch)
        return min(psnr(_render(model, z, self.device, self._precision, self._micro_batch), reference), 100.0)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, z_dim, 1, 1) -> images (N, C, H, W) float in [-1, 1] on the CPU."""
        return _render(self.model, z, self.device, self._precision, self._micro_batch)

    def images_for_seeds(self, seeds: Sequence[int], truncation: float = 1.0) -> torch.Tensor:
        return self.generate(noise_for_seeds(seeds, self.config.z_dim, truncation))

    def interpolate(self, seed_a: int, seed_b: int, frames: int = 16, truncation: float = 1.0) -> torch.Tensor:
        """Spherical interpolation between two seeds' z (Gaussian noise lives near a sphere)."""
        if not 2 <= frames <= 1000:
            raise SampleError(f"frames must be between 2 and 1000, got {frames}")
        z = noise_for_seeds([seed_a, seed_b], self.config.z_dim, truncation).flatten(1)
        return self.generate(slerp(z[0], z[1], torch.linspace(0, 1, frames)).view(frames, -1, 1, 1))


@torch.no_grad()
def _render(model: nn.Module, z: torch.Tensor, device: torch.device, precision: str, size: int) -> torch.Tensor:
    """z -> images on the CPU, `size` per forward pass (the last chunk padded; see MICRO_BATCH)."""
    outputs = []
    for start in range(0, z.shape[0], size):
        chunk = z[start:start + size]
        count = chunk.shape[0]
        if count < size:
            chunk = torch.cat([chunk, chunk.new_zeros(size - count, *chunk.shape[1:])])
        with _autocast(device, precision):
            images = model(chunk.to(device))
        outputs.append(images[:count].float().cpu())
    return torch.cat(outputs) if outputs else torch.empty(0)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    omega = torch.arccos(torch.clamp(torch.dot(a / a.norm(), b / b.norm()), -1.0, 1.0))
    if omega.abs() < 1e-6:
        return torch.lerp(a, b, t[:, None])
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so)[:, None] * a + (torch.sin(t * omega) / so)[:, None] * b


def grid_image(images: torch.Tensor, nrow: int = 8) -> Image.Image:
    """Images in [-1, 1] (or already to_uint8's pixels) -> one PIL grid via torchvision's make_grid (2-pixel
    padding); the same bytes either way, so a generate job may keep only the uint8 images of its grid."""
    grid = make_grid(_pixels(images), nrow=max(1, nrow), padding=2, pad_value=0)
    # make_grid repeats a single channel three times; keep grayscale grids grayscale (smaller PNGs).
    return _to_pil(grid[:1] if images.shape[1] == 1 else grid)


def image_list(images: torch.Tensor) -> list[Image.Image]:
    """Images in [-1, 1] (or already to_uint8's pixels) -> one PIL image each."""
    return [_to_pil(image) for image in _pixels(images)]


def _pixels(images: torch.Tensor) -> torch.Tensor:
    return images if images.dtype == torch.uint8 else to_uint8(images)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # PIL's PNG encoder is deterministic for equal pixels
    return buffer.getvalue()


def save_png(image: Image.Image, path: Path) -> None:
    data = png_bytes(image)
    atomic_write(Path(path), lambda f: f.write(data))


def gif_bytes(frames: Sequence[Image.Image], duration_ms: int = GIF_FRAME_MS) -> bytes:
    """An animated GIF of the frames, looping: what `dcgan sample --interpolate` writes and the sampling
    routes answer."""
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=list(frames[1:]), duration=duration_ms,
                   loop=0)
    return buffer.getvalue()


def save_gif(frames: Sequence[Image.Image], path: Path, duration_ms: int = GIF_FRAME_MS) -> None:
    data = gif_bytes(frames, duration_ms)
    atomic_write(Path(path), lambda f: f.write(data))


def default_nrow(count: int) -> int:
    return max(1, int(math.ceil(math.sqrt(count))))


def _to_pil(tensor_uint8: torch.Tensor) -> Image.Image:
    array = tensor_uint8.permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        return Image.fromarray(array[:, :, 0], mode="L")
    return Image.fromarray(array, mode="RGB")


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        raise SampleError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    return torch.autocast(device.type, dtype=dtype)


class _Int8Generator(nn.Module):
    """G with its ConvTranspose-BN-ReLU body in int8 and its last ConvTranspose + Tanh kept in fp32."""

    def __init__(self, generator: Generator):
        super().__init__()
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.body, self.head = generator.main[:-2], generator.main[-2:]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.dequant(self.body(self.quant(z))))


def _quantize(model: Generator, device: torch.device, engine: str = "fbgemm") -> nn.Module:
    """Eager static int8 quantization: BN folded into each ConvTranspose, per-tensor weights, packed by fbgemm.

    Dynamic quantization has no ConvTranspose2d mapping in torch 2.14 (it would silently stay fp32) and eager
    mode refuses per-channel ConvTranspose weights on every engine; the output layer stays fp32 because it
    sets the pixel values. Calibration uses fixed seeds, so the quantized model is deterministic.

    Why fbgemm and not torch's default "x86" engine: on a CPU with AVX512-VNNI the x86 engine packs
    ConvTranspose with symmetric weights for oneDNN, and torch 2.14's oneDNN quantized ConvTranspose2d is
    wrong whenever in_channels != out_channels (every layer of G): fed one-hot inputs, each (in, out) 4x4
    kernel lands on the wrong output channel, so a layer's output is uncorrelated with fp32's (-3 dB SQNR,
    alone or in the chain), while 64->64 or 128->128 layers are right (34 dB). A kernel bug, not precision.
    Measured 2026-12-01 on an AVX-512 Xeon (avx512_vnni, amx_int8), bench/sample_latency.py's 64x64 G: SQNR
    of each ConvTranspose+BN block's output against fp32 along the chain (100->512->256->128->64 channels),
    and the images' PSNR against fp32:
      x86 engine (oneDNN kernels), 7-bit activations:  -3.0, -3.3, -3.7, -3.9 dB; 17.3 dB
      fbgemm, 7-bit activations:                        31.0, 28.4, 26.6, 25.3 dB; 44.4 dB
      fbgemm, 8-bit activations (what serves there):    35.5, 32.4, 30.4, 29.0 dB; 47.7 dB
    (a digits G trained 600 steps: 8.9 dB before, 49.2 dB now). Not the cause: reduce_range (x86 with 8-bit
    activations: 17.3 dB), MinMax instead of Histogram observers (17.3), 16 to 1024 calibration seeds (fbgemm:
    44.4-44.5). Activations keep 7 bits on CPUs without VNNI, where fbgemm sums u8 x s8 products in pairs into
    int16, which 8-bit activations can saturate (why torch's x86 qconfig uses reduce_range); with VNNI the sums
    are int32 (all-255 inputs times all-127 weights came out exact to a level here). The packed weights carry
    their kernels, so the model runs the same under whatever engine is set later. The Sampler's quality gate
    still measures every int8 model against fp32 before it serves.
    """
    if device.type != "cpu":
        raise SampleError("int8 quantization runs on the CPU only; use bf16 on a GPU")
    if engine not in torch.backends.quantized.supported_engines:
        raise SampleError(f"int8 needs torch's {engine} quantized engine (x86 CPUs); this torch has "
                          f"{', '.join(torch.backends.quantized.supported_engines)}")
    with warnings.catch_warnings(), _quantized_engine(engine):
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        quantized = _Int8Generator(copy.deepcopy(model).cpu().eval()).eval()
        names = [name for name, _ in quantized.body.named_children()]
        pairs = [[a, b] for a, b in zip(names, names[1:])
                 if isinstance(quantized.body.get_submodule(a), nn.ConvTranspose2d)
                 and isinstance(quantized.body.get_submodule(b), nn.BatchNorm2d)]
        quantized.body = tq.fuse_modules(quantized.body, pairs)
        reduce_range = not getattr(torch.cpu, "_is_vnni_supported", lambda: False)()
        quantized.qconfig = tq.QConfig(activation=tq.HistogramObserver.with_args(reduce_range=reduce_range),
                                       weight=tq.default_weight_observer)
        quantized.head.qconfig = None
        tq.prepare(quantized, inplace=True)
        with torch.no_grad():
            quantized(noise_for_seeds(CALIBRATION_SEEDS, model.z_dim))
        return tq.convert(quantized, inplace=True)


@contextmanager
def _quantized_engine(name: str) -> Iterator[None]:
    """torch's quantized engine (a process-wide setting) switched while a model is quantized and packed."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB of images against reference, both in [-1, 1], compared as the uint8 PNGs users get."""
    error = (to_uint8(images).float() - to_uint8(reference).float()).pow(2).mean().item()
    return float("inf") if error == 0 else 10 * math.log10(255.0**2 / error)
