"""Tests for vidnoise.sigma_samplers: distributions (scipy), strata, generators, checks.

Statistical tolerances come from the sample size: a fraction of n draws below a true
q-quantile is Binomial(n, q)/n with std sqrt(q(1-q)/n); we allow 5 of those (a false failure
has probability ~6e-7, and seeds are fixed). KS tests use scipy's exact / asymptotic p-value
for the sample size, and fail below 1e-4.
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from vidnoise import sigma_samplers as T
from vidnoise.schedules import shift as shift_fn

N = 20_000
SAMPLERS = [T.uniform, T.logit_normal, T.mode, T.lognormal]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _frac_ok(samples, x, q):
    """The fraction of samples <= x is q within 5 binomial standard errors."""
    n = len(samples)
    frac = float(np.mean(samples <= x))
    tol = 5 * math.sqrt(q * (1 - q) / n)
    assert abs(frac - q) < tol, (frac, q, tol)


def _ks_ok(samples, cdf):
    p = stats.kstest(samples, cdf).pvalue
    assert p > 1e-4, p


# ----------------------------------------------------------------------------- common
@pytest.mark.parametrize("fn", SAMPLERS)
def test_shape_dtype_empty_and_determinism(fn):
    s = fn(7, generator=_gen(3))
    assert s.shape == (7,) and s.dtype == torch.float32 and s.device.type == "cpu"
    assert torch.equal(s, fn(7, generator=_gen(3)))
    assert not torch.equal(s, fn(7, generator=_gen(4)))
    e = fn(0, generator=_gen(0))
    assert e.shape == (0,) and e.dtype == torch.float32
    assert fn(0, generator=[], stratified=True).shape == (0,)
    assert fn(3, device="cpu").shape == (3,)


@pytest.mark.parametrize("fn", SAMPLERS)
@pytest.mark.parametrize("stratified", [False, True])
def test_per_sample_generators(fn, stratified):
    """Sample i comes from generator i only: changing another generator leaves it alone."""
    a = fn(4, generator=[_gen(i) for i in range(4)], stratified=stratified)
    b = fn(4, generator=[_gen(0), _gen(99), _gen(2), _gen(98)], stratified=stratified)
    assert a[0] == b[0] and a[2] == b[2]
    assert a[1] != b[1] and a[3] != b[3]
    if not stratified:  # and the value is that of the generator alone
        for i in range(4):
            assert fn(1, generator=[_gen(i)])[0] == a[i]


@pytest.mark.parametrize("fn", SAMPLERS)
def test_bad_input(fn):
    with pytest.raises(ValueError, match=r"batch_size must be >= 0, got -1"):
        fn(-1)
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        fn(2.0)
    with pytest.raises(TypeError, match="stratified must be True or False"):
        fn(2, stratified=1)
    with pytest.raises(ValueError, match=r"shift must be in \(0.0, inf\], got 0.0"):
        fn(2, shift=0.0)
    with pytest.raises(ValueError, match=r"shift must be .*nan"):
        fn(2, shift=float("nan"))
    with pytest.raises(ValueError, match="one generator per item"):
        fn(3, generator=[_gen(0)])


# ----------------------------------------------------------------------------- uniform
def test_uniform_distribution():
    s = T.uniform(N, generator=_gen(1)).double().numpy()
    assert s.min() >= 0.0 and s.max() < 1.0
    _ks_ok(s, "uniform")
    for q in (0.1, 0.5, 0.9):
        _frac_ok(s, q, q)


@pytest.mark.parametrize("fn", [T.uniform, lambda b, **kw: T.logit_normal(b, 0.0, 10.0, **kw),
                                T.mode])
def test_flow_samplers_stay_below_one(fn, monkeypatch):
    """Uniforms just below 1 (float64) would round to 1.0 in float32 without the clamp."""
    def near_one(shape, **kwargs):
        return torch.full(shape, 1.0 - 1e-12, dtype=torch.float64)

    monkeypatch.setattr(T, "rand", near_one)
    for kw in ({}, {"stratified": True}, {"shift": 5.0}):
        s = fn(4, **kw)
        assert s.max().item() < 1.0 and s.max().item() == 1.0 - 2.0**-24, kw


def test_stratified_uniform_strata_and_variance():
    b = 8
    s = T.uniform(b, generator=_gen(2), stratified=True).double()
    i = torch.arange(b, dtype=torch.float64)
    assert bool(((s >= i / b - 1e-7) & (s < (i + 1) / b + 1e-7)).all())
    # batch means over many batches: variance 1/(12 b^3) stratified, 1/(12 b) plain
    m = 2000
    means = torch.stack([T.uniform(b, generator=_gen(100 + k), stratified=True).double().mean()
                         for k in range(m)])
    var = means.var().item()
    want = 1 / (12 * b**3)
    # sample variance of m means (near-normal, sums of 8 uniforms): relative std
    # sqrt(2/(m-1)); allow 6 of them (the mean of 8 uniforms has slightly light tails)
    assert abs(var / want - 1) < 6 * math.sqrt(2 / (m - 1)), var / want
    # pooled, the stratified draws are still uniform
    _ks_ok(T.uniform(N, generator=_gen(5), stratified=True).double().numpy(), "uniform")


def test_uniform_shift():
    s = 3.0
    x = T.uniform(N, generator=_gen(6), shift=s).double().numpy()
    # sigma' = s u / (1 + (s-1) u)  =>  P(sigma' <= x) = x / (s - (s-1) x)
    _ks_ok(x, lambda v: v / (s - (s - 1) * v))
    _frac_ok(x, 0.75, 0.5)  # the median 1/2 maps to 3/4
    # same draws, shifted afterwards (up to float32 rounding of the unshifted value)
    plain = T.uniform(64, generator=_gen(7))
    torch.testing.assert_close(T.uniform(64, generator=_gen(7), shift=s),
                               shift_fn(plain, s), rtol=3e-7, atol=0)


# ----------------------------------------------------------------------------- logit-normal
@pytest.mark.parametrize("mean, std", [(0.0, 1.0), (-0.5, 0.7), (1.0, 2.0)])
def test_logit_normal_distribution(mean, std):
    x = T.logit_normal(N, mean, std, generator=_gen(8)).double().numpy()
    assert x.min() >= 0.0 and x.max() < 1.0
    _ks_ok(x, lambda v: stats.norm.cdf((np.log(v) - np.log1p(-v) - mean) / std))
    med = 1 / (1 + math.exp(-mean))
    _frac_ok(x, med, 0.5)


def test_logit_normal_stratified_quantile_strata():
    b = 16
    x = T.logit_normal(b, 0.3, 1.5, generator=_gen(9), stratified=True).double().numpy()
    q = stats.norm.cdf((np.log(x) - np.log1p(-x) - 0.3) / 1.5)  # back to the uniforms
    i = np.arange(b)
    assert np.all(q >= i / b - 1e-6) and np.all(q < (i + 1) / b + 1e-6)


def test_logit_normal_bad_input():
    with pytest.raises(ValueError, match=r"std must be in \(0.0, inf\], got 0.0"):
        T.logit_normal(4, 0.0, 0.0)
    with pytest.raises(ValueError, match="mean must be .*nan"):
        T.logit_normal(4, float("nan"))


# ----------------------------------------------------------------------------- mode
def _mode_cdf(scale):
    """CDF by numerically inverting SD3's f(u) = 1 - u - s (cos^2(pi u / 2) - 1 + u) on a grid
    (f decreases from 1 to 0, so P(f(U) <= x) = 1 - f^-1(x))."""
    u = np.linspace(0.0, 1.0, 200_001)
    f = 1 - u - scale * (np.cos(np.pi * u / 2) ** 2 - 1 + u)
    return lambda x: 1 - np.interp(x, f[::-1], u[::-1])


@pytest.mark.parametrize("scale", [1.29, 0.5, -0.8])
def test_mode_distribution(scale):
    x = T.mode(N, scale, generator=_gen(10)).double().numpy()
    assert x.min() >= 0.0 and x.max() < 1.0
    _ks_ok(x, _mode_cdf(scale))
    # closed forms: the median is 1/2 for every scale; the quartiles are f(3/4) and f(1/4)
    _frac_ok(x, 0.5, 0.5)
    c = math.cos(3 * math.pi / 8) ** 2  # cos^2(pi * 0.75 / 2)
    q1 = 0.25 - scale * (c - 0.25)
    q3 = 0.75 - scale * ((1 - c) - 0.75)  # cos^2(pi/8) = 1 - cos^2(3 pi / 8)
    _frac_ok(x, q1, 0.25)
    _frac_ok(x, q3, 0.75)


def test_mode_scale_zero_is_uniform_and_default_reference():
    assert torch.equal(T.mode(100, 0.0, generator=_gen(11)), T.uniform(100, generator=_gen(11)))
    # SD3's default s = 1.29: first quartile 0.25 + 1.29 (0.25 - cos^2(3 pi / 8)) = 0.38358
    assert 0.25 - 1.29 * (math.cos(3 * math.pi / 8) ** 2 - 0.25) == pytest.approx(0.38358,
                                                                                   abs=1e-5)
    x = T.mode(N, generator=_gen(12)).double().numpy()
    _frac_ok(x, 0.38358, 0.25)


def test_mode_bad_scale():
    with pytest.raises(ValueError, match=r"scale must be in \[-1.0, 1.75"):
        T.mode(4, 1.8)
    with pytest.raises(ValueError, match=r"scale must be in \[-1.0, .*got -1.5"):
        T.mode(4, -1.5)
    assert T.MODE_SCALE_MAX == pytest.approx(1.7519, abs=1e-4)
    x = T.mode(N, T.MODE_SCALE_MAX, generator=_gen(0)).numpy()  # edge still valid
    assert x.min() >= 0 and x.max() < 1


# ----------------------------------------------------------------------------- lognormal
def test_lognormal_cogvideox_median():
    x = T.lognormal(N, -3.0, 0.5, None, generator=_gen(13)).double().numpy()
    assert math.exp(-3.0) == pytest.approx(0.0498, abs=1e-4)  # the published median
    _frac_ok(x, 0.0498, 0.5)
    _frac_ok(x, math.exp(-3.0 + 0.5 * stats.norm.ppf(0.9)), 0.9)
    _ks_ok(x, stats.lognorm(s=0.5, scale=math.exp(-3.0)).cdf)


def test_lognormal_edm_defaults_and_clip():
    x = T.lognormal(N, generator=_gen(14)).double().numpy()
    assert x.min() >= np.float32(2e-3) and x.max() <= 20.0
    _ks_ok(x, stats.lognorm(s=1.2, scale=math.exp(-1.2)).cdf)  # the clip is ~never active
    # a clip that bites: the clipped masses are the normal tails
    lo, hi = 0.1, 1.0
    x = T.lognormal(N, -1.2, 1.2, (lo, hi), generator=_gen(15)).double().numpy()
    p_lo = stats.norm.cdf((math.log(lo) + 1.2) / 1.2)
    p_hi = stats.norm.sf((math.log(hi) + 1.2) / 1.2)
    assert x.min() == np.float32(lo) and x.max() == np.float32(hi)
    _frac_ok(x, np.float32(lo), p_lo)
    _frac_ok(-x, -np.float32(hi), p_hi)


def test_lognormal_shift_scales_sigma():
    """A flow shift s is sigma_edm -> s sigma_edm: same draws times s."""
    a = T.lognormal(256, clip=None, generator=_gen(16))
    b = T.lognormal(256, clip=None, generator=_gen(16), shift=3.0)
    torch.testing.assert_close(b, 3.0 * a, rtol=2**-23, atol=0)


def test_lognormal_stratified_strata():
    b = 10
    x = T.lognormal(b, 0.0, 1.0, None, generator=_gen(17), stratified=True).double().numpy()
    q = stats.norm.cdf(np.log(x))
    i = np.arange(b)
    assert np.all(q >= i / b - 1e-6) and np.all(q < (i + 1) / b + 1e-6)


def test_lognormal_bad_input():
    with pytest.raises(ValueError, match=r"scale must be in \(0.0, inf\], got -1.0"):
        T.lognormal(4, 0.0, -1.0)
    with pytest.raises(ValueError, match="clip must satisfy 0 <= low < high"):
        T.lognormal(4, clip=(1.0, 0.5))
    with pytest.raises(ValueError, match=r"clip\[0\] must be in \[0.0, inf\], got -1.0"):
        T.lognormal(4, clip=(-1.0, 0.5))
    with pytest.raises(TypeError, match="clip must be None or a pair"):
        T.lognormal(4, clip=0.5)
