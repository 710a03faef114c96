import pytest
import torch
from torch import nn

from core.gan.models import (Discriminator, ExponentialMovingAverage, Generator, MinibatchStd,
                             build_discriminator, build_generator, init_dcgan_weights)
from tests.conftest import tiny_config


@pytest.mark.parametrize("size,blocks", [(32, 3), (64, 4), (128, 5)])
def test_shapes_follow_img_size(size, blocks):
    G = Generator(z_dim=8, g_channels=4, img_channels=3, img_size=size)
    D = Discriminator(d_channels=4, img_channels=3, img_size=size)
    images = G(torch.randn(2, 8))
    assert images.shape == (2, 3, size, size)
    assert D(images).shape == (2,)
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in G.modules()) == blocks + 1
    assert sum(isinstance(m, nn.Conv2d) for m in D.modules()) == blocks + 1


def test_classic_layer_pattern():
    G = Generator(100, 64, 3, 64)
    kinds = [type(m).__name__ for m in G.main]
    assert kinds[:3] == ["ConvTranspose2d", "BatchNorm2d", "ReLU"] and kinds[-1] == "Tanh"
    assert G.main[0].out_channels == 512  # ngf * 8 at 4x4, as pytorch/examples
    D = Discriminator(64, 3, 64)
    kinds = [type(m).__name__ for m in D.main]
    assert kinds[:2] == ["Conv2d", "LeakyReLU"] and "BatchNorm2d" in kinds
    assert kinds[-1] == "Conv2d"  # a logit, no Sigmoid
    assert not any(isinstance(m, nn.Sigmoid) for m in D.modules())
    assert D.main[1].negative_slope == 0.2


def test_dcgan_init_statistics():
    torch.manual_seed(0)
    G = Generator(100, 64, 3, 64)
    G.apply(init_dcgan_weights)
    conv = G.main[3].weight
    bn = G.main[1]
    assert abs(conv.std().item() - 0.02) < 0.002 and abs(conv.mean().item()) < 0.002
    assert abs(bn.weight.mean().item() - 1.0) < 0.01 and bn.bias.abs().max().item() == 0


def test_spectral_norm_replaces_batchnorm_in_d():
    D = build_discriminator(tiny_config(spectral_norm=True))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
    assert all(hasattr(m, "parametrizations") for m in D.modules() if isinstance(m, nn.Conv2d))
    assert D(torch.randn(4, 1, 32, 32)).shape == (4,)


def test_minibatch_std_adds_a_channel_that_sees_the_batch():
    layer = MinibatchStd(group_size=4)
    same = torch.ones(4, 3, 2, 2)
    varied = torch.randn(4, 3, 2, 2)
    assert layer(same).shape == (4, 4, 2, 2)
    assert layer(same)[:, 3].max() < 1e-3 < layer(varied)[:, 3].min()
    D = build_discriminator(tiny_config(minibatch_std=True))
    assert D(torch.randn(6, 1, 32, 32)).shape == (6,)  # a batch not divisible by the group size


def test_ema_tracks_weights_with_warmup():
    G = build_generator(tiny_config())
    ema = ExponentialMovingAverage(G, decay=0.999)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(1.0)
    ema.update(G, step=0)  # warm-up decay (1+0)/(10+0) = 0.1: mostly the new weights
    moved = next(ema.model.parameters()) - (next(G.parameters()) - 1.0)
    assert torch.allclose(moved, torch.full_like(moved, 0.9), atol=1e-6)
    assert not any(p.requires_grad for p in ema.model.parameters())
