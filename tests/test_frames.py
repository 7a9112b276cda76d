"""Per-frame sampler and schedules (vidnoise.frames), each checked against an independent
value: sample_flow, diffusers' SkyReels code, a brute-force formula, the exact Gaussian
oracle (covariances computed exactly through the sampler's linear map, no sampling)."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vidnoise.frames import (
    WindowSchedule,
    check_sigma_matrix,
    chunk_schedule,
    diffusion_forcing_matrix,
    fifo_schedule,
    frame_sigmas,
    frame_training_sample,
    history_guidance,
    level_sigmas,
    rolling_schedule,
    sample_frames,
    skyreels_matrix,
    stream_frames,
)
from vidnoise.oracles.frames import FrameGaussian, ar_frame_cov
from vidnoise.samplers import sample_flow


def lin(n):
    return [1.0 - i / n for i in range(n)] + [0.0]


def smooth_model(layout="BCTHW"):
    ax = 2 if layout == "BCTHW" else 1

    def m(x, s):
        shape = [s.shape[0], 1, 1, 1, 1]
        shape[ax] = s.shape[1]
        return 0.3 * x + s.reshape(shape).to(x.dtype) * torch.sin(x)

    return m


# ----------------------------------------------------------------------------- sampler
@pytest.mark.parametrize("layout", ["BCTHW", "BTCHW"])
@pytest.mark.parametrize("solver,last_step", [("euler", None), ("heun", None),
                                              ("heun", "corrected"), ("heun", "euler")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equal_columns_match_sample_flow(layout, solver, last_step, dtype):
    """Identical columns are sample_flow, under its last-step policy too (default: the step
    into σ = 0 is corrected; last_step="euler": an Euler step)."""
    g = torch.Generator().manual_seed(0)
    shape = (3, 2, 5, 3, 4) if layout == "BCTHW" else (3, 5, 2, 3, 4)
    x = torch.randn(shape, generator=g, dtype=dtype)
    grid = lin(7)
    m = smooth_model(layout)
    ref = sample_flow(lambda x, s: 0.3 * x + s.reshape(-1, 1, 1, 1, 1).to(x.dtype) * x.sin(),
                      x, grid, solver=solver, last_step=last_step or "corrected")
    out = sample_frames(m, x, [[v] * 5 for v in grid], solver=solver, layout=layout,
                        last_step=last_step)
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_unchanged_frames_bitwise_and_seen(solver):
    x = torch.randn(2, 1, 4, 3, 3)
    x[0, 0, 1, 0, 0] = -0.0
    rows = [[1.0, 0.5, 1.0, 0.0], [0.5, 0.5, 0.6, 0.0], [0.0, 0.5, 0.0, 0.0]]
    seen = []

    def m(x, s):
        seen.append(s.clone())
        v = 0.5 * x
        bad = torch.zeros_like(x, dtype=torch.bool)
        bad[:, :, 1::2] = True  # frames 1 and 3 never change: NaN velocity there
        return torch.where(bad, torch.full_like(x, float("nan")), v)

    out = sample_frames(m, x, rows, solver=solver)
    for f in (1, 3):  # frames 1 (stays at 0.5) and 3 (clean context): bit for bit
        assert torch.equal(out[:, :, f].view(torch.int32), x[:, :, f].view(torch.int32))
    assert torch.isfinite(out).all()
    assert all(s.shape == (2, 4) for s in seen)
    assert torch.equal(seen[0][0], torch.tensor(rows[0]))


def test_step_without_change_calls_nothing():
    calls = []
    rows = [[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]]
    sample_frames(lambda x, s: calls.append(1) or x, torch.zeros(1, 1, 2, 1, 1), rows)
    assert len(calls) == 1


@pytest.mark.parametrize("last_step", [None, "euler"])
def test_heun_mixed_step_exact(last_step):
    """One Heun step by hand: frame 1 goes to 0.5 (trapezoid); frame 0 goes to 0: trapezoid
    too by default (v at σ = 0 is defined for flow), the Euler value with last_step="euler"."""
    x = torch.randn(1, 1, 2, 2, 2, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(4))
    m = smooth_model()
    rows = [[0.5, 1.0], [0.0, 0.5]]
    s0, s1 = torch.tensor([rows[0]], dtype=torch.float64), torch.tensor([rows[1]],
                                                                        dtype=torch.float64)
    h = torch.tensor([-0.5, -0.5], dtype=torch.float64).reshape(1, 1, 2, 1, 1)
    v = m(x, s0)
    xe = x + h * v
    v2 = m(xe, s1)
    trap = x + h * (v + v2) / 2
    want = torch.cat([xe[:, :, :1], trap[:, :, 1:]], dim=2) if last_step else trap
    torch.testing.assert_close(sample_frames(m, x, rows, solver="heun", last_step=last_step),
                               want, rtol=1e-14, atol=1e-14)


def test_meta_device_no_sync():
    """The loop runs on meta tensors: any .item()/host read of tensor values would raise."""
    x = torch.empty(2, 1, 6, 4, 4, device="meta")
    rows = level_sigmas(diffusion_forcing_matrix(6, 4), lin(4))
    out = sample_frames(lambda x, s: torch.empty_like(x), x, rows, solver="heun")
    assert out.device.type == "meta" and out.shape == x.shape
    out = sample_frames(lambda x, s: torch.empty_like(x), x, rows, edm=True)
    assert out.shape == x.shape
    grid = lin(4)  # history guidance with a per-step scale: the per-frame look-up on meta too
    hg = history_guidance(lambda x, s: torch.empty_like(x), [3.0, 2.0, 1.5, 1.0], 2,
                          sigmas=grid)
    assert sample_frames(hg, x, rows, solver="heun").device.type == "meta"


def test_grad_policy():
    x = torch.randn(1, 1, 3, 2, 2, requires_grad=True)
    rows = level_sigmas(diffusion_forcing_matrix(3, 2), lin(2))
    out = sample_frames(smooth_model(), x, rows)
    assert not out.requires_grad
    out = sample_frames(smooth_model(), x, rows, grad=True)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_half_precision_and_empty_batch():
    rows = level_sigmas(diffusion_forcing_matrix(3, 4), lin(4))
    x = torch.randn(2, 1, 3, 2, 2)
    ref = sample_frames(smooth_model(), x, rows, solver="heun")
    out = sample_frames(smooth_model(), x.to(torch.bfloat16), rows, solver="heun")
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)
    assert sample_frames(smooth_model(), x[:0], rows).shape == (0, 1, 3, 2, 2)


@pytest.mark.parametrize("order", [1, 2])
def test_edm_equal_columns_match_sample_edm(order):
    """edm=True with identical columns is EDM's deterministic sampler (sample_edm, no churn)."""
    from vidnoise.samplers import sample_edm

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 4, 2, 2, generator=g, dtype=torch.float64)
    grid = [80.0 * (0.002 / 80.0) ** (i / 9) for i in range(10)] + [0.0]

    def den(xe, se):  # a smooth denoiser
        return xe / (1 + se.reshape(se.shape[0], 1, -1, 1, 1) ** 2) + 0.1 * torch.tanh(xe)

    ref = sample_edm(lambda xe, se: den(xe, se.reshape(-1, 1).expand(-1, 4)), x, grid,
                     order=order, init="unit")
    out = sample_frames(den, x, [[v] * 4 for v in grid], edm=True,
                        solver="euler" if order == 1 else "heun")
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_callback_and_progress():
    seen = []
    rows = level_sigmas(diffusion_forcing_matrix(3, 2), lin(2))
    x = torch.randn(1, 1, 3, 1, 1)
    dens = []
    sample_frames(smooth_model(), x, rows,
                  callback=lambda d: seen.append((d["i"], d["sigma"], d["sigma_next"]))
                  or dens.append(d["denoised"]))
    s0 = torch.tensor([rows[0].tolist()])
    torch.testing.assert_close(dens[0], x - s0.reshape(1, 1, 3, 1, 1) * smooth_model()(x, s0))
    assert [i for i, _, _ in seen] == list(range(rows.shape[0] - 1))
    assert seen[0][1] == rows[0].tolist() and seen[-1][2] == rows[-1].tolist()


# ----------------------------------------------------------------------------- Gaussian proofs
def exact_out_cov(model: FrameGaussian, rows, solver):
    """Covariance of the sampler output for x at rows[0] drawn from the exact marginal:
    the sampler is linear for a linear model, so run it on a basis (batch = identity).
    ``solver`` "heun_euler_last" is Heun with last_step="euler"."""
    t, d = model.frames, model.d
    n = t * d
    basis = torch.eye(n, dtype=torch.float64)
    x = model.unflat(basis, basis)
    kw = dict(solver="heun", last_step="euler") if solver == "heun_euler_last" else dict(
        solver=solver)
    lmap = model.flat(sample_frames(model, x, rows, **kw))  # row j = L e_j
    l_ = lmap.T  # (n, n): out = L·in
    sq = torch.linalg.cholesky(model.noise_cov(rows[0]) + 1e-300 * torch.eye(n))
    ls = l_ @ sq
    return ls @ ls.T


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("layout", ["BCTHW", "BTCHW"])
def test_marginal_noise_cov_matches_monte_carlo(layout):
    """x = (1-σ_t) x0_t + σ_t ε_t at per-frame σ has covariance A C A + B² (oracle), checked
    by 200k samples: the entries' standard error is <= sqrt(2/N)·max var ≈ 0.0032·2; 5 SE."""
    cov = ar_frame_cov(3, 0.8, 0.36, 2)
    fg = FrameGaussian(cov, (2, 1, 1), layout)
    s = torch.tensor([0.0, 0.3, 0.9], dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    n = 200_000
    x0 = torch.randn(n, 6, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    eps = torch.randn(n, 6, generator=g, dtype=torch.float64)
    sr = s.repeat_interleave(2)
    x = (1 - sr) * x0 + sr * eps
    emp = x.T @ x / n
    assert (emp - fg.noise_cov(s)).abs().max() < 5 * math.sqrt(2 / n) * 2


def test_oracle_velocity_is_posterior():
    """v(x) = E[ε - x0 | x] checked against the generic Gaussian posterior (joint covariance
    of (x0, ε, x) solved directly), for a staggered σ with a clean frame."""
    cov = ar_frame_cov(3, 0.6, 1.0, 2)
    fg = FrameGaussian(cov, (2, 1, 1))
    s = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64).repeat_interleave(2)
    a, b = torch.diag(1 - s), torch.diag(s)
    sxx = a @ cov @ a + b @ b
    cross = b - cov @ a  # Cov(ε - x0, x)
    want = cross @ torch.linalg.pinv(sxx)
    torch.testing.assert_close(fg.matrix(s[::2]), want, rtol=1e-9, atol=1e-9)


def _df_rows(t, n):
    return level_sigmas(diffusion_forcing_matrix(t, n), lin(n))


def _slope(ns, errs):
    xs = [math.log(n) for n in ns]
    ys = [math.log(e) for e in errs]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / sum((a - mx) ** 2 for a in xs)


@pytest.mark.parametrize("kind", ["df", "df_half", "rolling", "chunk"])
def test_staggered_schedules_converge_euler_1_heun_2(kind):
    """Exact output covariance vs the data covariance: error ∝ 1/n (Euler), 1/n² (Heun)."""
    t = 4
    cov = ar_frame_cov(t, 0.8, 0.36, 2)
    fg = FrameGaussian(cov, (2, 1, 1))
    ns = [8, 16, 32, 64]

    def rows_for(n):
        if kind == "df":
            return _df_rows(t, n)
        if kind == "df_half":
            return level_sigmas(diffusion_forcing_matrix(t, n, uncertainty=0.5), lin(n))
        if kind == "rolling":
            return rolling_schedule(lin(n), 2).unroll(t).sigmas
        return chunk_schedule([1 - i / n for i in range(n)], 2, context=2).unroll(t).sigmas

    for solver, order in (("euler", 1), ("heun", 2), ("heun_euler_last", 2)):
        errs = [rel_err(exact_out_cov(fg, rows_for(n), solver), cov) for n in ns]
        slope = _slope(ns, errs)
        assert abs(slope + order) < 0.25, (solver, errs, slope)


# errors at 10/20/40 steps (stated in docs/frames.md): (max |var/var_AR - 1|, max |ρ1 - a|)
DF_AR_FIGURES = {
    "euler": [(0.2443, 0.00804), (0.1342, 0.00344), (0.0706, 0.00146)],
    "heun": [(0.008697, 0.00342), (0.001993, 0.000903), (0.000443, 0.000222)],
    "heun_euler_last": [(0.01949, 0.00546), (0.004606, 0.00130), (0.001083, 0.000311)],
}


@pytest.mark.parametrize("solver", ["euler", "heun", "heun_euler_last"])
def test_df_rollout_linear_gaussian_ar(solver):
    """Diffusion forcing (pyramid, u = 1) on T = 6 frames of the stationary AR(1)
    (a = 0.8, q = 0.36) with exact per-frame velocities: the generated frames' variance and
    lag-1 correlation, computed exactly through the sampler (no sampling), approach the AR's
    q/(1-a²) and a at the solver's order (error ratio 2 per doubling for Euler, 4 for Heun)
    and equal the stated figures (deterministic: 2% relative)."""
    from vidnoise.oracles import LinearGaussianAR

    ar = LinearGaussianAR(0.8, 0.36)
    t = 6
    fg = FrameGaussian(ar_frame_cov(t, ar.a, ar.q, 1), (1, 1, 1))
    errs = []
    for n in (10, 20, 40):
        out = exact_out_cov(fg, _df_rows(t, n), solver)
        var = out.diagonal()
        lag1 = torch.stack([out[i, i + 1] / (var[i] * var[i + 1]).sqrt() for i in range(t - 1)])
        errs.append((float((var / ar.stationary_var - 1).abs().max()),
                     float((lag1 - ar.a).abs().max())))
    for got, want in zip(errs, DF_AR_FIGURES[solver]):
        assert got == pytest.approx(want, rel=0.02)
    order = 1 if solver == "euler" else 2
    ratio = errs[1][0] / errs[2][0]
    assert 2**order * 0.85 < ratio < 2**order * 1.15


@pytest.mark.slow
def test_chunk_stream_on_ar_oracle_monte_carlo():
    """Chunk-wise stream (1 frame, 1 clean context frame) with the AR's own conditional
    velocity: 2000 samples x 6 frames; stationary var and lag-1 correlation within 5 SE of
    the AR's (SE of a variance ≈ var·sqrt(2/N), of a correlation ≈ (1-a²)/sqrt(N)), plus
    the Heun discretisation error at 40 steps (< 1e-3, from the exact test above)."""
    from vidnoise.oracles import LinearGaussianAR

    ar = LinearGaussianAR(0.8, 0.36)
    fg = FrameGaussian(ar_frame_cov(2, ar.a, ar.q, 1), (1, 1, 1))
    sch = chunk_schedule([1 - i / 40 for i in range(40)], 1, context=1)
    n = 2000
    frames = list(stream_frames(fg, sch, (1, 1, 1), num_frames=8, batch=n, solver="heun",
                                generator=torch.Generator().manual_seed(5),
                                dtype=torch.float64))
    x = torch.stack([f.reshape(n) for f in frames[2:]], 1)  # drop the warm-up frames
    var = x.var(0)
    lag = (x[:, 1:] * x[:, :-1]).mean(0) / var.mean()
    se_v = ar.stationary_var * math.sqrt(2 / n)
    se_r = (1 - ar.a**2) / math.sqrt(n)
    assert float((var - ar.stationary_var).abs().max()) < 5 * se_v + 1e-3
    assert float((lag - ar.a).abs().max()) < 5 * se_r + 1e-3


# ----------------------------------------------------------------------------- matrices
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 9), st.sampled_from([0, 1, 2, 3, 0.5, 0.25, 1.5]))
def test_df_matrix_formula(t, k, u):
    m = diffusion_forcing_matrix(t, k, uncertainty=u)
    rows = k + math.floor((t - 1) * u) + 1
    assert m.shape == (rows, t) and m.dtype == torch.int64
    for i in range(rows):
        for f in range(t):
            assert int(m[i, f]) == min(max(k + math.floor(f * u) - i, 0), k)
    grid = [1.0 - i / k for i in range(k)] + [0.0]
    assert torch.equal(diffusion_forcing_matrix(t, k, uncertainty=u, grid=grid),
                       level_sigmas(m, grid))


def test_level_sigmas():
    g = [1.0, 0.6, 0.2, 0.0]
    assert level_sigmas([[3, 0], [1, 2]], g).tolist() == [[1.0, 0.0], [0.2, 0.6]]
    with pytest.raises(ValueError, match="levels must be in"):
        level_sigmas([[4]], g)
    with pytest.raises(ValueError, match="levels must be in"):
        level_sigmas([[-1]], g)
    with pytest.raises(ValueError, match="grid must be strictly decreasing"):
        level_sigmas([[1]], [1.0, 0.6, 0.6, 0.0])
    with pytest.raises(ValueError, match="grid must contain finite"):
        level_sigmas([[1]], [float("inf"), 0.0])
    sky = skyreels_matrix(4, [1000, 500], 4, ar_step=1)
    with pytest.raises(ValueError, match="grid must be strictly decreasing"):
        sky.sigmas([1.0, 0.0, 0.5])
    with pytest.raises(ValueError, match="num_steps \\+ 1 = 3 values, got 4"):
        sky.sigmas([1.0, 0.5, 0.2, 0.0])


def _diffusers_fn():
    from diffusers import SkyReelsV2DiffusionForcingPipeline

    return SkyReelsV2DiffusionForcingPipeline.generate_timestep_matrix


SKY_GRID = [
    (t, base, ar, pre, cbs)
    for t, base in ((25, 25), (30, 20), (40, 15), (12, 12), (8, 4))
    for ar in (0, 1, 5, 11)
    for pre in (0, 3, 5)
    for cbs in (1, 5, 4)
    if t % cbs == 0 and base % cbs == 0 and pre < t
]


@pytest.mark.parametrize("t,base,ar,pre,cbs", SKY_GRID)
def test_skyreels_equals_diffusers(t, base, ar, pre, cbs):
    fn = _diffusers_fn()
    tmpl = torch.tensor([1000, 875, 750, 625, 500, 375, 250, 125])
    try:
        want = fn(None, t, tmpl, base, ar, pre, cbs, False)
    except ValueError:
        with pytest.raises(ValueError, match="ar_step"):
            skyreels_matrix(t, tmpl, base, ar_step=ar, num_pre_ready=pre, causal_block_size=cbs)
        return
    got = skyreels_matrix(t, tmpl, base, ar_step=ar, num_pre_ready=pre, causal_block_size=cbs)
    assert torch.equal(got.step_matrix, want[0])
    assert torch.equal(got.step_index, want[1])
    assert torch.equal(got.update_mask, want[2])
    assert list(got.valid_interval) == [tuple(int(v) for v in w) for w in want[3]]


def _patched_diffusers_fn():
    """diffusers' own function with its one overwriting line fixed (see skyreels_matrix)."""
    import math as _m
    import textwrap

    src = textwrap.dedent(inspect.getsource(_diffusers_fn()))
    old = "update_mask = update_mask[0]\n"
    assert src.count(old) == 1
    src = src.replace(old, "first_mask = update_mask[0]\n")
    src = src.replace("idx_sequence[update_mask]", "idx_sequence[first_mask]")
    ns = {"torch": torch, "math": _m}
    exec(src, ns)
    return ns["generate_timestep_matrix"]


def test_skyreels_shrink_diffusers_bug_and_fix():
    fn = _diffusers_fn()
    tmpl = torch.tensor([1000, 750, 500, 250])
    with pytest.raises((TypeError, IndexError)):  # diffusers 0.42.1 fails inside itself
        fn(None, 25, tmpl, 25, 0, 0, 5, True)
    fixed = _patched_diffusers_fn()
    for args in [(25, 25, 0, 0, 5), (30, 20, 5, 0, 1), (40, 15, 2, 5, 5), (12, 8, 4, 0, 4)]:
        t, base, ar, pre, cbs = args
        want = fixed(None, t, tmpl, base, ar, pre, cbs, True)
        got = skyreels_matrix(t, tmpl, base, ar_step=ar, num_pre_ready=pre,
                              causal_block_size=cbs, shrink_interval_with_mask=True)
        assert torch.equal(got.step_matrix, want[0])
        assert torch.equal(got.update_mask, want[2])
        assert list(got.valid_interval) == [tuple(int(v) for v in w) for w in want[3]]


def test_skyreels_sigmas_and_windows_run():
    tmpl = [1000, 750, 500, 250]
    sch = skyreels_matrix(12, tmpl, 8, ar_step=2, causal_block_size=2)
    rows = sch.sigmas(lin(4))
    assert rows.shape == (sch.step_index.shape[0] + 1, 12)
    assert torch.equal(rows[0], torch.ones(12, dtype=torch.float64))
    assert torch.equal(rows[-1], torch.zeros(12, dtype=torch.float64))
    # a frame's level changes exactly where diffusers' mask says it is updated
    assert torch.equal(rows[1:] != rows[:-1], sch.update_mask)
    x = torch.randn(1, 1, 12, 2, 2)
    out = sample_frames(smooth_model(), x, rows, windows=sch.windows())
    assert torch.isfinite(out).all()


# ----------------------------------------------------------------------------- windows
def test_fifo_invariants_every_step():
    """Queue of S = 8 frames (2 partitions of 4): before every step the queue frames sit one
    level apart (head lowest, tail pure noise), every queue frame moves one level down, the
    head is clean after the step, frames behind the queue are clean and frames ahead pure
    noise, and each model call covers at most 4 queue frames."""
    n, t = 8, 12
    sch = fifo_schedule(lin(n), 4)
    plan = sch.unroll(t)
    m = plan.sigmas
    assert m.shape[0] - 1 == t + n - 1
    for i in range(m.shape[0] - 1):
        c = i - (n - 1)  # cycle: the head is frame c
        lo, hi = max(c, 0), min(c + n, t)
        for j in range(t):
            if j < lo:
                assert m[i, j] == 0 and m[i + 1, j] == 0
            elif j >= hi:
                assert m[i, j] == 1 and m[i + 1, j] == 1
            else:
                assert math.isclose(m[i, j], (j - c + 1) / n)  # diagonal
                assert math.isclose(m[i, j] - m[i + 1, j], 1 / n)  # one level down
        if c >= 0:
            assert m[i + 1, c] == 0  # the head is clean and leaves
        for a, b, ka, kb in plan.windows[i]:
            assert lo <= a <= ka < kb <= b <= hi and b - a <= 4
        kept = sorted(f for _, _, ka, kb in plan.windows[i] for f in range(ka, kb))
        assert kept == list(range(lo, hi))
    # partitions of 4 frames
    assert sch.calls == ((0, 4, 0, 4), (4, 8, 4, 8))
    la = fifo_schedule(lin(8), 4, lookahead=True)
    assert la.window == 10 and la.levels[0][:3] == (0.0, 0.0, 1 / 8)
    assert la.calls == ((0, 4, 2, 4), (2, 6, 4, 6), (4, 8, 6, 8), (6, 10, 8, 10))
    # unrolled: the same levels as the plain queue (plus f/2 idle steps at the end), and
    # every changing frame is denoised with f/2 frames in front of it once the queue is full
    pl = la.unroll(12)
    plain = fifo_schedule(lin(8), 4).unroll(12).sigmas
    assert torch.equal(pl.sigmas[: plain.shape[0]], plain)
    assert (pl.sigmas[plain.shape[0]:] == 0).all()
    for i in range(10, plain.shape[0] - 1):
        for a, _b, ka, _kb in pl.windows[i]:
            assert ka - a == 2 or a == 0


def test_fifo_stream_pushes_generator_noise():
    """Each new tail frame is the generator's next block: a model that returns 0 velocity
    leaves the noise as is, so the yielded frames are exactly the seeded draws."""
    sch = fifo_schedule(lin(4), 2)
    g = torch.Generator().manual_seed(9)
    out = list(stream_frames(lambda x, s: torch.zeros_like(x), sch, (1, 2, 2), num_frames=5,
                             batch=2, generator=g))
    g = torch.Generator().manual_seed(9)
    want = [torch.randn((2, 1, 1, 2, 2), generator=g)[:, :, 0] for _ in range(5)]
    assert len(out) == 5
    for a, b in zip(out, want):
        assert torch.equal(a, b)


@pytest.mark.parametrize("layout", ["BCTHW", "BTCHW"])
@pytest.mark.parametrize(
    "make",
    [lambda: fifo_schedule(lin(6), 3), lambda: fifo_schedule(lin(8), 4, lookahead=True),
     lambda: rolling_schedule(lin(6), 3), lambda: chunk_schedule([1.0, 0.75, 0.5, 0.25], 2,
                                                                 context=2, shift=5.0)],
)
def test_stream_equals_unrolled_and_batch_invariant(make, layout):
    sch = make()
    fs = (1, 2, 3)
    t = max(8, sch.window + 2)
    t += -t % sch.stride
    ax = 2 if layout == "BCTHW" else 1

    def fg(x, s):  # elementwise plus a causal sum over frames: batch-size independent
        return smooth_model(layout)(x, s) + 0.1 * torch.cumsum(x, ax)

    gens = [torch.Generator().manual_seed(40 + i) for i in range(4)]
    out4 = torch.stack(list(stream_frames(fg, sch, fs, num_frames=t, batch=4, layout=layout,
                                          generator=gens, solver="heun", dtype=torch.float64)),
                       1)
    for i in (0, 3):
        out1 = torch.stack(list(stream_frames(
            fg, sch, fs, num_frames=t, batch=1, layout=layout,
            generator=[torch.Generator().manual_seed(40 + i)], solver="heun",
            dtype=torch.float64)), 1)
        assert torch.equal(out1[0], out4[i])
    # the same noise through sample_frames on the unrolled plan
    gens = [torch.Generator().manual_seed(40 + i) for i in range(4)]
    s = sch.stride
    blocks = []
    from vidnoise.noise import randn

    for _ in range(t // s):
        shape = (4, 1, s, 2, 3) if layout == "BCTHW" else (4, s, 1, 2, 3)
        blocks.append(randn(shape, generator=gens, dtype=torch.float64))
    noise = torch.cat(blocks, ax)
    plan = sch.unroll(t)
    full = sample_frames(fg, noise, plan.sigmas, windows=plan.windows, solver="heun",
                         layout=layout)
    assert torch.equal(full.movedim(ax, 1), out4)


def test_chunk_schedule_shift_matches_self_forcing_warp():
    """Self-Forcing warps [1000, 750, 500, 250] through a shift-5 flow scheduler: σ = 5t/(1+4t)."""
    sch = chunk_schedule([1.0, 0.75, 0.5, 0.25], 3, shift=5.0)
    col = [r[0] for r in sch.levels]
    want = [5 * t / (1 + 4 * t) for t in (1.0, 0.75, 0.5, 0.25, 0.0)]
    assert col == pytest.approx(want, rel=1e-15)


# ----------------------------------------------------------------------------- guidance
def test_history_guidance_batched_equals_two_calls():
    seen = []

    def m(x, s):
        seen.append(s.clone())
        return x * 0.5 + s[:, None, :, None, None]

    x = torch.randn(2, 1, 4, 2, 2)
    s = torch.tensor([[0.0, 0.0, 0.7, 1.0]] * 2)
    hb = history_guidance(m, 3.0, 2, generator=torch.Generator().manual_seed(0))
    h2 = history_guidance(m, 3.0, 2, model_uncond=m, generator=torch.Generator().manual_seed(0))
    a, b = hb(x, s), h2(x, s)
    torch.testing.assert_close(a, b)
    # batched order [uncond; cond]; the uncond branch sees history at σ = 1
    assert torch.equal(seen[0][:2], torch.tensor([[1.0, 1.0, 0.7, 1.0]] * 2))
    assert torch.equal(seen[0][2:], s)
    # u + w (c - u) on the non-history frames (x identical there): c - u = σ difference 0
    torch.testing.assert_close(a[:, :, 2:], m(x, s)[:, :, 2:])


# ----------------------------------------------------------------------------- training
def test_frame_sigmas():
    from vidnoise.sigma_samplers import uniform

    g = [torch.Generator().manual_seed(i) for i in range(3)]
    s = frame_sigmas(3, 7, chunk=3, context=2, generator=g)
    assert s.shape == (3, 7) and s.dtype == torch.float32
    assert (s[:, :2] == 0).all()
    assert (s[:, 3:6] == s[:, 3:4]).all()
    for i in range(3):
        want = uniform(3, generator=torch.Generator().manual_seed(i))
        assert torch.equal(s[i, 2], want[0]) and torch.equal(s[i, 6], want[2])
    one = frame_sigmas(4, 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(one.reshape(-1), uniform(20, generator=torch.Generator().manual_seed(1)))


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs():
    x = torch.zeros(1, 1, 3, 2, 2)
    m = smooth_model()
    with pytest.raises(ValueError, match="non-increasing"):
        sample_frames(m, x, [[1.0, 0.5, 1.0], [0.0, 0.8, 0.0]])
    with pytest.raises(ValueError, match="3 frames, got a matrix with 2 columns"):
        sample_frames(m, x, [[1.0, 1.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match=r"\[0, 1.0\]"):
        sample_frames(m, x, [[1.5, 1.0, 1.0], [0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="at least 2 rows"):
        check_sigma_matrix("sigmas", [[1.0]])
    with pytest.raises(ValueError, match="layout"):
        sample_frames(m, x, [[1.0] * 3, [0.0] * 3], layout="BTHWC")
    with pytest.raises(ValueError, match="solver"):
        sample_frames(m, x, [[1.0] * 3, [0.0] * 3], solver="rk4")
    with pytest.raises(ValueError, match="noise must have 5 dims"):
        sample_frames(m, x[0], [[1.0] * 3, [0.0] * 3])
    with pytest.raises(TypeError, match="grad"):
        sample_frames(m, x, [[1.0] * 3, [0.0] * 3], grad=1)
    with pytest.raises(ValueError, match="leaves out frame 2"):
        sample_frames(m, x, [[1.0] * 3, [0.0] * 3], windows=[(0, 2)])
    with pytest.raises(ValueError, match="model must return"):
        sample_frames(lambda x, s: x[:, :, :2], x, [[1.0] * 3, [0.0] * 3])
    with pytest.raises(ValueError, match="levels must be >= 1"):
        diffusion_forcing_matrix(3, 0)
    with pytest.raises(ValueError, match="uncertainty"):
        diffusion_forcing_matrix(3, 2, uncertainty=-1)
    with pytest.raises(ValueError, match="multiples of causal_block_size"):
        skyreels_matrix(7, [1000, 500], 5, causal_block_size=5)
    with pytest.raises(ValueError, match="num_pre_ready"):
        skyreels_matrix(5, [1000, 500], 5, num_pre_ready=5)
    with pytest.raises(ValueError, match="window"):
        rolling_schedule(lin(6), 4)
    with pytest.raises(ValueError, match="frames_per_call"):
        fifo_schedule(lin(6), 4)
    with pytest.raises(ValueError, match="multiple of stride"):
        chunk_schedule([1.0, 0.5], 2).unroll(5)
    with pytest.raises(ValueError, match="missing \\[1\\]"):
        WindowSchedule(((0.5, 1.0), (0.0, 0.5)), 1, ((0, 1, 0, 1),))
    with pytest.raises(ValueError, match="calls must be"):
        WindowSchedule(((0.5, 1.0), (0.0, 0.5)), 1, ((0, 3, 0, 3),))
    with pytest.raises(ValueError, match="moves up one block"):
        WindowSchedule(((0.5, 1.0), (0.0, 0.7)), 1, ((0, 2, 0, 2),))
    with pytest.raises(ValueError, match="num_frames must be a multiple of stride"):
        stream_frames(m, chunk_schedule([1.0], 2), (1, 1, 1), num_frames=3)
    with pytest.raises(ValueError, match="history"):
        history_guidance(m, 2.0, 5)(x, torch.zeros(1, 3))


@pytest.mark.parametrize("t,k,f", [(12, 8, 4), (5, 6, 3), (1, 4, 2), (9, 4, 1)])
def test_fifo_unrolled_is_df_pyramid(t, k, f):
    """FIFO from pure noise is Diffusion Forcing's u = 1 matrix (both from their formulas)."""
    plan = fifo_schedule(lin(k), f).unroll(t)
    assert torch.equal(plan.sigmas, diffusion_forcing_matrix(t, k, grid=lin(k)))


def _naive(model, x, rows, solver, ax, euler_last=False):
    """Brute-force per-frame Euler / Heun, frame by frame in Python (float64); with
    ``euler_last`` Heun takes the Euler value for frames reaching 0."""
    x = x.clone()
    t = x.shape[ax]
    for i in range(len(rows) - 1):
        cur, nxt = rows[i], rows[i + 1]
        if cur == nxt:
            continue
        s0 = torch.tensor([cur] * x.shape[0], dtype=x.dtype)
        v = model(x, s0)
        xe = x.clone()
        for f in range(t):
            if nxt[f] != cur[f]:
                xe.select(ax, f).add_((nxt[f] - cur[f]) * v.select(ax, f))
        if solver == "euler" or all((euler_last and nxt[f] == 0) or nxt[f] == cur[f]
                                    for f in range(t)):
            x = xe
            continue
        v2 = model(xe, torch.tensor([nxt] * x.shape[0], dtype=x.dtype))
        new = x.clone()
        for f in range(t):
            if nxt[f] == cur[f]:
                continue
            if euler_last and nxt[f] == 0:
                new.select(ax, f).copy_(xe.select(ax, f))
            else:
                new.select(ax, f).add_((nxt[f] - cur[f]) / 2 * (v.select(ax, f)
                                                                + v2.select(ax, f)))
        x = new
    return x


@st.composite
def monotone_matrices(draw):
    t = draw(st.integers(1, 5))
    s = draw(st.integers(1, 6))
    levels = [0.0, 0.25, 0.5, 0.75, 1.0]
    cols = []
    for _ in range(t):
        col = sorted((draw(st.sampled_from(levels)) for _ in range(s + 1)), reverse=True)
        cols.append(col)
    return [[cols[f][i] for f in range(t)] for i in range(s + 1)]


@settings(max_examples=60, deadline=None)
@given(monotone_matrices(), st.sampled_from(["euler", "heun"]),
       st.sampled_from(["BCTHW", "BTCHW"]), st.sampled_from([None, "euler"]))
def test_sampler_equals_naive_per_frame_loop(rows, solver, layout, last_step):
    t = len(rows[0])
    ax = 2 if layout == "BCTHW" else 1
    shape = (2, 1, t, 2, 1) if layout == "BCTHW" else (2, t, 1, 2, 1)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(t), dtype=torch.float64)

    def model(x, s):
        return smooth_model(layout)(x, s) + 0.1 * torch.cumsum(x, ax)

    want = _naive(model, x, rows, solver, ax, euler_last=last_step == "euler")
    got = sample_frames(model, x, rows, solver=solver, layout=layout, last_step=last_step)
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)
    for f in range(t):  # frames that never change: bit for bit
        if rows[0][f] == rows[-1][f]:
            assert torch.equal(got.select(ax, f), x.select(ax, f))


def test_stream_edge_cases():
    sch = chunk_schedule([1.0, 0.5], 1, context=1)
    out = list(stream_frames(smooth_model(), sch, (1, 2, 2), num_frames=2, batch=0))
    assert len(out) == 2 and out[0].shape == (0, 1, 2, 2)
    gen = stream_frames(smooth_model(), sch, (1, 2, 2), batch=2,
                        generator=torch.Generator().manual_seed(0))
    frames = [next(gen) for _ in range(7)]  # unbounded: take as many as wanted
    assert all(torch.isfinite(f).all() for f in frames)
    with pytest.raises(ValueError, match="larger than the stream"):
        stream_frames(smooth_model(), fifo_schedule(lin(8), 4), (1, 1, 1), num_frames=6)
    with pytest.raises(TypeError, match="WindowSchedule"):
        stream_frames(smooth_model(), lin(3), (1, 1, 1))


@pytest.mark.parametrize("layout", ["BCTHW", "BTCHW"])
def test_history_guidance_formula(layout):
    """guided = u + w (c - u), u = model on (history → fresh noise, σ → σ_max), checked with
    the same noise drawn here; a bool mask equals the leading-count form."""
    ax = 2 if layout == "BCTHW" else 1
    shape = (2, 1, 4, 2, 2) if layout == "BCTHW" else (2, 4, 1, 2, 2)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    s = torch.tensor([[0.0, 0.0, 0.4, 0.9], [0.0, 0.0, 0.2, 1.0]])
    m = smooth_model(layout)
    out = history_guidance(m, 2.5, 2, layout=layout, sigma_max=1.0,
                           generator=torch.Generator().manual_seed(7))(x, s)
    eps = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    xu = x.clone()
    xu.narrow(ax, 0, 2).copy_(eps.narrow(ax, 0, 2))
    su = s.clone()
    su[:, :2] = 1.0
    c, u = m(x, s), m(xu, su)
    torch.testing.assert_close(out, u + 2.5 * (c - u))
    mask = torch.tensor([True, True, False, False])
    out2 = history_guidance(m, 2.5, mask, layout=layout,
                            generator=torch.Generator().manual_seed(7))(x, s)
    torch.testing.assert_close(out2, out)


@pytest.mark.parametrize("layout", ["BCTHW", "BTCHW"])
def test_flowpath_per_frame_marginal_exact(layout):
    """FlowPath.add_noise with per-frame σ (B, T) is linear in (x0, ε): its two matrices,
    read off a basis, give the exact marginal covariance A C Aᵀ + B Bᵀ, which must equal the
    oracle's per-frame marginal to 1e-12 (C: AR(1) correlation across 3 frames, 2 values
    each)."""
    from vidnoise.paths import FlowPath

    cov = ar_frame_cov(3, 0.8, 0.36, 2)
    fg = FrameGaussian(cov, (2, 1, 1), layout)
    s = torch.tensor([0.0, 0.3, 0.9], dtype=torch.float64)
    basis = torch.eye(6, dtype=torch.float64)
    xb = fg.unflat(basis, basis)
    zero = torch.zeros_like(xb)
    sig = s[None].expand(6, 3)
    path = FlowPath()
    a_cols = path.add_noise(xb, zero, sig, layout=layout)
    b_cols = path.add_noise(zero, xb, sig, layout=layout)
    a_m, b_m = fg.flat(a_cols).T, fg.flat(b_cols).T
    got = a_m @ cov @ a_m.T + b_m @ b_m.T
    torch.testing.assert_close(got, fg.noise_cov(s), rtol=1e-12, atol=1e-12)


def test_stream_half_precision_and_windows_half():
    """bf16 frames through FIFO partitions (windowed calls): the model sees bf16, updates are
    float32; close to the float32 run (bf16 rounding of the state each step: 3e-2)."""
    sch = fifo_schedule(lin(8), 4, lookahead=True)
    seen = []

    def m(x, s):
        seen.append((x.dtype, s.dtype))
        return smooth_model()(x.float(), s).to(x.dtype)

    kw = dict(num_frames=10, batch=2, solver="heun")
    lo = list(stream_frames(m, sch, (1, 2, 2), generator=torch.Generator().manual_seed(3),
                            dtype=torch.bfloat16, **kw))
    hi = list(stream_frames(m, sch, (1, 2, 2), generator=torch.Generator().manual_seed(3),
                            dtype=torch.float32, **kw))
    assert lo[0].dtype == torch.bfloat16
    assert (torch.bfloat16, torch.float32) in seen
    for a, b in zip(lo, hi):
        torch.testing.assert_close(a.float(), b, rtol=3e-2, atol=3e-2)
    # the state stays float32 between cycles: equal to one sample_frames run on bf16 noise
    from vidnoise.noise import randn

    g = torch.Generator().manual_seed(3)
    noise = torch.cat([randn((2, 1, 1, 2, 2), generator=g, dtype=torch.bfloat16)
                       for _ in range(10)], 2)
    plan = sch.unroll(10)
    full = sample_frames(m, noise, plan.sigmas, windows=plan.windows, solver="heun")
    assert torch.equal(torch.stack(lo, 2), full)


# ----------------------------------------------------------------------------- sampler policy
def test_edm_last_step_rule():
    """EDM keeps the Euler value at σ = 0 (as sample_edm); 'corrected' is refused with why."""
    x = torch.randn(1, 1, 2, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    rows = [[2.0, 1.0], [0.0, 0.5]]

    def den(xe, se):
        return 0.5 * xe

    ref = sample_frames(den, x, rows, edm=True, solver="heun")
    assert torch.equal(sample_frames(den, x, rows, edm=True, solver="heun", last_step="euler"),
                       ref)
    with pytest.raises(ValueError, match="last_step='corrected' needs the velocity at σ = 0"):
        sample_frames(den, x, rows, edm=True, solver="heun", last_step="corrected")
    with pytest.raises(ValueError, match="last_step"):
        sample_frames(den, x, rows, solver="heun", last_step="trapezoid")
    with pytest.raises(ValueError, match="last_step"):
        stream_frames(den, fifo_schedule(lin(4), 2), (1, 1, 1), edm=True,
                      last_step="corrected")


def test_model_output_errors_name_the_fix():
    """A tuple (diffusers return_dict) names return_dict=False; an output on another device
    (meta here) raises instead of silently leaving the state; both for windowed calls too."""
    x = torch.randn(1, 1, 3, 2, 2)
    rows = [[1.0] * 3, [0.0] * 3]
    with pytest.raises(TypeError, match="return_dict=False"):
        sample_frames(lambda x, s: (x,), x, rows)
    with pytest.raises(TypeError, match="return_dict=False"):
        sample_frames(lambda x, s: (x,), x, rows, windows=[((0, 2, 0, 2), (2, 3, 2, 3))])
    with pytest.raises(ValueError, match="device"):
        sample_frames(lambda x, s: torch.empty_like(x, device="meta"), x, rows)
    with pytest.raises(ValueError, match="device"):
        sample_frames(lambda x, s: torch.empty_like(x, device="meta"), x, rows, windows=[(0, 3)])
    with pytest.raises(TypeError, match="return_dict=False"):
        next(stream_frames(lambda x, s: (x,), fifo_schedule(lin(4), 2), (1, 1, 1)))
    # another dtype is cast to the working dtype (a float64 model never makes x float64)
    out = sample_frames(lambda x, s: x.double(), x, rows)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.zeros_like(x))


def test_timestep_scale_matrix_hint():
    """A flow matrix on the 0..1000 timestep scale points at timestep_to_sigma."""
    x = torch.zeros(1, 1, 2, 1, 1)
    with pytest.raises(ValueError, match="timestep_to_sigma"):
        sample_frames(smooth_model(), x, [[1000.0, 750.0], [500.0, 0.0]])
    with pytest.raises(ValueError, match="edm=True") as err:
        sample_frames(smooth_model(), x, [[2000.0, 1.0], [0.0, 0.0]])
    assert "timestep_to_sigma" not in str(err.value)
    with pytest.raises(ValueError, match="must contain finite") as err:
        sample_frames(smooth_model(), x, [[-1.0, 1.0], [-2.0, 0.0]])
    assert "timestep" not in str(err.value) and "edm" not in str(err.value)
    sch = skyreels_matrix(4, [1000, 500], 4, ar_step=1)
    with pytest.raises(ValueError, match="timestep_to_sigma"):  # the template passed as grid
        sample_frames(smooth_model(), torch.zeros(1, 1, 4, 1, 1), sch.sigmas([1000, 500, 0]))
    # EDM σ has no upper bound: no hint, no error
    sample_frames(lambda x, s: x, x, [[80.0, 2.0], [0.0, 0.0]], edm=True)


def test_stream_checks_arguments_eagerly():
    """Bad solver / grad / dtype raise when the stream is made (the old code ran an unknown
    solver as Euler without a word)."""
    sch = fifo_schedule(lin(4), 2)
    with pytest.raises(ValueError, match="solver"):
        stream_frames(smooth_model(), sch, (1, 1, 1), solver="rk4")
    with pytest.raises(TypeError, match="grad"):
        stream_frames(smooth_model(), sch, (1, 1, 1), grad=1)
    with pytest.raises(ValueError, match="dtype"):
        stream_frames(smooth_model(), sch, (1, 1, 1), dtype=torch.int64)
    with pytest.raises(TypeError, match="edm"):
        stream_frames(smooth_model(), sch, (1, 1, 1), edm="yes")


@pytest.mark.parametrize("stream", [False, True])
def test_grad_policy_default_no_graph(stream):
    """grad=False (default): no graph even for a model with trainable weights; grad=True:
    gradients reach the weight (sample_frames and stream_frames alike)."""
    w = torch.tensor(0.3, requires_grad=True)

    def m(x, s):
        return w * x

    if stream:
        def run(**kw):
            return torch.stack(list(stream_frames(m, fifo_schedule(lin(4), 2), (1, 2, 2),
                                                  num_frames=4, solver="heun",
                                                  generator=torch.Generator().manual_seed(0),
                                                  **kw)))
    else:
        def run(**kw):
            return sample_frames(m, torch.randn(1, 1, 3, 2, 2), _df_rows(3, 4), solver="heun",
                                 **kw)
    assert not run().requires_grad
    run(grad=True).square().sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad) and float(w.grad) != 0.0


# ----------------------------------------------------------------------------- guidance scales
def _hg_model(layout="BCTHW"):
    m = smooth_model(layout)
    return lambda x, s: m(x, s) + 0.2 * s.sum(1).reshape(-1, 1, 1, 1, 1).to(x.dtype)


@pytest.mark.parametrize("kind", ["list", "tensor", "callable", "dynamic"])
def test_history_guidance_scales_like_cfg(kind):
    """Any scale cfg takes (per-step list, 1-D tensor, callable, dynamic_cfg) is parsed by
    scale_plan; with identical columns (no history frames) history guidance is cfg exactly:
    sample_frames with it equals sample_flow with cfg (model_uncond sees the same input)."""
    from vidnoise.samplers import cfg, dynamic_cfg

    grid = lin(6)
    scale = {"list": [4.0, 3.0, 2.5, 2.0, 1.5, 1.0],
             "tensor": torch.tensor([4.0, 3.0, 2.5, 2.0, 1.5, 1.0]),
             "callable": lambda k, i, n: 1.0 + (n - i) / n,
             "dynamic": dynamic_cfg(4.0)}[kind]
    x = torch.randn(2, 1, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    base = _hg_model()

    def cond(x, s):
        return base(x, s)

    def uncond(x, s):
        return 0.7 * base(x, s)

    hg = history_guidance(cond, scale, 0, model_uncond=uncond, sigmas=grid)
    got = sample_frames(hg, x, [[v] * 3 for v in grid], solver="heun")
    g = cfg(lambda x, s: cond(x, s.reshape(-1, 1).expand(-1, 3)),
            lambda x, s: uncond(x, s.reshape(-1, 1).expand(-1, 3)), scale, sigmas=grid)
    want = sample_flow(g, x, grid, solver="heun")
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("layout", ["BCTHW", "BTCHW"])
def test_history_guidance_per_frame_scale(layout):
    """Staggered levels: frame f is guided with w_i of the first grid step i with σ_i <= σ_f
    (built here frame by frame in Python), in both the batched and the two-model form."""
    ax = 2 if layout == "BCTHW" else 1
    shape = (2, 1, 4, 2, 2) if layout == "BCTHW" else (2, 4, 1, 2, 2)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grid = [1.0, 0.75, 0.5, 0.25, 0.0]
    ws = [5.0, 4.0, 3.0, 2.0]
    s = torch.tensor([[0.0, 0.25, 0.5 + 1e-9, 1.0], [0.0, 0.3, 0.75, 0.1]], dtype=torch.float64)
    m = smooth_model(layout)
    out = history_guidance(m, ws, 1, layout=layout, sigmas=grid,
                           generator=torch.Generator().manual_seed(7))(x, s)
    out2 = history_guidance(m, ws, 1, layout=layout, sigmas=grid, model_uncond=m,
                            generator=torch.Generator().manual_seed(7))(x, s)
    eps = torch.randn(shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    xu = x.clone()
    xu.narrow(ax, 0, 1).copy_(eps.narrow(ax, 0, 1))
    su = s.clone()
    su[:, 0] = 1.0
    c, u = m(x, s), m(xu, su)

    def w_of(v):  # first i with grid[i] <= v (1e-6 relative), clamped to the last step
        i = next((j for j in range(4) if grid[j] <= v * (1 + 1e-6)), 3)
        return ws[min(i, 3)]

    want = torch.empty_like(x)
    for b in range(2):
        for f in range(4):
            w = w_of(float(s[b, f]))
            want[b].select(ax - 1, f).copy_((u + w * (c - u))[b].select(ax - 1, f))
    torch.testing.assert_close(out, want, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(out2, want, rtol=1e-14, atol=1e-14)


def test_history_guidance_bad_inputs():
    m = smooth_model()
    x = torch.randn(1, 1, 3, 1, 1)
    with pytest.raises(ValueError, match="sigmas is required"):
        history_guidance(m, [2.0, 1.0], 1)
    with pytest.raises(ValueError, match="one value per step"):
        history_guidance(m, [2.0, 1.0], 1, sigmas=lin(3))
    with pytest.raises(TypeError, match="scale must be"):
        history_guidance(m, "strong", 1)
    with pytest.raises(ValueError, match="scale must be a finite"):
        history_guidance(m, float("nan"), 1)
    with pytest.raises(ValueError, match=r"sigma must be a \(B, T\)"):
        history_guidance(m, 2.0, 1)(x, torch.zeros(1))
    with pytest.raises(TypeError, match="return_dict=False"):
        history_guidance(lambda x, s: (x,), 2.0, 1)(x, torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"batched: \[uncond; cond\]\) must return .* \(2, 1, 3"):
        history_guidance(lambda x, s: x[:1], 2.0, 1)(x, torch.zeros(1, 3))
    with pytest.raises(ValueError, match="device"):
        history_guidance(m, 2.0, 1, model_uncond=lambda x, s: torch.empty_like(x, device="meta"))(
            x, torch.zeros(1, 3))


# ----------------------------------------------------------------------------- training input
@pytest.mark.parametrize("layout", ["BCTHW", "BTCHW"])
def test_frame_training_sample_flow(layout):
    """The levels are frame_sigmas' and the sample is FlowPath's at them: x = (1-σ_f) x0_f +
    σ_f ε_f per frame (written out here), target ε - x0; context frames are x0 bit for bit;
    with per-sample generators, sample i equals a batch-1 run with generator i."""
    from vidnoise.paths import FlowPath

    ax = 2 if layout == "BCTHW" else 1
    shape = (3, 2, 5, 2, 2) if layout == "BCTHW" else (3, 5, 2, 2, 2)
    x0 = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    gens = [torch.Generator().manual_seed(20 + i) for i in range(3)]
    ps = frame_training_sample(FlowPath(), x0, chunk=2, context=1, layout=layout,
                               generator=gens)
    lv = frame_sigmas(3, 5, chunk=2, context=1,
                      generator=[torch.Generator().manual_seed(20 + i) for i in range(3)])
    assert torch.equal(ps.sigma, lv)
    view = [3, 1, 1, 1, 1]
    view[ax] = 5
    sv = lv.reshape(view)
    torch.testing.assert_close(ps.x, (1 - sv) * x0 + sv * ps.noise, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ps.target, ps.noise - x0)
    assert torch.equal(ps.x.narrow(ax, 0, 1), x0.narrow(ax, 0, 1))
    one = frame_training_sample(FlowPath(), x0[2:], chunk=2, context=1, layout=layout,
                                generator=[torch.Generator().manual_seed(22)])
    assert torch.equal(one.x[0], ps.x[2]) and torch.equal(one.sigma[0], ps.sigma[2])


def test_frame_training_sample_edm_and_bad_path():
    from vidnoise.paths import EDMPath, VPPath
    from vidnoise.sigma_samplers import lognormal

    x0 = torch.randn(2, 1, 3, 2, 2, generator=torch.Generator().manual_seed(3))
    ps = frame_training_sample(EDMPath(), x0, lognormal, generator=torch.Generator()
                               .manual_seed(4))
    assert ps.sigma.shape == (2, 3) and bool((ps.sigma > 0).all())
    torch.testing.assert_close(ps.x, x0 + ps.sigma.reshape(2, 1, 3, 1, 1) * ps.noise)
    assert torch.equal(ps.target, x0)
    with pytest.raises(TypeError, match="FlowPath or an EDMPath"):
        frame_training_sample(VPPath(), x0)
    with pytest.raises(ValueError, match="x0 must have 5 dims"):
        frame_training_sample(EDMPath(), x0[0])


def test_history_guidance_half_precision_and_empty_batch():
    """bf16 input: the scale is applied in float32 (combine) and the result is bf16, close to
    the float32 result (bf16 rounding of inputs and output: 2e-2); B = 0 runs."""
    grid = lin(4)
    x = torch.randn(2, 1, 3, 2, 2, generator=torch.Generator().manual_seed(3))
    s = torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.25, 0.75]])
    m = smooth_model()
    hg = history_guidance(m, [3.0, 2.0, 1.5, 1.0], 1, sigmas=grid,
                          generator=torch.Generator().manual_seed(1))
    hi = hg(x, s)
    hg = history_guidance(m, [3.0, 2.0, 1.5, 1.0], 1, sigmas=grid,
                          generator=torch.Generator().manual_seed(1))
    lo = hg(x.bfloat16(), s)
    assert lo.dtype == torch.bfloat16
    torch.testing.assert_close(lo.float()[:, :, 1:], hi[:, :, 1:], rtol=2e-2, atol=2e-2)
    assert hg(x[:0], s[:0]).shape == (0, 1, 3, 2, 2)


def test_nonfinite_noise_and_tensor_scale():
    """Noise holding NaN/inf is refused before the loop (the samplers' check_state); a 0-d
    tensor scale is a float scale, as in cfg."""
    x = torch.randn(1, 1, 3, 2, 2)
    x[0, 0, 1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="noise must hold finite values, got 1 of 12"):
        sample_frames(smooth_model(), x, [[1.0] * 3, [0.0] * 3])
    x = torch.randn(2, 1, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    s = torch.tensor([[0.0, 0.5, 1.0]] * 2)
    a = history_guidance(smooth_model(), torch.tensor(2.5), 1,
                         generator=torch.Generator().manual_seed(1))(x, s)
    b = history_guidance(smooth_model(), 2.5, 1, generator=torch.Generator().manual_seed(1))(x, s)
    assert torch.equal(a, b)
    with pytest.raises(TypeError, match="scale must be a real tensor"):
        history_guidance(smooth_model(), torch.tensor(True), 1)
