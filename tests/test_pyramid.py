"""Tests of vidnoise.pyramid: schedule values, jump algebra, stage jump (proof test 1),
training inputs against the reference ``add_pyramid_noise`` rebuilt in
tests/_reference_pyramid_flow.py, stages 1 to 4 end to end, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st

import vidnoise.pyramid as pyramid_module
from _reference_pyramid_flow import (
    fixed_u,
    per_sample_generators,
    reference_tables,
    reference_training_inputs,
)
from vidnoise.noise import NoiseKey, block_noise
from vidnoise.oracles.gaussian import GaussianData, powerlaw_cov, pyramid_operators
from vidnoise.pyramid import (
    PyramidSchedule,
    StageBatch,
    _upsample_nearest,
    end_from_start,
    start_from_end,
)

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


# ----------------------------------------------------------------------------- schedule values
def test_default_reference_values():
    s = PyramidSchedule()
    np.testing.assert_allclose(s.start_sigmas, (1.0, 0.80024, 0.50075), atol=1e-5)
    np.testing.assert_allclose(s.end_sigmas, (0.667, 0.334, 0.0), atol=1e-5)
    np.testing.assert_allclose(s.ori_start_sigmas, (1.0, 0.667, 0.334), atol=1e-5)
    np.testing.assert_allclose(
        s.time_slices, ((0, 0.25616), (0.25616, 0.61480), (0.61480, 1.0)), atol=1e-5)
    np.testing.assert_allclose(s.renoise_coefficients(1), (0.59988, 0.69303), atol=1e-5)
    np.testing.assert_allclose(s.renoise_coefficients(2), (0.74963, 0.43366), atol=1e-5)
    # pseudo-time (docs/math.md §4): stage 0 1000 -> 744.256, 1: 744 -> 386.358, 2: 386 -> 1.385
    firsts = [s.stage_grid(k, 1000)[0] for k in range(3)]
    np.testing.assert_allclose([float(t[0]) for t in firsts], (1000, 744, 386), atol=1e-9)
    np.testing.assert_allclose([float(t[-1]) for t in firsts], (744.256, 386.358, 1.385),
                               atol=1e-9)


@pytest.mark.parametrize(
    "stages, stage_range, gamma, shift",
    [
        (3, (0, 1 / 3, 2 / 3, 1), 1 / 3, 1.0),
        (3, (0, 1 / 3, 2 / 3, 1), 0.2, 3.0),
        (2, (0, 0.5, 1), 1 / 3, 1.0),
        (4, (0, 0.1, 0.25, 0.7, 1), 0.05, 2.0),
        (3, (0, 0.001, 0.999, 1), 1e-6, 1.0),
    ],
)
def test_schedule_matches_rebuilt_reference(stages, stage_range, gamma, shift):
    s = PyramidSchedule(stages, stage_range, gamma, shift)
    ref = reference_tables(stages, stage_range, gamma, shift)
    np.testing.assert_allclose(s.ori_start_sigmas, ref.ori_start, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.start_sigmas, ref.start, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.end_sigmas, ref.end, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.time_slices, ref.slices, rtol=0, atol=1e-12)
    for k in range(stages):
        # reference grid: reference set_timesteps = linspace(first, last of the training grid, n)
        for n in (1, 7, 20):
            ts, rs = s.stage_grid(k, n)
            want_t = np.linspace(ref.timesteps[k][0], ref.timesteps[k][-1], n)
            want_r = np.concatenate([np.linspace(1.0, ref.ratios[-1], n), [0.0]])
            np.testing.assert_allclose(ts.numpy(), want_t, rtol=1e-12, atol=1e-9)
            np.testing.assert_allclose(rs.numpy(), want_r, rtol=0, atol=1e-15)
        # training grid: t(r) for r = 1 - j/N
        r = torch.from_numpy(ref.ratios)
        np.testing.assert_allclose(s.timestep_from_ratio(k, r).numpy(), ref.timesteps[k],
                                   rtol=1e-12, atol=1e-9)


def test_stage_grid_exact():
    s = PyramidSchedule()
    ts, rs = s.stage_grid(1, 4, grid="exact")
    np.testing.assert_allclose(rs.numpy(), [1, 0.75, 0.5, 0.25, 0.0], atol=1e-15)
    t_max, t_min = s.timestep_range[1]
    np.testing.assert_allclose(ts.numpy(), [t_min + r * (t_max - t_min) for r in rs[:-1]])
    np.testing.assert_allclose(s.ratio_from_timestep(1, ts).numpy(), rs[:-1].numpy(),
                               atol=1e-12)
    assert ts.shape == (4,) and rs.shape == (5,) and ts.dtype == F64
    # the reference grid's last step only moves 1/N -> 0
    _, rc = s.stage_grid(1, 4)
    assert float(rc[-2] - rc[-1]) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="grid"):
        s.stage_grid(1, 4, grid="compat")
    with pytest.raises(TypeError, match="compat"):  # the old boolean is gone
        s.stage_grid(1, 4, compat=True)


def test_schedule_is_frozen_and_hashable():
    s = PyramidSchedule()
    with pytest.raises(AttributeError):
        s.gamma = 0.1
    assert s == PyramidSchedule() and hash(s) == hash(PyramidSchedule())


# ----------------------------------------------------------------------------- jump algebra
@pytest.mark.parametrize("gamma", [1e-6, 1e-3, 0.05, 0.2, 0.3, 1 / 3])
def test_start_end_inverse_and_identity(gamma):
    e = torch.linspace(0, 1, 201, dtype=F64)
    s = start_from_end(e, gamma)
    # closed form, written independently: α = s/e, β = α(1-e)/sqrt(γ)
    k = math.sqrt(1 + 1 / gamma)
    np.testing.assert_allclose(s.numpy(), (e / (k * (1 - e) + e)).numpy(), rtol=1e-14)
    back = end_from_start(s, gamma)
    np.testing.assert_allclose(back.numpy(), e.numpy(), rtol=1e-10, atol=1e-14)
    assert bool((s <= e + 1e-15).all())
    # α²(1-e)²·11ᵀ + β²((1+γ)I - γ11ᵀ) = (1-s)² I  <=>  α²(1-e)² = β²γ and β²(1+γ) = (1-s)²
    m = e > 0
    alpha = s[m] / e[m]
    beta = alpha * (1 - e[m]) / math.sqrt(gamma)
    one = torch.ones(4, 4, dtype=F64)
    for a, b, ee, ss in zip(alpha[::20], beta[::20], e[m][::20], s[m][::20]):
        lhs = a**2 * (1 - ee) ** 2 * one + b**2 * ((1 + gamma) * torch.eye(4, dtype=F64)
                                                   - gamma * one)
        torch.testing.assert_close(lhs, (1 - ss) ** 2 * torch.eye(4, dtype=F64),
                                   rtol=1e-12, atol=1e-12)
    # paper noise coefficient (1-s)/sqrt(1-γ_p) equals β
    np.testing.assert_allclose(beta.numpy(), ((1 - s[m]) / math.sqrt(1 + gamma)).numpy(),
                               rtol=1e-9)
    # γ = 1/3 special forms: s = e/(2-e), e = 2s/(1+s)
    if gamma == 1 / 3:
        np.testing.assert_allclose(s.numpy(), (e / (2 - e)).numpy(), rtol=1e-14)
        np.testing.assert_allclose(end_from_start(s, 1 / 3).numpy(),
                                   (2 * s / (1 + s)).numpy(), rtol=1e-12)


def test_start_end_scalar_and_bad_input():
    assert start_from_end(0.333, 1 / 3) == pytest.approx(0.333 / (2 - 0.333))
    assert end_from_start(0.5, 1 / 3) == pytest.approx(2 * 0.5 / 1.5)
    for fn in (start_from_end, end_from_start):
        for bad in (0.0, 0.34, 1.0, float("nan")):
            with pytest.raises(ValueError, match="gamma"):
                fn(0.5, bad)
    with pytest.raises(ValueError, match="e must"):
        start_from_end(1.5, 0.2)
    with pytest.raises(ValueError, match="s must"):
        end_from_start(-0.1, 0.2)


def test_renoise_coefficients_extremes_finite():
    for gamma in (1e-6, 1e-12, 1 / 3):
        s = PyramidSchedule(gamma=gamma)
        for k in (1, 2):
            a, b = s.renoise_coefficients(k)
            e = 1 - s.ori_start_sigmas[k]
            assert math.isfinite(a) and math.isfinite(b) and 0 < a and 0 < b <= 1
            assert a * e == pytest.approx(1 - s.start_sigmas[k], rel=1e-12)
            assert b == pytest.approx((1 - (1 - s.start_sigmas[k])) / math.sqrt(1 + gamma),
                                      rel=1e-9)
    tiny = PyramidSchedule(gamma=1e-6)
    assert tiny.start_sigmas[1] == pytest.approx(1.0, abs=1e-3)  # almost a full restart


# ----------------------------------------------------------------------------- jump
def test_upsample_nearest_matches_interpolate():
    x = torch.randn(2, 3, 4, 5, 6)
    want = F.interpolate(x.reshape(2, 12, 5, 6), scale_factor=2, mode="nearest")
    torch.testing.assert_close(_upsample_nearest(x), want.reshape(2, 3, 4, 10, 12), rtol=0,
                               atol=0)


def _block_cov(h, w, gamma):
    """(1+γ)I - γ·[same 2x2 block] on a flattened h x w grid, built independently."""
    iy, ix = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    blk = (iy // 2 * (w // 2) + ix // 2).reshape(-1)
    same = (blk[:, None] == blk[None, :]).to(F64)
    return (1 + gamma) * torch.eye(h * w, dtype=F64) - gamma * same


def _in_block_corr(cov, h, w):
    """Mean correlation between distinct pixels of the same 2x2 block."""
    iy, ix = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    blk = (iy // 2 * (w // 2) + ix // 2).reshape(-1)
    same = (blk[:, None] == blk[None, :]) & ~torch.eye(h * w, dtype=torch.bool)
    sd = cov.diagonal().sqrt()
    corr = cov / sd[:, None] / sd[None, :]
    return float(corr[same].mean())


@pytest.mark.parametrize("gamma", [0.2, 1 / 3])
@pytest.mark.parametrize(
    "stages, stage_range",
    [(3, (0, 1 / 3, 2 / 3, 1)), (2, (0, 0.5, 1)), (3, (0, 0.1, 0.9, 1)), (4, (0, .2, .4, .6, 1))],
)
def test_proof1_jump_covariance_exact(gamma, stages, stage_range, capsys):
    """Proof test 1: Cov(jump(end_{k-1})) = Cov(start_k) exactly (float64 propagation)."""
    h = w = 16
    C = powerlaw_cov(h, w)
    data = GaussianData(None, C)
    sch = PyramidSchedule(stages, stage_range, gamma)
    D, U = pyramid_operators(data.shape, stages)
    rows = []
    for k in range(1, stages):
        s_sig, e_sig = sch.start_sigmas[k], sch.end_sigmas[k - 1]
        d_prev, d_k = D[k - 1].shape[0], D[k].shape[0]
        hp = h // 2 ** (stages - k)
        cov_end = e_sig**2 * torch.eye(d_prev, dtype=F64) + (1 - e_sig) ** 2 * (
            D[k - 1] @ C @ D[k - 1].T)
        cov_start = s_sig**2 * torch.eye(d_k, dtype=F64) + (1 - s_sig) ** 2 * (
            U[k] @ D[k - 1] @ C @ D[k - 1].T @ U[k].T)
        # the jump's linear part and noise part, read off the code with basis vectors
        basis_prev = torch.eye(d_prev, dtype=F64).reshape(d_prev, 1, hp, hp)
        lin = sch.jump(basis_prev, k, noise=torch.zeros(d_prev, 1, 2 * hp, 2 * hp, dtype=F64))
        Lx = lin.reshape(d_prev, d_k).T  # state = Lx·x + Ln·η
        basis_k = torch.eye(d_k, dtype=F64).reshape(d_k, 1, 2 * hp, 2 * hp)
        nz = sch.jump(torch.zeros(d_k, 1, hp, hp, dtype=F64), k, noise=basis_k)
        Ln = nz.reshape(d_k, d_k).T
        a, b = sch.renoise_coefficients(k)
        torch.testing.assert_close(Lx, a * U[k], rtol=0, atol=1e-15)
        torch.testing.assert_close(Ln, b * torch.eye(d_k, dtype=F64), rtol=0, atol=1e-15)
        cov_jump = Lx @ cov_end @ Lx.T + Ln @ _block_cov(2 * hp, 2 * hp, gamma) @ Ln.T
        cov_iid = Lx @ cov_end @ Lx.T + Ln @ Ln.T
        err = float((cov_jump - cov_start).norm() / cov_start.norm())
        err_iid = float((cov_iid - cov_start).norm() / cov_start.norm())
        c_start = _in_block_corr(cov_start, 2 * hp, 2 * hp)
        c_jump = _in_block_corr(cov_jump, 2 * hp, 2 * hp)
        c_iid = _in_block_corr(cov_iid, 2 * hp, 2 * hp)
        rows.append((k, err, err_iid, c_start, c_jump, c_iid))
        assert err <= 1e-6
        # i.i.d. renoising leaves excess in-block correlation: the test sees it
        assert err_iid > 1e-3  # >= 1000x the tolerance of the exact check
        assert c_iid - c_start > 1e-3
        # exactly: i.i.d. noise adds covariance β²γ to every in-block pair (variance unchanged)
        var = float(cov_start.diagonal().mean())
        assert c_iid - c_jump == pytest.approx(b**2 * gamma / var, rel=1e-9)
    with capsys.disabled():
        print(f"\n[proof 1] gamma={gamma:.4g} stages={stages} range={stage_range}")
        print("  stage  relerr(block)  relerr(iid)  inblock-corr start / block / iid")
        for k, e1, e2, c0, c1, c2 in rows:
            print(f"  {k:5d}  {e1:13.2e}  {e2:11.3e}  {c0:+.4f} / {c1:+.4f} / {c2:+.4f}")


def test_jump_default_noise_is_block_noise():
    """Statistical check of the drawn renoise: in-block correlation -γ, unit variance,
    independent across blocks. n = 4·64·64 / 4 blocks per pair type ~ 16k: SE ~ 0.008."""
    sch = PyramidSchedule()
    g = torch.Generator().manual_seed(3)
    x = torch.zeros(4, 1, 64, 64, dtype=F64)
    out = sch.jump(x, 2, generator=g)
    _, beta = sch.renoise_coefficients(2)
    eta = out / beta
    assert eta.shape == (4, 1, 128, 128)
    blocks = eta.reshape(4, 64, 2, 64, 2).permute(0, 1, 3, 2, 4).reshape(-1, 4)
    n = blocks.shape[0]
    cov = blocks.T @ blocks / n
    se = 1 / math.sqrt(n)
    var_tol = 5 * math.sqrt(2) * se  # Var of a sample variance: 2σ⁴/n
    assert float((cov.diagonal() - 1).abs().max()) < var_tol
    off = cov[~torch.eye(4, dtype=torch.bool)]
    # correlation estimate SE ≈ (1 - ρ²)/sqrt(n) <= 1/sqrt(n)
    assert float((off + 1 / 3).abs().max()) < 5 * se * 1.2
    # blocks sum to zero at γ = 1/3 (singular block covariance)
    assert float(blocks.sum(1).abs().max()) < 1e-12
    # across neighbouring blocks: uncorrelated
    right = eta[..., 0::2, 2::2].reshape(-1)
    left = eta[..., 0::2, 1:-1:2].reshape(-1)
    assert abs(float((right * left).mean())) < 5 / math.sqrt(right.numel())


def test_jump_5d_per_frame_dtype_and_generators():
    sch = PyramidSchedule()
    x = torch.randn(2, 3, 4, 8, 8)
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    y = sch.jump(x, 1, generator=gens)
    assert y.shape == (2, 3, 4, 16, 16) and y.dtype == torch.float32
    # per-sample generators: sample 1 does not depend on sample 0's generator or position
    y1 = sch.jump(x[1:], 1, generator=[torch.Generator().manual_seed(1)])
    torch.testing.assert_close(y[1:], y1)
    # linear part: α·Up(x) per frame
    a, b = sch.renoise_coefficients(1)
    z = sch.jump(x, 1, noise=torch.zeros(2, 3, 4, 16, 16))
    want = F.interpolate(x.reshape(2, 12, 8, 8), scale_factor=2, mode="nearest") * a
    torch.testing.assert_close(z, want.reshape(2, 3, 4, 16, 16))
    for dt in (torch.float16, torch.bfloat16):
        yh = sch.jump(x.to(dt), 1, generator=torch.Generator().manual_seed(0))
        assert yh.dtype == dt and bool(torch.isfinite(yh).all())
        y32 = sch.jump(x.to(dt).float(), 1, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(yh.float(), y32, rtol=1e-2, atol=1e-2)


def test_jump_bad_input():
    sch = PyramidSchedule()
    x = torch.randn(1, 1, 4, 4)
    for bad in (0, 3, -1):
        with pytest.raises(ValueError, match="stage"):
            sch.jump(x, bad)
        with pytest.raises(ValueError, match="stage"):
            sch.renoise_coefficients(bad)
    with pytest.raises(ValueError, match="stage"):
        sch.stage_grid(3, 10)
    with pytest.raises(ValueError, match="noise"):
        sch.jump(x, 1, noise=torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="x must have"):
        sch.jump(torch.randn(4, 4), 1)


def test_schedule_bad_input():
    with pytest.raises(ValueError, match="stage_range"):
        PyramidSchedule(stage_range=(0, 2 / 3, 1 / 3, 1))
    with pytest.raises(ValueError, match="stage_range"):
        PyramidSchedule(stage_range=(0.1, 1 / 3, 2 / 3, 1))
    with pytest.raises(ValueError, match="stage_range"):
        PyramidSchedule(stage_range=(0, 1 / 3, 2 / 3, 0.9))
    with pytest.raises(ValueError, match="stage_range"):
        PyramidSchedule(stage_range=(0, 0.5, 1))  # 3 stages need 4 entries
    with pytest.raises(ValueError, match="stage_range"):
        PyramidSchedule(stage_range=(0, 0.0001, 0.5, 1))  # no grid step in stage 0
    for bad in (0.0, -0.1, 0.34, 1.0):
        with pytest.raises(ValueError, match="gamma"):
            PyramidSchedule(gamma=bad)
    with pytest.raises(ValueError, match="shift"):
        PyramidSchedule(shift=0.0)
    with pytest.raises(ValueError, match="stages"):
        PyramidSchedule(stages=0, stage_range=(0, 1))
    with pytest.raises(ValueError, match="n must"):
        PyramidSchedule().stage_grid(0, 0)


def test_extreme_schedules_finite():
    cases = [
        PyramidSchedule(gamma=1e-6),
        PyramidSchedule(stage_range=(0, 0.001, 0.999, 1)),  # σ near 1 and near 0
        PyramidSchedule(stage_range=(0, 0.5, 0.501, 1)),  # a stage one grid step long
        PyramidSchedule(6, tuple(i / 6 for i in range(7))),  # many stages
        PyramidSchedule(stages=1, stage_range=(0, 1)),
        PyramidSchedule(shift=10.0),
    ]
    for s in cases:
        vals = [*s.start_sigmas, *s.end_sigmas, *sum(s.time_slices, ()),
                *sum(s.timestep_range, ())]
        assert all(math.isfinite(v) for v in vals)
        assert all(0 <= v <= 1 for v in [*s.start_sigmas, *s.end_sigmas])
        assert all(a < b for a, b in zip(s.end_sigmas, s.start_sigmas))
        for k in range(1, s.stages):
            a, b = s.renoise_coefficients(k)
            assert math.isfinite(a) and math.isfinite(b)
        for k in range(s.stages):
            ts, rs = s.stage_grid(k, 3)
            assert bool(torch.isfinite(ts).all())


# ----------------------------------------------------------------------------- training inputs
def _stage_rows(B, shares):
    S = sum(shares)
    col_stage = [k for k, c in enumerate(shares) for _ in range(c)]
    return [[b for b in range(B) if col_stage[b % S] == k] for k in range(len(shares))]


@pytest.fixture(params=[True, False], ids=["fused", "plain"])
def fused(request, monkeypatch):
    """Run a test on stage_inputs' fast path and on its plain formula lines."""
    monkeypatch.setattr(pyramid_module, "_FUSED", request.param)
    return request.param


@pytest.mark.parametrize("ndim", [4, 5])
@pytest.mark.parametrize("shares", [(1, 2, 1), (1, 1, 1), (2, 0, 1)])
def test_training_inputs_match_reference(ndim, shares, fused):
    sch = PyramidSchedule()
    g = torch.Generator().manual_seed(0)
    B = 2 * sum(shares)
    shape = (B, 3, 2, 16, 16) if ndim == 5 else (B, 3, 16, 16)
    latents = torch.randn(shape, generator=g)
    noise = torch.randn(shape, generator=g)
    u = torch.rand(B, generator=g)
    u[0] = 0.0
    u[-1] = 0.99999  # both ends of the grid
    rows = _stage_rows(B, shares)
    out = sch.training_inputs(latents, stage_shares=shares, noise=noise,
                              generator=per_sample_generators(B), u_sampler=fixed_u(u))
    assert [o.stage for o in out] == [0, 1, 2]
    lat5 = latents if ndim == 5 else latents.unsqueeze(2)
    noi5 = noise if ndim == 5 else noise.unsqueeze(2)
    ref = reference_training_inputs(lat5, noi5, u, reference_tables(3), shares)
    for k, o in enumerate(out):
        assert isinstance(o, StageBatch)
        assert o.indices.tolist() == rows[k]
        for j, b in enumerate(rows[k]):
            noisy, r, ts, tgt = ref.sample(b)
            mine_noisy = o.noisy[j] if ndim == 5 else o.noisy[j].unsqueeze(1)
            mine_tgt = o.target[j] if ndim == 5 else o.target[j].unsqueeze(1)
            torch.testing.assert_close(mine_noisy, noisy, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(mine_tgt, tgt, rtol=1e-6, atol=1e-6)
            assert float(o.ratio[j]) == pytest.approx(float(r), abs=1e-7)
            assert float(o.timestep[j]) == pytest.approx(float(ts), rel=1e-6)
            sig = sch.end_sigmas[k] + float(r) * (sch.start_sigmas[k] - sch.end_sigmas[k])
            assert float(o.sigma[j]) == pytest.approx(sig, rel=1e-6)


def test_training_inputs_definitions_direct(fused):
    """Start / end points of docs/math.md §4, with operators built independently."""
    sch = PyramidSchedule()
    g = torch.Generator().manual_seed(1)
    B = 3
    x0 = torch.randn(B, 1, 8, 8, dtype=F64, generator=g)
    eps = torch.randn(B, 1, 8, 8, dtype=F64, generator=g)
    D, U = pyramid_operators((1, 8, 8), 3)
    u = torch.tensor([0.25, 0.5, 0.75], dtype=F64)
    out = sch.training_inputs(x0, stage_shares=(1, 1, 1), noise=eps, grid="exact",
                              generator=per_sample_generators(B), u_sampler=fixed_u(u))
    X, E = x0.reshape(B, -1).T, eps.reshape(B, -1).T
    for k, o in enumerate(out):
        b = k
        nk = 2 ** (2 - k) * D[k] @ E[:, b]
        clean = D[k] @ X[:, b]
        s, e = sch.start_sigmas[k], sch.end_sigmas[k]
        start = nk if k == 0 else s * nk + (1 - s) * U[k] @ D[k - 1] @ X[:, b]
        end = clean if k == 2 else e * nk + (1 - e) * clean
        r = 1 - float(u[b])
        torch.testing.assert_close(o.target.reshape(-1), start - end, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(o.noisy.reshape(-1), r * start + (1 - r) * end,
                                   rtol=1e-12, atol=1e-12)
        assert float(o.ratio[0]) == pytest.approx(r, abs=1e-15)
        assert o.noisy.dtype == F64 and o.timestep.dtype == F64


def test_training_inputs_generators_and_default_sampler():
    sch = PyramidSchedule()
    lat = torch.randn(8, 2, 16, 16)
    gens = [torch.Generator().manual_seed(i) for i in range(8)]
    a = sch.training_inputs(lat, generator=gens)
    gens = [torch.Generator().manual_seed(i) for i in range(8)]
    b = sch.training_inputs(lat, generator=gens)
    for x, y in zip(a, b):
        torch.testing.assert_close(x.noisy, y.noisy, rtol=0, atol=0)
    # the default sampler gives grid ratios in {1, ..., 1/N}
    r = torch.cat([o.ratio for o in a]).double()
    assert bool(((r * 1000).round() - r * 1000).abs().max() < 1e-3)
    assert bool((r > 0).all() and (r <= 1).all())
    # one generator: reproducible
    c = sch.training_inputs(lat, generator=torch.Generator().manual_seed(5))
    d = sch.training_inputs(lat, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(c[1].target, d[1].target, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_training_inputs_half_precision(dtype, fused):
    sch = PyramidSchedule()
    g = torch.Generator().manual_seed(2)
    lat = torch.randn(4, 2, 2, 16, 16, generator=g)
    noise = torch.randn(4, 2, 2, 16, 16, generator=g)
    u = torch.rand(4, generator=g)
    half = sch.training_inputs(lat.to(dtype), noise=noise, generator=per_sample_generators(4),
                               u_sampler=fixed_u(u))
    full = sch.training_inputs(lat.to(dtype).float(), noise=noise,
                               generator=per_sample_generators(4), u_sampler=fixed_u(u))
    eps = 1e-3 if dtype == torch.float16 else 8e-3  # one rounding of the float32 result
    for h, f in zip(half, full):
        assert h.noisy.dtype == dtype and h.target.dtype == dtype
        assert h.ratio.dtype == torch.float32
        torch.testing.assert_close(h.noisy.float(), f.noisy, rtol=eps, atol=eps)
        torch.testing.assert_close(h.target.float(), f.target, rtol=eps, atol=eps)


def test_training_inputs_bad_input():
    sch = PyramidSchedule()
    with pytest.raises(ValueError, match="multiple of sum"):
        sch.training_inputs(torch.randn(6, 1, 16, 16))
    with pytest.raises(ValueError, match="H and W"):
        sch.training_inputs(torch.randn(4, 1, 18, 16))
    with pytest.raises(ValueError, match="H and W"):
        sch.training_inputs(torch.randn(4, 1, 16, 6))
    with pytest.raises(ValueError, match="stage_shares"):
        sch.training_inputs(torch.randn(4, 1, 16, 16), stage_shares=(1, 3))
    with pytest.raises(ValueError, match="stage_shares"):
        sch.training_inputs(torch.randn(4, 1, 16, 16), stage_shares=(0, 0, 0))
    with pytest.raises(ValueError, match="latents"):
        sch.training_inputs(torch.randn(4, 16, 16))
    with pytest.raises(ValueError, match="noise"):
        sch.training_inputs(torch.randn(4, 1, 16, 16), noise=torch.randn(4, 1, 8, 8))
    with pytest.raises(ValueError, match="u_sampler"):
        sch.training_inputs(torch.randn(4, 1, 16, 16),
                            u_sampler=lambda n, **kw: torch.zeros(n + 1))


def test_training_inputs_extremes():
    g = torch.Generator().manual_seed(4)
    for sch, size in [
        (PyramidSchedule(gamma=1e-6), 8),
        (PyramidSchedule(stage_range=(0, 0.001, 0.999, 1)), 8),
        (PyramidSchedule(5, (0, .2, .4, .6, .8, 1)), 32),
    ]:
        lat = torch.randn(sch.stages, 2, size, size, generator=g)
        out = sch.training_inputs(lat, stage_shares=(1,) * sch.stages, generator=g)
        for o in out:
            assert bool(torch.isfinite(o.noisy).all() and torch.isfinite(o.target).all())
            f = 2 ** (sch.stages - 1 - o.stage)
            assert o.noisy.shape == (1, 2, size // f, size // f)


def test_small_converters_and_empty_stage():
    s = PyramidSchedule()
    for k in range(3):
        assert s.sigma_from_ratio(k, 1.0) == pytest.approx(s.start_sigmas[k], abs=1e-15)
        assert s.sigma_from_ratio(k, 0.0) == pytest.approx(s.end_sigmas[k], abs=1e-15)
        t_max, t_min = s.timestep_range[k]
        assert s.timestep_from_ratio(k, 1.0) == t_max and s.timestep_from_ratio(k, 0.0) == t_min
        assert s.ratio_from_timestep(k, s.timestep_from_ratio(k, 0.37)) == pytest.approx(0.37)
    assert s.level_shape((2, 4, 3, 32, 64), 0) == (2, 4, 3, 8, 16)
    assert s.level_shape((2, 4, 32, 64), 2) == (2, 4, 32, 64)
    with pytest.raises(ValueError, match="H and W"):
        s.level_shape((2, 4, 30, 64), 1)
    out = s.training_inputs(torch.randn(3, 2, 16, 16), stage_shares=(2, 0, 1),
                            generator=torch.Generator().manual_seed(0))
    assert out[1].noisy.shape == (0, 2, 8, 8) and out[1].indices.numel() == 0
    assert out[0].indices.tolist() == [0, 1] and out[2].indices.tolist() == [2]


# ----------------------------------------------------------------------------- any stage count
@pytest.mark.parametrize("stages", [1, 2, 3, 4])
def test_every_default_follows_stages(stages, fused):
    """PyramidSchedule(stages=K) alone builds for K = 1..4 (uniform stage_range, stage shares
    (1, 2, ..., 2, 1)), and its training inputs, jumps and grids work end to end."""
    sch = PyramidSchedule(stages=stages)
    assert sch.stage_range == tuple(i / stages for i in range(stages + 1))
    ref = reference_tables(stages)
    np.testing.assert_allclose(sch.start_sigmas, ref.start, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sch.end_sigmas, ref.end, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sch.time_slices, ref.slices, rtol=0, atol=1e-12)
    shares = {1: (1,), 2: (1, 1), 3: (1, 2, 1), 4: (1, 2, 2, 1)}[stages]
    B, size = 2 * sum(shares), 2 ** stages
    g = torch.Generator().manual_seed(stages)
    lat = torch.randn(B, 2, 3, size, size, generator=g)
    noise = torch.randn(B, 2, 3, size, size, generator=g)
    u = torch.rand(B, generator=g)
    out = sch.training_inputs(lat, noise=noise, generator=per_sample_generators(B),
                              u_sampler=fixed_u(u))
    assert [o.indices.tolist() for o in out] == _stage_rows(B, shares)
    want = reference_training_inputs(lat, noise, u, ref, shares)
    for o in out:
        assert o.noisy.shape[-1] == size // 2 ** (stages - 1 - o.stage)
        for j, b in enumerate(o.indices.tolist()):
            noisy, r, ts, tgt = want.sample(b)
            torch.testing.assert_close(o.noisy[j], noisy, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(o.target[j], tgt, rtol=1e-6, atol=1e-6)
            assert float(o.timestep[j]) == pytest.approx(float(ts), rel=1e-6)
    # default draws too (no u_sampler, one generator)
    assert len(sch.training_inputs(lat, generator=torch.Generator().manual_seed(0))) == stages
    for k in range(1, stages):
        a, _ = sch.renoise_coefficients(k)
        x = torch.randn(1, 2, 2 ** k, 2 ** k, generator=g)
        y = sch.jump(x, k, noise=torch.zeros(1, 2, 2 ** (k + 1), 2 ** (k + 1)))
        torch.testing.assert_close(y, a * _upsample_nearest(x))
        assert sch.jump(x, k, generator=g).shape == y.shape
    for k in range(stages):
        ts, rs = sch.stage_grid(k, 5)
        assert rs[0] == 1 and rs[-1] == 0 and bool(torch.isfinite(ts).all())


# ----------------------------------------------------------------------------- bad values speak
@pytest.mark.parametrize("grid", ["reference", "exact"])
@pytest.mark.parametrize("bad", [500.0, 1.5, 1.0, -0.1, float("nan"), float("inf")])
def test_training_inputs_rejects_u_outside_unit_interval(grid, bad):
    """Before: u = 500 was clamped to r = 0.001, u = 1.5 gave r = -0.5 (grid "exact") and
    NaN passed through."""
    sch = PyramidSchedule()
    with pytest.raises(ValueError, match=r"u_sampler output u must be in \[0.0, 1.0\)"):
        sch.training_inputs(torch.randn(4, 1, 8, 8), grid=grid,
                            u_sampler=lambda n, **kw: torch.full((n,), bad))
    with pytest.raises(ValueError, match="u must be in"):
        sch.stage_inputs(1, torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8),
                         torch.tensor([0.5, bad]), grid=grid)


def test_local_ratio_grids():
    sch = PyramidSchedule()
    u = torch.tensor([0.0, 0.0004, 0.5, 0.99999])
    r = sch.local_ratio(u)
    np.testing.assert_allclose(r.numpy(), [1.0, 1.0, 0.5, 0.001], atol=1e-12)
    np.testing.assert_allclose(sch.local_ratio(u, grid="exact").numpy(),
                               (1 - u.double()).numpy(), atol=0)
    assert r.dtype == F64


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda s: s.ratio_from_timestep(0, 2024.0), "timestep"),
        (lambda s: s.ratio_from_timestep(2, -2.9), "timestep"),
        (lambda s: s.ratio_from_timestep(1, torch.tensor([500.0, 2024.0])), "timestep"),
        (lambda s: s.timestep_from_ratio(0, -2.9), "ratio"),
        (lambda s: s.timestep_from_ratio(0, 2024), "ratio"),
        (lambda s: s.timestep_from_ratio(0, torch.tensor([0.5, float("nan")])), "ratio"),
        (lambda s: s.sigma_from_ratio(1, 1.5), "ratio"),
        (lambda s: start_from_end(torch.tensor([3.0, -0.5]), 1 / 3), "e"),
        (lambda s: start_from_end(2024.0, 1 / 3), "e"),
        (lambda s: end_from_start(torch.tensor([0.5, -0.5]), 1 / 3), "s"),
    ],
)
def test_converters_reject_out_of_range(call, name):
    """Before: ratio_from_timestep(0, 2024) gave 5.0, timestep_from_ratio(0, -2.9) a
    negative time, start_from_end([3.0, -0.5]) numbers outside [0, 1]."""
    with pytest.raises(ValueError, match=rf"^{name} must be in"):
        call(PyramidSchedule())


def test_ratio_from_timestep_accepts_every_grid_timestep():
    """No false alarm on the timesteps the sampler passes, even rounded to half precision."""
    sch = PyramidSchedule()
    for k in range(3):
        for grid in ("reference", "exact"):
            ts, rs = sch.stage_grid(k, 50, grid=grid)
            for dt, tol in ((F64, 1e-12), (torch.float32, 1e-5), (torch.float16, 4e-3)):
                r = sch.ratio_from_timestep(k, ts.to(dt))
                assert r.dtype == dt
                np.testing.assert_allclose(r.double().numpy(), rs[:-1].numpy(), atol=tol)


def test_negative_gamma_points_at_the_converter():
    """Before: "gamma must be in (0.0, 0.333...], got -0.333" without the fix."""
    for call in (lambda: PyramidSchedule(gamma=-1 / 3), lambda: start_from_end(0.5, -1 / 3),
                 lambda: end_from_start(0.5, -0.2)):
        with pytest.raises(ValueError, match=r"gamma_paper_to_code\(-0\.\d+\) = 0\.\d+"):
            call()


@pytest.mark.parametrize(
    "shape, match",
    [
        ((4, 1, 0, 16, 16), "channel and frame sizes must be positive"),  # T = 0
        ((4, 0, 16, 16), "channel and frame sizes must be positive"),  # C = 0
        ((4, 1, 2, 0, 16), "H and W must be positive"),  # H = 0
        ((4, 1, 16, 0), "H and W must be positive"),  # W = 0
    ],
)
def test_zero_sizes_are_named(shape, match):
    """Before: T = 0 or C = 0 failed inside avg_pool2d ("Expected 3D or 4D ...")."""
    with pytest.raises(ValueError, match=rf"latents: .*{match}"):
        PyramidSchedule().training_inputs(torch.randn(shape))


def test_small_helpers_name_bad_input():
    sch = PyramidSchedule()
    with pytest.raises(ValueError, match=r"shape must be \(B, C, H, W\)"):
        sch.level_shape((16,), 0)  # before: IndexError
    with pytest.raises(TypeError, match="shape"):
        sch.level_shape("16x16", 0)
    with pytest.raises(ValueError, match="x must be a tensor"):
        _upsample_nearest([1.0])  # before: AttributeError
    with pytest.raises(ValueError, match="u must be a tensor of shape"):
        sch.stage_inputs(0, torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8), torch.rand(3))
    with pytest.raises(ValueError, match="noise must have"):
        sch.stage_inputs(0, torch.randn(2, 1, 8, 8), torch.randn(2, 1, 4, 4), torch.rand(2))
    with pytest.raises(TypeError, match="u_sampler must be a callable"):
        sch.training_inputs(torch.randn(4, 1, 8, 8), u_sampler=0.5)
    with pytest.raises(ValueError, match="grid"):
        sch.training_inputs(torch.randn(4, 1, 8, 8), grid="compat")
    with pytest.raises(TypeError, match="sample_ratios"):  # the old name is gone
        sch.training_inputs(torch.randn(4, 1, 8, 8), sample_ratios=(1, 2, 1))


def test_stage_inputs_is_training_inputs_per_stage(fused):
    sch = PyramidSchedule()
    g = torch.Generator().manual_seed(9)
    lat, noise = torch.randn(8, 2, 2, 8, 8, generator=g), torch.randn(8, 2, 2, 8, 8, generator=g)
    u = torch.rand(8, generator=g)
    out = sch.training_inputs(lat, noise=noise, generator=per_sample_generators(8),
                              u_sampler=fixed_u(u), grid="exact")
    for o in out:
        rows = o.indices
        one = sch.stage_inputs(o.stage, lat[rows], noise[rows], u[rows], grid="exact")
        assert one.indices.tolist() == list(range(rows.numel()))
        for f in ("noisy", "target", "ratio", "timestep", "sigma"):
            torch.testing.assert_close(getattr(one, f), getattr(o, f), rtol=0, atol=0)
    shares = sch.training_inputs(lat, stage_shares=(2, 1, 1), noise=noise,
                                 generator=per_sample_generators(8), u_sampler=fixed_u(u))
    assert [o.indices.tolist() for o in shares] == _stage_rows(8, (2, 1, 1))


def test_fused_equals_plain_half_and_empty(monkeypatch):
    """The fast path of stage_inputs gives the plain formula lines' numbers (float32 rounding;
    one bf16 rounding for bf16), every stage, and an empty batch."""
    sch = PyramidSchedule(stages=4)
    g = torch.Generator().manual_seed(3)
    for dt, tol in ((F64, 1e-14), (torch.float32, 1e-6), (torch.bfloat16, 1.6e-2)):
        lat = torch.randn(3, 2, 2, 16, 24, generator=g).to(dt)
        noise = torch.randn(3, 2, 2, 16, 24, generator=g).to(dt)
        u = torch.rand(3, generator=g)
        for k in range(4):
            res = {}
            for flag in (True, False):
                monkeypatch.setattr(pyramid_module, "_FUSED", flag)
                res[flag] = sch.stage_inputs(k, lat, noise, u)
            for f in ("noisy", "target"):
                a, b = getattr(res[True], f), getattr(res[False], f)
                assert a.dtype == dt
                torch.testing.assert_close(a.double(), b.double(), rtol=tol, atol=tol)
    empty = sch.stage_inputs(2, torch.zeros(0, 1, 8, 8), torch.zeros(0, 1, 8, 8), torch.zeros(0))
    assert empty.noisy.shape == (0, 1, 4, 4) and empty.ratio.shape == (0,)
    out = sch.training_inputs(torch.zeros(0, 1, 8, 8), generator=[])
    assert [o.noisy.shape[0] for o in out] == [0, 0, 0, 0]


@settings(max_examples=60)
@given(e=st.floats(0.0, 1.0), gamma=st.floats(1e-6, 1 / 3))
@example(e=5e-324, gamma=0.25)
@example(e=1.0, gamma=1 / 3)
@example(e=0.0, gamma=1e-6)
def test_jump_levels_property(e, gamma):
    """For any e in [0, 1] and γ in (0, 1/3]: s <= e, end_from_start inverts start_from_end,
    and the covariance identity of docs/math.md §5 holds."""
    s = start_from_end(e, gamma)
    assert 0.0 <= s <= e + 1e-15
    assert end_from_start(s, gamma) == pytest.approx(e, rel=1e-9, abs=1e-12)
    # α written independently (not as s/e, which loses everything for subnormal e)
    alpha = 1 / (math.sqrt(1 + 1 / gamma) * (1 - e) + e)
    beta = alpha * (1 - e) / math.sqrt(gamma)
    assert s == pytest.approx(alpha * e, rel=1e-12, abs=1e-300)
    assert alpha**2 * (1 - e) ** 2 == pytest.approx(beta**2 * gamma, rel=1e-9, abs=1e-15)
    assert beta**2 * (1 + gamma) == pytest.approx((1 - s) ** 2, rel=1e-9, abs=1e-15)


def test_training_inputs_on_meta_device():
    """No host sync or CPU-only op in training_inputs: it runs on meta tensors."""
    sch = PyramidSchedule()
    lat = torch.empty(4, 2, 3, 16, 16, device="meta")
    out = sch.training_inputs(lat, noise=torch.empty_like(lat),
                              u_sampler=lambda n, **kw: torch.empty(n, device="meta"))
    assert [o.noisy.shape for o in out] == [(1, 2, 3, 4, 4), (2, 2, 3, 8, 8), (1, 2, 3, 16, 16)]
    assert all(o.noisy.device.type == "meta" and o.timestep.device.type == "meta" for o in out)
    y = sch.jump(torch.empty(1, 2, 4, 4, device="meta"), 1)
    assert y.shape == (1, 2, 8, 8) and y.device.type == "meta"


@settings(max_examples=25)
@given(
    stages=st.integers(1, 4),
    shares_seed=st.integers(0, 10**6),
    frames=st.sampled_from([None, 1, 3]),
    grid_scale=st.integers(1, 3),
    grid=st.sampled_from(["reference", "exact"]),
    fused=st.booleans(),
)
def test_training_inputs_property_any_stage_count(stages, shares_seed, frames, grid_scale,
                                                  grid, fused):
    """For any stage count, stage shares, layout (4-D or 5-D) and size, training_inputs
    gives the reference's numbers sample by sample (grid "exact": the same formulas with
    r = 1 - u, checked against the reference's end points)."""
    rng = np.random.default_rng(shares_seed)
    shares = tuple(int(v) for v in rng.integers(0, 3, stages))
    if sum(shares) == 0:
        shares = (1,) * stages
    sch = PyramidSchedule(stages=stages)
    size = 2 ** (stages - 1) * grid_scale
    B = sum(shares)
    shape = (B, 2, size, size) if frames is None else (B, 2, frames, size, size)
    g = torch.Generator().manual_seed(shares_seed)
    lat, noise = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    u = torch.rand(B, generator=g)
    old = pyramid_module._FUSED
    pyramid_module._FUSED = fused
    try:
        out = sch.training_inputs(lat, stage_shares=shares, noise=noise, grid=grid,
                                  generator=per_sample_generators(B), u_sampler=fixed_u(u))
    finally:
        pyramid_module._FUSED = old
    lat5 = lat if frames else lat.unsqueeze(2)
    ref = reference_training_inputs(lat5, noise if frames else noise.unsqueeze(2), u,
                                    reference_tables(stages), shares)
    assert [o.indices.tolist() for o in out] == _stage_rows(B, shares)
    for o in out:
        for j, b in enumerate(o.indices.tolist()):
            noisy, r, _, tgt = ref.sample(b)
            mine = o.noisy[j] if frames else o.noisy[j].unsqueeze(1)
            torch.testing.assert_close(o.target[j] if frames else o.target[j].unsqueeze(1),
                                       tgt, rtol=1e-6, atol=1e-6)
            if grid == "reference":
                torch.testing.assert_close(mine, noisy, rtol=1e-6, atol=1e-6)
            else:  # noisy = end + r·target with r = 1 - u
                rr = 1 - float(u[b])
                end = noisy.double() - float(r) * tgt.double()
                torch.testing.assert_close(mine.double(), end + rr * tgt.double(), rtol=1e-5,
                                           atol=1e-5)
                assert float(o.ratio[j]) == pytest.approx(rr, abs=1e-7)


# ----------------------------------------------------------------------------- keyed noise
def _cut(x, axis, lo, hi):
    idx = [slice(None)] * x.dim()
    idx[axis] = slice(lo, hi)
    return x[tuple(idx)]


@pytest.mark.parametrize("shape", [(3, 2, 16, 24), (2, 2, 3, 8, 16)])
@pytest.mark.parametrize("stages", [2, 3])
def test_keyed_jump_pieces_are_slices_of_the_whole_jump(shape, stages):
    """With a NoiseKey (origin in full-resolution coordinates) the jump of any piece of the
    state, cut along B, T, H or W on multiples of 2^(stages-1) in full-resolution
    coordinates, equals that slice of the jump of the whole state, bit for bit."""
    sch = PyramidSchedule(stages=stages)
    key = NoiseKey(123)
    f_full = 2 ** (stages - 1)
    for stage in range(1, stages):
        x = torch.randn(sch.level_shape(shape, stage - 1), generator=torch.Generator()
                        .manual_seed(stage))
        whole = sch.jump(x, stage, generator=key)
        assert whole.shape == sch.level_shape(shape, stage)
        for axis in range(x.dim()):
            if axis == 1:
                continue
            spatial = axis >= x.dim() - 2
            step = f_full if spatial else 1  # full-resolution coordinates
            cut = max(step, (shape[axis] // 2) // step * step)
            for lo, hi in ((0, cut), (cut, shape[axis])):
                origin = [0] * len(shape)
                origin[axis] = lo
                f_in = 2 ** (stages - stage) if spatial else 1  # full -> level stage-1
                f_out = 2 ** (stages - 1 - stage) if spatial else 1  # full -> level stage
                piece = sch.jump(_cut(x, axis, lo // f_in, hi // f_in), stage,
                                 generator=key.at(origin))
                assert torch.equal(piece, _cut(whole, axis, lo // f_out, hi // f_out)), (
                    stage, axis, lo)


def test_keyed_jump_is_the_documented_block_noise():
    """η = block_noise(up.shape, generator=key.derive("jump", stage).at(level origin)), the
    level origin being the full-resolution one with H, W divided by 2^(stages-1-stage)."""
    sch = PyramidSchedule(stages=3)
    x = torch.randn(2, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    key = NoiseKey(7, (1, 0, 8, 16))
    a, b = sch.renoise_coefficients(1)
    eta = block_noise((2, 3, 8, 12), generator=NoiseKey(7).derive("jump", 1).at((1, 0, 4, 8)))
    want = torch.add(_upsample_nearest(x) * a, eta, alpha=b)
    assert torch.equal(sch.jump(x, 1, generator=key), want)
    # stages draw independent noise; the same key gives the same jump
    y2 = sch.jump(_upsample_nearest(x), 2, generator=NoiseKey(7))
    eta2 = (y2 - sch.renoise_coefficients(2)[0] * _upsample_nearest(_upsample_nearest(x)))
    assert not torch.allclose(eta2[..., :8, :12] / sch.renoise_coefficients(2)[1], eta,
                              atol=0.1)
    assert torch.equal(sch.jump(x, 1, generator=key), sch.jump(x, 1, generator=key))


def test_keyed_jump_misaligned_origin_is_named():
    sch = PyramidSchedule(stages=3)
    x = torch.randn(1, 1, 4, 4)
    # into stage 1 the full-resolution H, W origins must be multiples of 4, into stage 2 of 2
    with pytest.raises(ValueError, match=r"origin \(0, 0, 2, 0\).*multiples of 4"):
        sch.jump(x, 1, generator=NoiseKey(1, (0, 0, 2, 0)))
    with pytest.raises(ValueError, match=r"origin.*multiples of 2"):
        sch.jump(torch.randn(1, 1, 8, 8), 2, generator=NoiseKey(1, (0, 0, 0, 3)))
    assert sch.jump(torch.randn(1, 1, 8, 8), 2, generator=NoiseKey(1, (5, 0, 2, 6))).shape == (
        1, 1, 16, 16)
    with pytest.raises(ValueError, match="origin.*one entry per dim"):
        sch.jump(x, 1, generator=NoiseKey(1, (0, 0, 0)))


@pytest.mark.parametrize("shape", [(6, 2, 16, 8), (3, 2, 2, 8, 16)])
def test_keyed_training_inputs_shards_are_slices(shape, fused):
    """Training inputs from a NoiseKey: a batch cut at a multiple of sum(stage_shares), or
    cut along H or W at a multiple of 2^(stages-1), gives the whole batch's StageBatches
    restricted to its samples / pixels, bit for bit."""
    sch = PyramidSchedule(stages=3) if len(shape) == 4 else PyramidSchedule(stages=2)
    shares = (1, 1, 1) if sch.stages == 3 else (2, 1)
    S, f = sum(shares), 2 ** (sch.stages - 1)
    lat = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    key = NoiseKey(99)
    whole = sch.training_inputs(lat, generator=key, stage_shares=shares)
    for axis, cut in ((0, S), (lat.dim() - 2, f), (lat.dim() - 1, shape[-1] - f)):
        for lo, hi in ((0, cut), (cut, shape[axis])):
            origin = [0] * lat.dim()
            origin[axis] = lo
            part = sch.training_inputs(_cut(lat, axis, lo, hi), generator=key.at(origin),
                                       stage_shares=shares)
            for k, (p, w) in enumerate(zip(part, whole)):
                if axis == 0:
                    sel = (w.indices >= lo) & (w.indices < hi)
                    assert torch.equal(p.indices + lo, w.indices[sel])
                    for name in ("noisy", "target", "ratio", "timestep", "sigma"):
                        assert torch.equal(getattr(p, name), getattr(w, name)[sel]), name
                else:
                    s = 2 ** (sch.stages - 1 - k)
                    assert torch.equal(p.indices, w.indices)
                    assert torch.equal(p.ratio, w.ratio)
                    for name in ("noisy", "target"):
                        assert torch.equal(getattr(p, name),
                                           _cut(getattr(w, name), axis, lo // s, hi // s))
    # the noise is key.randn(latents.shape); sample b's u comes from its own generator
    # seeded with key.derive("u", b).seed (the default sampler draws u ~ U[0, 1) from it)
    seeded = [torch.Generator().manual_seed(key.derive("u", b).seed) for b in range(shape[0])]
    same = sch.training_inputs(lat, noise=key.randn(shape), generator=seeded,
                               stage_shares=shares)
    for w, s in zip(whole, same):
        assert torch.equal(w.noisy, s.noisy) and torch.equal(w.ratio, s.ratio)


def test_keyed_training_inputs_bad_origin():
    sch = PyramidSchedule()
    lat = torch.randn(8, 1, 16, 16)
    with pytest.raises(ValueError, match=r"origin.*batch origin must be a multiple of .* = 4"):
        sch.training_inputs(lat, generator=NoiseKey(1, (2, 0, 0, 0)))
    with pytest.raises(ValueError, match=r"origin.*H and W origins.*multiples of 4"):
        sch.training_inputs(lat, generator=NoiseKey(1, (0, 0, 2, 0)))
    with pytest.raises(ValueError, match=r"origin.*one entry per dim"):
        sch.training_inputs(lat, generator=NoiseKey(1, (0, 0)))
    # B = 0 with a key: empty stages
    assert all(b.noisy.shape[0] == 0 for b in
               sch.training_inputs(torch.randn(0, 1, 16, 16), generator=NoiseKey(1)))
