"""Forward noising paths on one affine core: rectified flow, EDM (variance exploding), VP (DDPM).

Every path is affine in the data and the noise (``docs/math.md §1``)::

    x = a·x0 + b·ε,        v = a'·x0 + b'·ε        (a' = da/dτ, b' = db/dτ)

with the derivative taken along the path's own level τ:

* :class:`FlowPath` (Mochi, SD3, Pyramid-Flow), τ = σ ∈ [0, 1] the noise fraction:
  ``(a, b, a', b') = (1-σ, σ, -1, 1)``, so ``v = ε - x0``;
* :class:`EDMPath` (EDM, DIAMOND), τ = σ ∈ [0, ∞) the noise std: ``(1, σ, 0, 1)``, so the
  derivative is ``dx/dσ = ε``;
* :class:`VPPath` (DDPM, CogVideoX) at integer timestep t, in angle form: τ = φ ∈ [0, π/2]
  with ``cos φ = √ᾱ_t``, ``sin φ = √(1-ᾱ_t)``: ``(cos φ, sin φ, -sin φ, cos φ)``, so
  ``v = √ᾱ·ε - √(1-ᾱ)·x0`` is the v-prediction target.

The conversions between x0, ε and v given x are written once, in :class:`_AffinePath`, by
solving the 2x2 system ``[a b; a' b'] [x0; ε] = [x; v]`` (determinant ``a b' - b a'``, which
is 1 for all three paths); the classes only give their coefficients. The flow and EDM
training ``sample`` is written once too, in :class:`_SigmaPath`, with the target as a hook.

Noise levels are a Python float, a 0-d tensor, a (B,) tensor (one per sample) or, for 5-D
video, a (B, T) tensor (one per frame) laid out by ``layout`` ("BCTHW", the default, or
"BTCHW"), broadcast over the other dims (:func:`vidnoise._checks.as_sigma`). Coefficients are
computed in float64 and applied in the working dtype of the data
(:func:`vidnoise._checks.work_dtype`), then returned in the data's dtype. Python floats and CPU
tensors are range-checked; tensors on an accelerator are not (that would need a device sync).
Levels must be finite (NaN or inf is a ``ValueError``); the data tensors are not scanned, so a
NaN or inf in ``x0``, ``noise``, ``x`` or ``v`` propagates to exactly the elements it touches.
Data on the meta device gives a meta result of the right shape; a meta level is an error.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from vidnoise._checks import (
    LAYOUTS,
    as_sigma,
    check_bool,
    check_callable,
    check_choice,
    check_float,
    check_int,
    check_real_tensor,
    check_tensor,
    float64_for,
    level_out,
    values64,
    work_dtype,
)
from vidnoise._checks import safe_div as _div
from vidnoise.conventions import FLOW_SIGMA_HINT
from vidnoise.noise import GeneratorLike, randn

__all__ = ["PathSample", "PathCoefficients", "FlowPath", "EDMPath", "VPPath"]

Sigma = float | torch.Tensor

@dataclass(frozen=True, eq=False)
class PathSample:
    """A training input: the noisy ``x``, the regression ``target``, ``sigma``, ``noise``.

    ``sigma`` is a (B,) tensor, or (B, T) for per-frame levels (float32, float64 for float64
    data). For :class:`VPPath` it is the EDM-equivalent std ``sqrt((1-abar)/abar)`` and
    ``timestep`` holds the integer timesteps ((B,) or (B, T), int64); the other paths leave
    ``timestep`` None.
    """

    x: torch.Tensor
    target: torch.Tensor
    sigma: torch.Tensor
    noise: torch.Tensor
    timestep: torch.Tensor | None = None


@dataclass(frozen=True, eq=False)
class PathCoefficients:
    """The affine core at one level: ``x = a·x0 + b·ε``, ``v = da·x0 + db·ε``.

    Floats for a float level, else float64 tensors of the level's shape. ``det = a·db - b·da``
    is exactly 1 for every path of this module.
    """

    a: float | torch.Tensor
    b: float | torch.Tensor
    da: float | torch.Tensor
    db: float | torch.Tensor
    det: float | torch.Tensor = 1.0


# ----------------------------------------------------------------------------- helpers
def _tensors(**named) -> tuple[torch.Size, torch.dtype, torch.device]:
    """Check that the named tensors are floating, on one device and broadcast; return the
    broadcast shape, the result dtype and the device."""
    items = list(named.items())
    for name, t in items:
        check_tensor(name, t)
    devices = {t.device for _, t in items}
    if len(devices) > 1:
        where = ", ".join(f"{n} on {t.device}" for n, t in items)
        raise ValueError(f"tensors must be on one device, got {where}")
    shapes = [t.shape for _, t in items]
    try:  # equal shapes (the usual case) skip torch.broadcast_shapes, which costs ~0.1 ms
        shape = shapes[0] if all(sh == shapes[0] for sh in shapes) else torch.broadcast_shapes(
            *shapes
        )
    except RuntimeError:
        shapes = ", ".join(f"{n} {tuple(t.shape)}" for n, t in items)
        raise ValueError(f"shapes do not broadcast: {shapes}") from None
    dtype = items[0][1].dtype
    for _, t in items[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return shape, dtype, items[0][1].device


def _combine(shape, dtype, device, *terms) -> torch.Tensor:
    """``sum(coef * t)`` with float64 coefficients applied in the working dtype of ``dtype``."""
    wd = work_dtype(dtype)
    out = None
    for coef, t in terms:
        c = coef if isinstance(coef, float) else coef.to(device=device, dtype=wd)
        term = t.to(wd) * c
        out = term if out is None else out + term
    if out.shape != shape:  # only when every operand is smaller than the broadcast shape
        out = torch.broadcast_to(out, shape).contiguous()
    return out.to(dtype)




def _sqrt(v):
    return math.sqrt(v) if isinstance(v, float) else torch.sqrt(v)


def _noise_for(x0: torch.Tensor, noise, generator) -> torch.Tensor:
    if noise is not None:
        if generator is not None:
            raise ValueError("give noise or generator, not both")
        _tensors(x0=x0, noise=noise)
        if noise.shape != x0.shape:
            raise ValueError(
                f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}"
            )
        return noise
    return randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)


def _check_batched(name: str, x) -> None:
    check_tensor(name, x)
    if x.dim() == 0:
        raise ValueError(f"{name} must have a batch dim, got a 0-d tensor")


# ----------------------------------------------------------------------------- the core
class _AffinePath:
    """x0 / ε / v conversions of an affine path, written once (``docs/math.md §1``).

    A subclass gives ``_level(level, shape, device, layout)`` (the checked level, a float or
    a float64 tensor broadcastable against ``shape``) and ``_coef(level)`` (the float64
    ``(a, b, da, db)`` at that level). Every method takes the level positionally (``sigma``
    for flow and EDM, the integer timestep ``t`` for VP) and ``layout`` for per-frame levels.
    """

    def _coef(self, level) -> tuple:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _level(self, level, shape, device, layout):  # pragma: no cover
        raise NotImplementedError

    def _at(self, level, shape, device, layout) -> PathCoefficients:
        a, b, da, db = self._coef(self._level(level, shape, device, layout))
        return PathCoefficients(a, b, da, db)

    def _apply(self, level, layout, named: dict, coefs) -> torch.Tensor:
        """Check the two named tensors and return ``c1·t1 + c2·t2`` with ``(c1, c2) =
        coefs(PathCoefficients)``."""
        shape, dtype, device = _tensors(**named)
        c1, c2 = coefs(self._at(level, shape, device, layout))
        (_, t1), (_, t2) = named.items()
        return _combine(shape, dtype, device, (c1, t1), (c2, t2))

    def add_noise(self, x0, noise, level, *, layout: str = "BCTHW") -> torch.Tensor:
        """``x = a·x0 + b·noise``."""
        return self._apply(level, layout, dict(x0=x0, noise=noise), lambda c: (c.a, c.b))

    def _velocity(self, x0, noise, level, layout) -> torch.Tensor:
        return self._apply(level, layout, dict(x0=x0, noise=noise), lambda c: (c.da, c.db))

    def x0_from_velocity(self, x, v, level, *, layout: str = "BCTHW") -> torch.Tensor:
        """``x0 = (b'·x - b·v) / det``."""
        return self._apply(
            level, layout, dict(x=x, v=v), lambda c: (_div(c.db, c.det), _div(-c.b, c.det))
        )

    def noise_from_velocity(self, x, v, level, *, layout: str = "BCTHW") -> torch.Tensor:
        """``ε = (a·v - a'·x) / det``."""
        return self._apply(
            level, layout, dict(x=x, v=v), lambda c: (_div(-c.da, c.det), _div(c.a, c.det))
        )

    def x0_from_noise(self, x, noise, level, *, layout: str = "BCTHW") -> torch.Tensor:
        """``x0 = (x - b·ε) / a`` (inf / nan where ``a = 0``)."""
        return self._apply(
            level, layout, dict(x=x, noise=noise), lambda c: (_div(1.0, c.a), _div(-c.b, c.a))
        )

    def noise_from_x0(self, x, x0, level, *, layout: str = "BCTHW") -> torch.Tensor:
        """``ε = (x - a·x0) / b`` (inf / nan where ``b = 0``)."""
        return self._apply(
            level, layout, dict(x=x, x0=x0), lambda c: (_div(1.0, c.b), _div(-c.a, c.b))
        )

    def velocity_from_x0(self, x, x0, level, *, layout: str = "BCTHW") -> torch.Tensor:
        """``v = (b'·x - det·x0) / b`` (inf / nan where ``b = 0``)."""
        return self._apply(
            level, layout, dict(x=x, x0=x0), lambda c: (_div(c.db, c.b), _div(-c.det, c.b))
        )

    def velocity_from_noise(self, x, noise, level, *, layout: str = "BCTHW") -> torch.Tensor:
        """``v = (a'·x + det·ε) / a`` (inf / nan where ``a = 0``)."""
        return self._apply(
            level, layout, dict(x=x, noise=noise), lambda c: (_div(c.da, c.a), _div(c.det, c.a))
        )


class _SigmaPath(_AffinePath):
    """An affine path levelled by ``σ`` (flow, EDM): :meth:`sample` written once. A subclass
    gives ``_noisy(x0, noise, sigma, generator, layout)`` (the noise, drawn if None, and the
    noisy ``x``) and ``_target(x0, noise)`` (the regression target)."""

    def _noisy(self, x0, noise, sigma, generator, layout):  # pragma: no cover
        raise NotImplementedError

    def _target(self, x0, noise):  # pragma: no cover
        raise NotImplementedError

    def sample(
        self,
        x0: torch.Tensor,
        sigma: Sigma,
        noise: torch.Tensor | None = None,
        generator: GeneratorLike = None,
        *,
        layout: str = "BCTHW",
    ) -> PathSample:
        """Training input at ``sigma``: ``x`` as :meth:`add_noise` makes it and the path's
        target: flow ``x = (1-σ)·x0 + σ·ε``, target ``v = ε - x0``; EDM ``x = x0 + σ·ε (+
        offset)``, target ``x0`` (the denoiser's).

        ``noise`` defaults to :func:`vidnoise.noise.randn` of ``x0``'s shape with ``generator``
        (one generator, or one per item of dim 0: item i then depends only on generator i;
        EDM draws item i's noise and then its offset from generator i). Flow takes ``noise``
        or ``generator``, not both; EDM with ``noise`` given draws only the offset.
        """
        _check_batched("x0", x0)
        x, noise = self._noisy(x0, noise, sigma, generator, layout)
        s = self._level(sigma, x0.shape, x0.device, layout)
        target = self._target(x0, noise)
        return PathSample(x, target, level_out(sigma, s, x0.shape[0], x0.dtype, x0.device), noise)


# ----------------------------------------------------------------------------- flow
class FlowPath(_SigmaPath):
    """Rectified flow (Mochi, SD3, Pyramid-Flow): ``x = (1 - σ)·x0 + σ·ε``.

    ``σ`` in [0, 1] is the noise fraction (1 = pure noise); ``(a, b, a', b') = (1-σ, σ, -1,
    1)`` and the velocity is ``v = dx/dσ = ε - x0`` (Mochi's network predicts ``x0 - ε = -v``:
    convert with :func:`vidnoise.conventions.mochi_to_velocity`). The conversions: ``x0 = x -
    σ·v``, ``ε = x + (1-σ)·v``, ``v = (x - x0)/σ``, ``v = (ε - x)/(1-σ)``. Stateless.
    """

    def _level(self, sigma, shape, device, layout):
        return as_sigma(
            "sigma", sigma, shape, device, layout=layout, high=1.0, hint=FLOW_SIGMA_HINT
        )

    def _coef(self, s):
        return 1.0 - s, s, -1.0, 1.0

    def coefficients(self, sigma: Sigma) -> PathCoefficients:
        """``(1-σ, σ, -1, 1)`` at ``sigma`` (float, or float64 tensors of its shape)."""
        s, _ = values64("sigma", sigma, low=0.0, high=1.0, hint=FLOW_SIGMA_HINT)
        return PathCoefficients(*self._coef(s))

    def velocity(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The training target ``v = noise - x0`` (independent of σ)."""
        return self._velocity(x0, noise, 0.0, None)

    def _noisy(self, x0, noise, sigma, generator, layout):
        noise = _noise_for(x0, noise, generator)
        return self.add_noise(x0, noise, sigma, layout=layout), noise

    def _target(self, x0, noise):
        return self.velocity(x0, noise)


# ----------------------------------------------------------------------------- EDM
@dataclass(frozen=True)
class EDMPath(_SigmaPath):
    """Variance exploding path (EDM, DIAMOND): ``x = x0 + σ·ε (+ offset_noise·η)``.

    ``σ`` in [0, ∞) is the noise std; ``(a, b, a', b') = (1, σ, 0, 1)``, so the ODE derivative
    is ``dx/dσ = ε`` (``velocity_from_x0 = noise_from_x0 = (x - x0)/σ``). The path holds the
    preconditioning's ``sigma_data`` and DIAMOND's ``offset_noise`` (as NVlabs EDM's
    ``EDMPrecond`` holds ``sigma_data``): offset noise adds one normal draw η per (batch,
    channel), constant over the other dims, with std ``offset_noise``, and the
    preconditioning then uses ``σ_eff = sqrt(σ² + offset_noise²)``. The x0 / ε conversions
    ignore the offset.
    """

    sigma_data: float = 0.5
    offset_noise: float = 0.0

    def __post_init__(self):
        sd = check_float("sigma_data", self.sigma_data, low=0.0, low_open=True)
        off = check_float("offset_noise", self.offset_noise, low=0.0)
        object.__setattr__(self, "sigma_data", sd)
        object.__setattr__(self, "offset_noise", off)

    def _level(self, sigma, shape, device, layout):
        return as_sigma("sigma", sigma, shape, device, layout=layout)

    def _coef(self, s):
        return 1.0, s, 0.0, 1.0

    def coefficients(self, sigma: Sigma) -> PathCoefficients:
        """``(1, σ, 0, 1)`` at ``sigma`` (float, or float64 tensors of its shape)."""
        s, _ = values64("sigma", sigma, low=0.0)
        return PathCoefficients(*self._coef(s))

    def add_noise(
        self,
        x0: torch.Tensor,
        noise: torch.Tensor,
        sigma: Sigma,
        *,
        offset: torch.Tensor | None = None,
        generator: GeneratorLike = None,
        layout: str = "BCTHW",
    ) -> torch.Tensor:
        """``x = x0 + σ·noise + offset_noise·η``, ``η ~ N(0, 1)`` of shape (B, C, 1, ...).

        ``η`` (unit normal, one value per (B, C)) is drawn with ``generator`` unless given as
        ``offset`` (shape (B, C) or (B, C, 1, ..., 1)). With ``offset_noise = 0`` nothing is
        drawn and ``x = x0 + σ·noise``.
        """
        shape, dtype, device = _tensors(x0=x0, noise=noise)
        c = self._at(sigma, shape, device, layout)
        terms = [(c.a, x0), (c.b, noise)]
        if self.offset_noise > 0.0:
            terms.append((self.offset_noise, _offset_eta(shape, offset, generator, x0)))
        elif offset is not None:
            raise ValueError("offset was given but the path's offset_noise is 0")
        return _combine(shape, dtype, device, *terms)

    def _precondition64(self, s):
        """float64 ``(c_skip, c_out, c_in, c_noise)``; overflow-free for σ up to float max."""
        sd = self.sigma_data
        if isinstance(s, float):
            se = math.hypot(s, self.offset_noise)
            tot = math.hypot(se, sd)
            c_noise = math.log(se) / 4.0 if se > 0 else -math.inf
            return sd * sd / (se * se + sd * sd), sd * (se / tot), 1.0 / tot, c_noise
        se = torch.hypot(s, torch.full_like(s, self.offset_noise))
        tot = torch.hypot(se, torch.full_like(se, sd))
        return sd * sd / (se * se + sd * sd), sd * (se / tot), 1.0 / tot, torch.log(se) / 4.0

    def precondition(self, sigma: Sigma):
        """EDM preconditioning ``(c_skip, c_out, c_in, c_noise)`` at ``sigma``.

        With ``σ_eff = sqrt(σ² + offset_noise²)`` and ``sd = sigma_data``:
        ``c_skip = sd² / (σ_eff² + sd²)``, ``c_out = σ_eff·sd / sqrt(σ_eff² + sd²)``,
        ``c_in = 1 / sqrt(σ_eff² + sd²)``, ``c_noise = ln(σ_eff) / 4`` (``-inf`` at
        ``σ_eff = 0``) (Karras et al. 2022, Table 1; NVlabs/edm ``training/networks.py``).
        Computed with ``hypot`` so that any finite σ gives finite values. Floats in, floats
        out; a tensor (any shape) gives four tensors of its shape and floating dtype.
        """
        s, dt = values64("sigma", sigma, low=0.0)
        coeffs = self._precondition64(s)
        return coeffs if dt is None else tuple(c.to(dt) for c in coeffs)

    def loss_weight(self, sigma: Sigma):
        """EDM loss weight ``λ = (σ_eff² + sd²) / (σ_eff·sd)² = 1/c_out² = 1/sd² + 1/σ_eff²``
        (the last form, used here, has no overflow; ``inf`` at ``σ_eff = 0``)."""
        s, dt = values64("sigma", sigma, low=0.0)
        inv_sd2 = 1.0 / (self.sigma_data * self.sigma_data)
        if dt is None:
            se = math.hypot(s, self.offset_noise)
            inv = math.inf if se == 0.0 else 1.0 / se  # 1/se first: se·se underflows below 1e-162
            return inv_sd2 + inv * inv
        se = torch.hypot(s, torch.full_like(s, self.offset_noise))
        return (inv_sd2 + 1.0 / (se * se)).to(dt)

    def denoiser_from_network(self, network: Callable, *, layout: str | None = None) -> Callable:
        """Wrap a raw network ``F(x_in, c_noise, *args)`` into the denoiser ``D(x, σ, *args)``.

        ``D(x, σ) = c_skip·x + c_out·F(c_in·x, c_noise)`` with the coefficients of
        :meth:`precondition`; ``c_noise`` is passed as a (B,) tensor (float32, float64 for
        float64 data) and ``c_in·x`` in ``x``'s dtype. ``D`` estimates ``x0``. With ``layout``
        ("BCTHW" or "BTCHW") the denoiser also takes per-frame σ of shape (B, T) on 5-D video
        and passes ``c_noise`` as (B, T).
        """
        if layout is not None:
            check_choice("layout", layout, LAYOUTS)
        return _EDMDenoiser(check_callable("network", network), self, layout)

    def _noisy(self, x0, noise, sigma, generator, layout):
        noise = _noise_for(x0, noise, generator if noise is None else None)
        return self.add_noise(x0, noise, sigma, generator=generator, layout=layout), noise

    def _target(self, x0, noise):
        return x0


def _offset_eta(shape, offset, generator, like: torch.Tensor) -> torch.Tensor:
    """DIAMOND's unit offset draw η of shape (B, C, 1, ..., 1): ``offset`` reshaped, or drawn."""
    if len(shape) < 2:
        raise ValueError(
            f"offset noise needs data with a channel dim (B, C, ...), got {tuple(shape)}"
        )
    eta_shape = (shape[0], shape[1]) + (1,) * (len(shape) - 2)
    if offset is None:
        return randn(eta_shape, generator=generator, device=like.device, dtype=like.dtype)
    check_tensor("offset", offset)
    if offset.device != like.device:
        raise ValueError(f"offset must be on x0's device {like.device}, got {offset.device}")
    if offset.numel() != shape[0] * shape[1] or offset.shape[:2] != shape[:2]:
        raise ValueError(
            f"offset must have shape (B, C) = {tuple(shape[:2])} (or with trailing 1s), got "
            f"{tuple(offset.shape)}"
        )
    return offset.reshape(eta_shape)


@dataclass(frozen=True)
class _EDMDenoiser:
    """``D(x, σ) = c_skip·x + c_out·F(c_in·x, c_noise)`` around a raw network ``F``."""

    network: Callable
    path: EDMPath
    layout: str | None = None

    def __call__(self, x: torch.Tensor, sigma: Sigma, *args, **kwargs) -> torch.Tensor:
        _check_batched("x", x)
        s = as_sigma("sigma", sigma, x.shape, x.device, layout=self.layout)
        c_skip, c_out, c_in, c_noise = self.path._precondition64(s)
        x_in = _combine(x.shape, x.dtype, x.device, (c_in, x))
        noise_cond = level_out(sigma, c_noise, x.shape[0], x.dtype, x.device)
        f = self.network(x_in, noise_cond, *args, **kwargs)
        if not isinstance(f, torch.Tensor) or f.shape != x.shape:
            got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            fix = "" if isinstance(f, torch.Tensor) else (
                "; a diffusers model returns a tuple or an output object: call it with "
                "return_dict=False and take [0]"
            )
            raise ValueError(
                f"network output must have the shape of x {tuple(x.shape)}, got {got}{fix}"
            )
        if f.device != x.device:
            raise ValueError(f"network output must be on x's device {x.device}, got {f.device}")
        out_dtype = torch.promote_types(x.dtype, f.dtype)
        return _combine(x.shape, out_dtype, x.device, (c_skip, x), (c_out, f))


# ----------------------------------------------------------------------------- VP
def _alpha_bar_table(n, b0, b1, schedule, snr_shift, zero_snr) -> torch.Tensor:
    """float64 ᾱ_0..ᾱ_{N-1} in the order of diffusers' CogVideoX scheduler: betas, cumprod,
    SNR shift, then (optionally) the zero-terminal-SNR rescale (formulas in :class:`VPPath`)."""
    if schedule == "scaled_linear":
        betas = torch.linspace(b0**0.5, b1**0.5, n, dtype=torch.float64) ** 2
    else:
        betas = torch.linspace(b0, b1, n, dtype=torch.float64)
    ab = torch.cumprod(1.0 - betas, 0)
    ab = ab / (snr_shift + (1.0 - snr_shift) * ab)
    if zero_snr:
        if not float(ab[0]) > float(ab[-1]):
            raise ValueError(
                "rescale_zero_terminal_snr needs abar to decrease (beta_end > 0), got "
                f"beta_start={b0}, beta_end={b1}"
            )
        ab = _zero_terminal_snr(ab)
    return ab


def _zero_terminal_snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023: shift sqrt(abar) so the last is 0, scale so the first is unchanged."""
    r = alpha_bar.sqrt()
    first, last = r[0].clone(), r[-1].clone()
    r = (r - last) * (first / (first - last))
    return r * r


def _vp_t_hint(n: int) -> str:
    """The fix for a float VP timestep: the index is an integer, a continuous time is not."""
    return (
        f"VPPath takes integer timestep indices in [0, {n - 1}] (DDPM's t, as diffusers' "
        f"add_noise): use t.long() for whole-number floats, (u * {n - 1}).round().long() for "
        f"a continuous time u in [0, 1], or FlowPath/EDMPath for a continuous noise level"
    )


@dataclass(frozen=True)
class VPPath(_AffinePath):
    """Variance preserving path (DDPM, CogVideoX): ``x = √ᾱ_t·x0 + √(1-ᾱ_t)·ε``.

    In angle form ``cos φ = √ᾱ_t``, ``sin φ = √(1-ᾱ_t)``: ``(a, b, a', b') = (cos φ, sin φ,
    -sin φ, cos φ)`` with the derivative along φ, so the v-prediction target is ``v = dx/dφ =
    √ᾱ·ε - √(1-ᾱ)·x0`` (Salimans & Ho 2022). ``ᾱ`` is built in float64: betas
    (``'scaled_linear'``: ``linspace(√beta_start, √beta_end, N)²``; ``'linear'``:
    ``linspace(beta_start, beta_end, N)``), ``ᾱ = cumprod(1 - β)``, then the SNR shift
    ``ᾱ <- ᾱ / (s + (1-s)·ᾱ)`` (``s = snr_shift_scale``; it divides the SNR ``ᾱ/(1-ᾱ)`` by
    ``s``), then, if ``rescale_zero_terminal_snr``, Lin et al.'s rescale of ``√ᾱ`` to end at
    exactly 0 (the order of diffusers' CogVideoX scheduler). ``t`` is an integer timestep in
    [0, N-1]: an int or an integer tensor (0-d, (B,) or per-frame (B, T)); any integer dtype
    (uint8 included) is read as indices. The EDM-equivalent std at ``t`` is ``√((1-ᾱ)/ᾱ)``
    (:meth:`edm_sigma`), ``inf`` at a zero-SNR terminal step.
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    snr_shift_scale: float = 1.0
    rescale_zero_terminal_snr: bool = False
    _alpha_bar: torch.Tensor = field(init=False, repr=False, compare=False)
    _on_device: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        n = check_int("num_train_timesteps", self.num_train_timesteps, minimum=2)
        b0 = check_float("beta_start", self.beta_start, low=0.0, high=1.0, high_open=True)
        b1 = check_float("beta_end", self.beta_end, low=0.0, high=1.0, high_open=True)
        check_choice("beta_schedule", self.beta_schedule, ("scaled_linear", "linear"))
        s = check_float("snr_shift_scale", self.snr_shift_scale, low=0.0, low_open=True)
        zero = check_bool("rescale_zero_terminal_snr", self.rescale_zero_terminal_snr)
        ab = _alpha_bar_table(n, b0, b1, self.beta_schedule, s, zero)
        object.__setattr__(self, "_alpha_bar", ab)
        object.__setattr__(self, "_on_device", {})

    def _alpha_bar_on(self, device) -> torch.Tensor:
        """``ᾱ`` on ``device``, copied there once (no host-to-device copy per call)."""
        device = torch.device(device)
        ab = self._on_device.get(device)
        if ab is None:
            ab = self._alpha_bar.to(device=device, dtype=float64_for(device))
            self._on_device[device] = ab
        return ab

    @classmethod
    def cogvideox(cls, snr_shift_scale: float = 3.0) -> VPPath:
        """CogVideoX's path: scaled-linear betas 0.00085 -> 0.012 over 1000 steps, SNR shift
        (diffusers' ``CogVideoXDDIMScheduler`` default 3.0), zero terminal SNR."""
        return cls(snr_shift_scale=snr_shift_scale, rescale_zero_terminal_snr=True)

    @property
    def alpha_bar(self) -> torch.Tensor:
        """``ᾱ_t`` for t = 0 .. N-1 (float64, CPU, a copy)."""
        return self._alpha_bar.clone()

    def _level(self, t, shape, device, layout):
        """float64 ``ᾱ_t`` as a float or a tensor broadcastable against ``shape``."""
        n = self.num_train_timesteps
        if not isinstance(t, torch.Tensor):
            if isinstance(t, numbers.Real) and not isinstance(t, (bool, numbers.Integral)):
                raise TypeError(f"t must be an integer timestep, got {t!r}; {_vp_t_hint(n)}")
            return float(self._alpha_bar[check_int("t", t, minimum=0, maximum=n - 1)])
        check_real_tensor("t", t)
        if t.is_floating_point():
            raise TypeError(
                f"t must be integer timesteps in [0, {n - 1}], got dtype {t.dtype}; "
                f"{_vp_t_hint(n)}"
            )
        # as_sigma gives the shape rule and the range check; integer values < 2^24 are exact
        # in float64 and float32 alike, so rounding back to int64 gives the indices.
        idx = as_sigma("t", t, shape, device, layout=layout, low=0, high=n - 1, scalar="an int")
        return self._alpha_bar_on(device)[idx.round().to(torch.int64)]

    def _coef(self, ab):
        a, b = _sqrt(ab), _sqrt(1.0 - ab)
        return a, b, -b, a

    def coefficients(self, t) -> PathCoefficients:
        """``(√ᾱ, √(1-ᾱ), -√(1-ᾱ), √ᾱ)`` at ``t`` (float, or float64 tensors of its shape)."""
        if isinstance(t, torch.Tensor):
            ab = self._level(t.reshape(-1), (t.numel(),), t.device, None).reshape(t.shape)
        else:
            ab = self._level(t, (), None, None)
        return PathCoefficients(*self._coef(ab))

    def velocity(self, x0: torch.Tensor, noise: torch.Tensor, t, *,
                 layout: str = "BCTHW") -> torch.Tensor:
        """v-prediction target ``v = √ᾱ_t·noise - √(1-ᾱ_t)·x0``."""
        return self._velocity(x0, noise, t, layout)

    def edm_sigma(self, t):
        """EDM-equivalent std ``√((1 - ᾱ_t) / ᾱ_t)`` (float for an int ``t``, else a float64
        tensor of ``t``'s shape); ``inf`` where ``ᾱ = 0``."""
        if isinstance(t, torch.Tensor):
            ab = self._level(t.reshape(-1), (t.numel(),), t.device, None).reshape(t.shape)
            return torch.sqrt((1.0 - ab) / ab)
        ab = self._level(t, (), None, None)
        return math.inf if ab == 0.0 else math.sqrt((1.0 - ab) / ab)

    def trailing_timesteps(self, n: int, device=None) -> torch.Tensor:
        """``n`` integer timesteps, descending, with trailing spacing (Lin et al. 2023, Table 2).

        ``t_k = round(N - k N / n) - 1`` for k = 0 .. n-1 (round half to even): the first is
        always ``N - 1``, the terminal step (int64 tensor). This is diffusers' ``"trailing"``
        spacing computed exactly: diffusers builds it with a float ``np.arange(N, 0, -N/n)``,
        which for some n returns n + 1 steps (n = 61, 103, ...) and at exact halves (n = 48,
        96, ...) may round to the other neighbour; for every other n the two agree bit for bit.
        """
        big_n = self.num_train_timesteps
        n = check_int("n", n, minimum=1, maximum=big_n)
        k = torch.arange(n, dtype=torch.float64)
        t = torch.round(big_n - k * (big_n / n)).to(torch.int64) - 1
        return t.to(device) if device is not None else t

    def sample(
        self,
        x0: torch.Tensor,
        t,
        noise: torch.Tensor | None = None,
        generator: GeneratorLike = None,
        prediction: str = "v",
        *,
        layout: str = "BCTHW",
    ) -> PathSample:
        """Training input at timesteps ``t``; ``prediction`` 'v' (default), 'eps' or 'x0' sets
        the target. ``sigma`` is the EDM-equivalent std, ``timestep`` the int64 ``t`` ((B,),
        or (B, T) for per-frame timesteps)."""
        _check_batched("x0", x0)
        check_choice("prediction", prediction, ("v", "eps", "x0"))
        noise = _noise_for(x0, noise, generator)
        x = self.add_noise(x0, noise, t, layout=layout)
        if prediction == "v":
            target = self.velocity(x0, noise, t, layout=layout)
        else:
            target = noise if prediction == "eps" else x0
        b = x0.shape[0]
        if isinstance(t, torch.Tensor):
            tt = t.to(device=x0.device, dtype=torch.int64)
            tt = tt.clone() if t.dim() == 2 else tt.reshape(-1).expand(b).clone()
        else:
            tt = torch.full((b,), t, dtype=torch.int64, device=x0.device)
        sigma = self.edm_sigma(tt).to(work_dtype(x0.dtype))
        return PathSample(x, target, sigma, noise, timestep=tt)
