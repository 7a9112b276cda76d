"""Statistics of noise tensors: mean, std, neighbour and in-block correlation, spectral flatness.

What each figure means, its white-noise band and worked examples: docs/diagnostics.md.
All statistics are computed in float64 on the standardised tensor ``z = (x - mean) / std``
(n elements):

* neighbour correlation along an axis, position by position: the correlation coefficient
  ``ρ_i = Σ a·b / sqrt(Σ a² · Σ b²)`` of the slices ``a = z[.., i, ..]`` and
  ``b = z[.., i+1, ..]`` (sums over every other dim; Cauchy-Schwarz keeps it in [-1, 1]);
  the report keeps ``max_i |ρ_i|``, so a block structure that correlates only pairs inside
  blocks still shows up at full strength. Band: ``z_score / sqrt(n / size)`` (the standard
  error of a coefficient of ``n / size`` independent pairs is ``1/sqrt(n / size)``);
* mean in-block correlation from the block sums ``S = Σ_block z``:
  ``E[S²] = m + m(m-1)ρ``, so ``ρ = (E[S²]/m - 1)/(m-1)``; band
  ``z_score · sqrt(2 / n_blocks) / (m-1)`` (``S²/m`` is χ²₁ for white blocks, variance 2);
* spectral flatness of the power spectrum ``P_f`` of the measured axes, averaged over the
  ``K`` other slices: ``exp(mean log P) / mean P``. For white noise each averaged bin is
  Gamma(K, 1/K) distributed, so the flatness is ``exp(ψ(K) - log K)`` (≈ 0.56 for one slice,
  → 1 for many), which the report gives beside the measured value;
* mean ``0 ± z_score/sqrt(n)`` and std ``1 ± z_score/sqrt(2n)``;
* the number of non-finite values, which must be 0.

``assert_white`` compares each statistic with its band, or with an explicit ``tol``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from vidnoise._checks import (
    LAYOUTS,
    check_choice,
    check_float,
    check_int,
    check_tensor,
    frame_axis,
)

__all__ = ["NoiseReport", "noise_report", "assert_white"]

_AXIS_NAMES = {1: ("W",), 2: ("H", "W"), 3: ("T", "H", "W")}


@dataclass(frozen=True)
class NoiseReport:
    """Summary statistics of a noise tensor (definitions: module docstring and
    docs/diagnostics.md).

    ``tolerances`` holds, for each statistic, the half-width of the band that white noise of
    this size stays within at ``z_score`` standard errors. ``nonfinite`` counts NaN and inf
    values; when it is not 0 the other figures are NaN.
    """

    shape: tuple[int, ...]
    dtype: str
    numel: int
    nonfinite: int
    mean: float
    std: float
    neighbour_corr: dict[str, float]
    axes: dict[str, int]
    block: tuple[int, ...] | None
    block_corr: float | None
    spectral_flatness: float
    flatness_white: float
    z_score: float
    tolerances: dict[str, float] = field(default_factory=dict)

    def bands(self, tol: float | None = None) -> dict[str, float]:
        """The band used for each statistic: the derived one, or ``tol`` (a positive finite
        number) for mean, std and the correlations."""
        if tol is not None:
            tol = check_float("tol", tol, low=0.0, low_open=True)
        t = dict(self.tolerances)
        if tol is not None:
            for key in t:
                if key != "flatness":
                    t[key] = tol
        return t

    def failures(self, tol: float | None = None) -> list[str]:
        """Names of the statistics outside their band (``tol`` overrides the derived band for
        mean, std and correlations; it must be a positive finite number)."""
        t = self.bands(tol)
        if self.nonfinite:
            return ["nonfinite"]
        bad = []
        if abs(self.mean) > t["mean"]:
            bad.append("mean")
        if abs(self.std - 1.0) > t["std"]:
            bad.append("std")
        for axis, value in self.neighbour_corr.items():
            if abs(value) > t[f"corr_{axis}"]:
                bad.append(f"corr_{axis}")
        if self.block_corr is not None and abs(self.block_corr) > t["block_corr"]:
            bad.append("block_corr")
        if self.spectral_flatness < self.flatness_white - t["flatness"]:
            bad.append("flatness")
        return bad

    def table(self, tol: float | None = None) -> str:
        """The report as a table, each statistic beside the band actually used."""
        t = self.bands(tol)
        rows = [
            ("non-finite values", f"{self.nonfinite}", "0"),
            ("mean", f"{self.mean:+.5f}", f"0 ± {t['mean']:.5f}"),
            ("std", f"{self.std:.5f}", f"1 ± {t['std']:.5f}"),
        ]
        for axis, value in self.neighbour_corr.items():
            rows.append(
                (f"max |corr| along {axis} (dim {self.axes[axis]})", f"{value:.5f}",
                 f"<= {t[f'corr_{axis}']:.5f}")
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
        band = (
            f"{self.z_score:g} standard errors" if tol is None
            else f"tol={tol:g} for mean, std and correlations"
        )
        head = (
            f"noise report: shape {self.shape}, {self.dtype}, {self.numel} elements "
            f"(white-noise band: {band})"
        )
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        lines = [head, f"  {'statistic':<{w0}}  {'value':>{w1}}  white noise"]
        lines += [f"  {a:<{w0}}  {b:>{w1}}  {c}" for a, b, c in rows]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _check_block(x: torch.Tensor, block) -> tuple[int, ...] | None:
    if block is None:
        return None
    if isinstance(block, numbers.Integral) and not isinstance(block, bool):
        block = (block,)
    if not isinstance(block, Sequence) or isinstance(block, str) or not block:
        raise TypeError(
            f"block must be None, an int or a non-empty tuple of ints, got {block!r} "
            f"({type(block).__name__})"
        )
    block = tuple(check_int("block", b, minimum=1) for b in block)
    if len(block) > x.dim():
        raise ValueError(f"block {block} has more dims than x with shape {tuple(x.shape)}")
    tail = tuple(x.shape[x.dim() - len(block) :])
    if any(s % b for s, b in zip(tail, block)):
        raise ValueError(f"the last dims {tail} of x must be divisible by block {block}")
    return block


def _measured_axes(x: torch.Tensor, dims, layout) -> dict[str, int]:
    """Axis name -> dim index of the axes whose correlation and spectrum are measured."""
    nd = x.dim()
    if layout is not None:
        check_choice("layout", layout, LAYOUTS)
        if nd != 5:
            raise ValueError(
                f"layout={layout!r} describes 5-D video; x has shape {tuple(x.shape)} "
                f"(leave layout=None for other tensors)"
            )
    if dims is None:
        dims = 3 if nd == 5 else min(2, nd)
    check_choice("dims", dims, (1, 2, 3))
    if nd < dims:
        raise ValueError(f"x must have at least dims={dims} dims, got shape {tuple(x.shape)}")
    if dims == 3 and nd == 5:
        return {"T": frame_axis(layout or "BCTHW"), "H": 3, "W": 4}
    return dict(zip(_AXIS_NAMES[dims], range(nd - dims, nd)))


def noise_report(
    x: torch.Tensor, *, block=None, dims: int | None = None, layout: str | None = None,
    z_score: float = 6.0,
) -> NoiseReport:
    """Measure how white ``x`` is (definitions: module docstring, docs/diagnostics.md).

    Args:
        x: a real floating tensor (not on the meta device) with at least 2 elements; the
            dims that are not measured are treated as independent samples.
        block: optional int or tuple tiling the last ``len(block)`` dims; adds the mean
            correlation inside blocks (``-γ`` for :func:`vidnoise.noise.block_noise`).
        dims: 1, 2 or 3 measured axes: (W,), (H, W) or (T, H, W). Default: 3 for 5-D video
            (frames included), else 2 (1 for a 1-D tensor).
        layout: "BCTHW" or "BTCHW" for 5-D video: where the frame axis T is (default
            "BCTHW"); H and W are the last two dims.
        z_score: width of the white-noise bands, in standard errors.
    """
    check_tensor("x", x)
    if x.device.type == "meta":
        raise ValueError("x is on the meta device (no values to measure); pass a real tensor")
    z_score = check_float("z_score", z_score, low=0.0, low_open=True)
    axes = _measured_axes(x, dims, layout)
    if x.numel() < 2:
        raise ValueError(f"x must have at least 2 elements, got shape {tuple(x.shape)}")
    block = _check_block(x, block)
    xd = x.detach().to(torch.float64)
    n = xd.numel()
    nonfinite = int((~torch.isfinite(xd)).sum())
    mean = xd.mean()
    std = xd.std(unbiased=False)
    z = (xd - mean) / std.clamp_min(1e-300)
    tol = {"mean": z_score / math.sqrt(n), "std": z_score / math.sqrt(2 * n)}

    corr = {}
    nd = x.dim()
    for name, axis in axes.items():
        size = x.shape[axis]
        tol[f"corr_{name}"] = z_score / math.sqrt(n / size)
        if size < 2:
            continue
        a = z.narrow(axis, 0, size - 1)
        b = z.narrow(axis, 1, size - 1)
        other = [d for d in range(nd) if d != axis]
        ab = (a * b).sum(dim=other)
        norm = ((a * a).sum(dim=other) * (b * b).sum(dim=other)).sqrt()
        coef = ab / norm.clamp_min(1e-300)
        corr[name] = float(coef.abs().max())

    block_corr = None
    if block is not None:
        m = math.prod(block)
        if m > 1:
            shape = list(z.shape[: nd - len(block)])
            for s, bsz in zip(z.shape[nd - len(block) :], block):
                shape += [s // bsz, bsz]
            v = z.reshape(shape)
            in_block = tuple(range(nd - len(block) + 1, nd + len(block), 2))
            sums = v.sum(dim=in_block)
            block_corr = float(((sums * sums).mean() / m - 1.0) / (m - 1))
            tol["block_corr"] = z_score * math.sqrt(2.0 / sums.numel()) / (m - 1)

    # spectral flatness of the power spectrum of the measured axes, averaged over the rest
    spatial = tuple(axes.values())
    per_slice = math.prod(x.shape[d] for d in spatial)
    k = max(1, n // per_slice)
    power = torch.fft.fftn(z, dim=spatial).abs().square()
    rest = [d for d in range(nd) if d not in spatial]
    power = power.permute(*rest, *spatial).reshape(-1, *(x.shape[d] for d in spatial)).mean(0)
    power = power.clamp_min(1e-300)
    flatness = math.exp(float(power.log().mean() - power.mean().log()))
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
        nonfinite=nonfinite,
        mean=float(mean),
        std=float(std),
        neighbour_corr=corr,
        axes=dict(axes),
        block=block,
        block_corr=block_corr,
        spectral_flatness=flatness,
        flatness_white=flat_white,
        z_score=z_score,
        tolerances=tol,
    )


def assert_white(
    x: torch.Tensor, *, tol: float | None = None, dims: int | None = None, block=None,
    layout: str | None = None, z_score: float = 6.0,
) -> NoiseReport:
    """Raise ``AssertionError`` (with the report's table, showing the bands used) unless ``x``
    looks like unit white noise: every value finite, mean 0, std 1, no neighbour or in-block
    correlation, flat spectrum.

    The default band of each statistic is ``z_score`` standard errors of that statistic for
    white noise with ``x.numel()`` elements; ``tol`` (positive, finite) replaces it for mean,
    std and the correlations. ``dims`` and ``layout`` are as in :func:`noise_report` (5-D
    video is checked along T too by default). Returns the report when the check passes.
    """
    if tol is not None:
        tol = check_float("tol", tol, low=0.0, low_open=True)
    report = noise_report(x, block=block, dims=dims, layout=layout, z_score=z_score)
    bad = report.failures(tol)
    if bad == ["nonfinite"]:
        raise AssertionError(
            f"not white noise: {report.nonfinite} of {report.numel} values are not finite "
            f"(NaN or inf)\n{report.table(tol)}"
        )
    if bad:
        raise AssertionError(
            f"not white noise ({', '.join(bad)} out of band):\n{report.table(tol)}"
        )
    return report
