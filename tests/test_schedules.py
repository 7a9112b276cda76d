"""Tests for vidnoise.schedules: published grids, closed forms computed another way, checks."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from vidnoise import schedules as S
from vidnoise.paths import VPPath


def _is_grid(g, length):
    assert g.dtype == torch.float32 and g.dim() == 1 and g.shape == (length,)
    assert bool((g[1:] <= g[:-1]).all()), g
    assert g[-1] == 0.0


# ----------------------------------------------------------------------------- linear
def test_linear_values():
    g = S.linear(4)
    _is_grid(g, 5)
    assert g.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    g = S.linear(3, sigma_max=0.9, sigma_min=0.3)
    np.testing.assert_allclose(g.numpy(), [0.9, 0.7, 0.5, 0.3], rtol=1e-7)
    assert S.linear(1).tolist() == [1.0, 0.0]
    np.testing.assert_allclose(S.linear(50).numpy(), np.linspace(1, 0, 51), rtol=0, atol=6e-8)


# ----------------------------------------------------------------------------- karras
def _np_karras(n, lo, hi, rho):
    """Independent loop over the published formula."""
    if n == 1:
        return [hi, 0.0]
    out = []
    for i in range(n):
        out.append((hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho)
    return out + [0.0]


def test_karras_diamond_reference():
    g = S.karras(3, 2e-3, 5.0)
    _is_grid(g, 4)
    # published: [5.0, 0.283, 0.002, 0]; 3 significant figures
    np.testing.assert_allclose(g.numpy(), [5.0, 0.283, 0.002, 0.0], rtol=5e-3, atol=0)
    assert g[0] == 5.0 and g[2] == np.float32(2e-3)
    assert S.karras(1, 2e-3, 5.0).tolist() == [5.0, 0.0]


@pytest.mark.parametrize("n, lo, hi, rho", [(2, 0.1, 10.0, 7.0), (18, 0.002, 80.0, 7.0),
                                            (40, 0.0292, 14.6146, 3.0), (5, 1.0, 2.0, 1.0)])
def test_karras_against_loop(n, lo, hi, rho):
    g = S.karras(n, lo, hi, rho)
    _is_grid(g, n + 1)
    ref = np.array(_np_karras(n, lo, hi, rho), dtype=np.float64)
    # float64 computation rounded once to float32: half an ulp (2^-24 relative)
    np.testing.assert_allclose(g.numpy().astype(np.float64), ref, rtol=2**-24, atol=0)


def test_karras_rho_one_is_linear():
    np.testing.assert_allclose(S.karras(4, 1.0, 4.0, rho=1.0).numpy(), [4, 3, 2, 1, 0],
                               rtol=1e-7)


# ----------------------------------------------------------------------------- linear_quadratic
def test_linear_quadratic_mochi_fast_preset():
    g = S.linear_quadratic(8, 0.1, linear_steps=6)
    _is_grid(g, 9)
    want = [1.0, .9833, .9667, .95, .9333, .9167, .9, .6667, 0.0]  # published, 4 decimals
    np.testing.assert_allclose(g.numpy(), want, rtol=0, atol=5e-5)
    # exact fractions: 1 - i/60 for i < 6, then 0.9, 2/3, 0
    exact = [1 - i / 60 for i in range(7)] + [2 / 3, 0.0]
    np.testing.assert_allclose(g.numpy(), exact, rtol=0, atol=6e-8)


@pytest.mark.parametrize("n, tau, lin", [(64, 0.025, None), (50, 0.025, 10), (8, 0.1, 6),
                                         (30, 0.2, 20)])
def test_linear_quadratic_joint_is_c1(n, tau, lin):
    """A quadratic fitted through the quadratic part (numpy) meets the line at L with the
    line's value and slope, and passes through signal 1 at n."""
    g = S.linear_quadratic(n, tau, linear_steps=lin).double().numpy()
    big_l = n // 2 if lin is None else lin
    _is_grid(torch.from_numpy(g).float(), n + 1)
    signal = 1 - g
    i = np.arange(n + 1)
    np.testing.assert_allclose(signal[:big_l], i[:big_l] * tau / big_l, atol=1e-7)
    coef = np.polyfit(i[big_l:], signal[big_l:], 2)
    np.testing.assert_allclose(np.polyval(coef, i[big_l:]), signal[big_l:], atol=1e-6)
    assert np.polyval(coef, big_l) == pytest.approx(tau, abs=1e-6)  # value at the joint
    slope = np.polyval(np.polyder(coef), big_l)
    assert slope == pytest.approx(tau / big_l, abs=1e-5)  # slope at the joint
    assert np.polyval(coef, n) == pytest.approx(1.0, abs=1e-6)


def test_linear_quadratic_bad_input():
    with pytest.raises(ValueError, match=r"threshold_noise must be in \(0.0, 1.0\), got 1.0"):
        S.linear_quadratic(8, 1.0)
    with pytest.raises(ValueError, match=r"threshold_noise must be in \(0.0, 1.0\), got 0.0"):
        S.linear_quadratic(8, 0.0)
    with pytest.raises(ValueError, match=r"linear_steps must be >= 1 and <= 7, got 8"):
        S.linear_quadratic(8, 0.1, linear_steps=8)
    with pytest.raises(ValueError, match=r"linear_steps must be >= 1 and <= 7, got 0"):
        S.linear_quadratic(8, 0.1, linear_steps=0)
    with pytest.raises(ValueError, match=r"n must be >= 2, got 1"):
        S.linear_quadratic(1)
    with pytest.raises(ValueError, match="linear_steps=1 .* need linear_steps >= "):
        S.linear_quadratic(10, 0.5, linear_steps=1)


# ----------------------------------------------------------------------------- shift
def test_shift_closed_form_and_fixed_points():
    x = np.linspace(0, 1, 101)
    for s in (0.3, 1.0, 3.0, 7.5):
        got = S.shift(torch.from_numpy(x), s).numpy()
        # another form of the same map: 1 / (1 + (1/sigma - 1) / s)
        with np.errstate(divide="ignore"):
            ref = np.where(x > 0, 1 / (1 + (1 / np.where(x > 0, x, 1) - 1) / s), 0.0)
        np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-15)
    assert S.shift(0.0, 3.0) == 0.0 and S.shift(1.0, 3.0) == 1.0
    assert S.shift(0.5, 3.0) == pytest.approx(0.75)
    g = S.shift(S.linear(10), 3.0)
    _is_grid(g, 11)
    assert g[0] == 1.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_shift_half_precision(dtype):
    x = torch.linspace(0, 1, 33).to(dtype)
    out = S.shift(x, 3.0)
    assert out.dtype == dtype
    ref = 3 * x.double() / (1 + 2 * x.double())
    torch.testing.assert_close(out, ref.to(dtype), rtol=0, atol=0)  # one rounding


def test_shift_bad_input():
    with pytest.raises(ValueError, match=r"shift must be in \(0.0, inf\], got 0.0"):
        S.shift(0.5, 0.0)
    with pytest.raises(ValueError, match=r"sigmas must be in \[0.0, 1.0\], got 1.5"):
        S.shift(torch.tensor([0.5, 1.5]), 3.0)
    with pytest.raises(ValueError, match="sigmas.*nan"):
        S.shift(float("nan"), 3.0)


# ----------------------------------------------------------------------------- resolution shift
def test_resolution_shift_mu_and_flux_form():
    assert S.resolution_shift_mu(256) == pytest.approx(0.5)
    assert S.resolution_shift_mu(4096) == pytest.approx(1.15)
    assert S.resolution_shift_mu(2176) == pytest.approx(0.825)  # midpoint
    x = np.linspace(0.01, 1, 50)
    for seq in (256, 1024, 4096, 8192):
        mu = 0.5 + (1.15 - 0.5) * (seq - 256) / (4096 - 256)
        ref = math.exp(mu) / (math.exp(mu) + (1 / x - 1))  # Flux's exponential time shift
        got = S.resolution_shift(torch.from_numpy(x), seq).numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-13)
    # longer sequences shift more
    assert S.resolution_shift(0.5, 4096) > S.resolution_shift(0.5, 1024) > 0.5


def test_resolution_shift_bad_input():
    with pytest.raises(ValueError, match=r"seq_len must be >= 1, got 0"):
        S.resolution_shift(0.5, 0)
    with pytest.raises(ValueError, match="base_seq_len must be < max_seq_len"):
        S.resolution_shift(0.5, 100, base_seq_len=4096, max_seq_len=256)


# ----------------------------------------------------------------------------- vp_sigmas
def test_vp_sigmas_against_numpy():
    betas = np.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000) ** 2
    ab = np.cumprod(1 - betas)
    t = np.array([999, 799, 599, 399, 199])  # trailing, 5 steps
    want = np.append(np.sqrt((1 - ab[t]) / ab[t]), 0.0)
    g = S.vp_sigmas(5)
    _is_grid(g, 6)
    np.testing.assert_allclose(g.numpy(), want, rtol=2**-24)
    assert g[0].item() == pytest.approx(14.6146, abs=1e-4)  # SD's published sigma_max


def test_vp_sigmas_zero_terminal_snr_floor():
    g = S.vp_sigmas(10, VPPath.cogvideox())
    _is_grid(g, 11)
    assert g[0].item() == pytest.approx(math.sqrt(2.0**24 - 1), rel=1e-6)
    assert S.vp_sigmas(10, VPPath.cogvideox(), alpha_bar_min=1e-4)[0].item() == pytest.approx(
        math.sqrt((1 - 1e-4) / 1e-4), rel=1e-6)
    with pytest.raises(TypeError, match="path must be a VPPath"):
        S.vp_sigmas(4, path="cogvideox")


# ----------------------------------------------------------------------------- all grids
@given(n=st.integers(1, 200), lo=st.floats(1e-4, 1.0), span=st.floats(1e-3, 100.0),
       rho=st.floats(0.5, 10.0))
def test_karras_property(n, lo, span, rho):
    hi = lo + span
    g = S.karras(n, lo, hi, rho)
    _is_grid(g, n + 1)
    assert g[0].item() == pytest.approx(hi, rel=1e-6)
    assert g[-2].item() == pytest.approx(hi if n == 1 else lo, rel=1e-6)


@given(n=st.integers(2, 300), tau=st.floats(0.001, 0.5), frac=st.floats(0.0, 1.0))
def test_linear_quadratic_property(n, tau, frac):
    low = max(1, math.ceil(tau * n / (2 - tau)))
    if low > n - 1:
        return
    lin = low + int(frac * (n - 1 - low))
    g = S.linear_quadratic(n, tau, linear_steps=lin)
    _is_grid(g, n + 1)
    assert g[0] == 1.0


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: S.linear(0), r"n must be >= 1, got 0"),
        (lambda: S.linear(4, 0.5, 0.5), "sigma_min must be < sigma_max"),
        (lambda: S.linear(4, 1.0, -0.1), r"sigma_min must be in \[0.0, inf\], got -0.1"),
        (lambda: S.linear(4, float("nan")), "sigma_max must be a number.*nan"),
        (lambda: S.karras(0, 0.1, 1.0), r"n must be >= 1, got 0"),
        (lambda: S.karras(3, 2.0, 1.0), "sigma_min must be < sigma_max"),
        (lambda: S.karras(3, 0.0, 1.0), r"sigma_min must be in \(0.0, inf\], got 0.0"),
        (lambda: S.karras(3, 0.1, 1.0, rho=0.0), r"rho must be in \(0.0, inf\], got 0.0"),
        (lambda: S.vp_sigmas(0), r"n must be >= 1 and <= 1000, got 0"),
        (lambda: S.linear(2.5), "n must be an integer"),
    ],
)
def test_bad_input(call, words):
    with pytest.raises((ValueError, TypeError), match=words):
        call()


def test_device_argument():
    assert S.karras(3, 0.1, 1.0, device="cpu").device.type == "cpu"
    assert S.linear(3, device=torch.device("cpu")).device.type == "cpu"


# ----------------------------------------------------------------------------- extreme inputs
def test_shift_extreme_factors_are_exact_at_the_ends_and_finite():
    """s·σ/(1 + (s-1)·σ) divided by zero at σ = 1 for s = 1e-17 (1 + (s-1) rounds to 0)."""
    assert S.shift(1.0, 1e-17) == 1.0 and S.shift(0.0, 1e-17) == 0.0
    assert S.shift(0.5, 1e-17) == pytest.approx(1e-17, rel=1e-12)
    assert S.shift(0.5, 1e300) == 1.0 and S.shift(1e-300, 1e300) == pytest.approx(0.5)
    x = torch.linspace(0, 1, 11, dtype=torch.float64)
    for s in (1e-17, 1e-300, 1e300):
        out = S.shift(x, s)
        assert bool(torch.isfinite(out).all()) and out[0] == 0.0 and out[-1] == 1.0
        assert bool((out[1:] >= out[:-1]).all())


def _decimal_karras(n, lo, hi, rho):
    """The published formula in 60-digit decimal arithmetic (no overflow at any rho)."""
    from decimal import Decimal, getcontext

    getcontext().prec = 60
    r = 1 / Decimal(rho)
    h, low = Decimal(hi) ** r, Decimal(lo) ** r
    return [float((h + Decimal(i) / Decimal(n - 1) * (low - h)) ** Decimal(rho))
            for i in range(n)]


@pytest.mark.parametrize("rho", [0.001, 0.01, 1e6])
def test_karras_extreme_rho_has_no_overflow(rho):
    """sigma_max^(1/rho) overflowed float64 (OverflowError) for rho = 0.001."""
    g = S.karras(6, 2e-3, 5.0, rho=rho)
    _is_grid(g, 7)
    # the last value is set to sigma_min exactly (60 digits do not resolve h + (low - h) there)
    ref = np.array(_decimal_karras(6, 2e-3, 5.0, rho)[:-1])
    np.testing.assert_allclose(g[:-2].numpy().astype(np.float64), ref, rtol=2**-23, atol=0)
    assert g[-2] == np.float32(2e-3)


def test_resolution_shift_overflow_is_a_named_error():
    with pytest.raises(ValueError, match=r"seq_len=10000000 gives mu=1693.*float64 range"):
        S.resolution_shift(0.5, 10**7)
    with pytest.raises(ValueError, match=r"seq_len=1 gives mu"):
        S.resolution_shift(0.5, 1, base_shift=-800.0, max_shift=-799.0)


def test_flow_grid_on_the_timestep_scale_points_at_the_converter():
    with pytest.raises(ValueError, match=r"sigmas must be in \[0.0, 1.0\].*timestep_to_sigma"):
        S.shift(torch.linspace(1000, 0, 11), 3.0)
