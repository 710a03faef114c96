"""Training images by name, decoded once into a uint8 tensor and cached on disk.

Names: `folder:<path>` (a directory tree of images) and the datasets of core.gan.catalog: `digits`
(scikit-learn's bundled 8x8 digits), `fashion-mnist` (Debian's `dataset-fashion-mnist` files when present,
else torchvision's downloader), `mnist`, `cifar10`, `celeba` (torchvision, downloaded when the machine is
online) and `fake` (seeded noise, for smoke tests).

Preprocessing is the seed article's: Resize(img_size) + CenterCrop(img_size), then [-1, 1] at batch time
(`to_model_range`). Decoding happens once per (source files, size, channels): the result is an .npy file in
the cache directory named by a hash of exactly those, so no epoch pays PIL decoding again.
"""

from __future__ import annotations

import gzip
import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from .atomic_files import atomic_write
from .catalog import FOLDER_PREFIX, NAMES, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
MAX_IMAGE_PIXELS = 64 * 1024 * 1024  # refuse decompression bombs long before memory runs out
CACHE_VERSION = "2"  # bump when preprocessing changes so stale caches are not reused


@dataclass(frozen=True)
class ImageSet:
    """Decoded images ready for training: uint8, shape (N, C, H, W)."""

    name: str
    images: torch.Tensor
    source_hash: str

    def __len__(self) -> int:
        return self.images.shape[0]


def to_model_range(batch_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range of G's Tanh."""
    return batch_uint8.float().div_(127.5).sub_(1.0)


def to_uint8(batch: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] with rounding, on the CPU."""
    return batch.detach().float().add(1.0).mul(127.5).round_().clamp_(0, 255).to(torch.uint8).cpu()


def load_images(name: str, img_size: int, img_channels: int, cache_dir: Path | None = None,
                download_root: Path | None = None) -> ImageSet:
    """Return the dataset `name` at img_size x img_size with img_channels channels."""
    if name.startswith(FOLDER_PREFIX):
        return _cached(name, _folder_source(Path(name[len(FOLDER_PREFIX):])), img_size, img_channels, cache_dir)
    if name == "fake":
        return ImageSet(name, _fake_images(img_size, img_channels), "fake")
    loaders: dict[str, Callable[[Path | None], _Source]] = {
        "digits": lambda _root: _digits_source(),
        "fashion-mnist": _fashion_mnist_source,
        "mnist": lambda root: _torchvision_source("MNIST", root),
        "cifar10": lambda root: _torchvision_source("CIFAR10", root),
        "celeba": lambda root: _torchvision_source("CelebA", root),
    }
    if name not in loaders:
        raise DataError(f"dataset {name!r}: unknown; use {FOLDER_PREFIX}<path> or one of {', '.join(NAMES)}")
    root = download_root or (cache_dir / "downloads" if cache_dir else Path(tempfile.gettempdir()) / "dcgan-data")
    return _cached(name, loaders[name](root), img_size, img_channels, cache_dir)


@dataclass(frozen=True)
class _Source:
    """A dataset before decoding: a content hash and either an in-memory uint8 array or PIL images."""

    digest: str
    count: int
    items: Callable[[], Iterable[Image.Image]] | None = None
    array: np.ndarray | None = None  # (N, H, W) or (N, H, W, C) uint8, resized in batches


def _cached(name: str, source: _Source, img_size: int, img_channels: int, cache_dir: Path | None) -> ImageSet:
    key = hashlib.sha256(f"{CACHE_VERSION}|{source.digest}|{img_size}|{img_channels}".encode()).hexdigest()[:24]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name.split("/")[-1])[:40]
    path = cache_dir / f"{safe}-{key}.npy" if cache_dir else None
    if path is not None and path.exists():
        array = np.load(path, allow_pickle=False)
    else:
        array = _decode_all(name, source, img_size, img_channels)
        if path is not None:
            atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))
    return ImageSet(name, torch.from_numpy(array), key)


def _decode_all(name: str, source: _Source, img_size: int, img_channels: int) -> np.ndarray:
    if source.array is not None:
        return _resize_array(source.array, img_size, img_channels)
    out = np.empty((source.count, img_channels, img_size, img_size), dtype=np.uint8)
    mode = "L" if img_channels == 1 else "RGB"
    n = 0
    for image in source.items():
        tensor = TF.pil_to_tensor(TF.center_crop(TF.resize(image.convert(mode), img_size), img_size))
        out[n] = tensor.numpy()
        n += 1
    if n == 0:
        raise DataError(f"dataset {name!r}: no images")
    return out[:n]


def _resize_array(array: np.ndarray, img_size: int, img_channels: int, chunk: int = 4096) -> np.ndarray:
    """The same Resize + CenterCrop on an in-memory array, batched in torch instead of per PIL image."""
    out = []
    for start in range(0, len(array), chunk):
        batch = torch.from_numpy(np.array(array[start:start + chunk]))  # a writable copy of the chunk
        batch = batch.unsqueeze(1) if batch.dim() == 3 else batch.permute(0, 3, 1, 2)
        if batch.shape[1] == 3 and img_channels == 1:
            batch = TF.rgb_to_grayscale(batch)
        elif batch.shape[1] == 1 and img_channels == 3:
            batch = batch.expand(-1, 3, -1, -1)
        batch = TF.center_crop(TF.resize(batch, img_size, antialias=True), img_size)
        out.append(batch.contiguous().numpy())
    return np.concatenate(out)


# ----- sources -----

def _folder_source(root: Path) -> _Source:
    if not root.is_dir():
        raise DataError(f"dataset folder {str(root)!r}: not a directory")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"dataset folder {str(root)!r}: empty, no image files found")
    for path in files:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"dataset folder {str(root)!r}: {path.relative_to(root)} is not an allowed image "
                            f"file (allowed: {', '.join(IMAGE_SUFFIXES)})")
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())

    def items() -> Iterable[Image.Image]:
        for path in files:
            yield _open_image(path, root)

    return _Source(digest.hexdigest(), len(files), items=items)


def _open_image(path: Path, root: Path) -> Image.Image:
    """Open and fully decode one file; a bad file is a DataError naming it."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with Image.open(path) as image:
            image.load()
            if image.format is None or f".{image.format.lower()}" not in IMAGE_SUFFIXES + (".jpeg",):
                raise DataError(f"{path.relative_to(root)}: format {image.format} is not allowed")
            return image.copy()
    except DataError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"dataset folder {str(root)!r}: {path.relative_to(root)} is not a readable image "
                        f"({exc.__class__.__name__}: {exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _digits_source() -> _Source:
    from sklearn.datasets import load_digits

    # 8x8 intensities 0..16 -> 0..255; upscaling to img_size happens in _decode_all.
    images = (load_digits().images * (255.0 / 16.0)).round().astype(np.uint8)
    return _array_source(images)


def _array_source(images: np.ndarray) -> _Source:
    digest = hashlib.sha256(images.tobytes() + str(images.shape).encode()).hexdigest()
    return _Source(digest, len(images), array=images)


def _read_idx(path: Path, magic: int, kind: str) -> tuple[list[int], bytes]:
    """An IDX file (gzip or raw), the format of MNIST and Fashion-MNIST: its dimensions and payload."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header or int.from_bytes(data[0:4], "big") != magic:
        raise DataError(f"{path}: not an IDX {kind} file")
    dims = [int.from_bytes(data[i:i + 4], "big") for i in range(4, header, 4)]
    if len(data) != header + int(np.prod(dims)):
        raise DataError(f"{path}: truncated IDX {kind} file")
    return dims, data[header:]


def read_idx_images(path: Path) -> np.ndarray:
    """uint8 images (N, rows, cols) from an IDX3 file (magic 2051)."""
    dims, payload = _read_idx(path, 2051, "image")
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


def read_idx_labels(path: Path) -> np.ndarray:
    """uint8 labels (N,) from an IDX1 file (magic 2049)."""
    dims, payload = _read_idx(path, 2049, "label")
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims).copy()


def _fashion_mnist_source(download_root: Path | None) -> _Source:
    local = DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz"
    if local.exists():
        return _array_source(read_idx_images(local))
    return _torchvision_source("FashionMNIST", download_root)


def _torchvision_source(class_name: str, download_root: Path | None) -> _Source:
    import torchvision.datasets as tvd

    root = Path(download_root or Path(tempfile.gettempdir()) / "dcgan-data")
    kwargs = {"split": "train"} if class_name == "CelebA" else {"train": True}
    try:
        dataset = getattr(tvd, class_name)(str(root), download=True, **kwargs)
    except Exception as exc:  # network or archive errors: turn them into one line naming the dataset
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise DataError(f"dataset {class_name}: could not load or download into {root} "
                        f"({exc.__class__.__name__}: {reason})") from exc
    digest = hashlib.sha256(f"{class_name}|{len(dataset)}".encode())
    if hasattr(dataset, "data"):
        data = dataset.data.numpy() if isinstance(dataset.data, torch.Tensor) else np.asarray(dataset.data)
        return _array_source(data)
    return _Source(digest.hexdigest(), len(dataset), items=lambda: (dataset[i][0] for i in range(len(dataset))))


def _fake_images(img_size: int, img_channels: int, count: int = 512) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (count, img_channels, img_size, img_size), dtype=torch.uint8,
                         generator=generator)
