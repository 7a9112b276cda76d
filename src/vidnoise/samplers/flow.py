"""Flow-matching ODE sampler: Euler, Heun and midpoint on a decreasing sigma grid.

Convention (``docs/conventions.md``): ``x_σ = (1 - σ)·x0 + σ·ε``, σ ∈ [0, 1] is the noise
fraction, the model predicts the velocity ``v = dx/dσ = ε - x0``. Sampling integrates
``dx/dσ = v(x, σ)`` from σ_0 (noise) down to 0 (data).
"""

from __future__ import annotations

import torch

from vidnoise._checks import check_bool, check_callable, check_choice
from vidnoise.samplers._common import (
    check_state,
    model_output,
    progress_range,
    read_grid,
    sigma_batch,
)

__all__ = ["sample_flow"]

SOLVERS = ("euler", "heun", "midpoint")
LAST_STEPS = ("corrected", "euler")


def sample_flow(
    model,
    noise,
    sigmas,
    *,
    solver="euler",
    last_step="corrected",
    callback=None,
    progress=False,
    grad=False,
):
    """Integrate the flow ODE ``dx/dσ = v(x, σ)`` from ``sigmas[0]`` to 0.

    Args:
        model: ``model(x, sigma) -> v`` with ``x`` of ``noise``'s shape and dtype and
            ``sigma`` a (B,) tensor (float32 for half-precision input); returns the velocity
            ``v = ε - x0`` with ``x``'s shape, on ``x``'s device (another dtype is cast to
            the working dtype).
        noise: the start, ``x`` at ``sigmas[0]`` (at σ_0 = 1 that is unit Gaussian noise;
            for σ_0 < 1 pass ``(1-σ_0)·x0 + σ_0·ε``). Any shape with a batch dim 0.
        sigmas: strictly decreasing grid in [0, 1] ending at 0 (N+1 values for N steps), a
            1-D tensor or a list; read once as Python floats before the loop. A grid of
            timesteps on a 0..1000 scale is refused with the converter to use
            (:func:`vidnoise.conventions.timestep_to_sigma`).
        solver: ``"euler"`` (1 model call a step), ``"heun"`` (2 calls a step: Euler
            predictor ``x̃ = x + h·v(x, σ)``, trapezoid corrector
            ``x' = x + h·(v(x, σ) + v(x̃, σ'))/2``) or ``"midpoint"`` (2 calls every step:
            the second at (σ + σ')/2).
        last_step: for ``solver="heun"`` only. ``"corrected"`` (default): the step into
            σ = 0 is corrected like every other step (a flow model's ``v(x, 0)`` is defined;
            this is flow_matching's ``heun2``). ``"euler"``: the step into σ = 0 is a plain
            Euler step (EDM's rule for denoisers, whose ``(x - D)/σ`` is undefined at 0;
            one model call fewer, an order of accuracy lost on that step).
        callback: called after each model evaluation at σ_i with
            ``dict(i=i, x=x, sigma=σ_i, sigma_next=σ_{i+1}, denoised=x - σ_i·v)``
            (a copy of ``x`` in the working dtype, before the step's update).
        progress: show a tqdm bar (nothing, with a warning, when tqdm is not installed).
        grad: build the autograd graph through every step (for gradients through the
            sampler). Default False: the loop runs under ``torch.no_grad()``, as diffusers'
            and k-diffusion's samplers do, so no step's activations are kept.

    Returns:
        ``x`` at σ = 0 in ``noise``'s dtype. Half-precision inputs are updated in float32.

    For float32/float64 input and ``grad=False`` the model receives the sampler's working
    buffer, which is updated in place after the call: clone it if you keep it.
    The loop has no ``.item()``, ``.tolist()`` or branch on tensor values; grid values are
    Python floats, so ``torch.compile(fullgraph=True)`` traces the whole loop.
    """
    check_callable("model", model)
    wdt = check_state("noise", noise)
    s = read_grid("sigmas", sigmas, high=1.0, end=0.0)
    check_choice("solver", solver, SOLVERS)
    check_choice("last_step", last_step, LAST_STEPS)
    check_callable("callback", callback, optional=True)
    check_bool("progress", progress)
    check_bool("grad", grad)
    with torch.set_grad_enabled(grad):
        return _loop(model, noise, s, wdt, solver, last_step == "euler", callback, progress,
                     grad)


def _loop(model, noise, s, wdt, solver, euler_last, callback, progress, grad):
    n = len(s) - 1
    dtype, batch = noise.dtype, noise.shape[0]
    cast = dtype != wdt  # half precision: the model sees x in its dtype, updates stay float32
    # σ batches made once; the loop only takes list items (no tensor indexing, no sync)
    sig = list(sigma_batch(s, batch, wdt, noise.device).unbind(0))  # sig[i] = σ_i, (B,)
    if solver == "midpoint":  # σ_m = (σ_i + σ_{i+1})/2
        mids = [(a + b) / 2 for a, b in zip(s[:-1], s[1:])]
        mid = list(sigma_batch(mids, batch, wdt, noise.device).unbind(0))

    def v_at(x, sigma_b):
        return model_output("model", model(x.to(dtype) if cast else x, sigma_b), x)

    x = noise.to(wdt, copy=True)  # the working state, updated in place (out of place
    # with grad=True: autograd needs every step's x as the model saw it)
    for i in progress_range(n, progress, "sample_flow"):
        h = s[i + 1] - s[i]  # h = σ' - σ < 0
        v = v_at(x, sig[i])  # v = v(x, σ)
        if callback is not None:
            callback(dict(i=i, x=x.clone(), sigma=s[i], sigma_next=s[i + 1],
                          denoised=x - s[i] * v))
        if solver == "euler":
            x = x.add(v, alpha=h) if grad else x.add_(v, alpha=h)  # x ← x + (σ' - σ)·v
        elif solver == "heun":
            x_e = x.add(v, alpha=h)  # Euler predictor x̃ = x + h·v
            if euler_last and s[i + 1] == 0.0:
                x = x_e  # last_step="euler": no correction into σ' = 0
            else:
                v2 = v_at(x_e, sig[i + 1])  # v' = v(x̃, σ')
                vv = v + v2
                x = x.add(vv, alpha=h / 2) if grad else x.add_(vv, alpha=h / 2)  # x + h·(v+v')/2
        else:
            x_m = x.add(v, alpha=h / 2)  # x_m = x + (h/2)·v at σ_m = σ + h/2
            v_m = v_at(x_m, mid[i])  # v_m = v(x_m, σ_m)
            x = x.add(v_m, alpha=h) if grad else x.add_(v_m, alpha=h)  # x ← x + h·v_m
    return x.to(dtype) if cast else x
