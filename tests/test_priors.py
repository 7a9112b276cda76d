"""Video noise priors: exact linear maps and covariances, diffusers parity, whiteness."""

import math
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from vidnoise.diagnostics import noise_report
from vidnoise.noise import NoiseKey, keyed_randn
from vidnoise.paths import EDMPath, FlowPath, VPPath
from vidnoise.priors import (
    freeinit,
    freeinit_filter,
    freeinit_noise_variance,
    freenoise,
    mixed_noise,
    progressive_noise,
    warp_noise,
)

Z = 6.0  # tolerance in standard errors (derived per test from the sample size)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def frame_corr(x, t, u):
    a, b = x.select(2, t).double().flatten(), x.select(2, u).double().flatten()
    return float((a * b).mean() / (a.square().mean() * b.square().mean()).sqrt())


# ----------------------------------------------------------------------------- PYoCo
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 3.0])
def test_mixed_noise_is_the_stated_linear_map(alpha):
    shape = (2, 3, 5, 4, 6)
    out = mixed_noise(shape, alpha, generator=gen(1))
    g = gen(1)
    shared = torch.randn((2, 3, 1, 4, 6), generator=g)
    ind = torch.randn(shape, generator=g)
    ref = (alpha * shared + ind) / math.sqrt(1 + alpha**2)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    # exact covariance of the map: ε_t = (α s + i_t)/√(1+α²): rows of the (T, T+1) matrix
    a = torch.zeros(5, 6, dtype=torch.float64)
    a[:, 0] = alpha
    a[:, 1:] = torch.eye(5, dtype=torch.float64)
    cov = a @ a.T / (1 + alpha**2)
    expect = torch.full((5, 5), alpha**2 / (1 + alpha**2), dtype=torch.float64)
    expect.fill_diagonal_(1.0)
    torch.testing.assert_close(cov, expect, rtol=0, atol=1e-15)


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_progressive_noise_map_and_exact_covariance(alpha):
    shape = (2, 3, 6, 4, 5)
    out = progressive_noise(shape, alpha, generator=gen(2))
    z = torch.randn(shape, generator=gen(2)).double()
    rho, s = alpha / math.sqrt(1 + alpha**2), 1 / math.sqrt(1 + alpha**2)
    m = torch.zeros(6, 6, dtype=torch.float64)  # ε = M z along frames
    for t in range(6):
        m[t, 0] = rho**t
        for k in range(1, t + 1):
            m[t, k] = s * rho ** (t - k)
    ref = torch.einsum("tk,bckhw->bcthw", m, z)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5)
    cov = m @ m.T
    i = torch.arange(6)
    expect = torch.tensor(rho, dtype=torch.float64) ** (i[:, None] - i[None]).abs()
    torch.testing.assert_close(cov, expect, rtol=0, atol=1e-12)  # unit variance every frame


def test_frame_correlations_statistically():
    """Sample correlation of two frames over n = B·C·H·W values: standard error about
    (1 - ρ²)/√n; tolerance Z of them."""
    shape = (8, 4, 4, 32, 32)
    n = 8 * 4 * 32 * 32
    for alpha in (0.5, 1.5):
        mix = mixed_noise(shape, alpha, generator=gen(3))
        pro = progressive_noise(shape, alpha, generator=gen(4))
        r_mix = alpha**2 / (1 + alpha**2)
        rho = alpha / math.sqrt(1 + alpha**2)
        for t, u in ((0, 1), (0, 3), (1, 3)):
            assert abs(frame_corr(mix, t, u) - r_mix) < Z * (1 - r_mix**2) / math.sqrt(n) + 1e-3
            r = rho ** abs(t - u)
            assert abs(frame_corr(pro, t, u) - r) < Z * (1 - r**2) / math.sqrt(n) + 1e-3
        for t in range(4):
            for x in (mix, pro):
                v = float(x.select(2, t).double().var())
                assert abs(v - 1) < Z * math.sqrt(2 / n)


def test_priors_half_precision_per_sample_and_frame_dim():
    out = mixed_noise((2, 4, 3, 8), 1.0, frame_dim=1, generator=[gen(5), gen(6)],
                      dtype=torch.bfloat16)
    assert out.dtype == torch.bfloat16
    alone = mixed_noise((1, 4, 3, 8), 1.0, frame_dim=1, generator=[gen(6)], dtype=torch.bfloat16)
    assert torch.equal(out[1:], alone)
    p = progressive_noise((2, 4, 3, 8), 1.0, frame_dim=1, generator=[gen(5), gen(6)])
    assert torch.equal(p[1:], progressive_noise((1, 4, 3, 8), 1.0, frame_dim=1,
                                                generator=[gen(6)]))
    assert mixed_noise((0, 4, 3, 8), 1.0).shape == (0, 4, 3, 8)


def test_priors_with_keyed_noise_shard_along_frames():
    key = NoiseKey(11)
    full_m = mixed_noise((2, 3, 9, 4, 6), 0.8, generator=key)
    full_p = progressive_noise((2, 3, 9, 4, 6), 0.8, generator=key)
    shard = key.at((0, 0, 5, 0, 0))
    torch.testing.assert_close(mixed_noise((2, 3, 4, 4, 6), 0.8, generator=shard),
                               full_m[:, :, 5:], rtol=0, atol=0)
    torch.testing.assert_close(progressive_noise((2, 3, 4, 4, 6), 0.8, generator=shard),
                               full_p[:, :, 5:], rtol=0, atol=0)
    assert torch.equal(mixed_noise((2, 3, 9, 4, 6), 0.0, generator=key),
                       keyed_randn((2, 3, 9, 4, 6), seed=11))


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: mixed_noise((2, 3), 1.0), ValueError, "frame_dim=2"),
        (lambda: mixed_noise((2, 3, 4), -1.0), ValueError, "alpha"),
        (lambda: progressive_noise((2, 3, 4), float("nan")), ValueError, "alpha"),
        (lambda: mixed_noise((2, 3, 4), 1.0, generator=[gen(0)]), ValueError, "one generator"),
        (lambda: mixed_noise((2, 3, 4), 1.0, generator=NoiseKey(1, (0, 0))), ValueError,
         "origin"),
    ],
)
def test_prior_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ----------------------------------------------------------------------------- FreeNoise
def _diffusers_freenoise(shape, window, stride, seed):
    from diffusers.pipelines.free_noise_utils import AnimateDiffFreeNoiseMixin

    class Pipe(AnimateDiffFreeNoiseMixin):
        vae_scale_factor = 1

    p = Pipe()
    p._free_noise_context_length = window
    p._free_noise_context_stride = stride
    p._free_noise_noise_type = "shuffle_context"
    b, c, t, h, w = shape
    return p._prepare_latents_free_noise(b, c, t, h, w, torch.float32, torch.device("cpu"),
                                         generator=gen(seed))


@pytest.mark.parametrize(
    "frames,window,stride",
    [(16, 16, 4), (24, 16, 4), (23, 16, 4), (21, 8, 3), (13, 4, 6), (5, 8, 2), (30, 6, 6)],
)
def test_freenoise_equals_diffusers_element_for_element(frames, window, stride):
    shape = (2, 3, frames, 4, 5)
    ref = _diffusers_freenoise(shape, window, stride, seed=frames)
    g = gen(frames)
    noise = torch.randn(shape, generator=g)  # diffusers' randn_tensor on CPU
    out = freenoise(noise, window, stride, generator=g)
    assert torch.equal(out, ref)
    # every frame is one of the first `window` frames (when stride <= window; a longer stride
    # also copies frames from beyond the window, as diffusers does)
    first = noise[:, :, :window]
    for t in range(frames if stride <= window else 0):
        assert any(torch.equal(out[:, :, t], first[:, :, j]) for j in range(min(window, frames)))


def test_freenoise_per_sample_keyed_and_layout():
    noise = torch.randn(2, 3, 20, 4, 4, generator=gen(0))
    out = freenoise(noise, 8, 4, generator=[gen(1), gen(2)])
    assert torch.equal(out[1:], freenoise(noise[1:], 8, 4, generator=[gen(2)]))
    k = NoiseKey(5)
    a = freenoise(noise, 8, 4, generator=k)
    longer = torch.cat([noise, torch.randn(2, 3, 8, 4, 4, generator=gen(9))], dim=2)
    assert torch.equal(freenoise(longer, 8, 4, generator=k)[:, :, :20], a)
    btchw = noise.transpose(1, 2)
    torch.testing.assert_close(freenoise(btchw, 8, 4, frame_dim=1, generator=k),
                               a.transpose(1, 2), rtol=0, atol=0)
    with pytest.raises(ValueError, match="window"):
        freenoise(noise, 0, 4)
    with pytest.raises(ValueError, match="frame_dim"):
        freenoise(noise, 4, 4, frame_dim=5)


# ----------------------------------------------------------------------------- FreeInit
def _diffusers_filter(shape, kind, ds=0.25, dt=0.25, order=4):
    from diffusers.pipelines.free_init_utils import FreeInitMixin

    return FreeInitMixin._get_free_init_freq_filter(None, shape, "cpu", kind, order, ds, dt)


@pytest.mark.parametrize("kind", ["butterworth", "gaussian"])
@pytest.mark.parametrize("shape", [(1, 2, 8, 12, 16), (1, 1, 16, 6, 10)])
@pytest.mark.parametrize("ds,dt,order", [(0.25, 0.25, 4), (0.4, 0.1, 2)])
def test_filter_equals_diffusers_for_even_sizes(kind, shape, ds, dt, order):
    ref = _diffusers_filter(shape, kind, ds, dt, order)
    ours = freeinit_filter(shape, kind=kind, spatial_cutoff=ds, temporal_cutoff=dt, order=order)
    torch.testing.assert_close(ours.expand(shape), ref, rtol=0, atol=1e-6)


def test_diffusers_ideal_cutoff_is_2ds_not_ds_squared():
    shape = (1, 1, 8, 16, 16)
    ref = _diffusers_filter(shape, "ideal")
    ours = freeinit_filter(shape, kind="ideal")
    f = torch.arange(16) * (2 / 16) - 1  # diffusers' grid (even: equal to ours)
    ft = torch.arange(8) * (2 / 8) - 1
    d2 = ft[:, None, None] ** 2 + f[:, None] ** 2 + f**2
    assert torch.equal(ref[0, 0], (d2 <= 2 * 0.25).float())  # what diffusers computes
    assert torch.equal(ours[0, 0], (d2 <= 0.25**2).float())  # d² <= d_s²
    assert ref.sum() > 5 * ours.sum()
    # ours is the limit of the butterworth filter (1/2 exactly at d² = d_s²); diffusers' is not
    bw = freeinit_filter(shape, kind="butterworth", order=200)
    assert torch.equal((bw > 0.5).float(), ours) or torch.equal((bw >= 0.5).float(), ours)
    assert not torch.equal((bw >= 0.5).float(), ref)


@pytest.mark.parametrize("shape", [(1, 1, 21, 15, 13), (1, 1, 5, 7, 9), (1, 1, 1, 3, 3)])
@pytest.mark.parametrize("kind", ["butterworth", "gaussian", "ideal"])
def test_filter_odd_sizes_dc_one_and_symmetric(shape, kind):
    ours = freeinit_filter(shape, kind=kind)[0, 0].double()
    t, h, w = shape[-3:]
    assert float(ours[t // 2, h // 2, w // 2]) == 1.0
    un = torch.fft.ifftshift(ours, dim=(0, 1, 2))  # standard FFT order: L[k] must equal L[-k]
    neg = torch.roll(torch.flip(un, dims=(0, 1, 2)), shifts=(1, 1, 1), dims=(0, 1, 2))
    assert torch.equal(un, neg)
    if kind != "ideal":
        ref = _diffusers_filter(shape, kind)[0, 0].double()
        assert float(ref[t // 2, h // 2, w // 2]) < 1.0  # diffusers: DC weight below 1
        un_r = torch.fft.ifftshift(ref, dim=(0, 1, 2))
        neg_r = torch.roll(torch.flip(un_r, dims=(0, 1, 2)), shifts=(1, 1, 1), dims=(0, 1, 2))
        assert not torch.allclose(un_r, neg_r)  # asymmetric: the mix is not real


def test_classic_freeinit_equals_diffusers_apply_freq_filter():
    from diffusers.pipelines.free_init_utils import FreeInitMixin

    shape = (2, 4, 8, 12, 16)
    x0 = torch.randn(shape, generator=gen(1))
    noise = torch.randn(shape, generator=gen(2))
    filt = freeinit_filter(shape)
    out = freeinit(x0, noise, 1.0, filter=filt, path=FlowPath(), variance_preserving=False,
                   generator=gen(3))
    z_rand = torch.randn(shape, generator=gen(3))
    ref = FreeInitMixin._apply_freq_filter(None, noise, z_rand, filt)
    torch.testing.assert_close(out, ref, rtol=0, atol=2e-6)


@pytest.mark.parametrize(
    "path,sigma", [(FlowPath(), 0.7), (EDMPath(), 3.0), (VPPath(), 600)]
)
def test_freeinit_renoises_with_the_paths_own_formula(path, sigma):
    shape = (2, 3, 5, 6, 7)
    x0 = torch.randn(shape, generator=gen(1))
    noise = torch.randn(shape, generator=gen(2))
    ones = torch.ones(1, 1, 5, 6, 7)
    keep = freeinit(x0, noise, sigma, filter=ones, path=path, generator=gen(3))
    torch.testing.assert_close(keep, path.add_noise(x0, noise, sigma), rtol=0, atol=1e-5)
    fresh = freeinit(x0, noise, sigma, filter=torch.zeros_like(ones), path=path,
                     generator=gen(3))
    eps = torch.randn(shape, generator=gen(3))
    torch.testing.assert_close(fresh, path.add_noise(torch.zeros_like(eps), eps, sigma),
                               rtol=0, atol=1e-5)


def test_variance_preserving_mix_is_exactly_unit_at_every_frequency():
    """The re-initialised noise is a linear map of two white fields with per-frequency gains
    (L, H); its per-frequency variance is L² + H² exactly. Then a statistical check of the
    pixel-domain variance: n = numel values, std error of the variance √(2/n)."""
    shape = (4, 4, 16, 24, 24)
    filt = freeinit_filter(shape)
    assert torch.allclose(freeinit_noise_variance(filt), torch.ones((), dtype=torch.float64),
                          atol=1e-15)
    classic = freeinit_noise_variance(filt, variance_preserving=False)
    assert float(classic.min()) == pytest.approx(0.5, abs=0.02)  # L = 1/2 band loses half
    zeros = torch.zeros(shape)
    noise = torch.randn(shape, generator=gen(1))
    vp = freeinit(zeros, noise, 1.0, filter=filt, generator=gen(2))
    cl = freeinit(zeros, noise, 1.0, filter=filt, variance_preserving=False, generator=gen(2))
    n = vp.numel()
    assert abs(float(vp.double().var()) - 1) < Z * math.sqrt(2 / n)
    assert noise_report(vp, dims=3).failures() == []
    expect = float(classic.mean())  # Parseval: pixel variance = mean per-frequency variance
    assert abs(float(cl.double().var()) - expect) < Z * math.sqrt(2 / n)
    assert expect < 1.0  # small overall (most bins are high, L ≈ 0), half at L = 1/2


def test_freeinit_errors():
    x = torch.zeros(1, 2, 4, 6, 6)
    f = freeinit_filter(x.shape)
    with pytest.raises(ValueError, match="filter must end"):
        freeinit(x, x, 1.0, filter=f[..., :5])
    with pytest.raises(ValueError, match="noise must have the shape"):
        freeinit(x, x[:, :1], 1.0, filter=f)
    with pytest.raises(TypeError, match="add_noise"):
        freeinit(x, x, 1.0, filter=f, path=object())
    with pytest.raises(ValueError, match="kind"):
        freeinit_filter(x.shape, kind="box")
    with pytest.raises(ValueError, match="spatial_cutoff"):
        freeinit_filter(x.shape, spatial_cutoff=0.0)
    with pytest.raises(ValueError, match="at least 3 dims"):
        freeinit_filter((4, 4))


# ----------------------------------------------------------------------------- warping
def _grid(h, w):
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                            torch.arange(w, dtype=torch.float32), indexing="ij")
    return xx - (w - 1) / 2, yy - (h - 1) / 2


def _flows(h, w, b):
    xx, yy = _grid(h, w)
    zoom = torch.stack([xx * 0.15, yy * 0.15])
    a = 0.25
    rot = torch.stack([xx * (math.cos(a) - 1) - yy * math.sin(a),
                       xx * math.sin(a) + yy * (math.cos(a) - 1)])
    g = gen(7)
    rnd = torch.nn.functional.interpolate(torch.randn(1, 2, 4, 4, generator=g) * 3, size=(h, w),
                                          mode="bicubic", align_corners=False)[0]
    shrink = torch.stack([xx * -0.3, yy * -0.3])
    return {"zoom": zoom, "rotation": rot, "random": rnd, "shrink": shrink,
            "subpixel": torch.full((2, h, w), 0.37)}


def test_zero_flow_is_exactly_the_identity():
    for dt in (torch.float32, torch.float16, torch.float64):
        n = torch.randn(2, 3, 9, 11, generator=gen(0)).to(dt)
        out = warp_noise(n, torch.zeros(2, 2, 9, 11), generator=gen(1))
        assert out.dtype == dt and torch.equal(out, n)


@pytest.mark.parametrize("dx,dy", [(3, -2), (-5, 0), (0, 4)])
def test_integer_translation_is_an_exact_shift(dx, dy):
    h, w = 16, 20
    n = torch.randn(1, 4, h, w, generator=gen(0))
    flow = torch.zeros(1, 2, h, w)
    flow[:, 0], flow[:, 1] = dx, dy
    out = warp_noise(n, flow, generator=gen(1))
    ys, xs = slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0))
    ys0, xs0 = slice(max(-dy, 0), h + min(-dy, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    assert torch.equal(out[:, :, ys, xs], n[:, :, ys0, xs0])


@pytest.mark.parametrize("name", ["zoom", "rotation", "random", "shrink", "subpixel"])
def test_warped_noise_is_unit_white(name):
    """White per frame: noise_report's bands (6 standard errors for this size), plus a KS test
    of normality with tolerance c(1e-6)/√n."""
    b, c, h, w = 2, 16, 48, 64
    flow = _flows(h, w, b)[name].expand(b, 2, h, w)
    n = torch.randn(b, c, h, w, generator=gen(3))
    out = warp_noise(n, flow, generator=gen(4))
    assert noise_report(out).failures() == []
    d = stats.kstest(out.double().flatten().numpy(), "norm").statistic
    assert d < math.sqrt(-math.log(1e-6 / 2) / 2) / math.sqrt(out.numel())
    if name == "subpixel":  # a sub-pixel motion still correlates strongly with the source
        assert float((out * n).mean()) > 0.3


def test_clip_warped_frame_by_frame_stays_white():
    b, c, h, w, frames = 1, 16, 32, 48, 8
    flow = _flows(h, w, b)["random"][None] * 0.5
    x = torch.randn(b, c, h, w, generator=gen(5))
    g = gen(6)
    clip = [x]
    for _ in range(frames - 1):
        clip.append(warp_noise(clip[-1], flow, generator=g))
    for f in clip:
        assert noise_report(f).failures() == []
    # temporally correlated along the flow: a constant 0.6 px motion in x sends half of each
    # pixel's sub-pixels one pixel right, so that neighbour correlates by about 1/√2·1/√2
    flow = torch.zeros(1, 2, h, w)
    flow[:, 0] = 0.6
    nxt = warp_noise(x, flow, generator=g)
    m = x[..., :-1].numel()
    assert float((nxt[..., 1:] * x[..., :-1]).mean()) > 0.5 - Z / math.sqrt(m)


def test_strength_blend_is_variance_preserving():
    n = torch.randn(4, 16, 32, 32, generator=gen(0))
    out = warp_noise(n, torch.zeros(4, 2, 32, 32), strength=0.6, generator=gen(1))
    m = n.numel()
    assert abs(float(out.double().var()) - 1) < Z * math.sqrt(2 / m)
    assert abs(float((out * n).double().mean()) - 0.6) < Z * math.sqrt((1 + 0.36) / m)
    assert torch.equal(warp_noise(n, torch.zeros(4, 2, 32, 32), strength=1.0), n)


def test_warp_generators_keys_and_errors():
    n = torch.randn(2, 3, 8, 8, generator=gen(0))
    flow = _flows(8, 8, 2)["zoom"].expand(2, 2, 8, 8)
    both = warp_noise(n, flow, generator=[gen(1), gen(2)])
    assert torch.equal(both[1:], warp_noise(n[1:], flow[1:], generator=[gen(2)]))
    k = NoiseKey(3)
    assert torch.equal(warp_noise(n, flow, generator=k), warp_noise(n, flow, generator=k))
    with pytest.raises(ValueError, match="flow must have shape"):
        warp_noise(n, flow[:, :1])
    with pytest.raises(ValueError, match="power of two"):
        warp_noise(n, flow, subpixels=3)
    with pytest.raises(ValueError, match="strength"):
        warp_noise(n, flow, strength=1.5)
    with pytest.raises(ValueError, match="4 dims"):
        warp_noise(n[None], flow)


# ----------------------------------------------------------------------------- docs
def test_docs_examples_run():
    text = (Path(__file__).parents[1] / "docs" / "priors.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 4
    ns: dict = {}
    for block in blocks:
        exec(compile(block, "docs/priors.md", "exec"), ns)


def test_freeinit_half_spectrum_path_equals_full_fft_path():
    """Symmetric filters take the rfftn path; an asymmetric one (diffusers' odd-size filter)
    the fftn + real path. Both must equal the plain full-FFT formula."""
    shape = (2, 3, 7, 10, 9)
    x0 = torch.randn(shape, generator=gen(1))
    noise = torch.randn(shape, generator=gen(2))
    eps = torch.randn(shape, generator=gen(3))
    for filt in (freeinit_filter(shape), _diffusers_filter(shape, "gaussian")):
        out = freeinit(x0, noise, 0.8, filter=filt, generator=gen(3))
        dims = (-3, -2, -1)
        lo = torch.fft.ifftshift(filt, dim=dims)
        hi = (1 - lo**2).clamp_min(0).sqrt()
        z = FlowPath().add_noise(x0, noise, 0.8)
        ref = torch.fft.ifftn(torch.fft.fftn(z, dim=dims) * lo
                              + torch.fft.fftn(0.8 * eps, dim=dims) * hi, dim=dims).real
        torch.testing.assert_close(out, ref, rtol=0, atol=2e-6)


# ----------------------------------------------------------------------------- properties


@settings(max_examples=25)
@given(frames=st.integers(1, 30), window=st.integers(1, 12), stride=st.integers(1, 12),
       seed=st.integers(0, 1000))
def test_freenoise_equals_diffusers_for_any_frame_count(frames, window, stride, seed):
    shape = (1, 2, frames, 2, 3)
    ref = _diffusers_freenoise(shape, window, stride, seed)
    g = gen(seed)
    noise = torch.randn(shape, generator=g)
    assert torch.equal(freenoise(noise, window, stride, generator=g), ref)


@settings(max_examples=25)
@given(h=st.integers(1, 12), w=st.integers(1, 12), dx=st.integers(-14, 14),
       dy=st.integers(-14, 14), k=st.sampled_from([1, 2, 4, 8]), seed=st.integers(0, 99))
def test_warp_integer_translation_property(h, w, dx, dy, k, seed):
    n = torch.randn(2, 3, h, w, generator=gen(seed))
    flow = torch.zeros(2, 2, h, w)
    flow[:, 0], flow[:, 1] = dx, dy
    out = warp_noise(n, flow, subpixels=k, generator=gen(seed + 1))
    ys, xs = slice(max(dy, 0), max(h + min(dy, 0), 0)), slice(max(dx, 0), max(w + min(dx, 0), 0))
    ys0 = slice(max(-dy, 0), max(h + min(-dy, 0), 0))
    xs0 = slice(max(-dx, 0), max(w + min(-dx, 0), 0))
    assert torch.equal(out[:, :, ys, xs], n[:, :, ys0, xs0])
    assert torch.isfinite(out).all()
