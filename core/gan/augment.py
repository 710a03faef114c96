"""DiffAugment: differentiable augmentation of every image D sees (Zhao et al., NeurIPS 2020).

Applying the same random colour, translation and cutout to real *and* fake images keeps D from
memorising a small dataset while G still receives gradients through the augmentation. All randomness
comes from the `generator` passed in, so a resumed run draws exactly what an uninterrupted one would.

Drawing and applying are two steps (`draw_params`, `apply`): the train step draws a step's parameters
eagerly, into buffers that stay put, and applies them inside a captured CUDA graph (core.gan.step_graph); the
eager step does the same, so both draw the same numbers in the same order. `diff_augment` does both at once.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

TRANSLATION_RATIO = 0.125  # shift by up to 1/8 of the image size
CUTOUT_RATIO = 0.5  # zero a square of half the image size


def diff_augment(x: torch.Tensor, policies: Sequence[str], generator: torch.Generator) -> torch.Tensor:
    return apply(x, policies, draw_params(policies, tuple(x.shape), generator))


def draw_params(policies: Sequence[str], shape: tuple[int, ...], generator: torch.Generator,
                into: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The random parameters of augmenting a batch of `shape` (n, c, h, w), on the generator's device.

    With `into` (an earlier result), the numbers are written into its tensors instead of new ones."""
    n, c, h, w = shape
    params: dict[str, torch.Tensor] = {}

    def uniform(name: str) -> None:
        out = None if into is None else into[name]
        params[name] = _draw(torch.rand, ((n, 1, 1, 1),), generator, out)

    def integers(name: str, low: int, high: int) -> None:
        out = None if into is None else into[name]
        params[name] = _draw(torch.randint, (low, high, (n, 1, 1)), generator, out)

    for policy in policies:  # the order of draws is the order of the policies, then of each policy's draws
        if policy == "color":
            uniform("brightness")
            if c > 1:
                uniform("saturation")
            uniform("contrast")
        elif policy == "translation":
            max_h, max_w = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
            integers("shift_y", -max_h, max_h + 1)
            integers("shift_x", -max_w, max_w + 1)
        elif policy == "cutout":
            size_h, size_w = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
            integers("cutout_y", 0, h + (1 - size_h % 2))
            integers("cutout_x", 0, w + (1 - size_w % 2))
        else:
            raise KeyError(policy)
    return params


def _draw(function, args: tuple, generator: torch.Generator, out: torch.Tensor | None) -> torch.Tensor:
    if out is None:
        return function(*args, generator=generator, device=generator.device)
    return function(*args, generator=generator, out=out)


def apply(x: torch.Tensor, policies: Sequence[str], params: dict[str, torch.Tensor]) -> torch.Tensor:
    for policy in policies:
        x = _POLICIES[policy](x, params)
    return x


def _color(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    # brightness: add U(-0.5, 0.5); saturation: scale deviation from the pixel mean by U(0, 2);
    # contrast: scale deviation from the image mean by U(0.5, 1.5) -- the paper's ranges.
    x = x + (params["brightness"].to(x.device, x.dtype) - 0.5)
    if x.shape[1] > 1:
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (params["saturation"].to(x.device, x.dtype) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (params["contrast"].to(x.device, x.dtype) + 0.5) + mean


def _translation(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Shift each image by up to TRANSLATION_RATIO of its size, filling with zeros."""
    n, c, h, w = x.shape
    rows = torch.arange(h, device=x.device).view(1, h, 1) + params["shift_y"].to(x.device)
    cols = torch.arange(w, device=x.device).view(1, 1, w) + params["shift_x"].to(x.device)
    # Sample from a zero-padded copy so shifted-in pixels are 0.
    padded = F.pad(x, [1, 1, 1, 1])
    rows = rows.clamp(-1, h) + 1
    cols = cols.clamp(-1, w) + 1
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous(
        memory_format=torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
        else torch.contiguous_format)


def _cutout(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Zero one square of CUTOUT_RATIO of the image size at a random place in each image."""
    n, _, h, w = x.shape
    size_h, size_w = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    rel_y = rows - params["cutout_y"].to(x.device) + size_h // 2
    rel_x = cols - params["cutout_x"].to(x.device) + size_w // 2
    inside = (rel_y >= 0) & (rel_y < size_h) & (rel_x >= 0) & (rel_x < size_w)
    return x * (~inside).unsqueeze(1).to(x.dtype)


_POLICIES = {"color": _color, "translation": _translation, "cutout": _cutout}
