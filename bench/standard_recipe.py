"""The standard DCGAN recipe, as pytorch/examples' `dcgan/main.py` runs it: the baseline a user would pick.

What makes it the standard recipe (and not the seed article's loop, bench/seed_recipe.py, which never zeroes
D's gradients and collapses):

- weights_init: every Conv / ConvTranspose weight drawn from N(0, 0.02), every BatchNorm weight from
  N(1, 0.02) with bias 0 (the DCGAN paper's init, applied with `apply(weights_init)`).
- D ends in nn.Sigmoid and the loss is nn.BCELoss; real label 1, fake label 0, G trained with label 1.
- Each iteration: `netD.zero_grad()`, D on a real batch and on a detached fake batch (one backward each),
  `optimizerD.step()`; then `netG.zero_grad()`, D on the same fake batch, `optimizerG.step()`.
- Adam(lr 2e-4, betas (0.5, 0.999)) for both nets, batch 64, nz 100.

The networks are main.py's, which bench/seed_recipe.py's Generator and Discriminator reproduce (at 32x32 one
block fewer on each side, as there). Noise is drawn on the device. Nothing here is used by the service.
"""

from __future__ import annotations

import copy
import time
from typing import Iterable

import torch
import torch.nn as nn
import torch.optim as optim

from bench.seed_recipe import Discriminator, Generator, batches


def weights_init(module: nn.Module) -> None:
    """main.py's weights_init, by class name as there."""
    name = module.__class__.__name__
    if name.find("Conv") != -1:
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif name.find("BatchNorm") != -1:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class StandardRecipe:
    """main.py's models, optimisers and loss; `step(real_images)` is one iteration of its loop."""

    def __init__(self, nz: int = 100, ngf: int = 64, ndf: int = 64, nc: int = 3, img_size: int = 64,
                 device: str | torch.device = "cpu", seed: int = 0, lr: float = 0.0002, beta1: float = 0.5):
        self.nz = nz
        self.device = torch.device(device)
        torch.manual_seed(seed)  # main.py's --manualSeed
        self.generator = Generator(nz, ngf, nc, img_size).to(self.device)
        self.generator.apply(weights_init)
        self.discriminator = Discriminator(ndf, nc, img_size).to(self.device)
        self.discriminator.apply(weights_init)
        self.criterion = nn.BCELoss()
        self.optimizer_D = optim.Adam(self.discriminator.parameters(), lr=lr, betas=(beta1, 0.999))
        self.optimizer_G = optim.Adam(self.generator.parameters(), lr=lr, betas=(beta1, 0.999))

    def step(self, real_images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One iteration of main.py's loop; returns (errD, errG) without syncing."""
        netD, netG, criterion, device = self.discriminator, self.generator, self.criterion, self.device
        # (1) Update D: maximize log(D(x)) + log(1 - D(G(z)))
        netD.zero_grad()
        real = real_images.to(device)
        batch_size = real.size(0)
        label = torch.full((batch_size,), 1.0, dtype=real.dtype, device=device)
        output = netD(real)
        errD_real = criterion(output, label)
        errD_real.backward()
        noise = torch.randn(batch_size, self.nz, 1, 1, device=device)
        fake = netG(noise)
        label.fill_(0.0)
        output = netD(fake.detach())
        errD_fake = criterion(output, label)
        errD_fake.backward()
        self.optimizer_D.step()
        # (2) Update G: maximize log(D(G(z)))
        netG.zero_grad()
        label.fill_(1.0)
        output = netD(fake)
        errG = criterion(output, label)
        errG.backward()
        self.optimizer_G.step()
        return errD_real + errD_fake, errG


def train_standard_recipe(loader_or_batches: Iterable, steps: int, nz: int = 100, ngf: int = 64, ndf: int = 64,
                          nc: int = 3, img_size: int = 64, device: str | torch.device = "cpu",
                          seed: int = 0, snapshot: dict | None = None) -> Generator:
    """Run main.py's loop for `steps` batches, re-iterating the loader per epoch; returns G.

    `snapshot`, when given, is a dict with "seconds": once that much time has passed since the call began, a copy
    of G after the last finished step goes under "generator" and that step count under "steps" (equal wall-clock
    time in one run; no copy when the whole run is shorter)."""
    started = time.perf_counter()
    recipe = StandardRecipe(nz, ngf, ndf, nc, img_size, device, seed)
    for done, (_, real_images) in enumerate(batches(loader_or_batches, steps), start=1):
        recipe.step(real_images)
        if snapshot is not None and "generator" not in snapshot \
                and time.perf_counter() - started >= snapshot["seconds"]:
            snapshot.update(generator=copy.deepcopy(recipe.generator), steps=done)
    return recipe.generator


__all__ = ["StandardRecipe", "train_standard_recipe", "weights_init"]
