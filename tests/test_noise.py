"""Tests of vidnoise.noise: seeded noise, block noise, variance-exact resampling, pyramids.

Statistical tolerances are derived from the sample size: a sample covariance entry of n
Gaussian pairs with correlation ρ has standard error sqrt((1 + ρ²)/n); a sample variance of n
normals has standard error sqrt(2/n). Bands are Z standard errors wide with Z chosen so that a
maximum over all tested positions stays inside with probability > 0.999.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import vidnoise as vn
from vidnoise.noise import _block_basis, block_noise, noise_pyramid, randn, resample_noise

Z = 5.5


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- randn / rand
def test_randn_matches_torch_randn_for_one_generator():
    a = randn((3, 4, 5), generator=gen(7))
    b = torch.randn((3, 4, 5), generator=gen(7))
    assert torch.equal(a, b)


def test_per_sample_generators_are_batch_independent():
    full = randn((4, 3, 8, 8), generator=[gen(s) for s in (10, 11, 12, 13)])
    alone = randn((1, 3, 8, 8), generator=[gen(12)])
    assert torch.equal(full[2], alone[0])
    # item i is torch.randn(shape[1:]) of generator i
    assert torch.equal(full[1], torch.randn((3, 8, 8), generator=gen(11)))
    # reordering the batch reorders the samples
    rev = randn((4, 3, 8, 8), generator=[gen(s) for s in (13, 12, 11, 10)])
    assert torch.equal(rev.flip(0), full)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_noise_is_rounding_of_float32_draw(dtype):
    a = randn((2, 3, 16, 16), generator=gen(3), dtype=dtype)
    b = randn((2, 3, 16, 16), generator=gen(3), dtype=torch.float32).to(dtype)
    assert a.dtype == dtype and torch.equal(a, b)


def test_float64_draw():
    a = randn((1000,), generator=gen(3), dtype=torch.float64)
    assert a.dtype == torch.float64
    assert abs(float(a.mean())) < Z / math.sqrt(1000)


def test_rand_range_and_generators():
    u = vn.rand((3, 1000), generator=[gen(1), gen(2), gen(3)])
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert torch.equal(u[1], torch.rand((1000,), generator=gen(2)))


def test_empty_batch():
    assert randn((0, 3, 4)).shape == (0, 3, 4)
    assert randn((0, 3), generator=[]).shape == (0, 3)
    assert block_noise((0, 2, 4, 4)).shape == (0, 2, 4, 4)
    assert resample_noise(torch.empty(0, 2, 8, 8), (4, 4)).shape == (0, 2, 4, 4)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(shape=(2, 3), dtype=torch.int64), ValueError, "dtype"),
        (dict(shape=(2, -1)), ValueError, "shape"),
        (dict(shape="ab"), TypeError, "shape"),
        (dict(shape=(2, 3), generator=[torch.Generator()]), ValueError, "one generator per"),
        (dict(shape=(2, 3), generator=3), TypeError, "generator"),
        (dict(shape=(2, 3), generator=torch.Generator(), device="meta"), ValueError, "device"),
    ],
)
def test_randn_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        randn(**kwargs)


# ----------------------------------------------------------------------------- block noise
def block_vectors(x: torch.Tensor, block) -> torch.Tensor:
    """(n_blocks, m) matrix of block contents, blocks tiling the last len(block) dims."""
    nb = len(block)
    lead = x.shape[: x.dim() - nb]
    shape = list(lead)
    for s, b in zip(x.shape[x.dim() - nb :], block):
        shape += [s // b, b]
    v = x.reshape(shape)
    p = len(lead)
    outer = list(range(p)) + [p + 2 * i for i in range(nb)]
    inner = [p + 2 * i + 1 for i in range(nb)]
    return v.permute(outer + inner).reshape(-1, math.prod(block))


@pytest.mark.parametrize("block", [(2, 2), (1, 2, 2), (2, 2, 2)])
@pytest.mark.parametrize("frac", [0.0, 0.6, 1.0])  # gamma = frac / (m - 1)
def test_block_noise_covariance(block, frac):
    m = math.prod(block)
    gamma = frac / (m - 1)
    if block == (2, 2) and frac == 0.6:
        gamma = 0.2  # the values {0, 0.2, 1/3} used for the pyramid's renoising
    shape = (64, 4, 4, 8, 8) if len(block) == 3 else (64, 4, 16, 16)
    x = block_noise(shape, gamma=gamma, block=block, generator=gen(1), dtype=torch.float64)
    v = block_vectors(x, block)
    n = v.shape[0]
    cov = v.T @ v / n  # known zero mean
    target = (1 + gamma) * torch.eye(m, dtype=torch.float64) - gamma
    se = torch.sqrt((1 + target**2) / n)
    assert torch.all((cov - target).abs() <= Z * se), (cov - target).abs().max()
    # independence across blocks: correlation between horizontally adjacent blocks
    w = block[-1]
    left = x[..., 0:w].reshape(-1)
    right = x[..., w : 2 * w].reshape(-1)
    assert abs(float((left * right).mean())) <= Z / math.sqrt(left.numel())


@pytest.mark.parametrize("block", [(2, 2), (1, 2, 2), (2, 2, 2), (3,), (1, 3, 3)])
def test_block_noise_singular_end_sums_to_zero(block):
    m = math.prod(block)
    shape = (3, 2, 6, 6, 6) if len(block) == 3 else (3, 2, 6, 6)
    for dtype, atol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        x = block_noise(shape, gamma=1 / (m - 1), block=block, generator=gen(2), dtype=dtype)
        sums = block_vectors(x, block).sum(1)
        assert float(sums.abs().max()) <= atol
        assert torch.isfinite(x).all()


def test_block_basis_reproduces_covariance_exactly():
    for m in (2, 3, 4, 8, 9):
        for gamma in (0.0, 0.05, 1 / (m - 1)):
            mix, singular = _block_basis(m, gamma)
            target = (1 + gamma) * torch.eye(m, dtype=torch.float64) - gamma
            assert torch.allclose(mix @ mix.T, target, atol=1e-12)
            assert singular == (gamma == 1 / (m - 1))
            assert mix.shape[1] == (m - 1 if singular else m)


def test_block_noise_closed_form_matches_mean_and_combine():
    """Statistically equivalent to docs/math.md §3's n = sqrt(1+γ)(z-b) + sqrt(1-(m-1)γ)b."""
    gamma, block = 0.2, (2, 2)
    z = torch.randn(20000, 1, 2, 2, generator=gen(5), dtype=torch.float64)
    b = z.mean(dim=(-1, -2), keepdim=True)
    ref = math.sqrt(1 + gamma) * (z - b) + math.sqrt(1 - 3 * gamma) * b
    ours = block_noise((20000, 1, 2, 2), gamma=gamma, block=block, generator=gen(6),
                       dtype=torch.float64)
    c_ref = block_vectors(ref, block)
    c_ours = block_vectors(ours, block)
    cov_ref = c_ref.T @ c_ref / 20000
    cov_ours = c_ours.T @ c_ours / 20000
    se = math.sqrt(2 * (1 + gamma**2) / 20000)  # difference of two independent estimates
    assert float((cov_ref - cov_ours).abs().max()) <= Z * se


def test_block_noise_per_sample_generators_and_half():
    a = block_noise((3, 2, 8, 8), generator=[gen(1), gen(2), gen(3)])
    b = block_noise((1, 2, 8, 8), generator=[gen(3)])
    assert torch.equal(a[2], b[0])
    c = block_noise((3, 2, 8, 8), generator=[gen(1), gen(2), gen(3)], dtype=torch.float16)
    assert c.dtype == torch.float16 and torch.equal(c, a.half())
    d = block_noise((3, 2, 8, 8), gamma=0.2, generator=[gen(1), gen(2), gen(3)],
                    dtype=torch.bfloat16)
    e = block_noise((3, 2, 8, 8), gamma=0.2, generator=[gen(1), gen(2), gen(3)])
    assert torch.equal(d, e.bfloat16())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(shape=(1, 1, 5, 4)), "divisible"),
        (dict(shape=(1, 1, 4, 4), gamma=0.34), "gamma"),
        (dict(shape=(1, 1, 4, 4), gamma=-0.1), "gamma"),
        (dict(shape=(1, 1, 4, 4, 4), block=(2, 2, 2), gamma=0.2), "gamma"),
        (dict(shape=(4, 4), block=(2, 2, 2)), "more dims"),
        (dict(shape=(1, 1, 4, 4), block=(0, 2)), "block"),
        (dict(shape=(1, 1, 4, 4), dtype=torch.int32), "dtype"),
        (dict(shape=(1, 1, 4, 4), gamma=float("nan")), "gamma"),
    ],
)
def test_block_noise_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        block_noise(**kwargs)


@given(
    b=st.integers(0, 3),
    hc=st.integers(1, 5),
    wc=st.integers(1, 5),
    bh=st.sampled_from([1, 2, 3]),
    bw=st.sampled_from([1, 2, 3]),
    frac=st.sampled_from([0.0, 0.5, 1.0]),
)
def test_block_noise_property_shapes(b, hc, wc, bh, bw, frac):
    m = bh * bw
    gamma = frac / (m - 1) if m > 1 else 0.0
    shape = (b, 2, hc * bh, wc * bw)
    x = block_noise(shape, gamma=gamma, block=(bh, bw), generator=gen(0))
    assert x.shape == shape and torch.isfinite(x).all()
    if m > 1 and frac == 1.0 and b > 0:
        assert float(block_vectors(x, (bh, bw)).sum(1).abs().max()) <= 1e-5


# ----------------------------------------------------------------------------- resampling
def brute_force_variance(mode, n_in, size, antialias, dims=2):
    """Σ_j W_ij² from the full (non-separable) weight matrix: resample every impulse."""
    numel = math.prod(n_in)
    eye = torch.eye(numel, dtype=torch.float64).reshape(numel, 1, *n_in)
    kw = {"align_corners": False} if mode in ("bilinear", "bicubic", "trilinear") else {}
    if antialias:
        kw["antialias"] = True
    y = F.interpolate(eye, size=size, mode=mode, **kw)
    return (y * y).sum(0)[0]


@pytest.mark.parametrize(
    "mode, antialias, n_in, size",
    [
        ("bilinear", False, (8, 8), (4, 4)),
        ("bilinear", False, (9, 9), (4, 4)),
        ("bilinear", False, (9, 6), (3, 2)),
        ("bilinear", False, (5, 5), (8, 9)),
        ("bilinear", True, (12, 12), (6, 6)),
        ("bilinear", True, (11, 7), (4, 3)),
        ("bicubic", False, (8, 8), (4, 4)),
        ("bicubic", True, (10, 9), (4, 4)),
        ("bicubic", False, (4, 4), (9, 7)),
        ("area", False, (9, 6), (4, 4)),
        ("nearest", False, (8, 8), (4, 4)),
        ("nearest", False, (9, 7), (4, 3)),
        ("nearest-exact", False, (7, 7), (3, 5)),
    ],
)
def test_resample_variance_matches_brute_force(mode, antialias, n_in, size):
    ours = vn.resample_variance(n_in, size, mode=mode, antialias=antialias)
    ref = brute_force_variance(mode, n_in, size, antialias)
    assert torch.allclose(ours, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "mode, n_in, size",
    [("trilinear", (5, 6, 6), (2, 3, 3)), ("area", (6, 6, 4), (3, 4, 2)),
     ("nearest", (5, 4, 7), (3, 2, 3))],
)
def test_resample_variance_3d_matches_brute_force(mode, n_in, size):
    ours = vn.resample_variance(n_in, size, mode=mode, dims=3)
    ref = brute_force_variance(mode, n_in, size, False, dims=3)
    assert torch.allclose(ours, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "mode, antialias, size",
    [
        ("nearest", False, (16, 16)),
        ("bilinear", False, (16, 16)),
        ("bilinear", True, (16, 16)),
        ("bicubic", False, (16, 16)),
        ("bicubic", True, (16, 16)),
        ("area", False, (16, 16)),
        ("bilinear", False, (10, 10)),  # 3x
        ("bilinear", True, (10, 10)),
        ("bilinear", False, (13, 9)),  # odd, non-integer ratio
        ("area", False, (13, 9)),
        ("bicubic", False, (45, 40)),  # upsampling
    ],
)
def test_resample_noise_unit_variance_by_position(mode, antialias, size):
    n = 3000
    x = randn((n, 1, 32, 30) if size == (10, 10) else (n, 1, 32, 32), generator=gen(4))
    if size == (10, 10):
        x = x[..., :30, :30]
    y = resample_noise(x, size, mode=mode, antialias=antialias)
    var = y.double().square().mean(0)[0]  # zero mean by construction
    se = math.sqrt(2 / n)
    assert float((var - 1).abs().max()) <= Z * se, float((var - 1).abs().max())


def test_constant_two_is_wrong_outside_exact_2x_linear():
    """docs/math.md §2: the failures of Pyramid-Flow's x2 (exact, from the weights)."""
    v = vn.resample_variance((64, 64), (32, 32), mode="nearest") * 4
    assert torch.allclose(v, torch.full_like(v, 4.0))
    # bicubic (A = -0.75) at a 2x reduction samples at t = 1/2: taps (-3, 19, 19, -3)/32,
    # so the interior variance after x2 is 4 * (2 * (9 + 361) / 1024)^2 = 2.0889; borders
    # differ, and the mean over a whole 4x4 output of an 8x8 input is the measured 1.78.
    v = vn.resample_variance((64, 64), (32, 32), mode="bicubic") * 4
    interior = 4 * (2 * (9 + 361) / 1024) ** 2
    assert torch.allclose(v[2:-2, 2:-2], torch.full_like(v[2:-2, 2:-2], interior))
    v8 = vn.resample_variance((8, 8), (4, 4), mode="bicubic") * 4
    assert abs(float(v8.mean()) - 1.78) < 0.005
    v = vn.resample_variance((64, 64), (32, 32), mode="bilinear", antialias=True) * 4
    assert 0.35 < float(v.min()) and float(v.max()) < 0.65
    v = vn.resample_variance((9, 9), (4, 4), mode="bilinear") * 4
    assert float(v.min()) < 1.2 and float(v.max()) > 2.0
    v = vn.resample_variance((63, 63), (21, 21), mode="bilinear") * 4  # exact 3x: one tap
    assert torch.allclose(v, torch.full_like(v, 4.0))


@pytest.mark.parametrize("mode", ["bilinear", "area"])
@pytest.mark.parametrize("shape", [(2, 3, 16, 24), (2, 3, 4, 16, 24)])
def test_exact_2x_equals_pyramid_flow_times_two(mode, shape):
    x = randn(shape, generator=gen(9))
    ours = resample_noise(x, (shape[-2] // 2, shape[-1] // 2), mode=mode)
    frames = x if x.dim() == 4 else x.permute(0, 2, 1, 3, 4).reshape(-1, *x.shape[1:2],
                                                                   *x.shape[-2:])
    ref = F.interpolate(frames, (shape[-2] // 2, shape[-1] // 2), mode=mode) * 2
    if x.dim() == 5:
        ref = ref.reshape(shape[0], shape[2], shape[1], *ref.shape[-2:]).permute(0, 2, 1, 3, 4)
    assert torch.allclose(ours, ref, rtol=1e-6, atol=1e-6)


def test_scale_factor_and_dims3():
    x = randn((2, 2, 6, 8, 8), generator=gen(1))
    a = resample_noise(x, scale_factor=0.5)
    b = resample_noise(x, (4, 4))
    assert torch.allclose(a, b)
    c = resample_noise(x, (3, 4, 4), dims=3, mode="trilinear")
    ref = F.interpolate(x, (3, 4, 4), mode="trilinear") * math.sqrt(8)
    assert torch.allclose(c, ref, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_resample_dtypes(dtype):
    x = randn((2, 3, 16, 16), generator=gen(2), dtype=torch.float64)
    y = resample_noise(x.to(dtype), (8, 8), mode="bicubic")
    ref = resample_noise(x, (8, 8), mode="bicubic")
    assert y.dtype == dtype
    tol = {torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float64: 1e-12}[dtype]
    assert torch.allclose(y.double(), ref, atol=tol * 4)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((torch.zeros(1, 1, 8, 8), (4, 4)), dict(mode="lanczos"), "mode"),
        ((torch.zeros(1, 1, 8, 8), (4, 4)), dict(mode="nearest", antialias=True), "antialias"),
        ((torch.zeros(1, 1, 8, 8), (4, 4)), dict(scale_factor=0.5), "exactly one"),
        ((torch.zeros(1, 1, 8, 8),), dict(), "exactly one"),
        ((torch.zeros(1, 1, 8, 8), (0, 4)), dict(), ">= 1"),
        ((torch.zeros(1, 1, 8, 8),), dict(scale_factor=0.01), ">= 1"),
        ((torch.zeros(1, 1, 8, 8, dtype=torch.int64), (4, 4)), dict(), "floating"),
        ((torch.zeros(1, 8, 8), (4, 4)), dict(), "dims"),
        ((torch.zeros(1, 1, 8, 8), (4, 4)), dict(dims=3), "dims"),
        ((torch.zeros(1, 1, 2, 8, 8), (1, 4, 4)), dict(dims=3, mode="bicubic"), "mode"),
        ((torch.zeros(1, 1, 8, 8), (4, 4, 4)), dict(), "size"),
    ],
)
def test_resample_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        resample_noise(*args, **kwargs)


@given(
    h=st.integers(1, 24), w=st.integers(1, 24), oh=st.integers(1, 24), ow=st.integers(1, 24),
    mode=st.sampled_from(["nearest", "bilinear", "bicubic", "area"]),
)
def test_resample_property_shape_and_finite(h, w, oh, ow, mode):
    x = randn((2, 1, h, w), generator=gen(0))
    y = resample_noise(x, (oh, ow), mode=mode)
    assert y.shape == (2, 1, oh, ow) and torch.isfinite(y).all()
    # the rescaling is exactly 1/sqrt(Σ W²) applied to torch's interpolate
    kw = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    raw = F.interpolate(x, (oh, ow), mode=mode, **kw)
    var = vn.resample_variance((h, w), (oh, ow), mode=mode).float()
    assert torch.allclose(y * var.sqrt(), raw, atol=1e-5)


# ----------------------------------------------------------------------------- pyramid
def test_noise_pyramid_levels_nested_and_unit_variance():
    x = randn((2000, 1, 16, 16), generator=gen(3))
    pyr = noise_pyramid(x, 3)
    assert [p.shape[-1] for p in pyr] == [4, 8, 16]
    assert pyr[-1] is x
    # nested: each coarse value is twice the mean of its 2x2 parents
    parent = pyr[1].reshape(2000, 1, 4, 2, 4, 2).mean(dim=(3, 5)) * 2
    assert torch.allclose(pyr[0], parent, atol=1e-5)
    for level in pyr:
        var = level.double().square().mean(0)
        assert float((var - 1).abs().max()) <= Z * math.sqrt(2 / 2000)


def test_noise_pyramid_5d_dims3_and_odd_sizes():
    x = randn((1, 2, 8, 9, 11), generator=gen(3))
    pyr = noise_pyramid(x, 3)
    assert [tuple(p.shape[-3:]) for p in pyr] == [(8, 2, 2), (8, 4, 5), (8, 9, 11)]
    pyr3 = noise_pyramid(x, 2, dims=3)
    assert tuple(pyr3[0].shape[-3:]) == (4, 4, 5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(noise=torch.zeros(1, 1, 4, 4), levels=4), "levels"),
        (dict(noise=torch.zeros(1, 1, 4, 4), levels=0), "levels"),
        (dict(noise=torch.zeros(1, 1, 4, 4), levels=2, mode="gauss"), "mode"),
        (dict(noise=torch.zeros(1, 1, 4, 4, dtype=torch.int64), levels=2), "floating"),
    ],
)
def test_noise_pyramid_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        noise_pyramid(**kwargs)


# ----------------------------------------------------------------------------- exactness
PYRAMID_MODES_2D = [
    ("nearest", False), ("nearest-exact", False), ("bilinear", False), ("bicubic", False),
    ("area", False), ("bilinear", True), ("bicubic", True),
]


def exact_level_variances(shape, levels, **kw):
    """Var of every position of every level, exactly: the pyramid is linear in the noise, so
    feeding the N = H·W unit impulses as a batch gives each output's weights over the finest
    level; the variance is the sum of their squares (no sampling, no weight machinery)."""
    n = math.prod(shape)
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, *shape)
    return [p.square().sum(0)[0] for p in noise_pyramid(eye, levels, **kw)]


@pytest.mark.parametrize("mode, antialias", PYRAMID_MODES_2D)
@pytest.mark.parametrize("shape, levels", [((32, 32), 5), ((13, 11), 4), ((45, 81), 4),
                                           ((19, 40), 4)])
def test_noise_pyramid_exact_unit_variance_every_level(mode, antialias, shape, levels):
    for var in exact_level_variances(shape, levels, mode=mode, antialias=antialias):
        assert torch.allclose(var, torch.ones_like(var), rtol=0, atol=1e-10), (
            var.min(), var.max())


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact", "trilinear", "area"])
def test_noise_pyramid_dims3_exact_unit_variance(mode):
    for var in exact_level_variances((9, 10, 12), 3, mode=mode, dims=3):
        assert torch.allclose(var, torch.ones_like(var), rtol=0, atol=1e-10)


@pytest.mark.parametrize("mode, antialias", PYRAMID_MODES_2D)
def test_noise_pyramid_statistical_unit_variance(mode, antialias):
    # per-position sample variance of n normals: se sqrt(2/n); Z = 5.5 over all positions
    n = 4000
    x = randn((n, 1, 45, 27), generator=gen(11))
    for level in noise_pyramid(x, 4, mode=mode, antialias=antialias):
        var = level.double().square().mean(0)[0]
        assert float((var - 1).abs().max()) <= Z * math.sqrt(2 / n), (mode, level.shape)


def test_noise_pyramid_issue_shapes_fixed():
    """bicubic (16,64,64) and area (16,45,81), 4 levels: every level's overall variance is 1
    within the sampling error of the coarsest level (se sqrt(2/n) inflated x3 for the
    correlation between positions)."""
    for shape, mode in (((64, 16, 64, 64), "bicubic"), ((64, 16, 45, 81), "area")):
        pyr = noise_pyramid(randn(shape, generator=gen(0)), 4, mode=mode)
        for level in pyr:
            n = level.numel()
            assert abs(float(level.double().var()) - 1) < 3 * Z * math.sqrt(2 / n), mode


def test_noise_pyramid_bicubic_is_normalised_interpolate_chain():
    """Nesting: each level is a per-position rescaling of interpolate() applied to the raw
    chain from the finest level."""
    x = randn((3, 2, 21, 17), generator=gen(1), dtype=torch.float64)
    pyr = noise_pyramid(x, 3, mode="bicubic")
    u = x
    for level in pyr[-2::-1]:
        u = F.interpolate(u, level.shape[-2:], mode="bicubic", align_corners=False)
        ratio = level / u
        assert torch.allclose(ratio, ratio[:1, :1].expand_as(ratio), rtol=1e-9)


def test_noise_pyramid_half_and_empty():
    x = randn((2, 3, 4, 15, 13), generator=gen(2), dtype=torch.float64)
    ref = noise_pyramid(x, 3, mode="bicubic")
    half = noise_pyramid(x.half(), 3, mode="bicubic")
    for a, b in zip(ref, half):
        assert b.dtype == torch.float16 and torch.allclose(b.double(), a, atol=2e-2)
    empty = noise_pyramid(torch.empty(0, 2, 15, 13), 3, mode="bicubic")
    assert [tuple(p.shape) for p in empty] == [(0, 2, 3, 3), (0, 2, 7, 6), (0, 2, 15, 13)]


def dense_axis_weights(n_in, n_out, mode, antialias, scale=None):
    """W (n_out x n_in) of one axis by resampling the full identity (the brute force)."""
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, 1, n_in, 1).expand(
        n_in, 1, n_in, 3).contiguous()
    kw = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    if antialias:
        kw["antialias"] = True
    if scale is None:
        y = F.interpolate(eye, (n_out, 3), mode=mode, **kw)
    else:
        y = F.interpolate(eye, scale_factor=(scale, 1.0), mode=mode, **kw)
    return y[:, 0, :, 0].T


@given(
    n_in=st.integers(1, 70), n_out=st.integers(1, 70),
    mode_aa=st.sampled_from(PYRAMID_MODES_2D), use_scale=st.booleans(),
)
def test_axis_weights_match_identity_brute_force(n_in, n_out, mode_aa, use_scale):
    from vidnoise.noise import _axis_weights

    mode, antialias = mode_aa
    scale = None
    if use_scale:
        scale = n_out / n_in * 1.013  # not the size ratio: torch places samples by it
        n_out = math.floor(n_in * scale)
        if n_out < 1:
            return
    ref = dense_axis_weights(n_in, n_out, mode, antialias, scale)
    ours = _axis_weights(n_in, n_out, scale, mode, 2, 0, antialias).to_dense()
    assert torch.allclose(ours, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("n_in, size", [((16, 1), (5, 1)), ((11, 7), (4, 1)), ((7, 5), (1, 1)),
                                        ((1, 9), (1, 4))])
def test_resample_antialias_output_width_one_exact(mode, n_in, size):
    """torch's antialiased kernels apply a wrong map along H at output width 1: exact per
    position variance from impulses, and the map is the separable brute-force one."""
    n = math.prod(n_in)
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, *n_in)
    y = resample_noise(eye, size, mode=mode, antialias=True)
    var = y.square().sum(0)[0]
    assert torch.allclose(var, torch.ones_like(var), atol=1e-10)
    wh = dense_axis_weights(n_in[0], size[0], mode, True)
    ww = dense_axis_weights(n_in[1], size[1], mode, True) if n_in[1] > 1 else torch.ones(1, 1,
                                                                          dtype=torch.float64)
    raw = torch.einsum("bchw,oh,pw->bcop", eye, wh, ww)
    assert torch.allclose(y, raw * raw.square().sum(0).rsqrt(), atol=1e-12)


def test_resampling_weights_need_no_quadratic_memory():
    """The 1-D weights of a 4096 -> 2048 axis: the largest single allocation stays small
    (an n x n identity would be 4096² doubles, 134 MB, per copy)."""
    from vidnoise import noise

    noise._axis_weights.cache_clear()
    noise._inverse_std.cache_clear()
    x = torch.zeros(1, 1, 2, 4096)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        resample_noise(x, (1, 2048), mode="bicubic")
    largest = max(e.cpu_memory_usage for e in prof.key_averages())
    assert largest < 16e6, largest


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_rand_half_precision_stays_below_one(dtype):
    # the float32 draw rounds to 1.0 with probability ~2.4e-4 (fp16) / 2e-3 (bf16): 10^6 draws
    # see hundreds of them before the fix
    u = vn.rand((10**6,), generator=gen(0), dtype=dtype)
    assert float(u.max()) < 1.0 and float(u.min()) >= 0.0
    ref = torch.rand((10**6,), generator=gen(0)).to(dtype)
    below = ref < 1
    assert torch.equal(u[below], ref[below])


@pytest.mark.parametrize(
    "m, gamma, match",
    [(4, 0.5, "gamma"), (4, -1.0, "gamma"), (4, float("nan"), "gamma"), (0, 0.1, "m"),
     (2, 1.5, "gamma")],
)
def test_block_basis_rejects_invalid(m, gamma, match):
    with pytest.raises(ValueError, match=match):
        _block_basis(m, gamma)


@pytest.mark.parametrize("sf", [np.float32(0.5), np.float64(0.5), torch.tensor(0.5),
                                torch.tensor([0.5, 0.5]), (np.float32(0.5), 0.5)])
def test_scale_factor_numpy_and_tensor_accepted(sf):
    x = randn((2, 1, 9, 8), generator=gen(3))
    assert torch.equal(resample_noise(x, scale_factor=sf, mode="bicubic"),
                       resample_noise(x, scale_factor=0.5, mode="bicubic"))


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: vn.resample_variance((8, -1), (4, 4)), ValueError, "in_sizes"),
        (lambda: vn.resample_variance((8, 8), (0, 4)), ValueError, "out_sizes"),
        (lambda: vn.resample_variance((8.5, 8), (4, 4)), TypeError, "in_sizes"),
        (lambda: vn.resample_variance((8, 8), (4, 4.0)), TypeError, "out_sizes"),
        (lambda: vn.resample_variance((8, 8, 8), (4, 4)), ValueError, "in_sizes"),
        (lambda: resample_noise(torch.zeros(1, 1, 8, 8), scale_factor=torch.ones(2, 2)),
         ValueError, "scale_factor"),
        (lambda: resample_noise(torch.zeros(1, 1, 8, 8), scale_factor="0.5"), TypeError,
         "scale_factor"),
        (lambda: resample_noise(torch.zeros(1, 1, 8, 8), scale_factor=float("nan")),
         ValueError, "scale_factor"),
        (lambda: noise_pyramid(torch.zeros(1, 1, 0, 4), 2), ValueError, "zero-size"),
        (lambda: noise_pyramid(torch.zeros(1, 1, 8, 8), 2, mode="area", antialias=True),
         ValueError, "antialias"),
    ],
)
def test_errors_name_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_bicubic_2x_leaves_neighbour_correlation():
    """docs/math.md §2: interior taps (-3, 19, 19, -3)/32 overlap their neighbour's in two
    places: correlation -114/740 along each axis, so a bicubic level is no longer white."""
    from vidnoise.noise import _axis_weights

    w = _axis_weights(64, 32, None, "bicubic", 2, 0, False).to_dense()
    cov = w @ w.T
    rho = cov.diagonal(1) / cov.diagonal()[:-1]
    assert torch.allclose(rho[3:-3], torch.full_like(rho[3:-3], -114 / 740), atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 24), w=st.integers(1, 24), depth=st.integers(1, 5),
    mode_aa=st.sampled_from(PYRAMID_MODES_2D),
)
def test_noise_pyramid_property_exact_unit_variance(h, w, depth, mode_aa):
    mode, antialias = mode_aa
    levels = min(depth, int(math.log2(min(h, w))) + 1)
    for var in exact_level_variances((h, w), levels, mode=mode, antialias=antialias):
        assert torch.allclose(var, torch.ones_like(var), rtol=0, atol=1e-10)
