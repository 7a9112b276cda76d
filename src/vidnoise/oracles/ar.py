"""Linear-Gaussian autoregressive frames with the exact conditional denoiser (rollout studies).

``x_{t+1} = a·x_t + w``, ``w ~ N(0, q·I)``, elementwise on frames of any shape. Given the
previous frame the next one is ``N(a·x_t, q·I)``, so every noisy-path posterior is exact:
for ``x = A·x_{t+1} + B·ε``, ``E[x_{t+1} | x, x_t] = m + A q (A² q + B²)⁻¹ (x - A m)`` with
``m = a·x_t``. With ``|a| < 1`` the stationary variance is ``q/(1 - a²)``.
"""

from __future__ import annotations

import math

import torch

from vidnoise._checks import as_sigma, check_float, check_int, check_real_tensor, check_tensor
from vidnoise.noise import randn

__all__ = ["LinearGaussianAR"]


def _level(name: str, v, x: torch.Tensor, **rng):
    """``v`` (a float, a 0-d or a (B,) tensor) broadcastable against ``x``, in float64, by
    the one σ-to-batch rule :func:`vidnoise._checks.as_sigma`."""
    return as_sigma(name, v, x.shape, x.device, **rng)


def _check_not_both_zero(A, B) -> None:
    """Raise where ``A = B = 0`` (x carries nothing); tensors are checked on the CPU only."""
    both = None
    if isinstance(A, float) and isinstance(B, float):
        both = A == 0.0 and B == 0.0
    else:
        dev = A.device if isinstance(A, torch.Tensor) else B.device
        if dev.type == "cpu":
            both = bool(torch.any(torch.as_tensor(A == 0.0) & torch.as_tensor(B == 0.0)))
    if both:
        raise ValueError(
            "a_path and b_path must not both be 0 (x = 0·x_next + 0·ε carries nothing), got "
            "a_path = b_path = 0"
        )


class LinearGaussianAR:
    """``x_{t+1} = a·x_t + w``, ``w ~ N(0, q·I)``.

    Args:
        a: AR coefficient (finite real).
        q: innovation variance, > 0.
    """

    def __init__(self, a: float, q: float):
        self.a = check_float("a", a)
        self.q = check_float("q", q, low=0.0, low_open=True)

    @property
    def stationary_var(self) -> float:
        """``q/(1 - a²)``; raises for ``|a| >= 1`` (no stationary law)."""
        if abs(self.a) >= 1.0:
            raise ValueError(f"stationary_var needs |a| < 1, got a = {self.a}")
        return self.q / (1.0 - self.a * self.a)

    def sample_stationary(self, shape, generator=None, *, dtype=torch.float64) -> torch.Tensor:
        """Frames drawn from the stationary law N(0, q/(1-a²))."""
        return math.sqrt(self.stationary_var) * randn(shape, generator=generator, dtype=dtype)

    def step(self, x_prev: torch.Tensor, generator=None) -> torch.Tensor:
        """One true transition ``a·x_prev + sqrt(q)·ε``."""
        check_tensor("x_prev", x_prev)
        eps = randn(x_prev.shape, generator=generator, device=x_prev.device, dtype=x_prev.dtype)
        return self.a * x_prev + math.sqrt(self.q) * eps

    def sample(self, x_init: torch.Tensor, n_frames: int, generator=None) -> torch.Tensor:
        """A true trajectory of ``n_frames`` frames after ``x_init`` (B, ...) → (B, n, ...)."""
        n_frames = check_int("n_frames", n_frames, minimum=1)
        out, x = [], x_init
        for _ in range(n_frames):
            x = self.step(x, generator)
            out.append(x)
        return torch.stack(out, dim=1)

    def posterior_mean(self, x_prev: torch.Tensor, a_path, b_path, x: torch.Tensor):
        """``E[x_next | A·x_next + B·ε = x, x_prev]`` (A, B >= 0 floats or (B,) tensors, not
        both 0); ``x / A`` exactly at ``B = 0``.

        The gain ``A q / (A² q + B²)`` is computed as ``(A√q / h)(√q / h)`` with ``h =
        hypot(A√q, B)``, so no square over- or underflows (``A = 0`` gives the prior mean).
        """
        check_real_tensor("x_prev", check_tensor("x_prev", x_prev))
        check_real_tensor("x", check_tensor("x", x))
        if x_prev.shape != x.shape:
            raise ValueError(
                f"x_prev must have x's shape {tuple(x.shape)}, got {tuple(x_prev.shape)}"
            )
        if x_prev.device != x.device:
            raise ValueError(f"x_prev must be on x's device {x.device}, got {x_prev.device}")
        A, B = _level("a_path", a_path, x), _level("b_path", b_path, x)
        _check_not_both_zero(A, B)
        m = self.a * x_prev.to(torch.float64)
        xd = x.to(torch.float64)
        rq = math.sqrt(self.q)
        if isinstance(A, float) and isinstance(B, float):
            if B == 0.0:  # noiseless: E = x / A exactly (the formula gives it up to rounding)
                return (xd / A).to(x.dtype)
            h = math.hypot(A * rq, B)
            return (m + ((A * rq / h) * (rq / h)) * (xd - A * m)).to(x.dtype)
        A = torch.as_tensor(A, dtype=torch.float64, device=x.device)
        B = torch.as_tensor(B, dtype=torch.float64, device=x.device)
        clean = B == 0.0
        h = torch.hypot(A * rq, torch.where(clean, torch.ones_like(B), B))
        out = m + ((A * rq / h) * (rq / h)) * (xd - A * m)
        out = torch.where(clean, xd / A, out)
        return out.to(x.dtype)

    def denoiser(self, x_prev: torch.Tensor):
        """Exact EDM denoiser given the previous frame:
        ``D(x, σ) = a·x_prev + q/(q + σ²)·(x - a·x_prev)`` (``D(x, 0) = x``)."""
        return lambda x, sigma: self.posterior_mean(x_prev, 1.0, sigma, x)

    def velocity(self, x_prev: torch.Tensor):
        """Exact flow velocity given the previous frame, ``v = (x - E[x_next | x])/σ``;
        at σ = 0 the exact value ``v = E[ε] - x_next = -x`` (the formula's limit)."""

        def v(x, sigma):
            check_real_tensor("x", check_tensor("x", x))
            s = _level("sigma", sigma, x, high=1.0)
            s = torch.as_tensor(s, dtype=torch.float64, device=x.device)
            flat = s if s.dim() == 0 else s.reshape(-1)  # as given: 0-d or (B,)
            x0 = self.posterior_mean(x_prev, 1.0 - flat, flat, x)
            xd = x.to(torch.float64)
            safe = torch.where(s > 0.0, s, torch.ones_like(s))
            out = torch.where(s > 0.0, (xd - x0.to(torch.float64)) / safe, -xd)
            return out.to(x.dtype)

        return v
