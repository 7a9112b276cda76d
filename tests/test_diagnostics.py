"""Tests of vidnoise.diagnostics: each statistic against a value known independently."""

from __future__ import annotations

import math

import numpy as np
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


# ----------------------------------------------------------------------------- trust pass
@pytest.mark.parametrize("fill", ["all", "one", "inf"])
def test_assert_white_fails_on_non_finite(fill):
    x = randn((2, 16, 32, 32), generator=gen(6))  # 32,768 values
    if fill == "all":
        x = torch.full((2, 16, 32, 32), float("nan"))
        count = x.numel()
    else:
        x = randn((8, 32, 32, 32), generator=gen(6))  # 262,144 values
        x[3, 1, 4, 5] = float("nan") if fill == "one" else float("inf")
        count = 1
    with pytest.raises(AssertionError, match=f"{count} of {x.numel()} values are not finite"):
        assert_white(x)
    rep = noise_report(x)
    assert rep.nonfinite == count and rep.failures() == ["nonfinite"]


def manual_max_corr(x: torch.Tensor, axis: int) -> float:
    """max_i |Σab / sqrt(Σa² Σb²)| over neighbour slices of the globally standardised x,
    written with numpy, slice by slice."""
    z = x.double().numpy()
    z = (z - z.mean()) / z.std()
    z = np.moveaxis(z, axis, 0)
    best = 0.0
    for i in range(z.shape[0] - 1):
        a, b = z[i].ravel(), z[i + 1].ravel()
        best = max(best, abs(float(a @ b / np.sqrt((a @ a) * (b @ b)))))
    return best


def test_correlation_is_a_coefficient_in_unit_interval():
    n = randn((3, 1, 8, 8), generator=gen(7))
    up = resample_noise(n, (16, 16), mode="nearest")  # pairs inside 2x2 cells are copies
    rep = noise_report(up)
    for axis, value in rep.neighbour_corr.items():
        assert -1.0 <= value <= 1.0
        assert value == pytest.approx(1.0, abs=1e-12), axis
    x = randn((4, 3, 5, 7), generator=gen(8))
    rep = noise_report(x)
    assert rep.neighbour_corr["H"] == pytest.approx(manual_max_corr(x, 2), abs=1e-12)
    assert rep.neighbour_corr["W"] == pytest.approx(manual_max_corr(x, 3), abs=1e-12)


def frame_correlated(shape, rho, axis, seed):
    """AR(1) along ``axis``: x_t = ρ x_{t-1} + sqrt(1-ρ²) e_t (unit variance, lag-1 corr ρ)."""
    e = randn(shape, generator=gen(seed)).movedim(axis, 0)
    out = e.clone()
    for t in range(1, e.shape[0]):
        out[t] = rho * out[t - 1] + math.sqrt(1 - rho**2) * e[t]
    return out.movedim(0, axis)


@pytest.mark.parametrize("layout, axis", [(None, 2), ("BCTHW", 2), ("BTCHW", 1)])
def test_video_checks_frames_by_default(layout, axis):
    shape = (4, 8, 8, 16, 16)
    x = frame_correlated(shape, 0.5, axis, seed=9)
    rep = noise_report(x, layout=layout)
    assert rep.axes["T"] == axis
    assert abs(rep.neighbour_corr["T"] - 0.5) < 4 * rep.tolerances["corr_T"]
    with pytest.raises(AssertionError, match="corr_T"):
        assert_white(x, layout=layout)
    assert_white(randn(shape, generator=gen(10)), layout=layout)


def test_tolerance_used_is_printed_and_checked():
    x = randn((64, 64, 64), generator=gen(5)) + 0.05
    with pytest.raises(AssertionError, match=r"tol=0.01 for mean") as err:
        assert_white(x, tol=0.01)
    assert "0 ± 0.01000" in str(err.value)
    rep = noise_report(x)
    assert f"0 ± {rep.tolerances['mean']:.5f}" in str(rep)
    for bad in (float("nan"), -1.0, 0.0, float("inf")):
        with pytest.raises(ValueError, match="tol"):
            rep.failures(tol=bad)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: noise_report(torch.zeros(4, 4, device="meta")), ValueError, "meta"),
        (lambda: noise_report(torch.zeros(4, 4, dtype=torch.complex64)), ValueError, "x must"),
        (lambda: noise_report(torch.zeros(4, 4, dtype=torch.bool)), ValueError, "x must"),
        (lambda: noise_report(torch.randn(4, 4), block=2.0), TypeError, "block"),
        (lambda: noise_report(torch.randn(4, 4), block="2"), TypeError, "block"),
        (lambda: noise_report(torch.randn(4, 4), layout="BCTHW"), ValueError, "layout"),
        (lambda: noise_report(torch.randn(2, 2, 2, 4, 4), layout="THW"), ValueError, "layout"),
        (lambda: noise_report(torch.randn(4, 4), z_score=float("nan")), ValueError, "z_score"),
    ],
)
def test_bad_input_names_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
