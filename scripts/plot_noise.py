"""Exact per-position variance of noise-pyramid levels: per-step white-noise factors (each
level rescaled as if the level above were white) against ``vidnoise.noise_pyramid``
(normalised by the composed operator, docs/math.md §2).

The variance is exact, not sampled: the pyramid is linear in the noise, so the N unit
impulses of the finest level, pushed through as a batch, give every output's weights.

Usage: ``python scripts/plot_noise.py [--out docs/img/noise_pyramid_variance.png]``
(needs matplotlib, the ``plot`` extra).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from vidnoise.noise import noise_pyramid, resample_noise

CASES = (("bicubic", (64, 64)), ("area", (45, 81)))
LEVELS = 4


def exact_variances(shape, mode, per_step: bool) -> list[torch.Tensor]:
    n = math.prod(shape)
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, *shape)
    if per_step:
        levels = [eye]
        for _ in range(LEVELS - 1):
            cur = levels[-1]
            levels.append(resample_noise(cur, tuple(s // 2 for s in cur.shape[-2:]), mode=mode))
        levels = levels[::-1]
    else:
        levels = noise_pyramid(eye, LEVELS, mode=mode)
    return [lv.square().sum(0)[0] for lv in levels]


def main(argv=None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/img/noise_pyramid_variance.png")
    args = ap.parse_args(argv)
    fig, axes = plt.subplots(1, len(CASES), figsize=(10, 3.6), sharey=True)
    for ax, (mode, shape) in zip(axes, CASES):
        for per_step, style in ((True, "--"), (False, "-")):
            for k, var in enumerate(exact_variances(shape, mode, per_step)):
                row = var[var.shape[0] // 2]  # the middle row of level k
                x = (torch.arange(row.numel()) + 0.5) / row.numel()
                label = f"level {k} {'per-step x factor' if per_step else 'noise_pyramid'}"
                ax.plot(x, row, style, color=f"C{k}", label=label, lw=1.2)
        ax.set_title(f"{mode}, finest {shape}, {LEVELS} levels (level 0 coarsest)")
        ax.set_xlabel("position along W (middle row)")
        ax.axhline(1.0, color="k", lw=0.5)
    axes[0].set_ylabel("exact variance per position")
    axes[-1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
