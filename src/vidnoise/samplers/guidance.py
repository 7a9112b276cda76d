"""Classifier-free guidance: ``out = uncond + w·(cond - uncond)`` with a fixed, per-step
(Mochi) or dynamic (CogVideoX) scale ``w``.

The combination is linear, so it applies to any prediction (velocity, x0, ε) as long as
both models predict the same thing.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vidnoise._checks import check_callable, check_choice, check_float, check_tensor, work_dtype
from vidnoise.samplers._common import model_output, read_grid, to_device

__all__ = ["cfg", "dynamic_cfg", "DynamicCFG", "combine", "scale_plan", "stage_cfg"]


@dataclass(frozen=True)
class DynamicCFG:
    """CogVideoX's cosine guidance schedule; see :func:`dynamic_cfg`."""

    scale: float
    exponent: float = 5.0

    def scales(self, n_steps: int) -> list[float]:
        """``w_i = 1 + scale·(1 - cos(π·((N - i)/N)^exponent))/2`` for steps i = 0..N-1."""
        n = n_steps
        return [
            1.0 + self.scale * (1.0 - math.cos(math.pi * ((n - i) / n) ** self.exponent)) / 2.0
            for i in range(n)
        ]


def dynamic_cfg(scale: float, exponent: float = 5.0) -> DynamicCFG:
    """CogVideoX's dynamic guidance: ``w_i = 1 + scale·(1 - cos(π·((N - i)/N)^exponent))/2``.

    At step 0 ``w = 1 + scale`` (full guidance); it falls smoothly to about 1 (no guidance)
    at the last steps. ``i`` is the step index 0..N-1. (The CogVideoX pipeline writes the
    formula with the model timestep ``t`` in [0, 1000) in place of the step index, mixing
    two scales; this uses the step index, as the formula intends.) Pass the result as
    ``scale`` to :func:`cfg` together with ``sigmas``.
    """
    scale = check_float("scale", scale)
    exponent = check_float("exponent", exponent, low=0.0, low_open=True)
    return DynamicCFG(scale, exponent)


BATCH_ORDERS = ("uncond_first", "cond_first")


def _real(name, v) -> float:
    if isinstance(v, torch.Tensor) and v.dim() == 0:
        v = float(v)
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite real number, got {v!r}")
    return float(v)


def scale_plan(name: str, scale, steps: Sequence[int]) -> list[list[float]] | None:
    """The one guidance-scale parser: per-stage lists of per-step scales as Python floats.

    ``steps`` holds the number of steps of each stage (a flat sampler is one stage of N
    steps). ``scale`` may be

    * ``None``: no guidance (returns None);
    * a real number ``w``: ``w`` at every step;
    * an object with ``.scales(n)`` returning n floats (e.g. :func:`dynamic_cfg`): its
      values for each stage's step count;
    * a callable ``(stage, step, num_steps) -> float``;
    * a sequence (or 1-D tensor): with several stages, one entry per stage, each a real
      number or a per-step sequence of that stage's length; with one stage, one value per
      step (Mochi's ``cfg_schedule``).

    Everything is read on the host, once, before a sampler's loop.
    """
    if scale is None:
        return None
    if isinstance(scale, numbers.Real) and not isinstance(scale, bool):
        w = _real(name, scale)
        return [[w] * n for n in steps]
    if hasattr(scale, "scales") and callable(scale.scales):
        plan = []
        for n in steps:
            vals = list(scale.scales(n))
            if len(vals) != n:
                raise ValueError(f"{name}.scales({n}) must return {n} values, got {len(vals)}")
            plan.append([_real(f"{name}.scales({n})[{i}]", v) for i, v in enumerate(vals)])
        return plan
    if callable(scale):
        return [[_real(f"{name}({k}, {i}, {n})", scale(k, i, n)) for i in range(n)]
                for k, n in enumerate(steps)]
    if isinstance(scale, torch.Tensor) and scale.dim() == 1:
        scale = [float(v) for v in scale.detach().cpu().tolist()]
    if isinstance(scale, Sequence) and not isinstance(scale, str):
        if len(steps) == 1:
            return [_per_step(name, scale, steps[0])]
        if len(scale) != len(steps):
            raise ValueError(
                f"{name} as a sequence must have one entry per stage ({len(steps)}), got "
                f"{len(scale)}"
            )
        return [
            [_real(f"{name}[{k}]", w)] * n if isinstance(w, numbers.Real)
            else _per_step(f"{name}[{k}]", w, n)
            for k, (w, n) in enumerate(zip(scale, steps))
        ]
    raise TypeError(
        f"{name} must be None, a float, a sequence of floats, a callable "
        f"(stage, step, num_steps) -> float or an object with .scales(n) such as "
        f"dynamic_cfg(...), got {type(scale).__name__}"
    )


def _per_step(name, values, n) -> list[float]:
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) != n:
        got = len(values) if isinstance(values, Sequence) else type(values).__name__
        raise ValueError(f"{name} must have one value per step ({n}), got {got}")
    return [_real(f"{name}[{i}]", v) for i, v in enumerate(values)]


def combine(c: torch.Tensor, u: torch.Tensor, w, dtype: torch.dtype | None = None):
    """``u + w·(c - u)``, in float32 for half-precision predictions, returned in ``dtype``
    (default ``c``'s dtype); ``w`` is a float or a tensor broadcastable against ``c``."""
    wd = work_dtype(c.dtype)
    cw, uw = c.to(wd), u.to(wd)
    return (uw + w * (cw - uw)).to(c.dtype if dtype is None else dtype)  # u + w·(c - u)


def stage_cfg(model, plan: list[list[float]] | None, dtype: torch.dtype):
    """The stage-aware variant of :func:`cfg`, for pyramidal models
    ``model(x, timestep, stage, *, cond) -> velocity``: returns
    ``velocity(x, timestep, stage, step)`` in ``dtype``.

    ``plan`` comes from :func:`scale_plan` (``plan[stage][step]`` = w). Without a plan the
    model is called once as ``model(x, t, k)``; a step with ``w = 1`` calls
    ``model(x, t, k, cond=True)`` once; otherwise ``u + w·(c - u)`` with
    ``c = model(x, t, k, cond=True)`` and ``u = model(x, t, k, cond=False)``.
    """

    def call(x, t, k, **kw):
        return model_output(f"model (the stage-{k} velocity)", model(x, t, k, **kw), x)

    def velocity(x, t, k, i):
        if plan is None:
            return call(x, t, k).to(dtype)
        w = plan[k][i]
        if w == 1.0:
            return call(x, t, k, cond=True).to(dtype)
        return combine(call(x, t, k, cond=True), call(x, t, k, cond=False), w, dtype)

    return velocity


def _check_sigma(sigma: torch.Tensor, x: torch.Tensor, *, per_sample_only: bool) -> None:
    """σ given to a guided model: a real 0-d tensor or one level per sample, (B,); with a
    fixed scale also (B, ...) (e.g. per-frame levels), since no step look-up reads it."""
    if sigma.dtype == torch.bool or sigma.is_complex():
        raise TypeError(f"sigma must be a real tensor, got dtype {sigma.dtype}")
    b = x.shape[0]
    ok = sigma.dim() == 0 or (sigma.shape[0] == b and (sigma.dim() == 1 or not per_sample_only))
    if not ok:
        allowed = f"a float, a 0-d tensor or a ({b},) tensor (one level per item of x's dim 0)"
        if not per_sample_only:
            allowed += f" or a ({b}, ...) tensor"
        raise ValueError(f"sigma must be {allowed}, got shape {tuple(sigma.shape)}")


def cfg(model_cond, model_uncond, scale, *, sigmas=None, batch_order="uncond_first"):
    """Classifier-free guidance combinator: returns ``guided(x, sigma)``.

    ``guided(x, σ) = u + w·(c - u)`` with ``c = model_cond(x, σ)``, ``u = model_uncond(x, σ)``.

    Args:
        model_cond: conditional model ``(x, sigma) -> prediction``.
        model_uncond: unconditional model, or ``None`` to batch both in one call of
            ``model_cond`` on ``cat([x, x])`` and ``cat([σ, σ])``; how the two halves of
            its output are read is ``batch_order``.
        scale: a float; a per-step sequence ``w_0..w_{N-1}`` (Mochi's ``cfg_schedule``);
            a callable ``(0, step, N) -> float``; or :func:`dynamic_cfg`. All but the float
            need ``sigmas``. Parsed by :func:`scale_plan`, as ``sample_pyramid``'s
            ``guidance``.
        sigmas: the sampler's grid (N+1 values). A model call at σ uses the scale of the
            first step i with σ_i <= σ, i.e. ``w(σ) = w_i`` on [σ_i, σ_{i-1}) (relative
            tolerance 1e-6; σ above σ_0 uses w_0, σ below σ_{N-1} uses w_{N-1}). Each step's
            first call (at σ_i, or at σ̂_i >= σ_i under EDM churn) therefore uses w_i; a
            Heun correction at σ_{i+1} uses w_{i+1}, a midpoint call at (σ_i + σ_{i+1})/2
            uses w_{i+1}: a piecewise-constant w(σ), so the guided ODE is well defined. The
            look-up runs on the device (no host sync).
        batch_order: with ``model_uncond=None``, the order of the doubled batch.
            ``"uncond_first"`` (default): ``[uncond; cond]``, the layout of diffusers'
            pipelines (``cat([negative, positive])`` embeddings, then
            ``uncond, cond = out.chunk(2)``). ``"cond_first"``: ``[cond; uncond]``.

    ``sigma`` may be a (B,) tensor, a 0-d tensor or a Python float (made a (B,) tensor in
    the working dtype of ``x``); with a fixed float ``scale`` also a (B, ...) tensor such as
    per-frame levels. Any other shape raises naming ``sigma``.
    """
    check_callable("model_cond", model_cond)
    check_callable("model_uncond", model_uncond, optional=True)
    check_choice("batch_order", batch_order, BATCH_ORDERS)
    if (isinstance(scale, numbers.Real) and not isinstance(scale, bool)) or (
        isinstance(scale, torch.Tensor) and scale.dim() == 0
    ):
        scale = _real("scale", scale)  # a 0-d tensor is read once here, on the host
        plan = None
    else:
        if isinstance(scale, (str, bool)) or scale is None:
            scale_plan("scale", object() if scale is None else scale, [1])  # TypeError
        if sigmas is None:
            raise ValueError(
                "sigmas is required with a per-step or dynamic scale: pass the sampler's grid "
                "so each model call can find its step"
            )
        grid = read_grid("sigmas", sigmas, end=None)
        ws = scale_plan("scale", scale, [len(grid) - 1])[0]
        plan = (ws, grid[:-1])
    uncond_first = batch_order == "uncond_first"
    cache: dict = {}

    def step_scale(sigma: torch.Tensor, like: torch.Tensor):
        if plan is None:
            return scale
        key = (sigma.device, like.dtype)
        if key not in cache:
            w, g = plan
            cache[key] = (
                to_device(w, work_dtype(like.dtype), sigma.device),
                to_device(g, torch.float64, sigma.device),
            )
        w_t, g_t = cache[key]
        sig = sigma.reshape(-1).to(torch.float64)
        # i(σ) = #{j : σ_j > σ(1 + 1e-6)} = first j with σ_j <= σ, clamped to N - 1
        idx = (g_t[None, :] > sig[:, None] * (1.0 + 1e-6)).sum(-1).clamp(max=len(plan[0]) - 1)
        w = w_t[idx]
        if w.shape[0] == 1 and like.shape[0] != 1:
            w = w.expand(like.shape[0])
        return w.reshape(-1, *([1] * (like.dim() - 1)))

    def guided(x, sigma):
        check_tensor("x", x)
        if x.dim() < 1:
            raise ValueError("x must have a batch dim (dim 0), got a 0-d tensor")
        if not isinstance(sigma, torch.Tensor):
            value = _real("sigma", sigma)
            sigma = torch.full((x.shape[0],), value, dtype=work_dtype(x.dtype), device=x.device)
        else:
            _check_sigma(sigma, x, per_sample_only=plan is not None)
        if model_uncond is None:
            s2 = torch.cat([sigma, sigma]) if sigma.dim() > 0 else sigma
            both = model_cond(torch.cat([x, x]), s2)
            if not isinstance(both, torch.Tensor) or both.shape[0] != 2 * x.shape[0]:
                if isinstance(both, tuple):
                    model_output("model_cond", both, x)  # the return_dict=False hint
                raise ValueError(
                    "model_cond (batched, model_uncond=None) must return a tensor with twice "
                    f"the input's batch ({2 * x.shape[0]}), got "
                    f"{getattr(both, 'shape', type(both).__name__)}"
                )
            first, second = both.chunk(2)
            u, c = (first, second) if uncond_first else (second, first)
        else:
            c, u = model_cond(x, sigma), model_uncond(x, sigma)
        c = model_output("model_cond", c, x)
        u = model_output("model_uncond", u, x)
        return combine(c, u, step_scale(sigma, x))

    return guided
