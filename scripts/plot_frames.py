"""Figures of docs/frames.md: every per-frame schedule as an image (step by frame), the
sampler's convergence with the exact Gaussian velocity, and the diffusion-forcing rollout on
the linear-Gaussian AR process. Writes docs/img/frames_schedules.png,
docs/img/frames_convergence.png and docs/img/frames_ar.png.

    PYTHONPATH=src python scripts/plot_frames.py        (needs the `plot` extra: matplotlib)
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from vidnoise.frames import (  # noqa: E402
    chunk_schedule,
    diffusion_forcing_matrix,
    fifo_schedule,
    rolling_schedule,
    sample_frames,
    skyreels_matrix,
)
from vidnoise.oracles.frames import FrameGaussian, ar_frame_cov  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "img"


def lin(n):
    return [1.0 - i / n for i in range(n)] + [0.0]


def schedules():
    sky = skyreels_matrix(16, torch.linspace(1000, 125, 8).long(), 8, ar_step=2,
                          causal_block_size=2)
    return [
        ("diffusion forcing, K=8, u=1", diffusion_forcing_matrix(12, 8, grid=lin(8))),
        ("diffusion forcing, K=8, u=1/2", diffusion_forcing_matrix(12, 8, uncertainty=0.5,
                                                                   grid=lin(8))),
        ("SkyReels-V2, ar_step=2, block 2", sky.sigmas(lin(8))),
        ("FIFO, queue 8 (2 x 4)", fifo_schedule(lin(8), 4).unroll(12).sigmas),
        ("rolling, window 4, 8 steps", rolling_schedule(lin(8), 4).unroll(12).sigmas),
        ("chunks of 3, 3 context, 4 levels, shift 5",
         chunk_schedule([1.0, 0.75, 0.5, 0.25], 3, context=3, shift=5.0).unroll(12).sigmas),
    ]


def plot_schedules():
    items = schedules()
    fig, axes = plt.subplots(1, len(items), figsize=(3.0 * len(items), 4.2))
    for ax, (name, m) in zip(axes, items):
        im = ax.imshow(m.numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1,
                       interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("frame")
    axes[0].set_ylabel("step (row of the σ matrix)")
    fig.subplots_adjust(wspace=0.3)
    fig.colorbar(im, ax=axes, shrink=0.8, label="σ (noise fraction)")
    fig.savefig(OUT / "frames_schedules.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def exact_out_cov(model, rows, solver, last_step=None):
    n = model.frames * model.d
    basis = torch.eye(n, dtype=torch.float64)
    x = model.unflat(basis, basis)
    lmap = model.flat(sample_frames(model, x, rows, solver=solver, last_step=last_step)).T
    sq = torch.linalg.cholesky(model.noise_cov(rows[0]))
    ls = lmap @ sq
    return ls @ ls.T


def plot_convergence():
    t = 4
    cov = ar_frame_cov(t, 0.8, 0.36, 2)
    fg = FrameGaussian(cov, (2, 1, 1))
    ns = [8, 16, 32, 64, 128]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, make in (
        ("DF u=1", lambda n: diffusion_forcing_matrix(t, n, grid=lin(n))),
        ("rolling w=2", lambda n: rolling_schedule(lin(n), 2).unroll(t).sigmas),
    ):
        for solver, last, style in (("euler", None, "o-"), ("heun", None, "s--"),
                                    ("heun", "euler", "^:")):
            errs = [float((exact_out_cov(fg, make(n), solver, last) - cov).norm() / cov.norm())
                    for n in ns]
            tag = solver if last is None else f"{solver}, last_step={last}"
            ax.loglog(ns, errs, style, label=f"{name}, {tag}")
    ax.loglog(ns, [0.5 * 8 / n for n in ns], "k:", lw=0.8, label="1/n")
    ax.loglog(ns, [0.1 * (8 / n) ** 2 for n in ns], "k-.", lw=0.8, label="1/n²")
    ax.set_xlabel("levels per frame n")
    ax.set_ylabel("‖Cov(out) - C‖ / ‖C‖ (exact)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.savefig(OUT / "frames_convergence.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_ar():
    a, q, t = 0.8, 0.36, 6
    var_ar = q / (1 - a * a)
    fg = FrameGaussian(ar_frame_cov(t, a, q, 1), (1, 1, 1))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for solver, style in (("euler", "o-"), ("heun", "s--")):
        for n in (10, 20, 40):
            c = exact_out_cov(fg, diffusion_forcing_matrix(t, n, grid=lin(n)), solver)
            var = c.diagonal()
            lag = [float(c[i, i + 1] / math.sqrt(var[i] * var[i + 1])) for i in range(t - 1)]
            axes[0].plot(range(t), (var / var_ar).tolist(), style, label=f"{solver}, {n} steps")
            axes[1].plot(range(t - 1), lag, style, label=f"{solver}, {n} steps")
    axes[0].axhline(1.0, color="k", lw=0.8)
    axes[0].set_title("variance / stationary variance q/(1-a²)", fontsize=9)
    axes[1].axhline(a, color="k", lw=0.8)
    axes[1].set_title("lag-1 correlation (AR: a = 0.8)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("frame")
    axes[1].legend(fontsize=7)
    fig.savefig(OUT / "frames_ar.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    plot_schedules()
    plot_convergence()
    plot_ar()
    print("wrote", *(OUT / f"frames_{n}.png" for n in ("schedules", "convergence", "ar")))
