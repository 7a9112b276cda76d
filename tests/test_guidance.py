"""cfg / dynamic_cfg: the combination, batching, per-step and dynamic scales, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from _sampler_helpers import karras, linear
from vidnoise.samplers import cfg, dynamic_cfg, sample_edm, sample_flow
from vidnoise.samplers.guidance import scale_plan


def cond(x, s):
    return torch.sin(x) + s.reshape(-1, *([1] * (x.dim() - 1)))


def uncond(x, s):
    return 0.5 * x


def batched(x2, s2):  # one call, diffusers' layout: first half unconditional, then conditional
    b = x2.shape[0] // 2
    return torch.cat([uncond(x2[:b], s2[:b]), cond(x2[b:], s2[b:])])


def test_fixed_scale_combination():
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = torch.full((3,), 0.4, dtype=torch.float64)
    w = 4.5
    c, u = torch.sin(x) + 0.4, 0.5 * x
    expected = u + w * (c - u)
    torch.testing.assert_close(cfg(cond, uncond, w)(x, s), expected, rtol=1e-14, atol=0)
    torch.testing.assert_close(cfg(cond, uncond, 1.0)(x, s), c, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(cfg(cond, uncond, 0.0)(x, s), u, rtol=0, atol=0)


def test_batched_call_equals_two_calls():
    x = torch.randn(3, 2, 5, generator=torch.Generator().manual_seed(1))
    s = torch.tensor([0.9, 0.5, 0.1])
    calls = []

    def counting(x2, s2):
        calls.append(x2.shape[0])
        return batched(x2, s2)

    g1 = cfg(counting, None, 3.0)(x, s)
    g2 = cfg(cond, uncond, 3.0)(x, s)
    torch.testing.assert_close(g1, g2, rtol=1e-6, atol=1e-6)
    assert calls == [6]

    def cond_first(x2, s2):
        b = x2.shape[0] // 2
        return torch.cat([cond(x2[:b], s2[:b]), uncond(x2[b:], s2[b:])])

    g3 = cfg(cond_first, None, 3.0, batch_order="cond_first")(x, s)
    torch.testing.assert_close(g3, g2, rtol=1e-6, atol=1e-6)


def test_batched_order_is_diffusers_uncond_first():
    # diffusers' video pipelines build the embedding batch as cat([negative, positive]) and
    # split the output as `noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)`
    # (checked in the installed source below). A model that predicts -2 for the negative
    # prompt and 0 for the positive one, guided at w = 6: u + w(c - u) = -2 + 6·2 = 10. The
    # opposite order gave c + w(u - c) = -12 without a word.
    diffusers = pytest.importorskip("diffusers")
    import inspect

    from diffusers.pipelines.cogvideo import pipeline_cogvideox

    src = inspect.getsource(pipeline_cogvideox)
    assert "torch.cat([negative_prompt_embeds, prompt_embeds], dim=0)" in src, diffusers
    assert "noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)" in src
    embeds = torch.tensor([-2.0, 0.0])  # cat([negative, positive]) as a pipeline makes it

    def transformer(x2, s2):  # the prediction is the prompt's value, per batch half
        b = x2.shape[0] // 2
        return torch.zeros_like(x2) + embeds.repeat_interleave(b).view(-1, 1)

    x, s = torch.zeros(3, 4), torch.full((3,), 0.5)
    assert float(cfg(transformer, None, 6.0)(x, s).mean()) == 10.0
    assert float(cfg(transformer, None, 6.0, batch_order="uncond_first")(x, s).mean()) == 10.0
    assert float(cfg(transformer, None, 6.0, batch_order="cond_first")(x, s).mean()) == -12.0


def test_float_sigma_is_accepted():
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(5))
    g = cfg(cond, uncond, 2.5)
    torch.testing.assert_close(g(x, 0.7), g(x, torch.full((3,), 0.7)))
    torch.testing.assert_close(cfg(batched, None, 2.5)(x, 0.7), g(x, torch.full((3,), 0.7)))
    with pytest.raises(ValueError, match="sigma must be a finite real number"):
        g(x, math.nan)
    with pytest.raises(ValueError, match="sigma must be a finite real number"):
        g(x, "0.7")


def test_per_step_list_matches_a_mochi_style_loop():
    # Mochi: Euler with w_i at step i. Reference loop written here step by step.
    grid = [1.0, 0.8, 0.5, 0.2, 0.0]
    ws = [6.0, 4.0, 2.5, 1.0]
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ref = x.clone()
    for i in range(4):
        s = torch.full((2,), grid[i], dtype=torch.float64)
        c, u = cond(ref, s), uncond(ref, s)
        ref = ref + (grid[i + 1] - grid[i]) * (u + ws[i] * (c - u))
    out = sample_flow(cfg(cond, uncond, ws, sigmas=grid), x, grid)
    torch.testing.assert_close(out, ref, rtol=1e-13, atol=0)


def test_scale_lookup_rule_for_churn_heun_and_midpoint():
    # w(σ) = w_i on [σ_i, σ_{i-1}): σ̂ ≥ σ_i keeps w_i, σ_{i+1} and midpoints get w_{i+1}.
    grid = [4.0, 2.0, 1.0, 0.0]
    ws = [10.0, 20.0, 30.0]
    guided = cfg(lambda x, s: torch.ones_like(x), lambda x, s: torch.zeros_like(x), ws,
                 sigmas=grid)
    sig = torch.tensor([5.0, 4.0, 4.0 * 1.3, 3.0, 2.0, 2.0 * 1.4, 1.5, 1.0, 0.5, 1e-3])
    want = [10, 10, 10, 20, 20, 20, 30, 30, 30, 30]
    got = guided(torch.zeros(len(sig), 1), sig)[:, 0].tolist()
    assert got == want
    # inside a sampler: EDM churn at γ = √2 - 1 calls at σ̂ = √2·σ_i and must see w_i
    # (the guided output here is exactly w, reported as "denoised" by the callback)
    seen, used = [], []
    g2 = cfg(lambda x, s: seen.append(float(s[0])) or torch.ones_like(x),
             lambda x, s: torch.zeros_like(x), ws, sigmas=grid)
    sample_edm(g2, torch.zeros(1, 2), grid, s_churn=5.0, generator=torch.Generator(),
               callback=lambda d: used.append(float(d["denoised"][0, 0])))
    assert seen == pytest.approx([4.0 * math.sqrt(2), 2.0 * math.sqrt(2), math.sqrt(2)])
    assert used == ws


def test_dynamic_cfg_values_and_use():
    n, w = 50, 6.0
    got = dynamic_cfg(w).scales(n)
    # by hand: step 0 -> ((50-0)/50)^5 = 1, cos(π) = -1 -> 1 + 6 = 7
    assert got[0] == pytest.approx(7.0, abs=1e-12)
    # step 25 -> (0.5)^5 = 1/32, 1 + 6·(1 - cos(π/32))/2
    assert got[25] == pytest.approx(1 + 6 * (1 - math.cos(math.pi / 32)) / 2, rel=1e-12)
    assert got[-1] == pytest.approx(1.0, abs=1e-8)
    assert all(a >= b for a, b in zip(got, got[1:]))  # monotone decay
    grid = linear(50)
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a = sample_flow(cfg(cond, uncond, dynamic_cfg(w), sigmas=grid), x, grid)
    b = sample_flow(cfg(cond, uncond, got, sigmas=grid), x, grid)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_half_precision_output_dtype():
    x = torch.randn(2, 3).half()
    s = torch.full((2,), 0.5)
    out = cfg(lambda x, s: x * 2, lambda x, s: x, 7.0)(x, s)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), (x.float() * 8), rtol=1e-3, atol=1e-3)


def test_bad_input():
    grid = karras(4, 2e-3, 5.0)
    with pytest.raises(ValueError, match=r"scale must have one value per step \(4\)"):
        cfg(cond, uncond, [1.0, 2.0, 3.0], sigmas=grid)
    with pytest.raises(ValueError, match="sigmas is required"):
        cfg(cond, uncond, [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="sigmas must be strictly decreasing"):
        cfg(cond, uncond, [1.0, 2.0], sigmas=[1.0, 1.0, 0.0])
    with pytest.raises(TypeError, match="scale must be None, a float"):
        cfg(cond, uncond, "7")
    with pytest.raises(ValueError, match="scale must be a finite real number"):
        cfg(cond, uncond, math.nan)
    with pytest.raises(ValueError, match=r"scale\[1\] must be a finite real number"):
        cfg(cond, uncond, [1.0, math.inf, 1.0, 1.0], sigmas=grid)
    with pytest.raises(ValueError, match="exponent must be in"):
        dynamic_cfg(5.0, exponent=0.0)
    with pytest.raises(ValueError, match="twice the input's batch"):
        cfg(lambda x, s: x[:3], None, 2.0)(torch.ones(2, 3), torch.ones(2))
    with pytest.raises(TypeError, match="return_dict=False"):
        cfg(lambda x, s: (x,), None, 2.0)(torch.ones(2, 3), torch.ones(2))
    with pytest.raises(TypeError, match="return_dict=False"):
        cfg(lambda x, s: (x,), uncond, 2.0)(torch.ones(2, 3), torch.ones(2))
    with pytest.raises(ValueError, match="batch_order must be one of"):
        cfg(cond, None, 2.0, batch_order="negative_first")
    with pytest.raises(ValueError, match="x must have a floating dtype"):
        cfg(cond, uncond, 2.0)(torch.ones(2, 3, dtype=torch.bool), torch.ones(2))


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    form=st.sampled_from(["float", "per_stage", "per_step", "callable", "scales"]),
    w=st.floats(-3, 8, allow_nan=False),
)
def test_scale_plan_forms_agree(steps, form, w):
    # every accepted form of the same per-step scales w_{k,i} = w + k + i/10 gives one plan
    want = [[w + k + i / 10 for i in range(n)] for k, n in enumerate(steps)]
    if form == "float":
        want = [[w] * n for n in steps]
        scale = w
    elif form == "per_stage":
        want = [[w + k] * n for k, n in enumerate(steps)]
        scale = [w + k for k in range(len(steps))] if len(steps) > 1 else w
    elif form == "per_step":
        scale = want if len(steps) > 1 else want[0]
    elif form == "callable":
        def scale(k, i, n):
            return w + k + i / 10
    else:
        class Scales:  # .scales(n) sees only n, not the stage
            def scales(self, n):
                return [w + i / 10 for i in range(n)]

        scale = Scales()
        want = [[w + i / 10 for i in range(n)] for n in steps]
    assert scale_plan("guidance", scale, steps) == want


# ----------------------------------------------------------------------------- diffusers' code
@pytest.mark.parametrize("w", [1.0, 4.5, -0.5])
def test_guided_flow_loop_equals_diffusers_guider_and_scheduler(w):
    # diffusers' own guidance (diffusers.guiders.ClassifierFreeGuidance.forward:
    # pred_uncond + guidance_scale·(pred_cond - pred_uncond), the pipelines' formula) and its
    # FlowMatchEulerDiscreteScheduler, driven the way a video pipeline does: one model call on
    # the doubled batch [uncond; cond], split by chunk(2). Against sample_flow(cfg(...)).
    diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed")
    guiders = pytest.importorskip("diffusers.guiders", reason="diffusers has no guiders")
    sched = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    sched.set_timesteps(num_inference_steps=9)
    grid = sched.sigmas.tolist()
    guider = guiders.ClassifierFreeGuidance(guidance_scale=w)
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    x = noise.clone()
    for i, (t, s) in enumerate(zip(sched.timesteps, grid[:-1])):
        guider.set_state(step=i, num_inference_steps=len(grid) - 1, timestep=t)
        out = batched(torch.cat([x, x]), torch.full((4,), s))
        pred_uncond, pred_cond = out.chunk(2)
        pred = guider.forward(pred_cond, pred_uncond).pred
        x = sched.step(pred, t, x, return_dict=False)[0]
    ours = sample_flow(cfg(batched, None, w), noise, grid)
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-5)
    two = sample_flow(cfg(cond, uncond, w), noise, grid)
    torch.testing.assert_close(two, x, rtol=0, atol=1e-5)
