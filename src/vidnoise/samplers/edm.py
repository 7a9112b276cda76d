"""EDM sampler (Karras et al. 2022, Algorithm 2) with churn and an initial-noise policy.

Convention: ``x = x0 + σ·ε`` (VE / EDM), σ is the noise standard deviation, the model is a
denoiser ``D(x, σ) ≈ E[x0 | x]``. The probability-flow ODE is ``dx/dσ = (x - D(x, σ))/σ``.
"""

from __future__ import annotations

import math

import torch

from vidnoise._checks import check_bool, check_callable, check_choice, check_float, check_int
from vidnoise.noise import as_generators, randn
from vidnoise.samplers._common import (
    check_finite,
    check_state,
    model_output,
    progress_range,
    read_grid,
    sigma_batch,
)

__all__ = ["sample_edm"]

INITS = ("sigma_max", "unit")
VARIANTS = ("edm", "diamond")


def sample_edm(
    denoiser,
    noise,
    sigmas,
    *,
    order=1,
    s_churn=0.0,
    s_tmin=0.0,
    s_tmax=math.inf,
    s_noise=1.0,
    init="sigma_max",
    generator=None,
    variant="edm",
    callback=None,
    progress=False,
    grad=False,
):
    """EDM Algorithm 2: Euler (``order=1``) or Heun (``order=2``) with optional churn
    (``docs/math.md §8``).

    Each step i (σ = σ_i, σ' = σ_{i+1}, N = ``len(sigmas) - 1`` steps):

    * γ = min(s_churn/N, √2 - 1) if s_tmin <= σ <= s_tmax else 0; σ̂ = σ·(1 + γ)
    * x̂ = x + s_noise·sqrt(σ̂² - σ²)·ε  (ε ~ N(0, I) from ``generator``)
    * d = (x̂ - D(x̂, σ̂))/σ̂;  x' = x̂ + (σ' - σ̂)·d
    * ``order=2`` and σ' > 0: d' = (x' - D(x', σ'))/σ';  x' = x̂ + (σ' - σ̂)·(d + d')/2

    Args:
        denoiser: ``denoiser(x, sigma) -> x0`` with ``x`` of ``noise``'s shape and dtype and
            ``sigma`` a (B,) tensor (float32 for half-precision input); its output must be on
            ``x``'s device (another dtype is cast to the working dtype).
        noise: unit-variance Gaussian noise, any shape with a batch dim 0.
        sigmas: strictly decreasing grid >= 0 ending at 0 (e.g. ``schedules.karras``).
        init: the start ``x`` at σ_0.  ``"sigma_max"``: ``noise·σ_0`` (EDM, k-diffusion);
            ``"unit"``: ``noise`` as is (DIAMOND: after a step to σ' the noise left has std
            σ'/σ_0, not σ'; also the way to pass a start already scaled by σ_0); a callable
            ``init(noise, sigma_0) -> x`` of ``noise``'s shape (e.g. previous frame plus
            noise). With ``"sigma_max"`` a CPU ``noise`` whose root mean square is far from
            1 raises (the k-diffusion habit ``noise * sigmas[0]`` would be scaled twice);
            the bound is 6 standard errors of the mean square of n unit Gaussians,
            ``|mean(noise²) - 1| > 6·sqrt(2/n)``. Off the CPU (and under ``torch.compile``) the
            check is skipped: it reads a value on the host.
        s_churn, s_tmin, s_tmax, s_noise: EDM's stochasticity settings (s_churn = 0: the
            deterministic ODE sampler, no random numbers are drawn).
        generator: one ``torch.Generator`` or one per item of dim 0, for the churn noise.
        variant: ``"edm"`` (default): EDM's reference loop; churn noise is drawn on every
            step once s_churn > 0 (scaled by 0 outside [s_tmin, s_tmax]), so the random
            stream matches NVlabs EDM. ``"diamond"``: DIAMOND's loop: the denoiser is called
            at σ (not σ̂; ``d`` still divides by σ̂) and churn noise is drawn only on steps
            with γ > 0.
        callback: called after the first denoiser call of each step with
            ``dict(i, x=x̂, sigma=σ, sigma_hat=σ̂, sigma_next=σ', denoised=D(x̂, ·))``.
        progress: show a tqdm bar (nothing, with a warning, without tqdm).
        grad: build the autograd graph through every step. Default False: the loop runs
            under ``torch.no_grad()`` (as diffusers and k-diffusion).

    Returns:
        ``x`` at σ = 0 in ``noise``'s dtype; half-precision inputs are updated in float32.
    """
    check_callable("denoiser", denoiser)
    wdt = check_state("noise", noise)
    s = read_grid("sigmas", sigmas, end=0.0)
    check_choice("order", check_int("order", order), (1, 2))
    s_churn = check_float("s_churn", s_churn, low=0.0)
    s_tmin = check_float("s_tmin", s_tmin, low=0.0)
    s_tmax = check_float("s_tmax", s_tmax, low=s_tmin, allow_inf=True,
                         hint=f"s_tmax must be >= s_tmin = {s_tmin:g}")
    s_noise = check_float("s_noise", s_noise, low=0.0)
    if not (callable(init) or (isinstance(init, str) and init in INITS)):
        raise ValueError(f"init must be one of {list(INITS)} or a callable, got {init!r}")
    check_choice("variant", variant, VARIANTS)
    check_callable("callback", callback, optional=True)
    check_bool("progress", progress)
    check_bool("grad", grad)
    as_generators(generator, noise.shape[0])
    if init == "sigma_max":
        _check_unit_noise(noise, s[0])
    with torch.set_grad_enabled(grad):
        return _loop(denoiser, noise, s, wdt, order, s_churn, s_tmin, s_tmax, s_noise, init,
                     generator, variant == "diamond", callback, progress)


def _check_unit_noise(noise, sigma_0: float) -> None:
    """Refuse (CPU only, once, before the loop) noise that is not unit variance with
    ``init="sigma_max"``. For n unit Gaussians n·m ~ χ²_n (m = mean(noise²)), and the
    Laurent-Massart bounds give P(m >= 1 + 2·sqrt(t/n) + 2t/n) <= e^-t and
    P(m <= 1 - 2·sqrt(t/n)) <= e^-t; with t = 21 unit noise is refused with probability
    below 2e-9 at any n."""
    n = noise.numel()
    if noise.device.type != "cpu" or n == 0 or torch.compiler.is_compiling():
        return
    ms = float(noise.detach().to(torch.float64).square().mean())
    t = _UNIT_NOISE_T
    if 1.0 - 2.0 * math.sqrt(t / n) < ms < 1.0 + 2.0 * math.sqrt(t / n) + 2.0 * t / n:
        return
    raise ValueError(
        f"noise must be unit-variance Gaussian noise with init='sigma_max' (it is scaled by "
        f"sigmas[0] = {sigma_0:g} here), got root mean square {math.sqrt(ms):.4g} over "
        f"{n} values. If you scaled it yourself (noise * sigmas[0], the k-diffusion habit), "
        f"pass the unit noise instead, or pass init='unit' to start from the tensor as is"
    )


#: Tail parameter of the unit-noise check: a false alarm has probability <= 2·e^-21.
_UNIT_NOISE_T = 21.0


def _loop(denoiser, noise, s, wdt, order, s_churn, s_tmin, s_tmax, s_noise, init, generator,
          diamond, callback, progress):
    dtype, batch, dev = noise.dtype, noise.shape[0], noise.device

    # Host-side plan, Python floats only: γ_i, σ̂_i and the σ the denoiser is told.
    n = len(s) - 1
    gamma_max = min(s_churn / n, math.sqrt(2.0) - 1.0)  # γ = min(S_churn/N, √2 - 1)
    gam = [gamma_max if s_tmin <= si <= s_tmax else 0.0 for si in s[:-1]]
    s_hat = [si * (1.0 + g) for si, g in zip(s[:-1], gam)]  # σ̂ = σ(1 + γ)
    churn_std = [s_noise * math.sqrt(max(sh * sh - si * si, 0.0)) for sh, si in zip(s_hat, s)]
    draw = [g > 0.0 for g in gam] if diamond else [s_churn > 0.0] * n
    s_eval = s[:-1] if diamond else s_hat
    sig_eval = sigma_batch(s_eval, batch, wdt, dev)
    sig_next = sigma_batch(s[1:], batch, wdt, dev)

    def d_at(x, sigma_b):
        return model_output("denoiser", denoiser(x.to(dtype), sigma_b), x)

    x = noise.to(wdt)
    if init == "sigma_max":
        x = x * s[0]  # x_0 = σ_0·ε (EDM)
    elif init == "unit":
        pass  # x_0 = ε (DIAMOND)
    else:
        x = init(noise, s[0])
        x = model_output("init", x, noise).to(wdt)
        check_finite("init(noise, sigmas[0])", x)
    for i in progress_range(n, progress, "sample_edm"):
        h = s[i + 1] - s_hat[i]  # σ' - σ̂
        x_hat = x
        if draw[i]:
            eps = randn(x.shape, generator=generator, device=dev, dtype=wdt)
            x_hat = x + churn_std[i] * eps  # x̂ = x + S_noise·sqrt(σ̂² - σ²)·ε
        den = d_at(x_hat, sig_eval[i])  # D(x̂, σ̂)   (DIAMOND: D(x̂, σ))
        if callback is not None:
            callback(
                dict(i=i, x=x_hat, sigma=s[i], sigma_hat=s_hat[i], sigma_next=s[i + 1],
                     denoised=den)
            )
        d = (x_hat - den) / s_hat[i]  # d = (x̂ - D)/σ̂
        x = x_hat + h * d  # x' = x̂ + (σ' - σ̂)·d
        if order == 2 and s[i + 1] > 0.0:
            den2 = d_at(x, sig_next[i])  # D(x', σ')
            d2 = (x - den2) / s[i + 1]  # d' = (x' - D(x', σ'))/σ'
            x = x_hat + h * 0.5 * (d + d2)  # x' = x̂ + (σ' - σ̂)·(d + d')/2
    return x.to(dtype)
