"""Training σ samplers: one noise level per sample, as a (B,) float32 tensor.

(Named for what they return: noise levels σ, not the integer timesteps of a VP path.)

Flow samplers (:func:`uniform`, :func:`logit_normal`, :func:`mode`) return noise fractions
``sigma`` in [0, 1) of ``x = (1-sigma) x0 + sigma eps``; :func:`lognormal` returns EDM noise
stds of ``x = x0 + sigma eps``. Each is an inverse-CDF transform of uniforms ``u`` drawn in
float64 with :func:`vidnoise.noise.rand`:

* ``generator``: one ``torch.Generator`` or a sequence with one per sample; with a sequence,
  sample ``i`` is drawn from generator ``i`` only.
* ``stratified=True``: sample ``i`` takes ``u_i = (i + U_i) / B``, one uniform per stratum
  ``[i/B, (i+1)/B)``, so every batch covers the distribution evenly (lower-variance training
  batches; the batch mean of a stratified uniform batch has variance ``1/(12 B^3)`` instead
  of ``1/(12 B)``). Strata are in order (sample ``i`` is in quantile stratum ``i``); shuffle
  the batch if its order matters.
* ``shift``: for flow samplers, SD3's ``s sigma / (1 + (s-1) sigma)``
  (:func:`vidnoise.schedules.shift`); for :func:`lognormal`, the same shift in EDM
  coordinates, ``sigma -> s sigma`` (before clipping).
"""

from __future__ import annotations

import math

import torch

from vidnoise._checks import check_bool, check_float, check_int
from vidnoise.noise import GeneratorLike, rand
from vidnoise.schedules import _shift64

__all__ = ["uniform", "logit_normal", "mode", "lognormal", "MODE_SCALE_MAX"]

#: Largest ``scale`` for which SD3's mode sampling stays monotone: ``2 / (pi - 2)``.
MODE_SCALE_MAX = 2.0 / (math.pi - 2.0)
_BELOW_ONE = 1.0 - 2.0**-24  # largest float32 below 1


def _uniforms(
    batch_size, generator, device, stratified, shift
) -> tuple[torch.Tensor, float | None]:
    """Every sampler's start: the checked ``shift`` (None, or a float > 0) and the (B,)
    float64 uniforms ``u`` in [0, 1), stratified if asked."""
    if shift is not None:
        shift = check_float("shift", shift, low=0.0, low_open=True)
    b = check_int("batch_size", batch_size, minimum=0)
    check_bool("stratified", stratified)
    u = rand((b,), generator=generator, device=device, dtype=torch.float64)
    if stratified and b > 0:
        u = (torch.arange(b, dtype=u.dtype, device=u.device) + u) / b
    return u, shift


def _flow_out(sigma: torch.Tensor, shift: float | None) -> torch.Tensor:
    if shift is not None:
        sigma = _shift64(sigma, shift)
    # rounding to float32 may reach 1.0; keep the documented [0, 1)
    return sigma.to(torch.float32).clamp_(0.0, _BELOW_ONE)


def uniform(
    batch_size: int,
    *,
    generator: GeneratorLike = None,
    device=None,
    stratified: bool = False,
    shift: float | None = None,
) -> torch.Tensor:
    """Flow ``sigma ~ U[0, 1)`` per sample (Mochi's and Pyramid-Flow's training sampler).

    Returns a (B,) float32 tensor in [0, 1) (float64 draws rounded to float32).
    """
    u, shift = _uniforms(batch_size, generator, device, stratified, shift)
    return _flow_out(u, shift)


def logit_normal(
    batch_size: int,
    mean: float = 0.0,
    std: float = 1.0,
    *,
    generator: GeneratorLike = None,
    device=None,
    stratified: bool = False,
    shift: float | None = None,
) -> torch.Tensor:
    """Flow ``sigma = sigmoid(mean + std z)``, ``z ~ N(0, 1)`` (SD3's logit-normal sampling).

    ``z = Phi^-1(u)`` from the (possibly stratified) uniforms. CDF:
    ``P(sigma <= x) = Phi((logit(x) - mean) / std)``. Returns (B,) float32 in [0, 1).
    """
    mean = check_float("mean", mean)
    std = check_float("std", std, low=0.0, low_open=True)
    u, shift = _uniforms(batch_size, generator, device, stratified, shift)
    return _flow_out(torch.sigmoid(mean + std * torch.special.ndtri(u)), shift)


def mode(
    batch_size: int,
    scale: float = 1.29,
    *,
    generator: GeneratorLike = None,
    device=None,
    stratified: bool = False,
    shift: float | None = None,
) -> torch.Tensor:
    """Flow sigma from SD3's mode sampling with heavy tails, ``f(u) = 1 - u - s (cos^2(pi u/2)
    - 1 + u)``, ``s = scale``.

    Applied to ``1 - u`` (same law, but increasing in ``u`` so strata map to quantiles and
    ``u`` in [0, 1) gives [0, 1)): ``sigma = u - s (sin^2(pi u / 2) - u)``. ``s = 0`` is
    uniform; ``s > 0`` concentrates sigma around 1/2 (the median is 1/2 for every ``s``).
    ``scale`` must lie in ``[-1, 2/(pi-2)]`` (:data:`MODE_SCALE_MAX` ~ 1.752), where ``f`` is
    monotone. Returns (B,) float32 in [0, 1).
    """
    s = check_float("scale", scale, low=-1.0, high=MODE_SCALE_MAX)
    u, shift = _uniforms(batch_size, generator, device, stratified, shift)
    sigma = u - s * (torch.sin(0.5 * math.pi * u) ** 2 - u)
    return _flow_out(sigma, shift)


def lognormal(
    batch_size: int,
    loc: float = -1.2,
    scale: float = 1.2,
    clip: tuple[float, float] | None = (2e-3, 20.0),
    *,
    generator: GeneratorLike = None,
    device=None,
    stratified: bool = False,
    shift: float | None = None,
) -> torch.Tensor:
    """EDM noise std ``sigma = exp(loc + scale z)``, ``z ~ N(0, 1)``, clipped to ``clip``.

    EDM's training distribution (``loc`` -1.2, ``scale`` 1.2; DIAMOND uses -0.4 / 1.2 on
    Atari) clipped to DIAMOND's ``[2e-3, 20]``; ``clip=None`` leaves it unclipped. The median
    is ``exp(loc)`` (``lognormal(B, -3, 0.5, None)``: CogVideoX's image-noise level, median
    0.0498). ``shift`` multiplies sigma by ``shift`` before clipping (the flow shift in EDM
    coordinates). Returns (B,) float32.
    """
    loc = check_float("loc", loc)
    scale = check_float("scale", scale, low=0.0, low_open=True)
    if clip is not None:
        if not isinstance(clip, (tuple, list)) or len(clip) != 2:
            raise TypeError(f"clip must be None or a pair (low, high), got {clip!r}")
        lo = check_float("clip[0]", clip[0], low=0.0)
        hi = check_float("clip[1]", clip[1], low=0.0, allow_inf=True)
        if not lo < hi:
            raise ValueError(f"clip must satisfy 0 <= low < high, got {tuple(clip)}")
    u, shift = _uniforms(batch_size, generator, device, stratified, shift)
    sigma = torch.exp(loc + scale * torch.special.ndtri(u))
    if shift is not None:
        sigma = sigma * shift
    if clip is not None:
        sigma = sigma.clamp(lo, hi)
    return sigma.to(torch.float32)
