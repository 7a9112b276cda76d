"""Keyed (counter-based) noise: exact oracle, addressing properties, statistics, sharding."""

import json
import math
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import vidnoise.noise as vn
from vidnoise.noise import NoiseKey, keyed_randn, normal_like_source


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
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    script = tmp_path / "keyed_shards.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.run(
        [str(torchrun), "--nproc_per_node=2", "--master_port=0", "--standalone", str(script),
         str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    for rank in (0, 1):
        r = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert r == {"equal": True, "world": 2}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_agree():  # pragma: no cover - no GPU in CI
    a = keyed_randn((2, 4, 5, 16, 18), seed=8, origin=(0, 0, 3, 0, 1))
    b = keyed_randn((2, 4, 5, 16, 18), seed=8, origin=(0, 0, 3, 0, 1), device="cuda").cpu()
    torch.testing.assert_close(b, a, rtol=2.5e-7, atol=2.5e-7)
