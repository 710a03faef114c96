"""Deterministic sampling from an exported generator.

Each image depends only on its own seed: z for seed s is drawn from a CPU generator seeded with s (so
it is the same on every device), and G runs in eval mode (BatchNorm uses its running statistics, not the
batch's) in fixed-size micro-batches, so seed 7 gives the same picture alone or inside a batch of 64.

Fast paths (`SamplerOptions`): bf16 autocast, channels_last, torch.compile and static int8 quantization.
Quantization is kept only where it holds quality: `psnr` measures any path against fp32, the
sample_latency benchmark reports it and a test holds int8 to at least 35 dB.
"""

from __future__ import annotations

import copy
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

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


@dataclass(frozen=True)
class SamplerOptions:
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16"
    channels_last: bool = False
    compile: bool = False
    quantize: bool = False  # static int8 on the CPU; see bench/sample_latency.py for its PSNR against fp32
    # Images per forward pass; None = MICRO_BATCH for the device (per-seed exact). Larger is faster on a
    # GPU, but an image may then differ in its last bits with its place in the batch.
    micro_batch: int | None = None


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
    """A loaded generator ready to turn seeds into images."""

    def __init__(self, generator: Generator, config: TrainConfig, device: str | torch.device = "cpu",
                 options: SamplerOptions = SamplerOptions()):
        self.config = config
        self.device = torch.device(device)
        self.options = options
        model = generator.to(self.device).eval().requires_grad_(False)
        if options.quantize:
            model = _quantize(model, self.device)
        if options.channels_last:
            model = model.to(memory_format=torch.channels_last)
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

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, z_dim, 1, 1) -> images (N, C, H, W) float in [-1, 1] on the CPU."""
        outputs = []
        size = self.options.micro_batch or MICRO_BATCH.get(self.device.type, 1)
        for start in range(0, z.shape[0], size):
            chunk = z[start:start + size]
            count = chunk.shape[0]
            if count < size:
                chunk = torch.cat([chunk, chunk.new_zeros(size - count, *chunk.shape[1:])])
            chunk = chunk.to(self.device)
            with _autocast(self.device, self.options.precision):
                images = self.model(chunk)
            outputs.append(images[:count].float().cpu())
        return torch.cat(outputs) if outputs else torch.empty(0)

    def images_for_seeds(self, seeds: Sequence[int], truncation: float = 1.0) -> torch.Tensor:
        return self.generate(noise_for_seeds(seeds, self.config.z_dim, truncation))

    def interpolate(self, seed_a: int, seed_b: int, frames: int = 16, truncation: float = 1.0) -> torch.Tensor:
        """Spherical interpolation between two seeds' z (Gaussian noise lives near a sphere)."""
        if not 2 <= frames <= 1000:
            raise SampleError(f"frames must be between 2 and 1000, got {frames}")
        z = noise_for_seeds([seed_a, seed_b], self.config.z_dim, truncation).flatten(1)
        return self.generate(slerp(z[0], z[1], torch.linspace(0, 1, frames)).view(frames, -1, 1, 1))


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    omega = torch.arccos(torch.clamp(torch.dot(a / a.norm(), b / b.norm()), -1.0, 1.0))
    if omega.abs() < 1e-6:
        return torch.lerp(a, b, t[:, None])
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so)[:, None] * a + (torch.sin(t * omega) / so)[:, None] * b


def grid_image(images: torch.Tensor, nrow: int = 8) -> Image.Image:
    """Images in [-1, 1] -> one PIL grid via torchvision's make_grid (2-pixel padding)."""
    grid = make_grid(to_uint8(images), nrow=max(1, nrow), padding=2, pad_value=0)
    # make_grid repeats a single channel three times; keep grayscale grids grayscale (smaller PNGs).
    return _to_pil(grid[:1] if images.shape[1] == 1 else grid)


def image_list(images: torch.Tensor) -> list[Image.Image]:
    return [_to_pil(image) for image in to_uint8(images)]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # PIL's PNG encoder is deterministic for equal pixels
    return buffer.getvalue()


def save_png(image: Image.Image, path: Path) -> None:
    data = png_bytes(image)
    atomic_write(Path(path), lambda f: f.write(data))


def save_gif(frames: Sequence[Image.Image], path: Path, duration_ms: int = 80) -> None:
    def write(f) -> None:
        frames[0].save(f, format="GIF", save_all=True, append_images=list(frames[1:]), duration=duration_ms,
                       loop=0)

    atomic_write(Path(path), write)


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


def _quantize(model: Generator, device: torch.device) -> nn.Module:
    """Eager static int8 quantization (fbgemm/x86): BN folded into each ConvTranspose, per-tensor weights.

    Dynamic quantization has no ConvTranspose2d mapping in torch 2.14 (it would silently stay fp32) and the
    x86 engine has no per-channel ConvTranspose; the output layer stays fp32 because it sets the pixel
    values. Calibration uses fixed seeds, so the quantized model is deterministic. Measured with
    bench/sample_latency.py against fp32: 44 dB but slower than fp32 on an AVX2-only CPU; 2.8x faster but
    only 17 dB on an AVX-512 CPU, for the benchmark's 64x64 generator (see the README).
    """
    if device.type != "cpu":
        raise SampleError("int8 quantization runs on the CPU only; use bf16 on a GPU")
    if torch.backends.quantized.engine not in ("x86", "fbgemm"):
        raise SampleError(f"int8 needs the x86 or fbgemm quantized engine, not {torch.backends.quantized.engine}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        quantized = _Int8Generator(copy.deepcopy(model).cpu().eval()).eval()
        names = [name for name, _ in quantized.body.named_children()]
        pairs = [[a, b] for a, b in zip(names, names[1:])
                 if isinstance(quantized.body.get_submodule(a), nn.ConvTranspose2d)
                 and isinstance(quantized.body.get_submodule(b), nn.BatchNorm2d)]
        quantized.body = tq.fuse_modules(quantized.body, pairs)
        quantized.qconfig = tq.QConfig(activation=tq.get_default_qconfig("x86").activation,
                                       weight=tq.default_weight_observer)
        quantized.head.qconfig = None
        tq.prepare(quantized, inplace=True)
        with torch.no_grad():
            quantized(noise_for_seeds(range(100_000, 100_256), model.z_dim))
        return tq.convert(quantized, inplace=True)


def psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB of images against reference, both in [-1, 1], compared as the uint8 PNGs users get."""
    error = (to_uint8(images).float() - to_uint8(reference).float()).pow(2).mean().item()
    return float("inf") if error == 0 else 10 * math.log10(255.0**2 / error)
