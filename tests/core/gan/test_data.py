import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.gan import data as data_module
from core.gan.data import DataError, load_images, read_idx_images, read_idx_labels, to_model_range, to_uint8


def _write_images(root: Path, count: int = 5) -> None:
    rng = np.random.default_rng(0)
    (root / "nested").mkdir(parents=True)
    for i in range(count):
        array = rng.integers(0, 256, (40 + i * 7, 30 + i * 5, 3), dtype=np.uint8)
        folder = root / "nested" if i % 2 else root
        mode, suffix = [("RGB", ".png"), ("L", ".jpg"), ("RGBA", ".png"), ("P", ".gif"), ("RGB", ".bmp")][i % 5]
        image = Image.fromarray(array).convert(mode)
        image.save(folder / f"img{i}{suffix}")


@pytest.mark.parametrize("channels", [1, 3])
def test_folder_any_size_and_mode_becomes_square(tmp_path, cache_dir, channels):
    _write_images(tmp_path / "ds")
    images = load_images(f"folder:{tmp_path / 'ds'}", 32, channels, cache_dir=cache_dir).images
    assert images.shape == (5, channels, 32, 32) and images.dtype == torch.uint8


def test_decoded_once_then_read_from_cache(tmp_path, monkeypatch):
    _write_images(tmp_path / "ds")
    first = load_images(f"folder:{tmp_path / 'ds'}", 32, 3, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache holds this dataset")

    monkeypatch.setattr(data_module, "_decode_all", no_decoding)
    second = load_images(f"folder:{tmp_path / 'ds'}", 32, 3, cache_dir=tmp_path / "cache")
    assert torch.equal(first.images, second.images)


def test_cache_key_follows_file_contents_and_size(tmp_path):
    _write_images(tmp_path / "ds")
    a = load_images(f"folder:{tmp_path / 'ds'}", 32, 3, cache_dir=tmp_path / "cache")
    b = load_images(f"folder:{tmp_path / 'ds'}", 64, 3, cache_dir=tmp_path / "cache")
    Image.new("RGB", (8, 8), "red").save(tmp_path / "ds" / "img0.png")
    c = load_images(f"folder:{tmp_path / 'ds'}", 32, 3, cache_dir=tmp_path / "cache")
    assert len({a.source_hash, b.source_hash, c.source_hash}) == 3


def test_non_image_file_is_named(tmp_path):
    _write_images(tmp_path / "ds")
    (tmp_path / "ds" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"notes\.txt is not an allowed image"):
        load_images(f"folder:{tmp_path / 'ds'}", 32, 3)


def test_corrupt_image_is_named(tmp_path):
    _write_images(tmp_path / "ds")
    (tmp_path / "ds" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(DataError, match=r"broken\.png is not a readable image"):
        load_images(f"folder:{tmp_path / 'ds'}", 32, 3)


def test_truncated_image_is_rejected(tmp_path):
    _write_images(tmp_path / "ds")
    whole = (tmp_path / "ds" / "img0.png").read_bytes()
    (tmp_path / "ds" / "img0.png").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="img0.png"):
        load_images(f"folder:{tmp_path / 'ds'}", 32, 3)


def test_empty_folder_and_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        load_images(f"folder:{tmp_path / 'empty'}", 32, 3)
    with pytest.raises(DataError, match="not a directory"):
        load_images(f"folder:{tmp_path / 'nope'}", 32, 3)


def test_unknown_dataset_name():
    with pytest.raises(DataError, match="unknown"):
        load_images("imagenet", 32, 3)


def test_digits_are_real_and_centered(cache_dir):
    digits = load_images("digits", 32, 1, cache_dir=cache_dir)
    assert digits.images.shape == (1797, 1, 32, 32)
    # Digits are bright strokes on black: the left edge is dark, the middle is not, strokes reach white.
    assert digits.images[:, :, :, 0].float().mean() < 20 < digits.images[:, :, 12:20, 12:20].float().mean()
    assert digits.images.max() == 255


def _write_idx(path: Path, images: np.ndarray) -> None:
    header = (2051).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in images.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + images.astype(np.uint8).tobytes())


def test_idx_reader_and_truncation(tmp_path):
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _write_idx(tmp_path / "x.gz", images)
    assert np.array_equal(read_idx_images(tmp_path / "x.gz"), images)
    with gzip.open(tmp_path / "bad.gz", "wb") as f:
        f.write((2051).to_bytes(4, "big") + (3).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\0" * 10)
    with pytest.raises(DataError, match="truncated IDX image"):
        read_idx_images(tmp_path / "bad.gz")
    (tmp_path / "labels").write_bytes((2049).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes([7, 0, 9]))
    assert read_idx_labels(tmp_path / "labels").tolist() == [7, 0, 9]
    with pytest.raises(DataError, match="not an IDX label"):
        read_idx_labels(tmp_path / "x.gz")


def test_fashion_mnist_from_debian_files(cache_dir):
    if not data_module.DEBIAN_FASHION_MNIST.exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make test installs it)")
    fashion = load_images("fashion-mnist", 32, 1, cache_dir=cache_dir)
    assert fashion.images.shape == (60000, 1, 32, 32)


def test_fashion_mnist_falls_back_to_torchvision_layout(tmp_path, monkeypatch):
    # Offline stand-in for the download: files already in torchvision's layout are used, not fetched.
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.random.default_rng(1).integers(0, 256, (6, 28, 28))
    # torchvision checks for the unpacked files; with them present it never downloads.
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        _write_idx(raw / f"{name}.gz", images)
        (raw / name).write_bytes(gzip.decompress((raw / f"{name}.gz").read_bytes()))
    for name in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes((2049).to_bytes(4, "big") + (6).to_bytes(4, "big") + bytes(6))
    loaded = load_images("fashion-mnist", 32, 1, download_root=tmp_path / "root")
    assert loaded.images.shape == (6, 1, 32, 32)


def test_value_range_round_trip():
    batch = torch.tensor([[[[0, 128, 255]]]], dtype=torch.uint8)
    model = to_model_range(batch)
    assert model.min() == -1 and model.max() == 1
    assert torch.equal(to_uint8(model), batch)
