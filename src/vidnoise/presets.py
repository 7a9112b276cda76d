"""The noise configuration of current video (and two image) models, as frozen presets.

``get(name)`` returns a :class:`Preset`; ``names()`` lists them. ``preset.sigmas(steps,
height=, width=, frames=)`` is the inference grid in vidnoise's flow convention (``N + 1``
noise fractions ending at 0) exactly as the model's reference pipeline builds it for that
size; VP and EDM presets also give ``edm_sigmas``. Where the official code and diffusers
build different grids, the preset follows the one named in its ``grid_source`` and the other
is a preset of its own (``*-diffusers`` / ``*-official``); ``docs/interop.md`` shows the
difference. Every value's source (repository and file) is in the preset's ``sources``.
The math is in ``docs/math.md §12``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from vidnoise import schedules
from vidnoise._checks import check_choice, check_int
from vidnoise.conventions import alpha_bar_to_flow_sigma, edm_sigma_to_flow
from vidnoise.paths import VPPath
from vidnoise.pyramid import PyramidSchedule

__all__ = ["Preset", "get", "names"]

GRIDS = ("wan-official", "wan-diffusers", "linear-quadratic", "shifted-linear",
         "ltx", "flux", "diffusers-default", "vp-trailing", "karras", "pyramid")


@dataclass(frozen=True)
class Preset:
    """One model's noise configuration (all values from its reference code; see ``sources``).

    Attributes:
        name: the preset's name.
        kind: ``"flow"`` (x = (1-σ) x0 + σ ε), ``"vp"`` or ``"edm"`` (its own sampler works
            in that convention; ``sigmas`` is always the flow grid).
        grid: the grid rule (one of ``GRIDS``, documented in :meth:`sigmas`).
        steps, guidance: default inference steps and guidance scale of the reference code
            (``guidance_2``: the second expert's scale for two-expert models).
        shift: the static shift (flow presets), ``None`` when resolution-dependent.
        timestep: the model's timestep mapping (how σ becomes the network's ``t``).
        prediction: the network target.
        training_sigma: the training σ sampler, where published.
        height, width, frames: the reference default size in pixels / frames.
        vae_spatial, vae_temporal, patch: latent compression and the transformer patch
            (``(t, h, w)``), for resolution-dependent shifts.
        dynamic: ``(base_seq_len, max_seq_len, base_shift, max_shift)`` of a
            resolution-dependent shift, and ``shift_terminal``.
        snr_shift_scale: VP presets' SNR shift (``VPPath.cogvideox``).
        boundary: two-expert models: the high-noise expert runs while ``t >= boundary·N``.
        edm: EDM presets' settings as a tuple of ``(key, value)`` pairs.
        alternative: the preset name of the other codebase's grid for the same model.
        grid_source, sources: where each value comes from.
    """

    name: str
    kind: str
    grid: str
    steps: int
    guidance: float | None
    timestep: str
    prediction: str
    sources: str
    grid_source: str = ""
    shift: float | None = None
    guidance_2: float | None = None
    training_sigma: str | None = None
    height: int | None = None
    width: int | None = None
    frames: int | None = None
    vae_spatial: int | None = None
    vae_temporal: int | None = None
    patch: tuple = (1, 1, 1)
    dynamic: tuple | None = None
    shift_terminal: float | None = None
    threshold_noise: float | None = None
    snr_shift_scale: float | None = None
    boundary: float | None = None
    edm: tuple = field(default=())
    alternative: str | None = None
    num_train_timesteps: int = 1000

    # ------------------------------------------------------------------ grids
    def _steps(self, steps) -> int:
        """``steps`` (default: the preset's), in the range the preset's grid rule allows:
        VP presets at most ``num_train_timesteps`` (one table entry a step), Mochi's
        linear-quadratic rule at least 2 (LTX: see its rule)."""
        if steps is None:
            return self.steps
        low = 2 if self.grid == "linear-quadratic" else 1
        high = self.num_train_timesteps if self.kind == "vp" else None
        return check_int("steps", steps, minimum=low, maximum=high)

    def _size(self, height, width, frames):
        """The size (defaults filled in), checked as the reference pipelines need it: height
        and width multiples of ``vae_spatial`` times the patch (the Wan and LTX pipelines
        raise otherwise, Flux resizes down), ``frames - 1`` a multiple of ``vae_temporal``
        times the temporal patch (the VAE's causal first frame), image models 1 frame."""
        h = self.height if height is None else check_int("height", height, minimum=1)
        w = self.width if width is None else check_int("width", width, minimum=1)
        f = self.frames if frames is None else check_int("frames", frames, minimum=1)
        pt, ph, pw = self.patch
        if self.vae_spatial is not None:
            for key, val, p in (("height", height, ph), ("width", width, pw)):
                m = self.vae_spatial * p
                if val is not None and val % m:
                    lo = val // m * m
                    raise ValueError(
                        f"{key}={val} must be a multiple of {m} for preset {self.name!r} "
                        f"(VAE {self.vae_spatial}x times patch {p}); use "
                        + (f"{lo} or {lo + m}" if lo else f"{m}")
                    )
        if frames is not None:
            if self.vae_temporal is not None and (frames - 1) % (self.vae_temporal * pt):
                m = self.vae_temporal * pt
                lo = (frames - 1) // m * m + 1
                raise ValueError(
                    f"frames={frames} must be 1 + a multiple of {m} for preset {self.name!r} "
                    f"(causal VAE, {self.vae_temporal}x in time); use {lo} or {lo + m}"
                )
            if self.frames == 1 and frames != 1:
                raise ValueError(f"frames={frames}: preset {self.name!r} is an image model, "
                                 "frames must be 1")
        return h, w, f

    def seq_len(self, *, height=None, width=None, frames=None) -> int:
        """Latent tokens at that size: ``((f-1)//vae_t + 1)/p_t · (h/vae_s)/p_h · (w/vae_s)/p_w``
        (images: ``f = 1``), the ``seq_len`` of resolution-dependent shifts."""
        h, w, f = self._size(height, width, frames)
        if self.vae_spatial is None:
            raise ValueError(f"preset {self.name!r} has no resolution-dependent shift")
        lf = 1 if self.vae_temporal is None else (f - 1) // self.vae_temporal + 1
        pt, ph, pw = self.patch
        return (lf // pt) * (h // self.vae_spatial // ph) * (w // self.vae_spatial // pw)

    def mu(self, *, height=None, width=None, frames=None) -> float:
        """The resolution-dependent ``mu`` (shift ``e^mu``): :func:`vidnoise.schedules.
        resolution_shift_mu` of :meth:`seq_len` with ``dynamic``'s line."""
        if self.dynamic is None:
            raise ValueError(f"preset {self.name!r} has no resolution-dependent shift")
        b, m, bs, ms = self.dynamic
        return schedules.resolution_shift_mu(self.seq_len(height=height, width=width,
                                                          frames=frames), b, m, bs, ms)

    def sigmas(self, steps: int | None = None, *, height=None, width=None, frames=None,
               device=None) -> torch.Tensor:
        """The inference grid, ``steps + 1`` flow noise fractions (float32) ending at 0.

        Rules (``n = steps``, ``N = num_train_timesteps``, ``shift(σ) = sσ/(1+(s-1)σ)``):

        * ``wan-official``: ``shift(linspace(1 - 1/N, 0, n+1)[:n])`` then 0 (Wan's
          ``FlowUniPCMultistepScheduler`` built with shift 1: its σ_max is ``1 - 1/N``).
        * ``wan-diffusers``: ``shift(linspace(1, 1/N, n+1)[:n])``, first value minus 1e-6,
          then 0 (diffusers' ``UniPCMultistepScheduler(use_flow_sigmas=True)``).
        * ``linear-quadratic``: :func:`vidnoise.schedules.linear_quadratic` (Mochi).
        * ``shifted-linear``: ``shift(linspace(1, 0, n+1))`` (HunyuanVideo).
        * ``ltx``: ``linspace(1, 1/n, n)``, time shift ``e^mu/(e^mu + 1/σ - 1)`` with
          :meth:`mu`, ``1 - σ`` stretched so the last value is ``shift_terminal``, then 0.
        * ``flux``: ``linspace(1, 0, n+1)`` time-shifted by :meth:`mu` (0 stays 0).
        * ``diffusers-default``: :func:`vidnoise.schedules.diffusers_flow_grid` (SD3).
        * ``vp-trailing``: ``alpha_bar_to_flow_sigma(abar[t_k])`` at the trailing timesteps
          ``t_k`` (:meth:`VPPath.trailing_timesteps`), then 0.
        * ``karras``: the EDM grid of :meth:`edm_sigmas` mapped by ``σ/(1+σ)``.
        """
        n = self._steps(steps)
        self._size(height, width, frames)  # a bad size raises even where the grid ignores it
        g = self.grid
        big_n = self.num_train_timesteps
        if g == "pyramid":
            raise ValueError(
                "pyramid-flow samples stage by stage: use preset.schedule() "
                "(a PyramidSchedule) with vidnoise.samplers.sample_pyramid"
            )
        if g == "vp-trailing":
            path = self.path()
            sig = alpha_bar_to_flow_sigma(path.alpha_bar[path.trailing_timesteps(n)])
            return torch.cat([sig, sig.new_zeros(1)]).to(device=device, dtype=torch.float32)
        if g == "karras":
            return edm_sigma_to_flow(self.edm_sigmas(n, device=device)).to(torch.float32)
        if g == "linear-quadratic":
            return schedules.linear_quadratic(n, self.threshold_noise, device=device)
        if g == "diffusers-default":
            return schedules.diffusers_flow_grid(n, self.shift, big_n, device=device)
        if g == "shifted-linear":
            return schedules.shift(schedules.linear(n, device=device), self.shift)
        if g == "wan-official":
            base = np.linspace(1 - 1 / big_n, 0, n + 1)[:n]
        elif g == "wan-diffusers":
            base = np.linspace(1, 1 / big_n, n + 1)[:n]
        elif g == "ltx":
            if n < 2:  # the terminal stretch divides by 1 - σ_last = 0 (diffusers gives nan)
                raise ValueError(f"steps must be >= 2 for {self.name!r} (shift_terminal "
                                 f"stretch of a one-value grid), got {n}")
            base = np.linspace(1.0, 1.0 / n, n)
        else:  # flux
            base = np.linspace(1.0, 0.0, n + 1)[:n]
        base = torch.from_numpy(base)
        if g.startswith("wan"):
            sig = schedules.shift(base, self.shift)
            if g == "wan-diffusers" and abs(float(sig[0]) - 1) < 1e-6:
                sig[0] -= 1e-6
        else:
            e = math.exp(self.mu(height=height, width=width, frames=frames))
            sig = e / (e + (1 / base - 1))  # time shift with exponent 1
            if g == "ltx":
                one_minus = 1 - sig
                sig = 1 - one_minus / (one_minus[-1] / (1 - self.shift_terminal))
        return torch.cat([sig, sig.new_zeros(1)]).to(device=device, dtype=torch.float32)

    def edm_sigmas(self, steps: int | None = None, *, device=None) -> torch.Tensor:
        """EDM σ grid (noise stds, ``steps + 1`` values ending at 0): VP presets
        :func:`vidnoise.schedules.vp_sigmas` of :meth:`path`; EDM presets
        :func:`vidnoise.schedules.karras` with ``edm``'s settings."""
        n = self._steps(steps)
        if self.kind == "vp":
            return schedules.vp_sigmas(n, self.path(), device=device)
        if self.kind == "edm":
            e = dict(self.edm)
            return schedules.karras(n, e["sigma_min"], e["sigma_max"], e["rho"], device=device)
        raise ValueError(f"preset {self.name!r} is a flow model: use sigmas()")

    def path(self) -> VPPath:
        """VP presets: the ᾱ table as a :class:`vidnoise.paths.VPPath`."""
        if self.kind != "vp":
            raise ValueError(f"preset {self.name!r} is not a VP model")
        return VPPath.cogvideox(self.snr_shift_scale)

    def vp_timesteps(self, steps: int | None = None) -> torch.Tensor:
        """VP presets: the trailing integer timesteps (``N-1`` first)."""
        n = self._steps(steps)
        return self.path().trailing_timesteps(n)

    def schedule(self) -> PyramidSchedule:
        """pyramid-flow: the :class:`vidnoise.pyramid.PyramidSchedule` defaults."""
        if self.grid != "pyramid":
            raise ValueError(f"preset {self.name!r} is not a pyramidal model")
        return PyramidSchedule()

    def switch_step(self, steps: int | None = None, *, shift: float | None = None) -> int:
        """Two-expert models: the first step index run by the low-noise expert.

        The reference runs the high-noise expert while ``t_i = N σ_i >= boundary·N`` (Wan2.2
        ``wan/text2video.py``), so the switch is the first ``i`` with ``σ_i < boundary`` on
        this preset's grid; a larger ``shift`` keeps more steps on the high-noise expert.
        """
        if self.boundary is None:
            raise ValueError(f"preset {self.name!r} has a single expert (no boundary)")
        p = self if shift is None else _replace(self, shift=shift)
        sig = p.sigmas(steps)[:-1].double()
        # the reference compares the float32 timestep σ·N with boundary·N
        t = (sig.float() * self.num_train_timesteps).double()
        below = (t < self.boundary * self.num_train_timesteps).nonzero()
        return int(below[0, 0]) if len(below) else len(sig)


def _replace(p: Preset, **kw) -> Preset:
    from dataclasses import replace

    return replace(p, **kw)


_WAN = "Wan-Video/Wan2.1 generate.py (_validate_args), wan/text2video.py, " \
       "wan/utils/fm_solvers_unipc.py (FlowUniPCMultistepScheduler.set_timesteps)"
_WAN_DIFFUSERS = "diffusers schedulers/scheduling_unipc_multistep.py (use_flow_sigmas)"
_FLOWMATCH_T = "t = 1000 σ (diffusers FlowMatch convention), output v = ε - x0"


def _flow(**kw) -> Preset:
    """A flow preset in diffusers' FlowMatch convention: the network takes ``t = 1000 σ`` and
    predicts ``v = ε - x0`` (``kw`` may extend ``prediction``)."""
    base = dict(kind="flow", timestep=_FLOWMATCH_T, prediction="v = ε - x0 (flow)")
    return Preset(**{**base, **kw})


def _wan_pair(name: str, *, official: dict, diffusers: dict, **common) -> tuple[Preset, ...]:
    """A Wan model's two presets: ``name`` on the official grid and ``name-diffusers`` on
    diffusers' grid, each the other's ``alternative``. Both are flow models of 81 frames with
    Wan's VAE (8x spatial, 4x temporal) and patch (1, 2, 2), ``t = 1000 σ`` and a ``v`` target;
    ``common`` holds the model's settings, ``official`` / ``diffusers`` each grid's sources."""
    wan = dict(dict(frames=81, vae_spatial=8, vae_temporal=4, patch=(1, 2, 2)), **common)
    other = f"{name}-diffusers"
    return (
        _flow(name=name, grid="wan-official", alternative=other, **wan, **official),
        _flow(name=other, grid="wan-diffusers", alternative=name, **wan, **diffusers),
    )


def _cogvideox(name: str, snr_shift_scale: float, sources: str) -> Preset:
    """A CogVideoX preset: VP with ``VPPath.cogvideox(snr_shift_scale)``, v-prediction, the
    trailing DDIM grid, 50 steps, guidance 6, 480x720, 49 frames."""
    return Preset(
        name=name, kind="vp", grid="vp-trailing", steps=50, guidance=6.0,
        snr_shift_scale=snr_shift_scale, height=480, width=720, frames=49,
        timestep=f"integer t in [0, 999]; abar_t from VPPath.cogvideox({snr_shift_scale})",
        prediction="v = sqrt(abar) ε - sqrt(1-abar) x0",
        training_sigma="uniform integer t",
        grid_source="diffusers schedulers/scheduling_ddim_cogvideox.py (trailing spacing)",
        sources=sources)


_PRESETS = {p.name: p for p in (
    Preset(
        name="mochi-1", kind="flow", grid="linear-quadratic", steps=64, guidance=6.0,
        threshold_noise=0.025, height=480, width=848, frames=163,
        timestep="t = 1000 (1 - σ) (reversed); output x0 - ε = -v",
        prediction="x0 - ε (= -v)",
        training_sigma=None,
        grid_source="genmoai/mochi src/genmo/mochi_preview/pipelines.py "
                    "(linear_quadratic_schedule(num_steps, 0.025)); identical in diffusers "
                    "pipelines/mochi/pipeline_mochi.py",
        sources="genmoai/mochi demos/cli.py (num_steps 64, cfg_scale 6.0, 480x848, 163 "
                "frames); diffusers MochiPipeline defaults 64 steps, guidance 4.5"),
    _flow(
        name="hunyuanvideo", grid="shifted-linear", steps=50, guidance=6.0, shift=7.0,
        height=720, width=1280, frames=129,
        grid_source="Tencent/HunyuanVideo hyvideo/diffusion/schedulers/"
                    "scheduling_flow_match_discrete.py (linspace(1, 0, n+1), SD3 shift); "
                    "diffusers pipelines/hunyuan_video/pipeline_hunyuan_video.py (same)",
        sources="Tencent/HunyuanVideo hyvideo/config.py (--flow-shift 7.0, "
                "--infer-steps 50, --embedded-cfg-scale 6.0, 720x1280, 129 frames)"),
    _flow(
        name="ltx-video", grid="ltx", steps=50, guidance=3.0,
        height=512, width=704, frames=161, vae_spatial=32, vae_temporal=8,
        dynamic=(1024, 4096, 0.95, 2.05), shift_terminal=0.1,
        grid_source="diffusers pipelines/ltx/pipeline_ltx.py (sigmas linspace(1, 1/n, n), "
                    "mu = calculate_shift(seq_len)) with the Lightricks/LTX-Video-0.9 "
                    "scheduler config; Lightricks/LTX-Video ltx_video/schedulers/rf.py "
                    "(time_shift, stretch_shift_to_terminal)",
        sources="Lightricks/LTX-Video scheduler_config.json (base_shift 0.95, max_shift "
                "2.05, base/max_image_seq_len 1024/4096, shift_terminal 0.1); diffusers "
                "LTXPipeline defaults (50 steps, guidance 3, 512x704, 161 frames; VAE 32x "
                "spatial, 8x temporal, patch 1)"),
    *_wan_pair(
        "wan2.1-t2v-14b", steps=50, guidance=5.0, shift=5.0, height=720, width=1280,
        official=dict(training_sigma="uniform t with shift (Wan2.1 report)",
                      grid_source=_WAN, sources=_WAN),
        diffusers=dict(
            grid_source="diffusers schedulers/scheduling_unipc_multistep.py (use_flow_sigmas, "
                        "flow_shift 5.0 of Wan-AI/Wan2.1-T2V-14B-Diffusers scheduler config)",
            sources="diffusers pipelines/wan/pipeline_wan.py (50 steps, guidance 5.0)")),
    *_wan_pair(
        "wan2.1-i2v-480p", steps=40, guidance=5.0, shift=3.0, height=480, width=832,
        official=dict(grid_source=_WAN, sources=_WAN + " (i2v: 40 steps; shift 3.0 at 832*480)"),
        diffusers=dict(grid_source=_WAN_DIFFUSERS,
                       sources="diffusers pipelines/wan/pipeline_wan_i2v.py")),
    *_wan_pair(
        "wan2.2-t2v-a14b", steps=40, guidance=3.0, guidance_2=4.0, shift=12.0, boundary=0.875,
        height=720, width=1280, prediction="v = ε - x0 (flow); two experts",
        official=dict(
            grid_source="Wan-Video/Wan2.2 wan/utils/fm_solvers_unipc.py (as Wan2.1)",
            sources="Wan-Video/Wan2.2 wan/configs/wan_t2v_A14B.py (sample_shift 12.0, "
                    "sample_steps 40, boundary 0.875, sample_guide_scale (3.0 low-noise, 4.0 "
                    "high-noise)); wan/text2video.py (high-noise expert while t >= "
                    "boundary*1000)"),
        diffusers=dict(
            grid_source=_WAN_DIFFUSERS,
            sources="diffusers pipelines/wan/pipeline_wan.py (boundary_ratio; transformer "
                    "while t >= boundary_ratio * 1000, else transformer_2)")),
    _cogvideox(
        "cogvideox-2b", 3.0,
        "THUDM/CogVideo sat/configs/cogvideox_2b.yaml (ZeroSNRDDPMDiscretization "
        "shift_scale 3.0, v-prediction); diffusers CogVideoXPipeline (50 steps, "
        "guidance 6, 480x720, 49 frames)"),
    _cogvideox(
        "cogvideox-5b", 1.0,
        "THUDM/CogVideo sat/configs/cogvideox_5b.yaml (shift_scale 1.0); diffusers "
        "CogVideoXPipeline (50 steps, guidance 6)"),
    _flow(
        name="sd3", grid="diffusers-default", steps=28, guidance=7.0, shift=3.0, height=1024,
        width=1024, frames=1,
        training_sigma="logit-normal(0, 1) (SD3 paper, rf/lognorm(0.00, 1.00))",
        grid_source="diffusers schedulers/scheduling_flow_match_euler_discrete.py (default "
                    "grid, shift 3.0 of stabilityai/stable-diffusion-3-medium-diffusers); "
                    "Stability-AI/sd3.5 sd3_infer.py get_sigmas builds the same grid",
        sources="diffusers pipelines/stable_diffusion_3/pipeline_stable_diffusion_3.py "
                "(28 steps, guidance 7.0)"),
    _flow(
        name="flux", grid="flux", steps=50, guidance=3.5, height=768, width=1360, frames=1,
        vae_spatial=8, patch=(1, 2, 2), dynamic=(256, 4096, 0.5, 1.15),
        prediction="v = ε - x0 (flow); guidance distilled (dev)",
        grid_source="black-forest-labs/flux src/flux/sampling.py (get_schedule: "
                    "linspace(1, 0, n+1), time_shift(mu), mu linear in (h/16)(w/16) from "
                    "(256, 0.5) to (4096, 1.15)); diffusers FluxPipeline builds the same",
        sources="black-forest-labs/flux src/flux/cli.py (flux-dev: 50 steps, guidance 3.5, "
                "1360x768)"),
    Preset(
        name="pyramid-flow", kind="flow", grid="pyramid", steps=20, guidance=9.0,
        timestep="stage pseudo-time (PyramidSchedule.timestep_range)",
        prediction="v = ε - x0 per stage (flow)",
        grid_source="jy0205/Pyramid-Flow diffusion_schedulers/scheduling_flow_matching.py "
                    "(PyramidFlowMatchEulerDiscreteScheduler: "
                    "3 stages, stage_range [0, 1/3, 2/3, 1], gamma 1/3, shift 1.0)",
        sources="jy0205/Pyramid-Flow README / app.py (num_inference_steps [20, 20, 20], "
                "video_num_inference_steps [10, 10, 10], guidance_scale 9.0, "
                "video_guidance_scale 5.0)"),
    Preset(
        name="diamond", kind="edm", grid="karras", steps=3, guidance=None,
        timestep="c_noise = ln(σ)/4 (EDM)", prediction="EDM preconditioned x0",
        training_sigma="lognormal(loc -0.4, scale 1.2) clipped to [2e-3, 20]",
        edm=(("sigma_min", 2e-3), ("sigma_max", 5.0), ("rho", 7.0), ("order", 1),
             ("s_churn", 0.0), ("sigma_data", 0.5), ("sigma_offset_noise", 0.3),
             ("init", "unit")),
        grid_source="eloialonso/diamond src/models/diffusion/diffusion_sampler.py "
                    "(build_sigmas: Karras grid, then 0)",
        sources="eloialonso/diamond config/agent/default.yaml (denoiser sigma_data 0.5, "
                "sigma_offset_noise 0.3 on Atari, 0.1 on CS:GO; diffusion_sampler "
                "num_steps_denoising 3, sigma_min 2e-3, sigma_max 5.0, rho 7, order 1, "
                "s_churn 0; training sigma_distribution loc -0.4, scale 1.2, [2e-3, 20]); "
                "the sampler starts from unit noise (init 'unit' of sample_edm)"),
)}


def names() -> tuple[str, ...]:
    """All preset names, sorted."""
    return tuple(sorted(_PRESETS))


def get(name: str) -> Preset:
    """The preset called ``name`` (see :func:`names`)."""
    check_choice("name", name, names())
    return _PRESETS[name]
