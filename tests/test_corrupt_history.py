"""Tests of vidnoise.conditioning.corrupt_history (Pyramid-Flow's history-frame corruption,
docs/math.md §6)."""

from __future__ import annotations

import math

import pytest
import torch

from vidnoise.conditioning import corrupt_history

F64 = torch.float64


def test_corrupt_history_formula_and_distribution():
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(4000, 2, 3, 4, 4, dtype=F64, generator=g)
    r = corrupt_history(frames, generator=torch.Generator().manual_seed(1))
    out, sigma = r.noised, r.sigma
    # rebuild: σ drawn first (U[0,1)·max), then ε, from the same generator
    g2 = torch.Generator().manual_seed(1)
    sig = torch.rand(4000, dtype=F64, generator=g2) / 3
    eps = torch.randn(frames.shape, dtype=F64, generator=g2)
    s = sig.view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(out, s * eps + (1 - s) * frames, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sigma, sig)
    # σc ~ U(0, 1/3): mean 1/6 (SE = (1/3)/sqrt(12 n)), max below 1/3
    se = (1 / 3) / math.sqrt(12 * 4000)
    assert abs(float(sigma.mean()) - 1 / 6) < 5 * se
    assert float(sigma.max()) < 1 / 3 and float(sigma.min()) >= 0


def test_corrupt_history_options():
    frames = torch.randn(3, 4, 8)
    assert torch.equal(corrupt_history(frames, 0.0).noised, frames)
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    a = corrupt_history(frames, generator=gens).noised
    b = corrupt_history(frames[2:], generator=[torch.Generator().manual_seed(2)]).noised
    torch.testing.assert_close(a[2:], b)
    h = corrupt_history(frames.half(), generator=torch.Generator().manual_seed(0)).noised
    assert h.dtype == torch.float16 and bool(torch.isfinite(h).all())
    with pytest.raises(ValueError, match="max_ratio"):
        corrupt_history(frames, 1.5)
    with pytest.raises(ValueError, match="frames"):
        corrupt_history(torch.tensor(1.0))
