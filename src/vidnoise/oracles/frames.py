"""Exact per-frame-σ velocity of Gaussian video data correlated across frames.

Data ``x0 ~ N(0, C)`` over a video of T frames of d = C·H·W values each, flattened
frame-major (index ``t·d + k``). With one flow level per frame, ``x_t = (1 - σ_t)·x0_t +
σ_t·ε_t``, i.e. ``x = A·x0 + B·ε`` with ``A = diag(1 - σ) ⊗ I_d``, ``B = diag(σ) ⊗ I_d``.
``(x0, ε, x)`` is jointly Gaussian, so the velocity ``v = E[ε - x0 | x]`` is linear in x::

    v = (B - C·A)·(A·C·A + B²)⁻¹·x        (docs/math.md §10)

(``Cov(ε, x) = B``, ``Cov(x0, x) = C·A``). It needs no division by σ, so frames at σ = 0
(clean context) are fine: there ``v_t = -x_t``.
"""

from __future__ import annotations

import torch

from vidnoise._checks import check_choice, frame_axis

__all__ = ["FrameGaussian", "ar_frame_cov"]


def ar_frame_cov(num_frames: int, a: float, q: float, frame_dim: int = 1) -> torch.Tensor:
    """Covariance of T consecutive frames of the stationary AR(1) process
    ``x_{t+1} = a·x_t + w``, ``w ~ N(0, q·I)``: ``Cov(x_s, x_t) = q/(1 - a²)·a^|s - t|·I``,
    as a (T·d, T·d) float64 matrix, frame-major."""
    var = q / (1.0 - a * a)
    r = torch.tensor([[var * a ** abs(i - j) for j in range(num_frames)]
                      for i in range(num_frames)], dtype=torch.float64)
    return torch.kron(r, torch.eye(frame_dim, dtype=torch.float64))


class FrameGaussian:
    """Gaussian video data with the exact per-frame-σ velocity (see the module docstring).

    Args:
        cov: (T·d, T·d) symmetric positive definite, frame-major.
        frame_shape: (C, H, W) of one frame, C·H·W = d.
        layout: ``"BCTHW"`` or ``"BTCHW"`` of the tensors the model gets.
    """

    def __init__(self, cov: torch.Tensor, frame_shape, layout: str = "BCTHW"):
        check_choice("layout", layout, ("BCTHW", "BTCHW"))
        self.cov = cov.detach().to(torch.float64).cpu()
        self.frame_shape = tuple(int(v) for v in frame_shape)
        self.d = self.frame_shape[0] * self.frame_shape[1] * self.frame_shape[2]
        if self.cov.shape[0] % self.d or self.cov.shape != (self.cov.shape[0],) * 2:
            raise ValueError(f"cov must be (T·d, T·d) with d = {self.d}, got {self.cov.shape}")
        self.frames = self.cov.shape[0] // self.d
        self.layout = layout
        self.ax = frame_axis(layout)

    def matrix(self, sigma) -> torch.Tensor:
        """The (T·d, T·d) map ``M(σ)`` with ``v = M(σ)·x`` for per-frame levels ``sigma``."""
        s = torch.as_tensor(sigma, dtype=torch.float64).cpu().repeat_interleave(self.d)
        a = 1.0 - s
        ca = self.cov * a[None, :]  # C·A
        g = a[:, None] * ca + torch.diag(s * s)  # A·C·A + B²
        return torch.linalg.solve(g.T, (torch.diag(s) - ca).T).T

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) video -> (B, T·d) frame-major float64."""
        if self.layout == "BCTHW":
            x = x.transpose(1, 2)
        return x.reshape(x.shape[0], -1).to(torch.float64)

    def unflat(self, v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        c, h, w = self.frame_shape
        v = v.reshape(v.shape[0], -1, c, h, w)
        if self.layout == "BCTHW":
            v = v.transpose(1, 2)
        return v.to(like.dtype).contiguous()

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``model(x, σ)`` for ``sample_frames``: σ (B, T). Reads σ on the host (an oracle
        for tests: it syncs). Windows shorter than T use the first frames' covariance."""
        t = x.shape[self.ax]
        n = t * self.d
        sub = FrameGaussian(self.cov[:n, :n], self.frame_shape, self.layout) if t < self.frames \
            else self
        xf = sub.flat(x)
        out = torch.empty_like(xf)
        rows = sigma.detach().to("cpu", torch.float64)
        uniq, inv = torch.unique(rows, dim=0, return_inverse=True)
        for j in range(uniq.shape[0]):
            sel = inv == j
            out[sel] = xf[sel] @ sub.matrix(uniq[j]).T
        return sub.unflat(out, x)

    __call__ = velocity

    def noise_cov(self, sigma) -> torch.Tensor:
        """Covariance of x at per-frame levels σ: ``A·C·A + B²`` (the exact marginal)."""
        s = torch.as_tensor(sigma, dtype=torch.float64).cpu().repeat_interleave(self.d)
        a = 1.0 - s
        return a[:, None] * self.cov * a[None, :] + torch.diag(s * s)
