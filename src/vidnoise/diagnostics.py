"""Statistics of noise tensors: mean, std, neighbour and in-block correlation, spectral flatness.

All statistics are computed in float64 on the standardised tensor ``z = (x - mean) / std``:

* neighbour correlation along an axis, position by position: ``ρ_i = E[z_i z_{i+1}]``
  averaged over every other dim; the report keeps ``max_i |ρ_i|`` (so a block structure that
  correlates only pairs inside blocks still shows up at full strength);
* mean in-block correlation from the block sums ``S = Σ_block z``:
  ``E[S²] = m + m(m-1)ρ``, so ``ρ = (E[S²]/m - 1)/(m-1)``;
* spectral flatness of the power spectrum ``P_f`` of the last ``dims`` dims, averaged over
  the ``K`` leading slices: ``exp(mean log P) / mean P``. For white noise each averaged bin is
  Gamma(K, 1/K) distributed, so the flatness is ``exp(ψ(K) - log K)`` (≈ 0.56 for one slice,
  → 1 for many), which the report gives beside the measured value.

``assert_white`` compares each statistic with its sampling error under white noise
(``z_score`` standard errors, derived from the number of elements).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from vidnoise._checks import check_choice, check_float, check_int, check_tensor

__all__ = ["NoiseReport", "noise_report", "assert_white"]

_AXIS_NAMES = {1: ("W",), 2: ("H", "W"), 3: ("T", "H", "W")}


@dataclass(frozen=True)
class NoiseReport:
    """Summary statistics of a noise tensor (see the module docstring for definitions).

    ``tolerances`` holds, for each statistic, the half-width of the band that white noise of
    this size stays within at ``z_score`` standard errors.
    """

    shape: tuple[int, ...]
    dtype: str
    numel: int
    mean: float
    std: float
    neighbour_corr: dict[str, float]
    block: tuple[int, ...] | None
    block_corr: float | None
    spectral_flatness: float
    flatness_white: float
    z_score: float
    tolerances: dict[str, float] = field(default_factory=dict)

    def failures(self, tol: float | None = None) -> list[str]:
        """Names of the statistics outside the white-noise band (``tol`` overrides the
        derived band for mean, std and correlations)."""
        t = self.tolerances
        bad = []
        if abs(self.mean) > (tol if tol is not None else t["mean"]):
            bad.append("mean")
        if abs(self.std - 1.0) > (tol if tol is not None else t["std"]):
            bad.append("std")
        for axis, value in self.neighbour_corr.items():
            if abs(value) > (tol if tol is not None else t[f"corr_{axis}"]):
                bad.append(f"corr_{axis}")
        if self.block_corr is not None and abs(self.block_corr) > (
            tol if tol is not None else t["block_corr"]
        ):
            bad.append("block_corr")
        if self.spectral_flatness < self.flatness_white - t["flatness"]:
            bad.append("flatness")
        return bad

    def __str__(self) -> str:
        t = self.tolerances
        rows = [
            ("mean", f"{self.mean:+.5f}", f"0 ± {t['mean']:.5f}"),
            ("std", f"{self.std:.5f}", f"1 ± {t['std']:.5f}"),
        ]
        for axis, value in self.neighbour_corr.items():
            rows.append(
                (f"max |corr| along {axis}", f"{value:.5f}", f"<= {t[f'corr_{axis}']:.5f}")
            )
        if self.block_corr is not None:
            rows.append(
                (f"mean corr in {self.block} blocks", f"{self.block_corr:+.5f}",
                 f"0 ± {t['block_corr']:.5f}")
            )
        rows.append(
            ("spectral flatness", f"{self.spectral_flatness:.5f}",
             f">= {self.flatness_white - t['flatness']:.5f} (expected {self.flatness_white:.5f})")
        )
        head = (
            f"noise report: shape {self.shape}, {self.dtype}, {self.numel} elements "
            f"(white-noise band: {self.z_score:g} standard errors)"
        )
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        lines = [head, f"  {'statistic':<{w0}}  {'value':>{w1}}  white noise"]
        lines += [f"  {a:<{w0}}  {b:>{w1}}  {c}" for a, b, c in rows]
        return "\n".join(lines)


def _check_block(x: torch.Tensor, block) -> tuple[int, ...] | None:
    if block is None:
        return None
    if isinstance(block, int) and not isinstance(block, bool):
        block = (block,)
    block = tuple(check_int("block", b, minimum=1) for b in block)
    if len(block) > x.dim():
        raise ValueError(f"block {block} has more dims than x with shape {tuple(x.shape)}")
    tail = tuple(x.shape[x.dim() - len(block) :])
    if any(s % b for s, b in zip(tail, block)):
        raise ValueError(f"the last dims {tail} of x must be divisible by block {block}")
    return block


def noise_report(
    x: torch.Tensor, *, block=None, dims: int = 2, z_score: float = 6.0
) -> NoiseReport:
    """Measure how white ``x`` is (see the module docstring for the definitions).

    Args:
        x: a floating tensor whose last ``dims`` dims are (W,), (H, W) or (T, H, W); the
            leading dims are treated as independent samples.
        block: optional block tuple tiling the last ``len(block)`` dims; adds the mean
            correlation inside blocks (``-γ`` for :func:`vidnoise.noise.block_noise`).
        dims: 1, 2 or 3 (the axes whose neighbour correlation and spectrum are measured).
        z_score: width of the white-noise bands, in standard errors.
    """
    check_tensor("x", x)
    check_choice("dims", dims, (1, 2, 3))
    z_score = check_float("z_score", z_score, low=0.0, low_open=True)
    if x.dim() < dims:
        raise ValueError(f"x must have at least dims={dims} dims, got shape {tuple(x.shape)}")
    if x.numel() < 2:
        raise ValueError(f"x must have at least 2 elements, got shape {tuple(x.shape)}")
    block = _check_block(x, block)
    xd = x.detach().to(torch.float64)
    n = xd.numel()
    mean = xd.mean()
    std = xd.std(unbiased=False)
    z = (xd - mean) / std.clamp_min(1e-300)
    tol = {"mean": z_score / math.sqrt(n), "std": z_score / math.sqrt(2 * n)}

    corr = {}
    nd = x.dim()
    for name, axis in zip(_AXIS_NAMES[dims], range(nd - dims, nd)):
        size = x.shape[axis]
        if size < 2:
            continue
        prod = z.narrow(axis, 0, size - 1) * z.narrow(axis, 1, size - 1)
        other = [d for d in range(nd) if d != axis]
        per_pos = prod.mean(dim=other) if other else prod
        corr[name] = float(per_pos.abs().max())
        tol[f"corr_{name}"] = z_score / math.sqrt(n / size)

    block_corr = None
    if block is not None:
        m = math.prod(block)
        if m > 1:
            shape = list(z.shape[: nd - len(block)])
            for s, b in zip(z.shape[nd - len(block) :], block):
                shape += [s // b, b]
            v = z.reshape(shape)
            in_block = tuple(range(nd - len(block) + 1, nd + len(block), 2))
            sums = v.sum(dim=in_block)
            block_corr = float(((sums * sums).mean() / m - 1.0) / (m - 1))
            # Var of S²/m for white Gaussian blocks: 2 per block -> se of ρ
            tol["block_corr"] = z_score * math.sqrt(2.0 / sums.numel()) / (m - 1)

    # spectral flatness of the leading-averaged power spectrum
    spatial = tuple(range(nd - dims, nd))
    k = max(1, n // math.prod(x.shape[nd - dims :]))
    power = torch.fft.fftn(z, dim=spatial).abs().square()
    if nd > dims:
        power = power.reshape(-1, *power.shape[nd - dims :]).mean(0)
    power = power.clamp_min(1e-300)
    log_flat = float(power.log().mean() - power.mean().log())
    flatness = math.exp(log_flat)
    kt = torch.tensor(float(k), dtype=torch.float64)
    flat_white = math.exp(float(torch.special.digamma(kt)) - math.log(k))
    bins = max(1, power.numel())
    trigamma = float(torch.special.polygamma(1, kt))
    # se of mean(log P) over bins/2 independent bins, plus that of log(mean P)
    se_log = math.sqrt(trigamma * 2.0 / bins + 2.0 / (k * bins))
    tol["flatness"] = flat_white * (1.0 - math.exp(-z_score * se_log))
    return NoiseReport(
        shape=tuple(x.shape),
        dtype=str(x.dtype).replace("torch.", ""),
        numel=n,
        mean=float(mean),
        std=float(std),
        neighbour_corr=corr,
        block=block,
        block_corr=block_corr,
        spectral_flatness=flatness,
        flatness_white=flat_white,
        z_score=z_score,
        tolerances=tol,
    )


def assert_white(
    x: torch.Tensor, *, tol: float | None = None, dims: int = 2, block=None,
    z_score: float = 6.0,
) -> NoiseReport:
    """Raise ``AssertionError`` (with the report's table) unless ``x`` looks like unit white
    noise: mean 0, std 1, no neighbour or in-block correlation, flat spectrum.

    The default tolerance of each statistic is ``z_score`` standard errors of that statistic
    for white noise with ``x.numel()`` elements; ``tol`` replaces it for mean, std and the
    correlations. Returns the report when the check passes.
    """
    if tol is not None:
        tol = check_float("tol", tol, low=0.0, low_open=True)
    report = noise_report(x, block=block, dims=dims, z_score=z_score)
    bad = report.failures(tol)
    if bad:
        raise AssertionError(f"not white noise ({', '.join(bad)} out of band):\n{report}")
    return report
