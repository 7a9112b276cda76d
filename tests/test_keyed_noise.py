"""Keyed (counter-based) noise: exact oracle, addressing properties, statistics, sharding."""

import math
import random
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import vidnoise.noise as vn
from _harness import torchrun_ranks
from vidnoise.noise import (
    NoiseKey,
    block_noise,
    keyed_randn,
    noise_pyramid,
    normal_like_source,
    randn,
)


def _padded(coord):
    return (0,) * (vn.KEYED_MAX_NDIM - len(coord)) + tuple(coord)


# ----------------------------------------------------------------------------- exact oracle
@pytest.mark.parametrize(
    "shape,origin",
    [((7,), (3,)), ((2, 3, 5), (0, 4, 1)), ((1, 4, 3, 6, 9), (2, 0, 5, 7, 11)),
     ((2, 1, 1, 1, 2, 1, 3, 4), (1, 2, 3, 4, 5, 6, 7, 9))],
)
def test_values_match_the_pure_python_hash_and_box_muller(shape, origin):
    """Each value equals the float64 Box-Muller of the pure-Python SplitMix hash (an
    independent implementation with Python ints): this pins the int64 wrapping products and
    the logical shifts. float32 rounding of r·cos θ is below 1e-6 relative + 1e-6 absolute."""
    seed = 123456789
    x = keyed_randn(shape, seed=seed, origin=origin)
    rng = random.Random(0)
    for _ in range(40):
        i = tuple(rng.randrange(s) for s in shape)
        g = tuple(o + k for o, k in zip(origin, i))
        ref = vn._keyed_value(seed, _padded(g))
        assert abs(float(x[i]) - ref) <= 1e-6 + 1e-6 * abs(ref), (i, float(x[i]), ref)
    x64 = keyed_randn(shape, seed=seed, origin=origin, dtype=torch.float64)
    for _ in range(20):
        i = tuple(rng.randrange(s) for s in shape)
        g = tuple(o + k for o, k in zip(origin, i))
        ref = vn._keyed_value(seed, _padded(g), float32=False)
        assert abs(float(x64[i]) - ref) <= 1e-12 * (1 + abs(ref))


def test_mix64_tensor_equals_python_ints():
    vals = [0, 1, 2**63 - 1, 2**63, 2**64 - 1, 0x9E3779B97F4A7C15, 12345678901234567]
    x = torch.tensor([vn._signed64(v) for v in vals], dtype=torch.int64)
    vn._mix64_(x, torch.empty_like(x))
    assert [v & vn._MASK64 for v in x.tolist()] == [vn._mix64_int(v) for v in vals]


# ----------------------------------------------------------------------------- addressing
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    data=st.data(),
)
def test_any_sub_box_equals_the_slice_of_the_full_tensor(shape, data):
    seed = data.draw(st.integers(0, 2**63 - 1))
    full = keyed_randn(shape, seed=seed)
    lo = [data.draw(st.integers(0, s - 1)) for s in shape]
    hi = [data.draw(st.integers(a + 1, s)) for a, s in zip(lo, shape)]
    sub = keyed_randn([b - a for a, b in zip(lo, hi)], seed=seed, origin=lo)
    assert torch.equal(sub, full[tuple(slice(a, b) for a, b in zip(lo, hi))])


def test_extending_frames_or_batch_leaves_entries_unchanged():
    a = keyed_randn((2, 4, 5, 6, 8), seed=7)
    more_t = keyed_randn((2, 4, 9, 6, 8), seed=7)
    more_b = keyed_randn((5, 4, 5, 6, 8), seed=7)
    assert torch.equal(more_t[:, :, :5], a)
    assert torch.equal(more_b[:2], a)
    # and the new frames are not copies of old ones
    assert not torch.equal(more_t[:, :, 5], a[:, :, 0])


def test_fewer_dims_align_from_the_right():
    full = keyed_randn((1, 1, 3, 4, 10), seed=9)
    assert torch.equal(keyed_randn((3, 4, 10), seed=9), full[0, 0])
    assert torch.equal(keyed_randn((10,), seed=9), full[0, 0, 0, 0])
    assert torch.equal(keyed_randn((), seed=9), full[0, 0, 0, 0, 0])


@pytest.mark.parametrize("w0,w", [(0, 1), (1, 1), (1, 4), (3, 7), (2, 6), (0, 9)])
def test_odd_origins_and_widths(w0, w):
    full = keyed_randn((3, 20), seed=11)
    assert torch.equal(keyed_randn((3, w), seed=11, origin=(0, w0)), full[:, w0 : w0 + w])


def test_chunking_does_not_change_values(monkeypatch):
    ref = keyed_randn((3, 5, 37), seed=4, origin=(1, 2, 3))
    for chunk in (1, 4, 19, 64):  # rows per chunk, and a row split over column chunks
        monkeypatch.setattr(vn, "_KEYED_CHUNK", chunk)
        assert torch.equal(keyed_randn((3, 5, 37), seed=4, origin=(1, 2, 3)), ref)


def test_uniform_never_reaches_zero_or_one():
    """The extreme 32-bit values give u = 2^-33 (radius 6.76) and u = 1 - 2^-24 (not 1)."""
    for k, expect in ((0, math.sqrt(2 * 33 * math.log(2))), (2**32 - 1, None)):
        f = torch.tensor([float(k)], dtype=torch.float32)
        u = f.add(0.5).mul(2.0**-32).clamp_max(vn._U_MAX)
        assert 0 < float(u) < 1
        r = float(u.log().mul(-2).sqrt())
        if expect is not None:
            assert r == pytest.approx(expect, rel=1e-6)
        else:
            assert r > 0


def test_dtypes_are_the_rounding_of_the_float32_draw():
    x = keyed_randn((2, 3, 17), seed=5, origin=(0, 1, 1))
    for dt in (torch.float16, torch.bfloat16):
        y = keyed_randn((2, 3, 17), seed=5, origin=(0, 1, 1), dtype=dt)
        assert y.dtype == dt and torch.equal(y, x.to(dt))
    z = keyed_randn((2, 3, 17), seed=5, origin=(0, 1, 1), dtype=torch.float64)
    assert z.dtype == torch.float64
    torch.testing.assert_close(z.float(), x, rtol=2e-6, atol=2e-6)


def test_empty_and_meta():
    assert keyed_randn((0, 3, 4), seed=1).shape == (0, 3, 4)
    m = keyed_randn((2, 3), seed=1, device="meta", dtype=torch.float16)
    assert m.is_meta and m.shape == (2, 3) and m.dtype == torch.float16


def test_noise_key_and_dispatch():
    k = NoiseKey(3, (1, 0, 2))
    assert torch.equal(k.randn((2, 3, 4)), keyed_randn((2, 3, 4), seed=3, origin=(1, 0, 2)))
    assert torch.equal(normal_like_source((2, 3, 4), k), k.randn((2, 3, 4)))
    d1, d2 = k.derive("a"), k.derive("b")
    assert d1.origin == k.origin and len({k.seed, d1.seed, d2.seed}) == 3
    assert d1 == k.derive("a")  # deterministic, a value
    g = torch.Generator().manual_seed(0)
    assert torch.equal(normal_like_source((3,), g), torch.randn(3, generator=torch.Generator()
                                                                .manual_seed(0)))
    with pytest.raises(TypeError, match="tags"):
        k.derive(1.5)
    with pytest.raises(ValueError, match="seed"):
        NoiseKey(-1)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(seed=-1), ValueError, "seed must be an int in"),
        (dict(seed=2**63), ValueError, "seed must be an int in"),
        (dict(seed=1.0), TypeError, "seed must be an int"),
        (dict(seed=True), TypeError, "seed must be an int"),
        (dict(seed="1"), TypeError, "seed must be an int"),
        (dict(seed=1, origin=(0, 0)), ValueError, "one entry per dim"),
        (dict(seed=1, origin=(0, 0, -1)), ValueError, r"origin\[2\] = -1"),
        (dict(seed=1, origin=(0, 0, 2**48)), ValueError, "2\\*\\*48"),
        (dict(seed=1, origin=(0, 0, 1.0)), TypeError, "origin must contain ints"),
        (dict(seed=1, origin=torch.zeros(3)), TypeError, "origin must be None or a sequence"),
        (dict(seed=1, dtype=torch.int32), ValueError, "floating dtype"),
        (dict(seed=1, dtype="float32"), TypeError, "dtype"),
    ],
)
def test_bad_arguments_are_named(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        keyed_randn((2, 3, 4), **kwargs)


@pytest.mark.parametrize(
    "shape,exc,match",
    [((2, -1), ValueError, "sizes >= 0"), ((2, 1.5), TypeError, "ints"),
     ((1,) * 9, ValueError, "at most 8 dims"), ("ab", TypeError, "shape")],
)
def test_bad_shapes(shape, exc, match):
    with pytest.raises(exc, match=match):
        keyed_randn(shape, seed=0)


def test_missing_seed_is_a_type_error():
    with pytest.raises(TypeError):
        keyed_randn((2,))  # seed is keyword-only and required


# ----------------------------------------------------------------------------- statistics
# Tolerances: each statistic of n iid N(0, 1) values has a known standard error (mean 1/√n,
# variance √(2/n), kurtosis √(24/n), a correlation 1/√n); we allow Z = 6 of them (a false
# alarm probability ~2e-9 per check). KS: D < c(α)/√n with α = 1e-6, c = √(-ln(α/2)/2).
Z = 6.0


def test_normality_and_moments():
    x = keyed_randn((4, 16, 64, 256), seed=2024).double().flatten()
    n = x.numel()
    assert abs(float(x.mean())) < Z / math.sqrt(n)
    assert abs(float(x.var()) - 1) < Z * math.sqrt(2 / n)
    z = (x - x.mean()) / x.std()
    assert abs(float((z**3).mean())) < Z * math.sqrt(6 / n)
    assert abs(float((z**4).mean()) - 3) < Z * math.sqrt(24 / n)
    d = stats.kstest(x.numpy(), "norm").statistic
    assert d < math.sqrt(-math.log(1e-6 / 2) / 2) / math.sqrt(n)
    # tail mass beyond 4σ: binomial, n·p ± Z·√(n p)
    p4 = 2 * stats.norm.sf(4.0)
    tail = int((x.abs() > 4).sum())
    assert abs(tail - n * p4) < Z * math.sqrt(n * p4)


def _corr(a, b):
    a = a.double().flatten()
    b = b.double().flatten()
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).mean() / (a.std() * b.std()))


@pytest.mark.parametrize("axis", range(5))
def test_independence_along_every_axis(axis):
    """Lag-1 and lag-2 correlation of the values and of their squares (dependence that
    correlation of values alone would miss, e.g. a shared Box-Muller radius) along each axis."""
    shape = [2, 4, 8, 32, 32]
    shape[axis] = 32
    x = keyed_randn(tuple(shape), seed=77)
    for lag in (1, 2):
        a = x.narrow(axis, 0, shape[axis] - lag)
        b = x.narrow(axis, lag, shape[axis] - lag)
        tol = Z / math.sqrt(a.numel())
        assert abs(_corr(a, b)) < tol
        assert abs(_corr(a * a, b * b)) < tol * 1.5  # corr of squares: se ≈ 1/√n as well


def test_no_correlation_between_neighbouring_seeds():
    shape = (2, 8, 16, 64, 64)
    n = math.prod(shape)
    tol = Z / math.sqrt(n)
    for seed in (0, 1, 2**31 - 1, 2**32, 2**63 - 2):
        a = keyed_randn(shape, seed=seed)
        b = keyed_randn(shape, seed=seed + 1)
        assert abs(_corr(a, b)) < tol
        assert abs(_corr(a * a, b * b)) < tol * 1.5
    # and the same coordinate across 2000 consecutive seeds is a normal sample too
    vals = torch.stack([keyed_randn((1,), seed=s) for s in range(2000)]).double().flatten()
    d = stats.kstest(vals.numpy(), "norm").statistic
    assert d < math.sqrt(-math.log(1e-6 / 2) / 2) / math.sqrt(2000)


def test_shifted_origins_are_uncorrelated():
    """A box and the same box one step over along any axis share no structure beyond the
    overlap (correlation of the non-overlapping shift is noise-level)."""
    a = keyed_randn((8, 16, 64, 64), seed=3)
    for axis in range(4):
        origin = [0, 0, 0, 0]
        origin[axis] = 1000
        b = keyed_randn((8, 16, 64, 64), seed=3, origin=origin)
        assert abs(_corr(a, b)) < Z / math.sqrt(a.numel())


# ----------------------------------------------------------------------------- sharding
SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    from vidnoise.noise import keyed_randn

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    shape = (2, 4, 9, 6, 10)                      # 9 frames: ranks draw 5 and 4
    t0 = [0, 5][rank]
    t1 = [5, 9][rank]
    part = keyed_randn((2, 4, t1 - t0, 6, 10), seed=42, origin=(0, 0, t0, 0, 0))
    pad = torch.zeros(2, 4, 5, 6, 10)
    pad[:, :, : t1 - t0] = part
    parts = [torch.zeros_like(pad) for _ in range(world)]
    dist.all_gather(parts, pad)
    full = torch.cat([parts[0], parts[1][:, :, :4]], dim=2)
    ref = keyed_randn(shape, seed=42)
    with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
        json.dump({"equal": bool(torch.equal(full, ref)), "world": world}, f)
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_torchrun_two_ranks_reproduce_the_full_tensor(tmp_path):
    for r in torchrun_ranks(tmp_path, "keyed_shards.py", SCRIPT):
        assert r == {"equal": True, "world": 2}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_agree():  # pragma: no cover - no GPU in CI
    a = keyed_randn((2, 4, 5, 16, 18), seed=8, origin=(0, 0, 3, 0, 1))
    b = keyed_randn((2, 4, 5, 16, 18), seed=8, origin=(0, 0, 3, 0, 1), device="cuda").cpu()
    torch.testing.assert_close(b, a, rtol=2.5e-7, atol=2.5e-7)


# ----------------------------------------------------------------------------- keyed draws
# randn and block_noise take a NoiseKey as generator=; noise_pyramid needs no generator.

_BLOCK_CASES = [  # (block, gamma): the 2x2 singular fast path, the general path, white
    ((2, 2), 1 / 3),
    ((1, 2, 2), 1 / 3),
    ((2, 2), 0.2),
    ((2, 2, 2), 1 / 7),  # singular, not the 2x2 fast path
    ((1, 2, 2), 0.05),
    ((3,), 0.5),
    ((2, 3), 0.1),
    ((2, 2), 0.0),
    ((1, 1), 0.0),
]


def test_randn_dispatches_a_key_and_rand_refuses_it():
    key = NoiseKey(11, (1, 2, 3))
    for dtype in (torch.float32, torch.float16, torch.float64):
        assert torch.equal(randn((2, 3, 4), generator=key, dtype=dtype),
                           keyed_randn((2, 3, 4), seed=11, origin=(1, 2, 3), dtype=dtype))
    with pytest.raises(ValueError, match="one entry per dim"):
        randn((2, 3), generator=key)
    with pytest.raises(TypeError, match="NoiseKey"):
        vn.rand((2, 3), generator=NoiseKey(1))


@settings(max_examples=60, deadline=None)
@given(case=st.sampled_from(_BLOCK_CASES), data=st.data())
def test_keyed_block_noise_any_block_aligned_sub_box_is_the_slice(case, data):
    block, gamma = case
    prefix = data.draw(st.lists(st.integers(1, 3), min_size=0, max_size=2))
    counts = data.draw(st.lists(st.integers(1, 5), min_size=len(block), max_size=len(block)))
    dims = [1] * len(prefix) + list(block)
    shape = [*prefix, *(c * b for c, b in zip(counts, block))]
    key = NoiseKey(data.draw(st.integers(0, 2**63 - 1)))
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64, torch.float16]))
    full = block_noise(shape, gamma=gamma, block=block, generator=key, dtype=dtype)
    assert full.shape == tuple(shape) and full.dtype == dtype
    lo = [data.draw(st.integers(0, s // b - 1)) for s, b in zip(shape, dims)]
    hi = [data.draw(st.integers(a + 1, s // b)) for a, s, b in zip(lo, shape, dims)]
    lo = [a * b for a, b in zip(lo, dims)]
    hi = [a * b for a, b in zip(hi, dims)]
    sub = block_noise([b - a for a, b in zip(lo, hi)], gamma=gamma, block=block,
                      generator=key.at(lo), dtype=dtype)
    assert torch.equal(sub, full[tuple(slice(a, b) for a, b in zip(lo, hi))])


@pytest.mark.parametrize("block,gamma", [((2, 2), 0.2), ((2, 2, 2), 1 / 7), ((3,), 0.5)])
def test_keyed_block_noise_is_the_documented_mix_of_keyed_normals(block, gamma):
    """Oracle: w = the keyed normals of key.derive("block_noise") in the folded layout, mixed
    by M (float64 matmul here, elementwise sums in the code): equal to float32 rounding."""
    shape, origin = (2, *(3 * b for b in block)), (1, *(2 * b for b in block))
    key = NoiseKey(5, origin)
    out = block_noise(shape, gamma=gamma, block=block, generator=key, dtype=torch.float64)
    mix, _ = vn._block_basis(math.prod(block), gamma)
    k, nb = mix.shape[1], len(block)
    w = keyed_randn((2, *(3,) * (nb - 1), 3 * k), seed=key.derive("block_noise").seed,
                    origin=(1, *(2,) * (nb - 1), 2 * k), dtype=torch.float64)
    y = (w.view(2, *(3,) * nb, k) @ mix.t()).view(2, *(3,) * nb, *block)
    order = [0] + [d for i in range(nb) for d in (1 + i, 1 + nb + i)]
    assert torch.allclose(out, y.permute(order).reshape(shape), rtol=0, atol=1e-12)


def test_keyed_block_noise_2x2_fast_path_layout():
    """n[0, b] = X + (-1)^b·Y, n[1, b] = -X + (-1)^b·W with X, Y, W the rows 3i, 3i+1, 3i+2 of
    the keyed (3·hc, wc) draw at (3·o_h/2, o_w/2), scaled by √(1/3)."""
    key = NoiseKey(9, (0, 1, 4, 6))
    out = block_noise((2, 3, 6, 8), generator=key, dtype=torch.float64)
    z = keyed_randn((2, 3, 9, 4), seed=key.derive("block_noise").seed, origin=(0, 1, 6, 3),
                    dtype=torch.float64) * math.sqrt(1 / 3)
    x, y, w = z[:, :, 0::3], z[:, :, 1::3], z[:, :, 2::3]
    s = math.sqrt(2.0)
    blocks = out.view(2, 3, 3, 2, 4, 2)
    for a, (xa, yw) in enumerate(((x, y), (-x, w))):
        for b, sg in enumerate((s, -s)):
            assert torch.allclose(blocks[:, :, :, a, :, b], xa + sg * yw, rtol=0, atol=1e-12)


@pytest.mark.parametrize("block,gamma", [((2, 2), 1 / 3), ((2, 2), 0.2), ((1, 2, 2), 0.1)])
def test_keyed_block_noise_covariance(block, gamma):
    """Within-block covariance (1+γ)I - γ11ᵀ, no correlation with the neighbouring block or
    with the key's own keyed_randn (block_noise derives its own key). n = 2^15 blocks: each
    entry's standard error is below sqrt(2/n) (Var of a product of two unit normals <= 2);
    Z = 6."""
    shape = (4, 8, 64, 128) if len(block) == 2 else (4, 8, 1, 64, 128)
    key = NoiseKey(2024)
    x = block_noise(shape, gamma=gamma, block=block, generator=key, dtype=torch.float64)
    h, w = shape[-2:]
    v = x.reshape(-1, h // 2, 2, w // 2, 2).permute(0, 1, 3, 2, 4).reshape(-1, 4)
    n = v.shape[0]
    tol = 6 * math.sqrt(2 / n)
    cov = v.T @ v / n
    want = (1 + gamma) * torch.eye(4, dtype=torch.float64) - gamma
    assert (cov - want).abs().max() < tol, cov
    nxt = x.reshape(-1, h // 2, 2, w // 2, 2)[:, :, :, 1:, :].reshape(-1)
    cur = x.reshape(-1, h // 2, 2, w // 2, 2)[:, :, :, :-1, :].reshape(-1)
    assert abs((nxt * cur).mean()) < 6 / math.sqrt(cur.numel())
    own = key.randn(shape, dtype=torch.float64)
    assert abs((own * x).mean()) < 6 * math.sqrt(2 / x.numel())
    if gamma == 1 / 3:
        assert v.sum(1).abs().max() < 1e-12  # singular end: every block sums to zero


@pytest.mark.parametrize(
    "shape,block,origin,match",
    [((2, 4, 4), (2, 2), (0, 1, 0), r"dim 1 has origin 1, block 2"),
     ((2, 4, 4), (2, 2), (0, 0, 3), r"dim 2 has origin 3"),
     ((2, 4, 6), (2, 3), (0, 2, 2), r"dim 2 has origin 2, block 3"),
     ((2, 4, 4), (2, 2), (0, 0), r"one entry per dim of shape"),
     ((2, 4, 4), (2, 2, 2), (1, 0, 0), r"dim 0 has origin 1")],
)
def test_keyed_block_noise_misaligned_origin_is_named(shape, block, origin, match):
    for gamma in (0.1, 1 / 3 if math.prod(block) == 4 else 1 / 7):
        with pytest.raises(ValueError, match="origin") as info:
            block_noise(shape, gamma=gamma, block=block, generator=NoiseKey(1, origin))
        assert info.match(match)


def test_keyed_block_noise_empty_meta_and_white_cases():
    key = NoiseKey(3)
    assert block_noise((0, 4, 4), generator=key).shape == (0, 4, 4)
    assert block_noise((2, 0, 4), generator=key, gamma=0.2).shape == (2, 0, 4)
    m = block_noise((2, 4, 6), generator=key, device="meta", dtype=torch.float16)
    assert m.is_meta and m.shape == (2, 4, 6) and m.dtype == torch.float16
    # γ = 0 (or 1-element blocks): white keyed noise of the derived key
    white = key.derive("block_noise").randn((2, 4, 6))
    assert torch.equal(block_noise((2, 4, 6), gamma=0.0, generator=key), white)
    assert torch.equal(block_noise((2, 4, 6), block=(1, 1), generator=key), white)


# ----------------------------------------------------------------------------- pyramids
@pytest.mark.parametrize("mode,dims", [("bilinear", 2), ("area", 2), ("nearest", 2),
                                       ("trilinear", 3), ("area", 3)])
@pytest.mark.parametrize("levels", [2, 4])
def test_sharded_keyed_noise_gives_the_slices_of_the_full_pyramid(mode, dims, levels):
    """Exact 2x reductions (bilinear, area; nearest takes every other sample) are local: a
    shard whose borders are multiples of 2^(levels-1) gives, level by level, the slice of the
    full pyramid at the border divided by 2^(levels-1-level), bit for bit."""
    f = 2 ** (levels - 1)
    shape = (2, 3, 2 * f, 4 * f, 6 * f) if dims == 3 else (2, 3, 3, 4 * f, 6 * f)
    full_noise = keyed_randn(shape, seed=77)
    full = noise_pyramid(full_noise, levels, mode=mode, dims=dims)
    for axis in (0, 2, 3, 4):
        local = axis == 0 or (dims == 2 and axis == 2)  # batch; frames of framewise pyramids
        cuts = (1,) if local else (f, shape[axis] - f)
        for cut in cuts:
            for lo, hi in ((0, cut), (cut, shape[axis])):
                origin = [0] * 5
                origin[axis] = lo
                sub_shape = list(shape)
                sub_shape[axis] = hi - lo
                part = noise_pyramid(keyed_randn(sub_shape, seed=77, origin=origin), levels,
                                     mode=mode, dims=dims)
                for lvl, (p, q) in enumerate(zip(part, full)):
                    s = 1 if local else 2 ** (levels - 1 - lvl)
                    idx = [slice(None)] * 5
                    idx[axis] = slice(lo // s, hi // s)
                    assert torch.equal(p, q[tuple(idx)]), (axis, lo, lvl)


def test_general_resampling_is_not_local_at_shard_borders():
    """Bicubic (and any kernel wider than the 2x2 pair) reads across the border and is
    renormalised there, so a shard's pyramid is not the slice at the border rows; away from
    the border it agrees up to rounding."""
    full_noise = keyed_randn((1, 2, 32, 32), seed=3)
    full = noise_pyramid(full_noise, 3, mode="bicubic")
    part = noise_pyramid(keyed_randn((1, 2, 16, 32), seed=3), 3, mode="bicubic")
    assert not torch.allclose(part[0][:, :, -1], full[0][:, :, 3], atol=1e-3)
    assert torch.allclose(part[1][:, :, :4], full[1][:, :, :4], atol=1e-5)
