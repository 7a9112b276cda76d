"""Pyramid-Flow's pyramidal flow sampler: Euler within each stage, renoising jumps between.

Conventions: see :mod:`vidnoise.pyramid`. Within stage ``k`` the state is
``x_r = r·start_k + (1-r)·end_k`` with the local ratio ``r`` going from 1 to 0, and the model
predicts the stage velocity ``dx/dr = start_k - end_k``; an Euler step is
``x_{r'} = x_r + (r' - r)·v``. (With ``σ(r) = r·σ_start + (1-r)·σ_end`` the library's
``v = ε - x0`` relates as ``start - end ≈ (σ_start - σ_end)·(ε - x0)``.)
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import torch

from vidnoise._checks import (
    check_bool,
    check_callable,
    check_choice,
    check_floating_dtype,
    check_int,
    check_shape,
    check_tensor,
    work_dtype,
)
from vidnoise.noise import NoiseKey, as_generators, noise_pyramid, randn
from vidnoise.pyramid import PyramidSchedule, _key_origin
from vidnoise.samplers._common import progress_bar
from vidnoise.samplers.guidance import scale_plan, stage_cfg

__all__ = ["sample_pyramid"]

#: Euler steps per stage when ``steps`` is not given.
DEFAULT_STEPS = 20


def _stage_steps(steps, stages: int) -> tuple[int, ...]:
    """``steps`` as one int >= 1 per stage (None: DEFAULT_STEPS; an int: every stage)."""
    if steps is None:
        return (DEFAULT_STEPS,) * stages
    if isinstance(steps, numbers.Integral) and not isinstance(steps, bool):
        steps = (steps,) * stages
    if not isinstance(steps, Sequence) or isinstance(steps, str) or len(steps) != stages:
        raise ValueError(
            f"steps must be an int or a sequence of stages = {stages} ints >= 1, got {steps!r}"
        )
    return tuple(check_int(f"steps[{k}]", v, minimum=1) for k, v in enumerate(steps))


def sample_pyramid(
    model: Callable,
    shape,
    schedule: PyramidSchedule,
    steps=None,
    *,
    generator=None,
    grid: str = "reference",
    guidance=None,
    callback: Callable | None = None,
    progress: bool = False,
    noise: torch.Tensor | None = None,
    jump: Callable | None = None,
    dtype: torch.dtype | None = None,
    device=None,
    grad: bool = False,
) -> torch.Tensor:
    """Generate with a pyramidal flow model, coarsest stage first.

    Algorithm (Pyramid-Flow's ``generate_one_unit`` without the video/AR plumbing)::

        ε ~ N(0, I) at full resolution;  x = noise_pyramid(ε)[0]          # stage-0 start
        for k in 0..K-1:
            if k > 0: x = schedule.jump(x, k)        # α·Up(x) + β·block noise
            t, r = schedule.stage_grid(k, steps[k], grid=grid)
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
        steps: Euler steps per stage (``schedule.stages`` ints >= 1), one int for every
            stage, or None (default): 20 steps in each of the schedule's stages.
        generator: one generator or one per sample; draws the initial noise, then the block
            noise of each jump in stage order. Or a :class:`~vidnoise.noise.NoiseKey` whose
            origin is the sample's corner in full-resolution coordinates (None: zeros): the
            initial noise is ``key.randn(shape)`` and the jump into stage ``k`` draws
            ``key.derive("jump", k)`` (see :meth:`~vidnoise.pyramid.PyramidSchedule.jump`;
            a custom ``jump`` receives the key). H and W origins must be multiples of
            ``2^(stages-1)`` (``ValueError`` naming ``origin``). Then a sample drawn in
            pieces (along B, T, or H and W on multiples of ``2^(stages-1)``) equals the
            slices of the whole sample bit for bit when ``model`` acts locally (per batch
            item, frame or pixel as the pieces are cut).
        grid: ``"reference"`` (Pyramid-Flow's ``linspace(1, 1/N, n)`` then 0) or
            ``"exact"`` (equal steps down to 0); see
            :meth:`~vidnoise.pyramid.PyramidSchedule.stage_grid`.
        guidance: classifier-free guidance (:func:`~vidnoise.samplers.guidance.stage_cfg`).
            ``None``: one call ``model(x, t, k)``. Otherwise the model must accept a keyword
            ``cond`` and the velocity is ``u + w·(c - u)`` with
            ``c = model(x, t, k, cond=True)``, ``u = model(x, t, k, cond=False)``; ``w`` is
            a float, one entry per stage (a float or a per-step list), a callable
            ``(stage, step, num_steps) -> float`` or an object with ``.scales(num_steps)``
            (e.g. :func:`vidnoise.samplers.dynamic_cfg`), read by
            :func:`~vidnoise.samplers.guidance.scale_plan` as Python floats before the loop.
            A step with ``w = 1`` makes one call (``cond=True``).
            (To batch cond/uncond in one call, wrap the model yourself and pass
            ``guidance=None``.)
        callback: called after each model evaluation with
            ``dict(stage=k, i=i, x=x, timestep=t, ratio=r_i, ratio_next=r_{i+1}, velocity=v)``
            (``x`` in the working dtype, before the step's update).
        progress: show a tqdm bar (a warning and no bar without tqdm).
        noise: full-resolution initial noise (``shape``) to use instead of a draw.
        jump: ``jump(x, stage, generator=...) -> x`` replacing ``schedule.jump`` (ablations:
            i.i.d. renoising, no renoising); must return a tensor of stage ``stage``'s
            shape on ``x``'s device.
        dtype: dtype of the model input and of the result (default: ``noise``'s dtype or
            torch's default). Half precision is updated in float32.
        device: device of the draw (default: the generator's, or ``noise``'s).
        grad: build the autograd graph through every step. Default False: the loop runs
            under ``torch.no_grad()``, like the other samplers.

    Returns:
        The sample at full resolution, in ``dtype``.

    The loop has no ``.item()``, ``.tolist()`` or branch on tensor values: grids and guidance
    scales are Python floats and all timestep tensors are made before the first step.
    """
    check_callable("model", model)
    if not isinstance(schedule, PyramidSchedule):
        raise TypeError(f"schedule must be a PyramidSchedule, got {type(schedule).__name__}")
    K = schedule.stages
    shape = check_shape("shape", shape)
    if len(shape) not in (4, 5):
        raise ValueError(f"shape must be (B, C, H, W) or (B, C, T, H, W), got {shape}")
    stage_shapes = [schedule.level_shape(shape, k) for k in range(K)]  # H, W multiples
    steps = _stage_steps(steps, K)
    check_choice("grid", grid, ("reference", "exact"))
    check_callable("callback", callback, optional=True)
    check_callable("jump", jump, optional=True)
    check_bool("progress", progress)
    check_bool("grad", grad)
    plan = scale_plan("guidance", guidance, steps)
    if noise is not None:
        check_tensor("noise", noise)
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
        dtype = noise.dtype if dtype is None else dtype
        device = noise.device
    dtype = check_floating_dtype("dtype", dtype)
    wd = work_dtype(dtype)
    if isinstance(generator, NoiseKey):  # a keyed whole sample: checked before any step
        _key_origin(generator, len(shape), 2 ** (K - 1), "for sample_pyramid")
        gens = generator
    else:
        gens = as_generators(generator, shape[0])
    with torch.set_grad_enabled(grad):
        return _loop(model, shape, schedule, steps, gens, grid, plan, callback, progress,
                     noise, jump, dtype, wd, device, stage_shapes)


def _loop(model, shape, schedule, steps, gens, grid, plan, callback, progress, noise, jump,
          dtype, wd, device, stage_shapes):
    K = schedule.stages
    if noise is None:
        noise = randn(shape, generator=gens, device=device, dtype=wd)
    x = noise_pyramid(noise.to(wd), K)[0]
    dev, B = x.device, shape[0]

    # Everything the loop reads, made before it: Python floats and per-stage time batches.
    grids = []
    for k in range(K):
        ts, rs = schedule.stage_grid(k, steps[k], grid=grid)
        t_dev = ts.to(device=dev, dtype=wd)[:, None].repeat(1, B)  # row i = t_i, shape (B,)
        grids.append((t_dev, [float(r) for r in rs]))
    do_jump = jump if jump is not None else schedule.jump
    velocity = stage_cfg(model, plan, wd)
    bar = progress_bar(sum(steps), progress, "sample_pyramid")

    try:
        for k in range(K):
            if k > 0:
                x = _jumped(do_jump(x, k, generator=gens), x, k, stage_shapes[k]).to(wd)
            t_dev, rs = grids[k]
            for i in range(steps[k]):
                v = velocity(x.to(dtype), t_dev[i], k, i)
                if callback is not None:
                    callback(dict(stage=k, i=i, x=x, timestep=t_dev[i], ratio=rs[i],
                                  ratio_next=rs[i + 1], velocity=v))
                x = x.add(v, alpha=rs[i + 1] - rs[i])  # x_{r'} = x_r + (r' - r)·v
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return x.to(dtype)


def _jumped(out, x, k, want) -> torch.Tensor:
    """Check a jump's output (type, stage-k shape, device: host metadata, no sync)."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"jump must return a torch.Tensor (the stage-{k} start), got {type(out).__name__}"
        )
    if tuple(out.shape) != tuple(want):
        raise ValueError(
            f"jump must return a tensor of stage {k}'s shape {tuple(want)} (from "
            f"{tuple(x.shape)}), got {tuple(out.shape)}"
        )
    if out.device != x.device:
        raise ValueError(f"jump must return a tensor on {x.device}, got one on {out.device}")
    return out
