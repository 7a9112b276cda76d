"""Named converters between vidnoise's conventions and those of the reference codebases.

vidnoise uses one convention inside (``docs/math.md §1``; ``docs/conventions.md`` has the
full table):

* flow paths: ``x = (1 - sigma) * x0 + sigma * eps``, ``sigma`` in [0, 1] is the *noise
  fraction* (``sigma = 1`` is pure noise); velocity ``v = dx/dsigma = eps - x0``;
* EDM / VE paths: ``x = x0 + sigma * eps``, ``sigma`` in [0, inf) is the noise *std*;
* VP (DDPM) paths: ``x = sqrt(abar) * x0 + sqrt(1 - abar) * eps``.

Every other convention goes through a function here, whose docstring states both sides:
Mochi's network target ``x0 - eps`` (= ``-v``), diffusers FlowMatch timesteps ``t = 1000 sigma``,
Mochi's reversed timesteps ``t = 1000 (1 - sigma)``, Pyramid-Flow's ``gamma`` sign (paper vs
code), the signal level ``s = 1 - sigma`` of Pyramid-Flow's paper, and the noise-level maps
between flow, EDM and VP paths.

Every converter takes a Python float (returns a float) or a tensor (returns a tensor of the
same shape and floating dtype; integer tensors give float32). Values are computed in float64
and cast back, so half-precision inputs are converted as exactly as their dtype allows.
Python floats, and tensors on the CPU, are range-checked (``ValueError`` naming the argument,
the value and the valid range); tensors on an accelerator are not, since that would need a
device sync.
"""

from __future__ import annotations

import math

import torch

from vidnoise._checks import check_float, check_int, check_real_tensor, safe_div, values64

__all__ = [
    "FLOW_SIGMA_HINT",
    "GAMMA_CODE_HINT",
    "GAMMA_PAPER_HINT",
    "velocity_to_mochi",
    "mochi_to_velocity",
    "sigma_to_timestep",
    "timestep_to_sigma",
    "sigma_to_mochi_timestep",
    "mochi_timestep_to_sigma",
    "gamma_paper_to_code",
    "gamma_code_to_paper",
    "signal_level",
    "sigma_from_signal_level",
    "flow_sigma_to_edm",
    "edm_sigma_to_flow",
    "alpha_bar_to_edm_sigma",
    "edm_sigma_to_alpha_bar",
    "alpha_bar_to_flow_sigma",
]


#: The fix appended to a flow-σ range error: σ given on diffusers' 0..1000 timestep scale.
FLOW_SIGMA_HINT = (
    "a flow sigma is the noise fraction in [0, 1] (1 = pure noise); timesteps on a 0..1000 "
    "scale convert with vidnoise.conventions.timestep_to_sigma(t)"
)
#: The fix appended when a code-sign γ (>= 0) is negative: the paper's sign was passed.
GAMMA_CODE_HINT = (
    "a negative gamma is Pyramid-Flow's paper sign; convert it with "
    "vidnoise.conventions.gamma_paper_to_code(gamma)"
)
#: The fix appended when a paper-sign γ (<= 0) is positive: the code's sign was passed.
GAMMA_PAPER_HINT = (
    "a positive gamma is already the code sign; use it as it is, or get the paper sign with "
    "vidnoise.conventions.gamma_code_to_paper(gamma)"
)


# ----------------------------------------------------------------------------- helpers
def _restore(v, out_dtype):
    return float(v) if out_dtype is None else v.to(out_dtype)


def _sqrt(v):
    return math.sqrt(v) if isinstance(v, float) else torch.sqrt(v)




# ----------------------------------------------------------------------------- targets
def velocity_to_mochi(v):
    """Our velocity ``v = eps - x0`` -> Mochi's network target ``x0 - eps``: returns ``-v``.

    Mochi (genmo) trains its network to predict ``x0 - eps`` on ``x = (1-sigma) x0 + sigma eps``
    (the same path as ours), i.e. the negated velocity. Inverse: :func:`mochi_to_velocity`.
    """
    if isinstance(v, torch.Tensor):
        return -check_real_tensor("v", v)
    return -check_float("v", v, allow_inf=True)


def mochi_to_velocity(target):
    """Mochi's network output ``x0 - eps`` -> our velocity ``v = eps - x0``: returns ``-target``.

    Inverse of :func:`velocity_to_mochi`.
    """
    if isinstance(target, torch.Tensor):
        return -check_real_tensor("target", target)
    return -check_float("target", target, allow_inf=True)


# ----------------------------------------------------------------------------- timesteps
def sigma_to_timestep(sigma, num_train_timesteps: int = 1000):
    """Flow noise fraction ``sigma`` in [0, 1] -> diffusers FlowMatch timestep ``t = N * sigma``.

    diffusers' ``FlowMatchEulerDiscreteScheduler`` (SD3, Flux) embeds ``t = 1000 * sigma``
    (t = 1000 is pure noise), with ``N = num_train_timesteps``. Not rounded.
    Inverse: :func:`timestep_to_sigma`.
    """
    n = check_int("num_train_timesteps", num_train_timesteps, minimum=1)
    s, dt = values64("sigma", sigma, low=0.0, high=1.0, hint=FLOW_SIGMA_HINT)
    return _restore(s * n, dt)


def timestep_to_sigma(t, num_train_timesteps: int = 1000):
    """diffusers FlowMatch timestep ``t`` in [0, N] -> flow noise fraction ``sigma = t / N``.

    Inverse of :func:`sigma_to_timestep`.
    """
    n = check_int("num_train_timesteps", num_train_timesteps, minimum=1)
    v, dt = values64("t", t, low=0.0, high=float(n))
    return _restore(v / n, dt)


def sigma_to_mochi_timestep(sigma, num_train_timesteps: int = 1000):
    """Flow noise fraction ``sigma`` -> Mochi's reversed timestep ``t = N * (1 - sigma)``.

    Mochi embeds ``t = 1000 (1 - sigma)``: t = 0 is pure noise and t = 1000 is clean data (the
    reverse of diffusers' FlowMatch; diffusers wraps Mochi with ``invert_sigmas``).
    Inverse: :func:`mochi_timestep_to_sigma`.
    """
    n = check_int("num_train_timesteps", num_train_timesteps, minimum=1)
    s, dt = values64("sigma", sigma, low=0.0, high=1.0, hint=FLOW_SIGMA_HINT)
    return _restore((1.0 - s) * n, dt)


def mochi_timestep_to_sigma(t, num_train_timesteps: int = 1000):
    """Mochi's reversed timestep ``t`` in [0, N] -> flow noise fraction ``sigma = 1 - t / N``.

    Inverse of :func:`sigma_to_mochi_timestep`.
    """
    n = check_int("num_train_timesteps", num_train_timesteps, minimum=1)
    v, dt = values64("t", t, low=0.0, high=float(n))
    return _restore(1.0 - v / n, dt)


# ----------------------------------------------------------------------------- gamma sign
def gamma_paper_to_code(gamma_paper):
    """Pyramid-Flow block-noise correlation, paper sign -> code sign: ``gamma_code = -gamma_paper``.

    The paper writes the within-block correlation of the renoising noise as ``gamma < 0``
    (``-1/3`` for 2x2 blocks); the reference code and :func:`vidnoise.noise.block_noise` use
    ``gamma >= 0`` with covariance ``(1+gamma) I - gamma 11^T`` (correlation ``-gamma``).
    ``gamma_paper`` must be <= 0; a positive value means the code sign was passed by mistake.
    """
    v, dt = values64("gamma_paper", gamma_paper, high=0.0, hint=GAMMA_PAPER_HINT)
    return _restore(-v, dt)


def gamma_code_to_paper(gamma_code):
    """Pyramid-Flow block-noise correlation, code sign -> paper sign: ``gamma_paper = -gamma_code``.

    Inverse of :func:`gamma_paper_to_code`; ``gamma_code`` must be >= 0 (``1/3`` by default).
    """
    v, dt = values64("gamma_code", gamma_code, low=0.0, hint=GAMMA_CODE_HINT)
    return _restore(-v, dt)


# ----------------------------------------------------------------------------- signal level
def signal_level(sigma):
    """Flow noise fraction ``sigma`` -> signal level ``s = 1 - sigma`` (Pyramid-Flow's paper).

    Pyramid-Flow's paper parametrises the path by the signal level ``s`` (``s = 1`` is clean
    data); its code, like vidnoise, uses ``sigma``. Inverse: :func:`sigma_from_signal_level`.
    """
    v, dt = values64("sigma", sigma, low=0.0, high=1.0, hint=FLOW_SIGMA_HINT)
    return _restore(1.0 - v, dt)


def sigma_from_signal_level(s):
    """Signal level ``s`` in [0, 1] -> flow noise fraction ``sigma = 1 - s``.

    Inverse of :func:`signal_level`.
    """
    v, dt = values64("s", s, low=0.0, high=1.0)
    return _restore(1.0 - v, dt)


# ----------------------------------------------------------------------------- noise levels
def flow_sigma_to_edm(sigma):
    """Flow noise fraction -> EDM noise std: ``sigma_edm = sigma / (1 - sigma)``.

    ``x_flow = (1-sigma) x0 + sigma eps``, so ``x_flow / (1-sigma) = x0 + sigma_edm eps``: the
    flow sample divided by ``1 - sigma`` is the EDM sample at ``sigma_edm``. ``sigma = 1`` gives
    ``inf``. A flow shift ``s`` (:func:`vidnoise.schedules.shift`) multiplies ``sigma_edm`` by
    ``s``. Inverse: :func:`edm_sigma_to_flow`.
    """
    v, dt = values64("sigma", sigma, low=0.0, high=1.0, hint=FLOW_SIGMA_HINT)
    if isinstance(v, float):
        return safe_div(v, 1.0 - v)
    return _restore(v / (1.0 - v), dt)


def edm_sigma_to_flow(sigma):
    """EDM noise std in [0, inf] -> flow noise fraction: ``sigma_flow = sigma / (1 + sigma)``.

    ``x_edm = x0 + sigma eps``, so ``x_edm / (1 + sigma)`` is the flow sample at
    ``sigma_flow``. ``inf`` gives 1. Inverse of :func:`flow_sigma_to_edm`.
    """
    v, dt = values64("sigma", sigma, low=0.0, allow_inf=True)
    if isinstance(v, float):
        return 1.0 if math.isinf(v) else v / (1.0 + v)
    out = torch.where(torch.isinf(v), torch.ones_like(v), v / (1.0 + v))
    return _restore(out, dt)


def alpha_bar_to_edm_sigma(alpha_bar):
    """VP ``abar`` in [0, 1] -> EDM noise std: ``sigma = sqrt((1 - abar) / abar)``.

    ``x_vp = sqrt(abar) x0 + sqrt(1-abar) eps``, so ``x_vp / sqrt(abar) = x0 + sigma eps``.
    ``abar = 0`` (zero terminal SNR) gives ``inf``. Inverse: :func:`edm_sigma_to_alpha_bar`.
    """
    v, dt = values64("alpha_bar", alpha_bar, low=0.0, high=1.0)
    if isinstance(v, float):
        return math.sqrt((1.0 - v) / v) if v > 0 else math.inf
    return _restore(torch.sqrt((1.0 - v) / v), dt)


def edm_sigma_to_alpha_bar(sigma):
    """EDM noise std in [0, inf] -> VP ``abar = 1 / (1 + sigma^2)``.

    Inverse of :func:`alpha_bar_to_edm_sigma`; ``inf`` gives 0.
    """
    v, dt = values64("sigma", sigma, low=0.0, allow_inf=True)
    return _restore(1.0 / (1.0 + v * v), dt)


def alpha_bar_to_flow_sigma(alpha_bar):
    """VP ``abar`` -> flow noise fraction ``sigma = sqrt(1-abar) / (sqrt(abar) + sqrt(1-abar))``.

    ``x_vp / (sqrt(abar) + sqrt(1-abar))`` is the flow sample at that ``sigma`` (the EDM map
    :func:`alpha_bar_to_edm_sigma` followed by :func:`edm_sigma_to_flow`, without the
    division by ``abar``, so ``abar = 0`` gives exactly 1).
    """
    v, dt = values64("alpha_bar", alpha_bar, low=0.0, high=1.0)
    a = _sqrt(v)
    b = _sqrt(1.0 - v)
    return _restore(b / (a + b), dt)
