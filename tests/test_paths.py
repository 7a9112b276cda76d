"""Tests for vidnoise.paths: each formula against an independent numpy / closed-form value."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vidnoise.paths import EDMPath, FlowPath, PathSample, VPPath

flow, edm = FlowPath(), EDMPath()
HALF = [torch.float16, torch.bfloat16]


def _data(shape=(4, 3, 2, 5, 6), seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64).to(dtype),
            torch.randn(shape, generator=g, dtype=torch.float64).to(dtype))


def _np(t):
    return t.detach().double().numpy()


def _assert_ulp(x, ref64, dtype):
    """x (in ``dtype``) is the float64 ``ref64`` up to the rounding of a float32 computation
    rounded once more to ``dtype``: within one ulp, |x - ref| <= eps(dtype) |ref|."""
    assert x.dtype == dtype
    fi = torch.finfo(dtype)
    err = (x.double() - ref64).abs()
    assert bool((err <= fi.eps * ref64.abs() + fi.tiny).all()), float(err.max())


def _col(s, ndim):
    return np.asarray(s, dtype=np.float64).reshape(-1, *([1] * (ndim - 1)))


# ----------------------------------------------------------------------------- flow
def test_flow_add_noise_and_velocity_against_numpy():
    x0, eps = _data()
    sig = torch.tensor([0.0, 0.3, 0.77, 1.0], dtype=torch.float64)
    x = flow.add_noise(x0, eps, sig)
    s = _col(sig.numpy(), x0.dim())
    np.testing.assert_allclose(_np(x), (1 - s) * _np(x0) + s * _np(eps), rtol=1e-13, atol=1e-13)
    # sigma 0 is the data and sigma 1 the noise, exactly
    assert torch.equal(x[0], x0[0]) and torch.equal(x[3], eps[3])
    np.testing.assert_array_equal(_np(flow.velocity(x0, eps)), _np(eps) - _np(x0))
    # a float sigma broadcasts over everything
    x = flow.add_noise(x0, eps, 0.25)
    np.testing.assert_allclose(_np(x), 0.75 * _np(x0) + 0.25 * _np(eps), rtol=1e-13, atol=1e-13)


def test_flow_velocity_is_the_derivative_and_euler_is_exact():
    """v = dx/dsigma: an Euler step with the true v moves exactly along the path."""
    x0, eps = _data(seed=1)
    v = flow.velocity(x0, eps)
    for a, b in [(1.0, 0.6), (0.6, 0.0), (0.9, 0.85)]:
        xa, xb = flow.add_noise(x0, eps, a), flow.add_noise(x0, eps, b)
        torch.testing.assert_close(xa + (b - a) * v, xb, rtol=1e-12, atol=1e-12)
        h = 1e-6  # central difference of the path
        fd = (flow.add_noise(x0, eps, a - h / 2 if a == 1.0 else a + h / 2)
              - flow.add_noise(x0, eps, a - h if a == 1.0 else a - h / 2))
        fd = fd / (h / 2 if a == 1.0 else h)
        torch.testing.assert_close(fd, v, rtol=1e-6, atol=1e-6)


def test_flow_conversions_round_trip():
    x0, eps = _data(seed=2)
    sig = torch.tensor([0.05, 0.3, 0.77, 0.99], dtype=torch.float64)
    x = flow.add_noise(x0, eps, sig)
    v = flow.velocity(x0, eps)
    torch.testing.assert_close(flow.x0_from_velocity(x, v, sig), x0, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(flow.noise_from_velocity(x, v, sig), eps, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(flow.velocity_from_x0(x, x0, sig), v, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(flow.velocity_from_noise(x, eps, sig), v, rtol=1e-10, atol=1e-10)
    # at the ends: x0 at sigma 0 and noise at sigma 1 are read off exactly
    x_end = flow.add_noise(x0, eps, 1.0)
    torch.testing.assert_close(flow.x0_from_velocity(x_end, v, 1.0), x0)
    torch.testing.assert_close(flow.noise_from_velocity(x0, v, 0.0), eps)


def test_flow_sample_dataclass_and_generators():
    x0, _ = _data((3, 2, 4, 4), dtype=torch.float32)
    gens = [torch.Generator().manual_seed(10 + i) for i in range(3)]
    sig = torch.tensor([0.1, 0.5, 0.9])
    out = flow.sample(x0, sig, generator=gens)
    assert isinstance(out, PathSample) and out.timestep is None
    assert out.sigma.shape == (3,) and out.sigma.dtype == torch.float32
    torch.testing.assert_close(out.x, flow.add_noise(x0, out.noise, sig))
    torch.testing.assert_close(out.target, out.noise - x0)
    # item i depends only on generator i: the same seed alone reproduces it
    for i in range(3):
        alone = flow.sample(x0[i:i + 1], sig[i:i + 1],
                            generator=[torch.Generator().manual_seed(10 + i)])
        assert torch.equal(alone.noise[0], out.noise[i])
        assert torch.equal(alone.x[0], out.x[i])
    # a float sigma fills the (B,) field; explicit noise is used as given
    out = flow.sample(x0, 0.4, noise=torch.zeros_like(x0))
    torch.testing.assert_close(out.sigma, torch.full((3,), 0.4))
    torch.testing.assert_close(out.x, 0.6 * x0)


@pytest.mark.parametrize("dtype", HALF)
def test_flow_half_precision(dtype):
    x0, eps = _data((2, 3, 8, 8), seed=3)
    sig = torch.tensor([0.0, 0.6], dtype=torch.float32)
    x = flow.add_noise(x0.to(dtype), eps.to(dtype), sig)
    assert x.dtype == dtype
    ref = flow.add_noise(x0.to(dtype).double(), eps.to(dtype).double(), sig.double())
    _assert_ulp(x, ref, dtype)
    assert torch.equal(x[0], x0.to(dtype)[0])
    out = flow.sample(x0.to(dtype), sig, generator=torch.Generator().manual_seed(0))
    assert out.x.dtype == out.target.dtype == out.noise.dtype == dtype
    assert out.sigma.dtype == torch.float32


def test_flow_empty_batch():
    x0 = torch.zeros(0, 3, 4, 4)
    out = flow.sample(x0, torch.zeros(0), generator=torch.Generator().manual_seed(0))
    assert out.x.shape == (0, 3, 4, 4) and out.sigma.shape == (0,)
    assert flow.add_noise(x0, x0, 0.5).shape == (0, 3, 4, 4)


def test_flow_bad_input():
    x0, eps = _data((2, 3, 4))
    with pytest.raises(ValueError, match=r"sigma must be in \[0.0, 1.0\], got 1.5"):
        flow.add_noise(x0, eps, 1.5)
    with pytest.raises(ValueError, match=r"sigma must be in \[0.0, 1.0\], got -0.1"):
        flow.add_noise(x0, eps, -0.1)
    with pytest.raises(ValueError, match="sigma.*nan"):
        flow.add_noise(x0, eps, float("nan"))
    with pytest.raises(ValueError, match="sigma.*nan"):
        flow.add_noise(x0, eps, torch.tensor([0.1, float("nan")]))
    with pytest.raises(ValueError, match=r"sigma.*got -0.5"):
        flow.add_noise(x0, eps, torch.tensor([0.1, -0.5]))
    with pytest.raises(ValueError, match=r"sigma.*\(B,\) = \(2,\).*got shape \(3,\)"):
        flow.add_noise(x0, eps, torch.rand(3))
    with pytest.raises(ValueError, match=r"do not broadcast.*x0 \(2, 3, 4\).*noise \(2, 5, 4\)"):
        flow.add_noise(x0, torch.zeros(2, 5, 4), 0.5)
    with pytest.raises(TypeError, match="x0"):
        flow.add_noise(x0.numpy(), eps, 0.5)
    with pytest.raises(ValueError, match="noise or generator"):
        flow.sample(x0, 0.5, noise=eps, generator=torch.Generator())
    with pytest.raises(ValueError, match="noise must have the shape"):
        flow.sample(x0, 0.5, noise=eps[:1])
    with pytest.raises(TypeError, match="sigma"):
        flow.add_noise(x0, eps, "0.5")


# ----------------------------------------------------------------------------- EDM
def test_edm_add_noise_against_numpy():
    x0, eps = _data(seed=4)
    sig = torch.tensor([0.0, 0.002, 1.0, 80.0], dtype=torch.float64)
    x = edm.add_noise(x0, eps, sig)
    np.testing.assert_allclose(_np(x), _np(x0) + _col(sig.numpy(), 5) * _np(eps),
                               rtol=1e-13, atol=1e-12)
    assert torch.equal(x[0], x0[0])


def test_edm_offset_noise_is_one_draw_per_batch_and_channel():
    x0, eps = _data((3, 4, 2, 5, 5), seed=5)
    eta = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    x = EDMPath(offset_noise=0.3).add_noise(x0, eps, 0.7, offset=eta)
    resid = _np(x) - _np(x0) - 0.7 * _np(eps)
    want = np.broadcast_to(0.3 * _np(eta)[:, :, None, None, None], resid.shape)
    np.testing.assert_allclose(resid, want, rtol=1e-12, atol=1e-12)
    # drawn: constant over (T, H, W), per-sample generators give item i from generator i
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    x = EDMPath(offset_noise=0.3).add_noise(x0, eps, 0.7, generator=gens)
    resid = x - x0 - 0.7 * eps
    assert torch.allclose(resid, resid[:, :, :1, :1, :1].expand_as(resid), atol=1e-12)
    for i in range(3):
        alone = torch.randn(4, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
        torch.testing.assert_close(resid[i, :, 0, 0, 0], 0.3 * alone)


def test_edm_offset_noise_std():
    """The per-(B, C) offsets have std offset_noise: chi-square bound on 4000 draws."""
    n = 4000
    x0 = torch.zeros(n, 1, 2, 2)
    x = EDMPath(offset_noise=0.5).add_noise(
        x0, x0, 1.0, generator=torch.Generator().manual_seed(0))
    var = x[:, 0, 0, 0].double().var().item()
    # sample variance of n normals: relative std sqrt(2/(n-1)); allow 5 of them
    assert abs(var / 0.25 - 1) < 5 * math.sqrt(2 / (n - 1))


def test_edm_precondition_reference_values_and_identities():
    c_skip, c_out, c_in, c_noise = edm.precondition(1.0)
    assert (c_skip, c_out, c_in, c_noise) == pytest.approx(
        (0.2, 1 / math.sqrt(5), 2 / math.sqrt(5), 0.0), rel=1e-15)
    sig = np.array([1e-3, 0.1, 0.5, 1.0, 5.0, 80.0])
    for sd in (0.5, 1.0):
        cs, co, ci, cn = EDMPath(sd).precondition(torch.tensor(sig))
        np.testing.assert_allclose(_np(cs) + _np(co) ** 2 / sd**2, 1.0, rtol=1e-12)
        np.testing.assert_allclose(_np(EDMPath(sd).loss_weight(torch.tensor(sig))),
                                   1 / _np(co) ** 2, rtol=1e-12)
        # c_in gives unit input variance for data of std sigma_data
        np.testing.assert_allclose(_np(ci) ** 2 * (sd**2 + sig**2), 1.0, rtol=1e-12)
        np.testing.assert_allclose(_np(cn), np.log(sig) / 4, rtol=1e-12)


def test_edm_precondition_with_offset_noise_uses_sigma_eff():
    sig, off, sd = 0.3, 0.4, 0.5  # sigma_eff = 0.5
    p = EDMPath(sd, off)
    got = p.precondition(sig)
    want = (0.5, 0.5 * 0.5 / math.sqrt(0.5), 1 / math.sqrt(0.5), math.log(0.5) / 4)
    assert got == pytest.approx(want, rel=1e-14)
    assert p.loss_weight(sig) == pytest.approx(1 / got[1] ** 2, rel=1e-14)
    # tensors (any shape) give the same values elementwise, via sigma_eff too
    sig_t = torch.tensor([[0.0, 0.3], [1.0, 7.0]], dtype=torch.float64)
    out_t = p.precondition(sig_t)
    for k, s in enumerate(sig_t.flatten().tolist()):
        sd_e = math.sqrt(s * s + off * off)
        want = (sd**2 / (sd_e**2 + sd**2), sd_e * sd / math.sqrt(sd_e**2 + sd**2),
                1 / math.sqrt(sd_e**2 + sd**2), math.log(sd_e) / 4)
        assert [c.flatten()[k].item() for c in out_t] == pytest.approx(want, rel=1e-14)
    assert p.loss_weight(sig_t)[0, 0].item() == pytest.approx(
        (off**2 + sd**2) / (off * sd) ** 2, rel=1e-14)
    # sigma 0 with offset is finite; without it the limits are exact
    assert math.isfinite(EDMPath(offset_noise=0.1).precondition(0.0)[3])
    assert edm.precondition(0.0) == (1.0, 0.0, 2.0, -math.inf)
    assert edm.loss_weight(0.0) == math.inf


def test_edm_precondition_tensor_dtypes():
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        s = torch.tensor([0.5, 2.0], dtype=dtype)
        out = edm.precondition(s)
        assert all(c.dtype == dtype and c.shape == (2,) for c in out)
        ref = edm.precondition(s.double())
        for c, r in zip(out, ref):
            torch.testing.assert_close(c, r.to(dtype), rtol=0, atol=0)
    assert edm.precondition(torch.zeros(0))[0].shape == (0,)


def test_denoiser_from_network_is_the_gaussian_posterior_mean():
    """Data ~ N(0, sd^2) per element: E[x0 | x] = sd^2 / (sd^2 + sigma^2) x, i.e. F = 0."""
    seen = {}

    def zero_net(x_in, c_noise, cond=None):
        seen["x_in"], seen["c_noise"], seen["cond"] = x_in, c_noise, cond
        return torch.zeros_like(x_in)

    d = EDMPath(sigma_data=0.5).denoiser_from_network(zero_net)
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    sig = torch.tensor([0.1, 1.0, 10.0])
    out = d(x, sig, cond="c")
    post = 0.25 / (0.25 + sig**2)
    torch.testing.assert_close(out, post[:, None, None, None] * x)
    torch.testing.assert_close(seen["c_noise"], torch.log(sig) / 4)
    torch.testing.assert_close(seen["x_in"], x / torch.sqrt(0.25 + sig**2)[:, None, None, None])
    assert seen["cond"] == "c" and seen["c_noise"].shape == (3,)


def test_denoiser_combines_network_output():
    def net(x_in, c_noise):
        return torch.ones_like(x_in) * 2.0

    d = EDMPath(sigma_data=1.0, offset_noise=0.0).denoiser_from_network(net)
    x = torch.full((2, 1, 3), 3.0, dtype=torch.float64)
    out = d(x, 1.0)  # c_skip = 1/2, c_out = 1/sqrt(2)
    torch.testing.assert_close(out, torch.full_like(x, 1.5 + 2 / math.sqrt(2)))
    xh = x.to(torch.float16)
    assert d(xh, torch.tensor([1.0, 2.0])).dtype == torch.float16
    with pytest.raises(ValueError, match="network output"):
        edm.denoiser_from_network(lambda a, b: a[:1])(x, 1.0)
    with pytest.raises(TypeError, match="network"):
        edm.denoiser_from_network(3)
    with pytest.raises(ValueError, match="sigma_data"):
        EDMPath(sigma_data=0.0)


def test_edm_sample_and_conversions():
    x0, _ = _data((2, 3, 4, 4), dtype=torch.float32, seed=6)
    out = edm.sample(x0, torch.tensor([0.5, 3.0]), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out.target, x0)
    torch.testing.assert_close(out.x, x0 + out.sigma[:, None, None, None] * out.noise)
    torch.testing.assert_close(edm.x0_from_noise(out.x, out.noise, out.sigma), x0)
    torch.testing.assert_close(edm.noise_from_x0(out.x, x0, out.sigma), out.noise,
                               rtol=1e-5, atol=1e-5)
    # with given noise the generator draws only the offset
    g = torch.Generator().manual_seed(2)
    out = EDMPath(offset_noise=0.1).sample(x0, 1.0, noise=torch.zeros_like(x0), generator=g)
    eta = torch.randn(2, 3, 1, 1, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(out.x, x0 + 0.1 * eta)


@pytest.mark.parametrize("dtype", HALF)
def test_edm_half_precision_and_empty(dtype):
    x0, eps = _data((2, 3, 4, 4), seed=7)
    x = edm.add_noise(x0.to(dtype), eps.to(dtype), torch.tensor([0.0, 2.5]))
    assert x.dtype == dtype
    ref = x0.to(dtype).double() + torch.tensor([0.0, 2.5]).double()[:, None, None, None] \
        * eps.to(dtype).double()
    _assert_ulp(x, ref, dtype)
    e = torch.zeros(0, 3, 4, 4, dtype=dtype)
    assert EDMPath(offset_noise=0.1).sample(e, torch.zeros(0)).x.shape == (0, 3, 4, 4)


def test_edm_bad_input():
    x0, eps = _data((2, 3, 4))
    with pytest.raises(ValueError, match=r"sigma must be in \[0.0, inf\], got -1.0"):
        edm.add_noise(x0, eps, -1.0)
    with pytest.raises(ValueError, match="sigma.*nan"):
        edm.precondition(float("nan"))
    with pytest.raises(ValueError, match="sigma.*inf"):
        edm.precondition(torch.tensor([1.0, math.inf]))
    with pytest.raises(ValueError, match=r"offset_noise must be in \[0.0, inf\], got -0.1"):
        EDMPath(offset_noise=-0.1)
    with pytest.raises(ValueError, match=r"sigma_data must be in \(0.0, inf\], got 0.0"):
        EDMPath(sigma_data=0.0)
    with pytest.raises(ValueError, match="offset must have shape"):
        EDMPath(offset_noise=0.1).add_noise(x0, eps, 1.0, offset=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="channel dim"):
        EDMPath(offset_noise=0.1).add_noise(x0[:, 0, 0], eps[:, 0, 0], 1.0)


# ----------------------------------------------------------------------------- VP
def _np_alpha_bar(n=1000, b0=0.00085, b1=0.012, shift=1.0, zero_snr=False):
    """Independent numpy construction from the definitions."""
    betas = np.linspace(math.sqrt(b0), math.sqrt(b1), n) ** 2
    ab = np.cumprod(1.0 - betas)
    ab = ab / (shift + (1.0 - shift) * ab)
    if zero_snr:
        r = np.sqrt(ab)
        r = (r - r[-1]) / (r[0] - r[-1]) * r[0]
        ab = r**2
    return ab


def test_vp_alpha_bar_against_numpy_and_published_sigmas():
    np.testing.assert_allclose(VPPath().alpha_bar.numpy(), _np_alpha_bar(), rtol=1e-12)
    # Stable Diffusion's (same betas) published EDM range: sigma_max 14.6146, sigma_min 0.0292
    assert VPPath().edm_sigma(999) == pytest.approx(14.6146, abs=1e-4)
    assert VPPath().edm_sigma(0) == pytest.approx(0.0292, abs=1e-4)
    cog = VPPath.cogvideox()
    np.testing.assert_allclose(cog.alpha_bar.numpy(), _np_alpha_bar(shift=3.0, zero_snr=True),
                               rtol=1e-11, atol=1e-15)
    assert cog.alpha_bar[-1] == 0.0 and cog.edm_sigma(999) == math.inf
    lin = VPPath(beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    np.testing.assert_allclose(lin.alpha_bar.numpy(),
                               np.cumprod(1 - np.linspace(1e-4, 0.02, 1000)), rtol=1e-12)


def test_vp_snr_shift_divides_snr():
    base, shifted = VPPath(), VPPath(snr_shift_scale=3.0)
    t = torch.arange(1000)
    # SNR' = SNR / s  <=>  sigma_edm' = sqrt(s) sigma_edm
    torch.testing.assert_close(shifted.edm_sigma(t), math.sqrt(3.0) * base.edm_sigma(t),
                               rtol=1e-12, atol=0)
    z = VPPath(rescale_zero_terminal_snr=True)
    assert z.alpha_bar[0] == pytest.approx(float(base.alpha_bar[0]), rel=1e-14)
    assert z.alpha_bar[-1] == 0.0
    assert bool((z.alpha_bar[1:] < z.alpha_bar[:-1]).all())


def test_vp_against_diffusers_cogvideox():
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.CogVideoXDDIMScheduler(
        snr_shift_scale=3.0, rescale_betas_zero_snr=True, timestep_spacing="trailing",
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    # diffusers builds abar in float32: agree to float32 precision
    np.testing.assert_allclose(VPPath.cogvideox().alpha_bar.numpy(),
                               sched.alphas_cumprod.double().numpy(), rtol=2e-5, atol=1e-7)
    for n in (1, 7, 16, 50, 999):
        sched.set_timesteps(n)
        assert VPPath().trailing_timesteps(n).tolist() == sched.timesteps.tolist()


def test_vp_trailing_timesteps_values():
    vp = VPPath()
    assert vp.trailing_timesteps(1).tolist() == [999]
    assert vp.trailing_timesteps(4).tolist() == [999, 749, 499, 249]
    t = vp.trailing_timesteps(50)
    assert t.tolist() == list(range(999, 0, -20))
    assert vp.trailing_timesteps(1000).tolist() == list(range(999, -1, -1))
    with pytest.raises(ValueError, match=r"n must be >= 1 and <= 1000, got 1001"):
        vp.trailing_timesteps(1001)


def test_vp_add_noise_targets_and_round_trips():
    vp = VPPath.cogvideox()
    x0, eps = _data(seed=8)
    t = torch.tensor([0, 250, 700, 998])
    ab = _np_alpha_bar(shift=3.0, zero_snr=True)[t.numpy()]
    a, b = _col(np.sqrt(ab), 5), _col(np.sqrt(1 - ab), 5)
    x = vp.add_noise(x0, eps, t)
    np.testing.assert_allclose(_np(x), a * _np(x0) + b * _np(eps), rtol=1e-10, atol=1e-12)
    v = vp.velocity(x0, eps, t)
    np.testing.assert_allclose(_np(v), a * _np(eps) - b * _np(x0), rtol=1e-10, atol=1e-12)
    kw = dict(rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(vp.x0_from_velocity(x, v, t), x0, **kw)
    torch.testing.assert_close(vp.noise_from_velocity(x, v, t), eps, **kw)
    torch.testing.assert_close(vp.x0_from_noise(x, eps, t), x0, **kw)
    torch.testing.assert_close(vp.noise_from_x0(x, x0, t), eps, **kw)
    torch.testing.assert_close(vp.velocity_from_x0(x, x0, t), v, **kw)
    torch.testing.assert_close(vp.velocity_from_noise(x, eps, t), v, **kw)
    # zero terminal SNR: x is pure noise and v = -x0; v-prediction still recovers x0
    x_end = vp.add_noise(x0, eps, 999)
    torch.testing.assert_close(x_end, eps)
    torch.testing.assert_close(vp.velocity(x0, eps, 999), -x0)
    torch.testing.assert_close(vp.x0_from_velocity(x_end, -x0, 999), x0)


def test_vp_sample_and_generators():
    vp = VPPath()
    x0, _ = _data((3, 2, 4), dtype=torch.float32, seed=9)
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    t = torch.tensor([10, 500, 999])
    out = vp.sample(x0, t, generator=gens)
    assert out.timestep.tolist() == [10, 500, 999] and out.timestep.dtype == torch.int64
    torch.testing.assert_close(out.target, vp.velocity(x0, out.noise, t))
    torch.testing.assert_close(out.sigma, vp.edm_sigma(t).float())
    for i in range(3):
        alone = torch.randn(2, 4, generator=torch.Generator().manual_seed(i))
        assert torch.equal(out.noise[i], alone)
    assert torch.equal(vp.sample(x0, 5, noise=out.noise, prediction="eps").target, out.noise)
    assert torch.equal(vp.sample(x0, 5, noise=out.noise, prediction="x0").target, x0)
    e = vp.sample(torch.zeros(0, 2, 4), torch.zeros(0, dtype=torch.int64))
    assert e.x.shape == (0, 2, 4) and e.sigma.shape == (0,)


@pytest.mark.parametrize("dtype", HALF)
def test_vp_half_precision(dtype):
    vp = VPPath()
    x0, eps = _data((2, 3, 4), seed=10)
    t = torch.tensor([3, 900])
    x = vp.add_noise(x0.to(dtype), eps.to(dtype), t)
    assert x.dtype == dtype
    ref = vp.add_noise(x0.to(dtype).double(), eps.to(dtype).double(), t)
    _assert_ulp(x, ref, dtype)


def test_vp_bad_input():
    x0, eps = _data((2, 3))
    vp = VPPath()
    with pytest.raises(ValueError, match=r"t must be >= 0 and <= 999, got 1000"):
        vp.add_noise(x0, eps, 1000)
    with pytest.raises(ValueError, match=r"t must be in \[0, 999\], got -1"):
        vp.add_noise(x0, eps, torch.tensor([0, -1]))
    with pytest.raises(TypeError, match="t must be integer"):
        vp.add_noise(x0, eps, torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"snr_shift_scale must be in \(0.0, inf\], got 0.0"):
        VPPath(snr_shift_scale=0.0)
    with pytest.raises(ValueError, match=r"beta_end must be in \[0.0, 1.0\), got 1.0"):
        VPPath(beta_end=1.0)
    with pytest.raises(ValueError, match="beta_schedule must be one of"):
        VPPath(beta_schedule="cosine")
    with pytest.raises(ValueError, match="prediction must be one of"):
        vp.sample(x0, 1, prediction="sample")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_and_generators():
    dev = torch.device("cuda")
    x0 = torch.randn(2, 3, 4, device=dev)
    gens = [torch.Generator(device=dev).manual_seed(i) for i in range(2)]
    sig = torch.tensor([0.2, 0.8], device=dev)
    out = flow.sample(x0, sig, generator=gens)
    assert out.x.device.type == "cuda" and out.sigma.device.type == "cuda"
    s = sig[:, None, None]
    torch.testing.assert_close(out.x, (1 - s) * x0 + s * out.noise)
    for i in range(2):
        alone = torch.randn(3, 4, device=dev, generator=torch.Generator(dev).manual_seed(i))
        assert torch.equal(out.noise[i], alone)
    t = torch.tensor([0, 999], device=dev)
    assert VPPath().add_noise(x0, out.noise, t).device.type == "cuda"
    assert edm.precondition(sig)[0].device.type == "cuda"


# ----------------------------------------------------------------------------- affine core
PATHS = {
    "flow": (FlowPath(), st.floats(0.0, 1.0)),
    "edm": (EDMPath(), st.floats(0.0, 50.0)),
    "vp": (VPPath.cogvideox(), st.integers(0, 998)),
}


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(sorted(PATHS)), layout=st.sampled_from(["BCTHW", "BTCHW"]),
       per_frame=st.booleans(), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_round_trip_every_path_and_layout(kind, layout, per_frame, seed, data):
    """For every path: x and v from (x0, ε); each conversion recovers the third quantity,
    for per-sample or per-frame levels in either layout. Levels stay away from the ends where
    a conversion divides by a = 0 or b = 0 (VP t = 999 has abar = 0)."""
    path, levels = PATHS[kind]
    b, t = 2, 3
    shape = (b, 2, t, 3, 2) if layout == "BCTHW" else (b, t, 2, 3, 2)
    x0, eps = _data(shape, seed=seed % 1000)
    n = b * t if per_frame else b
    if kind == "flow":
        vals = data.draw(st.lists(st.floats(0.02, 0.98), min_size=n, max_size=n))
    elif kind == "edm":
        vals = data.draw(st.lists(st.floats(0.02, 50.0), min_size=n, max_size=n))
    else:
        vals = data.draw(st.lists(levels, min_size=n, max_size=n))
    lev = torch.tensor(vals, dtype=torch.int64 if kind == "vp" else torch.float64)
    lev = lev.reshape(b, t) if per_frame else lev
    kw = dict(layout=layout)
    x = path.add_noise(x0, eps, lev, **kw)
    v = path._velocity(x0, eps, lev, layout)
    close = dict(rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(path.x0_from_velocity(x, v, lev, **kw), x0, **close)
    torch.testing.assert_close(path.noise_from_velocity(x, v, lev, **kw), eps, **close)
    torch.testing.assert_close(path.x0_from_noise(x, eps, lev, **kw), x0, **close)
    torch.testing.assert_close(path.noise_from_x0(x, x0, lev, **kw), eps, **close)
    torch.testing.assert_close(path.velocity_from_x0(x, x0, lev, **kw), v, **close)
    torch.testing.assert_close(path.velocity_from_noise(x, eps, lev, **kw), v, **close)
    # the coefficients, against the path's own formula, frame by frame (numpy, independent)
    lv = lev.reshape(b, -1).expand(b, t).numpy()
    if kind == "flow":
        a_np, b_np = 1 - lv, lv
    elif kind == "edm":
        a_np, b_np = np.ones_like(lv), lv
    else:
        ab = _np_alpha_bar(shift=3.0, zero_snr=True)[lv]
        a_np, b_np = np.sqrt(ab), np.sqrt(1 - ab)
    ax = 2 if layout == "BCTHW" else 1
    view = [b, 1, 1, 1, 1]
    view[ax] = t
    want = a_np.reshape(view) * _np(x0) + b_np.reshape(view) * _np(eps)
    np.testing.assert_allclose(_np(x), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", sorted(PATHS))
def test_velocity_is_the_derivative_along_the_path_level(kind):
    """v = da·x0 + db·ε is d x / d τ: central differences of a, b along τ (σ for flow and
    EDM, the angle φ = atan2(√(1-ᾱ), √ᾱ) for VP), and det = a·db - b·da = 1."""
    path, _ = PATHS[kind]
    h = 1e-6
    if kind == "vp":
        for t in (0, 300, 998):
            c = path.coefficients(t)
            phi = math.atan2(c.b, c.a)
            assert c.a == pytest.approx(math.cos(phi), rel=1e-14)
            assert (c.da, c.db) == pytest.approx((-math.sin(phi), math.cos(phi)), rel=1e-14)
            assert c.a * c.db - c.b * c.da == pytest.approx(1.0, rel=1e-14)
        return
    for s in (0.1, 0.5, 0.9):
        c, up, dn = (path.coefficients(v) for v in (s, s + h, s - h))
        assert ((up.a - dn.a) / (2 * h), (up.b - dn.b) / (2 * h)) == pytest.approx(
            (c.da, c.db), abs=1e-8)
        assert c.a * c.db - c.b * c.da == c.det == 1.0


# ----------------------------------------------------------------------------- per-frame σ
def _linear_map(fn, shape):
    """The matrix of the linear map fn: R^n -> R^n (columns = images of basis vectors)."""
    n = math.prod(shape)
    eye = torch.eye(n, dtype=torch.float64)
    return torch.stack([fn(eye[i].reshape(shape)).reshape(-1) for i in range(n)], dim=1)


@pytest.mark.parametrize("layout", ["BCTHW", "BTCHW"])
@pytest.mark.parametrize("kind", sorted(PATHS))
def test_per_frame_marginal_covariance_is_exact(kind, layout):
    """Gaussian data x0 ~ N(0, C) (correlated across frames and channels) at per-frame levels:
    x = A x0 + B ε is Gaussian with covariance A C Aᵀ + B Bᵀ. A and B are read off the path
    (images of basis vectors), and must equal diag(a_f), diag(b_f) of the closed form, frame
    f's coefficient on frame f's entries only: the covariance agrees to 1e-6 (exactly, up to
    float64 rounding). Point-mass data (C = 0) is the case B Bᵀ = diag(b_f²)."""
    path, _ = PATHS[kind]
    b, t = 1, 4
    shape = (b, 2, t, 2, 1) if layout == "BCTHW" else (b, t, 2, 2, 1)
    lev = (torch.tensor([[0.0, 0.3, 0.7, 1.0]]) if kind == "flow" else
           torch.tensor([[0.0, 0.5, 2.0, 9.0]], dtype=torch.float64) if kind == "edm" else
           torch.tensor([[0, 200, 700, 999]]))
    zero = torch.zeros(shape, dtype=torch.float64)
    big_a = _linear_map(lambda e: path.add_noise(e, zero, lev, layout=layout), shape)
    big_b = _linear_map(lambda e: path.add_noise(zero, e, lev, layout=layout), shape)
    n = big_a.shape[0]
    g = torch.Generator().manual_seed(3)
    m = torch.randn(n, n, generator=g, dtype=torch.float64)
    cov0 = m @ m.T / n + 0.1 * torch.eye(n, dtype=torch.float64)
    # closed form, built independently of the path: frame index of each flat entry
    ax = 2 if layout == "BCTHW" else 1
    frame = torch.arange(n).reshape(shape).movedim(ax, -1)
    frame = torch.arange(t).expand_as(frame).movedim(-1, ax).reshape(-1)
    c = path.coefficients(lev[0])
    a_f = torch.as_tensor(c.a, dtype=torch.float64).expand(t)[frame]
    b_f = torch.as_tensor(c.b, dtype=torch.float64).expand(t)[frame]
    want = a_f[:, None] * cov0 * a_f[None, :] + torch.diag(b_f * b_f)
    got = big_a @ cov0 @ big_a.T + big_b @ big_b.T
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(big_b @ big_b.T, torch.diag(b_f * b_f), rtol=0, atol=1e-12)
    # the closed form's frame coefficients themselves (flow a = 1-σ, b = σ; EDM 1, σ; VP √ᾱ)
    if kind == "flow":
        torch.testing.assert_close(b_f, lev[0].double()[frame])


@pytest.mark.parametrize("layout", ["BCTHW", "BTCHW"])
def test_per_frame_sample_statistics(layout):
    """Point-mass data x0 = 2 with per-frame σ: frame f has mean 2(1-σ_f) and variance σ_f².
    4000 samples x 12 entries per frame: se of the mean σ/sqrt(n), of the variance
    σ² sqrt(2/n); 5 se."""
    sig = torch.tensor([[0.0, 0.25, 0.5, 1.0]]).expand(4000, 4)
    shape = (4000, 3, 4, 2, 2) if layout == "BCTHW" else (4000, 4, 3, 2, 2)
    out = flow.sample(torch.full(shape, 2.0), sig, generator=torch.Generator().manual_seed(0),
                      layout=layout)
    assert out.sigma.shape == (4000, 4) and torch.equal(out.sigma, sig)
    ax = 2 if layout == "BCTHW" else 1
    per = out.x.movedim(ax, 1).reshape(4000, 4, -1).transpose(0, 1).reshape(4, -1).double()
    n = per.shape[1]
    for f, s in enumerate([0.0, 0.25, 0.5, 1.0]):
        assert abs(float(per[f].mean()) - 2 * (1 - s)) <= 5 * s / math.sqrt(n) + 1e-7
        assert abs(float(per[f].var()) - s * s) <= 5 * s * s * math.sqrt(2 / n) + 1e-7


def test_per_frame_levels_for_every_method_and_vp_timesteps():
    x0, eps = _data((2, 3, 4, 2, 2), seed=11)
    t = torch.tensor([[0, 10, 500, 999], [3, 3, 3, 3]])
    out = VPPath().sample(x0, t, noise=eps)
    assert out.timestep.shape == (2, 4) and torch.equal(out.timestep, t)
    torch.testing.assert_close(out.sigma, VPPath().edm_sigma(t))
    for f in range(4):
        torch.testing.assert_close(out.x[:, :, f], VPPath().add_noise(x0[:, :, f], eps[:, :, f],
                                                                      t[:, f]))
    with pytest.raises(ValueError, match=r"\(B, T\) = \(2, 3\) for layout BTCHW"):
        flow.add_noise(x0.transpose(1, 2)[:, :3], eps.transpose(1, 2)[:, :3], torch.rand(2, 4),
                       layout="BTCHW")
    with pytest.raises(ValueError, match="layout must be one of"):
        flow.add_noise(x0, eps, torch.rand(2, 4), layout="BHWC")
    with pytest.raises(ValueError, match=r"sigma must be a float.*\(B,\) = \(2,\)"):
        flow.add_noise(x0[:, :, 0], eps[:, :, 0], torch.rand(2, 4))  # 4-D data: no per-frame


# ----------------------------------------------------------------------------- trust pass
def test_vp_integer_timestep_dtypes_are_indices():
    """A uint8 t used to be read as a boolean mask (abar at t = 0, 1, 2, 3 instead of 3)."""
    vp = VPPath()
    x0, eps = _data((4, 3), seed=12)
    want = vp.add_noise(x0, eps, torch.tensor([3, 3, 3, 3]))
    for dt in (torch.uint8, torch.int8, torch.int16, torch.int32):
        t = torch.tensor([3, 3, 3, 3], dtype=dt)
        assert torch.equal(vp.add_noise(x0, eps, t), want)
        assert vp.sample(x0, t, noise=eps).timestep.tolist() == [3, 3, 3, 3]
    with pytest.raises(ValueError, match=r"t must be in \[0, 999\]"):
        vp.add_noise(x0, eps, torch.tensor([3, 3, 3, 1000], dtype=torch.int16))
    with pytest.raises(TypeError, match="t must be a real tensor"):
        vp.add_noise(x0, eps, torch.ones(4, dtype=torch.bool))


def test_edm_precondition_extreme_sigma_is_finite_and_correct():
    p = EDMPath()
    c_skip, c_out, c_in, c_noise = p.precondition(1e200)
    assert (c_skip, c_out, c_in) == pytest.approx((0.0, 0.5, 1e-200), rel=1e-14)
    assert c_noise == pytest.approx(200 * math.log(10) / 4, rel=1e-14)
    assert p.loss_weight(1e200) == pytest.approx(4.0, rel=1e-14)
    out = p.precondition(torch.tensor([1e200, 1e-200, 1e308], dtype=torch.float64))
    assert all(bool(torch.isfinite(c).all()) for c in out)
    torch.testing.assert_close(out[1], torch.tensor([0.5, 0.5e-200, 0.5], dtype=torch.float64))
    big = torch.tensor([1e200, 1e308], dtype=torch.float64)
    assert bool(torch.isfinite(p.loss_weight(big)).all())


def test_bad_tensors_name_the_argument():
    x0, eps = _data((2, 3))
    for bad in (torch.zeros(2, dtype=torch.complex64), torch.zeros(2, dtype=torch.bool)):
        with pytest.raises(TypeError, match=r"sigma must be a real tensor"):
            flow.add_noise(x0, eps, bad)
        with pytest.raises(ValueError, match=r"x must have a floating dtype"):
            flow.x0_from_velocity(bad[:, None].expand(2, 3), eps, 0.5)
    with pytest.raises(ValueError, match="sigma is a meta tensor"):
        flow.add_noise(x0, eps, torch.zeros(2, device="meta"))
    with pytest.raises(ValueError, match=r"one device.*x on cpu.*v on meta"):
        flow.x0_from_velocity(x0, torch.zeros(2, 3, device="meta"), 0.5)
    with pytest.raises(ValueError, match="t is a meta tensor"):
        VPPath().add_noise(x0, eps, torch.zeros(2, dtype=torch.int64, device="meta"))


def test_flow_sigma_on_the_timestep_scale_points_at_the_converter():
    x0, eps = _data((2, 3))
    with pytest.raises(ValueError, match=r"got 500.0.*conventions.timestep_to_sigma"):
        flow.add_noise(x0, eps, 500.0)
    with pytest.raises(ValueError, match=r"got 999.0.*conventions.timestep_to_sigma"):
        flow.sample(x0, torch.tensor([999.0, 10.0]))


def test_edm_path_holds_its_parameters():
    p = EDMPath(sigma_data=1.0, offset_noise=0.2)
    assert (p.sigma_data, p.offset_noise) == (1.0, 0.2) and p == EDMPath(1.0, 0.2)
    with pytest.raises(AttributeError):
        p.sigma_data = 0.5
    with pytest.raises(TypeError, match="sigma_data must be a real number"):
        EDMPath(sigma_data="0.5")
    # velocity_from_x0 is the EDM ODE derivative dx/dσ = ε = noise_from_x0
    x0, eps = _data((2, 3))
    x = EDMPath().add_noise(x0, eps, 0.7)
    torch.testing.assert_close(EDMPath().velocity_from_x0(x, x0, 0.7), eps)


@pytest.mark.parametrize("layout", ["BCTHW", "BTCHW"])
def test_denoiser_takes_per_frame_sigma_with_a_layout(layout):
    """Per-frame σ: frame f of the output is the denoiser at σ_f, c_noise arrives as (B, T)."""
    seen = {}

    def net(x_in, c_noise):
        seen["c_noise"] = c_noise
        return torch.zeros_like(x_in)

    shape = (2, 3, 4, 2, 2) if layout == "BCTHW" else (2, 4, 3, 2, 2)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sig = torch.tensor([[0.1, 0.5, 1.0, 4.0], [2.0, 2.0, 0.3, 0.0]], dtype=torch.float64)
    d = EDMPath().denoiser_from_network(net, layout=layout)
    out = d(x, sig)
    assert seen["c_noise"].shape == (2, 4)
    ax = 2 if layout == "BCTHW" else 1
    for f in range(4):
        want = 0.25 / (0.25 + sig[:, f] ** 2)  # N(0, sd²) data: D = c_skip·x
        torch.testing.assert_close(out.select(ax, f),
                                   want.reshape(2, 1, 1, 1) * x.select(ax, f))
    with pytest.raises(ValueError, match=r"sigma must be.*\(B,\) = \(2,\)"):
        EDMPath().denoiser_from_network(net)(x, sig)  # no layout: per-sample only
