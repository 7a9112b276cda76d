"""vidnoise.presets against diffusers' schedulers (real model configs) and the official formulas."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from vidnoise import presets, schedules
from vidnoise.paths import VPPath
from vidnoise.pyramid import PyramidSchedule

REQUIRED = {"mochi-1", "hunyuanvideo", "ltx-video", "wan2.1-t2v-14b", "wan2.1-i2v-480p",
            "wan2.2-t2v-a14b", "cogvideox-2b", "cogvideox-5b", "sd3", "flux", "pyramid-flow",
            "diamond"}
# float32 grids computed by two float64 routes: a few float32 ulps
ATOL = 2e-7


def test_names_and_frozen():
    assert REQUIRED <= set(presets.names())
    p = presets.get("sd3")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.steps = 3
    with pytest.raises(ValueError, match="name"):
        presets.get("sd4")
    for name in presets.names():
        p = presets.get(name)
        assert p.sources and p.timestep and p.prediction
        if p.alternative is not None:
            assert presets.get(p.alternative).alternative == name


@pytest.mark.parametrize("name", sorted(set(presets.names()) - {"pyramid-flow"}))
@pytest.mark.parametrize("steps", [None, 1, 7])
def test_grid_shape(name, steps):
    p = presets.get(name)
    if steps == 1 and p.grid == "linear-quadratic":
        steps = 2  # Mochi's grid needs two steps
    if steps == 1 and p.grid == "ltx":
        with pytest.raises(ValueError, match="steps"):
            p.sigmas(1)
        return
    g = p.sigmas(steps)
    n = p.steps if steps is None else steps
    assert g.shape == (n + 1,) and g.dtype == torch.float32
    assert float(g[-1]) == 0.0 and float(g[0]) <= 1.0
    assert (g[1:] < g[:-1]).all()


# ----------------------------------------------------------------- against diffusers
D = pytest.importorskip("diffusers")


@pytest.mark.parametrize("steps", [28, 5, 1])
def test_sd3_is_diffusers_default(steps):
    ref = D.FlowMatchEulerDiscreteScheduler(shift=3.0)
    ref.set_timesteps(steps)
    torch.testing.assert_close(presets.get("sd3").sigmas(steps), ref.sigmas, rtol=0, atol=ATOL)


@pytest.mark.parametrize("steps", [50, 9])
def test_hunyuan_vs_diffusers(steps):
    ref = D.FlowMatchEulerDiscreteScheduler(shift=7.0)
    ref.set_timesteps(sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1])  # the pipeline's call
    torch.testing.assert_close(presets.get("hunyuanvideo").sigmas(steps), ref.sigmas, rtol=0,
                               atol=ATOL)


@pytest.mark.parametrize("steps", [64, 10])
def test_mochi_vs_diffusers(steps):
    from diffusers.pipelines.mochi.pipeline_mochi import linear_quadratic_schedule

    ref = D.FlowMatchEulerDiscreteScheduler(invert_sigmas=True)
    ref.set_timesteps(sigmas=np.array(linear_quadratic_schedule(steps, 0.025)))
    torch.testing.assert_close(presets.get("mochi-1").sigmas(steps), 1 - ref.sigmas, rtol=0,
                               atol=ATOL)


LTX_CONFIG = dict(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                  base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1)


@pytest.mark.parametrize("size", [(512, 704, 161, 50), (480, 832, 97, 12), (64, 64, 9, 4)])
def test_ltx_vs_diffusers(size):
    from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift

    h, w, f, n = size
    seq = ((f - 1) // 8 + 1) * (h // 32) * (w // 32)  # the pipeline's video_sequence_length
    ref = D.FlowMatchEulerDiscreteScheduler(**LTX_CONFIG)
    ref.set_timesteps(sigmas=np.linspace(1.0, 1 / n, n),
                      mu=calculate_shift(seq, 1024, 4096, 0.95, 2.05))
    p = presets.get("ltx-video")
    assert p.seq_len(height=h, width=w, frames=f) == seq
    torch.testing.assert_close(p.sigmas(n, height=h, width=w, frames=f), ref.sigmas, rtol=0,
                               atol=ATOL)


@pytest.mark.parametrize("size", [(768, 1360, 50), (1024, 1024, 28), (512, 512, 4)])
def test_flux_vs_diffusers_and_official(size):
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    h, w, n = size
    seq = (h // 16) * (w // 16)
    ref = D.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5,
                                            max_shift=1.15, base_image_seq_len=256,
                                            max_image_seq_len=4096)
    mu = calculate_shift(seq, 256, 4096, 0.5, 1.15)
    ref.set_timesteps(sigmas=np.linspace(1.0, 1 / n, n), mu=mu)
    got = presets.get("flux").sigmas(n, height=h, width=w)
    torch.testing.assert_close(got, ref.sigmas, rtol=0, atol=ATOL)
    # black-forest-labs/flux sampling.get_schedule, recomputed here
    m = (1.15 - 0.5) / (4096 - 256)
    mu_off = m * seq + (0.5 - m * 256)
    t = np.linspace(1, 0, n + 1)
    with np.errstate(divide="ignore"):
        off = np.where(t > 0, math.exp(mu_off) / (math.exp(mu_off) + (1 / t - 1)), 0.0)
    torch.testing.assert_close(got.double(), torch.from_numpy(off), rtol=0, atol=ATOL)


def _wan_official(n, shift, big_n=1000):
    """Wan's FlowUniPCMultistepScheduler(shift=1).set_timesteps(n, shift=shift), recomputed."""
    alphas = np.linspace(1, 1 / big_n, big_n)[::-1].copy()
    train = 1.0 - alphas  # constructor grid with shift 1
    s = np.linspace(train[0], train[-1], n + 1)[:-1]
    s = shift * s / (1 + (shift - 1) * s)
    return np.concatenate([s, [0.0]])


@pytest.mark.parametrize("name", ["wan2.1-t2v-14b", "wan2.1-i2v-480p", "wan2.2-t2v-a14b"])
@pytest.mark.parametrize("steps", [None, 10])
def test_wan_official_and_diffusers(name, steps):
    p = presets.get(name)
    n = p.steps if steps is None else steps
    torch.testing.assert_close(p.sigmas(steps).double(),
                               torch.from_numpy(_wan_official(n, p.shift)), rtol=0, atol=ATOL)
    ref = D.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                    flow_shift=p.shift)
    ref.set_timesteps(n)
    alt = presets.get(p.alternative)
    torch.testing.assert_close(alt.sigmas(steps), ref.sigmas, rtol=0, atol=ATOL)
    # the two codebases differ: official starts at shift(1 - 1/N) < 1
    assert float((p.sigmas(steps) - alt.sigmas(steps)).abs().max()) > 1e-4


def test_wan22_switch_step_brute_force_and_shift():
    p = presets.get("wan2.2-t2v-a14b")
    for shift in (1.0, 5.0, 12.0, 20.0):
        t = torch.from_numpy(_wan_official(40, shift)[:-1]).float() * 1000
        high = sum(1 for v in t.tolist() if v >= 875.0)  # the reference's per-step test
        assert p.switch_step(shift=shift) == high
    steps = [p.switch_step(shift=s) for s in (1.0, 3.0, 5.0, 12.0, 20.0)]
    assert steps == sorted(steps) and steps[0] < steps[-1]  # the boundary moves with shift
    with pytest.raises(ValueError, match="expert"):
        presets.get("sd3").switch_step()


@pytest.mark.parametrize("name,snr", [("cogvideox-2b", 3.0), ("cogvideox-5b", 1.0)])
@pytest.mark.parametrize("steps", [50, 7])
def test_cogvideox_vs_diffusers(name, snr, steps):
    ref = D.CogVideoXDDIMScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True,
                                   timestep_spacing="trailing", snr_shift_scale=snr)
    ref.set_timesteps(steps)
    p = presets.get(name)
    assert torch.equal(p.vp_timesteps(steps), ref.timesteps)
    ab = ref.alphas_cumprod.double()
    torch.testing.assert_close(p.path().alpha_bar, ab, rtol=0, atol=1e-12)
    a = ab[ref.timesteps]
    flow = torch.sqrt(1 - a) / (torch.sqrt(a) + torch.sqrt(1 - a))
    torch.testing.assert_close(p.sigmas(steps)[:-1].double(), flow, rtol=0, atol=ATOL)
    assert float(p.sigmas(steps)[0]) == 1.0  # zero terminal SNR
    torch.testing.assert_close(p.edm_sigmas(steps), schedules.vp_sigmas(steps,
                               VPPath.cogvideox(snr)))


def test_diamond_and_pyramid():
    d = presets.get("diamond")
    torch.testing.assert_close(d.edm_sigmas(), torch.tensor([5.0, 0.283, 0.002, 0.0]),
                               rtol=0, atol=1e-3)  # published 3-step grid (schedules.karras)
    assert dict(d.edm)["init"] == "unit"
    torch.testing.assert_close(d.sigmas(), d.edm_sigmas() / (1 + d.edm_sigmas()))
    p = presets.get("pyramid-flow")
    assert p.schedule() == PyramidSchedule()
    with pytest.raises(ValueError, match="schedule"):
        p.sigmas()
    with pytest.raises(ValueError, match="flow model"):
        presets.get("sd3").edm_sigmas()


def test_bad_sizes():
    p = presets.get("ltx-video")
    with pytest.raises(ValueError, match="height"):
        p.sigmas(4, height=0)
    with pytest.raises(TypeError, match="steps"):
        p.sigmas(4.5)
    with pytest.raises(ValueError, match="resolution"):
        presets.get("sd3").mu()


# ----------------------------------------------------------------- bad inputs (review)
def test_unknown_name_lists_every_name():
    for bad in ("sd4", "", "WAN2.1-T2V-14B"):
        with pytest.raises(ValueError) as e:
            presets.get(bad)
        assert repr(bad) in str(e.value) or bad in str(e.value)
        assert all(n in str(e.value) for n in presets.names())


@pytest.mark.parametrize("name", sorted(set(presets.names()) - {"pyramid-flow"}))
def test_steps_errors_name_steps(name):
    p = presets.get(name)
    for bad in (0, -3):
        with pytest.raises(ValueError, match=r"steps.*got " + str(bad)):
            p.sigmas(bad)
    for bad in (2.5, True, "10"):
        with pytest.raises(TypeError, match="steps"):
            p.sigmas(bad)


def test_steps_range_of_the_grid_rule_is_named():
    """Before: 'n must be >= 2' (Mochi) and 'n must be ... <= 1000' (CogVideoX) named an
    argument the caller never passed."""
    with pytest.raises(ValueError, match=r"^steps must be >= 2, got 1"):
        presets.get("mochi-1").sigmas(1)
    with pytest.raises(ValueError, match=r"^steps must be >= 1 and <= 1000, got 1001"):
        presets.get("cogvideox-2b").sigmas(1001)
    with pytest.raises(ValueError, match=r"^steps must be"):
        presets.get("cogvideox-5b").edm_sigmas(1001)
    assert presets.get("cogvideox-2b").sigmas(1000).shape == (1001,)


@pytest.mark.parametrize("name, key, bad, fix", [
    ("ltx-video", "height", 500, "480 or 512"),       # diffusers LTXPipeline: % 32 raises
    ("ltx-video", "width", 700, "672 or 704"),
    ("wan2.1-t2v-14b", "height", 721, "720 or 736"),  # WanPipeline: % 16 raises
    ("flux", "width", 1000, "992 or 1008"),           # FluxPipeline resizes to % 16
    ("flux", "height", 8, "use 16"),                  # before: seq_len=0 error
    ("ltx-video", "frames", 20, "17 or 25"),          # 1 + 8k frames
    ("wan2.2-t2v-a14b", "frames", 80, "77 or 81"),    # 1 + 4k frames
    ("flux", "frames", 5, "image model"),
])
def test_sizes_off_the_latent_grid_raise(name, key, bad, fix):
    """Before: silently floored (ltx height 500 gave the grid of 480)."""
    p = presets.get(name)
    with pytest.raises(ValueError, match=rf"{key}={bad}.*{fix}"):
        p.sigmas(8, **{key: bad})
    if p.dynamic is not None:
        with pytest.raises(ValueError, match=rf"{key}={bad}"):
            p.mu(**{key: bad})


def test_every_preset_is_immutable_and_hashable():
    for name in presets.names():
        p = presets.get(name)
        for f in dataclasses.fields(p):
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(p, f.name, getattr(p, f.name))
            assert not isinstance(getattr(p, f.name), (list, dict, set, np.ndarray,
                                                       torch.Tensor)), (name, f.name)
        hash(p)
        assert presets.get(name) is p  # one shared object, so immutability matters


def test_every_source_names_a_repository_file():
    """Each preset cites where its values come from: an owner/repo or 'diffusers' and a file."""
    for name in presets.names():
        p = presets.get(name)
        for text in (p.sources, p.grid_source):
            assert text, (name, "empty source")
            assert "/" in text and any(ext in text for ext in (".py", ".json", ".yaml",
                                                               "README")), (name, text)
