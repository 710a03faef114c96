"""What a job will cost before it runs: its peak memory and the bytes it stores, from its config alone.

Torch-free, so the API can refuse a job at submission (web.jobs: 422 past DCGAN_MAX_JOB_MEMORY_BYTES or
DCGAN_MAX_JOB_STORAGE_BYTES) and the worker can check the same numbers against its device before it claims a
job (worker.tasks). Every count follows the code that allocates it:

- Parameters and buffers are counted layer by layer exactly as core.gan.models builds G and D (BatchNorm's
  running statistics, spectral norm's `u`/`v` vectors and biases, the minibatch-std channel).
- Training state (core.gan.train.Trainer): fp32 weights of G and D, their gradients (both live at the peak:
  G's from the previous step until its zero_grad), both Adam optimisers' two moments, and the EMA copy of G.
- Activations of one step: what autograd keeps for backward, per image, for G's forward and for D on the
  real and the fake batch at once (the D update holds both graphs and G's). Transients on top of that
  (DiffAugment's copies, gradients flowing back, oneDNN's weight reorders, bf16 copies of the weights under
  autocast) and the allocator's slack are not counted tensor by tensor: they are `ACTIVATION_FACTOR`,
  `AUGMENT_FACTOR` and `WEIGHT_TRANSIENT_FACTOR`, fitted per precision to the peak RSS of real training steps
  (bench/cost_model.py, docs/cost-model-cpu.txt; tests/core/gan/test_cost.py holds them at 0.85-1.35x). They were
  measured on a CPU; on CUDA, bench/cost_model.py --device cuda compares them with max_memory_allocated.
- The training images at the config's size, uint8, resident for the whole run.

Storage: checkpoints as core.gan.checkpoint writes them (weights, EMA, both optimisers, the epoch's order)
times how many are kept (`keep_checkpoints` intermediate ones + the final + the one a resume reads), the
exported generators (final, and best with eval_every), and every sample grid the run renders
(ceil(steps / sample_every) + the final, plus the live grid.png), each at a PNG's upper bound.

An estimate also names the request fields that drive each total (`Estimate.fields`), for the 422's errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .config import TrainConfig
from .seeds import GRID_MAX

# Adam keeps two moments per parameter (exp_avg, exp_avg_sq), fp32.
ADAM_MOMENTS = 2
FP32 = 4
# What autograd keeps for backward, times this, is one step's activation peak (see the module docstring). Under
# bf16 autocast most saved tensors are half as wide, but BatchNorm's statistics and the fp32 logits are not.
# DiffAugment's copies, masks and int64 gather indices cost AUGMENT_FACTOR x 4 bytes per pixel of the batch.
# Weight-sized transients of one step are WEIGHT_TRANSIENT_FACTOR x the fp32 weights of G and D (gradients of
# the autocast copies, oneDNN's reordered weights, the fused optimiser's scratch). Fitted (non-negative least
# squares, relative error) to the peak RSS of two real training steps of 10 configs per precision on the CPU,
# then raised ~7% so that an estimate errs high (docs/cost-model-cpu.txt has the table they give); the weight
# term by 0.3 more: a weight-bound run's peak grows over its first steps (width 192, fp32: 1651 MiB after 2
# steps, 1777 MiB after 20), an activation-bound one's does not (batch 256: 671 MiB after 2, 642 after 8).
# The fp32 activation term by 0.1 more again (1.15 before): activation-bound fp32 rows still measured 0.97x, and
# one row's peak moves by ~5% from run to run (batch 194 at 64x64, grayscale, 2026-12-02: 984-1067 MB over nine
# runs alone, 1094 MB once inside the suite, which took that measurement past the estimate in
# tests/web/test_job_limits.py).
ACTIVATION_FACTOR = {"fp32": 1.25, "bf16": 0.66, "fp16": 0.66}
AUGMENT_FACTOR = {"fp32": 17.5, "bf16": 7.0, "fp16": 7.0}
WEIGHT_TRANSIENT_FACTOR = {"fp32": 1.45, "bf16": 1.35, "fp16": 1.35}
# The trainer's fixed cost beyond its tensors (thread pools, oneDNN's kernels and caches, allocator slack).
RUNTIME_BYTES = 64 * 1024**2
# A dataset whose size is not known (a config alone, no dataset row) is assumed this large: above every
# dataset the platform serves (fashion-mnist's 60,000, an upload's member cap of 20,000).
UNKNOWN_DATASET_IMAGES = 200_000
# The sample grid's layout (core.gan.train.Trainer.write_sample: make_grid with nrow 8 and 2 pixels padding).
GRID_NROW = 8
GRID_PADDING = 2
# Files besides the tensors: zip records and headers of a torch.save, the config and metadata, RNG states.
FILE_OVERHEAD_BYTES = 64 * 1024
# A torch.save record per tensor: its zip entry and 64-byte alignment.
PER_TENSOR_BYTES = 256
# A tar member's header and padding (a generate job's archive of one PNG per seed).
TAR_MEMBER_BYTES = 1024

# Which request fields move which part of an estimate, in the order a user should look at them.
_FIELDS = {
    "weights": ("config.g_channels", "config.d_channels", "config.img_size", "config.z_dim"),
    "gradients": ("config.g_channels", "config.d_channels", "config.img_size", "config.z_dim"),
    "adam": ("config.g_channels", "config.d_channels", "config.img_size", "config.z_dim"),
    "ema": ("config.g_channels", "config.img_size", "config.z_dim", "config.ema"),
    "weight_transients": ("config.g_channels", "config.d_channels", "config.img_size"),
    "activations": ("config.batch_size", "config.img_size", "config.g_channels", "config.d_channels",
                    "config.diffaugment"),
    "dataset": ("dataset", "config.img_size", "config.img_channels"),
    "runtime": (),
    "checkpoints": ("config.checkpoint_every", "config.steps", "config.epochs", "config.g_channels",
                    "config.d_channels"),
    "generators": ("config.g_channels", "config.img_size", "config.eval_every"),
    "grids": ("config.sample_every", "config.steps", "config.epochs", "config.num_samples", "config.img_size"),
    "images": ("seeds",),
    "outputs": ("seeds",),
}
MEMORY_PARTS = ("weights", "gradients", "adam", "ema", "weight_transients", "activations", "dataset", "runtime",
                "generator", "forward", "outputs")
STORAGE_PARTS = ("checkpoints", "generators", "grids", "images")


@dataclass(frozen=True)
class Estimate:
    """A job's estimated peak memory and stored bytes; `parts` says what each term contributes (the memory
    parts are MEMORY_PARTS, the storage parts STORAGE_PARTS)."""

    memory_bytes: int
    storage_bytes: int
    parts: dict[str, int] = field(default_factory=dict)
    # Fields that always matter to a total, whatever its parts (a cadence, the run's length).
    pinned: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    # Fields this request does not use (a run given as steps has no epochs to lower).
    omit: tuple[str, ...] = field(default=(), repr=False)

    def fields(self, total: str) -> list[str]:
        """The request fields that drive `total` ("memory" or "storage"), biggest part first: what to lower."""
        names = MEMORY_PARTS if total == "memory" else STORAGE_PARTS
        ranked = sorted((name for name in names if self.parts.get(name)), key=lambda name: -self.parts[name])
        found = list(self.pinned.get(total, ()))
        whole = self.memory_bytes if total == "memory" else self.storage_bytes
        for name in ranked:
            if self.parts[name] * 10 >= whole or not found:  # parts of a tenth or more, and the biggest
                found += [f for f in _FIELDS.get(name, ()) if f not in found and f not in self.omit]
        return found

    def totals(self) -> dict[str, int]:
        """The two totals: what a job row keeps and its JSON shows as `estimate`."""
        return {"memory_bytes": self.memory_bytes, "storage_bytes": self.storage_bytes}

    def to_dict(self) -> dict[str, object]:
        """The totals and every part: what a refusal shows."""
        return {**self.totals(), "parts": dict(self.parts)}


# ----- the networks, counted as core.gan.models builds them -----

@dataclass(frozen=True)
class NetCount:
    params: int  # trainable, fp32
    buffers: int  # float buffers (BatchNorm statistics, spectral norm's u and v), fp32
    int_buffers: int  # int64 buffers (BatchNorm's num_batches_tracked)
    tensors: int  # state-dict entries
    saved: int  # elements autograd keeps per image for one forward with grad (fp32 units)
    widest: int  # elements of the largest layer output per image (a forward without grad holds two of these)
    per_forward: int = 0  # elements a forward with grad keeps whatever the batch (spectral norm's W / sigma)


def generator_count(config: TrainConfig) -> NetCount:
    blocks = config.num_blocks
    width = config.g_channels * 2 ** (blocks - 1)
    params = config.z_dim * width * 16  # z -> width x 4 x 4
    bn_channels, saved, widest, size, tensors = width, 2 * width * 16, width * 16, 4, 1
    for _ in range(blocks - 1):
        params += width * (width // 2) * 16
        width, size = width // 2, size * 2
        bn_channels += width
        saved += 2 * width * size * size  # conv output (BatchNorm keeps it) and BN output (ReLU, next conv)
        widest = max(widest, width * size * size)
        tensors += 1
    params += width * config.img_channels * 16 + 2 * bn_channels  # last conv; BatchNorm's weight and bias
    image = config.img_channels * config.img_size ** 2
    saved += image  # Tanh keeps its output
    return NetCount(params, 2 * bn_channels, blocks, tensors + 1 + 5 * blocks, saved, max(widest, image))


def discriminator_count(config: TrainConfig) -> NetCount:
    sn = config.spectral_norm
    blocks = config.num_blocks
    width, size = config.d_channels, config.img_size // 2
    image = config.img_channels * config.img_size ** 2
    convs = [(config.img_channels, width, False)]  # (in, out, bias)
    saved = image + width * size * size  # conv 1's input, its LeakyReLU output (the next conv's input)
    widest = width * size * size
    bn_channels = 0
    for _ in range(blocks - 1):
        convs.append((width, width * 2, sn))
        width, size = width * 2, size // 2
        if not sn:
            bn_channels += width
        # Conv output and BN output (the next conv's input); with spectral norm there is no BN, but the
        # measured peak is the same: backward's gradient of the conv output takes the place of the BN output.
        saved += 2 * width * size * size
        widest = max(widest, width * size * size)
    if config.minibatch_std:
        saved += (width + 1) * 16  # the concatenated input of the last conv
        width += 1
    convs.append((width, 1, False))
    params = sum(cin * cout * 16 + (cout if bias else 0) for cin, cout, bias in convs) + 2 * bn_channels
    buffers = 2 * bn_channels + (sum(cout + cin * 16 for cin, cout, _ in convs) if sn else 0)  # u, v
    per_forward = sum(cin * cout * 16 for cin, cout, _ in convs) if sn else 0  # W / sigma, each forward
    bn_layers = 0 if sn else blocks - 1
    tensors = len(convs) * (3 if sn else 1) + sum(1 for c in convs if c[2]) + 5 * bn_layers
    return NetCount(params, buffers, bn_layers, tensors, saved, max(widest, image), per_forward)


# ----- training -----

def steps_of(config: TrainConfig, num_images: int | None) -> int:
    """The run's total steps, core.gan.train.total_steps_for's rule (an unknown dataset: the largest)."""
    if config.steps is not None:
        return config.steps
    images = num_images if num_images else UNKNOWN_DATASET_IMAGES
    return (config.epochs or 1) * max(1, images // min(config.batch_size, images))


def _precisions(precision: str | None, config: TrainConfig) -> tuple[str, ...]:
    """The precisions a step may run in: the one a worker resolved, or every one `auto` may become."""
    if precision is not None:
        return (precision,)
    return ("fp32", "bf16") if config.precision == "auto" else (config.precision,)


def estimate_train(config: TrainConfig, *, num_images: int | None = None, keep_checkpoints: int | None = 3,
                   precision: str | None = None) -> Estimate:
    """A training job's peak memory and storage. `num_images`: the dataset's size (None: UNKNOWN_DATASET_IMAGES,
    an upper bound). `keep_checkpoints`: intermediate checkpoints kept (None: all of them). `precision`: the one
    the worker resolved (None: the most any worker may need, since `auto` is bf16 on some CPUs, fp32 elsewhere)."""
    g, d = generator_count(config), discriminator_count(config)
    images = num_images if num_images else UNKNOWN_DATASET_IMAGES
    batch = min(config.batch_size, images)
    weights = FP32 * (g.params + g.buffers + d.params + d.buffers) + 8 * (g.int_buffers + d.int_buffers)
    trainable = FP32 * (g.params + d.params)
    ema = FP32 * (g.params + g.buffers) if config.ema > 0 else 0
    # The D update holds G's graph and D's on the real and the fake batch; spectral norm adds W / sigma per forward.
    saved = FP32 * (batch * (g.saved + 2 * d.saved) + 3 * d.per_forward)
    precisions = _precisions(precision, config)
    pixels = FP32 * batch * config.img_size ** 2 if config.aug_policies else 0
    activations = max(int(saved * ACTIVATION_FACTOR[p] + pixels * AUGMENT_FACTOR[p]) for p in precisions)
    transients = max(int(trainable * WEIGHT_TRANSIENT_FACTOR[p]) for p in precisions)
    parts = {"weights": weights, "gradients": trainable, "adam": ADAM_MOMENTS * trainable, "ema": ema,
             "weight_transients": transients, "activations": activations,
             "dataset": images * config.img_channels * config.img_size ** 2, "runtime": RUNTIME_BYTES}
    memory = sum(parts.values())

    steps = steps_of(config, num_images)
    parts.update(_train_storage(config, g, d, steps, images, keep_checkpoints))
    storage = sum(parts[name] for name in STORAGE_PARTS if name in parts)
    length, unused = ("config.steps", "config.epochs") if config.steps is not None else \
        ("config.epochs", "config.steps")
    pinned = {"storage": (length, "config.sample_every", "config.checkpoint_every")}
    return Estimate(memory, storage, parts, pinned, (unused,))


def checkpoint_bytes(config: TrainConfig, num_images: int | None = None) -> int:
    """A full-state checkpoint's size (core.gan.train.Trainer.state_dict through torch.save)."""
    g, d = generator_count(config), discriminator_count(config)
    return _checkpoint_bytes(config, g, d, num_images if num_images else UNKNOWN_DATASET_IMAGES)


def _checkpoint_bytes(config: TrainConfig, g: NetCount, d: NetCount, images: int) -> int:
    nets = FP32 * (g.params + g.buffers + d.params + d.buffers) + 8 * (g.int_buffers + d.int_buffers)
    ema = FP32 * (g.params + g.buffers) + 8 * g.int_buffers if config.ema > 0 else 0
    adam = ADAM_MOMENTS * FP32 * (g.params + d.params)
    tensors = g.tensors * (2 if config.ema > 0 else 1) + d.tensors + 3 * (g.tensors + d.tensors)
    return nets + ema + adam + 8 * images + PER_TENSOR_BYTES * tensors + FILE_OVERHEAD_BYTES


def generator_bytes(config: TrainConfig) -> int:
    """An exported generator's size (safetensors: fp32 weights and buffers, the config in its header)."""
    g = generator_count(config)
    return FP32 * (g.params + g.buffers) + 8 * g.int_buffers + PER_TENSOR_BYTES * g.tensors + FILE_OVERHEAD_BYTES


def png_bound(width: int, height: int, channels: int) -> int:
    """The most bytes a PNG of these pixels can take: every row stored uncompressed (deflate's stored blocks
    add 5 bytes per 64 KiB), a filter byte per row, and the chunks' headers."""
    raw = height * (width * channels + 1)
    return raw + 5 * (raw // 65535 + 1) + 12 * (raw // 8192 + 1) + 1024


def grid_png_bound(count: int, img_size: int, img_channels: int, nrow: int = GRID_NROW) -> int:
    """A sample grid's PNG bound (core.gan.sample.grid_image: make_grid's layout, grayscale kept grayscale)."""
    columns = max(1, min(nrow, count))
    rows = math.ceil(count / columns)
    cell = img_size + GRID_PADDING
    return png_bound(columns * cell + GRID_PADDING, rows * cell + GRID_PADDING, 1 if img_channels == 1 else 3)


def _train_storage(config: TrainConfig, g: NetCount, d: NetCount, steps: int, images: int,
                   keep_checkpoints: int | None) -> dict[str, int]:
    # The loop writes one every checkpoint_every steps short of the end, and always a final one.
    intermediate = (steps - 1) // config.checkpoint_every if config.checkpoint_every else 0
    if keep_checkpoints is not None:
        # The last N, plus the one a resume is reading while newer ones land (deleted once it is older).
        intermediate = min(intermediate, keep_checkpoints + 1)
    checkpoints = (intermediate + 1) * _checkpoint_bytes(config, g, d, images)
    generators = generator_bytes(config) * (2 if config.eval_every else 1)
    # Grids every sample_every steps short of the end, the final one, and the live grid.png beside them.
    grids = ((steps - 1) // config.sample_every if config.sample_every else 0) + 2
    grid = grid_png_bound(config.num_samples, config.img_size, config.img_channels)
    return {"checkpoints": checkpoints, "generators": generators, "grids": grids * grid}


# ----- generation -----

def estimate_generate(config: TrainConfig, seed_count: int, chunk: int, *, micro_batch: int = 16,
                      grid_max: int = GRID_MAX, source: str = "generator") -> Estimate:
    """A generate job's peak memory and storage: the generator, one forward pass of `micro_batch` images
    without grad, one chunk of `chunk` images as float32 and uint8, and the grid of its first
    min(seed_count, grid_max) images as uint8; stored: the grid's PNG and, past grid_max, a tar of one PNG
    per seed (both at their upper bounds). `source`: the request field that named the generator."""
    g = generator_count(config)
    image = config.img_channels * config.img_size ** 2
    shown = min(seed_count, grid_max)
    weights = FP32 * (g.params + g.buffers) + 8 * g.int_buffers
    forward = FP32 * micro_batch * 2 * g.widest  # a layer's input and output at once
    outputs = min(seed_count, chunk) * image * (FP32 + 1) + shown * image
    parts = {"generator": weights, "forward": forward, "outputs": outputs, "runtime": RUNTIME_BYTES}
    grid = grid_png_bound(shown, config.img_size, config.img_channels)
    archive = seed_count * (png_bound(config.img_size, config.img_size, config.img_channels) + TAR_MEMBER_BYTES) \
        if seed_count > grid_max else 0
    parts.update({"grids": grid, "images": archive})
    memory = sum(parts[name] for name in MEMORY_PARTS if name in parts)
    return Estimate(memory, grid + archive, parts, {"memory": (source,), "storage": ("seeds",)})


def human_bytes(count: int) -> str:
    """1536 -> "1.5 KiB": sizes as a person reads them in an error message."""
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
