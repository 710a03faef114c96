import copy
import json
import logging
import struct

import pytest
import torch
from PIL import Image

from bench.sample_latency import default_generator
from core.gan.checkpoint import CheckpointError, export_generator, read_generator
from core.gan.models import build_generator, init_dcgan_weights
from core.gan.sample import (GATE_SEEDS, MICRO_BATCH, QUALITY_GATE_DB, SampleError, Sampler, SamplerOptions,
                             grid_image, image_list, noise_for_seeds, parse_seeds, png_bytes, psnr, save_gif)
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


@pytest.fixture(scope="module")
def contrasty():
    """A tiny G whose images use much of the grey range, as a trained G's do; generator_file's are near-flat
    (a constant image scores ~60 dB PSNR against them), on which no PSNR check means anything."""
    G, config = default_generator(tiny_config())  # the benchmark's G: BatchNorm statistics from its outputs
    with torch.no_grad():
        G.main[-2].weight *= 0.5 / G.main[:-1](noise_for_seeds(range(64), config.z_dim)).std()  # pre-Tanh std 0.5
    return G, config


def _sampler(G, config, **options):
    return Sampler(copy.deepcopy(G), config, options=SamplerOptions(**options))


def _quantized(sampler):
    return any("quantized" in type(m).__module__ for m in sampler.model.modules())


def test_fp32_skips_the_gate(contrasty):
    sampler = _sampler(*contrasty)
    assert sampler.path == "fp32"
    assert sampler.quality == {"requested": "fp32", "path": "fp32", "psnr_db": None, "threshold_db": 35.0,
                               "fallback_reason": None}


def test_int8_serves_when_it_passes_the_gate(contrasty):
    G, config = contrasty
    seeds = range(32)  # not the gate's seeds: the kept path holds on images it was not judged on
    reference = _sampler(G, config).images_for_seeds(seeds)
    assert psnr(reference.mean().expand_as(reference), reference) < 20  # a grey image would fail the gate
    int8 = _sampler(G, config, quantize=True)
    assert int8.path == "int8" and _quantized(int8), "nothing was quantized"
    assert QUALITY_GATE_DB <= int8.quality["psnr_db"] < 100 and int8.quality["fallback_reason"] is None
    assert json.loads(json.dumps(int8.quality)) == int8.quality
    images = int8.images_for_seeds(seeds)
    assert QUALITY_GATE_DB < psnr(images, reference) < float("inf")
    assert torch.equal(images[7], int8.images_for_seeds([7])[0])  # still one image per seed
    assert _sampler(G, config, quantize=True).quality == int8.quality  # fixed seeds: the same decision
    with pytest.raises(SampleError, match="CPU only"):
        Sampler(copy.deepcopy(G), config, device="meta", options=SamplerOptions(quantize=True))


def test_int8_falls_back_to_fp32_when_it_fails_the_gate(contrasty, caplog):
    G, config = contrasty
    G = copy.deepcopy(G)
    with torch.no_grad():
        # One channel of the first block at ~1000 beside channels of ~1: per-tensor int8 must spend its 256
        # levels on that channel and rounds the others to 0. The next layer ignores it, so fp32 is unchanged.
        G.main[1].bias[0] = 1000.0
        G.main[3].weight[0] = 0.0
    reference = _sampler(G, config).images_for_seeds(range(32))
    with caplog.at_level(logging.INFO, logger="core.gan.sample"):
        sampler = _sampler(G, config, quantize=True)
    assert sampler.path == "fp32" and not _quantized(sampler)
    quality = sampler.quality
    assert quality["requested"] == "int8" and quality["path"] == "fp32" and quality["psnr_db"] < 20
    assert f"{quality['psnr_db']:.1f} dB" in quality["fallback_reason"]
    assert torch.equal(sampler.images_for_seeds(range(32)), reference)
    warning, = [r for r in caplog.records if r.name == "core.gan.sample" and r.levelno == logging.WARNING]
    assert "int8" in warning.getMessage() and "serving fp32" in warning.getMessage()


def test_bf16_is_gated_the_same_way(contrasty):
    G, config = contrasty
    bf16 = _sampler(G, config, precision="bf16")
    assert bf16.path == "bf16" and QUALITY_GATE_DB <= bf16.quality["psnr_db"] < 100
    stricter = _sampler(G, config, precision="bf16", quality_gate_db=bf16.quality["psnr_db"] + 1)
    assert stricter.path == "fp32" and stricter.quality["threshold_db"] == bf16.quality["psnr_db"] + 1
    # The last block's channels ride on +1000, which the output layer cancels (its weights sum to 0 over the
    # channels): exact in fp32, but bf16's 8-bit significand keeps steps of 4 there and the signal is lost.
    G = copy.deepcopy(G)
    with torch.no_grad():
        G.main[-4].bias += 1000.0
        G.main[-2].weight -= G.main[-2].weight.mean(0, keepdim=True)
    reference = _sampler(G, config).images_for_seeds(GATE_SEEDS)
    assert psnr(reference.mean().expand_as(reference), reference) < 20
    sampler = _sampler(G, config, precision="bf16")
    assert sampler.path == "fp32" and sampler.quality["psnr_db"] < 20
    assert sampler.quality["requested"] == "bf16" and "bf16" in sampler.quality["fallback_reason"]
    assert torch.equal(sampler.images_for_seeds(GATE_SEEDS), reference)
