"""The seed article's DCGAN recipe, reproduced as written -- only as the baseline our benchmarks beat.

Source: /work/shared/seeds/000_cae03fee9121abb1.txt ("生成对抗网络:Trae 构建 DCGAN 生成图像"), section II
(Generator, Discriminator) and section III (data pipeline, training loop). Nothing here is used by the
service; core.gan is the engine. What is kept from the article on purpose, bugs included:

- PyTorch's default init: the article never applies the DCGAN paper's N(0, 0.02) weights_init.
- D ends in nn.Sigmoid and the loss is nn.BCELoss (not the stable BCE-with-logits).
- Adam(lr 2e-4, betas (0.5, 0.999)) for both nets.
- The loop never calls optimizer_D.zero_grad(): D's gradients pile up across steps, and the G update's
  backward (through an unfrozen D) adds into them too.
- Noise and labels are drawn on the CPU and copied with `.to(device)`; losses are read with `.item()`
  every 50 batches.

Two things differ, because the article's code cannot run otherwise: the models are moved to `device`
(the article never moves them, which fails on a GPU), and nz is a parameter instead of the literal 100.
The per-epoch fixed-noise grid is left out: it is output, not training.

img_size 64 is the article's network; img_size 32 is "adapted to 32x32 by dropping one block each side":
G starts at ngf*4 and D ends at ndf*4.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import torch
import torch.nn as nn
import torch.optim as optim
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

SEED_IMG_SIZES = (32, 64)


def _blocks(img_size: int) -> int:
    if img_size not in SEED_IMG_SIZES:
        raise ValueError(f"img_size must be one of {SEED_IMG_SIZES}, got {img_size}")
    return 4 if img_size == 64 else 3  # stride-2 blocks between 4x4 and img_size


class Generator(nn.Module):
    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3, img_size: int = 64):
        super().__init__()
        widths = [ngf * 2 ** i for i in reversed(range(_blocks(img_size)))]  # 64: ngf*8, *4, *2, ngf
        layers: list[nn.Module] = [
            # nz x 1 x 1 -> widths[0] x 4 x 4
            nn.ConvTranspose2d(nz, widths[0], 4, 1, 0, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(True),
        ]
        for w_in, w_out in zip(widths, widths[1:]):
            # w_in x s x s -> w_out x 2s x 2s
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out), nn.ReLU(True)]
        # ngf x img_size/2 -> nc x img_size x img_size
        layers += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.main(input)


class Discriminator(nn.Module):
    def __init__(self, ndf: int = 64, nc: int = 3, img_size: int = 64):
        super().__init__()
        widths = [ndf * 2 ** i for i in range(_blocks(img_size))]  # 64: ndf, *2, *4, *8
        layers: list[nn.Module] = [
            # nc x img_size -> ndf x img_size/2 (no BN on the input layer)
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        ]
        for w_in, w_out in zip(widths, widths[1:]):
            # w_in x s x s -> w_out x s/2 x s/2
            layers += [nn.Conv2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out),
                       nn.LeakyReLU(0.2, inplace=True)]
        # widths[-1] x 4 x 4 -> 1 x 1 x 1: a probability
        layers += [nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False), nn.Sigmoid()]
        self.main = nn.Sequential(*layers)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.main(input).view(-1, 1).squeeze(1)


def seed_transform() -> transforms.Compose:
    """The article's ToTensor + Normalize to [-1, 1]; its Resize/CenterCrop are no-ops on 64x64 input."""
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])


def seed_dataloader(dataset: Dataset, batch_size: int = 64) -> DataLoader:
    # The article uses num_workers=4; 2 matches the cores these benchmarks run on.
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=2)


class SeedRecipe:
    """The article's models, optimisers and loss; `step(real_images)` is one iteration of its loop."""

    def __init__(self, nz: int = 100, ngf: int = 64, ndf: int = 64, nc: int = 3, img_size: int = 64,
                 device: str | torch.device = "cpu", seed: int = 0):
        self.nz = nz
        self.device = torch.device(device)
        torch.manual_seed(seed)  # the article seeds nothing; a seed makes baseline runs comparable
        self.generator = Generator(nz, ngf, nc, img_size).to(self.device)
        self.discriminator = Discriminator(ndf, nc, img_size).to(self.device)
        lr, beta1 = 0.0002, 0.5
        self.optimizer_G = optim.Adam(self.generator.parameters(), lr=lr, betas=(beta1, 0.999))
        self.optimizer_D = optim.Adam(self.discriminator.parameters(), lr=lr, betas=(beta1, 0.999))
        self.criterion = nn.BCELoss()

    def step(self, real_images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One batch of the article's loop; returns (loss_real, loss_fake, loss_G) without syncing."""
        generator, discriminator, criterion, device = self.generator, self.discriminator, self.criterion, self.device
        # Train D -- note: no optimizer_D.zero_grad() anywhere, exactly as in the article.
        real_images = real_images.to(device)
        b_size = real_images.size(0)
        label_real = torch.ones(b_size).to(device)
        label_fake = torch.zeros(b_size).to(device)
        output_real = discriminator(real_images).view(-1)
        loss_real = criterion(output_real, label_real)
        loss_real.backward()
        noise = torch.randn(b_size, self.nz, 1, 1).to(device)
        fake_images = generator(noise)
        output_fake = discriminator(fake_images.detach()).view(-1)
        loss_fake = criterion(output_fake, label_fake)
        loss_fake.backward()
        self.optimizer_D.step()
        # Train G; this backward also adds into D's (never zeroed) gradients.
        self.optimizer_G.zero_grad()
        output_fake = discriminator(fake_images).view(-1)
        loss_G = criterion(output_fake, label_real)
        loss_G.backward()
        self.optimizer_G.step()
        return loss_real, loss_fake, loss_G


def batches(loader_or_batches: Iterable, steps: int) -> Iterator[tuple[int, torch.Tensor]]:
    """`steps` batches as (index within the epoch, images), re-iterating the loader per epoch as the training
    loops of the article and of pytorch/examples do. Items may be `(images, labels)` pairs (a DataLoader) or
    bare image tensors in [-1, 1]."""
    done = 0
    while done < steps:
        seen = 0
        for i, item in enumerate(loader_or_batches):
            yield i, item[0] if isinstance(item, (tuple, list)) else item
            done += 1
            seen += 1
            if done >= steps:
                return
        if seen == 0:
            raise ValueError("loader_or_batches yielded no batches")


def train_seed_recipe(loader_or_batches: Iterable, steps: int, nz: int = 100, ngf: int = 64, ndf: int = 64,
                      nc: int = 3, img_size: int = 64, device: str | torch.device = "cpu", seed: int = 0,
                      log: Callable[[str], None] | None = None) -> Generator:
    """Run the article's loop for `steps` batches, re-iterating the loader per epoch; returns G."""
    recipe = SeedRecipe(nz, ngf, ndf, nc, img_size, device, seed)
    for i, real_images in batches(loader_or_batches, steps):
        loss_real, loss_fake, loss_G = recipe.step(real_images)
        if i % 50 == 0:  # the article's .item() every 50 batches (a device sync on a GPU)
            message = f"Batch {i} Loss D: {loss_real.item() + loss_fake.item():.4f}, Loss G: {loss_G.item():.4f}"
            if log is not None:
                log(message)
    return recipe.generator


__all__ = ["Generator", "Discriminator", "SeedRecipe", "batches", "seed_transform", "seed_dataloader",
           "train_seed_recipe"]
