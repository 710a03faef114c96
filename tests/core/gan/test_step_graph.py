"""The train step as a CUDA graph (core.gan.step_graph): where it falls back and says why, that the step draws no
random numbers of its own (what makes it capturable with exact resume), and, on a GPU (DCGAN_TEST_DEVICE=cuda,
bench/gpu_check.sh), that a graphed run computes exactly what an eager one does and resumes across the two."""

import json

import pytest
import torch

from core.gan.checkpoint import load_training_state
from core.gan.config import TrainConfig
from core.gan.data import ImageSet, load_images
from core.gan.step_graph import GRAPHED, choose_step_mode
from core.gan.train import Callbacks, Trainer, train
from tests.conftest import TEST_DEVICE, tiny_config
from tests.core.gan.test_train import _states_equal

on_cuda = pytest.mark.skipif(not TEST_DEVICE.startswith("cuda"), reason="needs DCGAN_TEST_DEVICE=cuda")
AUGMENTED = {"diffaugment": "color,translation,cutout", "ema": 0.99}


@pytest.fixture(scope="module")
def digits(cache_dir):
    data = load_images("digits", 32, 1, cache_dir=cache_dir)
    return ImageSet("digits-small", data.images[:200], "digits-small")


def test_on_a_cpu_cuda_graphs_falls_back_says_why_and_trains_the_same(tmp_path, digits):
    graphs = Trainer(tiny_config(cuda_graphs=True, **AUGMENTED), digits, tmp_path / "a", device="cpu")
    eager = Trainer(tiny_config(cuda_graphs=False, **AUGMENTED), digits, tmp_path / "b", device="cpu")
    assert graphs.step_mode == "eager (cuda_graphs needs a CUDA device)"
    assert eager.step_mode == "eager (cuda_graphs is off)"
    for _ in range(5):
        stats_a, stats_b = graphs.train_step(), eager.train_step()
        assert all(torch.equal(stats_a[k], stats_b[k]) for k in ("loss_d", "loss_g", "d_real", "d_fake"))
    _states_equal(graphs.state_dict(), eager.state_dict())


def test_the_reasons_a_cuda_step_is_not_graphed():
    cuda = torch.device("cuda")
    assert choose_step_mode(tiny_config(cuda_graphs=True), cuda, "fp32") == GRAPHED
    assert choose_step_mode(tiny_config(cuda_graphs=True), cuda, "bf16") == GRAPHED
    assert choose_step_mode(tiny_config(cuda_graphs=True), cuda, "fp16").startswith("eager (fp16's grad scaler")
    assert choose_step_mode(tiny_config(cuda_graphs=True, compile=True), cuda, "fp32") == \
        "eager (cuda_graphs is not combined with compile=True)"
    assert choose_step_mode(tiny_config(cuda_graphs=False), cuda, "fp32") == "eager (cuda_graphs is off)"
    assert TrainConfig().cuda_graphs is False  # the default until a GPU run has measured it (bench/gpu_check.sh)


def test_the_step_reads_its_randomness_from_the_inputs_and_draws_none(tmp_path, digits):
    # What a captured graph needs: everything random is in trainer.inputs before the step computes, so a
    # replay consumes exactly the numbers the eager step would, and the generators move only in fill().
    trainer = Trainer(tiny_config(**AUGMENTED), digits, tmp_path, device="cpu")
    trainer.inputs.fill(trainer._next_batch(), trainer.config.aug_policies, trainer.noise_rng, 0.5)
    assert [sorted(p) for p in trainer.inputs.augments] == \
        [["brightness", "contrast", "cutout_x", "cutout_y", "shift_x", "shift_y"]] * 3
    noise_state, global_state = trainer.noise_rng.get_state(), torch.random.get_rng_state()
    before = [p.clone() for p in trainer.ema.model.parameters()]
    stats = trainer._compute_step()
    assert torch.equal(trainer.noise_rng.get_state(), noise_state)
    assert torch.equal(torch.random.get_rng_state(), global_state)
    assert stats.shape == (4,) and torch.isfinite(stats).all()
    # The EMA moved by the weight in the inputs (0.5: halfway to G's new weights).
    for average, old, current in zip(trainer.ema.model.parameters(), before, trainer.G.parameters()):
        assert torch.allclose(average, (old + current.detach()) / 2, atol=1e-6)


def test_a_graphed_run_s_checkpoint_loads_into_an_eager_one(tmp_path, digits):
    # A graphed CUDA run saves its Adam groups with capturable=True (and `step` as a device tensor); an eager
    # run that loads it must not keep that flag, or every eager step would run the capturable code path.
    first = train(tiny_config(steps=3), digits, tmp_path / "a", device="cpu")
    state = load_training_state(first.checkpoint_path)
    for key in ("opt_g", "opt_d"):
        for group in state[key]["param_groups"]:
            group["capturable"] = True
    trainer = Trainer(tiny_config(steps=6), digits, tmp_path / "b", device="cpu")
    trainer.load_state_dict(state, "ckpt")
    assert all(not g["capturable"] for g in trainer.opt_g.param_groups + trainer.opt_d.param_groups)
    trainer.train_step()
    assert trainer.step == 4


@on_cuda
def test_on_cuda_the_step_is_captured_after_the_warm_up(tmp_path, digits, device):
    trainer = Trainer(tiny_config(cuda_graphs=True, **AUGMENTED), digits, tmp_path, device=device)
    assert trainer.step_mode == GRAPHED
    for _ in range(6):
        trainer.train_step()
    assert trainer._graphed.graph is not None, trainer.step_mode
    assert all(g["capturable"] for g in trainer.opt_g.param_groups + trainer.opt_d.param_groups)


@on_cuda
@pytest.mark.parametrize("options", [{}, {"spectral_norm": True, "minibatch_std": True, "loss": "hinge"},
                                     {"precision": "bf16"}], ids=["default", "sn-mbstd-hinge", "bf16"])
def test_on_cuda_graphed_and_eager_steps_compute_the_same(tmp_path, digits, device, options, request):
    torch.use_deterministic_algorithms(True)  # cuDNN's fastest kernels reduce in a nondeterministic order
    request.addfinalizer(lambda: torch.use_deterministic_algorithms(False))
    config = tiny_config(steps=12, cuda_graphs=True, **AUGMENTED, **options)
    graphed = train(config, digits, tmp_path / "graphed", device=device)
    eager = train(config.replace(cuda_graphs=False), digits, tmp_path / "eager", device=device)
    _states_equal(load_training_state(graphed.checkpoint_path), load_training_state(eager.checkpoint_path))


@on_cuda
def test_on_cuda_resume_crosses_graphed_and_eager_runs(tmp_path, digits, device, request):
    torch.use_deterministic_algorithms(True)
    request.addfinalizer(lambda: torch.use_deterministic_algorithms(False))
    config = tiny_config(steps=16, cuda_graphs=True, **AUGMENTED)
    straight = train(config, digits, tmp_path / "straight", device=device)
    half = train(config.replace(steps=8), digits, tmp_path / "resumed", device=device)
    # The second half eager, from the graphed half's checkpoint (train() rebuilds the config from it).
    state = load_training_state(half.checkpoint_path)
    trainer = Trainer(config.replace(cuda_graphs=False), digits, tmp_path / "resumed", device=device)
    trainer.load_state_dict(state, "half")
    assert trainer.step_mode == "eager (cuda_graphs is off)"
    while trainer.step < 16:
        trainer.train_step()
    _states_equal(load_training_state(straight.checkpoint_path), load_training_state(trainer.save_checkpoint()))


def test_the_step_mode_rides_on_the_progress_a_job_shows(tmp_path, digits):
    progress = []
    train(tiny_config(steps=4, cuda_graphs=True), digits, tmp_path, device="cpu",
          callbacks=Callbacks(on_progress=progress.append), progress_every=2)
    assert [p.step_mode for p in progress] == ["eager (cuda_graphs needs a CUDA device)"] * 2
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step_mode"] == "eager (cuda_graphs needs a CUDA device)"
