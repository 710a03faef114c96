"""DiffAugment: differentiable augmentation of every image D sees (Zhao et al., NeurIPS 2020).

Applying the same random colour, translation and cutout to real *and* fake images keeps D from
memorising a small dataset while G still receives gradients through the augmentation. All randomness
comes from the `generator` passed in, so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def diff_augment(x: torch.Tensor, policies: Sequence[str], generator: torch.Generator) -> torch.Tensor:
    for policy in policies:
        x = _POLICIES[policy](x, generator)
    return x


def _rand(x: torch.Tensor, generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=generator.device).to(x.device, x.dtype)


def _color(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    # brightness: add U(-0.5, 0.5); saturation: scale deviation from the pixel mean by U(0, 2);
    # contrast: scale deviation from the image mean by U(0.5, 1.5) -- the paper's ranges.
    x = x + (_rand(x, generator, n, 1, 1, 1) - 0.5)
    if x.shape[1] > 1:
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (_rand(x, generator, n, 1, 1, 1) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, generator, n, 1, 1, 1) + 0.5) + mean


def _shift_grid(x: torch.Tensor, generator: torch.Generator, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    n, _, h, w = x.shape
    max_h, max_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-max_h, max_h + 1, (n, 1, 1), generator=generator, device=generator.device).to(x.device)
    dx = torch.randint(-max_w, max_w + 1, (n, 1, 1), generator=generator, device=generator.device).to(x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    return rows + dy, cols + dx


def _translation(x: torch.Tensor, generator: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to 1/8 of its size, filling with zeros."""
    n, c, h, w = x.shape
    rows, cols = _shift_grid(x, generator, ratio)
    # Sample from a zero-padded copy so shifted-in pixels are 0.
    padded = F.pad(x, [1, 1, 1, 1])
    rows = rows.clamp(-1, h) + 1
    cols = cols.clamp(-1, w) + 1
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous(
        memory_format=torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
        else torch.contiguous_format)


def _cutout(x: torch.Tensor, generator: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of half the image size at a random place in each image."""
    n, _, h, w = x.shape
    size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    off_y = torch.randint(0, h + (1 - size_h % 2), (n, 1, 1), generator=generator,
                          device=generator.device).to(x.device)
    off_x = torch.randint(0, w + (1 - size_w % 2), (n, 1, 1), generator=generator,
                          device=generator.device).to(x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    rel_y = rows - off_y + size_h // 2
    rel_x = cols - off_x + size_w // 2
    inside = (rel_y >= 0) & (rel_y < size_h) & (rel_x >= 0) & (rel_x < size_w)
    return x * (~inside).unsqueeze(1).to(x.dtype)


_POLICIES = {"color": _color, "translation": _translation, "cutout": _cutout}
