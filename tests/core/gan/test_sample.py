import json
import struct

import pytest
import torch
from PIL import Image

from core.gan.checkpoint import CheckpointError, export_generator, read_generator
from core.gan.models import build_generator, init_dcgan_weights
from core.gan.sample import (MICRO_BATCH, SampleError, Sampler, SamplerOptions, grid_image, image_list,
                             noise_for_seeds, parse_seeds, png_bytes, save_gif)
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory):
    config = tiny_config()
    torch.manual_seed(3)
    G = build_generator(config)
    G.apply(init_dcgan_weights)
    G.train()
    G(torch.randn(32, config.z_dim))  # give BatchNorm non-trivial running statistics
    path = tmp_path_factory.mktemp("gen") / "generator.safetensors"
    export_generator(path, G, config)
    return path


def test_each_image_depends_only_on_its_seed(generator_file, device):
    sampler = Sampler.from_file(generator_file, device)
    alone = sampler.images_for_seeds([7])
    batch = sampler.images_for_seeds(list(range(64)))
    shuffled = sampler.images_for_seeds([40, 7, 3])
    assert torch.equal(alone[0], batch[7]) and torch.equal(alone[0], shuffled[1])
    assert not torch.equal(batch[6], batch[7])
    assert MICRO_BATCH[sampler.device.type] < 64  # the batch above really spans several forward passes


def test_noise_is_device_independent_and_seeded():
    a = noise_for_seeds([1, 2], 8)
    assert torch.equal(a, noise_for_seeds([1, 2], 8)) and not torch.equal(a[0], a[1])
    assert torch.allclose(noise_for_seeds([1], 8, truncation=0.5), a[:1] * 0.5)


def test_grid_png_is_byte_identical_across_runs(generator_file):
    first = png_bytes(grid_image(Sampler.from_file(generator_file).images_for_seeds(range(16)), nrow=4))
    second = png_bytes(grid_image(Sampler.from_file(generator_file).images_for_seeds(range(16)), nrow=4))
    assert first == second
    image = Image.open(__import__("io").BytesIO(first))
    assert image.size == (4 * 34 + 2, 4 * 34 + 2) and image.mode == "L"  # make_grid's 2-pixel padding


@pytest.mark.parametrize("spec,expected", [("0-3", [0, 1, 2, 3]), ("5", [5]), ("1,4-5,2", [1, 4, 5, 2]),
                                           ([3, 9], [3, 9])])
def test_parse_seeds(spec, expected):
    assert parse_seeds(spec) == expected


@pytest.mark.parametrize("spec", ["", "a-b", "5-1", "-3", "0-1000000"])
def test_bad_seed_specs(spec):
    with pytest.raises(SampleError, match="seeds"):
        parse_seeds(spec)


def test_truncation_range():
    with pytest.raises(SampleError, match="truncation"):
        noise_for_seeds([1], 8, truncation=1.5)


def test_interpolation_frames_and_gif(generator_file, tmp_path):
    sampler = Sampler.from_file(generator_file)
    frames = sampler.interpolate(1, 2, frames=5)
    ends = sampler.images_for_seeds([1, 2])
    assert frames.shape == (5, 1, 32, 32)
    assert torch.allclose(frames[0], ends[0], atol=1e-5) and torch.allclose(frames[-1], ends[1], atol=1e-5)
    save_gif(image_list(frames), tmp_path / "a.gif")
    assert Image.open(tmp_path / "a.gif").n_frames == 5


def test_exported_generator_rebuilds_from_its_own_header(generator_file):
    config, weights = read_generator(generator_file)
    assert config == tiny_config()
    assert weights["main.0.weight"].shape == (8, 32, 4, 4)


def _rewrite_metadata(path, out, change):
    data = path.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + size])
    change(header)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    out.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data[8 + size:])


def test_a_header_length_that_starts_like_a_pickle_is_still_read(generator_file, tmp_path):
    # A header of 128 + 256k bytes is stored as 80 0k 00 ..., the bytes a protocol-k pickle starts with.
    data = generator_file.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = data[8:8 + size].rstrip(b" ")
    padded = header + b" " * ((128 - len(header)) % 256)  # safetensors pads headers with spaces
    assert len(padded) % 256 == 128 and padded[:1] == b"{"
    out = tmp_path / "aligned.safetensors"
    out.write_bytes(struct.pack("<Q", len(padded)) + padded + data[8 + size:])
    assert out.read_bytes()[:1] == b"\x80"
    config, weights = read_generator(out)
    assert config == tiny_config() and weights["main.0.weight"].shape == (8, 32, 4, 4)


def test_config_that_does_not_match_the_weights(generator_file, tmp_path):
    def bigger(header):
        config = json.loads(header["__metadata__"]["config"])
        config["g_channels"] = 16
        header["__metadata__"]["config"] = json.dumps(config)

    _rewrite_metadata(generator_file, tmp_path / "bad.safetensors", bigger)
    with pytest.raises(CheckpointError, match=r"has shape .* config needs"):
        Sampler.from_file(tmp_path / "bad.safetensors")


def test_nan_weights_are_rejected(tmp_path):
    config = tiny_config()
    G = build_generator(config)
    with torch.no_grad():
        G.main[0].weight[0, 0, 0, 0] = float("nan")
    export_generator(tmp_path / "nan.safetensors", G, config)
    with pytest.raises(CheckpointError, match="NaN or Inf"):
        read_generator(tmp_path / "nan.safetensors")


def test_pickle_is_refused_without_being_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (marker.touch, ())

    torch.save({"weights": Evil()}, tmp_path / "generator.pth")
    with pytest.raises(CheckpointError, match="pickle"):
        Sampler.from_file(tmp_path / "generator.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        Sampler.from_file(tmp_path / "junk.safetensors")
    assert not marker.exists()


def test_fast_paths_stay_close_to_fp32(generator_file):
    reference = Sampler.from_file(generator_file).images_for_seeds(range(16))
    fast = Sampler.from_file(generator_file, options=SamplerOptions(channels_last=True)).images_for_seeds(range(16))
    assert (fast - reference).abs().max() < 1e-4
    bf16 = Sampler.from_file(generator_file, options=SamplerOptions(precision="bf16")).images_for_seeds(range(2))
    assert (bf16 - reference[:2]).abs().mean() < 0.05


def test_int8_stays_within_stated_error_of_fp32(generator_file):
    from core.gan.sample import psnr

    seeds = range(32)
    reference = Sampler.from_file(generator_file).images_for_seeds(seeds)
    int8 = Sampler.from_file(generator_file, options=SamplerOptions(quantize=True))
    images = int8.images_for_seeds(seeds)
    assert any("quantized" in type(m).__module__ for m in int8.model.modules()), "nothing was quantized"
    assert 35 < psnr(images, reference) < float("inf")
    assert torch.equal(images[7], int8.images_for_seeds([7])[0])  # still one image per seed
    with pytest.raises(SampleError, match="CPU only"):
        Sampler.from_file(generator_file, device="meta", options=SamplerOptions(quantize=True))
