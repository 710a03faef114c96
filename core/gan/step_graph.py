"""The train step's fixed inputs, and its capture as one CUDA graph that is replayed every step.

A 64x64 batch-64 DCGAN step is a few hundred small kernels; on a GPU the time goes into launching them, not
into the math. `torch.cuda.graph` records the whole step -- the D update, the G update, both fused Adam steps,
the EMA of G, DiffAugment -- once, and each later step is one `replay()` (PyTorch's "whole network capture",
https://pytorch.org/docs/stable/notes/cuda.html#whole-network-capture). Hand capture rather than
torch.compile(mode="reduce-overhead"): compile cannot graph the optimiser steps and the EMA together with
the two updates without graph breaks, and pays minutes of compilation per job.

What the graph may not do, and how the step avoids it:
- Randomness: every random number of a step (z, the augmentation parameters) is drawn eagerly from the
  trainer's own generators into `StepInputs`' buffers before the replay, in the order the eager step draws
  them, so the RNG streams (and with them exact resume) are the same with and without graphs.
- Host values: the real batch is copied into a fixed buffer; the EMA's decay, which changes with the step,
  is a 0-dim tensor filled before each replay; the step's losses come out in one fixed tensor.
- The optimisers' `capturable` flag is set on their param groups just before capture (fused Adam keeps its
  `step` on the device either way, so checkpoints load across eager and graphed runs, and on a CPU).

The first CUDA_GRAPH_WARMUP_STEPS steps run eagerly on a side stream (cuDNN/cuBLAS set-up, Adam's lazily
made state), as PyTorch's notes ask. Only one capture may be underway in a process, so captures of jobs
sharing a worker process take a lock. A capture that fails falls back to the eager step and says why.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from .augment import draw_params
from .config import TrainConfig

log = logging.getLogger(__name__)

CUDA_GRAPH_WARMUP_STEPS = 3
GRAPHED = "cuda-graph"
# What the step returns, in this order, as one tensor.
STAT_NAMES = ("loss_d", "loss_g", "d_real", "d_fake")
_CAPTURE_LOCK = threading.Lock()


def choose_step_mode(config: TrainConfig, device: torch.device, precision: str) -> str:
    """GRAPHED, or "eager (<why not graphed>)" -- what the run's logs and progress show."""
    if not config.cuda_graphs:
        return "eager (cuda_graphs is off)"
    if device.type != "cuda":
        return "eager (cuda_graphs needs a CUDA device)"
    if precision == "fp16":
        return "eager (fp16's grad scaler decides on the host whether to skip a step; use bf16 or fp32)"
    if config.compile:
        return "eager (cuda_graphs is not combined with compile=True)"
    return GRAPHED


@dataclass
class StepInputs:
    """Everything a step reads that is not a weight or an optimiser state: fixed tensors, refilled each step."""

    real: torch.Tensor  # the real batch, in the model's range and memory format
    z: torch.Tensor  # G's noise
    augments: list[dict[str, torch.Tensor]] = field(default_factory=list)  # for D(real), D(fake), G's D(fake)
    ema_weight: torch.Tensor | None = None  # 1 - decay_t of this step's EMA update

    @classmethod
    def allocate(cls, config: TrainConfig, batch_size: int, device: torch.device,
                 memory_format: torch.memory_format, noise: torch.Generator) -> "StepInputs":
        shape = (batch_size, config.img_channels, config.img_size, config.img_size)
        real = torch.empty(shape, device=device).contiguous(memory_format=memory_format)
        z = torch.empty(batch_size, config.z_dim, 1, 1, device=noise.device)
        # Drawn from a throwaway generator only to get each parameter's shape and dtype.
        scratch = torch.Generator(noise.device)
        augments = [draw_params(config.aug_policies, shape, scratch) for _ in range(3)] if config.aug_policies \
            else []
        ema_weight = torch.zeros((), device=device) if config.ema > 0 else None
        return cls(real, z, augments, ema_weight)

    def fill(self, real: torch.Tensor, policies: tuple[str, ...], noise: torch.Generator,
             ema_weight: float | None) -> None:
        """This step's inputs; the draws from `noise` in the eager step's order: z, then each augmentation."""
        self.real.copy_(real)
        torch.randn(self.z.shape, generator=noise, out=self.z)
        for params in self.augments:
            draw_params(policies, tuple(self.real.shape), noise, into=params)
        if self.ema_weight is not None:
            self.ema_weight.fill_(ema_weight)


class GraphedStep:
    """Runs `compute` (the step on StepInputs, returning STAT_NAMES as one tensor) eagerly for the warm-up,
    then captures it once and replays it. `mode` says which it does now. `prepare_capture(True)` readies the
    models and optimisers for a capture (grads unset, Adam capturable); `prepare_capture(False)` undoes it
    after a failed one."""

    def __init__(self, compute: Callable[[], torch.Tensor], device: torch.device,
                 prepare_capture: Callable[[bool], None], warmup: int = CUDA_GRAPH_WARMUP_STEPS):
        self.compute, self.device, self.prepare_capture, self.warmup = compute, device, prepare_capture, warmup
        self.mode = GRAPHED
        self.eager_steps = 0
        self.stream = torch.cuda.Stream(device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.stats: torch.Tensor | None = None

    def __call__(self) -> torch.Tensor:
        if self.graph is not None:
            self.graph.replay()
            return self.stats.clone()
        if self.mode != GRAPHED:
            return self.compute()
        if self.eager_steps < self.warmup:
            self.eager_steps += 1
            return self._on_side_stream(self.compute)
        return self._capture_and_replay()

    def _on_side_stream(self, function: Callable[[], torch.Tensor]) -> torch.Tensor:
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            result = function()
        current.wait_stream(self.stream)
        return result

    def _capture_and_replay(self) -> torch.Tensor:
        graph = torch.cuda.CUDAGraph()
        try:
            with _CAPTURE_LOCK:
                self.prepare_capture(True)
                # thread_local: jobs sharing this process (dcgan worker --jobs-per-gpu) keep running meanwhile.
                with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                    stats = self.compute()
        except RuntimeError as exc:  # nothing of the step ran during the failed capture: run it eagerly
            self.mode = f"eager (CUDA graph capture failed: {(str(exc).splitlines() or [''])[0][:200]})"
            log.warning("train step: %s", self.mode)
            self.prepare_capture(False)
            return self.compute()
        self.graph, self.stats = graph, stats
        log.info("train step: captured as a CUDA graph after %d eager steps", self.eager_steps)
        graph.replay()
        return stats.clone()


@contextlib.contextmanager
def job_stream(device: torch.device) -> Iterator[None]:
    """Run the block on a CUDA stream of its own (nothing on a CPU): jobs sharing a GPU from one process
    (dcgan worker --jobs-per-gpu) then overlap their kernels instead of queueing on the default stream."""
    if device.type != "cuda":
        yield
        return
    outer = torch.cuda.current_stream(device)
    stream = torch.cuda.Stream(device)
    stream.wait_stream(outer)  # what was made before (weights, the dataset) is ready
    with torch.cuda.stream(stream):
        yield
    outer.wait_stream(stream)
