"""Pyramid-Flow's pyramidal flow sampler: Euler within each stage, renoising jumps between.

Conventions: see :mod:`vidnoise.pyramid`. Within stage ``k`` the state is
``x_r = r·start_k + (1-r)·end_k`` with the local ratio ``r`` going from 1 to 0, and the model
predicts the stage velocity ``dx/dr = start_k - end_k``; an Euler step is
``x_{r'} = x_r + (r' - r)·v``. (With ``σ(r) = r·σ_start + (1-r)·σ_end`` the library's
``v = ε - x0`` relates as ``start - end ≈ (σ_start - σ_end)·(ε - x0)``.)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch

from vidnoise._checks import check_shape
from vidnoise.noise import as_generators, noise_pyramid, randn
from vidnoise.pyramid import PyramidSchedule
from vidnoise.samplers._common import progress_bar

__all__ = ["sample_pyramid"]


def _guidance_plan(guidance, steps: Sequence[int]) -> list[list[float]] | None:
    """Per-stage lists of per-step guidance scales as Python floats (None: no guidance)."""
    if guidance is None:
        return None
    K = len(steps)

    def real(name, v):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite real number, got {v!r}")
        return float(v)

    if isinstance(guidance, numbers.Real) and not isinstance(guidance, bool):
        w = real("guidance", guidance)
        return [[w] * n for n in steps]
    if hasattr(guidance, "scales") and callable(guidance.scales):  # e.g. dynamic_cfg(...)
        plan = []
        for n in steps:
            vals = list(guidance.scales(n))
            if len(vals) != n:
                raise ValueError(f"guidance.scales({n}) must return {n} values, got {len(vals)}")
            plan.append([real(f"guidance.scales({n})[{i}]", v) for i, v in enumerate(vals)])
        return plan
    if callable(guidance):
        return [[real(f"guidance({k}, {i}, {n})", guidance(k, i, n)) for i in range(n)]
                for k, n in enumerate(steps)]
    if isinstance(guidance, Sequence) and not isinstance(guidance, str):
        if len(guidance) != K:
            raise ValueError(
                f"guidance as a sequence must have one scale per stage ({K}), got {len(guidance)}"
            )
        return [[real(f"guidance[{k}]", guidance[k])] * n for k, n in enumerate(steps)]
    raise TypeError(
        "guidance must be None, a float, one float per stage, a callable "
        f"(stage, step, num_steps) -> float or an object with .scales(n), got "
        f"{type(guidance).__name__}"
    )


@torch.no_grad()
def sample_pyramid(
    model: Callable,
    shape,
    schedule: PyramidSchedule,
    steps=(20, 20, 20),
    *,
    generator=None,
    compat: bool = True,
    guidance=None,
    callback: Callable | None = None,
    progress: bool = False,
    noise: torch.Tensor | None = None,
    jump: Callable | None = None,
    dtype: torch.dtype | None = None,
    device=None,
) -> torch.Tensor:
    """Generate with a pyramidal flow model, coarsest stage first.

    Algorithm (Pyramid-Flow's ``generate_one_unit`` without the video/AR plumbing)::

        ε ~ N(0, I) at full resolution;  x = noise_pyramid(ε)[0]          # stage-0 start
        for k in 0..K-1:
            if k > 0: x = schedule.jump(x, k)        # α·Up(x) + β·block noise
            t, r = schedule.stage_grid(k, steps[k], compat=compat)
            for i in 0..steps[k]-1:
                v = model(x, t_i, k)                  # velocity start - end
                x = x + (r_{i+1} - r_i)·v             # Euler, r from 1 to 0
        return x                                       # end of the last stage: the sample

    Args:
        model: ``model(x, timestep, stage) -> velocity`` (``start - end`` direction) with
            ``x`` of the stage's shape in ``dtype``, ``timestep`` a (B,) tensor of
            Pyramid-Flow pseudo-times (float32; float64 when ``dtype`` is float64; convert
            with ``schedule.ratio_from_timestep``) and ``stage`` a Python int.
        shape: full-resolution (B, C, H, W) or (B, C, T, H, W); H and W multiples of
            2^(stages-1).
        schedule: a :class:`~vidnoise.pyramid.PyramidSchedule`.
        steps: Euler steps per stage (``stages`` ints >= 1), or one int for every stage.
        generator: one generator or one per sample; draws the initial noise, then the block
            noise of each jump in stage order.
        compat: reference grid (``linspace(1, 1/N, n)`` then 0) or equal steps to 0; see
            :meth:`~vidnoise.pyramid.PyramidSchedule.stage_grid`.
        guidance: classifier-free guidance. ``None``: one call ``model(x, t, k)``. Otherwise
            the model must accept a keyword ``cond`` and the velocity is
            ``u + w·(c - u)`` with ``c = model(x, t, k, cond=True)``,
            ``u = model(x, t, k, cond=False)``; ``w`` is a float, one float per stage, a
            callable ``(stage, step, num_steps) -> float`` or an object with
            ``.scales(num_steps)`` (e.g. :func:`vidnoise.samplers.dynamic_cfg`), all read as
            Python floats before the loop. A step with ``w = 1`` makes one call
            (``cond=True``).
            (To batch cond/uncond in one call, wrap the model yourself and pass
            ``guidance=None``.)
        callback: called after each model evaluation with
            ``dict(stage=k, i=i, x=x, timestep=t, ratio=r_i, ratio_next=r_{i+1}, velocity=v)``
            (``x`` in the working dtype, before the step's update).
        progress: show a tqdm bar (a warning and no bar without tqdm).
        noise: full-resolution initial noise (``shape``) to use instead of a draw.
        jump: ``jump(x, stage, generator=...) -> x`` replacing ``schedule.jump`` (ablations:
            i.i.d. renoising, no renoising).
        dtype: dtype of the model input and of the result (default: ``noise``'s dtype or
            torch's default). Half precision is updated in float32.
        device: device of the draw (default: the generator's, or ``noise``'s).

    Returns:
        The sample at full resolution, in ``dtype``.

    The loop has no ``.item()``, ``.tolist()`` or branch on tensor values: grids and guidance
    scales are Python floats and all timestep tensors are made before the first step.
    """
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    if not isinstance(schedule, PyramidSchedule):
        raise TypeError(f"schedule must be a PyramidSchedule, got {type(schedule).__name__}")
    K = schedule.stages
    shape = check_shape("shape", shape)
    if len(shape) not in (4, 5):
        raise ValueError(f"shape must be (B, C, H, W) or (B, C, T, H, W), got {shape}")
    schedule.level_shape(shape, K - 1)  # raises on H, W not multiples of 2^(K-1)
    if isinstance(steps, numbers.Integral) and not isinstance(steps, bool):
        steps = (int(steps),) * K
    if not isinstance(steps, Sequence) or isinstance(steps, str) or len(steps) != K:
        raise ValueError(
            f"steps must be an int or a sequence of stages = {K} ints >= 1, got {steps!r}"
        )
    for v in steps:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"steps must contain ints >= 1 (one per stage), got {tuple(steps)}")
    steps = tuple(int(v) for v in steps)
    if not isinstance(compat, bool):
        raise TypeError(f"compat must be True or False, got {compat!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    if jump is not None and not callable(jump):
        raise TypeError(f"jump must be callable or None, got {type(jump).__name__}")
    plan = _guidance_plan(guidance, steps)

    if noise is not None:
        if not isinstance(noise, torch.Tensor) or tuple(noise.shape) != shape:
            raise ValueError(
                f"noise must be a tensor of shape {shape}, got "
                f"{tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise)}"
            )
        dtype = noise.dtype if dtype is None else dtype
        device = noise.device
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    wd = torch.float64 if dtype == torch.float64 else torch.float32
    gens = as_generators(generator, shape[0])
    if noise is None:
        noise = randn(shape, generator=gens, device=device, dtype=wd)
    x = noise_pyramid(noise.to(wd), K)[0]
    dev, B = x.device, shape[0]

    # Everything the loop reads, made before it: Python floats and per-stage time batches.
    grids = []
    for k in range(K):
        ts, rs = schedule.stage_grid(k, steps[k], compat=compat)
        t_dev = ts.to(device=dev, dtype=wd)[:, None].repeat(1, B)  # row i = t_i, shape (B,)
        grids.append((t_dev, [float(r) for r in rs]))
    do_jump = jump if jump is not None else schedule.jump
    bar = progress_bar(sum(steps), progress, "sample_pyramid")

    def call(x_in, t, k, **kw):
        v = model(x_in, t, k, **kw)
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"model must return a torch.Tensor, got {type(v).__name__}")
        if v.shape != x_in.shape:
            raise ValueError(
                f"model must return a velocity of the state's shape {tuple(x_in.shape)} at "
                f"stage {k}, got {tuple(v.shape)}"
            )
        return v

    def velocity(x_in, t, k, w):
        if w is None:
            return call(x_in, t, k)
        if w == 1.0:
            return call(x_in, t, k, cond=True)
        c = call(x_in, t, k, cond=True).to(wd)
        u = call(x_in, t, k, cond=False).to(wd)
        return torch.lerp(u, c, w)  # u + w·(c - u)

    try:
        for k in range(K):
            if k > 0:
                x = do_jump(x, k, generator=gens)
                x = x.to(wd)
            t_dev, rs = grids[k]
            ws = plan[k] if plan is not None else None
            for i in range(steps[k]):
                v = velocity(x.to(dtype), t_dev[i], k, None if ws is None else ws[i])
                if callback is not None:
                    callback(dict(stage=k, i=i, x=x, timestep=t_dev[i], ratio=rs[i],
                                  ratio_next=rs[i + 1], velocity=v))
                x = x.add(v.to(wd), alpha=rs[i + 1] - rs[i])  # x_{r'} = x_r + (r' - r)·v
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return x.to(dtype)
