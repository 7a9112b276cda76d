"""GaussianMixture and LinearGaussianAR oracles against independent computations."""

from __future__ import annotations

import math

import pytest
import torch

from _sampler_helpers import mixture
from vidnoise.oracles import GaussianMixture, LinearGaussianAR


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _mixture_1d():
    return GaussianMixture([0.3, 0.7], torch.tensor([[-1.2], [0.8]]),
                           torch.tensor([[[0.09]], [[0.25]]]))


def _quadrature_posterior(gm, a, b, x, fn):
    """E[fn(x0) | a·x0 + b·ε = x] for a 1-D mixture by the trapezoid rule on a fine grid."""
    x0 = torch.linspace(-8, 8, 40001, dtype=torch.float64)
    prior = sum(
        w * torch.exp(-0.5 * (x0 - m[0]) ** 2 / c[0, 0]) / math.sqrt(2 * math.pi * c[0, 0])
        for w, m, c in zip(gm.weights, gm.means, gm.covs)
    )
    lik = torch.exp(-0.5 * (x[:, None] - a * x0[None]) ** 2 / b**2)
    wts = prior[None] * lik
    vals = fn(x0[None], x[:, None])  # (len(x), len(grid))
    return torch.trapezoid(wts * vals, x0, dim=1) / torch.trapezoid(wts, x0, dim=1)


@pytest.mark.usefixtures("one_thread")
def test_denoiser_matches_quadrature_1d():
    gm = _mixture_1d()
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    for sigma in (0.05, 0.4, 2.0, 20.0):
        want = _quadrature_posterior(gm, 1.0, sigma, x, lambda t, xo: t.expand(len(x), -1))
        got = gm.denoiser(x[:, None], torch.full((13,), sigma, dtype=torch.float64))[:, 0]
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-9)


@pytest.mark.usefixtures("one_thread")
def test_velocity_matches_quadrature_1d():
    # E[ε - x0 | x] with ε = (x - (1-σ)x0)/σ, integrated directly.
    gm = _mixture_1d()
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)
    for sigma in (0.1, 0.5, 0.9, 1.0):
        want = _quadrature_posterior(gm, 1 - sigma, sigma, x,
                                     lambda t, xo, s=sigma: (xo - (1 - s) * t) / s - t)
        got = gm.velocity(x[:, None], sigma)[:, 0]
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-9)


def test_single_component_equals_gaussian_data_posterior():
    # An independent implementation: GaussianData.posterior_mean with dense matrices.
    gaussian = pytest.importorskip("vidnoise.oracles.gaussian")
    g = _gen(1)
    m = torch.randn(9, 9, generator=g, dtype=torch.float64)
    cov = 0.3 * m @ m.T + 0.05 * torch.eye(9, dtype=torch.float64)
    mean = torch.randn(9, generator=g, dtype=torch.float64)
    gm = GaussianMixture([1.0], mean[None], cov[None])
    gd = gaussian.GaussianData(mean, cov)
    x = torch.randn(5, 9, generator=g, dtype=torch.float64)
    eye = torch.eye(9, dtype=torch.float64)
    for a, b in ((1.0, 0.3), (0.4, 0.6), (1.0, 7.0)):
        torch.testing.assert_close(gm.posterior_mean(a, b, x),
                                   gd.posterior_mean(a * eye, b * eye, x), rtol=1e-9, atol=1e-11)


def test_per_sample_sigmas_and_dtype():
    gm = mixture(3, seed=2)
    x = torch.randn(4, 3, generator=_gen(2), dtype=torch.float64)
    s = torch.tensor([0.1, 0.5, 1.0, 3.0], dtype=torch.float64)
    batch = gm.denoiser(x, s)
    for i in range(4):
        torch.testing.assert_close(batch[i : i + 1], gm.denoiser(x[i : i + 1], float(s[i])))
    assert gm.denoiser(x.float(), s.float()).dtype == torch.float32


def test_sample_moments_within_sample_size_bounds():
    # n = 40000 samples: z-scores of mean (se sqrt(C_ii/n)), covariance entries
    # (se sqrt((C_ij² + C_ii C_jj)/n), Gaussian-approximate for a mixture: the mixture's
    # fourth moments make it slightly larger, a 5-sigma bound covers that) and the component
    # frequencies (binomial se) against the exact mixture values.
    gm = mixture(3, seed=3)
    n = 40000
    x = gm.sample(n, generator=_gen(3))
    assert x.shape == (n, 3) and x.dtype == torch.float64
    c = gm.cov
    zm = (x.mean(0) - gm.mean) / (c.diagonal() / n).sqrt()
    zc = (torch.cov(x.T) - c) / ((c * c + torch.outer(c.diagonal(), c.diagonal())) / n).sqrt()
    assert zm.abs().max() < 5 and zc.abs().max() < 5, (zm, zc)
    # the same check has power: a sample with the wrong weights fails it
    wrong = GaussianMixture(gm.weights.flip(0), gm.means, gm.covs).sample(n, generator=_gen(3))
    zw = (wrong.mean(0) - gm.mean) / (c.diagonal() / n).sqrt()
    assert zw.abs().max() > 5


def test_mixture_moments_closed_form():
    gm = _mixture_1d()
    m = 0.3 * -1.2 + 0.7 * 0.8
    second = 0.3 * (0.09 + 1.44) + 0.7 * (0.25 + 0.64)
    assert float(gm.mean[0]) == pytest.approx(m, rel=1e-6)
    assert float(gm.cov[0, 0]) == pytest.approx(second - m * m, rel=1e-6)


def test_mixture_bad_input():
    with pytest.raises(ValueError, match="weights must be"):
        GaussianMixture([0.5, -0.5], torch.zeros(2, 1), torch.ones(2, 1, 1))
    with pytest.raises(ValueError, match="means must be"):
        GaussianMixture([1.0], torch.zeros(2, 1), torch.ones(1, 1, 1))
    with pytest.raises(ValueError, match="covs must be"):
        GaussianMixture([1.0], torch.zeros(1, 2), torch.ones(1, 3, 3))
    with pytest.raises(ValueError, match="positive semi-definite"):
        GaussianMixture([1.0], torch.zeros(1, 2), -torch.eye(2)[None])
    gm = _mixture_1d()
    with pytest.raises(ValueError, match=r"x must be \(N, 1\)"):
        gm.denoiser(torch.zeros(3, 2), 1.0)


# ----------------------------------------------------------------------------- AR oracle
def test_ar_denoiser_and_velocity_closed_forms():
    ar = LinearGaussianAR(0.9, 0.2)
    g = _gen(4)
    xp = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    x = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    s = torch.tensor([0.1, 1.0, 5.0], dtype=torch.float64)
    sb = s[:, None, None, None]
    m = 0.9 * xp
    # x_next | x_prev ~ N(m, q): EDM posterior m + q/(q+σ²)(x - m)
    torch.testing.assert_close(ar.denoiser(xp)(x, s), m + 0.2 / (0.2 + sb**2) * (x - m))
    # flow: x = (1-σ)x1 + σε; E[x1|x] = m + (1-σ)q/((1-σ)²q + σ²)(x - (1-σ)m); v = (x-E)/σ
    sf = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    a = (1 - sf)[:, None, None, None]
    sfb = sf[:, None, None, None]
    e = m + a * 0.2 / (a * a * 0.2 + sfb**2) * (x - a * m)
    torch.testing.assert_close(ar.velocity(xp)(x, sf), (x - e) / sfb)


def test_ar_transition_and_stationary_moments():
    # 200000 scalar draws: se of the mean sqrt(q/n), of the variance q·sqrt(2/n); 4 se.
    ar = LinearGaussianAR(0.8, 0.36)
    n = 200000
    xp = torch.full((n,), 2.0, dtype=torch.float64)
    nxt = ar.step(xp, generator=_gen(5))
    assert abs(float(nxt.mean()) - 1.6) < 4 * math.sqrt(0.36 / n)
    assert abs(float(nxt.var()) - 0.36) < 4 * 0.36 * math.sqrt(2 / n)
    assert ar.stationary_var == pytest.approx(0.36 / (1 - 0.64))
    st = ar.sample_stationary((n,), generator=_gen(6))
    assert abs(float(st.var()) - 1.0) < 4 * math.sqrt(2 / n)
    traj = ar.sample(torch.zeros(4, 2), 5, generator=_gen(7))
    assert traj.shape == (4, 5, 2)


def test_ar_bad_input():
    with pytest.raises(ValueError, match="q must be in"):
        LinearGaussianAR(0.5, 0.0)
    with pytest.raises(ValueError, match=r"needs \|a\| < 1"):
        _ = LinearGaussianAR(1.0, 0.1).stationary_var
    ar = LinearGaussianAR(0.5, 0.1)
    with pytest.raises(ValueError, match="x_prev must have x's shape"):
        ar.denoiser(torch.zeros(2, 3))(torch.zeros(2, 4), 1.0)
    with pytest.raises(ValueError, match="n_frames must be >= 1"):
        ar.sample(torch.zeros(2), 0)


# ----------------------------------------------------------------------------- σ = 0
def test_mixture_at_sigma_zero_is_the_exact_limit():
    """At σ = 0 the path is noiseless: D(x, 0) = x and v(x, 0) = E[ε] - x0 = -x. The old code
    gave NaN (0/0 in the velocity; 0/0 in the responsibilities of a point-mass component).
    The limit is checked against the formula at σ = 1e-7 (v(x, σ) = -x + O(σ))."""
    gm = _mixture_1d()
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None]
    assert torch.equal(gm.denoiser(x, 0.0), x)
    assert torch.equal(gm.velocity(x, 0.0), -x)
    torch.testing.assert_close(gm.velocity(x, 1e-7), -x, rtol=0, atol=1e-5)
    # per-sample σ with zeros among them: the other rows are unchanged
    s = torch.tensor([0.0, 0.5] * 4 + [0.0], dtype=torch.float64)
    v = gm.velocity(x, s)
    assert torch.equal(v[s == 0], -x[s == 0])
    torch.testing.assert_close(v[1:2], gm.velocity(x[1:2], 0.5))
    # a point-mass component (zero covariance) at σ = 0
    pm = GaussianMixture([0.5, 0.5], torch.tensor([[1.0], [-1.0]]), torch.zeros(2, 1, 1))
    pts = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    assert torch.equal(pm.denoiser(pts, 0.0), pts)
    assert torch.equal(pm.velocity(pts, 0.0), -pts)
    # σ = 1 (a = 0): E[x0 | x] is the data mean, v = x - mean
    torch.testing.assert_close(gm.velocity(x, 1.0), x - gm.mean)


def test_ar_at_sigma_zero_is_the_exact_limit():
    ar = LinearGaussianAR(0.9, 0.2)
    g = _gen(8)
    xp = torch.randn(3, 2, 4, generator=g, dtype=torch.float64)
    x = torch.randn(3, 2, 4, generator=g, dtype=torch.float64)
    assert torch.equal(ar.denoiser(xp)(x, 0.0), x)
    assert torch.equal(ar.velocity(xp)(x, 0.0), -x)
    s = torch.tensor([0.0, 0.3, 0.0], dtype=torch.float64)
    v = ar.velocity(xp)(x, s)
    assert torch.equal(v[0], -x[0]) and torch.equal(v[2], -x[2])
    torch.testing.assert_close(v[1:2], ar.velocity(xp[1:2])(x[1:2], 0.3))
    torch.testing.assert_close(ar.velocity(xp)(x, 1e-7), -x, rtol=0, atol=1e-5)


def test_oracle_levels_name_the_argument():
    gm, ar = _mixture_1d(), LinearGaussianAR(0.5, 0.1)
    x = torch.zeros(3, 1)
    with pytest.raises(ValueError, match=r"sigma must be in \[0.0, 1.0\], got 1.5"):
        gm.velocity(x, 1.5)
    with pytest.raises(ValueError, match=r"sigma must be a float.*\(B,\) = \(3,\)"):
        gm.denoiser(x, torch.ones(2))
    with pytest.raises(ValueError, match=r"b must be in \[0.0, inf\], got -1.0"):
        gm.posterior_mean(1.0, -1.0, x)
    with pytest.raises(ValueError, match=r"sigma must be in \[0.0, 1.0\], got -0.5"):
        ar.velocity(torch.zeros(3, 2))(torch.zeros(3, 2), -0.5)
