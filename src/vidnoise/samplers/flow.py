"""Flow-matching ODE sampler: Euler, Heun and midpoint on a decreasing sigma grid.

Convention (``docs/conventions.md``): ``x_σ = (1 - σ)·x0 + σ·ε``, σ ∈ [0, 1] is the noise
fraction, the model predicts the velocity ``v = dx/dσ = ε - x0``. Sampling integrates
``dx/dσ = v(x, σ)`` from σ_0 (noise) down to 0 (data).
"""

from __future__ import annotations

from torch import Tensor

from vidnoise._checks import check_choice
from vidnoise.samplers._common import (
    bad_output,
    check_bool,
    check_callable,
    progress_range,
    read_grid,
    sigma_batch,
    work_dtype,
)

__all__ = ["sample_flow"]

SOLVERS = ("euler", "heun", "midpoint")


def sample_flow(model, noise, sigmas, *, solver="euler", callback=None, progress=False):
    """Integrate the flow ODE ``dx/dσ = v(x, σ)`` from ``sigmas[0]`` to 0.

    Args:
        model: ``model(x, sigma) -> v`` with ``x`` of ``noise``'s shape and dtype and
            ``sigma`` a (B,) tensor (float32 for half-precision input); returns the velocity
            ``v = ε - x0`` with ``x``'s shape.
        noise: the start, ``x`` at ``sigmas[0]`` (at σ_0 = 1 that is unit Gaussian noise;
            for σ_0 < 1 pass ``(1-σ_0)·x0 + σ_0·ε``). Any shape with a batch dim 0.
        sigmas: strictly decreasing grid in [0, 1] ending at 0 (N+1 values for N steps), a
            1-D tensor or a list; read once as Python floats before the loop.
        solver: ``"euler"`` (1 model call a step), ``"heun"`` (2 calls, 1 on the last step
            to σ = 0, where the trapezoid correction would need v at σ = 0) or
            ``"midpoint"`` (2 calls every step: the second at (σ + σ')/2).
        callback: called after each model evaluation at σ_i with
            ``dict(i=i, x=x, sigma=σ_i, sigma_next=σ_{i+1}, denoised=x - σ_i·v)``
            (a copy of ``x`` in the working dtype, before the step's update).
        progress: show a tqdm bar (nothing, with a warning, when tqdm is not installed).

    Returns:
        ``x`` at σ = 0 in ``noise``'s dtype. Half-precision inputs are updated in float32.

    For float32/float64 input the model receives the sampler's working buffer, which is
    updated in place after the call: clone it if you keep it.
    The loop has no ``.item()``, ``.tolist()`` or branch on tensor values; grid values are
    Python floats, so ``torch.compile(fullgraph=True)`` traces the whole loop.
    """
    check_callable("model", model)
    wdt = work_dtype("noise", noise)
    s = read_grid("sigmas", sigmas, high=1.0, end=0.0)
    check_choice("solver", solver, SOLVERS)
    check_callable("callback", callback, optional=True)
    check_bool("progress", progress)
    n = len(s) - 1
    dtype, batch = noise.dtype, noise.shape[0]
    cast = dtype != wdt  # half precision: the model sees x in its dtype, updates stay float32
    # σ batches made once; the loop only takes list items (no tensor indexing, no sync)
    sig = list(sigma_batch(s, batch, wdt, noise.device).unbind(0))  # sig[i] = σ_i, (B,)
    if solver == "midpoint":  # σ_m = (σ_i + σ_{i+1})/2
        mids = [(a + b) / 2 for a, b in zip(s[:-1], s[1:])]
        mid = list(sigma_batch(mids, batch, wdt, noise.device).unbind(0))

    def v_at(x, sigma_b):
        v = model(x.to(dtype) if cast else x, sigma_b)
        if not isinstance(v, Tensor) or v.shape != x.shape:
            bad_output("model", v, x)
        return v

    x = noise.to(wdt, copy=True)  # the working state, updated in place
    for i in progress_range(n, progress, "sample_flow"):
        h = s[i + 1] - s[i]  # h = σ' - σ < 0
        v = v_at(x, sig[i])  # v = v(x, σ)
        if callback is not None:
            callback(dict(i=i, x=x.clone(), sigma=s[i], sigma_next=s[i + 1],
                          denoised=x - s[i] * v))
        if solver == "euler":
            x.add_(v, alpha=h)  # x ← x + (σ' - σ)·v
        elif solver == "heun":
            x_e = x.add(v, alpha=h)  # Euler predictor x̃ = x + h·v
            if s[i + 1] == 0.0:
                x = x_e  # last step to σ' = 0: no correction
            else:
                v2 = v_at(x_e, sig[i + 1])  # v' = v(x̃, σ')
                x.add_(v + v2, alpha=h / 2)  # x ← x + h·(v + v')/2
        else:
            x_m = x.add(v, alpha=h / 2)  # x_m = x + (h/2)·v at σ_m = σ + h/2
            v_m = v_at(x_m, mid[i])  # v_m = v(x_m, σ_m)
            x.add_(v_m, alpha=h)  # x ← x + h·v_m
    return x.to(dtype) if cast else x
