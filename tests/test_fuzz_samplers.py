"""Fuzz of the samplers' and conditioning's claimed input space: dtypes, empty batches, one
step, odd grids, non-finite inputs, meta tensors, per-sample generators, callbacks, and the
named errors for each bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from vidnoise.conditioning import ImageConditionAugment, corrupt_history
from vidnoise.samplers import cfg, rollout, sample_edm, sample_flow

HALF = (torch.float16, torch.bfloat16)
FLOW_CASES = [("euler", "corrected"), ("heun", "corrected"), ("heun", "euler"),
              ("midpoint", "corrected")]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _grid(draw_fracs, top):
    """A strictly decreasing grid from ``top`` to 0 built from fractions in (0, 1)."""
    vals = sorted({round(top * f, 6) for f in draw_fracs if 0 < round(top * f, 6) < top},
                  reverse=True)
    return [top, *vals, 0.0]


grids = st.lists(st.floats(0.01, 0.99), min_size=0, max_size=4)
shapes = st.tuples(st.integers(0, 3), st.integers(1, 3), st.integers(1, 4))


# ----------------------------------------------------------------------------- dtypes
@given(shape=shapes, fracs=grids, case=st.sampled_from(FLOW_CASES),
       dtype=st.sampled_from(HALF), seed=st.integers(0, 2**16))
def test_flow_half_precision_is_the_float32_loop_rounded_once(shape, fracs, case, dtype, seed):
    # The claim: half input -> the model sees x in half, every update is done in float32 and
    # the result is rounded once. Oracle: the float32 loop whose model rounds its input to
    # the half dtype in the same place gives exactly the same numbers (B = 0, a single step
    # and every solver included).
    solver, last_step = case
    grid = _grid(fracs, 1.0)
    noise = torch.randn(shape, generator=_gen(seed)).to(dtype)
    seen = []

    def v(x, s):
        seen.append((x.dtype, s.dtype))
        return x * -0.7 + s.reshape(-1, *[1] * (x.dim() - 1)).to(x.dtype)

    def v32(x, s):
        return (x.to(dtype) * -0.7 + s.reshape(-1, *[1] * (x.dim() - 1)).to(dtype)).float()

    out = sample_flow(v, noise, grid, solver=solver, last_step=last_step)
    ref = sample_flow(v32, noise.float(), grid, solver=solver, last_step=last_step)
    assert out.dtype == dtype and out.shape == noise.shape
    assert torch.equal(out, ref.to(dtype))
    assert set(seen) == {(dtype, torch.float32)}


@given(shape=shapes, fracs=grids, order=st.sampled_from([1, 2]), dtype=st.sampled_from(HALF),
       churn=st.sampled_from([0.0, 3.0]), seed=st.integers(0, 2**16))
def test_edm_half_precision_is_the_float32_loop_rounded_once(shape, fracs, order, dtype, churn,
                                                             seed):
    grid = _grid(fracs, 5.0)
    noise = torch.randn(shape, generator=_gen(seed)).to(dtype)

    def den(x, s):
        return x * (0.64 / (0.64 + s * s)).reshape(-1, *[1] * (x.dim() - 1)).to(x.dtype)

    def den32(x, s):
        return den(x.to(dtype), s).float()

    out = sample_edm(den, noise, grid, order=order, s_churn=churn, generator=_gen(1),
                     init="unit")
    ref = sample_edm(den32, noise.float(), grid, order=order, s_churn=churn,
                     generator=_gen(1), init="unit")
    assert out.dtype == dtype and out.shape == noise.shape
    assert torch.equal(out, ref.to(dtype))


# ----------------------------------------------------------------------------- meta device
@pytest.mark.parametrize("solver, last_step", FLOW_CASES)
def test_flow_loop_runs_on_meta_without_reading_values(solver, last_step):
    # meta tensors have no values: any host read (.item(), bool(), a check) would raise
    noise = torch.empty(2, 3, 4, device="meta")
    guided = cfg(lambda x, s: -x, None, [1.0, 2.0, 3.0], sigmas=[1.0, 0.6, 0.3, 0.0])
    out = sample_flow(guided, noise, [1.0, 0.6, 0.3, 0.0], solver=solver, last_step=last_step)
    assert out.is_meta and out.shape == noise.shape and out.dtype == noise.dtype


@pytest.mark.parametrize("init", ["sigma_max", "unit", lambda z, s0: z * s0])
@pytest.mark.parametrize("variant", ["edm", "diamond"])
def test_edm_loop_runs_on_meta_without_reading_values(init, variant):
    noise = torch.empty(2, 3, device="meta", dtype=torch.float16)
    out = sample_edm(lambda x, s: x * 0.5, noise, [5.0, 1.0, 0.2, 0.0], order=2, s_churn=2.0,
                     s_tmin=0.5, init=init, variant=variant)
    assert out.is_meta and out.shape == (2, 3) and out.dtype == torch.float16


def test_rollout_and_conditioning_run_on_meta():
    ctx = torch.empty(2, 3, 1, 4, 4, device="meta")
    out = rollout(lambda c, renoise: renoise(2)[:, -1], ctx, 2, cond_noise=0.1,
                  accumulate_cond_noise=True)
    assert out.is_meta and out.shape == (2, 2, 1, 4, 4)
    res = corrupt_history(ctx)
    assert res.noised.is_meta and res.sigma.shape == (2,)
    got = ImageConditionAugment(space="latent").augment(ctx[:, :, :1], 3)
    assert got.latents.is_meta and got.latents.shape == (2, 3, 3, 4, 4)


# ----------------------------------------------------------------------------- non-finite
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_noise_is_named_not_propagated(bad):
    # before: sample_flow and sample_edm(init="unit") returned NaN / inf without a word, and
    # sample_edm(init="sigma_max") blamed the k-diffusion scaling habit for a NaN
    noise = torch.randn(2, 3, 4, generator=_gen(0))
    noise[1, 2, 3] = bad
    msg = r"noise must hold finite values, got 1 of 24 values that are nan or inf"
    with pytest.raises(ValueError, match=msg):
        sample_flow(lambda x, s: -x, noise, [1.0, 0.0])
    for init in ("sigma_max", "unit"):
        with pytest.raises(ValueError, match=msg):
            sample_edm(lambda x, s: x, noise, [1.0, 0.0], init=init)
    with pytest.raises(ValueError, match=r"init\(noise, sigmas\[0\]\) must hold finite"):
        sample_edm(lambda x, s: x, noise.nan_to_num(0.0), [1.0, 0.0],
                   init=lambda z, s0: z / 0.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_grid_is_named(bad):
    msg = rf"sigmas must contain finite values .* sigmas\[1\] = {bad}"
    with pytest.raises(ValueError, match=msg):
        sample_flow(lambda x, s: -x, torch.zeros(1, 2), [1.0, bad, 0.0])
    with pytest.raises(ValueError, match=rf"sigmas\[0\] = {bad}"):
        sample_edm(lambda x, s: x, torch.zeros(1, 2), torch.tensor([bad, 0.0]))


@pytest.mark.parametrize("solver, last_step", FLOW_CASES)
def test_nan_from_the_model_propagates(solver, last_step):
    # Documented policy: a model output is never read on the host inside the loop, so NaN
    # from the model is not detected there; it propagates to the result (never a finite
    # number that hides it).
    def v(x, s):
        out = -x.clone()
        out[0, 0] = math.nan
        return out

    out = sample_flow(v, torch.randn(2, 3, generator=_gen(1)), [1.0, 0.5, 0.0], solver=solver,
                      last_step=last_step)
    assert bool(out[0, 0].isnan()) and bool(out[1].isfinite().all())
    out = sample_edm(lambda x, s: v(x, s) * -1, torch.randn(2, 3, generator=_gen(1)),
                     [2.0, 0.5, 0.0], order=2)
    assert bool(out[0, 0].isnan()) and bool(out[1].isfinite().all())


# ----------------------------------------------------------------------------- grids
@given(vals=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=6))
def test_any_grid_is_either_sampled_or_named(vals):
    # repeated, increasing or non-zero-ending grids raise naming sigmas and the index;
    # valid grids run
    ok = all(a > b for a, b in zip(vals, vals[1:])) and vals[-1] == 0.0
    noise = torch.zeros(1, 2)
    if ok:
        assert sample_flow(lambda x, s: -x, noise, vals).shape == (1, 2)
        assert sample_edm(lambda x, s: x, noise, vals, init="unit").shape == (1, 2)
    else:
        for call in (lambda: sample_flow(lambda x, s: -x, noise, vals),
                     lambda: sample_edm(lambda x, s: x, noise, vals, init="unit")):
            with pytest.raises(ValueError, match=r"sigmas must (be strictly decreasing|end at)"):
                call()


# ----------------------------------------------------------------------------- callbacks
@given(fracs=grids, churn=st.sampled_from([0.0, 1.0]), order=st.sampled_from([1, 2]),
       seed=st.integers(0, 2**16))
def test_edm_callback_values_follow_the_recursion(fracs, churn, order, seed):
    # callback i: x = x̂_i, denoised = D(x̂_i, σ̂_i), σ̂_i = σ_i(1 + γ_i); the next state
    # rebuilt from them with the Euler/Heun formula equals the next callback's x (no churn)
    grid = _grid(fracs, 3.0)
    n = len(grid) - 1
    noise = torch.randn(2, 3, generator=_gen(seed), dtype=torch.float64)

    def den(x, s):
        return x * (0.64 / (0.64 + s * s)).reshape(-1, 1)

    rec = []
    out = sample_edm(den, noise, grid, order=order, s_churn=churn, generator=_gen(seed),
                     callback=lambda d: rec.append(d))
    assert [r["i"] for r in rec] == list(range(n))
    gamma = min(churn / n, math.sqrt(2) - 1)
    for i, r in enumerate(rec):
        assert (r["sigma"], r["sigma_next"]) == (grid[i], grid[i + 1])
        assert r["sigma_hat"] == grid[i] * (1 + gamma)
        s_hat = torch.tensor([r["sigma_hat"]], dtype=torch.float64)
        torch.testing.assert_close(r["denoised"], den(r["x"], s_hat), rtol=1e-12, atol=1e-12)
    if churn == 0.0:
        torch.testing.assert_close(rec[0]["x"], noise * grid[0], rtol=0, atol=0)
        for i in range(n):
            x, d0 = rec[i]["x"], rec[i]["denoised"]
            d = (x - d0) / grid[i]
            nxt = x + (grid[i + 1] - grid[i]) * d
            if order == 2 and grid[i + 1] > 0:
                s_next = torch.tensor([grid[i + 1]], dtype=torch.float64)
                d2 = (nxt - den(nxt, s_next)) / grid[i + 1]
                nxt = x + (grid[i + 1] - grid[i]) * (d + d2) / 2
            want = out if i == n - 1 else rec[i + 1]["x"]
            torch.testing.assert_close(want, nxt, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- named errors
def test_order_must_be_the_integer_1_or_2():
    # before: order=True ran Euler and order=2.0 ran Heun (True == 1, 2.0 == 2)
    for bad in (True, 2.0):
        with pytest.raises(TypeError, match=rf"order must be an integer, got {bad!r}"):
            sample_edm(lambda x, s: x, torch.zeros(1, 2), [1.0, 0.0], order=bad)
    with pytest.raises(ValueError, match=r"order must be one of \[1, 2\], got 3"):
        sample_edm(lambda x, s: x, torch.zeros(1, 2), [1.0, 0.0], order=3)


def test_cfg_sigma_shape_and_x_are_named():
    x = torch.randn(3, 4, generator=_gen(2))
    # before: a (5,) σ for a batch of 3 reached the model (doubled to 10 in batched mode)
    with pytest.raises(ValueError, match=r"sigma must be a float, a 0-d tensor or a \(3,\) "
                                         r"tensor .*got shape \(5,\)"):
        cfg(lambda x, s: -x, None, 2.0)(x, torch.ones(5))
    # with a per-step scale the look-up reads one level per sample: (B, 1) is refused
    # (before: IndexError/broadcast error from inside torch for other shapes)
    g = cfg(lambda x, s: -x, None, [1.0, 2.0], sigmas=[1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match=r"got shape \(3, 1\)"):
        g(x, torch.ones(3, 1))
    with pytest.raises(TypeError, match="sigma must be a real tensor, got dtype torch.bool"):
        g(x, torch.ones(3, dtype=torch.bool))
    # before: IndexError "tuple index out of range"
    with pytest.raises(ValueError, match=r"x must have a batch dim \(dim 0\), got a 0-d"):
        cfg(lambda x, s: -x, None, 2.0)(torch.tensor(1.0), 0.5)
    # per-frame levels with a fixed scale still pass through to the model
    seen = []
    out = cfg(lambda x, s: seen.append(s.shape) or x, lambda x, s: 0 * x, 2.0)(
        x, torch.ones(3, 4))
    assert seen == [(3, 4)] and torch.equal(out, 2 * x)


def test_cfg_zero_dim_tensor_scale_is_a_fixed_scale():
    # before: a 0-d tensor scale asked for sigmas as if it were a per-step schedule
    x = torch.randn(3, 4, generator=_gen(3))
    out = cfg(lambda x, s: x, lambda x, s: 0 * x, torch.tensor(1.5))(x, 0.5)
    torch.testing.assert_close(out, 1.5 * x, rtol=0, atol=0)


def test_rollout_frame_on_another_device_is_named():
    # before: RuntimeError "Tensor on device meta is not on the expected device cpu!"
    with pytest.raises(ValueError, match="sample_next must return a frame on the context's "
                                         "device cpu, got one on meta"):
        rollout(lambda c: c[:, -1].to("meta"), torch.zeros(1, 2, 1, 2, 2), 2)


# ----------------------------------------------------------------------------- conditioning
@given(b=st.integers(0, 3), layout=st.sampled_from(["BCTHW", "BTCHW"]),
       frames=st.integers(1, 4), dtype=st.sampled_from([*HALF, torch.float32]),
       seed=st.integers(0, 2**16))
def test_augment_shapes_dtypes_and_half_precision(b, layout, frames, dtype, seed):
    # any batch (0 included), layout, frame count and dtype: latents padded with zero frames,
    # the input dtype, and half precision equal to the float32 call rounded once
    shape = (b, 3, 1, 4, 4) if layout == "BCTHW" else (b, 1, 3, 4, 4)
    image = (torch.rand(shape, generator=_gen(seed)) * 2 - 1).to(dtype)
    aug = ImageConditionAugment(dropout=0.3)
    got = aug.augment(image, frames, layout=layout, generator=_gen(seed + 1))
    ref = aug.augment(image.float(), frames, layout=layout, generator=_gen(seed + 1))
    t_axis = 2 if layout == "BCTHW" else 1
    assert got.latents.dtype == dtype and got.latents.shape[t_axis] == frames
    assert torch.equal(got.latents, ref.latents.to(dtype))
    assert torch.equal(got.sigmas, ref.sigmas) and torch.equal(got.dropped, ref.dropped)
    assert not bool(got.latents.narrow(t_axis, 1, frames - 1).any())


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("accumulate", [False, True])
def test_rollout_half_precision_noise_is_added_in_float32(dtype, accumulate):
    # before: ε was drawn, scaled and added in the half dtype (two roundings per draw, and
    # the nested DIAMOND draws accumulated in half); now c = (x + σ_c·ε in float32) rounded
    # once: the float32 rollout's conditioning frames rounded to the half dtype
    ctx = torch.randn(2, 3, 1, 4, 4, generator=_gen(5)).to(dtype)
    seen = {}

    def nxt(key):
        def f(c, renoise=None):
            seen.setdefault(key, []).append(c if renoise is None else renoise(3))
            return torch.zeros_like(c[:, -1])  # exact in every dtype
        return f

    kw = dict(cond_noise=0.37, accumulate_cond_noise=accumulate)
    rollout(nxt("half"), ctx, 2, generator=_gen(6), **kw)
    rollout(nxt("f32"), ctx.float(), 2, generator=_gen(6), **kw)
    for h, f in zip(seen["half"], seen["f32"]):
        assert h.dtype == dtype and torch.equal(h, f.to(dtype))


def test_edm_grid_given_to_sample_flow_points_at_both_fixes():
    # before: a Karras grid (EDM σ = noise std, here 80 .. 0.002, 0) was called "timesteps on
    # a 0..1000 scale" with timestep_to_sigma as the fix, which gives a wrong flow grid
    from _sampler_helpers import karras

    grid = karras(6, 0.002, 80.0)
    with pytest.raises(ValueError, match=r"edm_sigma_to_flow\(sigmas\)") as err:
        sample_flow(lambda x, s: -x, torch.zeros(1, 2), grid)
    assert "timestep_to_sigma" in str(err.value) and "sample_edm" in str(err.value)
    with pytest.raises(ValueError, match=r"looks like EDM noise levels") as err:
        sample_flow(lambda x, s: -x, torch.zeros(1, 2), [5000.0, 1.0, 0.0])
    assert "timestep_to_sigma" not in str(err.value)
    with pytest.raises(ValueError, match=r"s_tmax must be in \[2.0, inf\], got 1.0; s_tmax "
                                         r"must be >= s_tmin = 2"):
        sample_edm(lambda x, s: x, torch.zeros(1, 2), [1.0, 0.0], s_tmin=2.0, s_tmax=1.0)


def test_grid_as_a_list_of_0d_tensors():
    # before: list(sched.sigmas) (0-d tensors) raised "sigmas must contain real numbers"
    grid = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    noise = torch.randn(2, 3, generator=_gen(7))
    assert torch.equal(sample_flow(lambda x, s: -x, noise, list(grid)),
                       sample_flow(lambda x, s: -x, noise, grid.tolist()))
    with pytest.raises(TypeError, match="sigmas must contain real numbers"):
        sample_flow(lambda x, s: -x, noise, [torch.tensor(True), torch.tensor(False)])


@given(shape=st.sampled_from([(0, 2, 3, 3), (2, 3, 4, 4), (1, 2, 3, 4, 4), (3, 1, 2, 2, 5)]),
       dtype=st.sampled_from(HALF), seed=st.integers(0, 2**16), off=st.sampled_from([0, .2]))
def test_conditioning_half_precision_is_float32_rounded_once(shape, dtype, seed, off):
    from vidnoise.conditioning import augment_previous_frames

    frames = torch.rand(shape, generator=_gen(seed)).to(dtype)
    got = augment_previous_frames(frames, offset_noise=off, generator=_gen(seed + 1))
    ref = augment_previous_frames(frames.float(), offset_noise=off, generator=_gen(seed + 1))
    assert got.noised.dtype == dtype and torch.equal(got.noised, ref.noised.to(dtype))
    assert torch.equal(got.sigma, ref.sigma)
    h = corrupt_history(frames, generator=_gen(seed + 2))
    r = corrupt_history(frames.float(), generator=_gen(seed + 2))
    assert h.noised.dtype == dtype and torch.equal(h.noised, r.noised.to(dtype))


@pytest.mark.parametrize("accumulate", [False, True])
def test_rollout_item_depends_only_on_its_generator(accumulate):
    ctx = torch.randn(3, 2, 1, 3, 3, generator=_gen(8), dtype=torch.float64)

    def nxt(c, renoise=None):
        c = c if renoise is None else renoise(2)
        return c.mean(1) * 0.9

    kw = dict(cond_noise=0.2, accumulate_cond_noise=accumulate)
    full = rollout(nxt, ctx, 3, generator=[_gen(20), _gen(21), _gen(22)], **kw)
    alone = rollout(nxt, ctx[1:2], 3, generator=[_gen(21)], **kw)
    assert torch.equal(full[1:2], alone)


def test_progress_bar_changes_nothing_but_the_terminal(capsys):
    pytest.importorskip("tqdm")
    noise = torch.randn(2, 3, generator=_gen(9))
    for run in (
        lambda p: sample_flow(lambda x, s: -x, noise, [1.0, 0.5, 0.0], solver="heun",
                              progress=p),
        lambda p: sample_edm(lambda x, s: x * 0.5, noise, [2.0, 0.5, 0.0], s_churn=1.0,
                             generator=_gen(3), progress=p),
        lambda p: rollout(lambda c: c[:, -1], noise[:, None, :, None, None], 2,
                          cond_noise=0.1, generator=_gen(4), progress=p),
    ):
        quiet = run(False)
        assert capsys.readouterr().err == ""
        loud = run(True)
        assert torch.equal(quiet, loud) and "it/s" in capsys.readouterr().err
