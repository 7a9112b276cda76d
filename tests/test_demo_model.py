"""Demo model: one set of weights at every pyramid resolution, conditioning, bad shapes."""

import pytest
import torch

from vidnoise.demo.model import ModelConfig, TinyVideoUNet

TINY = ModelConfig(width=8, mults=(1, 2, 4), emb_dim=32, groups=4, stages=3)


def test_default_size_is_about_a_million_parameters():
    n = sum(p.numel() for p in TinyVideoUNet().parameters())
    assert 1.0e6 <= n <= 3.0e6


@pytest.mark.parametrize("res,stage", [(8, 0), (16, 1), (32, 2)])
def test_shapes_at_each_pyramid_resolution(res, stage):
    torch.manual_seed(0)
    m = TinyVideoUNet(TINY)
    torch.nn.init.normal_(m.out.weight, std=0.1)  # not the zero init: see real outputs
    x = torch.randn(2, 3, 4, res, res)
    v = m(x, torch.tensor([900.0, 10.0]), stage)
    assert v.shape == x.shape and torch.isfinite(v).all()
    v2 = m(x, 500.0, torch.tensor([stage, stage]))
    assert v2.shape == x.shape
    # timestep and stage change the output
    assert not torch.allclose(m(x, 900.0, stage), m(x, 10.0, stage))
    assert not torch.allclose(m(x, 500.0, 0), m(x, 500.0, 2))


def test_untrained_predicts_zero():
    m = TinyVideoUNet(TINY)
    assert torch.count_nonzero(m(torch.randn(1, 3, 2, 8, 8), 1.0, 0)) == 0


def test_condition_channels_any_resolution():
    torch.manual_seed(0)
    m = TinyVideoUNet(ModelConfig(width=8, mults=(1, 2), emb_dim=32, groups=4,
                                  cond_channels=3))
    x = torch.randn(2, 3, 4, 8, 8)
    cond = torch.randn(2, 3, 4, 16, 16)  # full resolution: resized to the stage
    assert m(x, 100.0, 0, cond=cond).shape == x.shape
    assert m(x, 100.0, 0).shape == x.shape  # no condition: zeros


def test_bad_shapes_raise():
    m = TinyVideoUNet(TINY)
    with pytest.raises(ValueError, match="multiples of 4"):
        m(torch.randn(1, 3, 2, 6, 6), 1.0, 0)
    with pytest.raises(ValueError, match="shape"):
        m(torch.randn(1, 2, 2, 8, 8), 1.0, 0)
