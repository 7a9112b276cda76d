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

from vidnoise._checks import check_float
from vidnoise.samplers._common import check_callable, check_output, read_grid, to_device

__all__ = ["cfg", "dynamic_cfg", "DynamicCFG"]


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


def _per_step_scales(scale, sigmas) -> tuple[list[float], list[float]] | None:
    """Return (w_0..w_{N-1}, σ_0..σ_{N-1}) for a per-step scale, None for a float."""
    if isinstance(scale, numbers.Real) and not isinstance(scale, bool):
        check_float("scale", scale)
        return None
    if isinstance(scale, DynamicCFG):
        values = None
    elif isinstance(scale, torch.Tensor) and scale.dim() == 1:
        values = [float(v) for v in scale.detach().cpu().tolist()]
    elif isinstance(scale, Sequence) and not isinstance(scale, str):
        values = [check_float(f"scale[{i}]", v) for i, v in enumerate(scale)]
    else:
        raise TypeError(
            "scale must be a float, a per-step list of floats or dynamic_cfg(...), got "
            f"{type(scale).__name__}"
        )
    if sigmas is None:
        raise ValueError(
            "sigmas is required with a per-step or dynamic scale: pass the sampler's grid "
            "so each model call can find its step"
        )
    grid = read_grid("sigmas", sigmas, end=None)
    n = len(grid) - 1
    if values is None:
        values = scale.scales(n)
    if len(values) != n:
        raise ValueError(
            f"scale must have one value per step: len(sigmas) - 1 = {n} values, got "
            f"{len(values)}"
        )
    for i, v in enumerate(values):
        check_float(f"scale[{i}]", v)
    return values, grid[:-1]


def cfg(model_cond, model_uncond, scale, *, sigmas=None):
    """Classifier-free guidance combinator: returns ``guided(x, sigma)``.

    ``guided(x, σ) = u + w·(c - u)`` with ``c = model_cond(x, σ)``, ``u = model_uncond(x, σ)``.

    Args:
        model_cond: conditional model ``(x, sigma) -> prediction``.
        model_uncond: unconditional model, or ``None`` to batch both in one call:
            ``model_cond(cat([x, x]), cat([σ, σ]))`` must then return the conditional
            prediction in the first half and the unconditional one in the second (the usual
            pipeline layout with a [cond; uncond] embedding batch).
        scale: a float; a per-step sequence ``w_0..w_{N-1}`` (Mochi's ``cfg_schedule``); or
            :func:`dynamic_cfg`. The last two need ``sigmas``.
        sigmas: the sampler's grid (N+1 values). A model call at σ uses the scale of the
            first step i with σ_i <= σ, i.e. ``w(σ) = w_i`` on [σ_i, σ_{i-1}) (relative
            tolerance 1e-6; σ above σ_0 uses w_0, σ below σ_{N-1} uses w_{N-1}). Each step's
            first call (at σ_i, or at σ̂_i >= σ_i under EDM churn) therefore uses w_i; a
            Heun correction at σ_{i+1} uses w_{i+1}, a midpoint call at (σ_i + σ_{i+1})/2
            uses w_{i+1}: a piecewise-constant w(σ), so the guided ODE is well defined. The
            look-up runs on the device (no host sync).
    """
    check_callable("model_cond", model_cond)
    check_callable("model_uncond", model_uncond, optional=True)
    plan = _per_step_scales(scale, sigmas)
    cache: dict = {}

    def step_scale(sigma: torch.Tensor, like: torch.Tensor):
        if plan is None:
            return float(scale)
        key = (sigma.device, like.dtype)
        if key not in cache:
            w, g = plan
            wdt = torch.float64 if like.dtype == torch.float64 else torch.float32
            cache[key] = (
                to_device(w, wdt, sigma.device),
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
        if model_uncond is None:
            s2 = torch.cat([sigma, sigma]) if sigma.dim() > 0 else sigma
            both = model_cond(torch.cat([x, x]), s2)
            if not isinstance(both, torch.Tensor) or both.shape[0] != 2 * x.shape[0]:
                raise ValueError(
                    "model_cond (batched, model_uncond=None) must return a tensor with twice "
                    f"the input's batch ({2 * x.shape[0]}), got "
                    f"{getattr(both, 'shape', type(both).__name__)}"
                )
            c, u = both.chunk(2)
        else:
            c, u = model_cond(x, sigma), model_uncond(x, sigma)
        check_output("model_cond", c, x)
        check_output("model_uncond", u, x)
        w = step_scale(sigma, x)
        dt = c.dtype
        cw, uw = (c.float(), u.float()) if dt in (torch.float16, torch.bfloat16) else (c, u)
        return (uw + w * (cw - uw)).to(dt)  # u + w·(c - u)

    return guided
