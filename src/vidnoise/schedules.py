"""Inference sigma grids: 1-D float32 tensors, non-increasing, computed in float64.

Flow grids (:func:`linear`, :func:`linear_quadratic`, and :func:`shift` /
:func:`resolution_shift` applied to them) hold noise fractions ``sigma`` in [0, 1] of the
path ``x = (1-sigma) x0 + sigma eps``. EDM grids (:func:`karras`, :func:`vp_sigmas`) hold noise
stds of ``x = x0 + sigma eps``. Grids end at 0 (the clean sample), so ``n`` steps take
``n + 1`` values (:func:`karras` returns its ``n`` values then 0). Derivations and the grids
of each pipeline: ``docs/math.md §7`` (diffusers' default FlowMatch grid: §12).
"""

from __future__ import annotations

import math

import torch

from vidnoise._checks import check_float, check_int, values64
from vidnoise.conventions import FLOW_SIGMA_HINT
from vidnoise.paths import VPPath

__all__ = [
    "linear",
    "karras",
    "linear_quadratic",
    "shift",
    "resolution_shift",
    "resolution_shift_mu",
    "vp_sigmas",
    "diffusers_flow_grid",
]


_LOG_FLOAT64_MAX = math.log(torch.finfo(torch.float64).max)  # 709.78


def _grid(values: torch.Tensor, device) -> torch.Tensor:
    return values.to(dtype=torch.float32, device=device)


def _check_min_max(sigma_min: float, sigma_max: float) -> None:
    if not sigma_min < sigma_max:
        raise ValueError(
            f"sigma_min must be < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}"
        )


def linear(n: int, sigma_max: float = 1.0, sigma_min: float = 0.0, *, device=None):
    """``n + 1`` evenly spaced values from ``sigma_max`` down to ``sigma_min`` (inclusive).

    The default is the plain flow grid ``1, 1 - 1/n, ..., 0`` (before any :func:`shift`).
    ``shift(linear(n), 7)`` is HunyuanVideo's grid and ``resolution_shift(linear(n), seq_len)``
    Flux's official ``get_schedule``. It is not diffusers' default FlowMatch grid (SD3):
    that is :func:`diffusers_flow_grid`, whose low end is shifted twice (n = 28, shift 3: last
    nonzero σ 0.00893, not 0.1; ``docs/math.md §12``); nor Mochi's default
    (:func:`linear_quadratic`); nor Wan's official grid (which starts at
    ``shift(1 - 1/1000)``). Requires ``n >= 1`` and ``0 <= sigma_min < sigma_max``.
    """
    n = check_int("n", n, minimum=1)
    sigma_max = check_float("sigma_max", sigma_max, low=0.0, low_open=True)
    sigma_min = check_float("sigma_min", sigma_min, low=0.0)
    _check_min_max(sigma_min, sigma_max)
    i = torch.arange(n + 1, dtype=torch.float64)
    return _grid(sigma_max + (sigma_min - sigma_max) * (i / n), device)


def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, *, device=None):
    """Karras et al. (EDM) grid: ``n`` values then 0 (``n + 1`` in all).

    ``sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho`` for
    i = 0 .. n-1 (``n = 1`` gives ``[sigma_max, 0]``), computed in float64 as
    ``sigma_max (1 + i/(n-1) (r - 1))^rho`` with ``r = (sigma_min/sigma_max)^(1/rho)``, which
    does not overflow for any ``rho > 0``. DIAMOND's
    3-step grid ``karras(3, 2e-3, 5)`` is ``[5.0, 0.283, 0.002, 0]``. EDM noise stds; requires
    ``0 < sigma_min < sigma_max`` and ``rho > 0``.
    """
    n = check_int("n", n, minimum=1)
    sigma_min = check_float("sigma_min", sigma_min, low=0.0, low_open=True)
    sigma_max = check_float("sigma_max", sigma_max, low=0.0, low_open=True)
    rho = check_float("rho", rho, low=0.0, low_open=True)
    _check_min_max(sigma_min, sigma_max)
    # (hi + ramp (lo - hi))^rho with hi = sigma_max^(1/rho), lo = sigma_min^(1/rho), written
    # as sigma_max (1 + ramp (r - 1))^rho with r = lo / hi in (0, 1): no overflow for any rho
    # (sigma_max^(1/rho) overflows float64 for rho < ~0.003; r may underflow to 0 harmlessly).
    r = (sigma_min / sigma_max) ** (1.0 / rho)
    if n == 1:
        ramp = torch.zeros(1, dtype=torch.float64)
    else:
        ramp = torch.arange(n, dtype=torch.float64) / (n - 1)
    sig = sigma_max * (1.0 + ramp * (r - 1.0)) ** rho
    sig[0] = sigma_max  # exact ends
    if n > 1:
        sig[-1] = sigma_min
    return _grid(torch.cat([sig, sig.new_zeros(1)]), device)


def linear_quadratic(
    n: int, threshold_noise: float = 0.025, linear_steps: int | None = None, *, device=None
):
    """Mochi's linear-quadratic flow grid: ``n + 1`` values from 1 down to 0.

    With ``tau = threshold_noise``, ``L = linear_steps`` (default ``n // 2``) and the signal
    level ``s = 1 - sigma``: ``s_i = i tau / L`` for ``i < L`` (linear up to ``tau``), then the
    quadratic ``s_i = a i^2 + b i + c`` for ``L <= i <= n`` with ``d = L - tau n``, ``Q = n - L``,
    ``a = d / (L Q^2)``, ``b = tau / L - 2 d / Q^2``, ``c = a L^2``, which meets the linear part
    with equal value and slope at ``i = L`` and reaches ``s_n = 1`` (sigma 0). Returns
    ``sigma_i = 1 - s_i``. ``(8, 0.1, linear_steps=6)`` gives
    ``[1, .9833, .9667, .95, .9333, .9167, .9, .6667, 0]``.

    Requires ``n >= 2``, ``0 < threshold_noise < 1``, ``1 <= linear_steps < n`` and
    ``linear_steps (2 - tau) >= tau n`` (else the quadratic overshoots ``s = 1`` before
    ``i = n`` and the grid would not be monotone).
    """
    n = check_int("n", n, minimum=2)
    tau = check_float("threshold_noise", threshold_noise, low=0.0, high=1.0, low_open=True,
                      high_open=True)
    if linear_steps is None:
        linear_steps = n // 2
    big_l = check_int("linear_steps", linear_steps, minimum=1, maximum=n - 1)
    if big_l * (2.0 - tau) < tau * n:
        raise ValueError(
            f"linear_steps={big_l} with threshold_noise={tau} and n={n}: the quadratic part "
            f"would pass signal level 1 before step n; need linear_steps >= "
            f"{tau * n / (2.0 - tau):.4g}"
        )
    q = n - big_l
    d = big_l - tau * n
    a = d / (big_l * q * q)
    b = tau / big_l - 2.0 * d / (q * q)
    c = a * big_l * big_l
    i = torch.arange(n + 1, dtype=torch.float64)
    signal = torch.where(i < big_l, i * (tau / big_l), a * i * i + b * i + c)
    signal[-1] = 1.0  # exact end (the formula gives 1 up to rounding)
    return _grid(1.0 - signal, device)


def _shift64(sigma, s: float):
    """``s sigma / (s sigma + 1 - sigma)`` for a float or a float64 tensor (no checks).

    Equal to ``s sigma / (1 + (s - 1) sigma)``, but both terms of the denominator are >= 0
    on [0, 1], so no cancellation: ``shift(1, 1e-17)`` is 1, not a division by zero.
    """
    return s * sigma / (s * sigma + (1.0 - sigma))


def shift(sigmas, shift: float):
    """Timestep shift of flow noise fractions: ``s sigma / (1 + (s - 1) sigma)``.

    SD3's shift (Pyramid-Flow's and diffusers' FlowMatch ``shift``); ``s > 1`` spends more
    steps at high noise. It maps [0, 1] onto itself, keeps 0 and 1, and is the EDM scaling
    ``sigma_edm -> s sigma_edm`` in flow coordinates (``sigma_edm = sigma / (1 - sigma)``).
    ``sigmas``: a float or a tensor (any shape) of values in [0, 1]; returns the same kind,
    dtype and shape (computed in float64 as ``s sigma / (s sigma + 1 - sigma)``, exact at the
    ends for every finite ``s > 0``).
    """
    s = check_float("shift", shift, low=0.0, low_open=True)
    v, dt = values64("sigmas", sigmas, low=0.0, high=1.0, hint=FLOW_SIGMA_HINT)
    out = _shift64(v, s)
    return float(out) if dt is None else out.to(dt)


def resolution_shift_mu(
    seq_len: int,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """Flux's ``mu``: linear in the sequence length, ``base_shift`` at ``base_seq_len`` and
    ``max_shift`` at ``max_seq_len`` (extrapolated outside); the shift factor is ``exp(mu)``."""
    seq_len = check_int("seq_len", seq_len, minimum=1)
    base_seq_len = check_int("base_seq_len", base_seq_len, minimum=1)
    max_seq_len = check_int("max_seq_len", max_seq_len, minimum=1)
    if not base_seq_len < max_seq_len:
        raise ValueError(
            f"base_seq_len must be < max_seq_len, got base_seq_len={base_seq_len}, "
            f"max_seq_len={max_seq_len}"
        )
    base_shift = check_float("base_shift", base_shift)
    max_shift = check_float("max_shift", max_shift)
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return base_shift + slope * (seq_len - base_seq_len)


def resolution_shift(
    sigmas,
    seq_len: int,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
):
    """Resolution-dependent shift of Flux-style flow models: :func:`shift` by ``exp(mu)``.

    ``mu = base_shift + (max_shift - base_shift) (seq_len - base_seq_len) / (max_seq_len -
    base_seq_len)`` (:func:`resolution_shift_mu`; ``seq_len`` is the number of latent tokens)
    and ``sigma' = e^mu / (e^mu + 1/sigma - 1) = e^mu sigma / (1 + (e^mu - 1) sigma)``: the
    exponential time shift with exponent 1. Longer sequences get a larger shift.
    """
    mu = resolution_shift_mu(seq_len, base_seq_len, max_seq_len, base_shift, max_shift)
    # |mu| < ln(float64 max): exp(mu) is a normal float64 (for mu < -709.78 it would be
    # subnormal, with fewer significant bits, and below -745.1 zero)
    if not abs(mu) < _LOG_FLOAT64_MAX:
        raise ValueError(
            f"seq_len={seq_len} gives mu={mu:.6g} and a shift exp(mu) outside the float64 range "
            f"(|mu| must stay below {_LOG_FLOAT64_MAX:.1f}); seq_len is the number of latent "
            f"tokens, compare base_seq_len={base_seq_len}, max_seq_len={max_seq_len}"
        )
    return shift(sigmas, math.exp(mu))


def vp_sigmas(n: int, path: VPPath | None = None, *, alpha_bar_min: float = 2.0**-24,
              device=None):
    """A VP path's noise levels as EDM stds, at ``n`` trailing-spaced timesteps, then 0.

    ``t_k`` from :meth:`VPPath.trailing_timesteps` (``N-1`` first) and
    ``sigma_k = sqrt((1 - abar_k) / abar_k)`` with ``abar`` clamped below at ``alpha_bar_min``
    (so a zero-terminal-SNR path starts at a finite ``sqrt(2^24 - 1) ~ 4096`` instead of
    inf; diffusers' Euler scheduler uses the same floor). A VP-trained model then runs in the
    EDM sampler with ``x_edm = x_vp / sqrt(abar)``. ``path`` defaults to ``VPPath()``
    (scaled-linear betas 0.00085 -> 0.012, 1000 steps: sigma from 14.61 to 0.0292).
    """
    if path is None:
        path = VPPath()
    if not isinstance(path, VPPath):
        raise TypeError(f"path must be a VPPath, got {type(path).__name__}")
    alpha_bar_min = check_float("alpha_bar_min", alpha_bar_min, low=0.0, high=1.0,
                                low_open=True, high_open=True)
    t = path.trailing_timesteps(n)
    ab = path.alpha_bar[t].clamp(min=alpha_bar_min)
    sig = torch.sqrt((1.0 - ab) / ab)
    return _grid(torch.cat([sig, sig.new_zeros(1)]), device)


def diffusers_flow_grid(n: int, shift: float = 1.0, num_train_timesteps: int = 1000, *,
                        device=None):
    """diffusers' default FlowMatch grid for ``n`` steps: ``n + 1`` flow noise fractions.

    ``FlowMatchEulerDiscreteScheduler(shift=s).set_timesteps(n)`` with no ``sigmas=`` builds
    ``shift(linspace(1, shift(1/N), n), s)`` then 0, with ``N = num_train_timesteps``: its
    constructor stores the shifted training grid ``shift(k/N)``, k = N .. 1, and
    ``set_timesteps`` spaces ``n`` values between that grid's ends and shifts them again,
    so the low end is shifted twice (diffusers, ``src/diffusers/schedulers/
    scheduling_flow_match_euler_discrete.py``, ``__init__`` and ``set_timesteps``). At
    ``n = 28``, ``s = 3`` the last nonzero value is 0.00893 where
    ``shift(linear(28), 3)[-2]`` is 0.1. With ``s = 1`` it is ``linspace(1, 1/N, n)``
    then 0 (not :func:`linear`, whose last nonzero value is ``1/n``). Computed in float64
    (diffusers computes the ends ``shift(1)``, ``shift(1/N)`` in float32 first: the two agree
    to float32 rounding).
    Requires ``n >= 1``, ``shift > 0``, ``num_train_timesteps >= 2``.
    """
    n = check_int("n", n, minimum=1)
    s = check_float("shift", shift, low=0.0, low_open=True)
    big_n = check_int("num_train_timesteps", num_train_timesteps, minimum=2)
    low = _shift64(1.0 / big_n, s)
    if n == 1:
        ramp = torch.ones(1, dtype=torch.float64)
    else:
        ramp = 1.0 + (low - 1.0) * (torch.arange(n, dtype=torch.float64) / (n - 1))
    sig = _shift64(ramp, s)
    sig[0] = 1.0  # exact start: shift keeps 1
    return _grid(torch.cat([sig, sig.new_zeros(1)]), device)
