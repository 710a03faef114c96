import json
from pathlib import Path

import pytest
import torch

from core.gan.checkpoint import CheckpointError, load_training_state, read_generator
from core.gan.data import ImageSet, load_images
from core.gan.sample import Sampler
from core.gan.train import Callbacks, Trainer, train
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def digits(cache_dir):
    return load_images("digits", 32, 1, cache_dir=cache_dir)


def _states_equal(a: dict, b: dict) -> None:
    for key in ("G", "D", "G_ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs"
    for key in ("opt_g", "opt_d"):
        for index, slots in a[key]["state"].items():
            for slot, value in slots.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(b[key]["state"][index][slot]))
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"] and a["position"] == b["position"]
    assert torch.equal(a["rng"]["noise"], b["rng"]["noise"]) and torch.equal(a["rng"]["data"], b["rng"]["data"])


@pytest.mark.parametrize("options", [
    {},
    {"spectral_norm": True, "minibatch_std": True, "diffaugment": "color,translation,cutout", "loss": "hinge"},
], ids=["default", "sn-mbstd-diffaug-hinge"])
def test_resume_is_bit_identical(tmp_path, digits, device, options, request):
    if device.startswith("cuda"):
        # cuDNN's fastest kernels reduce in a nondeterministic order; the promise holds with deterministic
        # kernels (bench/gpu_check.sh sets CUBLAS_WORKSPACE_CONFIG for them).
        torch.use_deterministic_algorithms(True)
        request.addfinalizer(lambda: torch.use_deterministic_algorithms(False))
    # batch 64 over 1797 digits: 20 steps cross no epoch, so use a small dataset to cross one too.
    small = ImageSet("digits-small", digits.images[:200], "digits-small")
    config = tiny_config(steps=20, **options)
    straight = train(config, small, tmp_path / "straight", device=device)
    first = train(config.replace(steps=10), small, tmp_path / "resumed", device=device)
    resumed = train(config, small, tmp_path / "resumed", device=device, resume_from=first.checkpoint_path)
    a, b = load_training_state(straight.checkpoint_path), load_training_state(resumed.checkpoint_path)
    assert a["epoch"] >= 1, "the run should cross an epoch boundary"
    _states_equal(a, b)
    config_a, weights_a = read_generator(straight.generator_path)
    config_b, weights_b = read_generator(resumed.generator_path)
    assert config_a == config_b and all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_callbacks_and_files(tmp_path, digits, device):
    seen = {"progress": [], "sample": [], "checkpoint": []}
    callbacks = Callbacks(on_progress=lambda p: seen["progress"].append(p),
                          on_sample=lambda path, step: seen["sample"].append((path, step)),
                          on_checkpoint=lambda path, step: seen["checkpoint"].append((path, step)))
    result = train(tiny_config(steps=12, sample_every=5, checkpoint_every=5), digits, tmp_path, device=device,
                   callbacks=callbacks, progress_every=4)
    assert [p.step for p in seen["progress"]] == [4, 8, 12]
    last = seen["progress"][-1]
    assert last.total_steps == 12 and last.percent == 100 and last.images_per_second > 0
    assert 0 <= last.d_real <= 1 and 0 <= last.d_fake <= 1 and last.eta_seconds == 0
    assert [s for _, s in seen["sample"]] == [5, 10, 12]
    assert [s for _, s in seen["checkpoint"]] == [5, 10, 12]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == \
           ["step-0000005.pt", "step-0000010.pt", "step-0000012.pt"]
    assert (tmp_path / "samples" / "step-0000010.png").exists() and result.grid_path.exists()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    assert not list(tmp_path.rglob(".*tmp")), "temporary files left behind"


def test_stop_writes_a_final_checkpoint(tmp_path, digits, device):
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > 7  # checked before every step: 7 steps run

    progress = []
    result = train(tiny_config(steps=100), digits, tmp_path, device=device,
                   callbacks=Callbacks(should_stop=should_stop, on_progress=progress.append), progress_every=5)
    assert result.stopped and result.step == 7
    assert load_training_state(result.checkpoint_path)["step"] == 7
    assert result.generator_path.exists()
    # Reported every 5 steps, and once more at the stop, so the last report is where the run stopped.
    assert [p.step for p in progress] == [5, 7] and progress[-1].images_per_second > 0
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [5, 7]


def test_variants_complete_and_make_grids(tmp_path, digits, device):
    for name, options in {"sn-diffaug-ema": {"spectral_norm": True, "diffaugment": "color,translation,cutout",
                                             "ema": 0.99},
                          "hinge": {"loss": "hinge"}, "no-ema": {"ema": 0.0}}.items():
        result = train(tiny_config(steps=6, **options), digits, tmp_path / name, device=device)
        images = Sampler.from_file(result.generator_path).images_for_seeds(range(4))
        assert images.shape == (4, 1, 32, 32) and torch.isfinite(images).all()
        assert result.grid_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_epochs_set_the_total(tmp_path, digits):
    result = train(tiny_config(steps=None, epochs=1, batch_size=600), digits, tmp_path)
    assert result.total_steps == 2  # 1797 images // 600 per batch


def test_non_finite_loss_raises(tmp_path, digits):
    trainer = Trainer(tiny_config(), digits, tmp_path)
    with torch.no_grad():
        trainer.D.main[0].weight.fill_(float("nan"))
    from core.gan.train import run
    with pytest.raises(FloatingPointError, match="non-finite"):
        run(trainer, Callbacks(), progress_every=1)


def test_resume_with_another_shape_is_a_clear_error(tmp_path, digits):
    result = train(tiny_config(steps=2), digits, tmp_path / "a")
    state = load_training_state(result.checkpoint_path)
    trainer = Trainer(tiny_config(g_channels=16), digits, tmp_path / "b")
    with pytest.raises(CheckpointError, match=r"has shape .* needs"):
        trainer.load_state_dict(state, "ckpt")


def test_resume_on_other_data_is_refused(tmp_path, digits):
    result = train(tiny_config(steps=2), digits, tmp_path / "a")
    other = ImageSet("other", digits.images.flip(0), "other-hash")
    with pytest.raises(CheckpointError, match="other data"):
        train(tiny_config(steps=4), other, tmp_path / "a", resume_from=result.checkpoint_path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the refused file is written with protocol 4
def test_training_state_refuses_pickled_code(tmp_path):
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Evil()))
    torch.save({"x": Evil()}, tmp_path / "evil2.pt")
    for name in ("evil.pt", "evil2.pt"):
        with pytest.raises(CheckpointError, match="not a readable training checkpoint"):
            load_training_state(tmp_path / name)
    assert not marker.exists()


def test_training_actually_learns(tmp_path, digits):
    # After a short run the distribution of pixel values of G's images moves towards the real digits'
    # (dark background, bright strokes), away from the grey of an untrained G. The FID test in
    # test_quality.py checks the images themselves.
    config = tiny_config(steps=150, g_channels=16, d_channels=16, batch_size=32)
    result = train(config, digits, tmp_path)
    trained = Sampler.from_file(result.generator_path).images_for_seeds(range(64))
    untrained = Trainer(config, digits, tmp_path / "u").render_grid()
    real = digits.images[:64].float() / 127.5 - 1
    quantiles = torch.linspace(0.01, 0.99, 99)

    def pixel_distance(images):  # 1-D Wasserstein distance between the pixel-value distributions
        return (images.flatten().quantile(quantiles) - real.flatten().quantile(quantiles)).abs().mean()

    assert pixel_distance(trained) < 0.7 * pixel_distance(untrained)


def test_evaluation_scores_every_eval_every_steps_and_keeps_the_lowest_fid(tmp_path, digits, device, cache_dir):
    progress, bests = [], []
    config = tiny_config(steps=30, eval_every=10, eval_num=64, eval_net="digits", checkpoint_every=20)
    result = train(config, digits, tmp_path / "run", device=device, cache_dir=cache_dir,
                   callbacks=Callbacks(on_progress=progress.append,
                                       on_best=lambda path, best: bests.append((path.read_bytes(), dict(best)))))
    scored = {p.step: p.fid for p in progress if p.fid is not None}
    assert sorted(scored) == [10, 20, 30]
    best_step = min(scored, key=scored.get)
    assert result.best == {"step": best_step, "fid": scored[best_step], "kid": result.best["kid"]}
    # on_best was called for each new minimum, in order, and the file holds that step's generator
    assert [b["fid"] for _, b in bests] == sorted({b["fid"] for _, b in bests}, reverse=True)
    assert bests[-1][1] == result.best
    assert result.final_scores["step"] == 30 and result.final_scores["fid"] == scored[30]
    best_config, best_weights = read_generator(tmp_path / "run" / "best-generator.safetensors")
    assert best_config == config
    # The FID recorded for the best step is the one an evaluation of the exported best generator gives.
    from core.gan.metrics import evaluate
    sampler = Sampler.from_file(tmp_path / "run" / "best-generator.safetensors")
    again = evaluate(lambda s, c: sampler.images_for_seeds(range(s, s + c)), digits.images, dataset="digits",
                     metrics=("fid",), num=64, feature_net="digits", cache_dir=cache_dir)
    assert again["fid"] == pytest.approx(result.best["fid"], rel=1e-6)


def test_a_resumed_run_keeps_its_best_so_far(tmp_path, digits, device, cache_dir):
    config = tiny_config(steps=20, eval_every=10, eval_num=32, eval_net="digits")
    first = train(config.replace(steps=10), digits, tmp_path, device=device, cache_dir=cache_dir)
    assert load_training_state(first.checkpoint_path)["best"] == first.best and first.best["step"] == 10
    # A best the host knows of (a job row) wins over the checkpoint's, and a worse later FID does not replace it.
    unbeatable = {"step": 10, "fid": -1.0, "kid": 0.0}
    resumed = train(config, digits, tmp_path, device=device, cache_dir=cache_dir, resume_from=first.checkpoint_path,
                    best=unbeatable)
    assert resumed.best == unbeatable and resumed.final_scores["step"] == 20
    from_checkpoint = train(config.replace(steps=30), digits, tmp_path, device=device, cache_dir=cache_dir,
                            resume_from=resumed.checkpoint_path)
    assert from_checkpoint.best == unbeatable  # kept in the checkpoint too


def test_lr_d_sets_only_the_discriminators_rate(tmp_path, digits):
    same = Trainer(tiny_config(lr=3e-4, lr_d=None), digits, tmp_path / "same")  # None: D follows lr
    assert [g["lr"] for g in same.opt_g.param_groups + same.opt_d.param_groups] == [3e-4, 3e-4]
    ttur = Trainer(tiny_config(lr=3e-4, lr_d=9e-4), digits, tmp_path / "ttur")
    assert ttur.opt_g.param_groups[0]["lr"] == 3e-4 and ttur.opt_d.param_groups[0]["lr"] == 9e-4
