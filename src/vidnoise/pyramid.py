"""Pyramidal flow matching (Pyramid-Flow): stage schedule, stage jumps, training inputs.

The math is stated once, in ``docs/math.md`` §4 (stages, end points, stage time slices,
pseudo-time, reference values) and §5 (stage jumps and renoising); each function below
carries the one formula it implements. Words used with one meaning only:

* **local ratio** ``r``: position inside a stage, 1 at its start, 0 at its end
  (``x_r = r·start + (1-r)·end``); ``StageBatch.ratio``, ``timestep_from_ratio``.
* **stage time slice**: the part ``(a_k, b_k)`` of [0, 1] that stage ``k``'s pseudo-time
  covers (``PyramidSchedule.time_slices``).
* **stage shares**: how many columns of the training batch each stage gets
  (``training_inputs(stage_shares=...)``).
* **u**: the uniform draw in [0, 1) a training sample's local ratio comes from
  (``training_inputs(u_sampler=...)``).
* **grid**: ``"reference"`` reproduces the reference code's quantised ratios; ``"exact"``
  uses the ratios the formulas define (continuous ``r = 1 - u``, equal steps down to 0).

γ is always in the code's sign (``γ > 0``, block correlation ``-γ``); the paper's sign is
converted by :func:`vidnoise.conventions.gamma_paper_to_code`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from vidnoise._checks import (
    check_callable,
    check_choice,
    check_float,
    check_int,
    check_shape,
    check_tensor,
    check_values,
    values64,
    work_dtype,
)
from vidnoise.noise import NoiseKey, as_generators, block_noise, noise_pyramid, randn

__all__ = ["PyramidSchedule", "StageBatch", "start_from_end", "end_from_start"]

GAMMA_MAX = 1.0 / 3.0  # 2x2 block noise exists for 0 <= γ <= 1/(4-1)
GRIDS = ("reference", "exact")


# ----------------------------------------------------------------------------- jump algebra
def _check_gamma(name: str, gamma) -> float:
    """γ in the code sign, (0, 1/3]; a negative value is the paper's sign: say so."""
    if isinstance(gamma, numbers.Real) and not isinstance(gamma, bool) and gamma < 0:
        raise ValueError(
            f"{name} must be in (0, 1/3] in the code's sign (block correlation -{name}), got "
            f"{float(gamma)}: a negative value is the paper's sign; convert it with "
            f"vidnoise.conventions.gamma_paper_to_code({float(gamma)}) = {-float(gamma)}"
        )
    return check_float(name, gamma, low=0.0, high=GAMMA_MAX, low_open=True)


def _signal_level(name: str, value):
    """``value`` checked to lie in [0, 1]: a float, or ``(float64 tensor, dtype to return)``."""
    return values64(name, value, low=0.0, high=1.0)


def _restore(v, out_dtype):
    return v if out_dtype is None else v.to(out_dtype)


def start_from_end(e, gamma):
    """Signal level ``s`` at the start of a stage from the signal level ``e`` where the lower
    stage ended (``docs/math.md`` §5)::

        s = e / (sqrt(1 + 1/γ)·(1-e) + e)          (γ = 1/3: s = e / (2 - e))

    ``e`` is a float or a tensor (elementwise, same dtype back) in [0, 1]; ``gamma`` in
    (0, 1/3] (code sign). Inverse of :func:`end_from_start`.
    """
    gamma = _check_gamma("gamma", gamma)
    e, out_dtype = _signal_level("e", e)
    k = math.sqrt((1.0 + gamma) / gamma)
    return _restore(e / (k * (1 - e) + e), out_dtype)


def end_from_start(s, gamma):
    """Signal level ``e`` where the lower stage must end so that the jump gives signal level
    ``s`` (the paper's direction, written with the code-sign γ, ``docs/math.md`` §5)::

        e = s·sqrt(1+γ) / ((1-s)·sqrt(γ) + s·sqrt(1+γ))      (γ = 1/3: e = 2s/(1+s))

    ``s`` is a float or a tensor in [0, 1]; ``gamma`` in (0, 1/3]. Inverse of
    :func:`start_from_end`.
    """
    gamma = _check_gamma("gamma", gamma)
    s, out_dtype = _signal_level("s", s)
    a, b = math.sqrt(1.0 + gamma), math.sqrt(gamma)
    return _restore(s * a / ((1 - s) * b + s * a), out_dtype)


def _upsample_nearest(x: torch.Tensor) -> torch.Tensor:
    """``Up``: nearest 2x upsampling of the last two dims, ``Up(x)[..., 2i+a, 2j+b] = x[..., i,
    j]`` (per frame for 5-D input; equal to ``F.interpolate(scale_factor=2, mode='nearest')``)."""
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor with at least 2 dims (…, H, W), got {got}")
    h, w = x.shape[-2:]
    y = x.unsqueeze(-1).unsqueeze(-3).expand(*x.shape[:-2], h, 2, w, 2)
    return y.reshape(*x.shape[:-2], 2 * h, 2 * w)


def _bilinear_half(x: torch.Tensor) -> torch.Tensor:
    """Bilinear 2x reduction of the last two dims (align_corners=False, no antialias): for
    even sizes exactly the mean of each 2x2 block, done by ``avg_pool2d`` (half precision
    accumulates in float32 inside it); 5-D input frame by frame through a free view."""
    shape = x.shape
    y = F.avg_pool2d(x.reshape(shape[0], math.prod(shape[1:-2]), shape[-2], shape[-1]), 2)
    return y.reshape(*shape[:-2], shape[-2] // 2, shape[-1] // 2)


def _key_origin(key: NoiseKey, ndim: int, multiple: int, where: str) -> tuple[int, ...]:
    """A key's origin (full-resolution coordinates, one per dim of an ``ndim``-dim tensor,
    None = zeros), its H and W entries checked to be multiples of ``multiple``."""
    origin = (0,) * ndim if key.origin is None else key.origin
    if len(origin) != ndim:
        raise ValueError(
            f"generator=NoiseKey origin {origin} must have one entry per dim of the "
            f"full-resolution ({ndim}-dim) tensor, or be None"
        )
    if origin[-2] % multiple or origin[-1] % multiple:
        raise ValueError(
            f"generator=NoiseKey origin {origin}: {where} the H and W origins (full-resolution "
            f"coordinates) must be multiples of {multiple}, got H={origin[-2]}, "
            f"W={origin[-1]}; shard H and W on multiples of 2^(stages-1)"
        )
    return origin


def _stage_key(key: NoiseKey, stage: int, stages: int, ndim: int) -> NoiseKey:
    """The key of the jump into ``stage``: ``key.derive("jump", stage)`` at the key's
    full-resolution origin scaled to the stage's level (H and W divided by
    ``2^(stages-1-stage)``); that origin must be block-aligned (even) at the level."""
    f = 2 ** (stages - 1 - stage)
    origin = _key_origin(key, ndim, 2 * f, f"for the jump into stage {stage},")
    level = (*origin[:-2], origin[-2] // f, origin[-1] // f)
    return key.derive("jump", stage).at(level)


def _check_noise(noise, shape, what: str) -> None:
    check_tensor("noise", noise)
    if noise.shape != shape:
        raise ValueError(f"noise must have {what} {tuple(shape)}, got {tuple(noise.shape)}")


_FUSED = True  # stage_inputs' fast path (benchmarks/bench_pyramid.py); tests run both


def _fused_noisy_target(last, s_sig, e_sig, n_k, clean, prev, r_b):
    """``(noisy, target)`` of :meth:`PyramidSchedule.stage_inputs` with fused and in-place
    ops: ``end`` in one ``add``, ``target = σ_s·n_k - end`` plus ``(1-σ_s)·prev`` added as a
    broadcast over the 2x2 blocks (``Up`` never materialised), ``noisy = end + r·target``."""
    end = clean if last else torch.add(n_k * e_sig, clean, alpha=1.0 - e_sig)
    if prev is None:
        target = n_k - end
    else:
        target = torch.add(n_k * s_sig, end, alpha=-1.0)
        h, w = prev.shape[-2:]
        blocks = target.view(*target.shape[:-2], h, 2, w, 2)
        blocks.add_(prev.unsqueeze(-1).unsqueeze(-3), alpha=1.0 - s_sig)
    return torch.addcmul(end, r_b, target), target


def _default_stage_shares(stages: int) -> tuple[int, ...]:
    """The reference's (1, 2, 1) for any number of stages: 1 for the first and last stage,
    2 for each inner one ((1,), (1, 1), (1, 2, 1), (1, 2, 2, 1), ...)."""
    return (1,) if stages == 1 else (1, *(2,) * (stages - 2), 1)


# ----------------------------------------------------------------------------- stage table
@dataclass(frozen=True)
class _StageTable:
    ori_start_sigmas: tuple
    start_sigmas: tuple
    end_sigmas: tuple
    time_slices: tuple
    timestep_range: tuple


def _reference_stage_table(stages, stage_range, gamma, shift, num_train_timesteps):
    """The reference scheduler's per-stage values (``docs/math.md`` §4), from checked inputs.

    float32 grid ``σ_i`` = timesteps N..1 over N, shifted ``shift·σ/(1 + (shift-1)·σ)``,
    ``τ = σ·N``; stage k spans grid indices ``i_k = int(stage_range[k]·N)``; original start
    ``σ[i_k]``, end ``σ[i_{k+1}]`` (0 for the last stage); start corrected for the jump,
    ``1 - start_from_end(1 - σ[i_k], γ)`` (k > 0); time slices proportional to
    ``start - end``; ``(t_max, t_min) = (τ[int(a_k·N)], τ[min(int(b_k·N), N-1)])``.
    """
    K, N = stages, num_train_timesteps
    idx = [int(v * N) for v in stage_range]
    sig32 = torch.linspace(1, N, N, dtype=torch.float32).flip(0) / N
    sig32 = shift * sig32 / (1 + (shift - 1) * sig32)
    sig, tau = sig32.double().tolist(), (sig32 * N).double().tolist()
    ori = [sig[idx[k]] for k in range(K)]
    start = [ori[0]] + [1.0 - start_from_end(1.0 - o, gamma) for o in ori[1:]]
    end = [sig[i] for i in idx[1:-1]] + [0.0]
    dist = [a - b for a, b in zip(start, end)]
    cum = [math.fsum(dist[:k]) / math.fsum(dist) for k in range(K + 1)]
    slices = tuple((0.0 if k == 0 else cum[k], 1.0 if k == K - 1 else cum[k + 1])
                   for k in range(K))
    trange = tuple((tau[int(a * N)], tau[min(int(b * N), N - 1)]) for a, b in slices)
    return _StageTable(tuple(ori), tuple(start), tuple(end), slices, trange)


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True, eq=False)
class StageBatch:
    """Training inputs of one stage (see :meth:`PyramidSchedule.stage_inputs`).

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


def _default_u_sampler():
    """The library's uniform sampler (u ~ U[0, 1) per sample), imported lazily."""
    from vidnoise.sigma_samplers import uniform

    return uniform




# ----------------------------------------------------------------------------- schedule helpers
def _check_sizes(name: str, shape, stages: int) -> None:
    f = 2 ** (stages - 1)
    h, w = shape[-2], shape[-1]
    if h % f or w % f or h == 0 or w == 0:
        raise ValueError(
            f"{name}: H and W must be positive multiples of 2^(stages-1) = {f} so that every "
            f"stage jump doubles an integer size (no odd H or W at a jump), got H={h}, W={w}"
        )
    if any(s == 0 for s in shape[1:-2]):
        raise ValueError(
            f"{name}: the channel and frame sizes must be positive, got shape {tuple(shape)}"
        )


def _stage_shares(K: int, stage_shares) -> tuple[int, ...]:
    if stage_shares is None:
        return _default_stage_shares(K)
    if not isinstance(stage_shares, Sequence) or len(stage_shares) != K:
        raise ValueError(
            f"stage_shares must be a sequence of stages = {K} ints >= 0, got {stage_shares!r}"
        )
    shares = tuple(check_int("stage_shares", v, minimum=0) for v in stage_shares)
    if sum(shares) < 1:
        raise ValueError(f"stage_shares must sum to at least 1, got {shares}")
    return shares


def _draw_u(sampler, rows, gens, device) -> torch.Tensor:
    n = rows.numel()
    if n == 0:
        return torch.zeros(0, device=device)
    sub = [gens[i] for i in rows.tolist()] if isinstance(gens, list) else gens
    u = sampler(n, generator=sub, device=device)
    if not isinstance(u, torch.Tensor) or u.shape != (n,) or not u.is_floating_point():
        got = f"{u.dtype} {tuple(u.shape)}" if isinstance(u, torch.Tensor) else type(u)
        raise ValueError(
            f"u_sampler must return a floating tensor of shape ({n},) of u in [0, 1), "
            f"got {got}"
        )
    check_values("u_sampler output u", u, low=0.0, high=1.0, high_open=True)
    return u


def _empty_batch(k: int, shape, latents: torch.Tensor, wd: torch.dtype) -> StageBatch:
    empty = latents.new_zeros(shape)
    zero = torch.zeros(0, dtype=wd, device=latents.device)
    idx = torch.zeros(0, dtype=torch.int64, device=latents.device)
    return StageBatch(stage=k, indices=idx, noisy=empty, target=empty.clone(), ratio=zero,
                      timestep=zero.clone(), sigma=zero.clone())


# ----------------------------------------------------------------------------- schedule
@dataclass(frozen=True)
class PyramidSchedule:
    """Pyramid-Flow's stage schedule (``docs/math.md`` §4), a frozen dataclass of floats.

    Args:
        stages: number of stages K >= 1 (resolutions).
        stage_range: K+1 boundaries on the σ grid, increasing from 0 to 1, each stage
            covering at least one grid step; default uniform, ``(0, 1/K, ..., 1)`` (the
            reference's (0, 1/3, 2/3, 1) for K = 3).
        gamma: block-noise correlation magnitude of the jump, in (0, 1/3], code sign.
        shift: timestep shift (> 0), as in SD3.
        num_train_timesteps: grid size N >= 2.

    Attributes (tuples, one entry per stage, coarsest first): ``ori_start_sigmas`` (grid σ
    at the stage's first index), ``start_sigmas`` (corrected for the jump), ``end_sigmas``,
    ``time_slices`` (pairs ``(a_k, b_k)``), ``timestep_range`` (pairs ``(t_max, t_min)``:
    pseudo-time at r = 1 and r = 0).
    """

    stages: int = 3
    stage_range: tuple | None = None
    gamma: float = 1 / 3
    shift: float = 1.0
    num_train_timesteps: int = 1000
    ori_start_sigmas: tuple = field(init=False, repr=False)
    start_sigmas: tuple = field(init=False, repr=False)
    end_sigmas: tuple = field(init=False, repr=False)
    time_slices: tuple = field(init=False, repr=False)
    timestep_range: tuple = field(init=False, repr=False)

    def __post_init__(self):
        checked = self._checked_arguments()
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        table = _reference_stage_table(**checked)
        for f in dataclasses.fields(table):
            object.__setattr__(self, f.name, getattr(table, f.name))

    def _checked_arguments(self) -> dict:
        K = check_int("stages", self.stages, minimum=1)
        N = check_int("num_train_timesteps", self.num_train_timesteps, minimum=2)
        gamma = _check_gamma("gamma", self.gamma)
        shift = check_float("shift", self.shift, low=0.0, low_open=True)
        sr = self.stage_range
        if sr is None:
            sr = tuple(i / K for i in range(K + 1))
        if not isinstance(sr, Sequence) or isinstance(sr, str):
            raise TypeError(f"stage_range must be a sequence of floats or None, got {sr!r}")
        sr = tuple(check_float("stage_range", v, low=0.0, high=1.0) for v in sr)
        if len(sr) != K + 1:
            raise ValueError(
                f"stage_range must have stages + 1 = {K + 1} entries, got {len(sr)}: {sr} "
                f"(leave it None for uniform stages)"
            )
        if sr[0] != 0.0 or sr[-1] != 1.0 or any(b <= a for a, b in zip(sr, sr[1:])):
            raise ValueError(f"stage_range must increase strictly from 0 to 1, got {sr}")
        idx = [int(v * N) for v in sr]
        if any(b <= a for a, b in zip(idx, idx[1:])):
            raise ValueError(
                f"stage_range {sr}: with num_train_timesteps={N} the boundaries fall on grid "
                f"indices {idx}; every stage must span at least one grid step (1/{N})"
            )
        return dict(stages=K, stage_range=sr, gamma=gamma, shift=shift, num_train_timesteps=N)

    # ------------------------------------------------------------------ converters
    def _stage(self, stage, *, first: int = 0) -> int:
        return check_int("stage", stage, minimum=first, maximum=self.stages - 1)

    def timestep_from_ratio(self, stage: int, ratio):
        """Pseudo-time ``t(r) = t_min + r·(t_max - t_min)`` of local ratio ``r`` in [0, 1]
        (float or tensor, elementwise; ``docs/math.md`` §4). The model's timestep input."""
        stage = self._stage(stage)
        t_max, t_min = self.timestep_range[stage]
        r, out_dtype = values64("ratio", ratio, low=0.0, high=1.0)
        return _restore(t_min + r * (t_max - t_min), out_dtype)

    def ratio_from_timestep(self, stage: int, timestep):
        """Inverse of :meth:`timestep_from_ratio`; ``timestep`` must lie in the stage's
        ``[t_min, t_max]`` (up to a relative 2^-8 of ``t_max``, the rounding of a
        half-precision timestep). A zero-length range (a stage shorter than one grid step
        of pseudo-time) gives ``r = 1``."""
        stage = self._stage(stage)
        t_max, t_min = self.timestep_range[stage]
        tol = abs(t_max) * 2.0**-8
        t, out_dtype = values64("timestep", timestep, low=t_min - tol, high=t_max + tol)
        r = t * 0 + 1.0 if t_max == t_min else (t - t_min) / (t_max - t_min)
        return _restore(r, out_dtype)

    def sigma_from_ratio(self, stage: int, ratio):
        """Noise level ``σ(r) = r·σ_start + (1-r)·σ_end`` of ``x_r`` in ``stage``, r in [0, 1]."""
        stage = self._stage(stage)
        s, e = self.start_sigmas[stage], self.end_sigmas[stage]
        r, out_dtype = values64("ratio", ratio, low=0.0, high=1.0)
        return _restore(e + r * (s - e), out_dtype)

    def level_shape(self, shape, stage: int) -> tuple[int, ...]:
        """Shape of ``stage``'s state for a full-resolution (B, C, H, W) or (B, C, T, H, W)
        ``shape``: H and W halved ``stages-1-stage`` times (they must divide by 2^(stages-1))."""
        stage = self._stage(stage)
        shape = check_shape("shape", shape)
        if len(shape) not in (4, 5):
            raise ValueError(f"shape must be (B, C, H, W) or (B, C, T, H, W), got {shape}")
        _check_sizes("shape", shape, self.stages)
        f = 2 ** (self.stages - 1 - stage)
        return (*shape[:-2], shape[-2] // f, shape[-1] // f)

    # ------------------------------------------------------------------ inference grid
    def stage_grid(self, stage: int, n: int, *, grid: str = "reference"):
        """Inference grid of ``stage`` with ``n`` Euler steps (``docs/math.md`` §4).

        Returns ``(timesteps, ratios)``, float64 CPU tensors of shapes (n,) and (n+1,): step
        ``i`` calls the model at ``timesteps[i]`` on ``x_{ratios[i]}`` and moves to
        ``ratios[i+1]``.

        * ``grid="reference"``: ratios ``linspace(1, 1/N, n)`` then 0, timesteps linear from
          ``t_max`` to ``t(1/N)``; the last step only moves ``1/N -> 0``.
        * ``grid="exact"``: ratios ``linspace(1, 0, n+1)``, timesteps ``t(r_i)``.

        """
        stage = self._stage(stage)
        n = check_int("n", n, minimum=1)
        check_choice("grid", grid, GRIDS)
        N = self.num_train_timesteps
        t_max, t_min = self.timestep_range[stage]
        if grid == "reference":
            r = torch.linspace(1.0, 1.0 / N, n, dtype=torch.float64)
            ratios = torch.cat([r, torch.zeros(1, dtype=torch.float64)])
            t_last = t_max + (t_min - t_max) * (N - 1) / N
            return torch.linspace(t_max, t_last, n, dtype=torch.float64), ratios
        ratios = torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64)
        return t_min + ratios[:-1] * (t_max - t_min), ratios

    # ------------------------------------------------------------------ stage jump
    def renoise_coefficients(self, stage: int) -> tuple[float, float]:
        """``(α, β)`` of the jump into ``stage`` (1 <= stage < stages), ``docs/math.md`` §5:
        with ``e = 1 - ori_start_sigmas[stage]``, ``α = 1/(sqrt(1+1/γ)(1-e) + e) = s/e`` and
        ``β = α·(1-e)/sqrt(γ)``; float64, finite for tiny γ (α -> 0, β -> 1)."""
        stage = self._stage(stage, first=1)
        e = 1.0 - self.ori_start_sigmas[stage]
        g = self.gamma
        alpha = 1.0 / (math.sqrt((1.0 + g) / g) * (1.0 - e) + e)
        return alpha, alpha * (1.0 - e) / math.sqrt(g)

    def jump(self, x: torch.Tensor, stage: int, *, generator=None,
             noise: torch.Tensor | None = None) -> torch.Tensor:
        """State at the end of stage ``stage-1`` -> state at the start of ``stage``::

            x_start = α·Up(x) + β·η      (docs/math.md §5)

        ``Up`` nearest 2x (per frame for 5-D input), ``η`` 2x2 block noise of covariance
        ``(1+γ)I - γ·11ᵀ`` per block (:func:`vidnoise.noise.block_noise`).

        With a :class:`~vidnoise.noise.NoiseKey`, ``η`` is keyed: its origin is read in
        full-resolution coordinates (the sample's, as for the initial noise) and ``η`` is
        ``block_noise(..., generator=key.derive("jump", stage).at(level_origin))`` with H and
        W of the origin divided by ``2^(stages-1-stage)``. They must be multiples of
        ``2^(stages-stage)`` (block-aligned at the level; ``ValueError`` naming ``origin``),
        so shards on multiples of ``2^(stages-1)`` work for every jump.

        Args:
            x: (B, C, H, W) or (B, C, T, H, W) state of stage ``stage-1``.
            stage: the stage being entered, 1 <= stage < stages.
            generator: for the block noise (one, or one per item of dim 0, or a NoiseKey).
            noise: renoising noise of the upsampled shape instead of block noise (ablations,
                exact linear-algebra tests).

        Half-precision input is combined in float32 and returned in its dtype.
        """
        check_tensor("x", x, ndims=(4, 5))
        stage = self._stage(stage, first=1)
        alpha, beta = self.renoise_coefficients(stage)
        wd = work_dtype(x.dtype)
        up = _upsample_nearest(x.to(wd))
        if noise is None:
            if isinstance(generator, NoiseKey):
                generator = _stage_key(generator, stage, self.stages, x.dim())
            noise = block_noise(up.shape, gamma=self.gamma, block=(2, 2), generator=generator,
                                device=x.device, dtype=wd)
        else:
            _check_noise(noise, up.shape, "the upsampled shape")
            noise = noise.to(device=up.device, dtype=wd)
        return torch.add(up * alpha, noise, alpha=beta).to(x.dtype)

    # ------------------------------------------------------------------ training
    def local_ratio(self, u, *, grid: str = "reference") -> torch.Tensor:
        """Local ratio of uniform draws ``u`` in [0, 1) (float64, ``docs/math.md`` §4):
        ``grid="reference"``: ``r = 1 - floor(u·N)/N`` (u·N in u's own dtype, as the
        reference's ``(u*N).long()``), r in {1, ..., 1/N}; ``grid="exact"``: ``r = 1 - u``."""
        grid = check_choice("grid", grid, GRIDS)
        check_tensor("u", u, ndims=(1,))
        check_values("u", u, low=0.0, high=1.0, high_open=True)
        N = self.num_train_timesteps
        if grid == "reference":
            return 1.0 - (u * N).floor().to(torch.float64).clamp(0, N - 1) / N
        return 1.0 - u.to(torch.float64)

    def stage_inputs(self, stage: int, latents: torch.Tensor, noise: torch.Tensor,
                     u: torch.Tensor, *, grid: str = "reference") -> StageBatch:
        """Training inputs of ``stage`` for given full-resolution latents, noise and u
        (``docs/math.md`` §4)::

            start  = n_0  (k = 0),  σ_s·n_k + (1-σ_s)·Up(clean_{k-1})  (k > 0)
            end    = clean_k  (k = K-1),  σ_e·n_k + (1-σ_e)·clean_k  (k < K-1)
            noisy  = r·start + (1-r)·end
            target = start - end

        ``n_k`` is level k of :func:`~vidnoise.noise.noise_pyramid` of ``noise``, ``clean_k``
        the bilinear 2x latent pyramid (no variance factor), ``r = local_ratio(u, grid)``.

        Args:
            stage: 0 <= stage < stages.
            latents: (n, C, H, W) or (n, C, T, H, W) at full resolution.
            noise: full-resolution noise of the same shape.
            u: (n,) draws in [0, 1).
            grid: "reference" (quantised ratios) or "exact" (``r = 1 - u``).

        Returns a :class:`StageBatch` with ``indices = arange(n)``. Half-precision latents
        are combined in float32 and rounded once (their pyramid levels are 2x2 means
        accumulated in float32 and stored in the input dtype).
        """
        k = self._stage(stage)
        check_tensor("latents", latents, ndims=(4, 5))
        _check_sizes("latents", latents.shape, self.stages)
        _check_noise(noise, latents.shape, "the shape of latents")
        n = latents.shape[0]
        if not isinstance(u, torch.Tensor) or u.shape != (n,):
            got = tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__
            raise ValueError(f"u must be a tensor of shape (n,) = ({n},), got {got}")
        r = self.local_ratio(u.to(latents.device), grid=grid)
        wd, K = work_dtype(latents.dtype), self.stages
        if n == 0:
            return _empty_batch(k, self.level_shape(latents.shape, k), latents, wd)
        levels = [latents]  # clean_{K-1}, clean_{K-2}, ..., clean_{k-1}
        for _ in range(K - 1 - k + (k > 0)):
            levels.append(_bilinear_half(levels[-1]))
        clean = levels[K - 1 - k].to(wd)
        n_k = noise_pyramid(noise.to(device=latents.device, dtype=wd), K - k)[0]
        s_sig, e_sig = self.start_sigmas[k], self.end_sigmas[k]
        r_b = r.to(wd).view(n, *([1] * (latents.dim() - 1)))

        prev = levels[-1].to(wd) if k > 0 else None  # clean_{k-1}
        if _FUSED:  # same numbers up to rounding, fewer passes over memory (tests run both)
            noisy, target = _fused_noisy_target(k == K - 1, s_sig, e_sig, n_k, clean, prev, r_b)
        else:
            start = n_k if k == 0 else s_sig * n_k + (1 - s_sig) * _upsample_nearest(prev)
            end = clean if k == K - 1 else e_sig * n_k + (1 - e_sig) * clean
            noisy = r_b * start + (1 - r_b) * end
            target = start - end

        t_max, t_min = self.timestep_range[k]
        return StageBatch(
            stage=k, indices=torch.arange(n, device=latents.device),
            noisy=noisy.to(latents.dtype), target=target.to(latents.dtype), ratio=r.to(wd),
            timestep=(t_min + r * (t_max - t_min)).to(wd),
            sigma=(e_sig + r * (s_sig - e_sig)).to(wd),
        )

    def training_inputs(
        self,
        latents: torch.Tensor,
        *,
        stage_shares: Sequence[int] | None = None,
        generator=None,
        u_sampler: Callable | None = None,
        noise: torch.Tensor | None = None,
        grid: str = "reference",
    ) -> list[StageBatch]:
        """Pyramidal flow-matching training inputs, one :class:`StageBatch` per stage.

        Splits the batch as the reference does: with ``S = sum(stage_shares)`` columns,
        sample ``b`` is in column ``b mod S`` and the columns go to the stages in order,
        ``stage_shares[k]`` each. It then draws the full-resolution noise and, stage by
        stage, ``u = u_sampler(n, generator=..., device=...)``, and returns
        :meth:`stage_inputs` of each stage with its batch positions in ``indices``.

        Args:
            latents: (B, C, H, W) or (B, C, T, H, W) at full resolution; H, W multiples of
                2^(stages-1); B a multiple of sum(stage_shares) (B = 0 gives empty stages).
            stage_shares: ``stages`` ints >= 0, sum >= 1; default 1 for the first and last
                stage and 2 for each inner one (the reference's (1, 2, 1) for 3 stages).
            generator: one generator or one per sample. Draw order: the full-resolution
                noise (unless ``noise`` is given), then u for stage 0, 1, ... With one
                generator per sample, sample ``b``'s numbers depend only on generator ``b``.
                With a :class:`~vidnoise.noise.NoiseKey` (origin: the batch's corner in
                full-resolution coordinates) the noise is ``key.randn(latents.shape)`` and
                sample ``b``'s u comes from its own generator seeded with
                ``key.derive("u", o_B + b).seed`` (``o_B`` the batch origin); every number is
                then a function of the key and the global coordinates, so shards with batch
                origins that are multiples of sum(stage_shares) (every sample keeps its
                stage) and H, W origins multiples of 2^(stages-1) give the slices of the
                whole batch's inputs.
            u_sampler: callable ``(n, *, generator, device) -> (n,)`` floating tensor of u in
                [0, 1) (default: the library's ``uniform`` σ sampler); values outside [0, 1)
                or NaN raise ``ValueError`` (checked on the host for CPU tensors).
            noise: full-resolution noise (shape of ``latents``) instead of a draw.
            grid: "reference" (ratios on the N-point grid) or "exact" (``r = 1 - u``).

        Same noise and u in, same numbers out as the reference ``add_pyramid_noise``.
        """
        check_tensor("latents", latents, ndims=(4, 5))
        _check_sizes("latents", latents.shape, self.stages)
        shares = _stage_shares(self.stages, stage_shares)
        grid = check_choice("grid", grid, GRIDS)
        sampler = check_callable("u_sampler", u_sampler, optional=True) or _default_u_sampler()
        B, S = latents.shape[0], sum(shares)
        if B % S:
            raise ValueError(
                f"latents: the batch size B={B} must be a multiple of sum(stage_shares) = {S} "
                f"(stage_shares={shares})"
            )
        if isinstance(generator, NoiseKey):
            origin = _key_origin(generator, latents.dim(), 2 ** (self.stages - 1),
                                 "for training_inputs")
            if origin[0] % S:
                raise ValueError(
                    f"generator=NoiseKey origin {origin}: the batch origin must be a multiple "
                    f"of sum(stage_shares) = {S}, so that every sample keeps the stage it has "
                    f"in the whole batch, got {origin[0]}"
                )
            key, gens = generator, [
                torch.Generator(device=latents.device).manual_seed(
                    generator.derive("u", origin[0] + b).seed)
                for b in range(B)
            ]
        else:
            key = gens = as_generators(generator, B)
        if noise is None:
            noise = randn(latents.shape, generator=key, device=latents.device,
                          dtype=work_dtype(latents.dtype))
        else:
            _check_noise(noise, latents.shape, "the shape of latents")
        def columns(x, a, b):  # samples g·S + c, c in [a, b), ascending: a strided slice
            return x.reshape(B // S, S, *x.shape[1:])[:, a:b].reshape(-1, *x.shape[1:])

        out, first = [], 0
        for k, share in enumerate(shares):
            a, first = first, first + share
            rows = columns(torch.arange(B), a, first)
            u = _draw_u(sampler, rows, gens, latents.device)
            batch = self.stage_inputs(k, columns(latents, a, first), columns(noise, a, first),
                                      u, grid=grid)
            out.append(dataclasses.replace(batch, indices=rows.to(latents.device)))
        return out

