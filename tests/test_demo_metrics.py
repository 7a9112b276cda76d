"""Demo quality figures: they separate real clips from noise and from wrong colours."""

import torch

from vidnoise.demo.data import MovingShapes
from vidnoise.demo.metrics import (
    RandomVideoEncoder,
    colour_histogram_distance,
    features,
    frechet_distance,
    quality_figures,
    temporal_stats,
)


def test_encoder_is_fixed_by_seed():
    x = MovingShapes(size=16, frames=4).batch(range(4))
    a = features(x, RandomVideoEncoder(3, seed=0))
    assert a.shape == (4, 224)
    assert torch.equal(a, features(x, RandomVideoEncoder(3, seed=0)))
    assert not torch.equal(a, features(x, RandomVideoEncoder(3, seed=1)))


def test_figures_separate_real_from_noise_and_wrong_colours():
    ref = MovingShapes(size=16, frames=4, seed=1).batch(range(48))
    real = MovingShapes(size=16, frames=4, seed=2).batch(range(48))
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(real.shape, generator=g).clamp(-1, 1)
    enc = RandomVideoEncoder(3)
    q_real = quality_figures(real, ref, enc)
    q_noise = quality_figures(noise, ref, enc)
    q_swap = quality_figures(real[:, [2, 0, 1]], ref, enc)  # channels permuted
    assert q_real["fd"] * 5 < q_noise["fd"]
    assert q_real["colour_tv"] < q_swap["colour_tv"] and q_real["colour_tv"] < 0.3
    assert q_noise["flicker_gap"] > 5 * q_real["flicker_gap"]
    assert frechet_distance(features(ref, enc), features(ref, enc)) < 1e-6
    assert colour_histogram_distance(ref, ref) == 0.0
    t = temporal_stats(ref)
    assert t["motion"] > 0 and t["flicker"] > 0
