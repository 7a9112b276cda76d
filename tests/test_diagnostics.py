"""Tests of vidnoise.diagnostics: each statistic against a value known independently."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vidnoise.diagnostics import assert_white, noise_report
from vidnoise.noise import block_noise, randn, resample_noise


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_white_noise_passes_and_table_prints():
    x = randn((8, 4, 6, 32, 32), generator=gen(0))
    rep = assert_white(x, dims=3, block=(2, 2))
    assert set(rep.neighbour_corr) == {"T", "H", "W"}
    text = str(rep)
    for word in ("mean", "std", "along T", "along H", "along W", "(2, 2) blocks", "flatness"):
        assert word in text


def test_block_noise_statistics_are_measured():
    for gamma in (0.2, 1 / 3):
        x = block_noise((16, 4, 32, 32), gamma=gamma, generator=gen(1))
        rep = noise_report(x, block=(2, 2))
        se = rep.tolerances["block_corr"] / rep.z_score
        assert abs(rep.block_corr + gamma) < 6 * se * (1 + gamma)
        # pairs inside a block have correlation -gamma: max over positions sees it
        assert abs(rep.neighbour_corr["H"] - gamma) < rep.tolerances["corr_H"]
        with pytest.raises(AssertionError, match="not white"):
            assert_white(x, block=(2, 2))


def test_pyramid_flow_constant_two_fails_on_nearest():
    n = randn((500, 1, 32, 32), generator=gen(2))
    wrong = F.interpolate(n, (16, 16), mode="nearest") * 2  # variance 4
    with pytest.raises(AssertionError, match="std"):
        assert_white(wrong)
    assert_white(resample_noise(n, (16, 16), mode="nearest"))


def test_upsampled_noise_is_correlated():
    n = randn((200, 1, 16, 16), generator=gen(3))
    up = resample_noise(n, (32, 32), mode="bilinear")
    rep = noise_report(up)
    assert abs(rep.std - 1) < rep.tolerances["std"] * 3  # variance fixed
    assert rep.neighbour_corr["W"] > 0.5  # correlation is not
    assert rep.spectral_flatness < rep.flatness_white - rep.tolerances["flatness"]


def test_flatness_expectation_for_one_slice():
    # one 2-D slice: each bin ~ Exp(1): flatness -> exp(digamma(1)) = exp(-euler_gamma)
    rep = noise_report(randn((128, 128), generator=gen(4)))
    assert abs(rep.flatness_white - math.exp(-0.5772156649)) < 1e-9
    assert abs(rep.spectral_flatness - rep.flatness_white) < rep.tolerances["flatness"]


def test_tol_override_and_mean_shift():
    x = randn((64, 64, 64), generator=gen(5)) + 0.05
    with pytest.raises(AssertionError, match="mean"):
        assert_white(x)
    assert_white(x, tol=0.1)


@pytest.mark.parametrize(
    "call, exc",
    [
        (lambda: noise_report(torch.zeros(4, 4, dtype=torch.int64)), ValueError),
        (lambda: noise_report(torch.zeros(4), dims=2), ValueError),
        (lambda: noise_report(torch.zeros(4, 4), dims=4), ValueError),
        (lambda: noise_report(torch.zeros(4, 5), block=(2, 2)), ValueError),
        (lambda: noise_report(torch.zeros(1, 1)), ValueError),
        (lambda: assert_white(torch.randn(8, 8), tol=-1.0), ValueError),
        (lambda: noise_report([1.0, 2.0]), TypeError),
    ],
)
def test_bad_input(call, exc):
    with pytest.raises(exc):
        call()
