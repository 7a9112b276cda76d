"""vidnoise.diffusers used as pipelines and users use a diffusers scheduler, beyond
set_timesteps/step: partial schedules (strength < 1), scale_noise / add_noise, begin_index,
repeated set_timesteps, interrupted loops, config round trips, output classes, half precision,
B = 0 and meta tensors. Every check is against the native diffusers scheduler run here.
"""

from __future__ import annotations

import pytest
import torch

from _harness import COG_CONFIG, prompts, tiny_pipeline, tiny_transformer

D = pytest.importorskip("diffusers")

from vidnoise.diffusers import FlowScheduler, VPScheduler  # noqa: E402

FM = D.FlowMatchEulerDiscreteScheduler
COG = D.CogVideoXDDIMScheduler


def _pair(flow=True, **cfg):
    nat = FM(**cfg) if flow else COG(**{**COG_CONFIG, **cfg})
    ours = (FlowScheduler if flow else VPScheduler).from_config(nat.config)
    return nat, ours


def _model(x, t):
    """A cheap deterministic stand-in for a transformer (depends on x and t)."""
    return 0.3 * x + 0.001 * t.float().reshape(-1)[0] - 0.2


def _data(shape=(2, 4, 3, 5, 6), dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g).to(dtype), torch.randn(shape, generator=g).to(dtype))


def _begin(s, k=0):
    """set_begin_index where the scheduler has it (CogVideoXDDIMScheduler has none: it reads
    the timestep value in step)."""
    if hasattr(s, "set_begin_index"):
        s.set_begin_index(k)


def _video2video(s, steps, t_start, x0, noise, *, flow=True, **kw):
    """The loop of WanVideoToVideoPipeline / CogVideoXVideoToVideoPipeline for strength < 1:
    slice ``timesteps[t_start * order:]``, noise the data at the first kept timestep (no
    set_begin_index), then step through the kept timesteps."""
    s.set_timesteps(steps, **kw)
    ts = s.timesteps[t_start * s.order:]
    lt = ts[:1].repeat(x0.shape[0])
    lat = s.scale_noise(x0, lt, noise) if flow else s.add_noise(x0, noise, lt)
    for t in ts:
        lat = s.step(_model(lat, t), t, lat, return_dict=False)[0]
    return lat


# ---------------------------------------------------------------- partial schedules
@pytest.mark.parametrize("cfg", [dict(shift=3.0), dict(shift=5.0, invert_sigmas=True),
                                 dict(use_dynamic_shifting=True, shift_terminal=0.1)])
@pytest.mark.parametrize("t_start", [1, 4, 9])
def test_flow_strength_below_one_matches_native(cfg, t_start):
    """Wan video2video slices timesteps without set_begin_index; the native scheduler finds
    the start from the timestep value. Before: the counter started at 0 (max diff 0.08)."""
    kw = dict(mu=0.7) if cfg.get("use_dynamic_shifting") else {}
    nat, ours = _pair(**cfg)
    x0, noise = _data()
    ref = _video2video(nat, 10, t_start, x0, noise, **kw)
    got = _video2video(ours, 10, t_start, x0, noise, **kw)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    assert ours.step_index == nat.step_index == 10


@pytest.mark.parametrize("solver", ["heun", "midpoint"])
def test_two_call_solver_slice_starts_at_a_step(solver):
    """With order 2, ``timesteps[k*2:]`` starts at step k's first call: Heun lists t_k twice
    (corrector of step k-1, predictor of step k); diffusers' rule takes the second."""
    s = FlowScheduler(shift=3.0, solver=solver)
    x0, noise = _data()
    got = _video2video(s, 6, 2, x0, noise)
    assert s.begin_index == 4
    ref = FlowScheduler(shift=3.0, solver=solver)
    ref.set_timesteps(6)
    ref.set_begin_index(4)
    lat = ref.scale_noise(x0, ref.timesteps[4:5], noise)
    for t in ref.timesteps[4:]:
        lat = ref.step(_model(lat, t), t, lat).prev_sample
    torch.testing.assert_close(got, lat, rtol=0, atol=0)


def test_scale_noise_per_item_timesteps_match_native():
    """Training-style use: one timestep per item. Before: every item got item 0's σ."""
    nat, ours = _pair(shift=3.0)
    for s in (nat, ours):
        s.set_timesteps(10)
    x0, noise = _data((3, 4, 2, 2))
    idx = [1, 7, 9]
    ref = nat.scale_noise(x0, nat.timesteps[idx], noise)
    got = ours.scale_noise(x0, ours.timesteps[idx], noise)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    assert ours.begin_index is None  # mixed indices set no start


def test_scale_noise_bad_inputs_are_named():
    s = FlowScheduler(shift=3.0)
    s.set_timesteps(4)
    x0, noise = _data((2, 3))
    with pytest.raises(ValueError, match=r"timestep=123\.0.*scheduler\.timesteps"):
        s.scale_noise(x0, torch.tensor([123.0, 123.0]), noise)  # before: IndexError
    with pytest.raises(ValueError, match="noise must have sample's shape"):
        s.scale_noise(x0, s.timesteps[:1], noise[:1])
    with pytest.raises(ValueError, match="1 or 2 values"):
        s.scale_noise(x0, s.timesteps[:3], noise)
    with pytest.raises(ValueError, match="set_timesteps"):
        FlowScheduler().scale_noise(x0, torch.tensor([1000.0]), noise)


def test_scale_noise_inside_a_run_uses_step_index():
    """Inpainting-style: scale_noise after some steps noises at the current call's σ."""
    nat, ours = _pair(shift=3.0)
    x0, noise = _data((2, 3, 4))
    outs = []
    for s in (nat, ours):
        s.set_timesteps(8)
        s.set_begin_index(0)
        lat = noise.clone()
        for t in s.timesteps[:3]:
            lat = s.step(_model(lat, t), t, lat).prev_sample
        outs.append(s.scale_noise(x0, s.timesteps[3:4].repeat(2), noise))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- VP (CogVideoX)
def test_vp_add_noise_matches_native():
    """CogVideoX video2video calls scheduler.add_noise. Before: AttributeError."""
    nat, ours = _pair(flow=False)
    x0, noise = _data((3, 4, 2, 2))
    t = torch.tensor([0, 500, 999])
    torch.testing.assert_close(ours.add_noise(x0, noise, t), nat.add_noise(x0, noise, t),
                               rtol=1e-6, atol=1e-6)
    with pytest.raises(TypeError, match="timesteps must be integers"):
        ours.add_noise(x0, noise, torch.tensor([1.5, 2.0, 3.0]))
    with pytest.raises(ValueError, match="noise must have"):
        ours.add_noise(x0, noise[:1], t)


@pytest.mark.parametrize("t_start", [0, 3, 9])
def test_vp_strength_below_one_matches_native(t_start):
    """CogVideoX video2video: sliced timesteps, add_noise, no set_begin_index; the native
    DDIM reads the timestep value in step. Before: AttributeError (no add_noise)."""
    nat, ours = _pair(flow=False)
    x0, noise = _data()
    ref = _video2video(nat, 10, t_start, x0, noise, flow=False)
    got = _video2video(ours, 10, t_start, x0, noise, flow=False)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_vp_step_returns_pred_original_sample():
    """DDIM's output carries pred_original_sample (x0). Before: absent / None."""
    nat, ours = _pair(flow=False)
    x, _ = _data((1, 4, 2, 3))
    for s in (nat, ours):
        s.set_timesteps(5)
    for t in nat.timesteps:
        a = nat.step(_model(x, t), t, x)
        b = ours.step(_model(x, t), t, x)
        torch.testing.assert_close(b.pred_original_sample, a.pred_original_sample,
                                   rtol=1e-5, atol=1e-5)
        tup = ours.__class__.from_config(ours.config)
        tup.set_timesteps(5)
        assert len(tup.step(_model(x, t), t, x, return_dict=False)) == 2
        x = a.prev_sample


# ---------------------------------------------------------------- state and API
@pytest.mark.parametrize("flow", [True, False])
def test_set_timesteps_twice_and_interrupted_loop_reset(flow):
    """A loop stopped half way, then set_timesteps again: the counter restarts as native."""
    nat, ours = _pair(flow)
    x, _ = _data((1, 3, 4))
    for s in (nat, ours):
        s.set_timesteps(6)
        _begin(s)
        lat = x.clone()
        for t in s.timesteps[:3]:
            lat = s.step(_model(lat, t), t, lat).prev_sample
        s.set_timesteps(4)
        assert s.num_inference_steps == 4
        if hasattr(s, "begin_index"):
            assert s.step_index is None and s.begin_index is None
    outs = []
    for s in (nat, ours):
        lat = x.clone()
        for t in s.timesteps:
            lat = s.step(_model(lat, t), t, lat).prev_sample
        outs.append(lat)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)


def test_timesteps_and_sigmas_dtype_device_match_native():
    nat, ours = _pair(shift=3.0)
    for s in (nat, ours):
        s.set_timesteps(7, device="meta")
    for name in ("timesteps", "sigmas"):
        a, b = getattr(nat, name), getattr(ours, name)
        assert (a.dtype, a.device, a.shape) == (b.dtype, b.device, b.shape), name
    nat, ours = _pair(flow=False)
    for s in (nat, ours):
        s.set_timesteps(7, device="meta")
    assert (nat.timesteps.dtype, nat.timesteps.device) == (ours.timesteps.dtype,
                                                           ours.timesteps.device)
    assert ours.init_noise_sigma == nat.init_noise_sigma
    x = torch.randn(2, 3)
    assert ours.scale_model_input(x, 5) is x


@pytest.mark.parametrize("flow", [True, False])
def test_config_round_trips(flow, tmp_path):
    """save_config / from_pretrained, and native -> ours -> native keep every native key."""
    nat, ours = _pair(flow, **({"shift": 7.0} if flow else {}))
    ours.save_config(tmp_path)
    again = type(ours).from_pretrained(tmp_path)
    assert {k: v for k, v in again.config.items() if not k.startswith("_")} == \
        {k: v for k, v in ours.config.items() if not k.startswith("_")}
    back = type(nat).from_config(ours.config)
    for k, v in nat.config.items():
        if not k.startswith("_"):
            assert back.config[k] == v, k


@pytest.mark.parametrize("flow", [True, False])
@pytest.mark.parametrize("shape", [(0, 4, 2, 3), (2, 4, 2, 3)])
def test_half_precision_and_empty_batch_follow_native(flow, shape):
    """bf16 latents: ours steps in float32 (closer to the float32 run than the native VP
    DDIM, which works in bf16); the flow native also works in float32, so it matches to
    bf16 rounding of the result (one ulp, 2^-8 relative). B = 0 passes through."""
    nat, ours = _pair(flow)
    x, _ = _data(shape)
    res = {}
    for dt in (torch.float32, torch.bfloat16):
        for name, s in (("nat", nat), ("ours", ours)):
            s.set_timesteps(4)
            _begin(s)
            lat = x.to(dt)
            for t in s.timesteps:
                lat = s.step(_model(lat, t).to(dt), t, lat).prev_sample
            assert lat.dtype == dt and lat.shape == shape
            res[name, dt] = lat.float()
    if shape[0] == 0:
        return
    torch.testing.assert_close(res["ours", torch.float32], res["nat", torch.float32],
                               rtol=1e-5, atol=1e-5)
    err_ours = (res["ours", torch.bfloat16] - res["nat", torch.float32]).abs().max()
    err_nat = (res["nat", torch.bfloat16] - res["nat", torch.float32]).abs().max()
    assert err_ours <= err_nat + 2**-7 * res["nat", torch.float32].abs().max()


def test_scale_noise_and_add_noise_are_sync_free_inside_a_run_on_meta():
    """With begin_index set (as Wan/Mochi/HunyuanVideo pipelines do) no value is read."""
    s = FlowScheduler(shift=3.0)
    s.set_timesteps(5, device="meta")
    s.set_begin_index(2)
    x = torch.empty(2, 3, device="meta")
    assert s.scale_noise(x, s.timesteps[2:3], torch.empty_like(x)).device.type == "meta"
    v = VPScheduler.from_config(COG_CONFIG)
    v.set_timesteps(5, device="meta")
    v.set_begin_index(0)
    t = torch.empty(2, dtype=torch.int64, device="meta")
    assert v.add_noise(x, torch.empty_like(x), t).device.type == "meta"


def test_scale_noise_after_the_last_step_is_the_end_sigma():
    """After a full run the next call index is past the schedule: σ = end (0), as native.
    Before: IndexError."""
    nat, ours = _pair(shift=3.0)
    x0, noise = _data((2, 3))
    outs = []
    for s in (nat, ours):
        s.set_timesteps(3)
        s.set_begin_index(0)
        lat = noise.clone()
        for t in s.timesteps:
            lat = s.step(_model(lat, t), t, lat).prev_sample
        outs.append(s.scale_noise(x0, s.timesteps[:1].repeat(2), noise))
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)
    torch.testing.assert_close(outs[1], x0, rtol=0, atol=0)


def test_index_for_timestep_and_get_velocity_match_native():
    nat, ours = _pair(shift=3.0)
    for s in (nat, ours):
        s.set_timesteps(6)
    for k in range(6):
        assert ours.index_for_timestep(ours.timesteps[k]) == nat.index_for_timestep(
            nat.timesteps[k]) == k
    nat, ours = _pair(flow=False)
    x0, noise = _data((3, 4, 2))
    t = torch.tensor([0, 400, 999])
    torch.testing.assert_close(ours.get_velocity(x0, noise, t), nat.get_velocity(x0, noise, t),
                               rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- per-token timesteps
@pytest.mark.parametrize("shape", [(2, 12, 8), (1, 5, 3)])
def test_per_token_timesteps_match_native(shape):
    """LTX-Video's condition pipeline passes per_token_timesteps (conditioning tokens at
    t = 0, the rest at t). Before: ValueError (unsupported), so that pipeline could not run."""
    cfg = dict(use_dynamic_shifting=True, shift_terminal=0.1, base_shift=0.95, max_shift=2.05,
               base_image_seq_len=1024, max_image_seq_len=4096)
    nat, ours = _pair(**cfg)
    x, _ = _data(shape)
    res = []
    for s in (nat, ours):
        s.set_timesteps(6, mu=1.2)
        lat = x.clone()
        for t in s.timesteps:
            ptt = t.expand(shape[:2]).clone()
            ptt[:, :2] = 0.0  # conditioning tokens
            lat = s.step(-(0.3 * lat + 0.1), t, lat, per_token_timesteps=ptt,
                         return_dict=False)[0]
        res.append(lat)
    torch.testing.assert_close(res[1], res[0], rtol=0, atol=0)
    s = FlowScheduler(solver="heun")
    s.set_timesteps(3)
    with pytest.raises(ValueError, match="per_token_timesteps.*euler"):
        s.step(x, s.timesteps[0], x, per_token_timesteps=torch.zeros(shape[:2]))
    s = FlowScheduler()
    s.set_timesteps(3)
    with pytest.raises(ValueError, match="per_token_timesteps must broadcast"):
        s.step(x, s.timesteps[0], x, per_token_timesteps=torch.zeros(shape[0], 99))


# ---------------------------------------------------------------- real pipelines (slow)
def _frames(n, size, seed=0):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random((size, size, 3)) * 255).astype("uint8"))
            for _ in range(n)]


def _both(pipe, native, ours, **kw):
    outs = []
    for s in (native, ours):
        pipe.scheduler = s
        with torch.no_grad():
            outs.append(pipe(generator=torch.Generator().manual_seed(0), output_type="latent",
                             **kw).frames)
    return outs


@pytest.mark.slow
def test_wan_video2video_strength_half_matches_native():
    """WanVideoToVideoPipeline, strength 0.5. Before: max diff 1.42 (latents of max 3.8)."""
    sched = FM(shift=7.0)
    pipe = tiny_pipeline(
        D.WanVideoToVideoPipeline, tiny_transformer("wan"), sched,
        vae=D.AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                               temperal_downsample=[False, True, True]).eval())
    g = torch.Generator().manual_seed(1)
    kw = prompts(g, 8, 32)
    for strength in (0.5, 0.75):
        ref, got = _both(pipe, sched, FlowScheduler.from_config(sched.config),
                         video=_frames(5, 32), **kw, height=32, width=32,
                         num_inference_steps=4, strength=strength, guidance_scale=5.0)
        assert float((got - ref).abs().max()) <= 1e-5 * float(ref.abs().max())


@pytest.mark.slow
def test_cogvideox_video2video_strength_half_matches_native():
    """CogVideoXVideoToVideoPipeline (add_noise, sliced timesteps). Before: AttributeError."""
    sched = COG(**COG_CONFIG)
    pipe = tiny_pipeline(
        D.CogVideoXVideoToVideoPipeline, tiny_transformer("cog"), sched,
        vae=D.AutoencoderKLCogVideoX(
            in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8),
            latent_channels=4, layers_per_block=1, norm_num_groups=2,
            temporal_compression_ratio=4).eval())
    g = torch.Generator().manual_seed(5)
    ref, got = _both(pipe, sched, VPScheduler.from_config(sched.config), video=_frames(9, 16),
                     **prompts(g, 16, 32), height=16, width=16,
                     num_inference_steps=4, strength=0.5, guidance_scale=6.0)
    assert float((got - ref).abs().max()) <= 1e-5 * float(ref.abs().max())


@pytest.mark.slow
def test_ltx_condition_pipeline_with_image_matches_native():
    """LTXConditionPipeline (per-token timesteps, an image condition). Before: ValueError."""
    tr = tiny_transformer("ltx")
    vae = D.AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False,) * 5, upsample_residual=(False,) * 4,
        upsample_factor=(1,) * 4, timestep_conditioning=False, patch_size=1, patch_size_t=1,
        encoder_causal=True, decoder_causal=False).eval()
    sched = FM()  # the condition pipeline passes linear-quadratic timesteps, no mu
    pipe = tiny_pipeline(D.LTXConditionPipeline, tr, sched, vae=vae)
    g = torch.Generator().manual_seed(4)
    ref, got = _both(pipe, sched, FlowScheduler.from_config(sched.config),
                     image=_frames(1, 32)[0], **prompts(g, 8, 32, mask=True), height=32,
                     width=32, num_frames=9, num_inference_steps=4, guidance_scale=3.0)
    assert float((got - ref).abs().max()) <= 1e-5 * float(ref.abs().max())


# ---------------------------------------------------------------- adapters
class _Stub(torch.nn.Module):
    """A transformer stand-in that insists on diffusers' (B,) timestep."""

    def forward(self, hidden_states, timestep, return_dict=False, **kw):
        assert timestep.dim() == 1 and timestep.shape[0] == hidden_states.shape[0], \
            tuple(timestep.shape)
        t = timestep.reshape((-1,) + (1,) * (hidden_states.dim() - 1))
        return ((0.5 * hidden_states + t / 1000).to(hidden_states.dtype),)


def _adapters():
    from vidnoise.diffusers import as_denoiser, as_flow_model
    from vidnoise.paths import VPPath

    ab = VPPath().alpha_bar
    return [as_flow_model(_Stub()), as_flow_model(_Stub(), guidance_scale=2.0),
            as_denoiser(_Stub(), ab), as_denoiser(_Stub(), ab, guidance_scale=2.0)]


@pytest.mark.parametrize("k", range(4))
def test_adapters_take_float_and_0d_sigma(k):
    """Before: a float or 0-d σ crashed (AttributeError / cat of 0-d tensors) or reached the
    transformer as a 0-d timestep."""
    f = _adapters()[k]
    x, _ = _data((2, 3, 4))
    ref = f(x, torch.tensor([0.5, 0.5]))
    for s in (0.5, torch.tensor(0.5), torch.tensor([0.5]),
              torch.tensor([0.5], dtype=torch.float64)):
        torch.testing.assert_close(f(x, s), ref, rtol=1e-6, atol=1e-6)
    assert f(x[:0], torch.zeros(0) + 0.5).shape == (0, 3, 4)
    for bad in (torch.full((3,), 0.5), torch.full((2, 2), 0.5)):
        with pytest.raises(ValueError, match=r"sigma must be .*\(B,\) = \(2,\)"):
            f(x, bad)
    with pytest.raises(ValueError, match="sigma"):
        f(x, -1.0)


def test_vp_add_noise_off_the_schedule_after_set_timesteps():
    """Training-style add_noise at any integer t still works after set_timesteps (the
    start look-up is best effort) and sets no begin_index."""
    nat, ours = _pair(flow=False)
    for s in (nat, ours):
        s.set_timesteps(10)
    x0, noise = _data((2, 3))
    t = torch.tensor([5, 500])
    torch.testing.assert_close(ours.add_noise(x0, noise, t), nat.add_noise(x0, noise, t),
                               rtol=1e-6, atol=1e-6)
    assert ours.begin_index is None


def test_custom_grid_slips_raise_with_the_fix():
    """A vidnoise grid (N + 1 values ending at 0) passed as diffusers' sigmas runs a wasted
    call at σ = 0 in the native scheduler; timesteps passed as sigmas are shifted nonsense.
    Before: both silently accepted."""
    from vidnoise import schedules

    grid = schedules.diffusers_flow_grid(4, 3.0)
    nat = FM()
    nat.set_timesteps(sigmas=grid.tolist())
    assert len(nat.timesteps) == 5 and float(nat.sigmas[-2]) == 0.0  # the wasted call
    s = FlowScheduler()
    with pytest.raises(ValueError, match=r"sigmas must not end with 0.*sigmas\[:-1\]"):
        s.set_timesteps(sigmas=grid.tolist())
    with pytest.raises(ValueError, match=r"timesteps must not end with 0"):
        s.set_timesteps(timesteps=(grid * 1000).tolist())
    with pytest.raises(ValueError, match=r"sigmas must be noise fractions in \[0, 1\].*1000"):
        s.set_timesteps(sigmas=(grid[:-1] * 1000).tolist())
    with pytest.raises(ValueError, match=r"noise fractions"):
        s.set_timesteps(sigmas=[1.0, float("nan")])
    s.set_timesteps(sigmas=grid[:-1].tolist())  # the fix
    assert len(s.timesteps) == 4


def test_vp_heun_strength_below_one_is_refused_early():
    """Zero-SNR VP Heun has 2N - 2 calls (the step from abar = 0 is Euler), so
    timesteps[k*2:] is not a step start. Before (with add_noise): a wrong start, then a
    'step called' error at the loop's last call; now a named error at add_noise."""
    s = VPScheduler.from_config(COG_CONFIG, solver="heun")
    x0, noise = _data((1, 3))
    s.set_timesteps(4)
    assert len(s.timesteps) == 6
    with pytest.raises(ValueError, match="solver='euler' for video2video"):
        s.add_noise(x0, noise, s.timesteps[2:3])
    assert s.begin_index is None
    s.set_timesteps(4)
    s.set_begin_index(1)  # the documented way: step 1 starts at call 1
    s.add_noise(x0, noise, s.timesteps[1:2])
