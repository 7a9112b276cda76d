"""vidnoise.diffusers against diffusers' own schedulers and pipelines (tiny random models).

The tiny transformer configs follow diffusers' pipeline tests (tests/pipelines/{wan,mochi,
hunyuan_video,ltx,cogvideo}); prompt embeddings are passed directly (no tokenizer, no
download) and ``output_type="latent"`` skips the VAE.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from _harness import COG_CONFIG, prompts, tiny_pipeline, tiny_transformer

D = pytest.importorskip("diffusers")

from vidnoise import schedules  # noqa: E402
from vidnoise.diffusers import FlowScheduler, VPScheduler, as_denoiser, as_flow_model  # noqa: E402
from vidnoise.paths import VPPath  # noqa: E402
from vidnoise.samplers import sample_edm, sample_flow  # noqa: E402

# float32 pipelines: the same float32 operations give identical latents; 1e-5 is the claim.
TOL = 1e-5


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():  # as the pipelines run; the adapters leave autograd to the caller
        yield


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


class Counter:
    """Counts transformer forward calls (a forward pre-hook)."""

    def __init__(self, module):
        self.n = 0
        module.register_forward_pre_hook(self._hook)

    def _hook(self, *_):
        self.n += 1


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _setup(pipe, g, latent_shape, **kw):
    """A fixture's tuple: the pipeline, its native scheduler's config, latents of
    ``latent_shape`` drawn from ``g``, the call's keywords and a forward counter."""
    lat, kw = torch.randn(latent_shape, generator=g), dict(kw, output_type="latent")
    return pipe, pipe.scheduler.config, lat, kw, Counter(pipe.transformer)


@pytest.fixture(scope="module")
def wan():
    pipe = tiny_pipeline(D.WanPipeline, tiny_transformer("wan"),
                         D.FlowMatchEulerDiscreteScheduler(shift=7.0))
    g = _gen(1)
    return _setup(pipe, g, (1, 16, 3, 8, 8), **prompts(g, 8, 32), height=64, width=64,
                  num_frames=9, num_inference_steps=4, guidance_scale=5.0)


@pytest.fixture(scope="module")
def mochi():
    pipe = tiny_pipeline(D.MochiPipeline, tiny_transformer("mochi"),
                         D.FlowMatchEulerDiscreteScheduler(invert_sigmas=True))
    g = _gen(2)
    return _setup(pipe, g, (1, 12, 2, 4, 4), **prompts(g, 16, 32, mask=True), height=32,
                  width=32, num_frames=7, num_inference_steps=4, guidance_scale=4.5)


@pytest.fixture(scope="module")
def hunyuan():
    pipe = tiny_pipeline(D.HunyuanVideoPipeline, tiny_transformer("hunyuan"),
                         D.FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=None,
                         tokenizer_2=None)
    g = _gen(3)
    return _setup(pipe, g, (1, 4, 2, 4, 4), prompt_embeds=torch.randn(1, 8, 16, generator=g),
                  pooled_prompt_embeds=torch.randn(1, 8, generator=g),
                  prompt_attention_mask=torch.ones(1, 8), height=32, width=32, num_frames=5,
                  num_inference_steps=4)


@pytest.fixture(scope="module")
def ltx():
    # LTX-Video's scheduler config: dynamic shifting with a terminal stretch
    sched = D.FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
        max_image_seq_len=4096, shift_terminal=0.1)
    pipe = tiny_pipeline(D.LTXPipeline, tiny_transformer("ltx"), sched)
    g = _gen(4)
    # packed latents (B, F*H*W, C) for 9 frames at 64 px: 2 x 2 x 2 tokens
    return _setup(pipe, g, (1, 8, 8), **prompts(g, 8, 32, mask=True), height=64, width=64,
                  num_frames=9, num_inference_steps=4, guidance_scale=3.0)


@pytest.fixture(scope="module")
def cog():
    pipe = tiny_pipeline(D.CogVideoXPipeline, tiny_transformer("cog"),
                         D.CogVideoXDDIMScheduler(**COG_CONFIG))
    g = _gen(5)
    return _setup(pipe, g, (1, 3, 4, 2, 2), **prompts(g, 16, 32), height=16, width=16,
                  num_frames=9, num_inference_steps=4, guidance_scale=6.0)


def run(setup, scheduler, **over):
    pipe, _, lat, kw, counter = setup
    pipe.scheduler = scheduler
    counter.n = 0
    out = pipe(latents=lat.clone(), **dict(kw, **over)).frames
    return out, counter.n


NATIVE = {"wan": D.FlowMatchEulerDiscreteScheduler, "mochi": D.FlowMatchEulerDiscreteScheduler,
          "hunyuan": D.FlowMatchEulerDiscreteScheduler, "ltx": D.FlowMatchEulerDiscreteScheduler,
          "cog": D.CogVideoXDDIMScheduler}


@pytest.mark.parametrize("name", ["wan", "mochi", "hunyuan", "ltx", "cog"])
@pytest.mark.parametrize("steps", [4, 3])
def test_euler_parity_in_pipeline(name, steps, request):
    setup = request.getfixturevalue(name)
    cfg = setup[1]
    ours_cls = VPScheduler if name == "cog" else FlowScheduler
    ref, n_ref = run(setup, NATIVE[name].from_config(cfg), num_inference_steps=steps)
    got, n_got = run(setup, ours_cls.from_config(cfg), num_inference_steps=steps)
    assert n_got == n_ref and n_ref % steps == 0  # Wan calls cond and uncond separately
    assert rel(got, ref) <= TOL


@pytest.mark.parametrize("name", ["wan", "mochi", "hunyuan", "ltx"])
@pytest.mark.parametrize("solver,calls", [
    ("heun", lambda n: 2 * n - 1),
    # midpoint's values are checked in the default run by test_as_flow_model_matches_pipeline_wan
    pytest.param("midpoint", lambda n: 2 * n, marks=pytest.mark.slow),
])
def test_two_call_solvers_in_pipeline(name, solver, calls, request):
    setup = request.getfixturevalue(name)
    sched = FlowScheduler.from_config(setup[1], solver=solver)
    assert sched.order == 2
    ref, n_ref = run(setup, NATIVE[name].from_config(setup[1]))
    per_call = n_ref // 4  # forward passes per model evaluation (2 for Wan's split CFG)
    got, n = run(setup, sched)
    assert n == per_call * calls(4) and len(sched.timesteps) == calls(4)
    # a different (higher-order) result, not the Euler one
    assert rel(got, ref) > 1e-3


def _wan_flow_model(setup, guidance=True):
    pipe, _, _, kw, _ = setup
    tr = pipe.transformer
    if guidance:
        emb = torch.cat([kw["negative_prompt_embeds"], kw["prompt_embeds"]])
        return as_flow_model(tr, guidance_scale=kw["guidance_scale"], encoder_hidden_states=emb)
    return as_flow_model(tr, encoder_hidden_states=kw["prompt_embeds"])


@pytest.mark.parametrize("solver", ["euler", "heun", "midpoint"])
def test_as_flow_model_matches_pipeline_wan(wan, solver):
    """sample_flow on the adapter == the pipeline with FlowScheduler(solver) (same grid)."""
    ref, _ = run(wan, FlowScheduler.from_config(wan[1], solver=solver))
    grid = schedules.diffusers_flow_grid(4, shift=7.0)
    last = dict(last_step="euler") if solver == "heun" else {}  # the scheduler: 2N - 1 calls
    got = sample_flow(_wan_flow_model(wan), wan[2].clone(), grid, solver=solver, **last)
    assert rel(got, ref) <= TOL


def test_as_flow_model_mochi_reversed_time_and_sign(mochi):
    pipe, _, lat, kw, _ = mochi
    ref, _ = run(mochi, D.FlowMatchEulerDiscreteScheduler.from_config(mochi[1]))
    emb = torch.cat([kw["negative_prompt_embeds"], kw["prompt_embeds"]])
    mask = torch.cat([kw["negative_prompt_attention_mask"], kw["prompt_attention_mask"]])
    model = as_flow_model(pipe.transformer, guidance_scale=kw["guidance_scale"],
                          encoder_hidden_states=emb, encoder_attention_mask=mask)
    got = sample_flow(model, lat.clone(), schedules.linear_quadratic(4, 0.025))
    assert rel(got, ref) <= TOL
    # the wrong convention is far off
    wrong = as_flow_model(pipe.transformer, mochi=False, guidance_scale=kw["guidance_scale"],
                          encoder_hidden_states=emb, encoder_attention_mask=mask)
    bad = sample_flow(wrong, lat.clone(), schedules.linear_quadratic(4, 0.025))
    assert rel(bad, ref) > 0.1


def test_vp_heun_calls_and_denoiser_matches_pipeline(cog):
    pipe, _, lat, kw, _ = cog
    sched = VPScheduler.from_config(cog[1], solver="heun")
    heun, n = run(cog, sched)
    # zero terminal SNR: the first step (σ = inf) and the last (to abar = 1) are Euler
    assert n == 2 * 4 - 2 == len(sched.timesteps)
    ref, _ = run(cog, D.CogVideoXDDIMScheduler.from_config(cog[1]))
    assert rel(heun, ref) > 1e-3
    emb = torch.cat([kw["negative_prompt_embeds"], kw["prompt_embeds"]])
    path = VPPath.cogvideox()
    den = as_denoiser(pipe.transformer, path.alpha_bar, "v", guidance_scale=kw["guidance_scale"],
                      encoder_hidden_states=emb)
    # vp_sigmas floors abar at 2^-24 (σ_0 = 4096 instead of inf): the first step differs
    # from DDIM by O(sqrt(2^-24)) = 2.4e-4 relative, and float32 cancellation in
    # x + h (x - D)/σ at σ_0 = 4096 adds ~4096 * 6e-8 = 2.4e-4; 1e-3 bounds both (measured
    # 8.3e-5).
    sig = schedules.vp_sigmas(4, path)
    x_edm = sample_edm(den, lat.clone(), sig)  # init: noise * σ_0 (EDM)
    assert rel(x_edm, ref) <= 1e-3
    # the ε-prediction reading of the same v model is far off
    bad = as_denoiser(pipe.transformer, path.alpha_bar, "epsilon",
                      guidance_scale=kw["guidance_scale"], encoder_hidden_states=emb)
    assert rel(sample_edm(bad, lat.clone(), sig), ref) > 0.1


def test_vp_churn_runs_and_is_seeded(cog):
    def go(seed):
        s = VPScheduler.from_config(cog[1], s_churn=2.0)
        pipe = cog[0]
        pipe.scheduler = s
        return pipe(latents=cog[2].clone(), generator=torch.Generator().manual_seed(seed),
                    **cog[3]).frames, s

    a, s = go(0)
    b, _ = go(0)
    c, _ = go(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # churned calls sit at fractional timesteps of σ̂ > σ
    assert s.timesteps.dtype == torch.float32
    plain = VPScheduler.from_config(cog[1])
    plain.set_timesteps(4)
    assert (s.timesteps[1:] > plain.timesteps[1:].float()).all()


@pytest.mark.parametrize("n,shift", [(1, 3.0), (2, 1.0), (28, 3.0), (50, 7.0), (37, 5.0)])
def test_diffusers_flow_grid_is_diffusers_default(n, shift):
    ref = D.FlowMatchEulerDiscreteScheduler(shift=shift)
    ref.set_timesteps(n)
    got = schedules.diffusers_flow_grid(n, shift)
    assert got.shape == (n + 1,)
    # diffusers rounds shift(1/N) to float32 before spacing: a few float32 ulps
    torch.testing.assert_close(got, ref.sigmas, rtol=0, atol=1e-7)
    ours = FlowScheduler(shift=shift)
    ours.set_timesteps(n)
    torch.testing.assert_close(ours.sigmas, ref.sigmas, rtol=0, atol=0)
    torch.testing.assert_close(ours.timesteps, ref.timesteps, rtol=0, atol=0)


def test_diffusers_flow_grid_double_shift_value():
    g = schedules.diffusers_flow_grid(28, 3.0)
    assert abs(float(g[-2]) - 0.0089286) < 1e-6  # shift(shift(1/1000, 3), 3) = 9/1008
    assert abs(float(schedules.shift(schedules.linear(28), 3.0)[-2]) - 0.1) < 1e-7
    with pytest.raises(ValueError, match="shift"):
        schedules.diffusers_flow_grid(4, 0.0)
    with pytest.raises(ValueError, match="n"):
        schedules.diffusers_flow_grid(0)


@pytest.mark.parametrize("kwargs", [
    dict(shift=3.0), dict(shift=3.0, invert_sigmas=True), dict(shift=1.0, shift_terminal=0.1),
    dict(use_dynamic_shifting=True, time_shift_type="linear", mu=2.0),
    dict(use_dynamic_shifting=True, mu=0.7, shift_terminal=0.05),
    dict(shift=5.0, sigmas=[1.0, 0.7, 0.4, 0.1]),
    dict(shift=5.0, timesteps=[999.0, 700.0, 300.0, 20.0]),
    dict(shift=5.0, sigmas=[1.0, 0.7, 0.4, 0.1], timesteps=[999.0, 700.0, 300.0, 20.0]),
])
def test_set_timesteps_matches_native(kwargs):
    kwargs = dict(kwargs)
    call = {k: kwargs.pop(k) for k in ("mu", "sigmas", "timesteps") if k in kwargs}
    ref = D.FlowMatchEulerDiscreteScheduler(**kwargs)
    ours = FlowScheduler.from_config(ref.config)
    steps = None if call.get("sigmas") or call.get("timesteps") else 6
    ref.set_timesteps(steps, **call)
    ours.set_timesteps(steps, **call)
    torch.testing.assert_close(ours.sigmas, ref.sigmas, rtol=0, atol=1e-7)
    torch.testing.assert_close(ours.timesteps, ref.timesteps, rtol=0, atol=1e-4)
    # and the steps: same updates on random data
    x = torch.randn(2, 3, 5, generator=_gen(7))
    xr = x.clone()
    for t in ref.timesteps:
        out = torch.randn(2, 3, 5, generator=_gen(int(t) + 1))
        x = ours.step(out, t, x).prev_sample
        xr = ref.step(out, t, xr).prev_sample
    torch.testing.assert_close(x, xr, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("solver", ["euler", "heun", "midpoint"])
def test_step_is_sync_free_on_meta(solver):
    """Meta tensors have no values: any .item(), nonzero() or value look-up would raise."""
    s = FlowScheduler(shift=3.0, solver=solver)
    s.set_timesteps(5)
    x = torch.empty(1, 16, 21, 60, 104, device="meta")
    for t in s.timesteps.to("meta"):
        x = s.step(torch.empty_like(x), t, x).prev_sample
    assert x.device.type == "meta"
    v = VPScheduler.from_config(dict(COG_CONFIG), solver="heun" if solver == "heun" else "euler",
                                s_churn=1.0)
    v.set_timesteps(5)
    x = torch.empty(1, 4, 3, 8, 8, device="meta")
    for t in v.timesteps.to("meta"):
        x = v.step(torch.empty_like(x), t, x).prev_sample
    assert x.device.type == "meta"


def test_step_dtype_and_counter_errors():
    s = FlowScheduler(shift=3.0)
    with pytest.raises(ValueError, match="set_timesteps"):
        s.step(torch.zeros(1), torch.tensor(1.0), torch.zeros(1))
    s.set_timesteps(2)
    x = torch.randn(1, 4, dtype=torch.bfloat16)
    for t in s.timesteps:
        x = s.step(torch.randn(1, 4, dtype=torch.bfloat16), t, x).prev_sample
        assert x.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="model calls"):
        s.step(x, s.timesteps[0], x)


@pytest.mark.parametrize("key", ["use_karras_sigmas", "use_beta_sigmas", "stochastic_sampling",
                                 "use_exponential_sigmas"])
def test_unsupported_config_raises(key):
    with pytest.raises(ValueError, match=key):
        FlowScheduler(**{key: True})


def test_bad_arguments():
    with pytest.raises(ValueError, match="solver"):
        FlowScheduler(solver="rk4")
    with pytest.raises(ValueError, match="mu"):
        FlowScheduler(use_dynamic_shifting=True).set_timesteps(4)
    with pytest.raises(ValueError, match="sigmas"):
        FlowScheduler().set_timesteps(3, sigmas=[1.0, 0.5])
    with pytest.raises(ValueError, match="solver"):
        VPScheduler(solver="midpoint")
    with pytest.raises(ValueError, match="prediction"):
        as_denoiser(torch.nn.Identity(), VPPath().alpha_bar, "x0")
    with pytest.raises(TypeError, match="alphas_cumprod"):
        as_denoiser(torch.nn.Identity(), [0.5, 0.1])
    with pytest.raises(TypeError, match="transformer"):
        as_flow_model(3)


def test_import_vidnoise_does_not_import_diffusers():
    code = ("import sys, vidnoise, vidnoise.samplers, vidnoise.schedules, vidnoise.presets; "
            "vidnoise.presets.get('wan2.1-t2v-14b').sigmas(); "
            "assert 'diffusers' not in sys.modules, 'diffusers imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_presets_match_the_grids_pipelines_run(wan, mochi, hunyuan, ltx, cog):
    """Run each tiny pipeline with its native scheduler and read the grid it used."""
    from vidnoise import presets

    run(mochi, D.FlowMatchEulerDiscreteScheduler.from_config(mochi[1]))
    got = 1 - mochi[0].scheduler.sigmas  # Mochi's scheduler runs inverted
    torch.testing.assert_close(presets.get("mochi-1").sigmas(4), got, rtol=0, atol=2e-7)
    run(hunyuan, D.FlowMatchEulerDiscreteScheduler.from_config(hunyuan[1]))
    torch.testing.assert_close(presets.get("hunyuanvideo").sigmas(4),
                               hunyuan[0].scheduler.sigmas, rtol=0, atol=2e-7)
    run(ltx, D.FlowMatchEulerDiscreteScheduler.from_config(ltx[1]))
    torch.testing.assert_close(presets.get("ltx-video").sigmas(4, height=64, width=64, frames=9),
                               ltx[0].scheduler.sigmas, rtol=0, atol=2e-7)
    wan_unipc = D.UniPCMultistepScheduler(prediction_type="flow_prediction",
                                          use_flow_sigmas=True, flow_shift=5.0)
    run(wan, wan_unipc)
    torch.testing.assert_close(presets.get("wan2.1-t2v-14b-diffusers").sigmas(4),
                               wan[0].scheduler.sigmas, rtol=0, atol=2e-7)
    sched = D.CogVideoXDDIMScheduler.from_config(cog[1])
    run(cog, sched)
    assert torch.equal(presets.get("cogvideox-2b").vp_timesteps(4), sched.timesteps)


@pytest.mark.parametrize("solver,churn", [("heun", 0.0), ("euler", 2.0), ("heun", 2.0)])
def test_vp_scheduler_is_sample_edm(cog, solver, churn):
    """VPScheduler (heun, churn with s_noise = 0) in the pipeline == sample_edm on the adapter.

    Finite-SNR config (no zero-SNR rescale) so σ_0 is finite and sample_edm starts at the same
    state: x_edm = x_vp / sqrt(abar_0) = noise·sqrt(1 + σ_0²). Churn on every step but the
    first (s_tmax = σ_1), as VPScheduler adds it at the end of the previous step.
    """
    pipe, _, lat, kw, _ = cog
    cfg = dict(COG_CONFIG, rescale_betas_zero_snr=False)
    sched = VPScheduler.from_config(cfg, solver=solver)
    path = VPPath(snr_shift_scale=3.0)
    sig = schedules.vp_sigmas(4, path).double().tolist()
    if churn:
        sched = VPScheduler.from_config(cfg, solver=solver, s_churn=churn, s_noise=0.0,
                                        s_tmax=sig[1])
    ref, _ = run(cog, sched)
    emb = torch.cat([kw["negative_prompt_embeds"], kw["prompt_embeds"]])
    den = as_denoiser(pipe.transformer, path.alpha_bar, "v",
                      guidance_scale=kw["guidance_scale"], encoder_hidden_states=emb)
    x = sample_edm(den, lat.clone(), sig, order=2 if solver == "heun" else 1, s_churn=churn,
                   s_noise=0.0, s_tmax=sig[1] if churn else float("inf"),
                   init=lambda noise, s0: noise * (1 + s0 * s0) ** 0.5)
    # the last step ends at abar' = 1 (set_alpha_to_one), where x_vp = x_edm; float32
    # arithmetic through the EDM scale σ_0 ≈ 14.6 costs ~15 · 6e-8 relative: 1e-5
    assert rel(x, ref) <= 1e-5
    if churn:  # churn changed the result (the comparison is not vacuous)
        plain, _ = run(cog, VPScheduler.from_config(cfg, solver=solver))
        assert rel(plain, ref) > 1e-3


@given(n=st.integers(1, 150), shift=st.floats(0.2, 20.0),
       big_n=st.sampled_from([2, 10, 1000, 1001]))
@settings(max_examples=40, deadline=None)
def test_diffusers_flow_grid_property(n, shift, big_n):
    """Over steps, shifts and training grids: diffusers' default grid, and FlowScheduler's."""
    ref = D.FlowMatchEulerDiscreteScheduler(shift=shift, num_train_timesteps=big_n)
    ref.set_timesteps(n)
    got = schedules.diffusers_flow_grid(n, shift, big_n)
    # diffusers computes its grid ends shift(1) and shift(1/N) in float32 (a few ulps, 6e-8
    # each) and shifts again, which scales an error at σ by the shift's slope, at most
    # max(s, 1/s): a bound of 4 ulps times (1 + max(s, 1/s))
    torch.testing.assert_close(got, ref.sigmas, rtol=0,
                               atol=2.4e-7 * (1 + max(shift, 1 / shift)))
    ours = FlowScheduler(shift=shift, num_train_timesteps=big_n)
    ours.set_timesteps(n)
    assert torch.equal(ours.sigmas, ref.sigmas) and torch.equal(ours.timesteps, ref.timesteps)


@pytest.mark.parametrize("cls,cfg", [(FlowScheduler, dict(shift=3.0, solver="heun")),
                                     (VPScheduler, dict(COG_CONFIG, solver="heun"))])
def test_half_precision_steps_in_float32(cls, cfg):
    """bf16 in, bf16 out, updated in float32: equals the float32 run rounded once per step."""
    s32, s16 = cls.from_config(cfg), cls.from_config(cfg)
    s32.set_timesteps(5)
    s16.set_timesteps(5)
    x32 = torch.randn(2, 4, 3, 3, generator=_gen(3))
    x16 = x32.to(torch.bfloat16)
    for k, t in enumerate(s32.timesteps):
        out = torch.randn(2, 4, 3, 3, generator=_gen(10 + k)).to(torch.bfloat16)
        x32 = s32.step(out.float(), t, x16.float()).prev_sample  # same bf16 inputs
        x16 = s16.step(out, t, x16).prev_sample
        assert x16.dtype == torch.bfloat16
        # one bf16 rounding of the float32 result (relative 2^-8)
        torch.testing.assert_close(x16.float(), x32, rtol=2**-8, atol=1e-6)


def test_as_flow_model_matches_pipeline_hunyuan(hunyuan):
    """HunyuanVideo's embedded guidance goes through call_kwargs (guidance = 1000·scale)."""
    pipe, _, lat, kw, _ = hunyuan
    ref, _ = run(hunyuan, D.FlowMatchEulerDiscreteScheduler.from_config(hunyuan[1]))
    model = as_flow_model(pipe.transformer, encoder_hidden_states=kw["prompt_embeds"],
                          encoder_attention_mask=kw["prompt_attention_mask"],
                          pooled_projections=kw["pooled_prompt_embeds"],
                          guidance=torch.tensor([6.0 * 1000.0]))  # the pipeline's default 6.0
    got = sample_flow(model, lat.clone(), schedules.shift(schedules.linear(4), 7.0))
    assert rel(got, ref) <= TOL
