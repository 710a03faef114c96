"""bench/standard_recipe.py is pytorch/examples' recipe, the quality baseline: it must zero D's gradients every
step (the seed article's loop does not, and that is what makes it a broken baseline) and use the DCGAN init."""

import copy

import torch

from bench.seed_recipe import SeedRecipe
from bench.standard_recipe import StandardRecipe


def _second_step_grads(recipe_class) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """D's gradients after a second step, and after the same step from the same state with no gradients left
    over from the first."""
    real = torch.rand(8, 1, 32, 32) * 2 - 1
    recipe = recipe_class(nz=8, ngf=4, ndf=4, nc=1, img_size=32, seed=0)
    recipe.step(real)
    fresh = copy.deepcopy(recipe)
    for parameter in [*fresh.discriminator.parameters(), *fresh.generator.parameters()]:
        parameter.grad = None
    torch.manual_seed(1)
    recipe.step(real)
    torch.manual_seed(1)
    fresh.step(real)
    return ([p.grad.clone() for p in recipe.discriminator.parameters()],
            [p.grad.clone() for p in fresh.discriminator.parameters()])


def test_the_standard_recipe_zeroes_d_s_gradients_every_step():
    kept, fresh = _second_step_grads(StandardRecipe)
    assert all(torch.equal(a, b) for a, b in zip(kept, fresh))


def test_the_article_s_loop_does_not_which_is_why_it_is_not_the_baseline():
    kept, fresh = _second_step_grads(SeedRecipe)
    assert not all(torch.allclose(a, b) for a, b in zip(kept, fresh))


def test_weights_follow_the_dcgan_init():
    recipe = StandardRecipe(nz=100, ngf=64, ndf=64, nc=1, img_size=32, seed=0)
    convs = [m.weight for m in recipe.generator.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    norms = [m for m in recipe.discriminator.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    weights = torch.cat([w.flatten() for w in convs])
    assert abs(weights.std().item() - 0.02) < 0.002 and abs(weights.mean().item()) < 0.002
    assert all(abs(m.weight.mean().item() - 1.0) < 0.01 and torch.all(m.bias == 0) for m in norms)


def test_a_snapshot_keeps_g_as_it_was_when_the_clock_ran_out():
    """bench/quality.py --equal-time scores this copy: G after the first step past the time, not the final G."""
    from bench.standard_recipe import train_standard_recipe

    real = [torch.rand(8, 1, 32, 32) * 2 - 1]
    early, never = {"seconds": 0.0}, {"seconds": 3600.0}
    final = train_standard_recipe(real, 3, nz=8, ngf=4, ndf=4, nc=1, img_size=32, snapshot=early)
    assert early["steps"] == 1
    one_step = train_standard_recipe(real, 1, nz=8, ngf=4, ndf=4, nc=1, img_size=32, snapshot=never)
    assert "generator" not in never
    for copied, reference, last in zip(early["generator"].parameters(), one_step.parameters(), final.parameters()):
        assert torch.equal(copied, reference) and not torch.equal(copied, last)
