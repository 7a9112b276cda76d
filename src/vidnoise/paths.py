"""Forward noising paths: rectified flow, EDM (variance exploding) and VP (DDPM).

Conventions (one inside, see ``docs/conventions.md``):

* :class:`FlowPath`: ``x = (1 - sigma) x0 + sigma eps``, ``sigma`` in [0, 1] is the noise
  fraction, velocity ``v = dx/dsigma = eps - x0`` (Mochi, SD3, Pyramid-Flow);
* :class:`EDMPath`: ``x = x0 + sigma eps``, ``sigma`` in [0, inf) is the noise std (EDM,
  DIAMOND), with optional per-channel offset noise;
* :class:`VPPath`: ``x = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` at integer timestep ``t``
  (DDPM, CogVideoX), v-prediction ``v = sqrt(abar) eps - sqrt(1 - abar) x0``.

``sigma`` is a Python float or a tensor of shape (B,) (or 0-d), broadcast over the other dims
of the data. Coefficients are computed in float64 and applied in the data's dtype; float16 /
bfloat16 data is combined in float32 and returned in its own dtype. Python floats and CPU
tensors are range-checked; tensors on an accelerator are not (that would need a device sync).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from vidnoise._checks import (
    check_choice,
    check_float,
    check_int,
    check_tensor,
    check_values,
    float64_for,
    values64,
)
from vidnoise.noise import GeneratorLike, randn

__all__ = ["PathSample", "FlowPath", "EDMPath", "VPPath"]

Sigma = float | torch.Tensor


@dataclass(frozen=True, eq=False)
class PathSample:
    """A training input: the noisy ``x``, the regression ``target``, ``sigma`` (B,), ``noise``.

    ``sigma`` is always a (B,) tensor (float32, float64 for float64 data). For :class:`VPPath`
    it is the EDM-equivalent std ``sqrt((1-abar)/abar)`` and ``timestep`` holds the integer
    timesteps (B,); the other paths leave ``timestep`` None.
    """

    x: torch.Tensor
    target: torch.Tensor
    sigma: torch.Tensor
    noise: torch.Tensor
    timestep: torch.Tensor | None = None


# ----------------------------------------------------------------------------- helpers
def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _tensors(**named) -> tuple[torch.Size, torch.dtype]:
    """Check that the named tensors are floating and broadcast; return shape and result dtype."""
    for name, t in named.items():
        check_tensor(name, t)
    items = list(named.items())
    try:
        shape = torch.broadcast_shapes(*(t.shape for _, t in items))
    except RuntimeError:
        shapes = ", ".join(f"{n} {tuple(t.shape)}" for n, t in items)
        raise ValueError(f"shapes do not broadcast: {shapes}") from None
    dtype = items[0][1].dtype
    for _, t in items[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return shape, dtype


def _sigma64(name: str, sigma, shape, device, *, low=0.0, high=None, allow_inf=False):
    """``sigma`` as a checked Python float, or a float64 tensor shaped (B, 1, ..., 1) / ()."""
    if isinstance(sigma, torch.Tensor):
        if sigma.dtype == torch.bool or sigma.is_complex():
            raise TypeError(f"{name} must be a real tensor, got dtype {sigma.dtype}")
        batch = shape[0] if len(shape) else None
        if sigma.dim() > 1 or (sigma.dim() == 1 and sigma.shape[0] != batch):
            raise ValueError(
                f"{name} must be a float, a 0-d tensor or a tensor of shape (B,) = ({batch},) "
                f"matching dim 0 of the data {tuple(shape)}, got shape {tuple(sigma.shape)}"
            )
        check_values(name, sigma, low=low, high=high, allow_inf=allow_inf)
        s = sigma.to(device=device, dtype=float64_for(device))
        if s.dim() == 1:
            s = s.reshape(s.shape[0], *([1] * (len(shape) - 1)))
        return s
    return check_float(name, sigma, low=low, high=high, allow_inf=allow_inf)


def _combine(shape, dtype, device, *terms) -> torch.Tensor:
    """``sum(coef * t)`` with float64 coefficients applied in the work dtype of ``dtype``."""
    wd = _work_dtype(dtype)
    out = None
    for coef, t in terms:
        c = coef if isinstance(coef, float) else coef.to(device=device, dtype=wd)
        term = t.to(wd) * c
        out = term if out is None else out + term
    if out.shape != shape:  # only when every operand is smaller than the broadcast shape
        out = torch.broadcast_to(out, shape).contiguous()
    return out.to(dtype)


def _batch_sigma(sigma, batch: int, dtype, device) -> torch.Tensor:
    """Return ``sigma`` (float, 0-d or (B,)) as a (B,) tensor of the work dtype."""
    wd = _work_dtype(dtype)
    if isinstance(sigma, torch.Tensor):
        return sigma.to(device=device, dtype=wd).reshape(-1).expand(batch).clone()
    return torch.full((batch,), float(sigma), dtype=wd, device=device)


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


# ----------------------------------------------------------------------------- flow
class FlowPath:
    """Rectified flow (Mochi, SD3, Pyramid-Flow): ``x = (1 - sigma) x0 + sigma eps``.

    ``sigma`` in [0, 1] is the noise fraction (1 = pure noise); the velocity is
    ``v = dx/dsigma = eps - x0`` (Mochi's network predicts ``x0 - eps = -v``: convert with
    :func:`vidnoise.conventions.mochi_to_velocity`). Stateless.
    """

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, sigma: Sigma) -> torch.Tensor:
        """``x = (1 - sigma) x0 + sigma noise``."""
        shape, dtype = _tensors(x0=x0, noise=noise)
        s = _sigma64("sigma", sigma, shape, x0.device, high=1.0)
        return _combine(shape, dtype, x0.device, (1.0 - s, x0), (s, noise))

    def velocity(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The training target ``v = noise - x0`` (independent of sigma)."""
        shape, dtype = _tensors(x0=x0, noise=noise)
        return _combine(shape, dtype, x0.device, (1.0, noise), (-1.0, x0))

    def x0_from_velocity(self, x: torch.Tensor, v: torch.Tensor, sigma: Sigma) -> torch.Tensor:
        """``x0 = x - sigma v``."""
        shape, dtype = _tensors(x=x, v=v)
        s = _sigma64("sigma", sigma, shape, x.device, high=1.0)
        return _combine(shape, dtype, x.device, (1.0, x), (-s, v))

    def noise_from_velocity(self, x: torch.Tensor, v: torch.Tensor, sigma: Sigma) -> torch.Tensor:
        """``eps = x + (1 - sigma) v``."""
        shape, dtype = _tensors(x=x, v=v)
        s = _sigma64("sigma", sigma, shape, x.device, high=1.0)
        return _combine(shape, dtype, x.device, (1.0, x), (1.0 - s, v))

    def velocity_from_x0(self, x: torch.Tensor, x0: torch.Tensor, sigma: Sigma) -> torch.Tensor:
        """``v = (x - x0) / sigma`` (undefined at sigma = 0: gives inf / nan there)."""
        shape, dtype = _tensors(x=x, x0=x0)
        s = _sigma64("sigma", sigma, shape, x.device, high=1.0)
        inv = (math.inf if s == 0.0 else 1.0 / s) if isinstance(s, float) else 1.0 / s
        return _combine(shape, dtype, x.device, (inv, x), (-inv, x0))

    def velocity_from_noise(
        self, x: torch.Tensor, noise: torch.Tensor, sigma: Sigma
    ) -> torch.Tensor:
        """``v = (noise - x) / (1 - sigma)`` (undefined at sigma = 1: gives inf / nan there)."""
        shape, dtype = _tensors(x=x, noise=noise)
        s = _sigma64("sigma", sigma, shape, x.device, high=1.0)
        if isinstance(s, float):
            inv = math.inf if s == 1.0 else 1.0 / (1.0 - s)
        else:
            inv = 1.0 / (1.0 - s)
        return _combine(shape, dtype, x.device, (inv, noise), (-inv, x))

    def sample(
        self,
        x0: torch.Tensor,
        sigma: Sigma,
        noise: torch.Tensor | None = None,
        generator: GeneratorLike = None,
    ) -> PathSample:
        """Training input at ``sigma``: ``x = (1-sigma) x0 + sigma eps``, target ``v = eps - x0``.

        ``noise`` defaults to :func:`vidnoise.noise.randn` of ``x0``'s shape with ``generator``
        (one generator, or one per item of dim 0: item i then depends only on generator i).
        """
        check_tensor("x0", x0)
        if x0.dim() == 0:
            raise ValueError("x0 must have a batch dim, got a 0-d tensor")
        noise = _noise_for(x0, noise, generator)
        x = self.add_noise(x0, noise, sigma)
        target = self.velocity(x0, noise)
        return PathSample(x, target, _batch_sigma(sigma, x0.shape[0], x0.dtype, x0.device), noise)


# ----------------------------------------------------------------------------- EDM
def _edm_coeffs(sigma, sigma_data: float, offset_noise: float):
    """float64 (c_skip, c_out, c_in, c_noise) from a float or float64 tensor sigma."""
    sd2 = sigma_data * sigma_data
    if isinstance(sigma, float):
        se = math.sqrt(sigma * sigma + offset_noise * offset_noise)
        tot = se * se + sd2
        c_noise = math.log(se) / 4.0 if se > 0 else -math.inf
        return sd2 / tot, se * sigma_data / math.sqrt(tot), 1.0 / math.sqrt(tot), c_noise
    se = torch.sqrt(sigma * sigma + offset_noise * offset_noise)
    tot = se * se + sd2
    return sd2 / tot, se * sigma_data / torch.sqrt(tot), torch.rsqrt(tot), torch.log(se) / 4.0


def _check_edm_params(sigma_data, offset_noise) -> tuple[float, float]:
    sigma_data = check_float("sigma_data", sigma_data, low=0.0, low_open=True)
    offset_noise = check_float("offset_noise", offset_noise, low=0.0)
    return sigma_data, offset_noise


class _EDMDenoiser:
    """``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)`` around a raw network ``F``."""

    def __init__(self, network: Callable, sigma_data: float, offset_noise: float):
        if not callable(network):
            raise TypeError(f"network must be callable, got {type(network).__name__}")
        self.network = network
        self.sigma_data = sigma_data
        self.offset_noise = offset_noise

    def __repr__(self) -> str:
        return (
            f"EDMDenoiser(network={self.network!r}, sigma_data={self.sigma_data}, "
            f"offset_noise={self.offset_noise})"
        )

    def __call__(self, x: torch.Tensor, sigma: Sigma, *args, **kwargs) -> torch.Tensor:
        check_tensor("x", x)
        if x.dim() == 0:
            raise ValueError("x must have a batch dim, got a 0-d tensor")
        s = _sigma64("sigma", sigma, x.shape, x.device, allow_inf=False)
        c_skip, c_out, c_in, c_noise = _edm_coeffs(s, self.sigma_data, self.offset_noise)
        x_in = _combine(x.shape, x.dtype, x.device, (c_in, x))
        noise_cond = _batch_sigma(c_noise, x.shape[0], x.dtype, x.device)
        f = self.network(x_in, noise_cond, *args, **kwargs)
        if not isinstance(f, torch.Tensor) or f.shape != x.shape:
            got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise ValueError(f"network output must have the shape of x {tuple(x.shape)}, got {got}")
        out_dtype = torch.promote_types(x.dtype, f.dtype)
        return _combine(x.shape, out_dtype, x.device, (c_skip, x), (c_out, f))


class EDMPath:
    """Variance exploding path (EDM, DIAMOND): ``x = x0 + sigma eps (+ offset)``.

    ``sigma`` in [0, inf) is the noise std. DIAMOND's offset noise adds one normal draw per
    (batch, channel), constant over the other dims, with std ``offset_noise``; the
    preconditioning then uses ``sigma_eff = sqrt(sigma^2 + offset_noise^2)``. Stateless.
    """

    def add_noise(
        self,
        x0: torch.Tensor,
        noise: torch.Tensor,
        sigma: Sigma,
        *,
        offset_noise: float = 0.0,
        offset: torch.Tensor | None = None,
        generator: GeneratorLike = None,
    ) -> torch.Tensor:
        """``x = x0 + sigma noise + offset_noise * eta``, ``eta`` ~ N(0, 1) of shape (B, C, 1, ...).

        ``eta`` (unit normal, one value per (B, C)) is drawn with ``generator`` unless given
        as ``offset`` (shape (B, C) or (B, C, 1, ..., 1)). With ``offset_noise = 0`` nothing is
        drawn and ``x = x0 + sigma noise``.
        """
        shape, dtype = _tensors(x0=x0, noise=noise)
        s = _sigma64("sigma", sigma, shape, x0.device)
        offset_noise = check_float("offset_noise", offset_noise, low=0.0)
        terms = [(1.0, x0), (s, noise)]
        if offset_noise > 0.0:
            if len(shape) < 2:
                raise ValueError(
                    f"offset noise needs data with a channel dim (B, C, ...), got {tuple(shape)}"
                )
            eta_shape = (shape[0], shape[1]) + (1,) * (len(shape) - 2)
            if offset is None:
                eta = randn(eta_shape, generator=generator, device=x0.device, dtype=x0.dtype)
            else:
                check_tensor("offset", offset)
                if offset.numel() != shape[0] * shape[1] or offset.shape[:2] != shape[:2]:
                    raise ValueError(
                        f"offset must have shape (B, C) = {tuple(shape[:2])} (or with trailing "
                        f"1s), got {tuple(offset.shape)}"
                    )
                eta = offset.reshape(eta_shape)
            terms.append((offset_noise, eta))
        elif offset is not None:
            raise ValueError("offset was given but offset_noise is 0")
        return _combine(shape, dtype, x0.device, *terms)

    def precondition(self, sigma: Sigma, sigma_data: float = 0.5, offset_noise: float = 0.0):
        """EDM preconditioning ``(c_skip, c_out, c_in, c_noise)`` at ``sigma``.

        With ``sigma_eff = sqrt(sigma^2 + offset_noise^2)`` and ``sd = sigma_data``:
        ``c_skip = sd^2 / (sigma_eff^2 + sd^2)``, ``c_out = sigma_eff sd / sqrt(sigma_eff^2 +
        sd^2)``, ``c_in = 1 / sqrt(sigma_eff^2 + sd^2)``, ``c_noise = ln(sigma_eff) / 4``
        (``-inf`` at ``sigma_eff = 0``). Floats in, floats out; a tensor (any shape) gives four
        tensors of its shape and floating dtype (computed in float64).
        """
        sigma_data, offset_noise = _check_edm_params(sigma_data, offset_noise)
        s, dt = values64("sigma", sigma, low=0.0)
        coeffs = _edm_coeffs(s, sigma_data, offset_noise)
        return coeffs if dt is None else tuple(c.to(dt) for c in coeffs)

    def loss_weight(self, sigma: Sigma, sigma_data: float = 0.5, offset_noise: float = 0.0):
        """EDM loss weight ``lambda = (sigma_eff^2 + sd^2) / (sigma_eff sd)^2 = 1 / c_out^2``."""
        sigma_data, offset_noise = _check_edm_params(sigma_data, offset_noise)
        sd2 = sigma_data * sigma_data
        s, dt = values64("sigma", sigma, low=0.0)
        se2 = s * s + offset_noise * offset_noise
        if dt is None:
            return math.inf if se2 == 0.0 else (se2 + sd2) / (se2 * sd2)
        return ((se2 + sd2) / (se2 * sd2)).to(dt)

    def denoiser_from_network(
        self, network: Callable, sigma_data: float = 0.5, offset_noise: float = 0.0
    ) -> Callable:
        """Wrap a raw network ``F(x_in, c_noise, *args)`` into the denoiser ``D(x, sigma, *args)``.

        ``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)`` with the coefficients of
        :meth:`precondition`; ``c_noise`` is passed as a (B,) tensor (float32, float64 for
        float64 data) and ``c_in x`` in ``x``'s dtype. ``D`` estimates ``x0``.
        """
        sigma_data, offset_noise = _check_edm_params(sigma_data, offset_noise)
        return _EDMDenoiser(network, sigma_data, offset_noise)

    def x0_from_noise(self, x: torch.Tensor, noise: torch.Tensor, sigma: Sigma) -> torch.Tensor:
        """``x0 = x - sigma eps`` (no offset noise)."""
        shape, dtype = _tensors(x=x, noise=noise)
        s = _sigma64("sigma", sigma, shape, x.device)
        return _combine(shape, dtype, x.device, (1.0, x), (-s, noise))

    def noise_from_x0(self, x: torch.Tensor, x0: torch.Tensor, sigma: Sigma) -> torch.Tensor:
        """``eps = (x - x0) / sigma``: the EDM ODE derivative ``dx/dsigma`` (inf/nan at 0)."""
        shape, dtype = _tensors(x=x, x0=x0)
        s = _sigma64("sigma", sigma, shape, x.device)
        inv = (math.inf if s == 0.0 else 1.0 / s) if isinstance(s, float) else 1.0 / s
        return _combine(shape, dtype, x.device, (inv, x), (-inv, x0))

    def sample(
        self,
        x0: torch.Tensor,
        sigma: Sigma,
        noise: torch.Tensor | None = None,
        generator: GeneratorLike = None,
        offset_noise: float = 0.0,
    ) -> PathSample:
        """Training input: ``x = x0 + sigma eps (+ offset)``, target ``x0`` (the denoiser's).

        With a sequence of generators, item i's noise and then its offset are drawn from
        generator i.
        """
        check_tensor("x0", x0)
        if x0.dim() == 0:
            raise ValueError("x0 must have a batch dim, got a 0-d tensor")
        # given noise: the generator (if any) draws only the offset
        noise = _noise_for(x0, noise, generator if noise is None else None)
        x = self.add_noise(x0, noise, sigma, offset_noise=offset_noise, generator=generator)
        return PathSample(x, x0, _batch_sigma(sigma, x0.shape[0], x0.dtype, x0.device), noise)


# ----------------------------------------------------------------------------- VP
def _scaled_linear_betas(n: int, beta_start: float, beta_end: float) -> torch.Tensor:
    return torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2


def _zero_terminal_snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023: shift sqrt(abar) so the last is 0, scale so the first is unchanged."""
    r = alpha_bar.sqrt()
    first, last = r[0].clone(), r[-1].clone()
    r = (r - last) * (first / (first - last))
    return r * r


@dataclass(frozen=True)
class VPPath:
    """Variance preserving path (DDPM, CogVideoX): ``x = sqrt(abar_t) x0 + sqrt(1-abar_t) eps``.

    ``abar`` is built in float64: betas (``'scaled_linear'``: ``linspace(sqrt(beta_start),
    sqrt(beta_end), N)^2``; ``'linear'``: ``linspace(beta_start, beta_end, N)``),
    ``abar = cumprod(1 - beta)``, then the SNR shift ``abar <- abar / (s + (1-s) abar)``
    (``s = snr_shift_scale``; it divides the SNR ``abar / (1-abar)`` by ``s``), then, if
    ``rescale_zero_terminal_snr``, Lin et al.'s rescale of ``sqrt(abar)`` to end at exactly 0
    (the order of diffusers' CogVideoX scheduler). ``t`` is an integer timestep in
    [0, N-1] (an int or an integer tensor (B,)). The v-prediction target is
    ``v = sqrt(abar) eps - sqrt(1-abar) x0``. The EDM-equivalent std at ``t`` is
    ``sqrt((1-abar)/abar)`` (:meth:`edm_sigma`), ``inf`` at a zero-SNR terminal step.
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
        if not isinstance(self.rescale_zero_terminal_snr, bool):
            raise TypeError(
                f"rescale_zero_terminal_snr must be a bool, got {self.rescale_zero_terminal_snr!r}"
            )
        if self.beta_schedule == "scaled_linear":
            betas = _scaled_linear_betas(n, b0, b1)
        else:
            betas = torch.linspace(b0, b1, n, dtype=torch.float64)
        ab = torch.cumprod(1.0 - betas, 0)
        ab = ab / (s + (1.0 - s) * ab)
        if self.rescale_zero_terminal_snr:
            if not float(ab[0]) > float(ab[-1]):
                raise ValueError(
                    "rescale_zero_terminal_snr needs abar to decrease (beta_end > 0), got "
                    f"beta_start={b0}, beta_end={b1}"
                )
            ab = _zero_terminal_snr(ab)
        object.__setattr__(self, "_alpha_bar", ab)
        object.__setattr__(self, "_on_device", {})

    def _alpha_bar_on(self, device) -> torch.Tensor:
        """``abar`` on ``device``, copied there once (no host-to-device copy per call)."""
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
        """``abar_t`` for t = 0 .. N-1 (float64, CPU, a copy)."""
        return self._alpha_bar.clone()

    def _ab(self, t, shape, device):
        """float64 ``abar_t`` as a float or a tensor shaped (B, 1, ..., 1) / ()."""
        n = self.num_train_timesteps
        if isinstance(t, torch.Tensor):
            if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                raise TypeError(f"t must be integer timesteps in [0, {n - 1}], got dtype {t.dtype}")
            batch = shape[0] if len(shape) else None
            if t.dim() > 1 or (t.dim() == 1 and t.shape[0] != batch):
                raise ValueError(
                    f"t must be an int, a 0-d tensor or a tensor of shape (B,) = ({batch},), "
                    f"got shape {tuple(t.shape)}"
                )
            check_values("t", t, low=0, high=n - 1)
            ab = self._alpha_bar_on(device)[t.to(device)]
            return ab.reshape(ab.shape[0], *([1] * (len(shape) - 1))) if ab.dim() == 1 else ab
        return float(self._alpha_bar[check_int("t", t, minimum=0, maximum=n - 1)])

    def _coefs(self, t, shape, device):
        ab = self._ab(t, shape, device)
        if isinstance(ab, float):
            return math.sqrt(ab), math.sqrt(1.0 - ab)
        return ab.sqrt(), (1.0 - ab).sqrt()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """``x = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``."""
        shape, dtype = _tensors(x0=x0, noise=noise)
        a, b = self._coefs(t, shape, x0.device)
        return _combine(shape, dtype, x0.device, (a, x0), (b, noise))

    def velocity(self, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """v-prediction target ``v = sqrt(abar_t) noise - sqrt(1 - abar_t) x0``."""
        shape, dtype = _tensors(x0=x0, noise=noise)
        a, b = self._coefs(t, shape, x0.device)
        return _combine(shape, dtype, x0.device, (a, noise), (-b, x0))

    def x0_from_velocity(self, x: torch.Tensor, v: torch.Tensor, t) -> torch.Tensor:
        """``x0 = sqrt(abar) x - sqrt(1 - abar) v``."""
        shape, dtype = _tensors(x=x, v=v)
        a, b = self._coefs(t, shape, x.device)
        return _combine(shape, dtype, x.device, (a, x), (-b, v))

    def noise_from_velocity(self, x: torch.Tensor, v: torch.Tensor, t) -> torch.Tensor:
        """``eps = sqrt(1 - abar) x + sqrt(abar) v``."""
        shape, dtype = _tensors(x=x, v=v)
        a, b = self._coefs(t, shape, x.device)
        return _combine(shape, dtype, x.device, (b, x), (a, v))

    def x0_from_noise(self, x: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """``x0 = (x - sqrt(1 - abar) eps) / sqrt(abar)`` (inf/nan where abar = 0)."""
        shape, dtype = _tensors(x=x, noise=noise)
        a, b = self._coefs(t, shape, x.device)
        inv = _safe_inv(a)
        return _combine(shape, dtype, x.device, (inv, x), (-b * inv, noise))

    def noise_from_x0(self, x: torch.Tensor, x0: torch.Tensor, t) -> torch.Tensor:
        """``eps = (x - sqrt(abar) x0) / sqrt(1 - abar)`` (inf/nan where abar = 1)."""
        shape, dtype = _tensors(x=x, x0=x0)
        a, b = self._coefs(t, shape, x.device)
        inv = _safe_inv(b)
        return _combine(shape, dtype, x.device, (inv, x), (-a * inv, x0))

    def velocity_from_x0(self, x: torch.Tensor, x0: torch.Tensor, t) -> torch.Tensor:
        """``v = (sqrt(abar) x - x0) / sqrt(1 - abar)``."""
        shape, dtype = _tensors(x=x, x0=x0)
        a, b = self._coefs(t, shape, x.device)
        inv = _safe_inv(b)
        return _combine(shape, dtype, x.device, (a * inv, x), (-inv, x0))

    def velocity_from_noise(self, x: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """``v = (eps - sqrt(1 - abar) x) / sqrt(abar)``."""
        shape, dtype = _tensors(x=x, noise=noise)
        a, b = self._coefs(t, shape, x.device)
        inv = _safe_inv(a)
        return _combine(shape, dtype, x.device, (inv, noise), (-b * inv, x))

    def edm_sigma(self, t):
        """EDM-equivalent std ``sqrt((1 - abar_t) / abar_t)`` (float for an int ``t``, else a
        float64 tensor of ``t``'s shape); ``inf`` where ``abar = 0``."""
        if isinstance(t, torch.Tensor):
            ab = self._ab(t.reshape(-1), (t.numel(),), t.device).reshape(t.shape)
            return torch.sqrt((1.0 - ab) / ab)
        ab = self._ab(t, (), None)
        return math.inf if ab == 0.0 else math.sqrt((1.0 - ab) / ab)

    def trailing_timesteps(self, n: int, device=None) -> torch.Tensor:
        """``n`` integer timesteps, descending, with trailing spacing (Lin et al. 2023, Table 2).

        ``t_k = round(N - k N / n) - 1`` for k = 0 .. n-1 (round half to even): the first is
        always ``N - 1``, the terminal step (int64 tensor).
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
    ) -> PathSample:
        """Training input at timesteps ``t``; ``prediction`` 'v' (default), 'eps' or 'x0' sets
        the target. ``sigma`` is the EDM-equivalent std, ``timestep`` the (B,) int64 ``t``."""
        check_tensor("x0", x0)
        check_choice("prediction", prediction, ("v", "eps", "x0"))
        if x0.dim() == 0:
            raise ValueError("x0 must have a batch dim, got a 0-d tensor")
        noise = _noise_for(x0, noise, generator)
        x = self.add_noise(x0, noise, t)
        if prediction == "v":
            target = self.velocity(x0, noise, t)
        elif prediction == "eps":
            target = noise
        else:
            target = x0
        b = x0.shape[0]
        if isinstance(t, torch.Tensor):
            tt = t.to(device=x0.device, dtype=torch.int64).reshape(-1).expand(b).clone()
        else:
            tt = torch.full((b,), check_int("t", t, minimum=0), dtype=torch.int64, device=x0.device)
        sigma = self.edm_sigma(tt).to(_work_dtype(x0.dtype))
        return PathSample(x, target, sigma, noise, timestep=tt)


def _safe_inv(v):
    if isinstance(v, float):
        return math.inf if v == 0.0 else 1.0 / v
    return 1.0 / v
