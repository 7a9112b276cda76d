"""Pyramidal flow matching (Pyramid-Flow): stage schedule, stage jumps, training inputs.

Conventions (math note, section 2). ``K`` stages run from the coarsest resolution (stage 0)
to full resolution (stage ``K-1``); level ``k`` has ``2^(K-1-k)`` times fewer pixels per side.
``σ`` is a noise fraction (flow convention, ``x = (1-σ)·x0 + σ·ε``); ``n_k`` is level ``k`` of
the noise pyramid (:func:`vidnoise.noise.noise_pyramid`, unit variance per element, nested);
``clean_k`` is the data bilinearly downsampled to level ``k`` (no variance factor); ``Up`` is
nearest 2x upsampling (per frame for 5-D tensors).

Each stage is a straight flow between two end points::

    start_0 = n_0
    start_k = σ_start[k]·n_k + (1-σ_start[k])·Up(clean_{k-1})      (k > 0)
    end_k   = σ_end[k]·n_k   + (1-σ_end[k])·clean_k                 (k < K-1)
    end_K-1 = clean_K-1                                               (σ_end = 0)
    x_r     = r·start_k + (1-r)·end_k,  local ratio r from 1 (start) to 0 (end)

The same ``n_k`` appears in both end points. The model learns the velocity
``dx_r/dr = start_k - end_k`` (the training target) and the sampler integrates
``x_{r'} = x_r + (r' - r)·(start - end)``. Relation with the library's ``v = ε - x0``: the
noise level along the stage is ``σ(r) = r·σ_start + (1-r)·σ_end``, so ``dσ/dr = σ_start -
σ_end`` and, where ``Up(clean_{k-1})`` equals ``clean_k`` (smooth data), ``start - end =
(σ_start - σ_end)·(ε - x0) = (dσ/dr)·v``. In general ``start - end`` also carries the detail
``(1-σ_start)·Up(clean_{k-1}) - (1-σ_start)·clean_k`` the stage has to add.

Stage jump (end of stage ``k-1``, signal level ``e = 1 - σ_end[k-1]``, to the start of stage
``k``, signal level ``s``): nearest upsampling makes the noise fully correlated inside each
2x2 block; rescaling and adding block noise with in-block correlation ``-γ`` restores i.i.d.
noise of the right level::

    s = e / (sqrt(1 + 1/γ)·(1-e) + e)                  (code form, γ > 0, default 1/3)
    α = s/e = 1 / (sqrt(1 + 1/γ)·(1-e) + e),   β = α·(1-e)/sqrt(γ) = (1-s)/sqrt(1+γ)
    x_start_k = α·Up(x_end_{k-1}) + β·η,   η ~ block noise, Cov = (1+γ)I - γ·11ᵀ per block

because ``α²(1-e)²·11ᵀ + β²((1+γ)I - γ·11ᵀ) = (1-s)²·I``. The paper writes the same map the
other way, with ``γ_paper = -γ < 0``: ``e = s·sqrt(1-γ_p) / ((1-s)·sqrt(-γ_p) + s·sqrt(1-γ_p))``
(:func:`end_from_start`). Note: the update multiplies by ``s/e < 1``, not ``e/s`` (a known
error of one secondary write-up).

Reference values (defaults: 1000 train steps, shift 1, stage_range (0, 1/3, 2/3, 1), γ=1/3),
reproduced to 1e-5: start σ (1.0, 0.80024, 0.50075), end σ (0.667, 0.334, 0.0), timestep
ratios (0, 0.25616), (0.25616, 0.61480), (0.61480, 1.0), renoise (α, β) stage 1 (0.59988,
0.69303), stage 2 (0.74963, 0.43366). See ``docs/pyramid.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from vidnoise._checks import check_float, check_int, check_tensor
from vidnoise.noise import as_generators, block_noise, noise_pyramid, rand, randn

__all__ = [
    "PyramidSchedule",
    "StageBatch",
    "start_from_end",
    "end_from_start",
    "corrupt_history",
    "upsample_nearest",
]

GAMMA_MAX = 1.0 / 3.0  # 2x2 block noise exists for 0 <= γ <= 1/(4-1)


# ----------------------------------------------------------------------------- jump algebra
def _check_gamma(name: str, gamma) -> float:
    value = check_float(name, gamma, low=0.0, high=GAMMA_MAX, low_open=True)
    return value


def start_from_end(e, gamma):
    """Signal level ``s`` at the start of a stage from the signal level ``e`` where the lower
    stage ended (the reference code's form, ``γ > 0``)::

        s = e / (sqrt(1 + 1/γ)·(1-e) + e)          (γ = 1/3: s = e / (2 - e))

    ``s <= e``: renoising after nearest upsampling always adds noise. Inverse of
    :func:`end_from_start` with ``gamma_paper = -gamma``. Works on floats and (elementwise)
    on tensors; ``e`` must lie in [0, 1] and ``gamma`` in (0, 1/3].
    """
    gamma = _check_gamma("gamma", gamma)
    if not isinstance(e, torch.Tensor):
        e = check_float("e", e, low=0.0, high=1.0)
    k = math.sqrt((1.0 + gamma) / gamma)
    return e / (k * (1 - e) + e)


def end_from_start(s, gamma_paper):
    """Signal level ``e`` at the end of the lower stage that, after the jump, gives signal
    level ``s`` at the start of the next one (the paper's form, ``γ_paper < 0``)::

        e = s·sqrt(1-γ_p) / ((1-s)·sqrt(-γ_p) + s·sqrt(1-γ_p))      (γ_p = -1/3: e = 2s/(1+s))

    Inverse of :func:`start_from_end` with ``gamma = -gamma_paper``. ``s`` in [0, 1],
    ``gamma_paper`` in [-1/3, 0).
    """
    gp = check_float("gamma_paper", gamma_paper, low=-GAMMA_MAX, high=0.0, high_open=True)
    if not isinstance(s, torch.Tensor):
        s = check_float("s", s, low=0.0, high=1.0)
    a = math.sqrt(1.0 - gp)
    b = math.sqrt(-gp)
    return s * a / ((1 - s) * b + s * a)


def upsample_nearest(x: torch.Tensor) -> torch.Tensor:
    """Nearest 2x upsampling of the last two dims (per frame for (B, C, T, H, W) input).

    ``Up(x)[..., 2i+a, 2j+b] = x[..., i, j]`` for a, b in {0, 1}: the same as
    ``F.interpolate(x, scale_factor=2, mode='nearest')`` frame by frame.
    """
    h, w = x.shape[-2:]
    y = x.unsqueeze(-1).unsqueeze(-3).expand(*x.shape[:-2], h, 2, w, 2)
    return y.reshape(*x.shape[:-2], 2 * h, 2 * w)


def _bilinear_half(x: torch.Tensor) -> torch.Tensor:
    """Bilinear 2x reduction of the last two dims (align_corners=False, no antialias).

    For even sizes that is exactly the mean of each 2x2 block, computed here with
    ``avg_pool2d`` (several times faster on CPU than ``interpolate(mode='bilinear')``, equal
    up to float rounding); 5-D input is treated frame by frame through a free view.
    """
    shape = x.shape
    y = x.reshape(shape[0], -1, shape[-2], shape[-1]) if x.dim() != 4 else x
    y = F.avg_pool2d(y, 2)
    return y.reshape(*shape[:-2], shape[-2] // 2, shape[-1] // 2)


def _check_noise(noise, shape, what: str) -> None:
    """Raise unless ``noise`` is a floating tensor of ``shape`` (described as ``what``)."""
    check_tensor("noise", noise)
    if noise.shape != shape:
        raise ValueError(f"noise must have {what} {tuple(shape)}, got {tuple(noise.shape)}")


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------- schedule
@dataclass(frozen=True, eq=False)
class StageBatch:
    """Training inputs of one stage (see :meth:`PyramidSchedule.training_inputs`).

    Attributes:
        stage: stage index (0 = coarsest).
        indices: (n,) int64 positions of these samples in the input batch (ascending).
        noisy: x_r = r·start + (1-r)·end at the stage's resolution, in the latents' dtype.
        target: start - end (the velocity the model regresses), in the latents' dtype.
        ratio: (n,) local ratio r (1 = start, 0 = end), float32 (float64 for float64 latents).
        timestep: (n,) Pyramid-Flow pseudo-time for the model's embedding, same dtype as ratio.
        sigma: (n,) noise level r·σ_start + (1-r)·σ_end of ``noisy``, same dtype as ratio.
    """

    stage: int
    indices: torch.Tensor
    noisy: torch.Tensor
    target: torch.Tensor
    ratio: torch.Tensor
    timestep: torch.Tensor
    sigma: torch.Tensor


def _default_sigma_sampler():
    """``vidnoise.timesteps.uniform`` (u ~ U[0, 1) per sample), imported lazily."""
    from vidnoise.timesteps import uniform

    return uniform


@dataclass(frozen=True)
class PyramidSchedule:
    """Pyramid-Flow's stage schedule, a frozen dataclass of Python floats.

    Construction mirrors the reference scheduler: σ is read from the grid
    ``σ_i = (N - i)/N`` (``N = num_train_timesteps``), shifted ``shift·σ/(1 + (shift-1)·σ)``,
    all in float32. Stage ``k`` spans grid indices ``int(stage_range[k]·N)`` to
    ``int(stage_range[k+1]·N)``: its original start σ is the grid value at the first, its end
    σ the grid value at the second (0 for the last stage). For ``k > 0`` the start is
    corrected for the jump: ``1 - start_from_end(1 - ori_start, γ)``. Each stage gets a slice
    ``timestep_ratios[k] = (a_k, b_k)`` of [0, 1] proportional to its length
    ``start_sigma - end_sigma``, and the model's timestep is a pseudo-time over those slices:
    with ``τ`` the shifted grid times ``σ_i·N``, ``t_max = τ[int(a_k·N)]``,
    ``t_min = τ[min(int(b_k·N), N-1)]`` and ``t(r) = t_min + r·(t_max - t_min)``
    (stage 0 with defaults: 1000 at r=1, 744.256 at r=0.001). It is not a noise level.

    Args:
        stages: number of stages K >= 1 (resolutions).
        stage_range: K+1 increasing floats from 0 to 1 (boundaries on the σ grid); each stage
            must cover at least one point of the grid.
        gamma: block-noise correlation magnitude of the jump, in (0, 1/3].
        shift: timestep shift (> 0), as in SD3.
        num_train_timesteps: grid size N >= 2.

    Attributes (tuples, one entry per stage, coarsest first): ``ori_start_sigmas``,
    ``start_sigmas``, ``end_sigmas``, ``timestep_ratios`` (pairs), ``timestep_range``
    (pairs ``(t_max, t_min)``: pseudo-time at r = 1 and r = 0).
    """

    stages: int = 3
    stage_range: tuple = (0.0, 1 / 3, 2 / 3, 1.0)
    gamma: float = 1 / 3
    shift: float = 1.0
    num_train_timesteps: int = 1000
    ori_start_sigmas: tuple = field(init=False, repr=False)
    start_sigmas: tuple = field(init=False, repr=False)
    end_sigmas: tuple = field(init=False, repr=False)
    timestep_ratios: tuple = field(init=False, repr=False)
    timestep_range: tuple = field(init=False, repr=False)

    def __post_init__(self):
        K = check_int("stages", self.stages, minimum=1)
        N = check_int("num_train_timesteps", self.num_train_timesteps, minimum=2)
        gamma = _check_gamma("gamma", self.gamma)
        shift = check_float("shift", self.shift, low=0.0, low_open=True)
        sr = self.stage_range
        if not isinstance(sr, Sequence) or isinstance(sr, str):
            raise TypeError(f"stage_range must be a sequence of floats, got {sr!r}")
        sr = tuple(check_float("stage_range", v, low=0.0, high=1.0) for v in sr)
        if len(sr) != K + 1:
            raise ValueError(
                f"stage_range must have stages + 1 = {K + 1} entries, got {len(sr)}: {sr}"
            )
        if sr[0] != 0.0 or sr[-1] != 1.0 or any(b <= a for a, b in zip(sr, sr[1:])):
            raise ValueError(
                f"stage_range must increase strictly from 0 to 1, got {sr}"
            )
        idx = [min(max(int(v * N), 0), N) for v in sr]
        if any(b <= a for a, b in zip(idx, idx[1:])):
            raise ValueError(
                f"stage_range {sr}: with num_train_timesteps={N} the boundaries fall on grid "
                f"indices {idx}; every stage must span at least one grid step (1/{N})"
            )
        for name, value in (("stages", K), ("num_train_timesteps", N), ("gamma", gamma),
                            ("shift", shift), ("stage_range", sr)):
            object.__setattr__(self, name, value)

        # The reference's float32 grid: timesteps N..1, σ = t/N, shifted, τ = σ·N.
        t32 = torch.linspace(1, N, N, dtype=torch.float32).flip(0)
        sig32 = t32 / N
        sig32 = shift * sig32 / (1 + (shift - 1) * sig32)
        tau32 = sig32 * N
        sig = sig32.double().tolist()
        tau = tau32.double().tolist()

        ori, start, end = [], [], []
        for k in range(K):
            s_sigma = sig[idx[k]]
            e_sigma = sig[idx[k + 1]] if idx[k + 1] < N else 0.0
            ori.append(s_sigma)
            if k > 0:
                s_sigma = 1.0 - start_from_end(1.0 - s_sigma, gamma)
            start.append(s_sigma)
            end.append(e_sigma)
        dist = [a - b for a, b in zip(start, end)]
        total = math.fsum(dist)
        ratios = []
        for k in range(K):
            a = 0.0 if k == 0 else math.fsum(dist[:k]) / total
            b = 1.0 if k == K - 1 else math.fsum(dist[: k + 1]) / total
            ratios.append((a, b))
        trange = []
        for a, b in ratios:
            t_max = tau[int(a * N)]
            t_min = tau[min(int(b * N), N - 1)]
            trange.append((t_max, t_min))
        object.__setattr__(self, "ori_start_sigmas", tuple(ori))
        object.__setattr__(self, "start_sigmas", tuple(start))
        object.__setattr__(self, "end_sigmas", tuple(end))
        object.__setattr__(self, "timestep_ratios", tuple(ratios))
        object.__setattr__(self, "timestep_range", tuple(trange))

    # ------------------------------------------------------------------ small helpers
    def _stage(self, stage, *, first: int = 0) -> int:
        return check_int("stage", stage, minimum=first, maximum=self.stages - 1)

    def timestep_from_ratio(self, stage: int, ratio):
        """Pseudo-time ``t_min + r·(t_max - t_min)`` of local ratio ``r`` in ``stage``
        (float or tensor, elementwise). This is the model's timestep input."""
        stage = self._stage(stage)
        t_max, t_min = self.timestep_range[stage]
        return t_min + ratio * (t_max - t_min)

    def ratio_from_timestep(self, stage: int, timestep):
        """Inverse of :meth:`timestep_from_ratio`. For a zero-length pseudo-time range (a
        stage shorter than one timestep grid step) it returns ``timestep*0 + 1``."""
        stage = self._stage(stage)
        t_max, t_min = self.timestep_range[stage]
        if t_max == t_min:
            return timestep * 0 + 1.0
        return (timestep - t_min) / (t_max - t_min)

    def sigma_from_ratio(self, stage: int, ratio):
        """Noise level ``r·σ_start + (1-r)·σ_end`` of ``x_r`` in ``stage``."""
        stage = self._stage(stage)
        s, e = self.start_sigmas[stage], self.end_sigmas[stage]
        return e + ratio * (s - e)

    def level_shape(self, shape, stage: int) -> tuple[int, ...]:
        """Shape of ``stage``'s state for a full-resolution ``shape`` (H, W halved
        ``stages-1-stage`` times); ``ValueError`` unless H and W divide by 2^(stages-1)."""
        stage = self._stage(stage)
        shape = tuple(int(s) for s in shape)
        self._check_spatial("shape", shape)
        f = 2 ** (self.stages - 1 - stage)
        return (*shape[:-2], shape[-2] // f, shape[-1] // f)

    def _check_spatial(self, name: str, shape) -> None:
        f = 2 ** (self.stages - 1)
        h, w = shape[-2], shape[-1]
        if h % f or w % f or h == 0 or w == 0:
            raise ValueError(
                f"{name}: H and W must be positive multiples of 2^(stages-1) = {f} so that every "
                f"stage jump doubles an integer size (no odd H or W at a jump), got H={h}, W={w}"
            )

    # ------------------------------------------------------------------ inference grid
    def stage_grid(self, stage: int, n: int, *, compat: bool = True):
        """Inference grid of ``stage`` with ``n`` Euler steps.

        Returns ``(timesteps, ratios)``, float64 CPU tensors of shapes (n,) and (n+1,): step
        ``i`` calls the model at ``timesteps[i]`` on ``x_{ratios[i]}`` and moves to
        ``ratios[i+1]``; ``timesteps[i] = timestep_from_ratio(stage, ratios[i])``.

        * ``compat=True`` (reference behaviour): ratios ``linspace(1, 1/N, n)`` then 0, and
          timesteps linear from ``t_max`` to the pseudo-time of ``r = 1/N``; the last step
          only moves ``1/N -> 0`` (nearly a wasted model call).
        * ``compat=False``: ratios ``linspace(1, 0, n+1)``, n equal steps.
        """
        stage = self._stage(stage)
        n = check_int("n", n, minimum=1)
        N = self.num_train_timesteps
        if compat:
            r = torch.linspace(1.0, 1.0 / N, n, dtype=torch.float64)
            ratios = torch.cat([r, torch.zeros(1, dtype=torch.float64)])
        else:
            ratios = torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64)
        t_max, t_min = self.timestep_range[stage]
        if compat:
            t_last = t_max + (t_min - t_max) * (N - 1) / N
            timesteps = torch.linspace(t_max, t_last, n, dtype=torch.float64)
        else:
            timesteps = t_min + ratios[:-1] * (t_max - t_min)
        return timesteps, ratios

    # ------------------------------------------------------------------ stage jump
    def renoise_coefficients(self, stage: int) -> tuple[float, float]:
        """``(alpha, beta)`` of the jump into ``stage`` (1 <= stage < stages).

        With ``e = 1 - ori_start_sigmas[stage]`` (the signal level where stage-1 ended):
        ``alpha = 1/(sqrt(1+1/γ)(1-e) + e) = s/e`` and ``beta = alpha·(1-e)/sqrt(γ)``.
        Computed in float64; finite for γ down to tiny values (alpha -> 0, beta -> 1).
        """
        stage = self._stage(stage, first=1)
        e = 1.0 - self.ori_start_sigmas[stage]
        g = self.gamma
        alpha = 1.0 / (math.sqrt((1.0 + g) / g) * (1.0 - e) + e)
        beta = alpha * (1.0 - e) / math.sqrt(g)
        return alpha, beta

    def jump(
        self,
        x: torch.Tensor,
        stage: int,
        *,
        generator=None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Turn the state at the end of stage ``stage-1`` into the state at the start of
        ``stage``: ``alpha·Up(x) + beta·η`` with ``Up`` nearest 2x (per frame for 5-D input)
        and ``η`` 2x2 block noise of correlation ``-γ`` (:func:`vidnoise.noise.block_noise`).

        Args:
            x: (B, C, H, W) or (B, C, T, H, W) state of stage ``stage-1``.
            stage: the stage being entered, 1 <= stage < stages.
            generator: for the block noise (one, or one per item of dim 0).
            noise: optional renoising noise of the upsampled shape to use instead of block
                noise (ablations, e.g. i.i.d. noise, or exact linear-algebra tests).

        Half-precision input is combined in float32 and returned in its dtype.
        """
        check_tensor("x", x, ndims=(4, 5))
        stage = self._stage(stage, first=1)
        alpha, beta = self.renoise_coefficients(stage)
        wd = _work_dtype(x.dtype)
        up = upsample_nearest(x.to(wd))
        if noise is None:
            noise = block_noise(
                up.shape, gamma=self.gamma, block=(2, 2), generator=generator,
                device=x.device, dtype=wd,
            )
        else:
            _check_noise(noise, up.shape, "the upsampled shape")
            noise = noise.to(device=up.device, dtype=wd)
        out = torch.add(up * alpha, noise, alpha=beta)  # α·Up(x) + β·η
        return out.to(x.dtype)

    # ------------------------------------------------------------------ training
    def training_inputs(
        self,
        latents: torch.Tensor,
        *,
        sample_ratios: Sequence[int] = (1, 2, 1),
        generator=None,
        sigma_sampler: Callable | None = None,
        noise: torch.Tensor | None = None,
        compat: bool = True,
    ) -> list[StageBatch]:
        """Pyramidal flow-matching training inputs, one :class:`StageBatch` per stage.

        The batch is split into stages as in the reference: with ``S = sum(sample_ratios)``
        columns, sample ``b`` is in column ``b mod S`` and columns are given to stages in
        order, ``sample_ratios[k]`` each (default (1, 2, 1): a quarter of the batch on each
        of the coarse and fine stages, half on the middle one). For the samples of stage
        ``k`` (math note, section 2)::

            start = n_0                                        (k = 0)
            start = σ_s·n_k + (1-σ_s)·Up(clean_{k-1})          (k > 0)
            end   = σ_e·n_k + (1-σ_e)·clean_k                  (k < K-1; clean_K-1 = latents)
            noisy = r·start + (1-r)·end,   target = start - end

        with ``clean_k`` the bilinear 2x latent pyramid (no variance factor) and ``n_k`` the
        :func:`~vidnoise.noise.noise_pyramid` of one full-resolution white noise.

        The local ratio comes from ``u = sigma_sampler(n, generator=..., device=...)`` in
        [0, 1) (default :func:`vidnoise.timesteps.uniform`). With ``compat=True`` it is read
        off the reference's 1000-point grid: ``j = clamp(floor(u·N), 0, N-1)``,
        ``r = 1 - j/N`` (so r in {1, ..., 1/N}); with ``compat=False`` ``r = 1 - u``. The
        timestep is ``timestep_from_ratio(k, r)``. Same noise and u in, same numbers out as
        the reference ``add_pyramid_noise``, without its per-column loop, float64 promotion
        and materialised upsampling.

        Args:
            latents: (B, C, H, W) or (B, C, T, H, W) at full resolution; H, W multiples of
                2^(stages-1); B a multiple of sum(sample_ratios).
            sample_ratios: ``stages`` non-negative ints (columns per stage), sum >= 1.
            generator: one generator or one per sample. Draw order: the full-resolution
                noise (unless ``noise`` is given), then u for stage 0, 1, ... With one
                generator per sample, sample ``b``'s numbers depend only on generator ``b``.
            sigma_sampler: callable ``(n, *, generator, device) -> (n,)`` of u in [0, 1).
            noise: optional full-resolution noise (shape of ``latents``) instead of a draw.
            compat: grid-quantised ratios (reference) or continuous ones.

        Returns:
            A list of ``stages`` :class:`StageBatch` (stage order); noisy and target at the
            stage's resolution in the latents' dtype. Half-precision inputs are combined in
            float32 and rounded once (their latent pyramid levels are 2x2 means accumulated
            in float32 and stored in the input dtype).
        """
        check_tensor("latents", latents, ndims=(4, 5))
        K = self.stages
        self._check_spatial("latents", latents.shape)
        ratios_in = tuple(sample_ratios) if isinstance(sample_ratios, Sequence) else None
        if ratios_in is None or len(ratios_in) != K:
            raise ValueError(
                f"sample_ratios must be a sequence of stages = {K} non-negative ints, "
                f"got {sample_ratios!r}"
            )
        ratios_in = tuple(check_int("sample_ratios", v, minimum=0) for v in ratios_in)
        S = sum(ratios_in)
        if S < 1:
            raise ValueError(f"sample_ratios must sum to at least 1, got {ratios_in}")
        B = latents.shape[0]
        if B % S:
            raise ValueError(
                f"latents: the batch size B={B} must be a multiple of sum(sample_ratios) = {S} "
                f"(sample_ratios={ratios_in})"
            )
        gens = as_generators(generator, B)
        device = latents.device
        wd = _work_dtype(latents.dtype)
        if noise is None:
            noise = randn(latents.shape, generator=gens, device=device, dtype=wd)
        else:
            _check_noise(noise, latents.shape, "the shape of latents")
        sampler = sigma_sampler if sigma_sampler is not None else _default_sigma_sampler()
        N = self.num_train_timesteps
        G = B // S
        rest = latents.shape[1:]
        out = []
        col0 = 0
        for k in range(K):
            ncol = ratios_in[k]
            cols = range(col0, col0 + ncol)
            col0 += ncol
            # rows b = g*S + c for c in this stage's columns: ascending b
            rows = [g * S + c for g in range(G) for c in cols]
            n = len(rows)
            idx = torch.tensor(rows, dtype=torch.int64).to(device)
            lat = latents.reshape(G, S, *rest)[:, cols.start:cols.stop].reshape(n, *rest)
            nz = noise.reshape(G, S, *rest)[:, cols.start:cols.stop].reshape(n, *rest)
            nz = nz.to(device=device, dtype=wd)
            if n == 0:
                shp = self.level_shape(latents.shape, k)
                empty = latents.new_zeros((0, *shp[1:]))
                zero = torch.zeros(0, dtype=wd, device=device)
                out.append(StageBatch(stage=k, indices=idx, noisy=empty, target=empty.clone(),
                                      ratio=zero, timestep=zero.clone(), sigma=zero.clone()))
                continue
            # latent pyramid down to level k-1 (only what this stage needs); 2x2 means of half
            # inputs are accumulated in float32 by torch and rounded once per level
            clean = lat
            for _ in range(K - 1 - k):
                clean = _bilinear_half(clean)
            prev = _bilinear_half(clean).to(wd) if k > 0 else None
            clean = clean.to(wd)
            n_k = noise_pyramid(nz, K - k)[0]
            s_sig, e_sig = self.start_sigmas[k], self.end_sigmas[k]
            # end = σ_e n_k + (1-σ_e) clean_k ; target = start - end
            if k < K - 1:
                end = torch.add(n_k * e_sig, clean, alpha=1.0 - e_sig)
            else:
                end = clean
            if k == 0:
                target = n_k - end
            else:
                # start = σ_s n_k + (1-σ_s) Up(prev), Up as a broadcast over 2x2 blocks
                h, w = prev.shape[-2:]
                tgt = torch.add(n_k * s_sig, end, alpha=-1.0)
                tgt6 = tgt.view(*tgt.shape[:-2], h, 2, w, 2)
                tgt6.add_(prev.unsqueeze(-1).unsqueeze(-3), alpha=1.0 - s_sig)
                target = tgt
            # local ratio
            sub_gens = [gens[i] for i in rows] if isinstance(gens, list) else gens
            u = torch.as_tensor(sampler(n, generator=sub_gens, device=device), device=device)
            if u.shape != (n,) or not u.is_floating_point():
                raise ValueError(
                    f"sigma_sampler must return a floating tensor of shape ({n},), "
                    f"got {u.dtype} {tuple(u.shape)}"
                )
            if compat:  # j = floor(u·N) in u's own dtype, as the reference's (u*N).long()
                j = (u * N).floor().to(torch.float64).clamp_(0, N - 1)
                r = 1.0 - j / N
            else:
                r = 1.0 - u.to(torch.float64)
            r_w = r.to(wd)
            noisy = torch.addcmul(end, r_w.view(n, *([1] * (target.dim() - 1))), target)
            t_max, t_min = self.timestep_range[k]
            timestep = (t_min + r * (t_max - t_min)).to(wd)
            sigma = (e_sig + r * (s_sig - e_sig)).to(wd)
            out.append(StageBatch(
                stage=k, indices=idx, noisy=noisy.to(latents.dtype),
                target=target.to(latents.dtype), ratio=r_w, timestep=timestep, sigma=sigma,
            ))
        return out


# ----------------------------------------------------------------------------- history
def corrupt_history(frames: torch.Tensor, max_ratio: float = 1 / 3, *, generator=None,
                    return_sigma: bool = False):
    """Corrupt autoregressive history (condition) frames, as Pyramid-Flow's training does::

        σc ~ U(0, max_ratio) per sample (dim 0),   out = σc·ε + (1-σc)·frames

    Args:
        frames: (B, ...) floating tensor (e.g. (B, C, T, H, W) past latent frames).
        max_ratio: upper end of σc, in [0, 1] (reference: 1/3).
        generator: one generator or one per sample; σc is drawn first, then ε.
        return_sigma: also return σc, shape (B,) (float32, float64 for float64 frames).

    Half-precision frames are combined in float32 and returned in their dtype.
    """
    check_tensor("frames", frames)
    if frames.dim() < 1:
        raise ValueError("frames must have a batch dim (dim 0), got a 0-d tensor")
    max_ratio = check_float("max_ratio", max_ratio, low=0.0, high=1.0)
    B = frames.shape[0]
    gens = as_generators(generator, B)
    wd = _work_dtype(frames.dtype)
    sigma = rand((B,), generator=gens, device=frames.device, dtype=wd) * max_ratio
    eps = randn(frames.shape, generator=gens, device=frames.device, dtype=wd)
    s = sigma.view(B, *([1] * (frames.dim() - 1)))
    out = torch.lerp(frames.to(wd), eps, s).to(frames.dtype)
    return (out, sigma) if return_sigma else out
