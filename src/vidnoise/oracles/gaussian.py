"""Exact Gaussian oracle: Gaussian data, posterior means of linear paths, pyramid velocities.

For ``x0 ~ N(μ, C)`` and any linear path ``x = A·x0 + B·ε`` (``ε ~ N(0, I)``, independent),
``(x0, x)`` is jointly Gaussian, so::

    E[x0 | x] = μ + C·Aᵀ·(A·C·Aᵀ + B·Bᵀ)⁻¹·(x - A·μ)

Every path of vidnoise is linear in (x0, ε), pyramid stages included, so velocities and the
covariance of every linear sampler step can be computed exactly, in float64, with no
sampling (``docs/math.md`` §9). Vectors are flattened row-major from a per-sample shape
``(C, H, W)``; matrices act on the last dim of (n, d) batches.
"""

from __future__ import annotations

import math
import numbers

import torch

from vidnoise._checks import check_float, check_int

__all__ = [
    "powerlaw_cov",
    "GaussianData",
    "StageVelocity",
    "exact_stage_velocity",
    "exact_pyramid_model",
    "pyramid_operators",
]


def powerlaw_cov(h: int, w: int, alpha: float = 2.0) -> torch.Tensor:
    """Covariance (h·w x h·w, float64) of a stationary, image-like Gaussian field on an
    h x w torus with power spectrum ``P(f) ∝ (1 + |f|²)^(-alpha/2)`` (``f`` integer
    frequencies, wrapped to [-n/2, n/2)), normalised to unit variance per pixel.

    ``C[(i,j),(k,l)] = c((k-i) mod h, (l-j) mod w)`` with ``c`` the inverse DFT of ``P``;
    symmetric positive definite (eigenvalues ``P(f)·h·w/ΣP``), condition number
    ``(1 + f_max²)^(alpha/2)``. ``alpha = 0`` gives white noise; larger alpha, smoother fields.
    """
    h = check_int("h", h, minimum=1)
    w = check_int("w", w, minimum=1)
    alpha = check_float("alpha", alpha, low=0.0)
    fy = torch.fft.fftfreq(h, d=1.0 / h, dtype=torch.float64)
    fx = torch.fft.fftfreq(w, d=1.0 / w, dtype=torch.float64)
    p = (1.0 + fy[:, None] ** 2 + fx[None, :] ** 2) ** (-alpha / 2.0)
    c = torch.fft.ifft2(p.to(torch.complex128)).real  # autocovariance on the torus
    c = c / c[0, 0]
    iy = torch.arange(h)
    ix = torch.arange(w)
    dy = (iy[None, :] - iy[:, None]) % h  # (h, h)
    dx = (ix[None, :] - ix[:, None]) % w  # (w, w)
    cov = c[dy[:, None, :, None], dx[None, :, None, :]]  # (h, w, h, w)
    cov = cov.reshape(h * w, h * w)
    return 0.5 * (cov + cov.T)


class GaussianData:
    """Gaussian data ``x0 ~ N(mean, cov)`` in float64.

    Args:
        mean: (d,) tensor, or None for zeros.
        cov: (d, d) symmetric positive semi-definite tensor.
        shape: per-sample shape (C, H, W) with C·H·W = d used to reshape samples and to build
            image operators; default (1, s, s) when d = s² is a square.
    """

    def __init__(self, mean, cov, shape=None):
        if not isinstance(cov, torch.Tensor) or cov.dim() != 2 or cov.shape[0] != cov.shape[1]:
            raise ValueError(
                f"cov must be a square (d, d) tensor, got {getattr(cov, 'shape', cov)!r}"
            )
        cov = cov.detach().to(torch.float64).cpu()
        d = cov.shape[0]
        if not torch.allclose(cov, cov.T, rtol=1e-10, atol=1e-12):
            raise ValueError("cov must be symmetric")
        if mean is None:
            mean = torch.zeros(d, dtype=torch.float64)
        if not isinstance(mean, torch.Tensor) or mean.shape != (d,):
            raise ValueError(f"mean must be a (d,) = ({d},) tensor or None")
        if shape is None:
            s = math.isqrt(d)
            if s * s != d:
                raise ValueError(f"shape is required when d = {d} is not a square")
            shape = (1, s, s)
        shape = tuple(int(v) for v in shape)
        if len(shape) != 3 or math.prod(shape) != d:
            raise ValueError(f"shape must be (C, H, W) with C·H·W = {d}, got {shape}")
        self.mean = mean.detach().to(torch.float64).cpu()
        self.cov = cov
        self.shape = shape
        # cov = S Sᵀ by Cholesky; a PSD-but-singular cov gets a jitter of at most 1e-12 of its
        # mean variance (eigh is avoided: its CPU kernel can be very slow under threading)
        scale = max(float(cov.diagonal().mean()), 1e-300)
        eye = torch.eye(d, dtype=torch.float64)
        for jitter in (0.0, 1e-15, 1e-14, 1e-13, 1e-12):
            S, info = torch.linalg.cholesky_ex(cov + jitter * scale * eye)
            if int(info) == 0:
                break
        else:
            raise ValueError("cov must be positive semi-definite")
        self._sqrt = S

    @property
    def dim(self) -> int:
        return self.cov.shape[0]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` samples, (n, C, H, W) float64: ``mean + S·z`` with ``S Sᵀ = cov``."""
        n = check_int("n", n, minimum=0)
        z = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        return (self.mean + z @ self._sqrt.T).reshape(n, *self.shape)

    def posterior_mean(self, A: torch.Tensor, B: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``E[x0 | A·x0 + B·ε = x] = μ + C Aᵀ (A C Aᵀ + B Bᵀ)⁻¹ (x - A μ)`` (``docs/math.md`` §9).

        ``A`` (m, d), ``B`` (m, q), ``x`` (..., m) (rows are observations); returns (..., d).
        ``A C Aᵀ + B Bᵀ`` must be invertible.
        """
        A = A.to(torch.float64)
        B = B.to(torch.float64)
        S = A @ self.cov @ A.T + B @ B.T
        K = torch.linalg.solve(S, A @ self.cov).T  # C Aᵀ S⁻¹  (S symmetric)
        xx = x.to(torch.float64)
        return self.mean + (xx - self.mean @ A.T) @ K.T


# ----------------------------------------------------------------------------- operators
def _down1(n: int) -> torch.Tensor:
    """1-D bilinear 2x reduction (align_corners=False) of even n: pair means, (n/2, n)."""
    return torch.kron(torch.eye(n // 2, dtype=torch.float64),
                      torch.tensor([[0.5, 0.5]], dtype=torch.float64))


def _up1(n: int) -> torch.Tensor:
    """1-D nearest 2x upsampling of n: (2n, n)."""
    return torch.kron(torch.eye(n, dtype=torch.float64),
                      torch.tensor([[1.0], [1.0]], dtype=torch.float64))


def pyramid_operators(shape, stages: int):
    """Matrices of the pyramid maps on flattened (C, H, W) vectors, built from their
    definitions (independently of the library's interpolate calls).

    Returns ``(D, U)``: ``D[k]`` (d_k, d) takes full-resolution data to level k (bilinear 2x
    reductions = 2x2 means, no variance factor; ``D[K-1] = I``) and ``U[k]`` (d_k, d_{k-1})
    is nearest 2x upsampling from level k-1 to level k (``U[0] = None``). The noise pyramid
    is ``n_k = 2^(K-1-k)·D[k]·ε``, whose rows are orthonormal.
    """
    c, h, w = shape
    K = check_int("stages", stages, minimum=1)
    f = 2 ** (K - 1)
    if h % f or w % f:
        raise ValueError(f"shape {shape}: H and W must be multiples of 2^(stages-1) = {f}")
    eye_c = torch.eye(c, dtype=torch.float64)
    D = [None] * K
    D[K - 1] = torch.eye(c * h * w, dtype=torch.float64)
    hh, ww = h, w
    for k in range(K - 2, -1, -1):
        step = torch.kron(eye_c, torch.kron(_down1(hh), _down1(ww)))
        D[k] = step @ D[k + 1]
        hh, ww = hh // 2, ww // 2
    U = [None] * K
    for k in range(1, K):
        lh, lw = h // 2 ** (K - k), w // 2 ** (K - k)
        U[k] = torch.kron(eye_c, torch.kron(_up1(lh), _up1(lw)))
    return D, U


class StageVelocity:
    """Exact stage velocity ``v(x, r) = E[start - end | x_r = x]`` for Gaussian data: an
    affine map ``M(r)·x + c(r)`` at the stage's resolution (see :func:`exact_stage_velocity`;
    the stage end points are those of ``docs/math.md`` §4, the posterior mean that of §9).

    With ``x_r = A_r·x0 + b_r·N·ε`` and ``target = A_T·x0 + (σ_s - σ_e)·N·ε`` (``N`` the
    noise-pyramid rows, ``N Nᵀ = I``)::

        M(r) = (A_T C A_rᵀ + (σ_s-σ_e)·b_r·I) (A_r C A_rᵀ + b_r²·I)⁻¹,   c(r) = A_T μ - M(r) A_r μ
        A_r = r(1-σ_s)·U D_{k-1} + (1-r)(1-σ_e)·D_k,   A_T = (1-σ_s)·U D_{k-1} - (1-σ_e)·D_k
        b_r = r σ_s + (1-r) σ_e                        (stage 0: (1-σ_s) terms vanish)
    """

    def __init__(self, data: GaussianData, schedule, stage: int):
        K = schedule.stages
        stage = check_int("stage", stage, minimum=0, maximum=K - 1)
        D, U = pyramid_operators(data.shape, K)
        s, e = schedule.start_sigmas[stage], schedule.end_sigmas[stage]
        self.stage = stage
        self.data = data
        self.sigma_start, self.sigma_end = s, e
        self.P = (U[stage] @ D[stage - 1]) if stage > 0 else torch.zeros_like(D[stage])
        self.Dk = D[stage]
        d_k = self.Dk.shape[0]
        c, h, w = data.shape
        f = 2 ** (K - 1 - stage)
        self.shape = (c, h // f, w // f)
        self.dim = d_k
        # A_r C A_rᵀ and A_T C A_rᵀ are quadratic in (P, D_k): precompute the four products
        C = data.cov
        PC, DC = self.P @ C, self.Dk @ C
        self._pp, self._pd = PC @ self.P.T, PC @ self.Dk.T
        self._dp, self._dd = DC @ self.P.T, DC @ self.Dk.T
        self._cache: dict = {}

    def operators(self, r: float):
        """``(A_r, b_r, A_T, b_T)`` of ``x_r = A_r x0 + b_r N ε``, target = ``A_T x0 + b_T N ε``."""
        s, e = self.sigma_start, self.sigma_end
        A_r = r * (1 - s) * self.P + (1 - r) * (1 - e) * self.Dk
        A_T = (1 - s) * self.P - (1 - e) * self.Dk
        return A_r, r * s + (1 - r) * e, A_T, s - e

    def matrix(self, r: float):
        """``(M(r), c(r))`` in float64 (cached per r)."""
        r = float(r)
        if r not in self._cache:
            mu = self.data.mean
            s, e = self.sigma_start, self.sigma_end
            b_r, b_T = r * s + (1 - r) * e, s - e
            a, b = r * (1 - s), (1 - r) * (1 - e)  # A_r = a P + b D
            ta, tb = 1 - s, -(1 - e)  # A_T = ta P + tb D
            eye = torch.eye(self.dim, dtype=torch.float64)
            S = (a * a * self._pp + a * b * (self._pd + self._dp) + b * b * self._dd
                 + b_r * b_r * eye)
            X = (ta * a * self._pp + ta * b * self._pd + tb * a * self._dp + tb * b * self._dd
                 + b_T * b_r * eye)
            M = torch.linalg.solve(S, X.T).T  # X S⁻¹, S symmetric
            A_r = a * self.P + b * self.Dk
            off = (ta * self.P + tb * self.Dk) @ mu - M @ (A_r @ mu)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[r] = (M, off)
        return self._cache[r]

    def __call__(self, x: torch.Tensor, r: float) -> torch.Tensor:
        """Velocity at local ratio ``r`` for ``x`` of shape (n, C, h, w) (any float dtype)."""
        M, off = self.matrix(r)
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        v = flat @ M.T.to(flat.device) + off.to(flat.device)
        return v.reshape(x.shape).to(x.dtype)


def exact_stage_velocity(data: GaussianData, schedule, stage: int) -> StageVelocity:
    """The exact (Bayes-optimal) velocity of ``stage``: ``x ↦ E[start - end | x_r = x]``.

    This is what a model trained on :meth:`~vidnoise.pyramid.PyramidSchedule.training_inputs`
    learns with an L2 loss, and what :func:`vidnoise.samplers.sample_pyramid` needs. Returns
    a :class:`StageVelocity`: ``v(x, r)`` and ``v.matrix(r) -> (M, c)`` with
    ``E[target | x_r = x] = M x + c`` on flattened (C, h, w) vectors. ``A_r C A_rᵀ + b_r² I``
    must be invertible: it is for every r > 0, and at r = 0 too unless it is the last stage
    with a singular ``cov``.
    """
    return StageVelocity(data, schedule, stage)


def exact_pyramid_model(data: GaussianData, schedule):
    """A ``model(x, timestep, stage)`` for :func:`~vidnoise.samplers.sample_pyramid` that
    returns the exact stage velocity (the timestep is mapped back to the local ratio with
    ``schedule.ratio_from_timestep``; one timestep per batch, read on the host: an oracle,
    not a fast model)."""
    vel = [exact_stage_velocity(data, schedule, k) for k in range(schedule.stages)]

    def model(x, timestep, stage, **_):
        if not isinstance(stage, numbers.Integral):
            raise TypeError("stage must be an int")
        t = float(timestep.reshape(-1)[0]) if isinstance(timestep, torch.Tensor) else timestep
        r = float(schedule.ratio_from_timestep(stage, t))
        return vel[stage](x, r)

    return model
