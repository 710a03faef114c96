"""The DCGAN training loop with full-state resume.

Per step: one D update on a real and a fake batch, then one non-saturating G update (Goodfellow et al.,
2014, section 3; the DCGAN paper's recipe). Unlike the seed article's loop, D's gradients are zeroed before
each D update (the seed never zeroes them, so they pile up across steps), D's parameters are frozen during
the G update (their gradients would be thrown away), and D ends in a logit (BCE with logits).

The loop talks to its host only through arguments and callbacks, as stylegan2-ada-pytorch's
training_loop does: `on_progress(Progress)`, `should_stop() -> bool` (checked every step; a stop writes a
final checkpoint and returns normally), `on_checkpoint(path, step)`, `on_sample(path, step)` and
`on_best(path, best)`. With `eval_every` the EMA generator is scored every that many steps and at the end
(core.gan.evaluation); the scores ride on that step's Progress, and a new lowest FID exports the generator
as `best-generator.safetensors` and calls `on_best`.

Resume is exact: a checkpoint holds every piece of state the next step reads (weights, EMA, optimisers,
scaler, the epoch's order and position, every RNG), so on the same device 10 steps + resume + 10 steps give
bit-identical weights to 20 uninterrupted steps.

On CUDA (config cuda_graphs) the whole step is captured once as a CUDA graph after a few eager steps and
replayed (core.gan.step_graph); the step's random numbers are drawn eagerly first, in the same order either
way, so a graphed and an eager run compute the same and resume from each other's checkpoints.
`Trainer.step_mode` says which runs, and why not a graph where it is not.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .augment import apply as apply_augment
from .checkpoint import (CheckpointError, export_generator, load_module_state, load_training_state,
                         save_training_state)
from .config import LOG_EVERY_STEPS, ConfigError, TrainConfig
from .data import ImageSet, to_model_range
from .evaluation import Scores, TrainingEvaluator
from .models import (GLOBAL_RNG_LOCK, ExponentialMovingAverage, build_discriminator, build_generator,
                     init_dcgan_weights)
from .sample import grid_image, noise_for_seeds, save_png
from .step_graph import GRAPHED, STAT_NAMES, GraphedStep, StepInputs, choose_step_mode, job_stream

# Datasets up to this size live on the training device for the whole run; larger ones are indexed on the
# CPU and each batch is copied over.
DEVICE_RESIDENT_BYTES = 2 * 1024**3
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    step: int
    total_steps: int
    epoch: int
    loss_d: float
    loss_g: float
    d_real: float  # mean D(x): D's probability that real images are real
    d_fake: float  # mean D(G(z)) during the D update
    images_per_second: float
    eta_seconds: float
    elapsed_seconds: float
    # Set on an evaluated step (eval_every): FID and KID of the EMA generator, and the run's best so far.
    fid: float | None = None
    kid: float | None = None
    eval_seconds: float | None = None
    best: dict[str, Any] | None = None
    # How the step runs: "cuda-graph", or "eager (<why not>)" (Trainer.step_mode), shown with the job's progress.
    step_mode: str | None = None

    @property
    def percent(self) -> float:
        return 100.0 * self.step / self.total_steps

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if v is not None}, "percent": round(self.percent, 2)}


@dataclass(frozen=True)
class TrainResult:
    step: int
    total_steps: int
    stopped: bool  # True when should_stop() ended the run early
    generator_path: Path
    checkpoint_path: Path
    grid_path: Path
    best: dict[str, Any] | None = None  # {"step", "fid", "kid"} of the best evaluated generator, if any
    final_scores: dict[str, Any] | None = None  # the scores of the final step, when it was evaluated


@dataclass
class Callbacks:
    on_progress: Callable[[Progress], None] | None = None
    should_stop: Callable[[], bool] | None = None
    on_checkpoint: Callable[[Path, int], None] | None = None
    on_sample: Callable[[Path, int], None] | None = None
    on_best: Callable[[Path, dict[str, Any]], None] | None = None


@dataclass
class RunPaths:
    """Where a run writes; the layout users and the worker rely on."""

    root: Path
    checkpoints: Path = field(init=False)
    samples: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.checkpoints = self.root / "checkpoints"
        self.samples = self.root / "samples"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:07d}.pt"

    def sample(self, step: int) -> Path:
        return self.samples / f"step-{step:07d}.png"

    @property
    def generator(self) -> Path:
        return self.root / "generator.safetensors"

    @property
    def grid(self) -> Path:
        return self.root / "grid.png"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def best_generator(self) -> Path:
        return self.root / "best-generator.safetensors"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> what measured fastest (bench/train_throughput.py, README's Performance section).

    CPU: bf16 only where the hardware computes it natively (emulated bf16 on an AVX2 CPU was ~30x slower
    than fp32). CUDA: fp32 (cuDNN convs run on TF32 tensor cores): at the default 64x64 / batch 64 a step is
    bound by kernel launches, and bf16 autocast's extra cast kernels made it 10% slower on an H100.
    """
    if precision != "auto":
        return precision
    if device.type == "cpu" and _cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def _cpu_has_native_bf16() -> bool:
    # mkldnn's own "bf16 supported" only asks for AVX-512, where bf16 is emulated (30x slower per step than
    # fp32 on the machines we measured); native means AVX512-BF16 or AMX tiles.
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check is not None and check() for check in checks)


def total_steps_for(config: TrainConfig, num_images: int) -> int:
    if config.steps is not None:
        return config.steps
    return config.epochs * steps_per_epoch(config, num_images)


def steps_per_epoch(config: TrainConfig, num_images: int) -> int:
    return max(1, num_images // min(config.batch_size, num_images))


class Trainer:
    """One run: models, optimisers and the data cursor, built fresh or from a checkpoint."""

    def __init__(self, config: TrainConfig, data: ImageSet, out_dir: Path, device: str | torch.device = "auto",
                 cache_dir: Path | None = None):
        if len(data) == 0:
            raise ConfigError("dataset", "has no images")
        if tuple(data.images.shape[1:]) != (config.img_channels, config.img_size, config.img_size):
            raise ConfigError("dataset", f"images are {tuple(data.images.shape[1:])}, config needs "
                                         f"{(config.img_channels, config.img_size, config.img_size)}")
        self.config = config
        self.data = data
        self.paths = RunPaths(out_dir)
        self.device = resolve_device(device)
        self.precision = resolve_precision(config.precision, self.device)
        self.batch_size = min(config.batch_size, len(data))
        self.total_steps = total_steps_for(config, len(data))
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format

        # Weights are drawn from the run's seed without touching the process-wide RNG.
        with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.G = build_generator(config)
            self.D = build_discriminator(config)
            self.G.apply(init_dcgan_weights)
            self.D.apply(init_dcgan_weights)
        self.G.to(self.device, memory_format=self.memory_format)
        self.D.to(self.device, memory_format=self.memory_format)
        self.ema = ExponentialMovingAverage(self.G, config.ema) if config.ema > 0 else None
        fused = self.device.type in ("cuda", "cpu")
        betas = (config.beta1, config.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=config.lr, betas=betas, fused=fused)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=config.lr_d or config.lr, betas=betas, fused=fused)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.G_step = torch.compile(self.G) if config.compile else self.G
        self.D_step = torch.compile(self.D) if config.compile else self.D

        # All randomness of the loop: one generator for the data order (CPU), one for noise + augmentation.
        self.data_rng = torch.Generator().manual_seed(config.seed)
        self.noise_rng = torch.Generator(self.device).manual_seed(config.seed + 1)
        resident = data.images.numel() <= DEVICE_RESIDENT_BYTES
        self.images = data.images.to(self.device) if resident else data.images
        self.step = 0
        self.epoch = 0
        self.position = 0
        self.order = torch.randperm(len(data), generator=self.data_rng)
        self._order_copy: tuple[torch.Tensor, torch.Tensor] | None = None  # (self.order, its copy on a device)
        self.fixed_noise = noise_for_seeds(range(config.num_samples), config.z_dim)
        self.evaluator = TrainingEvaluator(config, data, self.device, cache_dir) if config.eval_every else None
        # The step reads fixed buffers (core.gan.step_graph), graphed on CUDA or run eagerly: same numbers.
        self.inputs = StepInputs.allocate(config, self.batch_size, self.device, self.memory_format, self.noise_rng)
        self._graphed: GraphedStep | None = None
        self._reset_step_graph(choose_step_mode(config, self.device, self.precision))
        log.info("training step: %s", self.step_mode)

    def _reset_step_graph(self, mode: str) -> None:
        """A new graph (captured after a warm-up) when `mode` is GRAPHED: needed after anything replaces the
        tensors a captured graph reads, as loading optimiser state does."""
        self._mode = mode
        self._graphed = GraphedStep(self._compute_step, self.device, self._prepare_capture) if mode == GRAPHED \
            else None

    @property
    def step_mode(self) -> str:
        """"cuda-graph", or "eager (<why>)": how train_step runs (the warm-up steps of a graphed run are eager)."""
        return self._graphed.mode if self._graphed is not None else self._mode

    def _prepare_capture(self, capturing: bool) -> None:
        # Grads unset, so the captured backward allocates them in the graph's pool and replays overwrite them.
        self.opt_d.zero_grad(set_to_none=True)
        self.opt_g.zero_grad(set_to_none=True)
        self.D.requires_grad_(True)  # a failed capture may have stopped inside the G update
        for group in self.opt_d.param_groups + self.opt_g.param_groups:
            group["capturable"] = capturing

    # ----- state -----
    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "dataset": self.data.name,
            "dataset_hash": self.data.source_hash,
            "step": self.step, "epoch": self.epoch, "position": self.position, "order": self.order,
            "G": self.G.state_dict(), "D": self.D.state_dict(),
            "G_ema": self.ema.model.state_dict() if self.ema else None,
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {"data": self.data_rng.get_state(), "noise": self.noise_rng.get_state()},
            "device_type": self.device.type,
            "best": self.evaluator.best if self.evaluator is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any], source: str) -> None:
        load_module_state(self.G, state["G"], f"{source}: generator")
        load_module_state(self.D, state["D"], f"{source}: discriminator")
        if self.ema is not None:
            if state.get("G_ema") is None:
                raise CheckpointError(f"{source}: has no EMA generator but the config enables ema")
            load_module_state(self.ema.model, state["G_ema"], f"{source}: EMA generator")
        try:
            self.opt_g.load_state_dict(state["opt_g"])
            self.opt_d.load_state_dict(state["opt_d"])
            for group in self.opt_g.param_groups + self.opt_d.param_groups:
                group["capturable"] = False  # a graphed run's flag; set again when this run captures its step
            self.scaler.load_state_dict(state["scaler"])
            self.data_rng.set_state(state["rng"]["data"])
            if state.get("device_type") == self.device.type:
                self.noise_rng.set_state(state["rng"]["noise"])
        except (KeyError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{source}: optimiser or RNG state does not fit ({exc})") from None
        self.step, self.epoch, self.position = int(state["step"]), int(state["epoch"]), int(state["position"])
        self._reset_step_graph(self._mode)  # new optimiser state tensors: a captured graph would miss them
        if self.evaluator is not None and state.get("best") is not None:
            self.evaluator.best = dict(state["best"])
        self.order = state["order"]
        if self.order.shape != (len(self.data),):
            raise CheckpointError(f"{source}: was trained on {self.order.shape[0]} images, this dataset has "
                                  f"{len(self.data)}")

    def save_checkpoint(self) -> Path:
        path = self.paths.checkpoint(self.step)
        save_training_state(path, self.state_dict())
        return path

    # ----- one step -----
    def _next_batch(self) -> torch.Tensor:
        if self.position + self.batch_size > len(self.data):
            self.epoch += 1
            self.position = 0
            self.order = torch.randperm(len(self.data), generator=self.data_rng)
        index = self._order_on(self.images.device)[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        batch = self.images[index].to(self.device, non_blocking=True)
        return to_model_range(batch).contiguous(memory_format=self.memory_format)

    def _order_on(self, device: torch.device) -> torch.Tensor:
        """The epoch's order on `device`, copied once per epoch: a copy per step from pageable host memory
        would make the host wait for the GPU every step, and it could not queue the next step meanwhile."""
        cached = self._order_copy
        if cached is None or cached[0] is not self.order:
            self._order_copy = cached = (self.order, self.order.to(device))
        return cached[1]

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        # No cast cache under a CUDA graph: cached casts would outlive the capture that made them.
        return torch.autocast(self.device.type, dtype=dtype, cache_enabled=self._graphed is None)

    def _augment(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        policies = self.config.aug_policies
        return apply_augment(x, policies, params) if policies else x

    def train_step(self) -> dict[str, torch.Tensor]:
        """One step. Its randomness is drawn here, eagerly, into self.inputs (z, then the augmentations of
        D(real), D(fake) and G's D(fake)); `_compute_step` reads only those buffers, so it can be a replayed
        CUDA graph."""
        self.inputs.fill(self._next_batch(), self.config.aug_policies, self.noise_rng,
                         self.ema.weight(self.step + 1) if self.ema is not None else None)
        stats = self._graphed() if self._graphed is not None else self._compute_step()
        self.step += 1
        return dict(zip(STAT_NAMES, stats.unbind(0)))

    def _compute_step(self) -> torch.Tensor:
        """The D update, the G update and the EMA on self.inputs; STAT_NAMES as one tensor."""
        inputs, hinge = self.inputs, self.config.loss == "hinge"
        augments = inputs.augments or [{}] * 3

        # D: real -> 1, fake -> 0 (bce) or margins (hinge). G's graph is cut: only D learns here.
        self.opt_d.zero_grad(set_to_none=True)
        with self._autocast():
            fake = self.G_step(inputs.z)
            logits_real = self.D_step(self._augment(inputs.real, augments[0])).float()
            logits_fake = self.D_step(self._augment(fake.detach(), augments[1])).float()
            if hinge:
                loss_d = F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean()
            else:  # -log sigmoid(x) = softplus(-x): BCE with logits, written out
                loss_d = F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()
        self.scaler.scale(loss_d).backward()
        self.scaler.step(self.opt_d)

        # G: the non-saturating loss -log D(G(z)); D is frozen so no work goes into its gradients.
        self.D.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        with self._autocast():
            logits_gen = self.D_step(self._augment(fake, augments[2])).float()
            loss_g = -logits_gen.mean() if hinge else F.softplus(-logits_gen).mean()
        self.scaler.scale(loss_g).backward()
        self.scaler.step(self.opt_g)
        self.scaler.update()
        self.D.requires_grad_(True)

        if self.ema is not None:
            self.ema.apply(self.G, inputs.ema_weight)
        return torch.stack([loss_d.detach(), loss_g.detach(), torch.sigmoid(logits_real.detach()).mean(),
                            torch.sigmoid(logits_fake.detach()).mean()])

    # ----- outputs -----
    @property
    def sampling_generator(self) -> torch.nn.Module:
        return self.ema.model if self.ema is not None else self.G

    @torch.no_grad()
    def render_grid(self) -> torch.Tensor:
        model = self.sampling_generator
        was_training = model.training
        model.eval()
        images = model(self.fixed_noise.to(self.device).contiguous(memory_format=self.memory_format))
        model.train(was_training)
        return images.float().cpu()

    def write_sample(self) -> Path:
        image = grid_image(self.render_grid(), nrow=8)
        path = self.paths.sample(self.step)
        save_png(image, path)
        save_png(image, self.paths.grid)
        return path

    def export(self, path: Path | None = None) -> Path:
        path = path or self.paths.generator
        export_generator(path, self.sampling_generator, self.config,
                         {"step": str(self.step), "dataset": self.data.name})
        return path


def train(config: TrainConfig, data: ImageSet, out_dir: Path, *, device: str | torch.device = "auto",
          resume_from: Path | None = None, callbacks: Callbacks | None = None,
          progress_every: int = LOG_EVERY_STEPS, cache_dir: Path | None = None,
          best: dict[str, Any] | None = None) -> TrainResult:
    """Train (or continue) a run in out_dir. With resume_from, config.steps/epochs set the new total.

    `cache_dir` keeps the real-image statistics evaluation needs; `best` ({"step", "fid", "kid"}) is the best
    evaluated generator the host already keeps for this run (a job row), used instead of the checkpoint's."""
    callbacks = callbacks or Callbacks()
    if resume_from is not None:
        state = load_training_state(Path(resume_from))
        saved: TrainConfig = state["config"]
        config = saved.replace(steps=config.steps, epochs=config.epochs) if (config.steps or config.epochs) \
            else saved
        trainer = Trainer(config, data, out_dir, device, cache_dir)
        if state.get("dataset_hash") not in (None, data.source_hash):
            raise CheckpointError(f"{resume_from}: was trained on other data ({state.get('dataset')})")
        trainer.load_state_dict(state, str(resume_from))
    else:
        trainer = Trainer(config, data, out_dir, device, cache_dir)
    if best is not None and trainer.evaluator is not None:
        trainer.evaluator.best = dict(best)
    with job_stream(trainer.device):
        return run(trainer, callbacks, progress_every)


def run(trainer: Trainer, callbacks: Callbacks, progress_every: int = LOG_EVERY_STEPS) -> TrainResult:
    config = trainer.config
    total = trainer.total_steps
    if trainer.step > total:
        raise ConfigError("steps", f"the checkpoint is already at step {trainer.step}, past the total {total}")
    trainer.paths.root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    window_step, window_time = trainer.step, started
    stopped = False
    stats: dict[str, Any] | None = None  # the newest step's losses, not yet reported while unreported
    final_scores: dict[str, Any] | None = None
    evaluator = trainer.evaluator

    def evaluate_now() -> Scores:
        scores = evaluator.score(trainer.sampling_generator, trainer.step)
        if evaluator.improves(scores):
            path = trainer.export(trainer.paths.best_generator)
            if callbacks.on_best is not None:
                callbacks.on_best(path, dict(evaluator.best))
        return scores

    def report(stats: dict[str, Any], scores: Scores | None = None) -> None:
        nonlocal window_step, window_time
        step, now = trainer.step, time.perf_counter()
        values = {k: float(v) for k, v in stats.items()}
        if not all(math.isfinite(v) for v in values.values()):
            raise FloatingPointError(f"non-finite loss at step {step}: {values}")
        rate = (step - window_step) * trainer.batch_size / max(now - window_time, 1e-9)
        window_step, window_time = step, now
        evaluated = {} if scores is None else dict(fid=scores.fid, kid=scores.kid, eval_seconds=scores.seconds,
                                                   best=dict(evaluator.best))
        progress = Progress(step, total, trainer.epoch, values["loss_d"], values["loss_g"], values["d_real"],
                            values["d_fake"], rate, (total - step) * trainer.batch_size / max(rate, 1e-9),
                            now - started, **evaluated, step_mode=trainer.step_mode)
        metrics.write(json.dumps(progress.to_dict()) + "\n")
        metrics.flush()
        if callbacks.on_progress is not None:
            callbacks.on_progress(progress)

    with trainer.paths.metrics.open("a") as metrics:
        while trainer.step < total:
            if callbacks.should_stop is not None and callbacks.should_stop():
                stopped = True
                if stats is not None:  # a stop between reports: report the step it stopped at
                    report(stats)
                break
            stats = trainer.train_step()
            step = trainer.step
            scores = evaluate_now() if evaluator is not None and evaluator.due(step, total) else None
            if scores is not None and step == total:
                final_scores = scores.to_dict()
            if step % progress_every == 0 or step == total or scores is not None:
                report(stats, scores)
                stats = None
            if config.sample_every and step % config.sample_every == 0 and step != total:
                path = trainer.write_sample()
                if callbacks.on_sample is not None:
                    callbacks.on_sample(path, step)
            if config.checkpoint_every and step % config.checkpoint_every == 0 and step != total:
                checkpoint_path = trainer.save_checkpoint()
                if callbacks.on_checkpoint is not None:
                    callbacks.on_checkpoint(checkpoint_path, step)
    # The end (or a stop): a final grid, checkpoint and exported generator.
    grid_sample = trainer.write_sample()
    if callbacks.on_sample is not None:
        callbacks.on_sample(grid_sample, trainer.step)
    checkpoint_path = trainer.save_checkpoint()
    if callbacks.on_checkpoint is not None:
        callbacks.on_checkpoint(checkpoint_path, trainer.step)
    generator_path = trainer.export()
    return TrainResult(trainer.step, total, stopped, generator_path, checkpoint_path, trainer.paths.grid,
                       best=dict(evaluator.best) if evaluator is not None and evaluator.best else None,
                       final_scores=final_scores)
