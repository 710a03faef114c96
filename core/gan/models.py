"""DCGAN generator and discriminator (Radford et al., 2015; pytorch/examples' dcgan/main.py).

Generator: z (z_dim x 1 x 1) -> ConvTranspose-BN-ReLU blocks doubling the size from 4x4 -> Tanh.
Discriminator: image -> Conv-(BN)-LeakyReLU(0.2) blocks halving the size down to 4x4 -> one logit.
Unlike pytorch/examples, the number of blocks follows from img_size (32, 64 or 128) and D ends in a logit
(no Sigmoid) so the loss is BCEWithLogits: the same maths, numerically stable.

Options: spectral norm on D's convs (Miyato et al., 2018), a minibatch standard-deviation channel before D's
last conv (Karras et al., 2018), and an EMA copy of G (`ExponentialMovingAverage`) for sampling.
"""

from __future__ import annotations

import copy
import threading

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from .config import TrainConfig

# Held by whoever seeds the process-wide RNG for a moment (weight init, the KID subsets of core.gan.metrics):
# jobs sharing a worker process (dcgan worker --jobs-per-gpu) take turns, or one would draw from another's seed.
GLOBAL_RNG_LOCK = threading.RLock()


def init_dcgan_weights(module: nn.Module) -> None:
    """The paper's init: conv weights N(0, 0.02), BN weight N(1, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    def __init__(self, z_dim: int = 100, g_channels: int = 64, img_channels: int = 3, img_size: int = 64):
        super().__init__()
        self.z_dim = z_dim
        blocks = img_size.bit_length() - 3  # stride-2 blocks from 4x4 up to img_size
        width = g_channels * 2 ** (blocks - 1)
        layers: list[nn.Module] = [
            # z_dim x 1 x 1 -> width x 4 x 4
            nn.ConvTranspose2d(z_dim, width, 4, 1, 0, bias=False), nn.BatchNorm2d(width), nn.ReLU(True),
        ]
        size = 4
        for _ in range(blocks - 1):
            # width x size x size -> width/2 x 2size x 2size
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(width // 2), nn.ReLU(True)]
            width, size = width // 2, size * 2
        # g_channels x img_size/2 -> img_channels x img_size x img_size
        layers += [nn.ConvTranspose2d(width, img_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 2:
            z = z[:, :, None, None]
        return self.main(z)


class MinibatchStd(nn.Module):
    """Append the mean over features of the per-group standard deviation as one extra channel."""

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        group = min(self.group_size, n)
        while n % group:
            group -= 1
        y = x.float().reshape(group, -1, c, h, w)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (n/group,)
        y = y.repeat(group).reshape(n, 1, 1, 1).expand(n, 1, h, w).to(x.dtype)
        return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    def __init__(self, d_channels: int = 64, img_channels: int = 3, img_size: int = 64,
                 spectral_norm: bool = False, minibatch_std: bool = False):
        super().__init__()
        blocks = img_size.bit_length() - 3
        sn = _spectral_norm if spectral_norm else (lambda m: m)
        width = d_channels
        layers: list[nn.Module] = [
            # img_channels x img_size -> d_channels x img_size/2 (no BN on the input layer, as in the paper)
            sn(nn.Conv2d(img_channels, width, 4, 2, 1, bias=False)), nn.LeakyReLU(0.2, inplace=True),
        ]
        for _ in range(blocks - 1):
            # width x s x s -> 2width x s/2 x s/2; spectral norm replaces BN rather than stacking on it
            layers.append(sn(nn.Conv2d(width, width * 2, 4, 2, 1, bias=spectral_norm)))
            if not spectral_norm:
                layers.append(nn.BatchNorm2d(width * 2))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            width *= 2
        if minibatch_std:
            # width x 4 x 4 -> width+1 x 4 x 4
            layers.append(MinibatchStd())
            width += 1
        # width x 4 x 4 -> 1 x 1 x 1: the logit
        layers.append(sn(nn.Conv2d(width, 1, 4, 1, 0, bias=False)))
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).flatten()


def build_generator(config: TrainConfig) -> Generator:
    return Generator(config.z_dim, config.g_channels, config.img_channels, config.img_size)


def build_discriminator(config: TrainConfig) -> Discriminator:
    return Discriminator(config.d_channels, config.img_channels, config.img_size,
                         spectral_norm=config.spectral_norm, minibatch_std=config.minibatch_std)


class ExponentialMovingAverage:
    """EMA of G's weights (and a copy of its BN buffers) with a warm-up so early steps count fully.

    decay_t = min(decay, (1 + t) / (10 + t)), as in TensorFlow's ExponentialMovingAverage num_updates.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def weight(self, step: int) -> float:
        """How far the average moves towards the model at `step`: 1 - decay_t."""
        return 1.0 - min(self.decay, (1.0 + step) / (10.0 + step))

    def update(self, model: nn.Module, step: int) -> None:
        self.apply(model, torch.tensor(self.weight(step), device=next(self.model.parameters()).device))

    @torch.no_grad()
    def apply(self, model: nn.Module, weight: torch.Tensor) -> None:
        """Move the average by `weight`, a 0-dim tensor on the model's device: a tensor and not a float, so a
        captured CUDA graph (core.gan.step_graph) reads each step's value from it instead of baking one in."""
        for average, current in zip(self.model.parameters(), model.parameters()):
            average.lerp_(current.detach(), weight)
        torch._foreach_copy_(list(self.model.buffers()), list(model.buffers()))
