"""Tests of vidnoise.samplers.sample_pyramid, with proof test 2: the exact covariance of the
sampler's output, with the exact stage velocities of Gaussian data, against the data's."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vidnoise.noise import NoiseKey, keyed_randn
from vidnoise.oracles.gaussian import (
    GaussianData,
    exact_pyramid_model,
    powerlaw_cov,
    pyramid_operators,
)
from vidnoise.pyramid import PyramidSchedule, _upsample_nearest
from vidnoise.samplers.pyramid import sample_pyramid

F64 = torch.float64
H = W = 16


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@functools.lru_cache(maxsize=1)
def _data():
    return GaussianData(None, powerlaw_cov(H, W))


@functools.lru_cache(maxsize=16)
def _oracle(data, sch):
    return exact_pyramid_model(data, sch)  # cached: its per-ratio matrices are reused


def _block_cov(h, w, gamma):
    _, U = pyramid_operators((1, h, w), 2)
    return (1 + gamma) * torch.eye(h * w, dtype=F64) - gamma * (U[1] @ U[1].T)


def exact_output_cov(sch, steps, mode="block", grid="reference", data=None):
    """Exact covariance of ``sample_pyramid``'s output, read off the sampler itself.

    The output is linear in its noise sources: ``y = L0·ε + Σ_k Lk·η_k`` (initial
    full-resolution noise ε, renoise noise η_k of jump k; zero-mean data so no constant).
    One batched run finds every column: sample j of the batch starts from the j-th basis
    vector of ε (or zero) and its jump k adds the j-th basis vector of η_k (or zero), through
    ``jump=`` and ``noise=``. Then ``Cov(y) = L0 L0ᵀ + Σ_k Lk Σ_k Lkᵀ`` with ``Σ_k`` the
    block covariance (mode 'block'), I ('iid', i.e. renoising with γ = 0 noise and the same
    α, β) or no noise at all ('none': plain nearest upsampling). ``mode`` may be a tuple of
    'block' and 'iid' (one run, one covariance each).
    """
    data = data or _data()
    modes = (mode,) if isinstance(mode, str) else tuple(mode)
    K = sch.stages
    sizes = [(H // 2 ** (K - 1 - k), W // 2 ** (K - 1 - k)) for k in range(K)]
    dims = [a * b for a, b in sizes]
    blocks = [H * W] + ([] if modes == ("none",) else dims[1:])
    offs = [0]
    for b in blocks:
        offs.append(offs[-1] + b)
    B = offs[-1]
    noise = torch.zeros(B, 1, H, W, dtype=F64)
    noise.view(B, -1)[: H * W] = torch.eye(H * W, dtype=F64)
    inj = {}
    if modes != ("none",):
        for k in range(1, K):
            z = torch.zeros(B, 1, *sizes[k], dtype=F64)
            z.view(B, -1)[offs[k]: offs[k + 1]] = torch.eye(dims[k], dtype=F64)
            inj[k] = z

    def jump(x, k, generator=None):
        if modes == ("none",):
            return _upsample_nearest(x)
        return sch.jump(x, k, noise=inj[k])

    y = sample_pyramid(_oracle(data, sch), noise.shape, sch, steps, noise=noise,
                       jump=jump, grid=grid)
    L = y.reshape(B, -1).T
    out = []
    for m in modes:
        cov = L[:, : H * W] @ L[:, : H * W].T
        if m != "none":
            for k in range(1, K):
                Lk = L[:, offs[k]: offs[k + 1]]
                S = _block_cov(*sizes[k], sch.gamma) if m == "block" else torch.eye(
                    dims[k], dtype=F64)
                cov = cov + Lk @ S @ Lk.T
        out.append(cov)
    return out[0] if isinstance(mode, str) else out


def _relerr(cov, C):
    return float((cov - C).norm() / C.norm())


# ----------------------------------------------------------------------------- proof test 2
def test_proof2_end_to_end_covariance(capsys):
    """Proof test 2. With the exact velocities, Euler converges at first order to the exact
    flow, whose output covariance is the data covariance: n·err(n) tends to a constant and
    the Richardson extrapolation 2·Cov(2n) - Cov(n) removes the first-order term. Renoising
    with i.i.d. noise (γ = 0) or not renoising leaves an error that more steps do not fix."""
    sch = PyramidSchedule()
    C = _data().cov
    table = {}
    covs = {}
    for n in (5, 10, 20, 50, 100, 200):
        covs[n], iid = exact_output_cov(sch, (n, n, n), ("block", "iid"))
        table[(n, "block")] = _relerr(covs[n], C)
        table[(n, "iid")] = _relerr(iid, C)
    for n in (5, 10, 20, 100):
        table[(n, "none")] = _relerr(exact_output_cov(sch, (n, n, n), "none"), C)
    table[(100, "grid=exact")] = _relerr(
        exact_output_cov(sch, (100, 100, 100), "block", grid="exact"), C)
    rich = _relerr(2 * covs[100] - covs[50], C)
    rich2 = _relerr(2 * covs[200] - covs[100], C)
    with capsys.disabled():
        print("\n[proof 2] relative Frobenius error of the exact output covariance, 16x16 "
              "powerlaw_cov(alpha=2), default schedule, Euler steps per stage")
        print("  steps   block renoise (γ=1/3)   iid renoise (γ=0)   no renoise")
        for n in (5, 10, 20, 100):
            print(f"  {n:5d}   {table[(n, 'block')]:20.4%}   {table[(n, 'iid')]:17.4%}"
                  f"   {table[(n, 'none')]:10.4%}")
        print(f"  block: 50 steps {table[(50, 'block')]:.4%}, 200 steps "
              f"{table[(200, 'block')]:.4%}, 100 steps grid=exact "
              f"{table[(100, 'grid=exact')]:.4%}")
        print(f"  Richardson 2·C(100) - C(50): {rich:.2e};  2·C(200) - C(100): {rich2:.2e}")
    # first-order convergence to the data covariance (no error floor)
    errs = [table[(n, "block")] for n in (5, 10, 20, 50, 100, 200)]
    assert all(a > b for a, b in zip(errs, errs[1:]))
    for n in (100, 200):
        ratio = (n * table[(n, "block")]) / (n / 2 * table[(n // 2, "block")])
        assert 0.95 < ratio < 1.05
    # only the second-order remainder is left: the flow and the jumps themselves are exact
    assert rich < 1e-3 and rich2 < rich / 2.5
    assert table[(100, "block")] < 0.015  # 1.29% measured, above the 1%: see docs
    assert table[(200, "block")] < 0.01
    assert table[(100, "grid=exact")] < table[(100, "block")]
    # the ablations do not converge: their error stays far above the block-noise error
    for mode in ("iid", "none"):
        assert table[(100, mode)] > 20 * table[(100, "block")]
        assert table[(100, mode)] > 0.5 * table[(20, mode)]


@pytest.mark.parametrize(
    "sch, n",
    [
        (PyramidSchedule(gamma=1e-6), 20),
        (PyramidSchedule(stage_range=(0, 0.01, 0.99, 1)), 40),
        (PyramidSchedule(gamma=0.2), 20),
        (PyramidSchedule(stage_range=(0, 0.5, 0.501, 1)), 20),
        (PyramidSchedule(2, (0, 0.5, 1)), 20),
        (PyramidSchedule(5, (0, 0.2, 0.4, 0.6, 0.8, 1)), 20),
        (PyramidSchedule(shift=3.0), 20),
    ],
    ids=["gamma1e-6", "sigma-near-0-and-1", "gamma0.2", "short-stage", "2-stages", "5-stages",
         "shift3"],
)
def test_end_to_end_covariance_extreme_schedules(sch, n):
    """Extreme but valid schedules stay finite and converge to the data covariance at first
    order: err(2n) ~ err(n)/2, and the Richardson extrapolation 2·C(2n) - C(n) is better
    than either."""
    C = _data().cov
    c40 = exact_output_cov(sch, (n,) * sch.stages)
    c80 = exact_output_cov(sch, (2 * n,) * sch.stages)
    assert bool(torch.isfinite(c80).all())
    e40, e80, rich = _relerr(c40, C), _relerr(c80, C), _relerr(2 * c80 - c40, C)
    assert 0.4 < e80 / e40 < 0.65
    assert rich < 0.5 * e80


def test_end_to_end_stage_starting_near_sigma_zero_is_stiff():
    """A stage that starts at σ ≈ 0.002 must create all its detail from that little noise:
    the exact flow is stiff (rate ~ 1/σ_start) and Euler needs n >> 1/σ_start steps. The
    output stays finite and the error falls with n, but slowly (pre-asymptotic)."""
    sch = PyramidSchedule(stage_range=(0, 0.001, 0.999, 1))
    C = _data().cov
    errs = [_relerr(exact_output_cov(sch, (n,) * 3), C) for n in (40, 160)]
    assert errs[1] < errs[0] < 0.5


# ----------------------------------------------------------------------------- the loop
def _toy_model(calls=None):
    def model(x, timestep, stage, cond=None):
        if calls is not None:
            calls.append((tuple(x.shape), timestep.clone(), stage, cond, x.dtype))
        sign = 1.0 if cond in (None, True) else -0.5
        return sign * (0.3 * x + 0.01 * (stage + 1) + 1e-4 * timestep.view(-1, 1, 1, 1))
    return model


def test_sampler_matches_manual_loop():
    sch = PyramidSchedule()
    shape = (3, 2, 16, 16)
    steps = (3, 4, 2)
    calls = []
    out = sample_pyramid(_toy_model(calls), shape, sch, steps,
                         generator=torch.Generator().manual_seed(7))
    # manual: same draws in the same order from one generator
    g = torch.Generator().manual_seed(7)
    eps = torch.randn(shape, generator=g)
    x = torch.nn.functional.interpolate(eps, size=(4, 4), mode="area") * 4  # 2x2 means x2, twice
    model = _toy_model()
    i = 0
    for k in range(3):
        if k:
            x = sch.jump(x, k, generator=g)
        ts, rs = sch.stage_grid(k, steps[k])
        for j in range(steps[k]):
            t = torch.full((3,), float(ts[j]))
            torch.testing.assert_close(calls[i][1], t)
            assert calls[i][2] == k and calls[i][0] == (3, 2, 4 * 2**k, 4 * 2**k)
            x = x + float(rs[j + 1] - rs[j]) * model(x, t, k)
            i += 1
    assert i == len(calls) == 9
    torch.testing.assert_close(out, x, rtol=1e-5, atol=1e-5)


def test_sampler_5d_and_per_sample_generators():
    sch = PyramidSchedule()
    shape = (2, 2, 3, 8, 8)
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    out = sample_pyramid(_toy_model(), shape, sch, 2, generator=gens)
    assert out.shape == shape
    one = sample_pyramid(_toy_model(), (1, *shape[1:]), sch, 2,
                         generator=[torch.Generator().manual_seed(1)])
    torch.testing.assert_close(out[1:], one)


def test_sampler_no_host_sync_meta_device():
    """On the meta device any .item()/.tolist()/branch on tensor values raises: the loop
    (model calls, Euler updates, jumps with block noise) runs without one."""
    sch = PyramidSchedule()
    noise = torch.empty(2, 1, 2, 16, 16, device="meta")
    seen = []

    def model(x, t, k, cond=None):
        seen.append(k)
        return x * 0.5 + t.view(-1, 1, 1, 1, 1)

    out = sample_pyramid(model, noise.shape, sch, (2, 2, 2), noise=noise, guidance=2.0,
                         callback=lambda d: None)
    assert out.device.type == "meta" and out.shape == noise.shape
    assert seen == [0] * 4 + [1] * 4 + [2] * 4


def test_guidance_forms():
    sch = PyramidSchedule()
    shape = (2, 1, 8, 8)

    def run(guidance, calls=None):
        return sample_pyramid(_toy_model(calls), shape, sch, (2, 3, 2), guidance=guidance,
                              generator=torch.Generator().manual_seed(0))

    calls = []
    base = run(None, calls)
    assert all(c[3] is None for c in calls) and len(calls) == 7
    calls = []
    one = run(1.0, calls)
    assert len(calls) == 7 and all(c[3] is True for c in calls)
    torch.testing.assert_close(one, base)
    # w: v = u + w(c - u) with c = model(cond=True) and u = model(cond=False) = -0.5·c
    # so v = c·(-0.5 + 1.5 w): w = 0 gives the unconditional model, as a run shows
    calls = []
    g0 = run(0.0, calls)
    assert len(calls) == 14 and [c[3] for c in calls[:2]] == [True, False]

    def uncond_only(x, t, k, cond=None):
        return _toy_model()(x, t, k, cond=False)

    u_run = sample_pyramid(uncond_only, shape, sch, (2, 3, 2),
                           generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(g0, u_run)
    per_stage = run([3.0, 3.0, 3.0])
    torch.testing.assert_close(per_stage, run(3.0))
    torch.testing.assert_close(run(lambda k, i, n: 3.0), per_stage)

    class Scales:
        def scales(self, n):
            return [3.0] * n

    torch.testing.assert_close(run(Scales()), per_stage)
    assert not torch.allclose(per_stage, base)
    with pytest.raises(ValueError, match="guidance"):
        run([1.0, 2.0])
    with pytest.raises(TypeError, match="guidance"):
        run("strong")
    with pytest.raises(ValueError, match="guidance"):
        run(float("nan"))


def test_guidance_with_library_dynamic_cfg_if_present():
    guidance = pytest.importorskip("vidnoise.samplers.guidance")
    if not hasattr(guidance, "dynamic_cfg"):
        pytest.skip("dynamic_cfg not available")
    sch = PyramidSchedule()
    dyn = guidance.dynamic_cfg(4.0)
    out = sample_pyramid(_toy_model(), (1, 1, 8, 8), sch, 3, guidance=dyn,
                         generator=torch.Generator().manual_seed(0))
    want = [[float(v) for v in dyn.scales(3)]] * 3
    flat = [w for ws in want for w in ws]
    out2 = sample_pyramid(_toy_model(), (1, 1, 8, 8), sch, 3,
                          guidance=lambda k, i, n: flat[3 * k + i],
                          generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, out2)


def test_callback_and_progress():
    sch = PyramidSchedule()
    seen = []
    sample_pyramid(_toy_model(), (1, 1, 8, 8), sch, (2, 1, 3), callback=seen.append,
                   progress=True)
    assert [(d["stage"], d["i"]) for d in seen] == [(0, 0), (0, 1), (1, 0), (2, 0), (2, 1),
                                                    (2, 2)]
    assert set(seen[0]) == {"stage", "i", "x", "timestep", "ratio", "ratio_next", "velocity"}
    assert seen[-1]["ratio_next"] == 0.0 and seen[0]["ratio"] == 1.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_updates_in_float32(dtype):
    sch = PyramidSchedule()
    calls = []
    noise = torch.randn(2, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    out = sample_pyramid(_toy_model(calls), noise.shape, sch, 5, noise=noise, dtype=dtype,
                         generator=torch.Generator().manual_seed(1))
    assert out.dtype == dtype and bool(torch.isfinite(out).all())
    assert all(c[4] == dtype for c in calls)
    ref = sample_pyramid(_toy_model(), noise.shape, sch, 5, noise=noise,
                         generator=torch.Generator().manual_seed(1))
    tol = 2e-2 if dtype == torch.bfloat16 else 3e-3
    torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol)


def test_sampler_bad_input():
    sch = PyramidSchedule()
    m = _toy_model()
    with pytest.raises(ValueError, match="steps"):
        sample_pyramid(m, (1, 1, 16, 16), sch, (10, 10))
    with pytest.raises(ValueError, match="steps"):
        sample_pyramid(m, (1, 1, 16, 16), sch, (10, 0, 10))
    with pytest.raises(ValueError, match="H and W"):
        sample_pyramid(m, (1, 1, 18, 16), sch)
    with pytest.raises(ValueError, match="H and W"):
        sample_pyramid(m, (1, 1, 16, 10), sch)
    with pytest.raises(ValueError, match="shape"):
        sample_pyramid(m, (16, 16), sch)
    with pytest.raises(ValueError, match="noise"):
        sample_pyramid(m, (1, 1, 16, 16), sch, noise=torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="velocity"):
        sample_pyramid(lambda x, t, k: x[..., :2], (1, 1, 16, 16), sch, 2)
    with pytest.raises(TypeError, match="schedule"):
        sample_pyramid(m, (1, 1, 16, 16), "pyramid")
    with pytest.raises(TypeError, match="model"):
        sample_pyramid(None, (1, 1, 16, 16), sch)


def test_sampler_many_stages_and_extremes_finite():
    for sch, size in [
        (PyramidSchedule(6, tuple(i / 6 for i in range(7))), 32),  # coarsest level 1x1
        (PyramidSchedule(gamma=1e-6), 16),
        (PyramidSchedule(stage_range=(0, 0.001, 0.999, 1)), 16),
        (PyramidSchedule(stages=1, stage_range=(0, 1)), 4),
    ]:
        out = sample_pyramid(_toy_model(), (2, 1, size, size), sch, 3,
                             generator=torch.Generator().manual_seed(0), grid="exact")
        assert out.shape == (2, 1, size, size) and bool(torch.isfinite(out).all())


# ----------------------------------------------------------------------------- defaults, hooks
@pytest.mark.parametrize("stages", [1, 2, 3, 4])
def test_default_steps_follow_the_schedule_stages(stages):
    # steps=None gives 20 Euler steps in each of the schedule's stages (it used to be the
    # 3-stage tuple (20, 20, 20), refused by any other schedule)
    sch = PyramidSchedule(stages=stages, stage_range=tuple(i / stages for i in range(stages + 1)))
    calls = []
    size = 2 ** (stages - 1) * 2
    out = sample_pyramid(_toy_model(calls), (1, 1, size, size), sch,
                         generator=torch.Generator().manual_seed(0))
    assert [c[2] for c in calls] == [k for k in range(stages) for _ in range(20)]
    assert out.shape == (1, 1, size, size) and bool(torch.isfinite(out).all())


def test_jump_output_is_checked():
    sch = PyramidSchedule()
    shape = (2, 1, 16, 16)
    with pytest.raises(TypeError, match="jump must return a torch.Tensor"):
        sample_pyramid(_toy_model(), shape, sch, 1, jump=lambda x, k, generator=None: None)
    with pytest.raises(ValueError, match=r"jump must return a tensor of stage 1's shape "
                                         r"\(2, 1, 8, 8\)"):
        sample_pyramid(_toy_model(), shape, sch, 1, jump=lambda x, k, generator=None: x)
    with pytest.raises(ValueError, match="jump must return a tensor on cpu"):
        sample_pyramid(_toy_model(), shape, sch, 1,
                       jump=lambda x, k, generator=None: sch.jump(x, k).to("meta"))
    # a correct custom jump is used as is
    seen = []

    def up(x, k, generator=None):
        seen.append((k, tuple(x.shape)))
        return x.repeat_interleave(2, -1).repeat_interleave(2, -2)

    sample_pyramid(_toy_model(), shape, sch, 1, jump=up)
    assert seen == [(1, (2, 1, 4, 4)), (2, (2, 1, 8, 8))]


def test_no_graph_by_default_and_grad_opt_in():
    sch = PyramidSchedule()
    w = torch.tensor(0.3, requires_grad=True)

    def model(x, t, k):
        return w * x

    noise = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = sample_pyramid(model, noise.shape, sch, 2, noise=noise)
    assert out.grad_fn is None and not out.requires_grad
    eps = 1e-3
    runs = [sample_pyramid(lambda x, t, k, c=0.3 + d: c * x, noise.shape, sch, 2, noise=noise,
                           generator=torch.Generator().manual_seed(1)).sum() for d in (eps, -eps)]
    # the jumps draw block noise: the same generator on both sides of the difference
    out = sample_pyramid(model, noise.shape, sch, 2, noise=noise, grad=True,
                         generator=torch.Generator().manual_seed(1))
    (g,) = torch.autograd.grad(out.sum(), w)
    torch.testing.assert_close(g, (runs[0] - runs[1]) / (2 * eps), rtol=2e-3, atol=1e-3)
    with pytest.raises(TypeError, match="grad must be True or False"):
        sample_pyramid(model, noise.shape, sch, 2, noise=noise, grad=None)


def test_guidance_per_stage_per_step_lists_share_the_cfg_parser():
    sch = PyramidSchedule()
    shape = (1, 1, 8, 8)
    steps = (2, 3, 1)
    per_step = [[2.0, 3.0], [1.0, 4.0, 5.0], 6.0]
    flat = [2.0, 3.0, 1.0, 4.0, 5.0, 6.0]
    starts = [0, 2, 5]
    a = sample_pyramid(_toy_model(), shape, sch, steps, guidance=per_step,
                       generator=torch.Generator().manual_seed(0))
    b = sample_pyramid(_toy_model(), shape, sch, steps,
                       guidance=lambda k, i, n: flat[starts[k] + i],
                       generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"guidance\[1\] must have one value per step \(3\)"):
        sample_pyramid(_toy_model(), shape, sch, steps, guidance=[2.0, [1.0], 3.0])


def test_non_floating_inputs_are_named():
    sch = PyramidSchedule()
    shape = (1, 1, 8, 8)
    for dt in (torch.bool, torch.complex64, torch.int64):
        with pytest.raises(ValueError, match="noise must have a floating dtype"):
            sample_pyramid(_toy_model(), shape, sch, 1, noise=torch.zeros(shape, dtype=dt))
    with pytest.raises(ValueError, match="dtype must be a floating dtype"):
        sample_pyramid(_toy_model(), shape, sch, 1, dtype=torch.int32)
    with pytest.raises(TypeError, match="return_dict=False"):
        sample_pyramid(lambda x, t, k: (x,), shape, sch, 1)
    with pytest.raises(ValueError, match="on the input's device"):
        sample_pyramid(lambda x, t, k: x.to("meta"), shape, sch, 1)


# ----------------------------------------------------------------------------- keyed noise
def _local_model(x, t, k):
    """A deterministic model that acts per pixel (any piece of x sees the same numbers)."""
    return 0.1 * x - 0.05 * torch.tanh(x) + 1e-4 * t.view(-1, *([1] * (x.dim() - 1)))


def _cut(x, axis, lo, hi):
    idx = [slice(None)] * x.dim()
    idx[axis] = slice(lo, hi)
    return x[tuple(idx)]


@pytest.mark.parametrize(
    "shape,stages,grid,dtype",
    [((3, 2, 16, 24), 3, "reference", torch.float32),
     ((2, 2, 3, 8, 16), 2, "exact", torch.float32),
     ((2, 3, 5, 24, 40), 4, "reference", torch.float64),
     ((2, 2, 2, 16, 8), 3, "exact", torch.bfloat16)],
)
def test_keyed_sample_pieces_are_slices_of_the_whole_sample(shape, stages, grid, dtype):
    """A whole pyramidal sample with a NoiseKey, drawn in two pieces along B, T, H or W
    (H and W cut on multiples of 2^(stages-1)), equals the slices of the whole sample bit
    for bit: the initial noise, its pyramid, every jump's block noise and the model act
    locally."""
    sch = PyramidSchedule(stages=stages)
    key = NoiseKey(2024)
    whole = sample_pyramid(_local_model, shape, sch, 2, generator=key, grid=grid, dtype=dtype)
    assert whole.shape == shape and whole.dtype == dtype
    f = 2 ** (stages - 1)
    for axis in [0] + list(range(2, len(shape))):
        step = f if axis >= len(shape) - 2 else 1
        cut = max(step, (shape[axis] // 2) // step * step)
        pieces = []
        for lo, hi in ((0, cut), (cut, shape[axis])):
            origin = [0] * len(shape)
            origin[axis] = lo
            piece_shape = list(shape)
            piece_shape[axis] = hi - lo
            piece = sample_pyramid(_local_model, tuple(piece_shape), sch, 2,
                                   generator=key.at(origin), grid=grid, dtype=dtype)
            assert torch.equal(piece, _cut(whole, axis, lo, hi)), (axis, lo)
            pieces.append(piece)
        assert torch.equal(torch.cat(pieces, dim=axis), whole)


def test_keyed_sample_initial_noise_is_the_keys_noise():
    """The initial noise is key.randn(shape) (what keyed_randn gives for the key's seed and
    origin); the jumps draw key.derive("jump", k) through schedule.jump."""
    sch = PyramidSchedule(stages=3)
    key = NoiseKey(5, (2, 0, 8, 4))
    shape = (2, 2, 8, 12)
    a = sample_pyramid(_local_model, shape, sch, 3, generator=key)
    b = sample_pyramid(_local_model, shape, sch, 3, generator=key,
                       noise=keyed_randn(shape, seed=5, origin=(2, 0, 8, 4)))
    assert torch.equal(a, b)
    seen = []

    def jump(x, stage, generator=None):
        seen.append(generator)
        return sch.jump(x, stage, generator=generator)

    c = sample_pyramid(_local_model, shape, sch, 3, generator=key, jump=jump)
    assert torch.equal(a, c) and seen == [key, key]
    d = sample_pyramid(_local_model, shape, sch, 3, generator=NoiseKey(6, key.origin))
    assert not torch.allclose(a, d)


def test_keyed_sample_misaligned_origin_fails_before_any_model_call():
    calls = []

    def model(x, t, k):
        calls.append(k)
        return x

    sch = PyramidSchedule(stages=3)
    with pytest.raises(ValueError, match=r"origin \(0, 0, 2, 0\).*multiples of 4"):
        sample_pyramid(model, (1, 1, 8, 8), sch, 2, generator=NoiseKey(1, (0, 0, 2, 0)))
    with pytest.raises(ValueError, match=r"origin.*one entry per dim"):
        sample_pyramid(model, (1, 1, 8, 8), sch, 2, generator=NoiseKey(1, (0, 0, 0)))
    assert calls == []
    # one stage: no jump, no pyramid, any origin
    out = sample_pyramid(model, (1, 1, 3, 5), PyramidSchedule(stages=1), 1,
                         generator=NoiseKey(1, (0, 0, 1, 3)))
    assert out.shape == (1, 1, 3, 5) and calls == [0]


def test_docs_sharded_sampling_example_runs():
    """The code block of docs/pyramid.md's "Sharded sampling" section runs as written."""
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "pyramid.md").read_text()
    section = text.split("## Sharded sampling", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```python\n")[1:]
    assert len(blocks) == 1
    exec(compile(blocks[0].split("```", 1)[0], "docs/pyramid.md", "exec"), {})


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_keyed_sample_any_aligned_box_is_the_slice(data):
    """Any box of the sample (B, T, H, W cut at once; H, W on multiples of 2^(stages-1)),
    drawn alone with its corner as the key's origin, is that slice of the whole sample."""
    stages = data.draw(st.integers(1, 3))
    f = 2 ** (stages - 1)
    shape = (data.draw(st.integers(1, 3)), 2, data.draw(st.integers(1, 3)),
             f * data.draw(st.integers(1, 4)), f * data.draw(st.integers(1, 4)))
    key = NoiseKey(data.draw(st.integers(0, 2**63 - 1)))
    sch = PyramidSchedule(stages=stages)
    whole = sample_pyramid(_local_model, shape, sch, 2, generator=key)
    unit = (1, shape[1], 1, f, f)
    lo = [data.draw(st.integers(0, s // u - 1)) * u for s, u in zip(shape, unit)]
    hi = [data.draw(st.integers(a // u + 1, s // u)) * u for a, s, u in zip(lo, shape, unit)]
    box = sample_pyramid(_local_model, tuple(b - a for a, b in zip(lo, hi)), sch, 2,
                         generator=key.at(lo))
    assert torch.equal(box, whole[tuple(slice(a, b) for a, b in zip(lo, hi))])
