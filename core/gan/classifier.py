"""Small CNN classifiers that stand in for Inception on 1-channel datasets (digits, Fashion-MNIST).

Inception-v3 was trained on ImageNet photographs; its pool3 features say little about 8x8 digits blown up
to 299x299, so FID on such data is usually measured with a classifier trained on the dataset itself (the
LeNet-feature FID of e.g. Lucic et al., 2018, "Are GANs Created Equal?"). This module owns that network,
its input convention and the pinned weight files under `assets/`, which `scripts/train_feature_nets.py`
produces. A file whose sha256 is not the pinned one is refused: a FID is only comparable to another FID
computed with the very same weights.

Input convention: uint8 images (N, C, H, W), any size and 1 or 3 channels. RGB is turned into luma the way
PIL's "L" mode does it, values go to [-1, 1] (the generator's Tanh range) and the image is resized to 32x32
with antialiased bilinear interpolation. Output: a 128-d penultimate feature vector (for FID/KID) and
10-class logits (for the Inception Score).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from .errors import GanError

ASSETS = Path(__file__).resolve().parent / "assets"
INPUT_SIZE = 32
FEATURE_DIM = 128
NUM_CLASSES = 10
PREPROCESS = "gray (PIL luma), [-1, 1], bilinear-antialias to 32x32"

# name -> (file under assets/, its sha256). Written by scripts/train_feature_nets.py; changing a file
# without changing its hash here is refused at load time, on purpose.
CLASSIFIERS: dict[str, tuple[str, str]] = {
    "digits": ("digits-classifier.safetensors",
               "3a55e5b0e6fd4dcb57dd40783ecfe712c8f8436558c2a26796dc7ebdb0ae62bf"),
    "fashion-mnist": ("fashion-mnist-classifier.safetensors",
                      "10c9bcbcefeb5d9fa909877386a84321ebb33dffefc25d5c213bc663ab4c6ce8"),
}


class ChecksumError(GanError):
    """A weights file whose sha256 is not the pinned one (tampered, truncated or from another run)."""


class SmallClassifier(nn.Module):
    """Four 3x3 conv blocks and two linear layers; ~0.17 M parameters, fast enough for CPU evaluation."""

    def __init__(self, feature_dim: int = FEATURE_DIM, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.body = nn.Sequential(
            # 1 x 32 x 32 -> 16 x 16 x 16
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            # 16 x 16 x 16 -> 32 x 8 x 8
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            # 32 x 8 x 8 -> 64 x 4 x 4
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            # 64 x 4 x 4 -> 64 x 4 x 4: one more block at this size to widen the receptive field
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True),
            # 64 x 4 x 4 -> 1024; flattened rather than pooled so features keep where strokes are
            nn.Flatten(),
            # 1024 -> feature_dim: the penultimate layer, the analogue of Inception's pool3
            nn.Linear(64 * 4 * 4, feature_dim), nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(0.3)  # only during training; keeps features from hinging on few units
        self.head = nn.Linear(feature_dim, num_classes)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: float (N, 1, 32, 32) in [-1, 1] -> (features (N, feature_dim), logits (N, num_classes))."""
        features = self.body(x)
        return features, self.head(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[1]


def to_classifier_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float (N, 1, 32, 32) in [-1, 1], the classifiers' input convention."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 images (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")
    x = images.float()
    if x.shape[1] == 3:
        # ITU-R 601-2 luma, the formula of PIL's convert("L") that made the grayscale training data
        x = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    x = x / 127.5 - 1.0
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        # antialias matters when downsampling (64/128 -> 32): without it thin strokes alias away
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                          antialias=True)
    return x


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_classifier(name: str, path: Path | None = None, expected_sha256: str | None = None,
                    device: str | torch.device = "cpu") -> tuple[SmallClassifier, str]:
    """Load the pinned classifier `name` in eval mode; returns (model, sha256 of its file).

    `path` and `expected_sha256` override the shipped file and its pinned hash (tests, retraining).
    """
    if name not in CLASSIFIERS:
        raise ValueError(f"classifier {name!r}: unknown; known: {', '.join(CLASSIFIERS)}")
    filename, pinned = CLASSIFIERS[name]
    path = Path(path) if path is not None else ASSETS / filename
    expected = expected_sha256 or pinned
    if not path.is_file():
        raise FileNotFoundError(f"classifier {name!r}: weights file {path} is missing; "
                                f"run scripts/train_feature_nets.py")
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(f"classifier {name!r}: {path} has sha256 {actual}, expected {expected}; "
                            f"the file was changed or comes from another training run")
    model = SmallClassifier()
    model.load_state_dict(load_file(str(path), device="cpu"), strict=True)
    return model.to(device).eval().requires_grad_(False), actual


__all__ = ["SmallClassifier", "ChecksumError", "CLASSIFIERS", "FEATURE_DIM", "NUM_CLASSES", "INPUT_SIZE",
           "PREPROCESS", "to_classifier_input", "load_classifier", "sha256_file"]
